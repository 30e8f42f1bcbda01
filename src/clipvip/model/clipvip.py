"""The CLIP-ViP dual encoder: ``VisionTower`` (video proxy ViT or a baseline) + CLIP ``TextTower``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clipvip.config import ModelConfig
from clipvip.io import atomic_path, atomic_write_json
from clipvip.model.layers import MLP, QuickGELU
from clipvip.model.text import TextTower
from clipvip.model.vision import VisionTower
from clipvip.numerics import at_least_fp32

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class CLIPViP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.visual = VisionTower(config)
        self.text = TextTower(config)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init)))
        # Where the weights came from (``clipvip.weights.card.provenance``; set by ``clipvip.load``): saved in
        # config.json and shown in the model card.
        self.provenance: dict = {}

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def encode_video(self, video: Tensor) -> Tensor:
        """video: float [B, T, 3, H, W], CLIP mean/std normalised -> L2-normalised [B, E], fp32 (fp64 for a fp64 model)."""
        # Re-normalised in fp32: a bf16 tower (optimize_for_inference) normalises only to ~3 digits.
        return F.normalize(at_least_fp32(self.visual(video.to(self.visual.conv1.weight.dtype))), dim=-1)

    def encode_image(self, image: Tensor) -> Tensor:
        """An image is a 1-frame video (its temporal embedding is the interpolated middle): [B, 3, H, W] -> [B, E]."""
        return self.encode_video(image[:, None])

    def encode_text(self, text: Sequence[str] | Tensor, context_length: int | None = None) -> Tensor:
        """list of strings or token ids [B, L] -> L2-normalised [B, E], fp32 (fp64 for a fp64 model)."""
        if not isinstance(text, Tensor):
            from clipvip.tokenizer import tokenize

            text = tokenize(list(text), context_length or self.config.text.context_length)
        return F.normalize(at_least_fp32(self.text(text.to(self.device))), dim=-1)

    def forward(self, video: Tensor, text: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Returns (video_emb [B, E], text_emb [B, E], logit_scale (log-space scalar))."""
        return self.encode_video(video), self.encode_text(text), self.logit_scale

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for module in self.modules():
            if hasattr(module, "grad_checkpointing"):
                module.grad_checkpointing = enable

    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``config.json`` + ``model.safetensors`` (fp32 unless the model is in another dtype) + a model card
        ``README.md`` (``clipvip.weights.card``): a folder ready for ``huggingface_hub.upload_folder``."""
        from safetensors.torch import save_file

        if self.config.act == "quick_gelu" and any(
            isinstance(m, MLP) and not isinstance(m.act, QuickGELU) for m in self.modules()
        ):  # the folded weights would be read back as QuickGELU weights: a different function
            raise RuntimeError(
                f"cannot save to {directory}: this model went through optimize_for_inference, which folded "
                "QuickGELU's 1.702 into the MLP weights; save the model before optimizing it"
            )

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        with atomic_path(d / WEIGHTS_NAME) as tmp:
            save_file(state, str(tmp), metadata={"format": "pt", "library": "clipvip"})
        meta = {"clipvip": self.config.to_dict(), **({"provenance": self.provenance} if self.provenance else {})}
        atomic_write_json(d / CONFIG_NAME, meta)
        from clipvip.weights.card import write_card

        write_card(d, self.num_params())

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
