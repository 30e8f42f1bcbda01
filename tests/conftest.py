"""Shared test helpers. Tests run on CPU with tiny models; real third-party files come from ../shared/fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"


@pytest.fixture
def shared_fixtures() -> Path:
    """The ../shared/fixtures folder; tests that need it skip cleanly when it is absent (a user's clone)."""
    if not FIXTURES.is_dir():
        pytest.skip("../shared/fixtures is not present")
    return FIXTURES


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(params=[1, 2], ids=lambda n: f"threads{n}")
def intra_op_threads(request: pytest.FixtureRequest) -> Iterator[int]:
    """Run an exactness test with 1 and with 2 intra-op threads (the reduction order changes with the thread count;
    the equalities must hold on any CPU and thread count, issue #15). Restores the previous setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


# ------------------------------------------------------------------- the embed job's model and inputs
# (test_embed_job.py and test_embed_decoders.py; a module that defines its own model_dir or videos uses its own)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from support import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """7 short clips and one file that is not a video."""
    from test_index import _video

    d = tmp_path_factory.mktemp("videos")
    for i in range(7):
        _video(d / f"clip{i}.mp4", i)
    (d / "broken.mp4").write_bytes(b"\x00not a video" * 64)
    return d
