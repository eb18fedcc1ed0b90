"""Segmentation fine-tuning from label rasters: alignment, chips, IoU, class-map GeoTIFF, CLI.

There is no human-labelled raster in the sample data: the labels are the bundled
``landsat_rgb_labels.tif``, made from the bundled Landsat crop by the per-pixel spectral rule
(land / water / cloud) of ``geomae.segment.spectral_rule_labels`` (see sample/PROVENANCE.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from geomae.bands import get_preset
from geomae.cli import main
from geomae.data import compute_stats, denormalize, open_sources, sample_dir
from geomae.io import read_raster
from geomae.segment import (
    check_aligned,
    confusion_matrix,
    iou_report,
    pair_labels,
    read_label,
    segmentation_sets,
    spectral_rule_labels,
)
from maecore.errors import DataError

LABELS = sample_dir() / "landsat_rgb_labels.tif"
NAMES = "data.class_names=[land,water,cloud]"


@pytest.fixture(scope="module")
def crop() -> dict:
    return read_raster(sample_dir() / "landsat_rgb.tif")


def test_bundled_labels_are_the_rule_on_the_bundled_crop(crop: dict):
    with rasterio.open(LABELS) as lab, rasterio.open(sample_dir() / "landsat_rgb.tif") as img:
        assert (lab.crs, lab.transform, lab.shape, lab.count, lab.dtypes[0], lab.nodata) == \
            (img.crs, img.transform, img.shape, 1, "uint8", 255)
        y = lab.read(1)
    assert np.array_equal(y, spectral_rule_labels(crop["x"], crop["valid"]))
    frac = np.bincount(y.ravel(), minlength=256)[[0, 1, 2, 255]] / y.size
    assert (frac[:3] > 0.05).all() and frac[3] < 0.15  # three real classes; nodata border + unruled pixels


def _sets(stride: int = 32, **kw):
    preset = get_preset("landsat7_rgb")
    images = [sample_dir() / "landsat_rgb.tif"]
    sources = open_sources(images, preset, None, 8)
    stats = compute_stats(sources, preset)
    return (*segmentation_sets(images, [LABELS], sources, 32, stride, stats, -100, 0.5, 0.25,
                               ["land", "water", "cloud"], **kw), stats)


def test_chips_read_image_and_labels_with_the_same_window(crop: dict):
    train, val, names, pairs, stats = _sets()
    assert names == ["land", "water", "cloud"] and len(train) > 40 and len(val) > 10
    # spatial hold-out: validation chips are the bottom quarter (rows >= 288 of 384), training above
    assert max(r + 32 for _, r, _ in train.items) <= 288 <= min(r for _, r, _ in val.items)
    for ds in (train, val):
        for k in (0, len(ds) // 2, len(ds) - 1):
            s = ds[k]
            _, r, c = s["window"].tolist()
            assert s["x"].shape == (3, 32, 32) and s["mask"].shape == (32, 32) and s["mask"].dtype == torch.int64
            # the label of each pixel is the rule applied to the chip's own (denormalised) pixels
            rgb = denormalize(s["x"].numpy(), stats)
            want = spectral_rule_labels(rgb.round(), s["valid"].numpy()).astype(np.int64)
            want[want == 255] = -100
            assert np.array_equal(s["mask"].numpy(), want)
            assert np.array_equal(s["mask"].numpy() == -100,
                                  ~crop["valid"][:, r:r + 32, c:c + 32].all(0)
                                  | (spectral_rule_labels(crop["x"], crop["valid"])[r:r + 32, c:c + 32] == 255))


def test_label_nodata_from_the_config(tmp_path: Path, make_tif):
    """A label raster without a nodata tag: data.label_nodata names the unlabelled value."""
    with rasterio.open(LABELS) as src:
        lab = make_tif(tmp_path / "lab.tif", src.read(), crs=src.crs, transform=src.transform)
    preset = get_preset("landsat7_rgb")
    images = [sample_dir() / "landsat_rgb.tif"]
    sources = open_sources(images, preset, None, 8)
    with pytest.raises(DataError, match=r"lab\.tif: expected class ids 0\.\.2 .*found value 255"):
        segmentation_sets(images, [lab], sources, 32, 32, None, class_names=["land", "water", "cloud"])
    train, val, _, _ = segmentation_sets(images, [lab], sources, 32, 32, None, class_names=["land", "water", "cloud"],
                                         label_nodata=255)
    ref, ref_val, *_ = _sets()
    assert train.items == ref.items and val.items == ref_val.items
    assert torch.equal(train[5]["mask"], ref[5]["mask"])


def _shifted_label(tmp_path: Path, make_tif, **change) -> Path:
    with rasterio.open(LABELS) as src:
        arr, crs, tr = src.read(), src.crs, src.transform
    arr = change.pop("arr", arr)
    return make_tif(tmp_path / "lab.tif", arr, crs=change.get("crs", crs), transform=change.get("transform", tr),
                    nodata=255)


@pytest.mark.parametrize("change, found", [
    ({"transform": "shift"}, "transform"),
    ({"crs": "EPSG:32617"}, "CRS EPSG:32617"),
    ({"arr": "crop"}, "size 380x384"),
])
def test_misaligned_labels_name_both_files(run: Path, tmp_path: Path, make_tif, capsys, change: dict, found: str):
    img = read_raster(sample_dir() / "landsat_rgb.tif")["info"]
    if change.get("transform") == "shift":
        change["transform"] = img.transform * rasterio.Affine.translation(2, 0)  # 2 pixels east
    if change.get("arr") == "crop":
        with rasterio.open(LABELS) as src:
            change["arr"] = src.read()[:, :380]
    lab = _shifted_label(tmp_path, make_tif, **change)
    info, _, _ = read_label(lab)
    with pytest.raises(DataError, match=rf"lab\.tif: expected a label raster aligned with the image .*landsat_rgb\.tif"
                                        rf".*found .*{found}"):
        check_aligned(img, info)
    assert main(["finetune", "--model", str(run / "export"), "--config", "tiny", "--labels", str(lab),
                 "--out", str(tmp_path / "f")]) == 2
    assert "aligned with the image" in capsys.readouterr().err and not (tmp_path / "f").exists()


@pytest.mark.parametrize("arr, nodata, match", [
    (np.zeros((1, 40, 40), np.float32), None, r"expected integer class ids .*found dtype float32"),
    (np.zeros((2, 40, 40), np.uint8), None, r"expected a label raster with one band .*found 2 bands"),
    (np.full((1, 40, 40), -3, np.int16), -1, r"expected class ids >= 0 .*found value -3"),
])
def test_bad_label_rasters(tmp_path: Path, make_tif, arr, nodata, match):
    with pytest.raises(DataError, match=r"lab\.tif: " + match):
        read_label(make_tif(tmp_path / "lab.tif", arr, nodata=nodata))


def test_label_values_beyond_the_class_names(tmp_path: Path, make_tif):
    with rasterio.open(LABELS) as src:
        arr, tr = src.read(), src.transform
    arr[0, 100, 100] = 7
    lab = make_tif(tmp_path / "lab.tif", arr, crs="EPSG:32618", transform=tr, nodata=255)
    preset = get_preset("landsat7_rgb")
    images = [sample_dir() / "landsat_rgb.tif"]
    with pytest.raises(DataError, match=r"lab\.tif: expected class ids 0\.\.2 .*found value 7"):
        segmentation_sets(images, [lab], open_sources(images, preset, None, 8), 32, 32, None,
                          class_names=["land", "water", "cloud"])
    _, _, names, _ = segmentation_sets(images, [lab], open_sources(images, preset, None, 8), 32, 32, None)
    assert names == [str(k) for k in range(8)]  # default names: 0 .. max id


def test_pairing_by_file_name(tmp_path: Path):
    imgs = [tmp_path / "a.tif", tmp_path / "b.tif"]
    labs = [tmp_path / "labels" / "a.tif", tmp_path / "labels" / "b_label.tif"]
    assert pair_labels(imgs, labs) == list(zip(imgs, labs))
    with pytest.raises(DataError, match=r"c\.tif: expected a label raster named c\.tif or c_label\.tif .*found none"):
        pair_labels([*imgs, tmp_path / "c.tif"], labs)


def test_iou_by_hand():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, -100, 1]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 1]])
    cm = confusion_matrix(pred, target, 4, -100)
    assert cm.tolist() == [[1, 1, 0, 0], [0, 3, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    rep = iou_report(cm, ["a", "b", "c", "d"])
    # a: 1 / (2 + 2 - 1) ; b: 3 / (4 + 3 - 3) ; c: 1 / (2 + 1 - 1) ; d: absent everywhere
    assert rep["iou"] == pytest.approx({"a": 1 / 3, "b": 3 / 4, "c": 1 / 2, "d": None})
    assert rep["miou"] == pytest.approx((1 / 3 + 3 / 4 + 1 / 2) / 3) and rep["pixel_acc"] == pytest.approx(5 / 7)


def test_finetune_segmentation_cli(run: Path, tmp_path: Path, capsys):
    ft, cls = tmp_path / "ft", tmp_path / "classes.tif"
    assert main(["finetune", "--model", str(run / "export"), "--config", "tiny", "--out", str(ft),
                 "--labels", str(LABELS), "--set", NAMES, "--predict", str(cls), "--max-steps", "30"]) == 0
    printed = capsys.readouterr().out
    assert "validation per-class IoU" in printed and "cloud" in printed
    s = json.loads((ft / "summary.json").read_text())
    assert s["task"] == "segmentation" and s["steps"] == 30
    per = [s[f"val/iou_{c}"] for c in ("land", "water", "cloud")]
    assert all(0.0 <= v <= 1.0 for v in per)
    assert s["val/miou"] == pytest.approx(np.mean(per), abs=1e-4)  # the core's torchmetrics mIoU agrees with ours
    assert s["val/miou_present_classes"] == pytest.approx(s["val/miou"], abs=1e-4)
    head = json.loads((ft / "export" / "head.json").read_text())
    assert head["class_names"] == ["land", "water", "cloud"] and head["head"]["ignore_index"] == -100
    # the class map is a georeferenced GeoTIFF on the input's grid, nodata where the image is nodata
    with rasterio.open(cls) as b, rasterio.open(sample_dir() / "landsat_rgb.tif") as a:
        assert (b.crs, b.transform, b.shape, b.count, b.dtypes[0], b.nodata) == \
            (a.crs, a.transform, a.shape, 1, "uint8", 255)
        pred, nod = b.read(1), ~(a.read_masks() > 0).all(0)
    assert (pred[nod] == 255).all() and set(np.unique(pred[~nod])) <= {0, 1, 2}
    with rasterio.open(LABELS) as src:
        y = src.read(1)
    known = y != 255
    majority = np.bincount(y[known]).max() / known.sum()
    assert (pred[known] == y[known]).mean() > majority  # better than always saying "water"


def test_segmentation_probe_and_missing_labels_are_clear(run: Path, tmp_path: Path, capsys):
    assert main(["probe", "--model", str(run / "export"), "--config", "tiny", "--labels", str(LABELS),
                 "--out", str(tmp_path / "p")]) == 2
    assert "probe takes scene labels" in capsys.readouterr().err
    assert main(["finetune", "--model", str(run / "export"), "--config", "tiny", "--out", str(tmp_path / "f"),
                 "--set", "data.task=segmentation"]) == 2
    assert "expected --labels LABELS.tif" in capsys.readouterr().err
    assert main(["finetune", "--model", str(run / "export"), "--config", "tiny", "--out", str(tmp_path / "f"),
                 "--set", "data.task=detection"]) == 2
    assert "data.task must be classification or segmentation" in capsys.readouterr().err


def test_class_map_of_a_raster_with_another_transform(run: Path, tmp_path: Path, make_tif, crop: dict):
    """Images and labels in a folder each, paired by name; the class map keeps that image's grid."""
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    tr = from_origin(300000, 4200000, 300, 300)
    x = np.nan_to_num(crop["x"][:, :128, :160]).astype(np.uint8)
    make_tif(tmp_path / "img" / "s1.tif", x, transform=tr, nodata=0)
    make_tif(tmp_path / "lab" / "s1_mask.tif",
             spectral_rule_labels(x, crop["valid"][:, :128, :160])[None], transform=tr, nodata=255)
    cls = tmp_path / "cls.tif"
    assert main(["finetune", "--model", str(run / "export"), "--config", "tiny", "--out", str(tmp_path / "f"),
                 "--data", str(tmp_path / "img"), "--labels", str(tmp_path / "lab"), "--predict", str(cls),
                 "--max-steps", "2"]) == 0
    with rasterio.open(cls) as b:
        assert b.transform == tr and b.shape == (128, 160)
    s = json.loads((tmp_path / "f" / "summary.json").read_text())
    assert "val/iou_0" in s and "val/iou_2" in s  # default class names: the ids
