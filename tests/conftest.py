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
