"""The embed job's decoders: worker processes writing into shared buffers give exactly what decode threads give
(one clip per video, and long videos cut into more windows than a buffer holds), a borrowed chunk outlives its
decoders, a worker that dies is replaced and its chunk decoded again, a file that kills its worker every time is
named as failed, workers exit with a job killed without cleanup, and too little /dev/shm falls back to threads."""

from __future__ import annotations

import gc
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import clipvip
from clipvip.embedjob import EmbedConfig, Sample, decode_procs, plan_parts, prepare_job
from clipvip.embedjob import decode as decode_mod
from clipvip.embedjob.decode import ThreadDecoders
from clipvip.embedjob.decode_procs import ProcessDecoders


def _job(model_dir: Path, videos: Path, out: Path, **kw):  # noqa: ANN202
    cfg = EmbedConfig(model=str(model_dir), out=str(out), batch_size=3, precision="fp32", threads=1, **kw)
    return prepare_job(cfg, plan_parts([str(videos)], 4))


def _decode_all(job, decoders) -> list[tuple]:  # noqa: ANN001
    """Every chunk of every part, clips copied out (they may be borrowed until the next chunk)."""
    stream = job.stream(list(range(job.num_parts)), decoders)
    out = []
    try:
        for p in range(job.num_parts):
            for c in stream.chunks(p):
                clips = None if c.clips is None else np.array(c.clips)
                out.append((c.part, c.index, c.last, clips, c.rows, c.failed))
    finally:
        decoders.close()
    return out


def _same(a: list[tuple], b: list[tuple]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x[:3] == y[:3] and x[4:] == y[4:]
        assert (x[3] is None and y[3] is None) or np.array_equal(x[3], y[3])


@pytest.mark.parametrize("window", [None, 0.5])
def test_process_decoders_equal_thread_decoders(tmp_path, model_dir, videos, window):
    """window 0.5 s: each 2 s video is 4+ clips, more than a 3-clip buffer holds, so chunks come back pickled."""
    job = _job(model_dir, videos, tmp_path / "o", window=window)
    decoders = job.new_decoders()
    assert isinstance(decoders, ProcessDecoders)
    shm = Path("/dev/shm") / decoders._shm.name
    assert shm.exists()
    got = _decode_all(job, decoders)
    assert not shm.exists()  # close() unlinked the buffers
    want = _decode_all(job, ThreadDecoders(2))
    _same(got, want)
    rows = sum(len(c[4]) for c in got)
    assert rows == 7 if window is None else max(len(c[4]) for c in got) > 3  # > 3: more than a buffer holds
    assert [f["file"] for c in got for f in c[5]] == [str(videos / "broken.mp4")]


def test_a_borrowed_chunk_outlives_its_decoders_and_too_few_buffers_are_refused(tmp_path, model_dir, videos):
    job = _job(model_dir, videos, tmp_path / "o")
    decoders = job.new_decoders()
    chunk = next(job.stream([0], decoders).chunks(0))
    kept = np.array(chunk.clips)
    decoders.close()
    gc.collect()
    assert np.array_equal(chunk.clips, kept)  # still mapped (reading unmapped memory would crash the process)
    with pytest.raises(ValueError, match="at least 7"):
        ProcessDecoders(2, (3, 4, 3, 8, 8), slots=6)


def test_decoders_exit_with_a_job_killed_without_cleanup(tmp_path, videos):
    """A job killed by SIGKILL or the OOM killer runs no cleanup: its decode workers must not live on."""
    script = tmp_path / "job.py"
    script.write_text(
        "import os, sys\n"
        "from clipvip.embedjob import iter_samples, plan_parts\n"
        "from clipvip.embedjob.decode_procs import ProcessDecoders\n"
        "if __name__ == '__main__':\n"
        "    d = ProcessDecoders(2, (3, 8, 3, 32, 32), 7)\n"
        f"    samples = list(iter_samples(plan_parts([{str(videos)!r}], 8)[0]))\n"
        "    settings = {'num_frames': 8, 'image_size': 32, 'window': None, 'stride': None}\n"
        "    d.take(d.submit(samples[:3], settings, 60.0, True))\n"
        "    print(' '.join(map(str, d._pool._processes)), flush=True)\n"
        "    os._exit(9)\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(clipvip.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 9, out.stderr
    pids = [int(p) for p in out.stdout.split()]
    assert pids
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def _die_unless_marked(marker: str, key: str, path: str) -> Sample:
    """Unpickled in a decode worker: exits like a crash (no cleanup), once if ``marker`` is a path, else always."""
    if not marker or not os.path.exists(marker):
        if marker:
            Path(marker).touch()
        os._exit(1)
    return Sample(key, path)


@dataclass(frozen=True)
class KillsItsDecoder(Sample):
    """A sample whose decode worker dies when it receives it, as if FFmpeg crashed on the file."""

    marker: str = ""

    def __reduce__(self):  # noqa: ANN204 - the worker rebuilds it through _die_unless_marked
        return (_die_unless_marked, (self.marker, self.key, self.path))


def test_a_dead_decoder_is_replaced_and_a_file_that_kills_it_is_named(tmp_path, model_dir, videos, monkeypatch):
    job = _job(model_dir, videos, tmp_path / "o")
    want = _decode_all(job, ThreadDecoders(1))
    real = decode_mod.iter_samples

    def with_killers(src):  # noqa: ANN001, ANN202 - part 0 gets a worker that dies once; part 1 a file that always kills
        samples = list(real(src))
        if src == job.parts[0]:
            samples.insert(1, KillsItsDecoder("once", samples[1].path, marker=str(tmp_path / "died-once")))
        if src == job.parts[1]:
            samples.insert(2, KillsItsDecoder("always", "/videos/crasher.mp4"))
        return samples

    monkeypatch.setattr(decode_mod, "iter_samples", with_killers)
    got = _decode_all(job, job.new_decoders())
    assert (tmp_path / "died-once").exists()  # a worker really died
    crashed = [f for c in got for f in c[5] if f["file"] == "/videos/crasher.mp4"]
    assert len(crashed) == 1 and "crashed" in crashed[0]["reason"]
    # the sample that killed a worker once was decoded on the retry: part 0 has one more row than without it
    rows = [r for c in got for r in c[4]]
    assert [r["key"] for r in rows].count("once") == 1
    assert [r for r in rows if r["key"] != "once"] == [r for c in want for r in c[4]]
    clips = np.concatenate([c[3] for c in got if c[3] is not None])
    keep = [i for i, r in enumerate(rows) if r["key"] != "once"]
    assert np.array_equal(clips[keep], np.concatenate([c[3] for c in want if c[3] is not None]))


def test_too_little_shared_memory_decodes_on_threads(tmp_path, model_dir, videos, monkeypatch, caplog):
    monkeypatch.setattr(decode_procs, "shared_memory_room", lambda: 0)
    job = _job(model_dir, videos, tmp_path / "o")
    with caplog.at_level(logging.WARNING):
        decoders = job.new_decoders()
    decoders.close()
    assert isinstance(decoders, ThreadDecoders)
    assert "/dev/shm" in caplog.text and "--shm-size" in caplog.text
    assert isinstance(_job(model_dir, videos, tmp_path / "t", decode_in="threads").new_decoders(), ThreadDecoders)
