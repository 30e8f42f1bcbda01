"""OpenAI CLIP's byte-level BPE tokenizer (SOT 49406, EOT 49407), offline.

The merge table ``bpe_simple_vocab_16e6.txt.gz`` (1.3 MB, OpenAI's, MIT) is read from the installed ``open_clip``
package without importing it (the ``clip`` extra), or from ``$CLIPVIP_BPE_PATH``; it is not copied into this repo. Tests check ids against open_clip's and Hugging Face's tokenizers.
"""

from __future__ import annotations

import functools
import gzip
import html
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

import ftfy
import regex as re
import torch

SOT_ID = 49406
EOT_ID = 49407
_BPE_NAME = "bpe_simple_vocab_16e6.txt.gz"


def default_bpe_path() -> Path:
    env = os.environ.get("CLIPVIP_BPE_PATH")
    if env:
        return Path(env)
    spec = importlib.util.find_spec("open_clip")
    for loc in (spec.submodule_search_locations or []) if spec is not None else []:
        p = Path(loc) / _BPE_NAME
        if p.exists():
            return p
    raise FileNotFoundError(
        f"the CLIP tokenizer's merge table {_BPE_NAME} was not found: pip install 'clipvip[clip]' "
        "(open_clip_torch carries it), or set CLIPVIP_BPE_PATH to a copy of the file"
    )


@functools.lru_cache
def _bytes_to_unicode() -> dict[int, str]:
    """Reversible byte -> printable unicode map, so BPE never sees whitespace/control bytes."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _clean(text: str) -> str:
    text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return re.sub(r"\s+", " ", text).strip().lower()


class Tokenizer:
    """CLIP BPE. ``encode`` gives ids without SOT/EOT; ``__call__`` gives the padded [B, L] batch."""

    _PAT = re.compile(
        r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
        re.IGNORECASE,
    )

    def __init__(self, bpe_path: str | Path | None = None) -> None:
        path = Path(bpe_path) if bpe_path is not None else default_bpe_path()
        lines = gzip.open(path).read().decode("utf-8").split("\n")
        merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
        vocab = list(_bytes_to_unicode().values())
        vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges]
        vocab += ["<|startoftext|>", "<|endoftext|>"]
        self.encoder = {tok: i for i, tok in enumerate(vocab)}
        self.decoder = {i: tok for tok, i in self.encoder.items()}
        self.bpe_ranks = {m: i for i, m in enumerate(merges)}
        self.byte_encoder = _bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        self._bpe = functools.lru_cache(maxsize=100_000)(self._bpe_uncached)
        assert self.encoder["<|startoftext|>"] == SOT_ID and self.encoder["<|endoftext|>"] == EOT_ID

    def _bpe_uncached(self, token: str) -> tuple[str, ...]:
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        while len(word) > 1:
            pairs = set(zip(word[:-1], word[1:]))
            best = min(pairs, key=lambda p: self.bpe_ranks.get(p, float("inf")))
            if best not in self.bpe_ranks:
                break
            merged: list[str] = []
            i = 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
        return word

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for tok in self._PAT.findall(_clean(text)):
            tok = "".join(self.byte_encoder[b] for b in tok.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self._bpe(tok))
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``encode`` ids or of a padded ``__call__`` row (read up to its EOT). Id 0 is the token "!", so
        padding is recognised by its position after EOT, never by its value."""
        ids = [int(i) for i in ids]
        if EOT_ID in ids:
            ids = ids[: ids.index(EOT_ID)]
        text = "".join(self.decoder[i] for i in ids if i != SOT_ID)
        raw = bytearray(self.byte_decoder[c] for c in text)
        return raw.decode("utf-8", errors="replace").replace("</w>", " ").strip()

    def __call__(self, texts: str | Sequence[str], context_length: int = 77) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        if context_length < 2:
            raise ValueError("context_length must be >= 2 (SOT and EOT)")
        out = torch.zeros(len(texts), context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [SOT_ID, *self.encode(text), EOT_ID]
            if len(ids) > context_length:  # truncate, keeping EOT last (the token the text tower pools)
                ids = ids[:context_length]
                ids[-1] = EOT_ID
            out[row, : len(ids)] = torch.tensor(ids)
        return out


@functools.lru_cache(maxsize=4)
def get_tokenizer(bpe_path: str | None = None) -> Tokenizer:
    return Tokenizer(bpe_path)


def tokenize(texts: str | Sequence[str], context_length: int = 77) -> torch.Tensor:
    """CLIP token ids, [B, context_length] LongTensor, zero padded, EOT kept on truncation (open_clip convention)."""
    return get_tokenizer()(texts, context_length)
