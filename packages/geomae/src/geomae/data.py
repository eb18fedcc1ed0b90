"""Chips from rasters: our windowed rasterio reader, torchgeo's geo sampler, and chip folders.

Sample dict of every dataset here (model channel order = the preset's bands, group by group)::

    x          float32 [C, h, w]  normalised with the per-band statistics, NaN where not measured
    valid      bool    [C, h, w]  False at nodata / outside the raster / absent bands
    group_pad  bool    [G]        True where a whole band group is absent from the file
    index      int64   []         position in the dataset (and ``label`` for labelled chips)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from geomae.bands import Preset
from geomae.io import EXTS, RasterInfo, info_of, open_raster, read_raster, read_window, valid_fraction
from maecore.errors import DataError, read_all
from maecore.paths import expand_paths, labels_from_csv


def sample_dir() -> Path:
    return Path(str(resources.files("geomae").joinpath("sample")))


def expand(data: str | os.PathLike[str] | None, default: str = "landsat_rgb.tif") -> list[Path]:
    """Rasters of a file, folder (recursive) or glob; ``None`` = the bundled sample raster."""
    return expand_paths(data, EXTS, [sample_dir() / default], "raster files")


# ---------------------------------------------------------------------------------- band mapping
@dataclass
class BandMap:
    """Where each model channel comes from in one file (1-based band index, or None if absent)."""

    source: list[int | None]
    group_pad: list[bool]

    @property
    def file_bands(self) -> list[int]:
        return [i for i in self.source if i is not None]


def band_map(info: RasterInfo, preset: Preset, bands: list[str] | None = None) -> BandMap:
    """Match a file's bands to the preset: by ``bands`` (the preset names of the file's bands, in
    file order), by equal count (file order = preset order), or by band descriptions."""
    names = preset.band_names
    if bands is not None:
        if len(bands) != info.count:
            raise DataError(info.path, f"{len(bands)} bands (data.bands = {list(bands)})", f"{info.count} bands")
        unknown = [b for b in bands if b not in names]
        if unknown:
            raise DataError(info.path, f"band names of preset {preset.name!r} ({', '.join(names)})", f"{unknown}")
        in_file = list(bands)
    elif info.count == len(names):
        in_file = names
    elif all(d in names for d in info.descriptions) and len(set(info.descriptions)) == info.count:
        in_file = list(info.descriptions)  # type: ignore[arg-type]
    else:
        raise DataError(info.path, f"{len(names)} bands of preset {preset.name!r} ({', '.join(names)}), or "
                        "data.bands naming the file's bands", f"{info.count} bands")
    source = [in_file.index(b) + 1 if b in in_file else None for b in preset.model_order()]
    pad = [any(b not in in_file for b in bs) for bs in preset.groups.values()]
    if all(pad):
        raise DataError(info.path, f"all bands of at least one group of preset {preset.name!r} "
                        f"({preset.groups})", f"bands {in_file}")
    return BandMap(source, pad)


def to_model_input(raw: dict[str, Any], bmap: BandMap, stats: dict[str, Any] | None) -> dict[str, Any]:
    """File bands ``raw["x"] [c, h, w]`` (read with ``bmap.file_bands``) -> model channels, normalised."""
    x, v = raw["x"], raw["valid"]
    h, w = x.shape[-2:]
    out = np.full((len(bmap.source), h, w), np.nan, dtype=np.float32)
    valid = np.zeros((len(bmap.source), h, w), dtype=bool)
    order = bmap.file_bands
    for c, b in enumerate(bmap.source):
        if b is not None:
            out[c], valid[c] = x[order.index(b)], v[order.index(b)]
    if stats is not None:
        mean = np.asarray(stats["mean"], dtype=np.float32)[:, None, None]
        std = np.asarray(stats["std"], dtype=np.float32)[:, None, None]
        out = (out - mean) / std
    # a pixel is measured only when every present band is (partial pixels are padding too)
    present = np.array([b is not None for b in bmap.source])
    all_ok = valid[present].all(0)
    valid &= all_ok[None]
    out[~valid] = np.nan
    return {"x": torch.from_numpy(out), "valid": torch.from_numpy(valid),
            "group_pad": torch.tensor(bmap.group_pad, dtype=torch.bool)}


def denormalize(x: np.ndarray, stats: dict[str, Any] | None) -> np.ndarray:
    if stats is None:
        return x
    return x * np.asarray(stats["std"])[:, None, None] + np.asarray(stats["mean"])[:, None, None]


# ---------------------------------------------------------------------------------- sources
@dataclass
class Source:
    info: RasterInfo
    bmap: BandMap


def open_sources(files: list[Path], preset: Preset, bands: list[str] | None, patch: int,
                 skip_bad: bool = False) -> list[Source]:
    """Check every raster's header, bands and validity; one CRS for all. Bad files are reported
    together (or skipped with ``skip_bad``, and listed)."""
    def source(f: Path) -> Source:
        with open_raster(f) as src:
            info = info_of(src)
            if min(info.width, info.height) < patch:
                raise DataError(f, f"a raster of at least the patch size {patch}x{patch} pixels",
                                f"{info.height}x{info.width}")
            bmap = band_map(info, preset, bands)
            _, frac = valid_fraction(src)
            if frac == 0.0:
                raise DataError(f, "at least one valid pixel", f"every pixel is nodata (nodata={info.nodata})")
        return Source(info, bmap)

    good = read_all(files, source, skip_bad)
    first = good[0].info
    for s in good[1:]:
        if s.info.crs != first.crs:
            raise DataError(s.info.path, f"the CRS of the other inputs ({first.crs_string}, {first.path}); "
                            "reproject first (gdalwarp -t_srs)", s.info.crs_string)
    return good


def compute_stats(sources: list[Source], preset: Preset, max_side: int = 1024) -> dict[str, Any]:
    """Per-band mean and std (model channel order) over the valid pixels of every source (read
    decimated to at most ``max_side`` pixels a side)."""
    n = len(preset.model_order())
    s1, s2, cnt = np.zeros(n), np.zeros(n), np.zeros(n)
    for s in sources:
        with open_raster(s.info.path) as src:
            k = max(1, int(np.ceil(max(src.height, src.width) / max_side)))
            shape = (max(1, src.height // k), max(1, src.width // k))
            try:
                arr = src.read(s.bmap.file_bands, out_shape=(len(s.bmap.file_bands), *shape), masked=True)
            except Exception as err:  # noqa: BLE001  (any GDAL failure names the file)
                raise DataError(src.name, "readable pixel data", f"{type(err).__name__}: {err}") from err
        raw = {"x": np.asarray(arr.data, np.float32), "valid": ~np.ma.getmaskarray(arr) & np.isfinite(arr.data)}
        m = to_model_input(raw, s.bmap, None)
        x, v = m["x"].double().numpy(), m["valid"].numpy()
        s1 += np.where(v, x, 0).sum((1, 2))
        s2 += np.where(v, x * x, 0).sum((1, 2))
        cnt += v.sum((1, 2))
    mean = s1 / np.maximum(cnt, 1)
    std = np.sqrt(np.maximum(s2 / np.maximum(cnt, 1) - mean**2, 0))
    std = np.where(std > 1e-6, std, 1.0)
    return {"bands": preset.model_order(), "mean": mean.round(6).tolist(), "std": std.round(6).tolist(),
            "pixels": cnt.astype(int).tolist()}


def read_stats(path: str | os.PathLike[str], preset: Preset) -> dict[str, Any]:
    p = Path(path)
    try:
        stats = json.loads(p.read_text())
    except FileNotFoundError as err:
        raise DataError(p, "a stats.json written by `geomae prepare --stats`", "nothing at that path") from err
    except json.JSONDecodeError as err:
        raise DataError(p, "valid JSON", f"a parse error ({err})") from err
    if stats.get("bands") != preset.model_order():
        raise DataError(p, f"statistics of bands {preset.model_order()}", f"bands {stats.get('bands')}")
    return stats


def grid_windows(height: int, width: int, chip: int, stride: int) -> list[tuple[int, int]]:
    """Top-left ``(row, col)`` of chips covering the raster; the last chip of a row/column is
    aligned to the edge (a raster smaller than the chip gets one chip, read boundless)."""
    def starts(n: int) -> list[int]:
        if n <= chip:
            return [0]
        s = list(range(0, n - chip + 1, stride))
        return s if s[-1] == n - chip else [*s, n - chip]

    return [(r, c) for r in starts(height) for c in starts(width)]


class RasterChips(Dataset):
    """Chips of ``chip_size`` on a grid of ``stride`` over each raster, read with rasterio windows.

    ``jitter``: shift each chip by a random offset of up to ``stride // 2`` pixels (seeded by the
    training loop's per-item seed), so training sees random positions; ``False`` for inference.
    Chips with less than ``min_valid`` valid pixels are left out.

    ``cache_mb``: a raster whose model input (float32 and validity, 5 bytes a pixel and channel)
    fits in what is left of this many MiB is decoded whole the first time a chip of it is read,
    and its chips are sliced from memory after that (equal to windowed reads; a GDAL window read
    cost about 0.25 ms a 32-pixel chip here, most of a small model's data time). The budget is per
    process: each loader worker decodes and holds its own copy. 0: windowed reads only.
    """

    def __init__(self, sources: list[Source], chip_size: int, stride: int, stats: dict[str, Any] | None,
                 min_valid: float = 0.5, jitter: bool = True, cache_mb: float = 0) -> None:
        if cache_mb < 0:
            raise ValueError(f"cache_mb must be >= 0 (0 = no cache), got {cache_mb}")
        self.sources, self.chip, self.stride, self.stats, self.jitter = sources, chip_size, stride, stats, jitter
        self.cache_bytes = int(cache_mb * 2**20)
        self.items: list[tuple[int, int, int]] = []
        self._open: dict[int, Any] = {}
        self._scenes: dict[int, dict[str, torch.Tensor] | None] = {}  # raster -> decoded model input (None: too big)
        self._cached_bytes = 0
        self._pid = os.getpid()
        for i, s in enumerate(sources):
            with open_raster(s.info.path) as src:
                vmap, _ = valid_fraction(src)
            fy, fx = vmap.shape[0] / s.info.height, vmap.shape[1] / s.info.width
            for r, c in grid_windows(s.info.height, s.info.width, chip_size, stride):
                sub = vmap[int(r * fy): max(int((r + chip_size) * fy), int(r * fy) + 1),
                           int(c * fx): max(int((c + chip_size) * fx), int(c * fx) + 1)]
                if sub.size and sub.mean() >= min_valid:
                    self.items.append((i, r, c))
        if not self.items:
            raise DataError(sources[0].info.path, f"chips of {chip_size} px with at least {min_valid:.0%} valid "
                            "pixels (data.min_valid)", "none")

    def __len__(self) -> int:
        return len(self.items)

    def _src(self, i: int) -> Any:
        if os.getpid() != self._pid:  # a DataLoader worker: its own file handles (a forked one keeps the cache)
            self._open, self._pid = {}, os.getpid()
        if i not in self._open:
            self._open[i] = open_raster(self.sources[i].info.path)
        return self._open[i]

    def _scene(self, i: int) -> dict[str, torch.Tensor] | None:
        """Raster ``i`` as model input, decoded on first use when it fits the cache (else None)."""
        src = self._src(i)
        if i not in self._scenes:
            s = self.sources[i]
            need = len(s.bmap.source) * s.info.height * s.info.width * 5
            self._scenes[i] = None
            if self._cached_bytes + need <= self.cache_bytes:
                self._scenes[i] = to_model_input(read_window(src, None, s.bmap.file_bands), s.bmap, self.stats)
                self._cached_bytes += need
        return self._scenes[i]

    def window(self, k: int) -> tuple[int, int, int]:
        i, r, c = self.items[k]
        if self.jitter and self.stride > 1:
            info, half = self.sources[i].info, self.stride // 2
            dr, dc = torch.randint(-half, half + 1, (2,)).tolist()
            r = min(max(r + dr, 0), max(info.height - self.chip, 0))
            c = min(max(c + dc, 0), max(info.width - self.chip, 0))
        return i, r, c

    def __getitem__(self, k: int) -> dict[str, Any]:
        from rasterio.windows import Window

        i, r, c = self.window(k)
        s, n = self.sources[i], self.chip
        scene = self._scene(i)
        if scene is not None and r + n <= s.info.height and c + n <= s.info.width:
            out = {k: scene[k][:, r : r + n, c : c + n].clone() for k in ("x", "valid")}
            out["group_pad"] = scene["group_pad"].clone()
        else:  # not cached, or a chip past the edge of a raster smaller than it (read boundless)
            out = to_model_input(read_window(self._src(i), Window(c, r, n, n), s.bmap.file_bands), s.bmap, self.stats)
        out["index"] = torch.tensor(k)
        out["window"] = torch.tensor([i, r, c])
        return out

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_open"], state["_scenes"], state["_cached_bytes"] = {}, {}, 0  # handles do not pickle; workers reopen
        return state


class TorchgeoChips(Dataset):
    """The same sample dicts from torchgeo: a :class:`torchgeo.datasets.RasterDataset` over the
    files and the queries of a ``RandomGeoSampler`` (training) or ``GridGeoSampler`` (inference),
    drawn once with a seeded generator so the dataset is indexable and reproducible."""

    def __init__(self, sources: list[Source], chip_size: int, stats: dict[str, Any] | None, length: int = 256,
                 sampler: str = "random", seed: int = 0) -> None:
        from torchgeo.datasets import RasterDataset
        from torchgeo.samplers import GridGeoSampler, RandomGeoSampler

        if sampler not in ("random", "grid"):
            raise ValueError(f"sampler must be 'random' or 'grid', got {sampler!r}")
        self.sources, self.stats, self.chip = sources, stats, chip_size
        self.nodata = sources[0].info.nodata
        self.bmap = sources[0].bmap
        if any(s.bmap.source != self.bmap.source for s in sources):
            raise DataError(sources[-1].info.path, "the band layout of the other inputs (torchgeo reader)",
                            "a different band layout")
        from rasterio.enums import Resampling

        class _Nearest(RasterDataset):  # torchgeo resamples float images bilinearly; keep pixels as stored
            @property
            def resampling(self) -> Resampling:
                return Resampling.nearest

        self.dataset = _Nearest(paths=[s.info.path for s in sources])
        self.dataset.band_indexes = self.bmap.file_bands  # read only the bands the preset uses
        if sampler == "random":
            gen = torch.Generator().manual_seed(seed)
            self.queries = list(RandomGeoSampler(self.dataset, chip_size, length, generator=gen))
        else:
            self.queries = list(GridGeoSampler(self.dataset, chip_size, chip_size))

    def __len__(self) -> int:
        return len(self.queries)

    def __getitem__(self, k: int) -> dict[str, Any]:
        img = self.dataset[self.queries[k]]["image"].numpy().astype(np.float32)
        valid = np.isfinite(img)
        if self.nodata is not None:
            valid &= img != np.float32(self.nodata)  # per band, as GDAL's nodata masks
        img[~valid] = np.nan
        out = to_model_input({"x": img, "valid": valid}, self.bmap, self.stats)
        out["index"] = torch.tensor(k)
        return out


# ---------------------------------------------------------------------------------- chip folders
def labels_for(files: list[Path], labels_csv: str | None) -> list[str]:
    """Labels from a CSV (columns ``file,label``; paths relative to the CSV) or the parent folder."""
    if labels_csv is None:
        return [f.parent.name for f in files]
    return labels_from_csv(files, labels_csv, "chip")


def fit_chip(x: np.ndarray, v: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Centre-crop or pad (with not-valid pixels, never zeros) ``[C, h, w]`` to ``size x size``."""
    c, h, w = x.shape
    out = np.full((c, size, size), np.nan, np.float32)
    ok = np.zeros((c, size, size), bool)
    sh, sw = min(h, size), min(w, size)
    y0, x0 = (h - sh) // 2, (w - sw) // 2
    oy, ox = (size - sh) // 2, (size - sw) // 2
    out[:, oy:oy + sh, ox:ox + sw] = x[:, y0:y0 + sh, x0:x0 + sw]
    ok[:, oy:oy + sh, ox:ox + sw] = v[:, y0:y0 + sh, x0:x0 + sw]
    return out, ok


class ChipFolder(Dataset):
    """Labelled chips (one raster per chip; folder per class or a CSV), read once into memory and
    fitted to ``chip_size`` (centre crop, or padding that becomes padding tokens)."""

    def __init__(self, files: list[Path], labels: list[str] | None, preset: Preset, chip_size: int, patch: int,
                 stats: dict[str, Any] | None, bands: list[str] | None = None) -> None:
        self.files = files
        self.class_names = sorted(set(labels)) if labels is not None else None
        self.labels = [self.class_names.index(x) for x in labels] if labels is not None else None
        self.items = []
        for f in files:
            raw = read_raster(f)
            info = raw.pop("info")
            if min(info.height, info.width) < patch:
                raise DataError(f, f"a chip of at least the patch size {patch}x{patch} pixels",
                                f"{info.height}x{info.width}")
            bmap = band_map(info, preset, bands)
            use = [b - 1 for b in bmap.file_bands]
            raw["x"], raw["valid"] = raw["x"][use], raw["valid"][use]
            if not raw["valid"].any():
                raise DataError(f, "at least one valid pixel", f"every pixel is nodata (nodata={info.nodata})")
            x, v = fit_chip(raw["x"], raw["valid"], chip_size)
            self.items.append(to_model_input({"x": x, "valid": v}, bmap, stats))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> dict[str, Any]:
        out = {**self.items[k], "index": torch.tensor(k)}
        if self.labels is not None:
            out["label"] = torch.tensor(self.labels[k])
        return out
