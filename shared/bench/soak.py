"""Memory soak (reliability issue): thousands of steps of a tiny MAE, RSS printed every N steps.

Trains the demo's tiny model on chips of the bundled Landsat crop through the real engine
(run_pretrain: Lightning, checkpoints every --ckpt-every steps, metrics.csv) and prints the
resident set size every --every steps, then the growth from the first report after warm-up to
the last, and its slope per 1,000 steps. Memory that does not grow stays within a few MB.

usage: python shared/bench/soak.py [--steps 5000] [--every 250] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from maecore.models import create_model
from maecore.sample import ImageChips, read_image_array, sample_path
from maecore.tasks import TrainConfig, run_pretrain


def rss_mb() -> float:
    """Current (not peak) resident set size from /proc."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class RssReport(Callback):
    def __init__(self, every: int) -> None:
        self.every, self.rows = every, []
        self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.every == 0 and (not self.rows or self.rows[-1][0] != step):
            self.rows.append((step, rss_mb(), time.perf_counter() - self.t0))
            print(f"step {step:6d}  rss {self.rows[-1][1]:8.1f} MB  {self.rows[-1][2]:7.1f} s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--every", type=int, default=250)
    ap.add_argument("--ckpt-every", type=int, default=500)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)
    image = read_image_array(sample_path())["image"]
    chips = ImageChips(image, 32, 512, seed=0)
    model = create_model("mae_vit_tiny", ndim=2, group_channels=[image.shape[0]], patch_size=4,
                         mask={"kind": "random", "ratio": 0.75})
    report = RssReport(a.every)
    cfg = TrainConfig(max_steps=a.steps, batch_size=16, lr=1e-3, warmup_steps=50, ckpt_every=a.ckpt_every,
                      log_every=50, progress=False, accelerator="cpu", num_workers=a.workers)
    with tempfile.TemporaryDirectory() as tmp:
        summary = run_pretrain(model, chips, Path(tmp) / "run", cfg, callbacks=[report])
    rows = report.rows
    warm = [r for r in rows if r[0] >= min(500, a.steps // 5)] or rows
    growth = warm[-1][1] - warm[0][1]
    slope = growth / max(1, warm[-1][0] - warm[0][0]) * 1000
    result = {"steps": summary["steps"], "samples_per_s": summary["samples_per_s"],
              "rss_first_mb": round(warm[0][1], 1), "rss_last_mb": round(warm[-1][1], 1),
              "growth_mb": round(growth, 1), "mb_per_1000_steps": round(slope, 2),
              "rss_max_mb": round(float(np.max([r[1] for r in rows])), 1),
              "trace": [[s, round(m, 1)] for s, m, _ in rows]}
    print(f"RSS from step {warm[0][0]} to {warm[-1][0]}: {warm[0][1]:.1f} -> {warm[-1][1]:.1f} MB "
          f"({growth:+.1f} MB, {slope:+.2f} MB per 1,000 steps)")
    if a.json:
        a.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
