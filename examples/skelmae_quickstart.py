"""skelmae quick start: pretrain the SkeletonMAE-style graph MAE (tiny) on the bundled CMU mocap,
embed every sequence, classify the motions (walk / run / jump / dribble / dance) with a
leave-one-sequence-out kNN on the embeddings, and reconstruct masked joints of one walk.

run: python examples/skelmae_quickstart.py [--out DIR] [--steps N]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from maecore.models import create_model
from maecore.tasks import TrainConfig, run_pretrain
from maecore.tasks.probe import knn_probe
from skelmae.data import SkeletonClips, expand, labels_for, load_sequences, sample_labels
from skelmae.figures import plot_skeleton_strip
from skelmae.inference import embed_motion, reconstruct_motion
from skelmae.io import read_bvh


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="skelmae_quickstart_")))
    ap.add_argument("--steps", type=int, default=150)
    a = ap.parse_args()
    files = expand(None)
    seqs = load_sequences(files, {"fps": 30})
    torch.manual_seed(0)
    model = create_model("skelmae_graph_tiny")
    model.meta = {"fps": 30.0, "clip_len": 32}
    cfg = TrainConfig(
        max_steps=a.steps,
        batch_size=16,
        lr=1e-3,
        warmup_steps=20,
        progress=False,
        accelerator="cpu",
        ckpt_every=a.steps,
    )
    run_pretrain(model, SkeletonClips(seqs, 32, 16, jitter=True), a.out / "run", cfg)

    motions = [read_bvh(f) for f in files]
    emb = np.stack([embed_motion(model, m) for m in motions])
    labels = labels_for(seqs, str(sample_labels()))
    knn = knn_probe(emb, labels, k=3, cv="loo")
    print(
        f"{len(emb)} sequences embedded ({emb.shape[1]} dims); kNN leave-one-sequence-out accuracy "
        f"{knn['accuracy']:.2f} over {len(set(labels))} classes (chance {1 / len(set(labels)):.2f})"
    )

    walk = motions[1]
    res = reconstruct_motion(model, walk, seed=0, mm_per_unit=56.4)  # CMU BVH units -> mm
    png = plot_skeleton_strip(
        res["input"],
        res["positions"],
        res["mask"],
        res["edges"],
        a.out / "walk.png",
        fps=res["fps"],
        title="02_01 walk: input / masked reconstruction",
    )
    print(f"masked {res['mask'].mean():.0%} of the joints; mean error {res['masked_mpjpe_mm'] / 10:.1f} cm "
          f"(interpolation in time: {res['baseline_masked_mpjpe_mm'] / 10:.1f} cm); figure {png}")


if __name__ == "__main__":
    main()
