"""Shared test helpers. Tests run on CPU with tiny models; real third-party files come from ../shared/fixtures."""

from __future__ import annotations

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
