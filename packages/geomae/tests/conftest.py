from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from geomae.data import sample_dir

SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "geo"


@pytest.fixture
def shared_geo() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"reference sample data not found at {SHARED}")
    return SHARED


@pytest.fixture
def sample_tif() -> Path:
    return sample_dir() / "landsat_rgb.tif"


def write_tif(path: Path, arr: np.ndarray, crs: str = "EPSG:32618", nodata: Any = None,
              transform: Any = None, **extra: Any) -> Path:
    """A GeoTIFF of ``arr [C, H, W]`` (tests make their bad inputs with this)."""
    c, h, w = arr.shape
    profile = {"driver": "GTiff", "width": w, "height": h, "count": c, "dtype": str(arr.dtype), "crs": crs,
               "transform": transform or from_origin(500000, 4000000, 30, 30), **extra}
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr)
    return path


@pytest.fixture
def make_tif():
    """``make_tif(path, arr, crs=..., nodata=..., transform=...)`` -> path."""
    return write_tif


@pytest.fixture(scope="session")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny MAE pretrained on the bundled crop (shared by the CLI and fine-tuning tests)."""
    from geomae.cli import main

    out = tmp_path_factory.mktemp("geomae") / "run"
    assert main(["pretrain", "--config", "tiny", "--out", str(out)]) == 0
    return out
