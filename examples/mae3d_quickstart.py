"""mae3d quick start: pretrain Point-MAE (tiny) on the bundled YCB scans, then complete a partial
scan (every patch on one side of an object hidden) and write the result as PLY and PNG.

run: python examples/mae3d_quickstart.py [--out DIR] [--steps N]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from mae3d.data import PointClouds, expand
from mae3d.figures import plot_cloud_reconstruction
from mae3d.io import write_ply
from maecore import masking
from maecore.models import create_model
from maecore.tasks import TrainConfig, run_pretrain


def complete_one_side(model, cloud: torch.Tensor, axis: int = 0, cut: float = 0.2):
    """Hide every patch whose centre lies beyond ``cut`` on ``axis`` and predict those patches."""
    model.eval()
    batch = {"points": cloud[None]}
    with torch.no_grad():
        tokens = model.tokenizer.tokens(batch)
        hide = tokens.pos[..., axis] > cut
        m = masking.finalize(hide, tokens.pad)
        pred = model.forward_decoder(model.forward_encoder(tokens, m), tokens, m)
        patches = model.tokenizer.untokenize(pred, batch)[0]
        centres, rel = model.tokenizer.group(batch)
    visible = (rel[0] + centres[0][:, None])[~m.mask[0]].reshape(-1, 3)
    predicted = patches[m.mask[0]].reshape(-1, 3)
    return visible.numpy(), predicted.numpy()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="mae3d_quickstart_")))
    ap.add_argument("--steps", type=int, default=300)
    a = ap.parse_args()
    files = expand(None)
    ds = PointClouds.from_files(files, 1024)
    torch.manual_seed(0)
    model = create_model("mae3d_pointmae_tiny")
    cfg = TrainConfig(max_steps=a.steps, batch_size=8, lr=1e-3, warmup_steps=20, progress=False, accelerator="cpu",
                      ckpt_every=a.steps)
    run_pretrain(model, ds, a.out / "run", cfg)
    i = next(k for k, f in enumerate(files) if f.stem == "035_power_drill")
    cloud = ds[i]["points"]
    visible, predicted = complete_one_side(model, cloud)
    colors = np.array([[150, 150, 150, 255]] * len(visible) + [[220, 40, 40, 255]] * len(predicted), np.uint8)
    write_ply(a.out / "drill_completed.ply", np.concatenate([visible, predicted]), colors)
    png = plot_cloud_reconstruction(cloud.numpy(), visible, predicted, a.out / "drill_completed.png")
    print(f"{len(visible)} visible points, {len(predicted)} predicted; wrote {a.out / 'drill_completed.ply'} and {png}")


if __name__ == "__main__":
    main()
