"""torchgeo FireRisk / EuroSAT as fine-tuning and probe sources, from a local root (no download).

The real datasets are not in the sample data, so each test builds a tiny root in torchgeo's
layout from real pixels: 32 x 32 chips cut from the bundled Landsat 7 crop (fully valid
windows). Their classes are a task defined from the data, NOT fire risk or land cover: the chips
sorted by mean brightness and dealt into the class folders in rank order (FireRisk: 7 folders,
EuroSAT: 10), 2 training and 1 validation chip each. EuroSAT files have 13 bands in torchgeo's
order (B01 .. B12, B8A): B04, B03, B02 hold the crop's red, green, blue; the other 10 bands are
filled with zeros and are not loaded (the tiny model's preset is RGB, so geomae loads B04 B03 B02).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.transform import from_origin

from geomae.bands import get_preset
from geomae.cli import main
from geomae.data import denormalize, sample_dir
from geomae.io import read_raster
from geomae.scenes import EUROSAT_BANDS, EUROSAT_CLASSES, EUROSAT_DIR, FIRERISK_CLASSES, SceneDataset
from maecore.errors import ConfigError, DataError


def real_chips(n: int, size: int = 32) -> list[np.ndarray]:
    """``n`` fully valid ``[3, size, size]`` uint8 chips of the bundled crop, by mean brightness."""
    r = read_raster(sample_dir() / "landsat_rgb.tif")
    x, v = r["x"], r["valid"].all(0)
    chips = [x[:, i:i + size, j:j + size] for i in range(0, x.shape[1] - size + 1, size // 2)
             for j in range(0, x.shape[2] - size + 1, size // 2) if v[i:i + size, j:j + size].all()]
    assert len(chips) >= n
    chips = [chips[k] for k in np.linspace(0, len(chips) - 1, n).round().astype(int)]
    return [c.astype(np.uint8) for c in sorted(chips, key=lambda c: float(c.mean()))]


def make_firerisk(root: Path, per_class: tuple[int, int] = (2, 1)) -> Path:
    chips = iter(real_chips(len(FIRERISK_CLASSES) * sum(per_class)))
    for cls in FIRERISK_CLASSES:
        for split, n in zip(("train", "val"), per_class):
            d = root / "FireRisk" / split / cls
            for k in range(n):
                d.mkdir(parents=True, exist_ok=True)
                Image.fromarray(next(chips).transpose(1, 2, 0)).save(d / f"{cls}_{k}.png")
    return root


def make_eurosat(root: Path) -> Path:
    chips = iter(real_chips(len(EUROSAT_CLASSES) * 3))
    lists: dict[str, list[str]] = {"train": [], "val": []}
    for cls in EUROSAT_CLASSES:
        d = root / EUROSAT_DIR / cls
        d.mkdir(parents=True, exist_ok=True)
        for k, split in enumerate(("train", "train", "val")):
            rgb = next(chips).astype(np.uint16)
            bands = np.zeros((13, *rgb.shape[1:]), np.uint16)
            for name, c in (("B04", 0), ("B03", 1), ("B02", 2)):
                bands[EUROSAT_BANDS.index(name)] = rgb[c]
            name = f"{cls}_{k + 1}"
            with rasterio.open(d / f"{name}.tif", "w", driver="GTiff", width=32, height=32, count=13,
                               dtype="uint16", crs="EPSG:32618", transform=from_origin(5e5, 4e6, 10, 10)) as dst:
                dst.write(bands)
            lists[split].append(f"{name}.jpg")  # torchgeo's lists name the .jpg of each .tif
    for split, names in lists.items():
        (root / f"eurosat-{split}.txt").write_text("\n".join(names) + "\n")
    return root


@pytest.fixture(scope="module")
def firerisk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_firerisk(tmp_path_factory.mktemp("firerisk"))


@pytest.fixture(scope="module")
def eurosat(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_eurosat(tmp_path_factory.mktemp("eurosat"))


STATS = {"bands": ["red", "green", "blue"], "mean": [60.0, 50.0, 40.0], "std": [30.0, 20.0, 10.0]}


@pytest.mark.parametrize("name", ["firerisk", "eurosat"])
def test_samples_hold_the_real_pixels_in_model_order(name: str, firerisk: Path, eurosat: Path):
    root = firerisk if name == "firerisk" else eurosat
    ds = SceneDataset(name, root, "train", get_preset("landsat7_rgb"), 32, STATS)
    n_classes = len(FIRERISK_CLASSES if name == "firerisk" else EUROSAT_CLASSES)
    assert len(ds) == 2 * n_classes and ds.class_names == list(FIRERISK_CLASSES if name == "firerisk"
                                                              else EUROSAT_CLASSES)
    assert ds.labels == [k // 2 for k in range(2 * n_classes)]
    chips = real_chips(n_classes * 3)
    s = ds[0]
    assert s["x"].shape == (3, 32, 32) and bool(s["valid"].all()) and int(s["label"]) == 0
    assert np.allclose(denormalize(s["x"].numpy(), STATS), chips[0], atol=1e-3)  # red, green, blue in order


def test_firerisk_chips_are_resized_to_the_model(firerisk: Path):
    ds = SceneDataset("firerisk", firerisk, "val", get_preset("naip"), 16, None)
    s = ds[0]
    assert s["x"].shape == (4, 16, 16) and s["group_pad"].tolist() == [False, True]  # NIR group absent
    assert not s["valid"][3].any() and bool(s["valid"][:3].all())


@pytest.mark.parametrize("name, n", [("firerisk", 7), ("eurosat", 10)])
def test_finetune_and_probe_run_on_a_local_root(run: Path, tmp_path: Path, name: str, n: int,
                                                firerisk: Path, eurosat: Path):
    root = firerisk if name == "firerisk" else eurosat
    ft = tmp_path / "ft"
    assert main(["finetune", "--model", str(run / "export"), "--config", "tiny", "--out", str(ft),
                 "--data", str(root), "--set", f"data.dataset={name}", "--max-steps", "4"]) == 0
    summary = json.loads((ft / "summary.json").read_text())
    assert summary["task"] == "classification" and 0.0 <= summary["val/acc"] <= 1.0
    head = json.loads((ft / "export" / "head.json").read_text())
    assert head["head"]["n_classes"] == n and len(head["class_names"]) == n
    assert main(["probe", "--model", str(run / "export"), "--config", "tiny", "--out", str(tmp_path / "p"),
                 "--data", str(root), "--set", f"data.dataset={name}"]) == 0
    res = json.loads((tmp_path / "p" / "probe.json").read_text())
    assert res["pretrained"]["linear"]["n"] == 2 * n


@pytest.mark.parametrize("name, what", [("firerisk", r"ROOT/FireRisk/train/<class>/\*\.png"),
                                        ("eurosat", r"ROOT/eurosat-train\.txt")])
def test_missing_root_names_the_root_and_the_layout(run: Path, tmp_path: Path, capsys, name: str, what: str):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=rf"nowhere: expected torchgeo's .* layout: {what}.*found nothing at that path"):
        SceneDataset(name, missing, "train", get_preset("landsat7_rgb"), 32, None)
    assert main(["finetune", "--model", str(run / "export"), "--config", "tiny", "--out", str(tmp_path / "f"),
                 "--data", str(missing), "--set", f"data.dataset={name}"]) == 2
    assert "nowhere: expected torchgeo's" in capsys.readouterr().err
    assert main(["probe", "--model", str(run / "export"), "--config", "tiny", "--set", f"data.dataset={name}"]) == 2
    assert "expected --data ROOT of the local" in capsys.readouterr().err
    missing.mkdir()  # an empty root: what is absent is named
    found = "no FireRisk/train folder" if name == "firerisk" else "no eurosat-train.txt and no ds/images"
    with pytest.raises(DataError, match=rf"nowhere: expected .*found {found}"):
        SceneDataset(name, missing, "train", get_preset("landsat7_rgb"), 32, None)


def test_incomplete_roots(tmp_path: Path, firerisk: Path):
    root = make_firerisk(tmp_path / "fr", per_class=(1, 0))  # no val split at all
    with pytest.raises(DataError, match=r"fr: expected torchgeo's FireRisk layout.*found no FireRisk/val folder"):
        SceneDataset("firerisk", root, "val", get_preset("landsat7_rgb"), 32, None)
    (root / "FireRisk" / "train" / "Water").rename(root / "FireRisk" / "train" / "Lake")
    with pytest.raises(DataError, match=r"fr: expected the 7 firerisk class folders .*found class folders .*'Lake'"):
        SceneDataset("firerisk", root, "train", get_preset("landsat7_rgb"), 32, None)
    eu = make_eurosat(tmp_path / "eu")
    (eu / "eurosat-val.txt").write_text("Forest_3.jpg\n")  # nine classes have no validation file
    with pytest.raises(DataError, match=r"eu: expected torchgeo's EuroSAT layout.*found FileNotFoundError"):
        SceneDataset("eurosat", eu, "val", get_preset("landsat7_rgb"), 32, None)


def test_band_and_dataset_choices(eurosat: Path, run: Path, tmp_path: Path, capsys):
    ds = SceneDataset("eurosat", eurosat, "train", get_preset("sentinel2_l1c"), 32, None)
    assert ds[0]["x"].shape == (13, 32, 32) and not ds[0]["group_pad"].any()  # every band, by name
    ds = SceneDataset("eurosat", eurosat, "train", get_preset("sentinel2_l1c"), 32, None, ["B04", "B03", "B02"])
    assert ds[0]["group_pad"].tolist() == [False, True, True, True]  # only the rgbn group present
    with pytest.raises(ConfigError, match=r"EuroSAT band\(s\) \['B11'\] have no band in the model's preset"):
        SceneDataset("eurosat", eurosat, "train", get_preset("landsat7_rgb"), 32, None, ["B04", "B11"])
    with pytest.raises(ConfigError, match=r"Sentinel-2 band names .* got \['red'\]"):
        SceneDataset("eurosat", eurosat, "train", get_preset("landsat7_rgb"), 32, None, ["red"])
    assert main(["probe", "--model", str(run / "export"), "--config", "tiny", "--data", str(eurosat),
                 "--set", "data.dataset=bigearthnet"]) == 2
    assert "data.dataset must be chips, firerisk or eurosat" in capsys.readouterr().err
