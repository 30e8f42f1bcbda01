"""Subtitles of a raw video: sidecar ``.srt`` / ``.vtt`` files, embedded subtitle streams (PyAV), as timed cues.

WHY a hand-written parser: real subtitle files are messy, and one bad file must never stop a corpus job. The parser
accepts what players accept: a UTF-8 BOM, CRLF or CR line ends, ``<i>``/``<c.colour>``/``<v Speaker>``/``{\\an8}``
styling tags and inline ``<00:00:01.000>`` karaoke stamps (removed), HTML entities, cues without the blank line
between them, hours with more than two digits, ``,`` or ``.`` before the milliseconds, and overlapping or
rolling (YouTube auto-caption) cues, whose repeated lines are dropped. What it refuses (a timing line it cannot
read, an end before its start, a non-empty file without a single cue) is a :class:`SubtitleError` naming the file
and the line, which the corpus job records and skips.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path

SUBTITLE_EXTENSIONS: tuple[str, ...] = (".srt", ".vtt")


class SubtitleError(ValueError):
    """A subtitle file (or stream) that cannot be read; the message names it and, where known, the line."""


@dataclass(frozen=True)
class Cue:
    """One timed piece of text, seconds from the start of the video. ``confidence``: ASR word probability (mean),
    None for human or file subtitles."""

    start: float
    end: float
    text: str
    confidence: float | None = None


_TIME = r"(?:(\d+):)?(\d{1,2}):(\d{1,2})(?:[,.](\d{1,3}))?"
_TIMING = re.compile(rf"^\s*{_TIME}\s*-->\s*{_TIME}(?:\s.*)?$")
_TAG = re.compile(r"<[^>]*>|\{\\[^}]*\}")
_SPACES = re.compile(r"\s+")


def parse_timestamp(text: str) -> float:
    """``[h+:]mm:ss[,.]mmm`` -> seconds (``ValueError`` if it is not one). Any number of hour digits."""
    m = re.fullmatch(_TIME, text.strip())
    if m is None:
        raise ValueError(f"not a timestamp: {text!r}")
    return _seconds(*m.groups())


def _seconds(h: str | None, m: str, s: str, frac: str | None) -> float:
    if int(m) >= 60 or int(s) >= 60:
        raise ValueError("minutes and seconds must be below 60")
    ms = int(frac) / 10 ** len(frac) if frac else 0.0
    return int(h or 0) * 3600 + int(m) * 60 + int(s) + ms


def clean_text(text: str) -> str:
    """Styling tags and ASS overrides removed, entities decoded, whitespace (and line breaks) collapsed."""
    return _SPACES.sub(" ", html.unescape(_TAG.sub("", text))).strip()


def decode_bytes(data: bytes) -> str:
    """UTF-8 (BOM stripped), else Latin-1 (never fails: old Windows files); line ends normalised to ``\\n``."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def parse_subtitles(text: str, name: str = "<subtitles>") -> list[Cue]:
    """SRT or WebVTT text -> cues sorted by start, with rolled-up repeats removed (see the module docstring)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff").split("\n")
    raw: list[tuple[float, float, list[str]]] = []
    skip_block = False  # inside a WebVTT NOTE / STYLE / REGION block (until a blank line)
    prev_blank = True
    for n, line in enumerate(lines, 1):
        stripped = line.strip()
        if not stripped:
            skip_block, prev_blank = False, True
            continue
        if prev_blank and (stripped.startswith("WEBVTT") or re.match(r"^(NOTE|STYLE|REGION)\b", stripped)):
            skip_block, prev_blank = True, False
            continue
        if skip_block:
            continue
        if "-->" in stripped:
            m = _TIMING.match(stripped)
            if m is None:
                raise SubtitleError(f"{name}:{n}: cannot read the timing line {stripped[:80]!r}")
            try:
                start, end = _seconds(*m.groups()[:4]), _seconds(*m.groups()[4:])
            except ValueError as e:
                raise SubtitleError(f"{name}:{n}: bad timestamp in {stripped[:80]!r} ({e})") from None
            if end < start:
                raise SubtitleError(f"{name}:{n}: cue ends ({end:.3f} s) before it starts ({start:.3f} s)")
            # A missing blank line: the SRT counter (or a VTT id) just before this line is not text.
            if raw and raw[-1][2] and not prev_blank and raw[-1][2][-1].strip().isdigit():
                raw[-1][2].pop()
            raw.append((start, end, []))
        elif raw:
            if prev_blank and stripped.isdigit():  # SRT counter / numeric VTT id before its timing line
                prev_blank = False
                continue
            raw[-1][2].append(line)
        prev_blank = False
    if not raw and any(x.strip() for x in lines if not x.strip().startswith("WEBVTT")):
        raise SubtitleError(f"{name}: no subtitle cues found (not an SRT / WebVTT file?)")
    return _dedupe([(s, e, t, None) for s, e, t in raw])


_Raw = tuple[float, float, list[str], "float | None"]


def _dedupe(items: list[_Raw]) -> list[Cue]:
    """Sort by time; drop the leading lines a cue repeats from the end of the one before (YouTube's roll-up
    captions: "a / b" then "b / c"; an exact repeat is the whole cue), so each line is kept once, at its first
    appearance; a cue left empty extends the one before. Empty cues are dropped."""
    out: list[Cue] = []
    prev_lines: list[str] = []
    for start, end, raw_lines, conf in sorted(items, key=lambda x: (x[0], x[1])):
        lines = [t for t in (clean_text(x) for x in raw_lines) if t]
        if not lines:
            continue
        k = 0
        if out and start <= out[-1].end + 1e-3:  # only a cue still on screen can be rolled up
            k = max(
                (n for n in range(1, min(len(lines), len(prev_lines)) + 1) if lines[:n] == prev_lines[-n:]), default=0
            )
        prev_lines = lines
        if k == len(lines):
            last = out[-1]
            out[-1] = Cue(last.start, max(last.end, end), last.text, last.confidence)
            continue
        out.append(Cue(start, end, " ".join(lines[k:]), conf))
    return out


def read_subtitle_file(path: str | Path) -> list[Cue]:
    """A sidecar .srt / .vtt file -> cues (:class:`SubtitleError` naming the file if it cannot be read)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SubtitleError(f"{path}: cannot read ({e.strerror or e})") from None
    return parse_subtitles(decode_bytes(data), str(path))


def find_sidecars(video: str | Path) -> list[Path]:
    """Subtitle files next to ``video``: ``stem.srt`` / ``stem.vtt`` first, then ``stem.LANG.srt`` / ``.vtt``
    (what yt-dlp writes), each sorted by name."""
    video = Path(video)
    exact = [video.with_suffix(ext) for ext in SUBTITLE_EXTENSIONS]
    found = [p for p in exact if p.is_file()]
    try:
        siblings = sorted(video.parent.glob(f"{glob_escape(video.stem)}.*"))
    except OSError:
        siblings = []
    found += [p for p in siblings if p.suffix.lower() in SUBTITLE_EXTENSIONS and p not in found and p.is_file()]
    return found


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def read_embedded(video: str | Path) -> list[Cue] | None:
    """Text subtitle streams inside the container (mov_text, subrip, webvtt, ass) -> cues of the first stream
    that has any; None when there is no text subtitle stream. Bitmap subtitles (DVD / PGS) are not text: None."""
    import av

    try:
        container = av.open(str(video))
    except (av.FFmpegError, OSError) as e:
        raise SubtitleError(f"{video}: cannot open to read embedded subtitles ({e})") from None
    with container:
        for stream in container.streams.subtitles:
            cues = _stream_cues(container, stream)
            if cues:
                return _dedupe([(c.start, c.end, c.text.split("\n"), None) for c in cues])
    return None


def _stream_cues(container, stream) -> list[Cue]:  # noqa: ANN001 - PyAV types
    cues: list[Cue] = []
    tb = float(stream.time_base)
    try:
        container.seek(0)
    except Exception:  # noqa: BLE001 - a fresh container is at 0 anyway
        pass
    for packet in container.demux(stream):
        if packet.pts is None or packet.size == 0:
            continue
        start = packet.pts * tb
        end = start + (packet.duration or 0) * tb
        for sub in stream.decode(packet):
            # PyAV >= 14 yields the rects (AssSubtitle, ...) directly; older versions a SubtitleSet of them
            rects = list(sub) if hasattr(sub, "__iter__") and not hasattr(sub, "ass") else [sub]
            s0 = start + getattr(sub, "start_display_time", 0) / 1000.0
            e_ms = getattr(sub, "end_display_time", 0)
            e0 = start + e_ms / 1000.0 if e_ms and not packet.duration else end
            for rect in rects:
                text = _rect_text(rect)
                if text.strip():
                    cues.append(Cue(s0, max(e0, s0), text))
    return cues


def _rect_text(rect) -> str:  # noqa: ANN001 - PyAV type
    ass = getattr(rect, "ass", None)
    if isinstance(ass, bytes):
        ass = ass.decode("utf-8", "replace")
    if ass:
        # "Dialogue: ReadOrder,Layer,Style,Name,MarginL,MarginR,MarginV,Effect,Text" (FFmpeg's packet form)
        body = ass.split(",", 8)[-1] if ass.count(",") >= 8 else ass
        return body.replace("\\N", "\n").replace("\\n", "\n")  # lines kept: cleaned by _dedupe
    text = getattr(rect, "text", None)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return text or ""
