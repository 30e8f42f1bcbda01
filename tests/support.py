"""Test helpers shared by several test files (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest


def save_tiny_model(folder: Path) -> Path:
    """A seeded tiny CLIP-ViP saved to ``folder`` (for tests that load a model by path)."""
    import torch

    import clipvip

    torch.manual_seed(0)
    clipvip.CLIPViP(clipvip.tiny_config()).save_pretrained(folder)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(
    target: Callable[..., None],
    world: int,
    *args: Any,
    per_rank: Sequence[tuple] | None = None,
    timeout: float = 240,
) -> None:
    """Run ``target(rank, world, port, *args, *per_rank[rank])`` in ``world`` spawned processes (a real gloo group
    on a free loopback port); fail the test if any rank hangs or exits non-zero."""
    import torch.multiprocessing as mp

    port = free_port()
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=target, args=(r, world, port, *args, *(per_rank[r] if per_rank else ())))
        for r in range(world)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=timeout)
        if p.is_alive():
            p.kill()
            pytest.fail(f"{target.__name__} hung")
        assert p.exitcode == 0, f"{target.__name__} failed in a rank"


@contextlib.contextmanager
def serve_in_thread(app: Any, startup_timeout: float = 30) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def assert_all_close(got: dict, ref: dict, rtol: float, atol: float, what: str = "") -> None:
    """``torch.testing.assert_close`` over two dicts of tensors with the same keys; a failure names the key AND keeps
    torch's own report (the values, the greatest absolute and relative differences)."""
    import torch

    assert got.keys() == ref.keys(), f"{what}: keys differ: {sorted(set(got) ^ set(ref))}"
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=rtol, atol=atol, msg=lambda m, n=name: f"{what} {n}: {m}")


def write_block_videos(folder: Any, frame_counts: Sequence[int], scale: int = 8, seed: int = 0) -> list[Any]:
    """Small random-colour-block videos ``v0.mp4, v1.mp4, ...`` (4x4 blocks upscaled ``scale`` times, 8 fps): cheap
    inputs whose embeddings differ, for index/search/web tests."""
    import numpy as np

    from clipvip.video import write_video

    rng = np.random.default_rng(seed)
    out = []
    for i, frames in enumerate(frame_counts):
        x = np.repeat(rng.integers(0, 256, (frames, 4, 4, 3), dtype=np.uint8), scale, axis=1).repeat(scale, axis=2)
        out.append(write_video(folder / f"v{i}.mp4", x, fps=8))
    return out
