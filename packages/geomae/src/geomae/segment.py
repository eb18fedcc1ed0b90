"""Segmentation from label rasters: image + label chips read with the same windows, IoU, class maps.

A label raster is a one-band GeoTIFF of integer class ids ``0 .. K-1`` aligned with its image
raster (same CRS, transform and size); its nodata value (or ``data.label_nodata``) marks
unlabelled pixels. Those pixels, and pixels where any image band is nodata, get the ignore index
in the ``mask`` target, so they count in neither the loss nor the IoU.

The head is the core's :class:`maecore.tasks.heads.SegmentationHead`: LayerNorm + one linear
layer per token to ``K x patch x patch`` logits, unpatchified to pixels (a linear per-patch
decoder; no convolutional decoder). The training loop, loss (cross-entropy with
``ignore_index``) and the ``val/miou`` metric are the core's ``run_finetune``; per-class IoU
(:func:`iou_report`) is computed here from the exported model on the validation chips.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from geomae.data import Source, grid_windows, to_model_input
from geomae.io import RasterInfo, info_of, open_raster, read_window
from maecore.atomic import atomic_write_text
from maecore.errors import DataError

LABEL_NAMES = ("label", "labels", "mask", "gt")


@dataclass
class LabelPair:
    """An image raster (checked, with its band map) and its aligned label raster."""

    image: Source
    label: RasterInfo
    nodata: int | None


def pair_labels(images: list[Path], labels: list[Path]) -> list[tuple[Path, Path]]:
    """Pair each image with its label raster: one of each, or by file name (``x.tif`` with
    ``x.tif`` in the label folder, or ``x_label.tif`` / ``x_mask.tif``)."""
    if len(images) == 1 and len(labels) == 1:
        return [(images[0], labels[0])]
    by_name = {f.name: f for f in labels}
    pairs = []
    for img in images:
        names = [img.name] + [f"{img.stem}_{s}{img.suffix}" for s in LABEL_NAMES]
        hit = next((by_name[n] for n in names if n in by_name and by_name[n] != img), None)
        if hit is None:
            where = labels[0].parent if labels else "the labels"
            raise DataError(img, f"a label raster named {names[0]} or {names[1]} in {where}", "none")
        pairs.append((img, hit))
    return pairs


def check_aligned(image: RasterInfo, label: RasterInfo) -> None:
    """A label raster must share the image's CRS, transform and size (no resampling here)."""
    same = (image.crs == label.crs and image.width == label.width and image.height == label.height
            and image.transform.almost_equals(label.transform))
    if not same:
        def desc(i: RasterInfo) -> str:
            return f"CRS {i.crs_string}, transform {tuple(round(v, 6) for v in i.transform[:6])}, " \
                   f"size {i.height}x{i.width}"
        raise DataError(label.path, f"a label raster aligned with the image {image.path} ({desc(image)})",
                        f"{desc(label)}; warp it onto the image grid (gdalwarp -te/-ts or rasterio.warp)")


def read_label(path: str | Path, nodata: int | None = None) -> tuple[RasterInfo, np.ndarray, int | None]:
    """``(info, labels [H, W] int64, nodata)``; one integer band, class ids >= 0 (besides nodata)."""
    with open_raster(path) as src:
        info = info_of(src)
        if info.count != 1:
            raise DataError(path, "a label raster with one band of class ids", f"{info.count} bands")
        if np.dtype(info.dtype).kind not in "iu":
            raise DataError(path, "integer class ids (uint8/int16/...)", f"dtype {info.dtype}")
        arr = src.read(1).astype(np.int64)
    nd = nodata if nodata is not None else (None if info.nodata is None else int(info.nodata))
    labelled = arr != nd if nd is not None else np.ones_like(arr, bool)
    if labelled.any() and arr[labelled].min() < 0:
        raise DataError(path, "class ids >= 0 (negative values only as the nodata value)",
                        f"value {int(arr[labelled].min())} (nodata={nd})")
    return info, arr, nd


class SegmentationChips(Dataset):
    """Image + label chips of ``chip`` pixels on a grid of ``stride``, read with the same window.

    ``rows`` selects a horizontal band ``(first_row, end_row)`` of every raster (a spatial
    train/validation split); a chip lies fully inside it. Chips where less than ``min_valid`` of
    the pixels are labelled (and valid in the image) are left out. Samples: the model input
    (``x``, ``valid``, ``group_pad``), ``mask`` int64 ``[chip, chip]`` with ``ignore_index`` where
    unlabelled, ``window`` ``[pair, row, col]``.
    """

    def __init__(self, pairs: list[LabelPair], chip: int, stride: int, stats: dict[str, Any] | None,
                 n_classes: int, ignore_index: int = -100, min_valid: float = 0.5,
                 rows: list[tuple[int, int]] | None = None) -> None:
        self.pairs, self.chip, self.stats, self.ignore_index = pairs, chip, stats, int(ignore_index)
        self.n_classes = n_classes
        self.items: list[tuple[int, int, int]] = []
        for i, p in enumerate(pairs):
            r0, r1 = rows[i] if rows is not None else (0, p.label.height)
            if r1 - r0 < chip or p.label.width < chip:
                continue
            with open_raster(p.image.info.path) as src:
                ok = (src.read_masks(p.image.bmap.file_bands) > 0).all(0)
            with open_raster(p.label.path) as src:
                lab = src.read(1).astype(np.int64)
            if p.nodata is not None:
                ok &= lab != p.nodata
            for r, c in grid_windows(r1 - r0, p.label.width, chip, stride):
                if ok[r0 + r: r0 + r + chip, c: c + chip].mean() >= min_valid:
                    self.items.append((i, r0 + r, c))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> dict[str, Any]:
        from rasterio.windows import Window

        i, r, c = self.items[k]
        p = self.pairs[i]
        win = Window(c, r, self.chip, self.chip)
        with open_raster(p.image.info.path) as src:
            raw = read_window(src, win, p.image.bmap.file_bands)
        with open_raster(p.label.path) as src:
            lab = src.read(1, window=win).astype(np.int64)
        out = to_model_input(raw, p.image.bmap, self.stats)
        mask = lab.copy()
        ignore = ~raw["valid"].all(0)
        if p.nodata is not None:
            ignore |= lab == p.nodata
        mask[ignore] = self.ignore_index
        out.update(mask=torch.from_numpy(mask), index=torch.tensor(k), window=torch.tensor([i, r, c]))
        return out


RULE_CLASSES = ("land", "water", "cloud")


def spectral_rule_labels(rgb: np.ndarray, valid: np.ndarray, nodata: int = 255) -> np.ndarray:
    """Per-pixel classes of a red/green/blue image ``[3, H, W]`` by the rule the bundled chips use
    (see ``sample/PROVENANCE.md``): cloud (2) where min(R, G, B) > 150, else water (1) where
    B > R + 5 and B >= G, else land (0) where G > B; ``nodata`` where no rule holds or a band is
    not valid. A task defined from the data itself, not a human label."""
    r, g, b = (np.asarray(c, np.float64) for c in rgb[:3])
    out = np.full(r.shape, nodata, np.uint8)
    out[g > b] = 0
    out[(b > r + 5) & (b >= g)] = 1
    out[np.minimum(np.minimum(r, g), b) > 150] = 2
    out[~np.asarray(valid).all(0)] = nodata
    return out


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, n_classes: int, ignore_index: int) -> torch.Tensor:
    """``[K, K]`` counts, rows = true class, columns = predicted; ignored pixels left out."""
    keep = target != ignore_index
    t, p = target[keep].long(), pred[keep].long()
    return torch.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def iou_report(cm: torch.Tensor | np.ndarray, class_names: list[str]) -> dict[str, Any]:
    """Per-class IoU = TP / (TP + FP + FN); a class absent from both target and prediction has
    IoU ``None`` and is left out of ``miou`` (the mean over the other classes)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    per = {name: (float(tp[k] / union[k]) if union[k] > 0 else None) for k, name in enumerate(class_names)}
    seen = [v for v in per.values() if v is not None]
    return {"miou": float(np.mean(seen)) if seen else float("nan"),
            "pixel_acc": float(tp.sum() / max(cm.sum(), 1)), "iou": per,
            "pixels": {name: int(cm[k].sum()) for k, name in enumerate(class_names)}}


@torch.no_grad()
def evaluate_segmentation(model: Any, dataset: Dataset, class_names: list[str], ignore_index: int,
                          batch_size: int = 16) -> dict[str, Any]:
    """IoU of a fine-tuned model (:class:`maecore.tasks.finetune.FinetunedModel`) on ``dataset``."""
    from torch.utils.data import DataLoader

    from maecore.tasks.data import collate_dict

    k = len(class_names)
    cm = torch.zeros(k, k, dtype=torch.long)
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collate_dict):
        cm += confusion_matrix(model.predict(batch), batch["mask"], k, ignore_index)
    return {**iou_report(cm, class_names), "confusion": cm.tolist()}


@torch.no_grad()
def predict_raster(model: Any, pair: LabelPair | Source, stats: dict[str, Any] | None, chip: int,
                   out: str | Path, nodata: int = 255) -> dict[str, Any]:
    """Class map of a whole image raster by non-overlapping chips (edge chips aligned to the
    raster's edge), written as a uint8 GeoTIFF with the image's CRS and transform; pixels that are
    nodata in the image get ``nodata``."""
    from rasterio.windows import Window

    from geomae.io import write_raster
    from maecore.tasks.data import collate_dict

    src_info = pair.image if isinstance(pair, LabelPair) else pair
    info = src_info.info
    if info.height < chip or info.width < chip:
        raise DataError(info.path, f"a raster of at least the chip size {chip}x{chip}", f"{info.height}x{info.width}")
    classes = np.full((info.height, info.width), nodata, np.uint8)
    wins = grid_windows(info.height, info.width, chip, chip)
    with open_raster(info.path) as src:
        for i in range(0, len(wins), 16):
            items, raws = [], []
            for r, c in wins[i:i + 16]:
                raw = read_window(src, Window(c, r, chip, chip), src_info.bmap.file_bands)
                raws.append(raw)
                items.append(to_model_input(raw, src_info.bmap, stats))
            pred = model.predict(collate_dict(items)).numpy().astype(np.uint8)
            for (r, c), raw, p in zip(wins[i:i + 16], raws, pred):
                ok = raw["valid"].all(0)
                classes[r:r + chip, c:c + chip] = np.where(ok, p, classes[r:r + chip, c:c + chip])
    write_raster(out, classes[None], info.crs, info.transform, "uint8", nodata, ["class"])
    counts = np.bincount(classes[classes != nodata].ravel(), minlength=int(getattr(model.head, "n_classes", 0)))
    return {"predict": str(out), "shape": [info.height, info.width], "class_pixels": counts.tolist()}


def update_summary(run_dir: Path, report: dict[str, Any]) -> dict[str, Any]:
    """Merge the per-class IoU into ``RUN/summary.json`` (``val/iou_<class>`` keys)."""
    path = Path(run_dir) / "summary.json"
    summary = json.loads(path.read_text()) if path.is_file() else {}
    summary.update({f"val/iou_{k}": v for k, v in report["iou"].items()})
    summary.update({"val/miou_present_classes": report["miou"], "val/confusion": report["confusion"],
                    "val/class_pixels": report["pixels"]})
    for k in ("predict", "class_pixels"):
        if k in report:
            summary[k] = report[k]
    atomic_write_text(path, json.dumps(summary, indent=2, default=str))
    return summary


def segmentation_sets(images: list[Path], labels: list[Path], sources: list[Source], chip: int, stride: int,
                      stats: dict[str, Any] | None, ignore_index: int = -100, min_valid: float = 0.5,
                      val_fraction: float = 0.25, class_names: list[str] | None = None,
                      label_nodata: int | None = None) -> tuple[SegmentationChips, SegmentationChips | None,
                                                                list[str], list[LabelPair]]:
    """Train and validation chips of image rasters (``sources``, from :func:`geomae.data.open_sources`
    of ``images``) with their label rasters. The validation chips are the bottom ``val_fraction``
    of each raster's rows (a spatial hold-out; a raster under two chips tall is all training).
    The classes are ``class_names`` or ``0 .. max label``."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
    by_path = {Path(s.info.path): s for s in sources}
    pairs, top = [], -1
    for img, lab in pair_labels(images, labels):
        info, arr, nd = read_label(lab, label_nodata)
        image = by_path[Path(img)]
        check_aligned(image.info, info)
        labelled = arr[arr != nd] if nd is not None else arr.ravel()
        if labelled.size == 0:
            raise DataError(lab, "at least one labelled pixel", f"every pixel is nodata ({nd})")
        if class_names is not None and labelled.max() >= len(class_names):
            raise DataError(lab, f"class ids 0..{len(class_names) - 1} (data.class_names: {class_names})",
                            f"value {int(labelled.max())}")
        top = max(top, int(labelled.max()))
        pairs.append(LabelPair(image, info, nd))
    names = list(class_names) if class_names is not None else [str(k) for k in range(top + 1)]
    if len(names) < 2:
        raise DataError(labels[0], "at least two classes in the label rasters", f"only class ids {names}")
    if 0 <= ignore_index < len(names):
        raise ValueError(f"finetune.ignore_index ({ignore_index}) must not be a class id (0..{len(names) - 1})")
    train_rows, val_rows = [], []
    for p in pairs:
        h = p.label.height
        n_val = max(chip, int(round(h * val_fraction))) if val_fraction > 0 and h >= 2 * chip else 0
        train_rows.append((0, h - n_val))
        val_rows.append((h - n_val, h))
    train = SegmentationChips(pairs, chip, stride, stats, len(names), ignore_index, min_valid, train_rows)
    val = SegmentationChips(pairs, chip, chip, stats, len(names), ignore_index, min_valid, val_rows)
    if len(train) == 0:
        raise DataError(pairs[0].label.path, f"training chips of {chip} px with at least {min_valid:.0%} labelled "
                        "pixels (data.min_valid)", "none")
    return train, (val if len(val) else None), names, pairs
