"""The core's bundled real sample and a chip dataset over multichannel image arrays.

The demo domain of ``maecore`` (``maecore pretrain``) trains on chips of a real Landsat crop so the
suite's first command does something real without any domain package. Domain packages read their
own formats (GeoTIFF, NIfTI, WFDB, ...) and do not use this module.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from maecore.errors import DataError

SAMPLE_NAME = "landsat_rgb_256.npz"


def sample_path() -> Path:
    return Path(str(resources.files("maecore").joinpath("sample", SAMPLE_NAME)))


def read_image_array(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``[C, H, W]`` from ``.npz`` (key ``image``, optional ``bands``) or ``.npy``.

    Returns ``{"image": float32 [C, H, W] with NaN where not finite, "bands": [...], "path": str}``.
    """
    p = Path(path)
    if p.suffix not in (".npz", ".npy"):
        raise DataError(p, "a .npz (key 'image') or .npy array [C, H, W]", f"extension {p.suffix!r}")
    if not p.is_file():
        raise DataError(p, "an existing file", "nothing at that path")
    try:
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                if "image" not in z.files:
                    raise DataError(p, "an 'image' array in the .npz", f"keys {z.files}")
                image = z["image"]
                bands = [str(b) for b in z["bands"]] if "bands" in z.files else None
        else:
            image = np.load(p, allow_pickle=False)
            bands = None
    except DataError:
        raise
    except Exception as err:  # zipfile / format errors from numpy
        raise DataError(p, "a readable NumPy array file", f"{type(err).__name__}: {err}") from err
    if image.ndim != 3:
        raise DataError(p, "an image array [C, H, W]", f"shape {list(image.shape)}")
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise DataError(p, "an integer or float array", f"dtype {image.dtype}")
    image = image.astype(np.float32)
    if not np.isfinite(image).any():
        raise DataError(p, "at least one finite value", "no finite value")
    bands = bands or [f"band{i}" for i in range(image.shape[0])]
    return {"image": image, "bands": bands, "path": str(p)}


class ImageChips(Dataset):
    """Square chips from one ``[C, H, W]`` image, normalised per band.

    Chip ``i`` comes from a fixed position drawn with ``seed``, so the dataset is deterministic.
    ``rows`` restricts chips to a row range (for a spatial train / held-out split).
    Sample keys: ``x [C, chip, chip]`` float32 (NaN where the source was not finite) and ``origin``
    (row, col of the chip's top-left pixel).
    """

    def __init__(
        self,
        image: np.ndarray,
        chip: int = 32,
        n_chips: int = 256,
        seed: int = 0,
        rows: tuple[int, int] | None = None,
        mean: np.ndarray | None = None,
        std: np.ndarray | None = None,
    ) -> None:
        c, h, w = image.shape
        r0, r1 = rows or (0, h)
        if chip < 1 or chip > w or chip > r1 - r0:
            raise ValueError(f"chip size {chip} does not fit the image region {r1 - r0} x {w}")
        if n_chips < 1:
            raise ValueError(f"n_chips must be >= 1, got {n_chips}")
        self.image = image
        self.chip = chip
        self.mean = np.nanmean(image, axis=(1, 2)) if mean is None else np.asarray(mean, np.float32)
        self.std = np.nanstd(image, axis=(1, 2)) + 1e-6 if std is None else np.asarray(std, np.float32)
        rng = np.random.default_rng(seed)
        top = rng.integers(r0, r1 - chip + 1, n_chips)
        left = rng.integers(0, w - chip + 1, n_chips)
        self.origins = list(zip(top.tolist(), left.tolist()))

    def __len__(self) -> int:
        return len(self.origins)

    def __getitem__(self, i: int) -> dict[str, Any]:
        r, c = self.origins[i]
        chip = self.image[:, r : r + self.chip, c : c + self.chip]
        chip = (chip - self.mean[:, None, None]) / self.std[:, None, None]
        return {"x": torch.from_numpy(np.ascontiguousarray(chip, dtype=np.float32)), "origin": (r, c)}
