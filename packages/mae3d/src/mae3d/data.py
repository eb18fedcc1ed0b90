"""Datasets of point clouds and radiance grids, loaded once and checked file by file."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from mae3d.io import EXTS, read_grid_or_shape, read_points
from maecore.errors import DataError, read_all
from maecore.paths import expand_paths, labels_from_csv


def sample_dir() -> Path:
    return Path(str(resources.files("mae3d").joinpath("sample")))


def expand(data: str | None) -> list[Path]:
    """Files of a path, folder (recursive) or glob; ``None`` = the bundled YCB sample."""
    default = sorted((sample_dir() / "ycb").rglob("*.ply")) if data is None else []
    return expand_paths(data, EXTS, default, "mesh or point files")


def load_all(files: list[Path], reader: Callable[[Path], dict[str, Any]], skip_bad: bool) -> list[dict[str, Any]]:
    """Read every file; bad files are collected and reported together (or skipped, and listed)."""
    return read_all(files, reader, skip_bad)


def labels_for(files: list[Path], labels_csv: str | None) -> list[str]:
    """Labels from a CSV (columns ``file,label``; file relative to the CSV or absolute) or from
    each file's parent folder name (``class/object.ply``)."""
    if labels_csv is None:
        return [f.parent.name for f in files]
    return labels_from_csv(files, labels_csv)


class PointClouds(Dataset):
    """Normalised clouds of ``n_points``; samples ``{"points", "center", "scale", "index"}`` plus
    ``label`` when labels are given.

    ``augment`` (pretraining): Point-MAE's scale-and-translate, a per-axis scale drawn from
    ``scale=(lo, hi)`` and a per-axis shift from ``[-translate, translate]`` for every draw of an
    item. It uses torch's global generator, which the engine seeds per item from (seed, stream
    position), so a resumed run draws the same augmentations. ``center``/``scale`` still describe
    the stored cloud, not the augmented one.
    """

    def __init__(self, items: list[dict[str, Any]], labels: list[int] | None = None,
                 augment: dict[str, Any] | None = None) -> None:
        self.items, self.labels = items, labels
        self.augment = augment
        if augment:
            lo, hi = (float(v) for v in augment.get("scale", (2 / 3, 3 / 2)))
            if not 0 < lo <= hi:
                raise ValueError(f"augment scale must be 0 < lo <= hi, got {(lo, hi)}")
            if float(augment.get("translate", 0.2)) < 0:
                raise ValueError(f"augment translate must be >= 0, got {augment['translate']}")

    @classmethod
    def from_files(cls, files: list[Path], n_points: int, skip_bad: bool = False, seed: int = 0) -> PointClouds:
        return cls(load_all(files, lambda f: read_points(f, n_points, seed), skip_bad))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        it = self.items[i]
        pts = torch.from_numpy(it["points"])
        if self.augment:
            lo, hi = (float(v) for v in self.augment.get("scale", (2 / 3, 3 / 2)))
            shift = float(self.augment.get("translate", 0.2))
            pts = pts * (lo + (hi - lo) * torch.rand(3)) + (torch.rand(3) * 2 - 1) * shift
        out = {"points": pts, "center": torch.from_numpy(it["center"]),
               "scale": torch.tensor(it["scale"], dtype=torch.float64), "index": torch.tensor(i)}
        if self.labels is not None:
            out["label"] = torch.tensor(self.labels[i])
        return out


class Grids(Dataset):
    """Radiance grids as ``x [4, R, R, R]`` (RGB + alpha channels first)."""

    def __init__(self, items: list[dict[str, Any]], labels: list[int] | None = None) -> None:
        self.items, self.labels = items, labels

    @classmethod
    def from_files(cls, files: list[Path], resolution: int, skip_bad: bool = False) -> Grids:
        def read(f: Path) -> dict[str, Any]:
            g = read_grid_or_shape(f, resolution)
            if g["rgbsigma"].shape[:3] != (resolution,) * 3:
                raise DataError(f, f"a {resolution}^3 grid (data.resolution)", f"{g['rgbsigma'].shape[:3]}")
            return g

        return cls(load_all(files, read, skip_bad))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        out = {"x": torch.from_numpy(np.ascontiguousarray(self.items[i]["rgbsigma"].transpose(3, 0, 1, 2))),
               "index": torch.tensor(i)}
        if self.labels is not None:
            out["label"] = torch.tensor(self.labels[i])
        return out
