"""GeoTIFF / COG reading and writing through rasterio, with windowed reads.

Every reader returns float32 arrays with NaN where a value was not measured (the raster's nodata
value, its internal mask, NaN in float rasters, or outside the raster for a boundless window),
plus a ``valid`` mask, so nodata becomes padding tokens downstream, never zeros. CRS and affine
transform travel with every read; writers copy them so outputs open in QGIS on top of the input.
Every failure names the file: :class:`maecore.errors.DataError` ``(path, expected, found)``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from maecore.atomic import atomic_path
from maecore.errors import DataError

EXTS = (".tif", ".tiff", ".vrt", ".jp2", ".img")
SUPPORTED_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")


@dataclass
class RasterInfo:
    """What a raster is without reading its pixels."""

    path: str
    count: int
    width: int
    height: int
    dtype: str
    crs: Any  # rasterio CRS or None
    transform: Any  # affine.Affine
    nodata: float | None
    descriptions: tuple[str | None, ...]

    @property
    def res(self) -> tuple[float, float]:
        return abs(self.transform.a), abs(self.transform.e)

    @property
    def crs_string(self) -> str:
        return self.crs.to_string() if self.crs else "none"


def _rasterio_errors() -> tuple[type[BaseException], ...]:
    import rasterio.errors

    return (rasterio.errors.RasterioError, rasterio.errors.RasterioIOError, OSError, ValueError,
            IndexError, TypeError, MemoryError)


def open_raster(path: str | os.PathLike[str]) -> Any:
    """``rasterio.open`` that reports a missing, unreadable or corrupt file as :class:`DataError`."""
    import rasterio

    p = Path(path)
    if not p.is_file():
        raise DataError(p, "an existing raster file", "nothing at that path")
    try:
        return rasterio.open(p)
    except _rasterio_errors() as err:
        raise DataError(p, "a readable GeoTIFF (rasterio/GDAL)", f"{type(err).__name__}: {err}") from err


def info_of(src: Any) -> RasterInfo:
    """Validate an open dataset's header: at least one band, one supported dtype for all bands."""
    path = src.name
    if src.count < 1 or src.width < 1 or src.height < 1:
        raise DataError(path, "a raster with at least one band and pixel",
                        f"{src.count} bands, {src.width}x{src.height}")
    dtypes = sorted(set(src.dtypes))
    if len(dtypes) != 1:
        raise DataError(path, "one data type for every band", f"dtypes {dtypes}")
    if dtypes[0] not in SUPPORTED_DTYPES:
        raise DataError(path, f"a supported data type ({', '.join(SUPPORTED_DTYPES)})", f"dtype {dtypes[0]}")
    return RasterInfo(str(path), src.count, src.width, src.height, dtypes[0], src.crs, src.transform,
                      src.nodata, tuple(src.descriptions))


def raster_info(path: str | os.PathLike[str]) -> RasterInfo:
    with open_raster(path) as src:
        return info_of(src)


def read_window(
    src: Any,
    window: Any = None,
    bands: list[int] | None = None,
) -> dict[str, Any]:
    """Read ``window`` (a ``rasterio.windows.Window``; None = whole raster) of an open dataset.

    ``bands``: 1-based band indexes (None = all). Windows may extend past the raster (boundless):
    those pixels are not valid. Returns ``x`` float32 ``[C, h, w]`` (NaN where not valid),
    ``valid`` bool ``[C, h, w]``, ``transform`` (the window's affine), ``crs``.
    """
    from rasterio.windows import Window
    from rasterio.windows import transform as window_transform

    if window is None:
        window = Window(0, 0, src.width, src.height)
    idx = bands or list(range(1, src.count + 1))
    inside = (window.col_off >= 0 and window.row_off >= 0 and window.col_off + window.width <= src.width
              and window.row_off + window.height <= src.height)
    try:
        arr = src.read(idx, window=window, masked=True, boundless=not inside)
    except _rasterio_errors() as err:
        raise DataError(src.name, "readable pixel data", f"a read error ({type(err).__name__}: {err})") from err
    data = np.asarray(arr.data, dtype=np.float32)
    valid = ~np.ma.getmaskarray(arr)
    valid &= np.isfinite(data)
    data[~valid] = np.nan
    return {"x": data, "valid": valid, "transform": window_transform(window, src.transform), "crs": src.crs}


def read_raster(path: str | os.PathLike[str], bands: list[int] | None = None) -> dict[str, Any]:
    """The whole raster: ``read_window`` of the full extent plus ``info`` (:class:`RasterInfo`)."""
    with open_raster(path) as src:
        info = info_of(src)
        out = read_window(src, None, bands)
    out["info"] = info
    return out


def valid_fraction(src: Any, max_side: int = 1024) -> tuple[np.ndarray, float]:
    """A decimated validity map ``[h', w']`` (True where every band has data) and its mean."""
    h, w = src.height, src.width
    k = max(1, int(np.ceil(max(h, w) / max_side)))
    shape = (max(1, h // k), max(1, w // k))
    try:
        masks = src.read_masks(out_shape=(src.count, *shape))
    except _rasterio_errors() as err:
        raise DataError(src.name, "readable pixel data", f"a read error ({type(err).__name__}: {err})") from err
    valid = (masks > 0).all(0)
    return valid, float(valid.mean())


def scan_raster(path: str | os.PathLike[str]) -> RasterInfo:
    """Decode every block of a raster (what ``check`` does): a truncated or damaged file, a raster
    with no valid pixel, or an unsupported header raises :class:`DataError`."""
    with open_raster(path) as src:
        info = info_of(src)
        n_valid = 0
        try:
            for _, win in src.block_windows(1):
                arr = src.read(window=win, masked=True)
                good = ~np.ma.getmaskarray(arr) & np.isfinite(np.asarray(arr.data, dtype=np.float64))
                n_valid += int(good.all(0).sum())
        except _rasterio_errors() as err:
            raise DataError(path, "readable pixel data", f"a read error ({type(err).__name__}: {err})") from err
    if n_valid == 0:
        raise DataError(path, "at least one valid pixel", f"every pixel is nodata (nodata={info.nodata})")
    return info


def nodata_for(dtype: str, nodata: float | None) -> float | None:
    """The nodata value an output of ``dtype`` uses: the input's, else NaN for floats, else None."""
    if nodata is not None:
        return nodata
    return float("nan") if np.dtype(dtype).kind == "f" else None


def cast_to(values: np.ndarray, dtype: str, valid: np.ndarray | None, nodata: float | None) -> np.ndarray:
    """Float values -> ``dtype`` (rounded and clipped to its range for integers); not-valid
    pixels get ``nodata`` (0 when the input has none)."""
    dt = np.dtype(dtype)
    out = np.nan_to_num(values.astype(np.float64), nan=0.0)
    if dt.kind in "iu":
        lim = np.iinfo(dt)
        out = np.clip(np.rint(out), lim.min, lim.max)
    out = out.astype(dt)
    if valid is not None and nodata is not None and np.isfinite(nodata) and dt.kind in "iu":
        # a measured value equal to nodata would read back as a hole: nudge it one step inwards
        clash = valid & (out == np.array(nodata).astype(dt))
        out[clash] = np.array(nodata + (1 if nodata < np.iinfo(dt).max else -1)).astype(dt)
    if valid is not None:
        fill = nodata if nodata is not None else 0
        out[~valid] = np.array(fill).astype(dt) if not (dt.kind == "f" and np.isnan(fill)) else np.nan
    return out


def write_raster(
    path: str | os.PathLike[str],
    array: np.ndarray,
    crs: Any,
    transform: Any,
    dtype: str | None = None,
    nodata: float | None = None,
    descriptions: list[str] | None = None,
) -> Path:
    """Write ``array [C, H, W]`` as a tiled, deflate-compressed GeoTIFF, atomically."""
    import rasterio

    arr = np.asarray(array)
    if arr.ndim != 3:
        raise ValueError(f"array must be [C, H, W], got shape {list(arr.shape)}")
    c, h, w = arr.shape
    dtype = dtype or str(arr.dtype)
    profile: dict[str, Any] = {"driver": "GTiff", "width": w, "height": h, "count": c, "dtype": dtype, "crs": crs,
                               "transform": transform, "compress": "deflate"}
    if nodata is not None:
        profile["nodata"] = nodata
    if h >= 256 and w >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(arr.astype(dtype, copy=False))
        if descriptions:
            for i, d in enumerate(descriptions[:c], start=1):
                dst.set_band_description(i, d)
    return Path(path)
