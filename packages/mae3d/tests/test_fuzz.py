"""Fuzz the readers: truncated and byte-flipped copies of real files end in DataError naming the
file, or read into finite, normalised clouds; never another exception or a hang."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mae3d.data import expand
from mae3d.io import read_points
from maecore.errors import DataError
from maecore.testing import damage

SOURCES = {
    "binary.ply": lambda shared: expand(None)[0],
    "mesh.obj": lambda shared: shared / "trimesh_models" / "rabbit.obj",
    "mesh.off": lambda shared: shared / "trimesh_models" / "ballA.off",
    "mesh.stl": lambda shared: shared / "trimesh_models" / "teapot.stl",
    "cloud.npy": None,
}


def _source(name: str, shared: Path, tmp: Path) -> bytes:
    if name == "cloud.npy":
        path = tmp / "src.npy"
        np.save(path, np.random.default_rng(0).normal(size=(400, 3)))
        return path.read_bytes()
    return SOURCES[name](shared).read_bytes()


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_truncations_and_byte_flips(name: str, shared_points: Path, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("fuzz")
    data = _source(name, shared_points, tmp)

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(cut=st.floats(0.0, 1.0), flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=8))
    def check(cut: float, flips: list[tuple[float, int]]) -> None:
        blob = damage(data, cut, flips)
        path = tmp / name
        path.write_bytes(blob)
        try:
            cloud = read_points(path, 256)
        except DataError as err:
            assert name in str(err)
            return
        pts = cloud["points"]
        assert pts.shape == (256, 3) and np.isfinite(pts).all()
        assert np.linalg.norm(pts, axis=1).max() <= 1.0 + 1e-5

    check()
