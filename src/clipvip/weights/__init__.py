from clipvip.weights.io import CheckpointError, check_state_dict, read_state_dict
from clipvip.weights.load import convert, detect_format, load, read_checkpoint

__all__ = [
    "CheckpointError",
    "check_state_dict",
    "convert",
    "detect_format",
    "load",
    "read_checkpoint",
    "read_state_dict",
]
