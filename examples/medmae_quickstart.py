"""medmae quick start: pretrain the tiny multimodal MAE on the bundled brain MRI (T1, T1c, T2,
FLAIR at 2 mm), then synthesise the post-contrast T1 from the other three and write it as NIfTI on
the input's grid, with a three-plane figure and PSNR / SSIM against the acquired T1c.

run: python examples/medmae_quickstart.py [--out DIR] [--steps N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from maecore.config import load_config
from maecore.models import create_model
from maecore.tasks import TrainConfig, run_pretrain
from medmae import sample_case, sample_dir
from medmae.data import DataConfig, MRIDataset, load_dataset_cases
from medmae.tasks import reconstruct_file


def pretrain_tiny(out: Path, steps: int):
    """``medmae pretrain --config tiny`` as library calls: data, model (with its metadata), training."""
    cfg = load_config("medmae", "tiny", [f"train.max_steps={steps}", f"train.ckpt_every={steps}"])
    dc = DataConfig.from_cfg(cfg)
    dataset = MRIDataset(load_dataset_cases(sample_dir(), dc), dc)
    model = create_model("medmae_tiny", modalities=dc.modalities, patch_size=8)
    model.meta = {"modalities": dc.modalities, "spacing": dc.spacing, "roi_size": dc.roi_size,
                  "intensity": dataset.intensity_stats()}
    summary = run_pretrain(model, dataset, out / "run", TrainConfig.from_dict(cfg["train"]))
    return model.eval(), summary


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="medmae_quickstart_")))
    ap.add_argument("--steps", type=int, default=300)
    a = ap.parse_args()
    torch.set_num_threads(1)  # small tensors: one thread is faster on a busy 2-core machine
    model, summary = pretrain_tiny(a.out, a.steps)
    result = reconstruct_file(model, sample_case(), "t1ce", a.out / "t1ce_synth.nii.gz", have=["t1", "t2", "flair"],
                              plot=a.out / "t1ce_synth.png")
    print(json.dumps({"steps": summary["steps"], "final_loss": round(summary["final_loss"], 4),
                      **{k: result[k] for k in ("out", "plot", "psnr", "ssim")}}, indent=2))


if __name__ == "__main__":
    main()
