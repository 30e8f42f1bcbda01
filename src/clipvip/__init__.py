"""clipvip: CLIP-ViP video-text retrieval (Xue et al., ICLR 2023).

Data flows one way: video file -> frames (``clipvip.video``) -> tensors (``clipvip.data``) -> encoders
(``clipvip.model``) -> embeddings -> losses / metrics / index (``clipvip.losses``, ``clipvip.eval``,
``clipvip.index``). Apps (trainer, CLI, web) live in ``clipvip_apps`` and only import from here.
"""

from clipvip.config import ModelConfig, TextConfig, VisionConfig, tiny_config
from clipvip.inference import optimize_for_inference
from clipvip.model import CLIPViP
from clipvip.tokenizer import tokenize
from clipvip.weights import CheckpointError, convert, load

__version__ = "0.1.0"

__all__ = [
    "CLIPViP",
    "CheckpointError",
    "ModelConfig",
    "TextConfig",
    "VisionConfig",
    "convert",
    "load",
    "optimize_for_inference",
    "tiny_config",
    "tokenize",
]
