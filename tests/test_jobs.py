"""clipvip.jobs: parts run once across workers, finished parts are skipped, a failed part does not stop the rest."""

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from clipvip.io import atomic_write_json
from clipvip.jobs import WorkerSlice, run_job, worker_slice


@dataclass
class SquareJob:
    out: str
    num_parts: int = 7
    bad: int = -1

    def _path(self, part: int) -> Path:
        return Path(self.out) / f"part_{part:05d}.json"

    def is_done(self, part: int) -> bool:
        return self._path(part).exists()

    def run_part(self, part: int) -> dict:
        if part == self.bad:
            raise OSError(f"part {part} cannot be read")
        atomic_write_json(self._path(part), {"value": part * part})
        return {"done": 1, "failed": []}


def _values(out: Path) -> dict[int, int]:
    return {int(p.stem.split("_")[1]): json.loads(p.read_text())["value"] for p in out.glob("part_*.json")}


def test_worker_slice_from_torchrun_and_slurm():
    assert worker_slice({}) == WorkerSlice(0, 1)
    assert worker_slice({"RANK": "1", "WORLD_SIZE": "3"}) == WorkerSlice(1, 3)
    slurm = {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "3"}
    assert worker_slice(slurm) == WorkerSlice(2, 4)
    with pytest.raises(ValueError, match="outside a world"):
        worker_slice({"RANK": "3", "WORLD_SIZE": "3"})


def test_slices_cover_every_part_once(tmp_path):
    runs = [run_job(SquareJob(str(tmp_path)), slice_=WorkerSlice(r, 3), progress=False) for r in range(3)]
    assert sorted(p for s in runs for p in s.ran) == list(range(7))
    assert _values(tmp_path) == {i: i * i for i in range(7)}


def test_failed_part_is_reported_and_rerun_resumes(tmp_path):
    first = run_job(SquareJob(str(tmp_path), bad=3), progress=False)
    assert set(first.failed) == {3} and "cannot be read" in first.failed[3]
    assert sorted(first.ran) == [0, 1, 2, 4, 5, 6] and first.total("done") == 6
    second = run_job(SquareJob(str(tmp_path)), progress=False)
    assert second.ran == [3] and sorted(second.skipped_done) == [0, 1, 2, 4, 5, 6]
    assert _values(tmp_path) == {i: i * i for i in range(7)}


def test_unknown_engine():
    with pytest.raises(ValueError, match="unknown engine"):
        run_job(SquareJob("."), engine="spark")


def test_ray_engine_equals_local(tmp_path):
    ray = pytest.importorskip("ray")
    local, remote = tmp_path / "local", tmp_path / "ray"
    local.mkdir()
    remote.mkdir()
    run_job(SquareJob(str(local)), progress=False)
    # Ray's workers import SquareJob from this file: put tests/ on their path.
    path = os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": path}})
    try:
        s = run_job(SquareJob(str(remote), bad=2), engine="ray", progress=False)
    finally:
        ray.shutdown()
    assert set(s.failed) == {2} and "cannot be read" in s.failed[2]
    assert _values(remote) == {k: v for k, v in _values(local).items() if k != 2}


def test_failure_lines_name_samples_and_parts(tmp_path):
    s = run_job(SquareJob(str(tmp_path), bad=1), progress=False)
    s.stats[0]["failed"] = [{"path": "a.mp4", "reason": "moov atom not found"}, {"file": "b.avi", "reason": "empty"}]
    lines = s.failure_lines(limit=1, where="stats/")
    assert lines == [
        "  skipped a.mp4: moov atom not found",
        "  ... and 1 more (listed in stats/)",
        "  part 1 failed: OSError: part 1 cannot be read (run the command again to retry it)",
    ]
