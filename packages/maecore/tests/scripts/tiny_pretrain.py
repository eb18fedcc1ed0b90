"""Subprocess entry point for the resume and DDP tests: a tiny, seeded pretraining run.

usage: tiny_pretrain.py RUN_DIR MAX_STEPS [--resume auto] [--devices N] [--workers N] [--accumulate N]
                        [--slow SECONDS] [--slow-ckpt SECONDS] [--inf-loss-at STEP:RANK]

Randomness outside the mask generator is on purpose: the dataset flips and jitters its images with
the global torch generator, and the model drops input pixels with ``F.dropout``, so an exact resume
also needs the per-item and per-step seeding of the engine.

Writes ``RUN_DIR/rank{r}.safetensors`` (final weights of rank r), ``RUN_DIR/rank{r}_indices.json``
(the dataset indices rank r trained on, per batch of this process) and, on rank 0,
``RUN_DIR/summary.json`` (what run_pretrain returned).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from safetensors.torch import save_file
from torch.utils.data import Dataset

from maecore.models import create_model
from maecore.tasks import TrainConfig, run_pretrain


class Smooth(Dataset):
    """Seeded smooth 3-channel 16 x 16 images (a colour plus a sinusoid); ``augment`` adds a random flip
    and noise drawn from the global torch generator."""

    def __init__(self, n: int = 64, size: int = 16, augment: bool = False) -> None:
        g = torch.Generator().manual_seed(123)
        freq = torch.rand(n, 3, 2, generator=g) * 0.6
        phase = torch.rand(n, 3, generator=g) * 2 * math.pi
        yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        offset = torch.rand(n, 3, 1, 1, generator=g) * 2 - 1  # a per-image colour: visible patches reveal it
        self.x = offset + torch.sin(freq[..., 0, None, None] * yy + freq[..., 1, None, None] * xx + phase[..., None, None])
        self.augment = augment

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        x = self.x[i].float()
        if self.augment:
            x = x.flip(-1) if torch.rand(()) < 0.5 else x
            x = x + 0.05 * torch.randn_like(x)
        return {"x": x, "index": i}


class Slow(Callback):
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, *args) -> None:
        time.sleep(self.seconds)


class RecordIndices(Callback):
    def __init__(self) -> None:
        self.seen: list[list[int]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.append(list(batch["index"]))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir", type=Path)
    p.add_argument("max_steps", type=int)
    p.add_argument("--resume", default=None)
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--accumulate", type=int, default=1)
    p.add_argument("--slow", type=float, default=0.0)
    p.add_argument("--inf-loss-at", default=None, help="STEP:RANK, that micro-batch's loss is +inf")
    p.add_argument("--slow-ckpt", type=float, default=0.0, help="pause inside each checkpoint write (fault tests)")
    a = p.parse_args()
    torch.set_num_threads(1)
    if a.slow_ckpt:  # the temp file is fully written, the rename has not happened yet
        real_save = torch.save

        def slow_save(obj, f, *args, **kwargs):
            real_save(obj, f, *args, **kwargs)
            time.sleep(a.slow_ckpt)

        torch.save = slow_save
    torch.manual_seed(0)
    model = create_model("mae_vit_tiny", ndim=2, group_channels=[3], patch_size=4)
    rank = int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))
    inf_at = tuple(int(v) for v in a.inf_loss_at.split(":")) if a.inf_loss_at else None
    forward, calls = model.forward, []

    def noisy_forward(batch, generator=None):
        # input dropout: global-RNG draws in every step
        out = forward({**batch, "x": F.dropout(batch["x"], 0.1, training=model.training)}, generator=generator)
        if model.training:
            calls.append(1)
            if inf_at == (len(calls) - 1, rank):  # an infinite loss with finite gradients, on one rank only
                out = dataclasses.replace(out, loss=out.loss + math.inf)
        return out

    model.forward = noisy_forward
    cfg = TrainConfig(
        max_steps=a.max_steps, batch_size=4, lr=1e-3, warmup_steps=3, ckpt_every=2, seed=7, log_every=2,
        progress=False, accelerator="cpu", devices=a.devices, strategy="ddp" if a.devices > 1 else "auto",
        num_workers=a.workers, accumulate=a.accumulate,
    )
    recorder = RecordIndices()
    callbacks = [recorder, *([Slow(a.slow)] if a.slow else [])]
    summary = run_pretrain(model, Smooth(augment=True), a.run_dir, cfg, resume=a.resume, callbacks=callbacks)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(a.run_dir / f"rank{rank}.safetensors"))
    (a.run_dir / f"rank{rank}_indices.json").write_text(json.dumps(recorder.seen))
    if rank == 0:
        (a.run_dir / "summary.json").write_text(json.dumps(summary))


if __name__ == "__main__":
    main()
