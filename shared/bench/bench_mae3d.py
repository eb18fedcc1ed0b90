"""mae3d benchmark (issue: mae3d quality and speed). Prints tables; writes JSON with --json.

1. Pretrain Point-MAE on the CPU for --minutes on 15 of the 20 YCB objects (one object per class
   held out), then on the 5 held-out objects: Chamfer-L2 of the masked patches, ours against a
   non-learned baseline that fills each masked patch with the nearest visible patch's points
   (``mae3d.reconstruction.nearest_visible_fill``, the baseline ``mae3d reconstruct`` prints).
2. 5-class probe (linear and kNN, leave-one-object-out over all 20 objects), pretrained against
   the same architecture randomly initialised.
3. Point ops (FPS 64 of N, kNN 64 queries k=32, Chamfer N x N) at batch 8 for N = 1k, 8k, 32k
   (pytorch3d beside them when it imports), and training step throughput and peak RSS.

usage: python shared/bench/bench_mae3d.py [--minutes 15] [--quick] [--model mae3d_pointmae_tiny] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from benchlib import CPU, Device, time_limit, time_train_step
from torch.utils.data import DataLoader, Subset

from mae3d.data import PointClouds, expand, labels_for
from mae3d.reconstruction import reconstruct_clouds
from maecore import pointops as P
from maecore.models import create_model
from maecore.tasks import TrainConfig, run_pretrain
from maecore.tasks.data import collate_dict
from maecore.tasks.probe import compare_to_random


def masked_chamfer_vs_baseline(model, clouds: torch.Tensor, seeds: int = 5) -> dict[str, float]:
    """Mean masked Chamfer-L2 over clouds and mask seeds, ours and the package's baseline's on the same
    masked patches (``mae3d.reconstruction``: the one ``mae3d reconstruct`` prints)."""
    ours, base = [], []
    for seed in range(seeds):
        r = reconstruct_clouds(model, {"points": clouds}, seed=seed)
        ours += r["masked_chamfer"].tolist()
        base += r["baseline_masked_chamfer"].tolist()
    return {"ours": float(np.mean(ours)), "nearest_visible_patch": float(np.mean(base))}


def point_ops_table(sizes: list[int]) -> list[dict]:
    rows = []
    for n in sizes:
        x, y = torch.randn(8, n, 3), torch.randn(8, n, 3)
        for be in ["torch"] + (["pytorch3d"] if P.backend() == "pytorch3d" else []):
            row = {"N": n, "backend": be}
            ops = [("fps_ms", lambda x=x, be=be: P.farthest_point_sample(x, 64, backend=be)),
                   ("knn_ms", lambda x=x, be=be: P.knn(x[:, :64], x, 32, backend=be)),
                   ("chamfer_ms", lambda x=x, y=y, be=be: P.chamfer_distance(x, y, backend=be))]
            for name, fn in ops:
                fn()  # warm-up
                t = time.perf_counter()
                fn()
                row[name] = round((time.perf_counter() - t) * 1e3, 1)
            rows.append(row)
    return rows


def train_throughput(name: str, n_points: int, batch: int, steps: int, device: Device = CPU) -> dict:
    torch.manual_seed(0)
    x = torch.randn(batch, n_points, 3)
    x = x / x.norm(dim=-1, keepdim=True).amax(1, keepdim=True)
    r = time_train_step(create_model(name), {"points": x}, steps, device=device)
    return {"model": name, "batch": batch, "n_points": n_points, **r, "samples_per_s": round(batch / r["step_s"], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--quick", action="store_true", help="a one-minute smoke run")
    ap.add_argument("--model", default="mae3d_pointmae_tiny")
    ap.add_argument("--n-points", type=int, default=1024)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    minutes = 0.3 if a.quick else a.minutes
    files = expand(None)
    labels = labels_for(files, None)
    classes = sorted(set(labels))
    y = np.array([classes.index(c) for c in labels])
    held = [next(i for i, c in enumerate(labels) if c == k) for k in classes]  # first object of each class
    train_idx = [i for i in range(len(files)) if i not in held]
    ds = PointClouds.from_files(files, a.n_points)
    results: dict = {"machine": f"{torch.get_num_threads()} threads, torch {torch.__version__}", "model": a.model}

    model = create_model(a.model)
    cfg = TrainConfig(max_steps=10**6, batch_size=8, lr=1e-3, warmup_steps=50, progress=False, log_every=50,
                      ckpt_every=10**6, accelerator="cpu")
    with tempfile.TemporaryDirectory() as run:
        summary = run_pretrain(model, Subset(ds, train_idx), run, cfg, callbacks=[time_limit(minutes * 60)])
    results["pretrain"] = {k: summary[k] for k in ("steps", "wall_s", "samples_per_s", "final_loss")}
    held_clouds = torch.stack([ds[i]["points"] for i in held])
    results["heldout_masked_chamfer_l2"] = masked_chamfer_vs_baseline(model, held_clouds)
    loader = DataLoader(ds, batch_size=8, collate_fn=collate_dict)
    probe = compare_to_random(model, loader, y, groups=[str(f) for f in files])
    results["probe_leave_one_object_out"] = {w: {p: round(probe[w][p]["accuracy"], 3) for p in ("linear", "knn")}
                                             for w in probe}
    results["point_ops_batch8"] = point_ops_table([1024, 8192] if a.quick else [1024, 8192, 32768])
    results["train_step"] = [train_throughput("mae3d_pointmae_tiny", 1024, 8, 3 if a.quick else 10)]
    if not a.quick:
        results["train_step"].append(train_throughput("mae3d_pointmae", 2048, 8, 5))

    print(json.dumps(results, indent=2))
    if a.json:
        a.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
