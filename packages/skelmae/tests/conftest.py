from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "skeleton"


@pytest.fixture
def shared_skeleton() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"reference sample data not found at {SHARED}")
    return SHARED


@pytest.fixture
def write_ntu():
    return _write_ntu


def _write_ntu(path: Path, frames: list[list[np.ndarray]], body_counts: list[int] | None = None) -> Path:
    """An NTU RGB+D .skeleton text file: ``frames[t]`` lists each body's ``[25, 3]`` joints."""
    lines = [str(len(frames))]
    for t, bodies in enumerate(frames):
        lines.append(str(body_counts[t] if body_counts else len(bodies)))
        for k, xyz in enumerate(bodies):
            lines.append(f"{72057594037931101 + k} 0 1 1 1 1 0 -0.2 0.1 2")
            lines.append("25")
            for x, y, z in xyz:
                lines.append(f"{x:.6f} {y:.6f} {z:.6f} 250.1 180.2 960.3 540.4 0.1 0.2 0.3 0.9 2")
    path.write_text("\n".join(lines) + "\n")
    return path
