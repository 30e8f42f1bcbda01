"""The captioner loads the transformers image-to-text families the docs name (tiny random BLIP and GIT built here)
and gives what transformers' own processor + generate give, prompt stripped, cut to 16 words."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from clipvip.captioning import Captioner, CaptionerConfig

WORDS = [f"w{i}" for i in range(40)]
TINY_VISION = dict(
    hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8
)


def _bert_tokenizer():
    from transformers import BertTokenizer

    return BertTokenizer(vocab={t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])})


def _save_blip(folder: Path) -> Path:
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    tok = _bert_tokenizer()
    cfg = BlipConfig(
        text_config=dict(
            vocab_size=len(tok),
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=64,
            bos_token_id=2,
            sep_token_id=3,
            pad_token_id=0,
            eos_token_id=3,
        ),
        vision_config=TINY_VISION,
        projection_dim=32,
    )
    model = BlipForConditionalGeneration(cfg)
    model.generation_config.min_new_tokens = 20
    model.generation_config.suppress_tokens = [0, 1, 2, 4]
    model.save_pretrained(folder)
    BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tok).save_pretrained(
        folder
    )
    return folder


def _save_git(folder: Path) -> Path:
    from transformers import CLIPImageProcessor, GitConfig, GitForCausalLM, GitProcessor

    tok = _bert_tokenizer()
    cfg = GitConfig(
        vision_config=TINY_VISION,
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        bos_token_id=2,
        eos_token_id=3,
        pad_token_id=0,
    )
    model = GitForCausalLM(cfg)
    model.generation_config.min_new_tokens = 20
    model.generation_config.suppress_tokens = [0, 1, 2, 4]
    model.save_pretrained(folder)
    GitProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tok,
    ).save_pretrained(folder)
    return folder


def _reference(folder: Path, frames: torch.Tensor, prompt: str | None = None) -> list[list[str]]:
    """transformers' documented recipe: AutoProcessor -> AutoModelForImageTextToText.generate -> batch_decode."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    proc = AutoProcessor.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    kw = {"text": [prompt] * len(frames)} if prompt else {}
    inputs = proc(images=list(frames), return_tensors="pt", **kw)
    with torch.no_grad():
        ids = model.generate(**inputs, max_new_tokens=24, num_beams=1, do_sample=False)
    return [t.split() for t in proc.batch_decode(ids, skip_special_tokens=True)]


@pytest.mark.parametrize("family", ["blip", "git"])
def test_family_matches_transformers_generate(family: str, tmp_path: Path) -> None:
    folder = (_save_blip if family == "blip" else _save_git)(tmp_path / family)
    frames = torch.randint(0, 256, (3, 3, 40, 48), dtype=torch.uint8)
    cap = Captioner(CaptionerConfig(path=str(folder), max_new_tokens=24))
    assert type(cap.model).__name__ == {"blip": "BlipForConditionalGeneration", "git": "GitForCausalLM"}[family]
    assert cap.frame_size == 32
    ref = _reference(folder, frames)
    assert all(len(words) > 16 for words in ref)
    assert cap.caption(list(frames)) == [" ".join(words[:16]) for words in ref]


def test_blip_prompt_is_stripped(tmp_path: Path) -> None:
    folder = _save_blip(tmp_path / "blip")
    frames = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    ref = _reference(folder, frames, prompt="w1 w2")
    assert all(words[:2] == ["w1", "w2"] for words in ref)  # BLIP echoes the prompt
    got = Captioner(CaptionerConfig(path=str(folder), max_new_tokens=24, prompt="w1 w2")).caption(list(frames))
    assert got == [" ".join(words[2:18]) for words in ref]
    kept = Captioner(CaptionerConfig(path=str(folder), max_new_tokens=24, prompt="w1 w2", keep_prompt=True))
    assert kept.caption(list(frames)) == [" ".join(words[:16]) for words in ref]
