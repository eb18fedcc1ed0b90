"""Fuzz the GeoTIFF reader: truncated and byte-flipped copies of the real samples end in a
DataError naming the file, or read into arrays whose valid pixels are finite; never another
exception or a hang."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import rasterio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rasterio.windows import Window

from geomae.data import sample_dir
from geomae.io import read_raster, scan_raster
from maecore.errors import DataError
from maecore.testing import damage


def _landsat_crop(tmp: Path) -> bytes:
    """A 48 x 48 crop of the bundled Landsat sample, deflate-compressed in 16-pixel tiles."""
    with rasterio.open(sample_dir() / "landsat_rgb.tif") as src:
        win = Window(0, 300, 48, 48)
        prof = {**src.profile, "width": 48, "height": 48, "transform": src.window_transform(win),
                "blockxsize": 16, "blockysize": 16, "tiled": True}
        with rasterio.open(tmp / "crop.tif", "w", **prof) as dst:
            dst.write(src.read(window=win))
    return (tmp / "crop.tif").read_bytes()


@pytest.mark.parametrize("name", ["landsat_crop.tif", "shade.tif"])
def test_truncations_and_byte_flips(name: str, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("fuzz")
    data = _landsat_crop(tmp) if name == "landsat_crop.tif" else (sample_dir() / name).read_bytes()
    counter = itertools.count()

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(cut=st.floats(0.0, 1.0), flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=8))
    def check(cut: float, flips: list[tuple[float, int]]) -> None:
        blob = damage(data, cut, flips)
        path = tmp / f"{next(counter)}_{name}"
        path.write_bytes(blob)
        try:
            scan_raster(path)
            r = read_raster(path)
        except DataError as err:
            assert name in str(err) and err.path == str(path)
            return
        assert r["x"].ndim == 3 and r["valid"].any()
        assert np.isfinite(r["x"][r["valid"]]).all() and np.isnan(r["x"][~r["valid"]]).all()

    check()
