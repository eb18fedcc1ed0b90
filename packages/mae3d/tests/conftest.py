from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "points"


@pytest.fixture
def shared_points() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"reference sample data not found at {SHARED}")
    return SHARED
