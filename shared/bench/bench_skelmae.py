"""skelmae benchmark (issue 6: quality and speed). Prints a JSON table; writes it with --json.

1. Pretrain on the CPU for --minutes on 9 of the 14 CMU sequences (one sequence per class held
   out; the full 120 fps files of ../shared/data/skeleton resampled to 30 fps, else the bundled
   30 fps sample), then on the 5 held-out sequences: MPJPE (mm, CMU units x 56.4) of the masked
   joints, the model against linear interpolation in time from the same joint's visible frames.
2. 5-class probe (linear and kNN on clip embeddings, leave-one-sequence-out over all 14), the
   pretrained model against the same architecture randomly initialised.
3. Throughput: BVH and NTU ``.skeleton`` sequences parsed per second, training samples/s and peak
   RSS per registered config.

usage: python shared/bench/bench_skelmae.py [--minutes 15] [--quick] [--model skelmae_graph_tiny] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from benchlib import time_limit, time_train_step
from torch.utils.data import DataLoader

from maecore.models import create_model
from maecore.tasks import TrainConfig, run_pretrain
from maecore.tasks.data import collate_dict
from maecore.tasks.probe import compare_to_random
from skelmae.data import SkeletonClips, expand, labels_for, load_sequences, sample_labels
from skelmae.inference import interpolate_hidden, reconstruct_clips
from skelmae.io import read_bvh, read_ntu

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "skeleton"
MM_PER_CMU_UNIT = 56.4


def masked_mpjpe(model, clips: SkeletonClips, seeds: int = 3) -> dict[str, float]:
    ours, base = [], []
    batch = collate_dict([clips[i] for i in range(len(clips))])
    for seed in range(seeds):
        res = reconstruct_clips(model, batch, seed)
        for b in range(len(clips)):
            hid, valid = res["hidden"][b].numpy(), batch["valid"][b].numpy()
            x, pred = batch["x"][b].numpy(), res["pred"][b].numpy()
            mm = float(batch["scale"][b]) * MM_PER_CMU_UNIT
            guess = interpolate_hidden(x, valid & ~hid)
            ours += list(np.linalg.norm(pred[hid] - x[hid], axis=-1) * mm)
            base += list(np.linalg.norm(guess[hid] - x[hid], axis=-1) * mm)
    return {
        "model_mm": round(float(np.mean(ours)), 1),
        "linear_interp_mm": round(float(np.mean(base)), 1),
        "n_joints_scored": len(ours),
    }


def parse_rate(files: list[Path], reader, repeats: int) -> float:
    t = time.perf_counter()
    for _ in range(repeats):
        for f in files:
            reader(f)
    return round(len(files) * repeats / (time.perf_counter() - t), 1)


def write_ntu_copies(files: list[Path], folder: Path) -> list[Path]:
    """NTU-format text files holding the first 25 CMU joints in metres (parse-speed input only)."""
    out = []
    for f in files:
        p = read_bvh(f)["positions"][:, :25] * 0.0564
        lines = [str(len(p))]
        for frame in p:
            lines += ["1", "72057594037931101 0 1 1 1 1 0 -0.2 0.1 2", "25"]
            lines += [f"{x:.5f} {y:.5f} {z:.5f} 250.1 180.2 960.3 540.4 0.1 0.2 0.3 0.9 2" for x, y, z in frame]
        path = folder / f"{f.stem}.skeleton"
        path.write_text("\n".join(lines) + "\n")
        out.append(path)
    return out


def train_throughput(name: str, clip_len: int, batch: int, steps: int) -> dict:
    torch.manual_seed(0)
    b = {"x": torch.randn(batch, clip_len, 31, 3), "valid": torch.ones(batch, clip_len, 31, dtype=torch.bool)}
    r = time_train_step(create_model(name), b, steps)
    return {"model": name, "batch": batch, "clip_len": clip_len, **r, "samples_per_s": round(batch / r["step_s"], 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--quick", action="store_true", help="a one-minute smoke run")
    ap.add_argument("--model", default="skelmae_graph_tiny")
    ap.add_argument("--clip-len", type=int, default=32)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    minutes = 0.3 if a.quick else a.minutes
    full = SHARED.is_dir()
    files = sorted((SHARED / "cmu_mb2010").glob("*.bvh")) if full else expand(None)
    seqs = load_sequences(files, {"fps": 30})
    labels = labels_for(seqs, str(SHARED / "labels.csv") if full else str(sample_labels()))
    classes = sorted(set(labels))
    held = [labels.index(c) for c in classes]  # the first sequence of each class
    train = [s for i, s in enumerate(seqs) if i not in held]
    results: dict = {
        "machine": f"{torch.get_num_threads()} threads, torch {torch.__version__}",
        "model": a.model,
        "data": "shared 120 fps -> 30 fps" if full else "bundled 30 fps sample",
        "held_out": [seqs[i]["name"] for i in held],
    }

    model = create_model(a.model)
    model.meta = {"fps": 30.0, "clip_len": a.clip_len}
    cfg = TrainConfig(
        max_steps=10**6,
        batch_size=16,
        lr=1e-3,
        warmup_steps=50,
        progress=False,
        log_every=50,
        ckpt_every=10**6,
        accelerator="cpu",
    )
    with tempfile.TemporaryDirectory() as run:
        summary = run_pretrain(
            model, SkeletonClips(train, a.clip_len, 8, jitter=True), run, cfg, callbacks=[time_limit(minutes * 60)]
        )
    results["pretrain"] = {k: summary[k] for k in ("steps", "wall_s", "samples_per_s", "final_loss")}
    results["mask"] = dict(model.mask_cfg)
    results["heldout_masked_mpjpe"] = masked_mpjpe(
        model, SkeletonClips([seqs[i] for i in held], a.clip_len, a.clip_len)
    )

    ds = SkeletonClips(seqs, a.clip_len, a.clip_len, labels=[classes.index(c) for c in labels])
    loader = DataLoader(ds, batch_size=16, collate_fn=collate_dict)
    y = [int(ds[i]["label"]) for i in range(len(ds))]
    probe = compare_to_random(model, loader, y, groups=ds.groups)
    results["probe_leave_one_sequence_out"] = {
        w: {
            **{p: round(probe[w][p]["accuracy"], 3) for p in ("linear", "knn")},
            "emb_std": round(probe[w]["emb_std"], 3),
        }
        for w in probe
    } | {"n_clips": len(ds)}

    with tempfile.TemporaryDirectory() as tmp:
        ntu = write_ntu_copies(files[:4], Path(tmp))
        results["parse_sequences_per_s"] = {
            "bvh": parse_rate(files, read_bvh, 1 if a.quick else 3),
            "ntu": parse_rate(ntu, read_ntu, 1 if a.quick else 3),
            "bvh_frames_per_file": round(float(np.mean([len(s["positions"]) for s in seqs]) * (4 if full else 1)), 1),
        }
    steps = 2 if a.quick else 8
    results["train_step"] = [
        train_throughput("skelmae_graph_tiny", 32, 16, steps),
        train_throughput("skelmae_mamp_tiny", 32, 16, steps),
    ]
    if not a.quick:
        results["train_step"] += [
            train_throughput("skelmae_graph", 64, 16, 3),
            train_throughput("skelmae_mamp", 64, 16, 3),
        ]
    print(json.dumps(results, indent=2))
    if a.json:
        a.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
