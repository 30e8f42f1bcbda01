"""The captioner: a transformers image-to-text model that turns middle frames into captions of <= 16 words.

Any model loadable through ``AutoModelForImageTextToText`` works (verified: ``VisionEncoderDecoderModel``,
``BlipForConditionalGeneration``, ``GitForCausalLM``). The paper used OFA-Caption and kept at most 16 words.
"""

from __future__ import annotations

import os
import re
import socket
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from clipvip.distributed import launch_env
from clipvip.precision import DTYPES, resolve_dtype

MAX_WORDS = 16
"""The paper's cap on auxiliary caption length (Sec. 4.1)."""


def truncate_words(text: str, max_words: int = MAX_WORDS) -> str:
    """Whitespace-normalise and keep the first ``max_words`` words (the paper's 16-word cap)."""
    return " ".join(text.split()[:max_words])


def _processor_frame_size(image_processor: Any, default: int = 224) -> int:
    """The side the captioner's own preprocessing works at, so the middle frame is read at about that size."""
    for attr in ("crop_size", "size"):
        size = getattr(image_processor, attr, None)
        if size is None:
            continue
        if isinstance(size, int):
            return size
        get = size.get if hasattr(size, "get") else lambda k, s=size: getattr(s, k, None)
        h, w, short = get("height"), get("width"), get("shortest_edge")
        if h and w:
            return int(max(h, w))
        if short:
            return int(short)
    return default


@dataclass
class CaptionerConfig:
    """Generation settings. The paper used OFA-Caption's defaults (beam search) and at most 16 words."""

    path: str
    name: str | None = None  # recorded in each output line; default: the path as given
    device: str | None = None  # default: cuda:LOCAL_RANK when CUDA is available, else cpu
    dtype: str = "auto"
    num_beams: int = 1  # 1 = greedy
    max_new_tokens: int = 30
    max_words: int = MAX_WORDS
    prompt: str | None = None  # conditional captioning prefix (verified with BLIP)
    keep_prompt: bool = False  # strip an echoed prompt from the caption unless asked to keep it
    generate_kwargs: dict[str, Any] = field(default_factory=dict)


_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")


def check_model_source(path: str) -> None:
    """Fail in a moment with one clear line, before transformers does (after its own retries and a long traceback):
    a path that is neither an existing folder nor a hub id, a folder without config.json, or a hub id that is not
    in the local cache while the hub is switched off (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE) or its host name does
    not resolve (no network)."""
    if os.path.exists(path):
        if os.path.isdir(path) and not os.path.exists(os.path.join(path, "config.json")):
            raise FileNotFoundError(f"{path}: not a transformers model folder (no config.json)")
        return
    if not _HUB_ID.fullmatch(path) or path.endswith((".", "-")):
        raise FileNotFoundError(
            f"{path}: no such folder (--captioner takes a transformers model folder or a hub id such as "
            "Salesforce/blip-image-captioning-base)"
        )
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(path, "config.json"), str):
        return
    offline = any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in _OFFLINE_VARS)
    if offline:
        raise FileNotFoundError(
            f"{path}: not in the local hub cache and the hub is offline (HF_HUB_OFFLINE); download it on a "
            "machine with internet (huggingface-cli download) or pass a local model folder"
        )
    host = urllib.parse.urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:  # a name lookup answers at once where the hub's HTTP client would retry for half a minute
        socket.getaddrinfo(host, 443)
    except OSError as e:
        raise FileNotFoundError(
            f"{path}: not in the local hub cache and {host} cannot be reached ({e}); connect to the internet, "
            "or pass a local model folder"
        ) from None


_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


class Captioner:
    """A transformers image-to-text model + its processor: batches of uint8 frames -> captions of <= 16 words."""

    def __init__(self, config: CaptionerConfig) -> None:
        check_model_source(config.path)  # before importing transformers: a mistake is reported in a moment
        from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

        self.config = config
        self.name = config.name or config.path
        if config.device is not None:
            self.device = torch.device(config.device)
        elif torch.cuda.is_available():
            self.device = torch.device("cuda", launch_env()[2] % torch.cuda.device_count())
        else:
            self.device = torch.device("cpu")
        self.dtype = resolve_dtype(config.dtype, self.device, allowed=tuple(DTYPES), cpu_bf16=False)
        path = config.path
        try:
            model = AutoModelForImageTextToText.from_pretrained(path, dtype=self.dtype)
        except ValueError as e:
            raise ValueError(f"{path}: not an image-to-text model that AutoModelForImageTextToText loads ({e})") from e
        self.model = model.to(self.device).eval()
        processor = AutoProcessor.from_pretrained(path)
        if hasattr(processor, "image_processor"):  # a multimodal processor (BLIP, GIT, ...)
            self.processor = processor
            self.image_processor = processor.image_processor
            self.tokenizer = processor.tokenizer
        else:  # VisionEncoderDecoder folders carry an image processor and a tokenizer but no processor class
            self.processor = None
            self.image_processor = AutoImageProcessor.from_pretrained(path)
            self.tokenizer = AutoTokenizer.from_pretrained(path)
        if config.prompt and self.processor is None:
            raise ValueError(f"{path}: a prompt needs a model with a multimodal processor (e.g. BLIP)")
        self.frame_size = _processor_frame_size(self.image_processor)

    @torch.inference_mode()
    def generate_text(self, frames: Sequence[torch.Tensor]) -> list[str]:
        """Decoded model output for uint8 [3, H, W] frames, before prompt stripping and truncation."""
        images = [f.cpu() for f in frames]
        if self.processor is not None:
            kwargs: dict[str, Any] = {"images": images, "return_tensors": "pt"}
            if self.config.prompt:
                kwargs["text"] = [self.config.prompt] * len(images)
            inputs = dict(self.processor(**kwargs))
        else:
            inputs = dict(self.image_processor(images=images, return_tensors="pt"))
        inputs.pop("token_type_ids", None)  # tokenizer by-product that generate() rejects
        inputs = {k: v.to(self.device, dtype=self.dtype if v.is_floating_point() else None) for k, v in inputs.items()}
        out = self.model.generate(
            **inputs,
            num_beams=self.config.num_beams,
            do_sample=False,
            max_new_tokens=self.config.max_new_tokens,
            **self.config.generate_kwargs,
        )
        return self.tokenizer.batch_decode(out, skip_special_tokens=True)

    def postprocess(self, text: str) -> str:
        """Strip an echoed prompt (decoder-only models and BLIP repeat it) and apply the word cap."""
        text = " ".join(text.split())
        if self.config.prompt and not self.config.keep_prompt:
            prompt = " ".join(self.config.prompt.split())
            if text.lower().startswith(prompt.lower()):
                text = text[len(prompt) :]
        return truncate_words(text, self.config.max_words)

    def caption(self, frames: Sequence[torch.Tensor]) -> list[str]:
        """uint8 [3, H, W] middle frames -> one caption each, at most ``max_words`` words."""
        if len(frames) == 0:
            return []
        return [self.postprocess(t) for t in self.generate_text(frames)]
