"""torchgeo's scene-classification datasets (FireRisk, EuroSAT) as fine-tuning / probe sources.

Both are read from a local root with ``download=False`` (nothing is fetched); the layout is
torchgeo's (0.8):

- FireRisk (``torchgeo.datasets.FireRisk``): ``ROOT/FireRisk/{train,val}/<class>/*.png``, three-band
  RGB PNGs of NAIP (320 x 320 px, 1 m), the 7 classes ``High Low Moderate Non-burnable Very_High
  Very_Low Water``. (FireRisk, Shen et al. 2023: MAE ViT-B/16 best at 65.29 % accuracy.)
- EuroSAT (``torchgeo.datasets.EuroSAT``): ``ROOT/eurosat-{train,val}.txt`` (file lists) and
  ``ROOT/ds/images/remote_sensing/otherDatasets/sentinel_2/tif/<class>/*.tif``, 13-band Sentinel-2
  L1C GeoTIFFs (64 x 64 px) in torchgeo's band order ``B01 .. B12, B8A``, 10 classes.

Images become the same sample dicts as chip folders (model channel order of the pretrained
model's preset, normalised with its statistics); they are resized (bilinear, antialiased) to the
model's chip size, as FireRisk resizes its chips for a 224-px ViT. Band names: FireRisk's three
bands are ``data.bands`` (preset names, default ``red green blue``); EuroSAT loads the Sentinel-2
bands named in ``data.bands`` (default: every band the preset has, by name, or through
``B04/B03/B02/B08 -> red/green/blue/nir`` for RGB(+NIR) presets).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from geomae.bands import Preset
from geomae.data import BandMap, to_model_input
from maecore.errors import ConfigError, DataError

DATASETS = ("firerisk", "eurosat")
FIRERISK_CLASSES = ("High", "Low", "Moderate", "Non-burnable", "Very_High", "Very_Low", "Water")
EUROSAT_CLASSES = ("AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
                   "PermanentCrop", "Residential", "River", "SeaLake")
EUROSAT_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12", "B8A")
EUROSAT_DIR = Path("ds", "images", "remote_sensing", "otherDatasets", "sentinel_2", "tif")
S2_ALIASES = {"B04": "red", "B03": "green", "B02": "blue", "B08": "nir"}


def expected_layout(name: str) -> str:
    if name == "firerisk":
        return ("torchgeo's FireRisk layout: ROOT/FireRisk/train/<class>/*.png and ROOT/FireRisk/val/<class>/*.png "
                f"with the 7 class folders {', '.join(FIRERISK_CLASSES)} (or ROOT/FireRisk.zip)")
    return ("torchgeo's EuroSAT layout: ROOT/eurosat-train.txt, ROOT/eurosat-val.txt and 13-band GeoTIFFs in "
            f"ROOT/{EUROSAT_DIR.as_posix()}/<class>/*.tif with the 10 class folders {', '.join(EUROSAT_CLASSES)}")


def _check_root(name: str, root: Path, split: str) -> None:
    """A clear error before torchgeo's own (which would suggest downloading)."""
    if not root.is_dir():
        raise DataError(root, expected_layout(name), "nothing at that path (no download: geomae reads local roots)")
    if name == "firerisk":
        if not (root / "FireRisk" / split).is_dir() and not (root / "FireRisk.zip").is_file():
            raise DataError(root, expected_layout(name), f"no FireRisk/{split} folder and no FireRisk.zip")
    else:
        missing = [p for p in (f"eurosat-{split}.txt", EUROSAT_DIR.as_posix()) if not (root / p).exists()]
        if missing and not (root / "EuroSATallBands.zip").is_file():
            raise DataError(root, expected_layout(name), f"no {' and no '.join(missing)}")


def open_torchgeo(name: str, root: str | Path, split: str, bands: list[str] | None = None) -> Any:
    """The torchgeo dataset ``name`` (``firerisk`` | ``eurosat``) at ``root``, ``download=False``;
    every way it can be missing or incomplete is a :class:`DataError` naming the root."""
    from torchgeo.datasets import EuroSAT, FireRisk
    from torchgeo.datasets.errors import DatasetNotFoundError

    if name not in DATASETS:
        raise ConfigError(f"data.dataset must be chips, {' or '.join(DATASETS)}; got {name!r}")
    root = Path(root)
    _check_root(name, root, split)
    try:
        if name == "firerisk":
            ds = FireRisk(root=str(root), split=split, download=False)
            classes, want = tuple(ds.classes), FIRERISK_CLASSES
        else:
            ds = EuroSAT(root=str(root), split=split, bands=tuple(bands or EUROSAT_BANDS), download=False)
            classes, want = tuple(ds.classes), EUROSAT_CLASSES
    except (DatasetNotFoundError, FileNotFoundError, OSError) as err:
        raise DataError(root, expected_layout(name), f"{type(err).__name__}: {str(err).splitlines()[0]}") from err
    if classes != want:
        raise DataError(root, f"the {len(want)} {name} class folders {list(want)} in split {split!r}",
                        f"class folders {list(classes)}")
    return ds


def eurosat_bands(preset: Preset, bands: list[str] | None) -> tuple[list[str], list[str]]:
    """``(EuroSAT bands to load, their preset names)``."""
    names = preset.band_names

    def to_preset(b: str) -> str | None:
        return b if b in names else (S2_ALIASES[b] if S2_ALIASES.get(b) in names else None)

    if bands is not None:
        unknown = [b for b in bands if b not in EUROSAT_BANDS]
        if unknown:
            raise ConfigError(f"data.bands for EuroSAT must be Sentinel-2 band names {list(EUROSAT_BANDS)}, "
                              f"got {unknown}")
        unmapped = [b for b in bands if to_preset(b) is None]
        if unmapped:
            raise ConfigError(f"EuroSAT band(s) {unmapped} have no band in the model's preset {preset.name!r} "
                              f"({', '.join(names)})")
        load = list(bands)
    else:
        load = [b for b in EUROSAT_BANDS if to_preset(b) is not None]
        if not load:
            raise ConfigError(f"no EuroSAT band matches the model's preset {preset.name!r} ({', '.join(names)}); "
                              "set data.bands")
    return load, [to_preset(b) for b in load]  # type: ignore[misc]


def band_map_of(names: list[str], preset: Preset, where: Any) -> BandMap:
    """Band map of an image whose bands are the preset bands ``names`` (in order)."""
    source: list[int | None] = [names.index(b) + 1 if b in names else None for b in preset.model_order()]
    pad = [all(b not in names for b in bs) for bs in preset.groups.values()]
    if all(pad):
        raise DataError(where, f"bands of preset {preset.name!r} ({', '.join(preset.band_names)})", f"bands {names}")
    return BandMap(source, pad)


class SceneDataset(Dataset):
    """A torchgeo classification dataset as geomae samples (``x``, ``valid``, ``group_pad``, ``label``)."""

    def __init__(self, name: str, root: str | Path, split: str, preset: Preset, chip: int,
                 stats: dict[str, Any] | None, bands: list[str] | None = None) -> None:
        if name == "eurosat":
            load, in_preset = eurosat_bands(preset, bands)
            self.dataset = open_torchgeo(name, root, split, load)
        else:
            in_preset = list(bands) if bands is not None else ["red", "green", "blue"]
            if len(in_preset) != 3:
                raise ConfigError(f"FireRisk chips have 3 bands (RGB); data.bands must name 3, got {in_preset}")
            self.dataset = open_torchgeo(name, root, split)
        self.name, self.chip, self.stats = name, chip, stats
        self.bmap = band_map_of(in_preset, preset, root)
        self.class_names = list(self.dataset.classes)

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def labels(self) -> list[int]:
        return [int(t) for _, t in self.dataset.samples]

    def __getitem__(self, k: int) -> dict[str, Any]:
        sample = self.dataset[k]
        img = sample["image"].float()
        if img.shape[-2:] != (self.chip, self.chip):
            img = F.interpolate(img[None], size=(self.chip, self.chip), mode="bilinear", antialias=True,
                                align_corners=False)[0]
        x = img.numpy().astype(np.float32)[[b - 1 for b in self.bmap.file_bands]]  # as read with file_bands
        out = to_model_input({"x": x, "valid": np.isfinite(x)}, self.bmap, self.stats)
        out.update(label=torch.as_tensor(sample["label"]).long().reshape(()), index=torch.tensor(k))
        return out
