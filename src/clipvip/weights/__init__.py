from clipvip.weights.convert import Heads, heads_from_open_clip_config, heads_from_open_clip_name
from clipvip.weights.io import CheckpointError, check_state_dict, read_state_dict
from clipvip.weights.load import convert, detect_format, load, read_checkpoint

__all__ = [
    "CheckpointError",
    "Heads",
    "heads_from_open_clip_config",
    "heads_from_open_clip_name",
    "check_state_dict",
    "convert",
    "detect_format",
    "load",
    "read_checkpoint",
    "read_state_dict",
]
