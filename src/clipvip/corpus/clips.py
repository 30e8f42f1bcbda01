"""Subtitle cues -> sentences -> clips in a length window: the HD-VILA-100M rule.

The rule. HD-VILA (Xue et al., "Advancing High-Resolution Video-Language Representation with Large-Scale Video
Transcriptions", CVPR 2022, arXiv:2111.10337, Sec. 3) splits each video's ASR transcript into complete sentences
and cuts the video into clips along sentence time stamps, one clip per sentence text. The released artefacts
confirm it (microsoft/XPretrain ``hd-vila-100m/README.md``): 100M clips and 100M sentences, 13.4 s and 32.5 words
on average, clips given as spans of the source; their ``hd-vila-100m/src/cut_videos.py`` copies each span out with
``ffmpeg -ss START -t DUR -c copy``. Sentences that are too short to show anything are joined with the next ones.
The paper's exact length thresholds are not in the released code; ``--clip-seconds MIN:MAX`` (default 5:20,
around the 13.4-s mean) and ``max_gap`` are this implementation's knobs.

Here, concretely (:func:`make_clips`):

1. Sentences: cues are joined in order until one ends with sentence-final punctuation (``. ! ? ...`` and the CJK
   ones). Text without any punctuation (raw ASR captions) is one sentence per cue.
2. Clips: sentences are joined greedily, in order, while the clip is shorter than ``min_seconds``; a sentence that
   would push the clip past ``max_seconds``, or that starts more than ``max_gap`` seconds after the clip's end,
   closes the clip and starts the next one.
3. A clip that is still shorter than ``min_seconds`` (the last one, or one before a long gap) is dropped, and so is
   a single sentence longer than ``max_seconds`` (cutting it mid-sentence would break the text-video pairing
   the rule is for); both are counted (``ClipStats``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from clipvip.corpus.subtitles import Cue

_SENTENCE_END = re.compile(r"([.!?\u2026\u3002\uff01\uff1f]|\.\.\.)[\"')\]\u201d\u2019]*$")


@dataclass(frozen=True)
class ClipRule:
    """``--clip-seconds MIN:MAX`` and the largest silence (seconds) a clip may span between two sentences."""

    min_seconds: float = 5.0
    max_seconds: float = 20.0
    max_gap: float = 3.0

    def __post_init__(self) -> None:
        if not 0 < self.min_seconds <= self.max_seconds:
            raise ValueError(f"clip length window {self.min_seconds}:{self.max_seconds}: need 0 < MIN <= MAX")
        if self.max_gap < 0:
            raise ValueError(f"max_gap must be >= 0, got {self.max_gap}")

    @classmethod
    def parse(cls, spec: str, max_gap: float = 3.0) -> ClipRule:
        """``"5:20"`` -> ClipRule(5, 20); ValueError naming the spec otherwise."""
        try:
            lo, hi = (float(x) for x in spec.split(":"))
        except ValueError:
            raise ValueError(f"--clip-seconds {spec!r}: expected MIN:MAX in seconds, e.g. 5:20") from None
        return cls(lo, hi, max_gap)


@dataclass(frozen=True)
class Clip:
    """A span of the source video and its subtitle text; ``confidence`` is the mean over its cues (ASR only)."""

    start: float
    end: float
    text: str
    confidence: float | None = None

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass
class ClipStats:
    sentences: int = 0
    clips: int = 0
    dropped_short: int = 0
    dropped_long: int = 0
    notes: list[str] = field(default_factory=list)


def sentences(cues: Sequence[Cue]) -> list[Cue]:
    """Join cues into sentences (rule step 1). Unpunctuated text: one sentence per cue."""
    punctuated = any(_SENTENCE_END.search(c.text) for c in cues)
    if not punctuated:
        return [c for c in cues if c.text]
    out: list[Cue] = []
    buf: list[Cue] = []
    for c in cues:
        if not c.text:
            continue
        buf.append(c)
        if _SENTENCE_END.search(c.text):
            out.append(_join(buf))
            buf = []
    if buf:
        out.append(_join(buf))
    return out


def _join(cues: Sequence[Cue]) -> Cue:
    confs = [c.confidence for c in cues if c.confidence is not None]
    return Cue(
        start=min(c.start for c in cues),
        end=max(c.end for c in cues),
        text=" ".join(c.text for c in cues),
        confidence=sum(confs) / len(confs) if confs else None,
    )


def make_clips(cues: Sequence[Cue], rule: ClipRule = ClipRule(), stats: ClipStats | None = None) -> list[Clip]:
    """Cues -> clips in ``[rule.min_seconds, rule.max_seconds]`` (rule steps 2 and 3, module docstring)."""
    stats = stats if stats is not None else ClipStats()
    sents = sentences(sorted(cues, key=lambda c: (c.start, c.end)))
    stats.sentences += len(sents)
    clips: list[Clip] = []
    cur: list[Cue] = []

    def close() -> None:
        if not cur:
            return
        j = _join(cur)
        if j.end - j.start >= rule.min_seconds - 1e-6:
            clips.append(Clip(j.start, j.end, j.text, j.confidence))
        else:
            stats.dropped_short += 1
        cur.clear()

    for s in sents:
        if s.end - s.start > rule.max_seconds + 1e-6:
            close()
            stats.dropped_long += 1
            continue
        if cur:
            start = cur[0].start
            end = max(c.end for c in cur)
            if s.start - end > rule.max_gap or max(end, s.end) - start > rule.max_seconds + 1e-6:
                close()
        cur.append(s)
        if max(c.end for c in cur) - cur[0].start >= rule.min_seconds - 1e-6:
            close()
    close()
    stats.clips += len(clips)
    return clips


def cues_in_span(cues: Sequence[Cue], start: float, end: float) -> list[Cue]:
    """The subtitle text of a given span (HD-VILA metadata): the cues that overlap it by at least half of the cue
    or half of the span (a span inside one long cue still gets its text)."""
    half_span = (end - start) / 2
    out = []
    for c in cues:
        overlap = min(end, c.end) - max(start, c.start)
        if overlap > 0 and (overlap >= (c.end - c.start) / 2 or overlap >= half_span):
            out.append(c)
    return out
