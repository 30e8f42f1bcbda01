from clipvip.model.clipvip import CLIPViP
from clipvip.model.text import TextTower
from clipvip.model.vision import SeqTransformerHead, VisionTower, interpolate_temporal

__all__ = ["CLIPViP", "SeqTransformerHead", "TextTower", "VisionTower", "interpolate_temporal"]
