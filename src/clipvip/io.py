"""Atomic file writes and JSON-lines reading: the one place the library puts a file on disk.

WHY: every long job here (index, caption, embed, corpus, train) promises that a crash or a Ctrl-C never leaves a
half-written file that a rerun would trust. Each writer therefore writes a temporary file next to the target and
moves it into place with ``os.replace`` (atomic on POSIX and Windows within one file system). The temporary name is
unique per process AND per call, so two writers of the same target never clobber each other's temporary file; the
last ``os.replace`` wins whole.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


class JsonlError(ValueError):
    """A JSON-lines file with a line that is not a JSON object (the message names the file and the line)."""


@contextlib.contextmanager
def atomic_path(path: str | Path, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on normal exit move it onto ``path``, on an exception delete it.

    Use it for writers that want a file name (``torch.save``, ``np.save``, ``df.to_parquet``, ``fig.savefig``).
    ``keep_suffix``: the temporary name ends in ``path``'s suffix, for writers that pick the format from it (PIL,
    matplotlib, FFmpeg's muxers)."""
    path = Path(path)
    tail = f".tmp{path.suffix}" if keep_suffix else ".tmp"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{tail}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 2, default: Any = None) -> Path:
    """``obj`` as JSON; ``default`` as in ``json.dumps`` (e.g. ``str`` for paths and dates)."""
    text = json.dumps(obj, indent=indent, ensure_ascii=False, default=default) + "\n"
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_npy(path: str | Path, arr: Any, dtype: Any = None) -> Path:
    """``np.save`` atomically; ``dtype`` converts first (e.g. ``np.float32`` for an index, ``np.float16`` for
    embedding parts), None keeps the array's own."""
    import numpy as np

    a = np.ascontiguousarray(arr if dtype is None else np.asarray(arr, dtype=dtype))
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, a)
    return Path(path)


def atomic_save_parquet(path: str | Path, table: Any) -> Path:
    """A pandas DataFrame or a pyarrow Table to parquet, atomically (pandas' index is not written)."""
    with atomic_path(path) as tmp:
        if hasattr(table, "to_parquet"):
            table.to_parquet(tmp, index=False)
        else:
            import pyarrow.parquet as pq

            pq.write_table(table, tmp)
    return Path(path)


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    """All rows as one JSON object per line, atomically (the whole file or nothing).

    Streams (a generator of 100M caption rows never sits in memory) and fsyncs before the move, because callers
    delete their sources next (the captioner removes its part files once they are merged)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return Path(path)


def read_jsonl(path: str | Path, skip_torn_tail: bool = False) -> Iterator[dict[str, Any]]:
    """Yield the JSON objects of a JSON-lines file; blank lines are skipped.

    A bad line raises ``JsonlError`` naming the file and line number. ``skip_torn_tail``: a LAST line that does not
    parse and has no trailing newline is the mark of a writer killed mid-append; it is dropped instead of raising
    (for append-only progress logs). Streams: a 100M-line caption file is never held in memory."""
    for _, obj in read_jsonl_numbered(path, skip_torn_tail):
        yield obj


def read_jsonl_numbered(path: str | Path, skip_torn_tail: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
    """``read_jsonl`` with each object's 1-based line number, for callers whose own checks of a row name
    ``file:line`` as the parse errors do (blank lines count: the number is the editor's)."""
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                if skip_torn_tail and not line.endswith("\n"):  # only a file's last line can lack its newline
                    return
                raise JsonlError(f"{path}:{i}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise JsonlError(f"{path}:{i}: expected a JSON object, got {type(obj).__name__}")
            yield i, obj
