"""Shared by the benchmark scripts (run as ``python benchmarks/bench_*.py``, so this folder is on sys.path)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_json(out: Path, result: Any) -> None:
    """Write a result file atomically (temp file + rename): an interrupted run never leaves a half-written JSON."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, out)
