"""Speech recognition for videos without subtitles: faster-whisper (CTranslate2), word timestamps -> cues.

Optional (``pip install 'clipvip[asr]'``). ``model`` is what ``faster_whisper.WhisperModel`` takes: a CTranslate2
model folder (convert a Hugging Face Whisper with ``ct2-transformers-converter``) or a size name such as
``small.en`` (downloaded by faster-whisper on first use, so it needs the Hub). One cue per Whisper segment,
timed by its first and last word, with the mean word probability as ``confidence``; Whisper punctuates, so the
sentence rule of :mod:`clipvip.corpus.clips` applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipvip.corpus.subtitles import Cue, clean_text


class ASRError(ValueError):
    """A video that cannot be transcribed (no audio stream, undecodable audio); the message names it."""


@dataclass(frozen=True)
class ASRConfig:
    model: str
    device: str = "cpu"
    compute_type: str = "default"
    language: str | None = None
    beam_size: int = 5
    vad_filter: bool = False
    cpu_threads: int = 0


class Transcriber:
    """Loads the model once (per process; the corpus job builds one lazily in each worker)."""

    def __init__(self, config: ASRConfig) -> None:
        try:
            from faster_whisper import WhisperModel
        except ImportError:
            raise RuntimeError("--asr needs faster-whisper: pip install 'clipvip[asr]'") from None
        self.config = config
        try:
            self.model = WhisperModel(
                config.model, device=config.device, compute_type=config.compute_type, cpu_threads=config.cpu_threads
            )
        except (OSError, ValueError, RuntimeError) as e:
            raise ValueError(f"--asr {config.model}: cannot load the Whisper model ({e})") from None

    def transcribe(self, video: str | Path) -> list[Cue]:
        """Cues of the video's speech (empty if none is found)."""
        from faster_whisper import decode_audio

        try:
            audio = decode_audio(str(video))
        except Exception as e:  # noqa: BLE001 - PyAV raises many types; the message is what matters
            raise ASRError(f"{video}: cannot decode its audio ({type(e).__name__}: {e})") from None
        if audio.size == 0:
            raise ASRError(f"{video}: no audio")
        segments, _info = self.model.transcribe(
            audio,
            language=self.config.language,
            beam_size=self.config.beam_size,
            word_timestamps=True,
            vad_filter=self.config.vad_filter,
            condition_on_previous_text=False,
        )
        return [c for c in (segment_cue(s) for s in segments) if c is not None]


def segment_cue(segment: Any) -> Cue | None:
    """A faster-whisper Segment -> a Cue (word-timed when it has words); None for an empty one."""
    text = clean_text(segment.text or "")
    if not text:
        return None
    words = list(segment.words or [])
    if words:
        probs = [float(w.probability) for w in words]
        return Cue(float(words[0].start), float(words[-1].end), text, sum(probs) / len(probs))
    return Cue(float(segment.start), float(segment.end), text, None)
