"""Subprocess entry point for resume and DDP tests: a tiny, seeded pretraining run.

usage: tiny_pretrain.py RUN_DIR MAX_STEPS [--resume auto] [--devices N] [--slow SECONDS]
Writes RUN_DIR/rank{r}.safetensors with the final weights of each rank.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback
from safetensors.torch import save_file
from torch.utils.data import Dataset

from maecore.models import create_model
from maecore.tasks import TrainConfig, run_pretrain


class Smooth(Dataset):
    """Seeded smooth 3-channel images (sums of a few sinusoids)."""

    def __init__(self, n: int = 64, size: int = 16) -> None:
        g = torch.Generator().manual_seed(123)
        freq = torch.rand(n, 3, 2, generator=g) * 0.6
        phase = torch.rand(n, 3, generator=g) * 2 * math.pi
        yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        self.x = torch.sin(freq[..., 0, None, None] * yy + freq[..., 1, None, None] * xx + phase[..., None, None])

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i].float()}


class Slow(Callback):
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, *args) -> None:
        time.sleep(self.seconds)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir", type=Path)
    p.add_argument("max_steps", type=int)
    p.add_argument("--resume", default=None)
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--slow", type=float, default=0.0)
    p.add_argument("--slow-ckpt", type=float, default=0.0, help="pause inside each checkpoint write (fault tests)")
    a = p.parse_args()
    if a.slow_ckpt:  # the temp file is fully written, the rename has not happened yet
        real_save = torch.save

        def slow_save(obj, f, *args, **kwargs):
            real_save(obj, f, *args, **kwargs)
            time.sleep(a.slow_ckpt)

        torch.save = slow_save
    torch.manual_seed(0)
    model = create_model("mae_vit_tiny", ndim=2, group_channels=[3], patch_size=4)
    cfg = TrainConfig(
        max_steps=a.max_steps, batch_size=4, lr=1e-3, warmup_steps=3, ckpt_every=2, seed=7, log_every=2,
        progress=False, accelerator="cpu", devices=a.devices, strategy="ddp" if a.devices > 1 else "auto",
    )
    callbacks = [Slow(a.slow)] if a.slow else []
    run_pretrain(model, Smooth(), a.run_dir, cfg, resume=a.resume, callbacks=callbacks)
    rank = int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(a.run_dir / f"rank{rank}.safetensors"))


if __name__ == "__main__":
    main()
