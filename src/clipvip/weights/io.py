"""Reading weight files without unpickling arbitrary objects, and the strict key check."""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

StateDict = dict[str, Tensor]


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model: names the file and every offending key."""


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    return any(n.endswith("constants.pkl") for n in names) or any("/code/" in n for n in names)


def _why_unreadable(path: Path, err: Exception) -> str:
    """One line for a file ``torch.load(weights_only=True)`` refused. torch's own text tells the user to re-run with
    ``weights_only=False``, which would execute whatever the file pickled: never echoed."""
    with open(path, "rb") as f:
        head = f.read(2)
    if not zipfile.is_zipfile(path) and head[:1] != b"\x80":  # neither torch's zip format nor a legacy pickle
        return "not a weights file (expected safetensors, a torch.save file or an OpenAI TorchScript archive)"
    if isinstance(err, pickle.UnpicklingError) and "weights_only" in str(err):
        return (
            "holds pickled Python objects besides tensors, which are refused (loading them could run code); "
            "save a plain state dict (torch.save(model.state_dict(), ...)) or safetensors"
        )
    return f"not a readable weights file ({type(err).__name__}: {str(err).strip().splitlines()[0][:200]})"


def read_state_dict(path: str | Path) -> StateDict:
    """Load a flat ``{name: tensor}`` dict from safetensors, a ``torch.save`` file (``weights_only=True``) or an
    OpenAI TorchScript archive. Wrappers (``{"state_dict": ...}``, ``{"model": ...}``) and DDP's ``module.`` prefix
    are removed; floating tensors are returned in fp32 (the official release ships fp16)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd: Mapping = load_file(str(path))
    elif _is_torchscript(path):
        # TorchScript archives hold TorchScript code and tensors, not arbitrary pickled Python objects.
        sd = torch.jit.load(str(path), map_location="cpu").state_dict()
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - re-raised with the file name
            raise CheckpointError(f"{path}: {_why_unreadable(path, e)}") from e
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(sd, Mapping) and wrapper in sd and isinstance(sd[wrapper], Mapping):
            sd = sd[wrapper]
    if not isinstance(sd, Mapping) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: expected a mapping of tensors, got {type(sd).__name__}")
    out: StateDict = {}
    for k, v in sd.items():
        k = k[len("module.") :] if k.startswith("module.") else k
        out[k] = v.float() if v.is_floating_point() else v
    return out


def check_state_dict(model: nn.Module, sd: Mapping[str, Tensor], source: str) -> None:
    """Raise ``CheckpointError`` naming every missing, unexpected and mis-shaped key (no silent strict=False)."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    shapes = sorted(
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(sd) & set(expected)
        if tuple(sd[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or shapes:
        parts = [f"{source}: checkpoint does not match the model"]
        if missing:
            parts.append(
                f"missing keys ({len(missing)}): {', '.join(missing[:20])}{' ...' if len(missing) > 20 else ''}"
            )
        if unexpected:
            parts.append(
                f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:20])}"
                f"{' ...' if len(unexpected) > 20 else ''}"
            )
        if shapes:
            parts.append(f"shape mismatches ({len(shapes)}): {'; '.join(shapes[:20])}")
        raise CheckpointError("\n  ".join(parts))
