"""The training run's metrics: ``metrics.jsonl`` (kept consistent across resume) and TensorBoard when installed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from clipvip.io import read_jsonl, write_jsonl


def flatten_metrics(d: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested numeric results -> {"a/b": float}, the keys TensorBoard and ``best_metric`` use."""
    out: dict[str, float] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten_metrics(v, key + "/"))
        elif isinstance(v, int | float) and not isinstance(v, bool):
            out[key] = float(v)
    return out


class MetricsLog:
    """metrics.jsonl (+ TensorBoard when installed), written by rank 0."""

    def __init__(self, run_dir: Path, enabled: bool, keep_up_to_step: int | None) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.enabled = enabled
        self.history: list[dict[str, Any]] = []
        self.tb = None
        if not enabled:
            return
        if keep_up_to_step is not None and self.path.exists():
            # A killed run may have logged steps after its last checkpoint; they are redone after resume.
            # A kill mid-append leaves a torn last line: dropped.
            kept = [r for r in read_jsonl(self.path, skip_torn_tail=True) if r.get("step", 0) <= keep_up_to_step]
            write_jsonl(self.path, kept)
            self.history = kept
        elif self.path.exists():
            self.path.unlink()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        except ImportError:
            self.tb = None

    def write(self, rec: dict[str, Any]) -> None:
        self.history.append(rec)
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        if self.tb is not None:
            for k, v in flatten_metrics(rec).items():
                if k != "step":
                    self.tb.add_scalar(k, v, rec["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
