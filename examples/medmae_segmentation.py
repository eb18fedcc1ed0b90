"""medmae segmentation: fine-tune the pretrained tiny encoder with the UNETR-style decoder (MONAI
blocks) and compare it with the core's linear per-patch head, on the CPU.

THE LABEL IS NOT A TUMOUR SEGMENTATION. The bundled case has no expert labels, so the label volume
is derived from the data itself: the "FLAIR-hyperintense region" (FLAIR above its 97th percentile
within the brain, cleaned by a 3^3 morphological opening; 0 background / 1 region), written as
``<case>_seg.nii.gz`` next to the images (:func:`medmae.segmentation.flair_hyperintense_label`).
Thresholding FLAIR reproduces it by construction; the point here is that the pipeline learns a
voxel-wise target from the images, with a modality missing.

Held-out evaluation: one brain only, so the split is spatial. Fine-tuning sees crops of the
posterior 65 % of the (RAS, 2 mm, brain-cropped) volume (axis 1), from the case with all four
modalities; the Dice is measured on the anterior 35 %, predicted by sliding windows over the whole
volume of the case WITHOUT its T1c (T1c tokens are padding), so the numbers also test
missing-modality inference. (The region is concentrated where the case's lesion is; this split
leaves about half of it on each side, a left-right split would not.)

run: python examples/medmae_segmentation.py [--out DIR] [--pretrain-steps N] [--steps N]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from maecore.config import load_config
from maecore.models import load_pretrained
from maecore.tasks import TrainConfig
from maecore.tasks.finetune import run_finetune
from medmae import sample_case
from medmae.cases import scan_case_folder
from medmae.cli import main as medmae
from medmae.data import DataConfig, MRIDataset
from medmae.segmentation import (
    dice_metric,
    dice_values,
    flair_hyperintense_label,
    load_segmenter,
    run_unetr_finetune,
    segment_array,
    update_dice_labels,
)

AXIS, SPLIT = 1, 0.65  # RAS axis and fraction of it used for training (the rest is held out)


def make_cases(root: Path) -> tuple[Path, Path]:
    """``full`` (T1, T1c, T2, FLAIR) and ``no_t1c`` copies of the bundled case, each with the label."""
    out = []
    for name, drop in (("full", None), ("no_t1c", "_t1c.nii.gz")):
        case = root / name
        case.mkdir(parents=True, exist_ok=True)
        for f in sample_case().iterdir():
            if not (drop and f.name.endswith(drop)):
                shutil.copy(f, case / f.name.replace(sample_case().name, name))
        flair_hyperintense_label(case)
        out.append(case)
    return out[0], out[1]


def held_out_dice(model: torch.nn.Module, dataset: MRIDataset, roi: list[int]) -> dict[str, float]:
    """Dice per class on the held-out slab (``AXIS`` >= ``SPLIT``) of the dataset's first case."""
    d = dataset.preprocessed(0)
    image, seg = torch.as_tensor(d["image"]).float(), torch.as_tensor(d["seg"])[0].round().long()
    pred = segment_array(model, image, torch.as_tensor(d["group_pad"]), roi, overlap=0.5)
    lo = int(round(SPLIT * image.shape[1 + AXIS]))
    keep = [slice(None)] * 3
    keep[AXIS] = slice(lo, None)
    metric = dice_metric()
    update_dice_labels(metric, pred[tuple(keep)][None], seg[tuple(keep)][None], 2)
    return {k.split("/", 1)[1]: round(v, 4) for k, v in dice_values(metric, "heldout").items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="medmae_segmentation_")))
    ap.add_argument("--pretrain-steps", type=int, default=300)
    ap.add_argument("--steps", type=int, default=300, help="fine-tuning steps (each head)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    full, no_t1c = make_cases(a.out / "data")
    pre = a.out / "pretrain"
    assert medmae(["pretrain", "--config", "tiny", "--max-steps", str(a.pretrain_steps), "--out", str(pre)]) == 0

    cfg = load_config("medmae", "tiny", [f"train.max_steps={a.steps}", f"train.ckpt_every={a.steps}",
                                         "data.task=segmentation"])
    dc = DataConfig.from_cfg(cfg)
    train_box, held_box = [(0.0, 1.0)] * 3, [(0.0, 1.0)] * 3
    train_box[AXIS], held_box[AXIS] = (0.0, SPLIT), (SPLIT, 1.0)
    train = MRIDataset([scan_case_folder(full)], dc, train=True, with_seg=True, region=train_box)
    val = MRIDataset([scan_case_folder(no_t1c)], dc, train=False, with_seg=True, region=held_box)
    tc = TrainConfig.from_dict(cfg["train"])
    report = {}
    for head in ("unetr", "linear"):
        t0 = time.perf_counter()
        run_dir = a.out / f"ft_{head}"
        if head == "unetr":
            summary = run_unetr_finetune(load_pretrained(pre / "export"), train, val, run_dir, tc, 2,
                                         feature_size=int(cfg["finetune"]["unetr_feature_size"]),
                                         class_names=["background", "flair_hyperintense"])
        else:
            summary = run_finetune(load_pretrained(pre / "export"), train, val, run_dir, tc, "segmentation", 2,
                                   class_names=["background", "flair_hyperintense"])
        model = load_segmenter(run_dir / "export")
        report[head] = {"train_s": round(time.perf_counter() - t0, 1),
                        "final_train_loss": round(summary.get("train/loss", float("nan")), 4),
                        "val_centre_crop_dice": {k: round(v, 4) for k, v in summary.items()
                                                 if k.startswith("val/dice")},
                        "held_out_slab_dice_without_t1c": held_out_dice(model, val, dc.roi_size)}
    print(json.dumps({"out": str(a.out), "pretrain_steps": a.pretrain_steps, "finetune_steps": a.steps, **report},
                     indent=2))


if __name__ == "__main__":
    main()
