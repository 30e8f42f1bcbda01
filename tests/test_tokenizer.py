import pytest
import torch

from clipvip.tokenizer import EOT_ID, SOT_ID, get_tokenizer, tokenize

TEXTS = [
    "a photo of a cat",
    "A man is RUNNING down the street!!",
    "  multiple   spaces\tand\nnewlines  ",
    "café naïve coöperate — unicode “quotes”",
    "numbers 12345 and 3.14, contractions: don't we'll they've",
    "emoji 🙂 and CJK 视频 检索",
    "&amp; html &lt;escaped&gt;",
    "",
]


def test_known_openai_ids() -> None:
    # OpenAI CLIP's published ids for this prompt.
    assert tokenize("a photo of a cat", 8)[0].tolist() == [SOT_ID, 320, 1125, 539, 320, 2368, EOT_ID, 0]


def test_matches_open_clip() -> None:
    open_clip = pytest.importorskip("open_clip")
    for length in (77, 70, 50):
        ours = tokenize(TEXTS, length)
        ref = open_clip.tokenize(TEXTS, context_length=length)
        assert torch.equal(ours, ref), length


def test_truncation_keeps_eot_last() -> None:
    long = " ".join(["word"] * 200)
    ids = tokenize([long, "short"], 50)
    assert ids.shape == (2, 50) and ids.dtype == torch.long
    assert ids[0, 0] == SOT_ID and ids[0, -1] == EOT_ID and (ids[0] != 0).all()
    assert ids[1].argmax() == ids[1].tolist().index(EOT_ID)


def test_decode_roundtrip() -> None:
    tok = get_tokenizer()
    assert tok.decode(tok("a man is running", 20)[0].tolist()) == "a man is running"


def test_bad_context_length() -> None:
    with pytest.raises(ValueError):
        tokenize("x", 1)


def test_missing_merge_table_says_what_to_install(monkeypatch) -> None:
    """Without open_clip (the clip extra) and without CLIPVIP_BPE_PATH: one actionable line, not a bare error."""
    import importlib.util

    from clipvip.tokenizer import default_bpe_path

    monkeypatch.delenv("CLIPVIP_BPE_PATH", raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install 'clipvip\[clip\]'.*CLIPVIP_BPE_PATH"):
        default_bpe_path()
