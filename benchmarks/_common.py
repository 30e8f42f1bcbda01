"""Shared by the benchmark scripts (run as ``python benchmarks/bench_*.py``, so this folder is on sys.path)."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def write_json(out: Path, result: Any) -> None:
    """Write a result file atomically (temp file + rename): an interrupted run never leaves a half-written JSON."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, out)


def machine_info() -> dict[str, Any]:
    """What every result file records about where it ran: versions, CPU, threads, device, load at the start."""
    import av
    import torch

    import clipvip

    return {
        "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyav": av.__version__,
        "clipvip": clipvip.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu (no GPU lent to this task)",
        "uptime_at_start": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _status_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))


class PeakRSS:
    """Peak resident memory of the code inside ``with PeakRSS() as m:``, as the OS counts it (Linux):
    ``m.before_mib`` = RSS on entry, ``m.peak_mib`` = the high-water mark (VmHWM, reset on entry through
    /proc/self/clear_refs), ``m.extra_mib`` = the difference."""

    def __enter__(self) -> PeakRSS:
        self.before_mib = _status_kib("VmRSS") / 1024
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        return self

    def __exit__(self, *exc: object) -> None:
        self.peak_mib = _status_kib("VmHWM") / 1024
        self.extra_mib = self.peak_mib - self.before_mib
