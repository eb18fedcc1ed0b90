"""Masked pretraining of any model with the MAE surface, and ``run_pretrain`` for CLI/notebooks."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, TQDMProgressBar
from torch import nn
from torch.utils.data import DataLoader, Dataset

from maecore.tasks.base import BaseTask
from maecore.tasks.checkpoint import AtomicCheckpointIO, PeriodicCheckpoint, find_resume_checkpoint
from maecore.tasks.config import TrainConfig
from maecore.tasks.data import StepSampler, make_loader
from maecore.tasks.logger import AppendingCSVLogger

log = logging.getLogger(__name__)


class NonFiniteError(RuntimeError):
    """Too many non-finite steps; the last good checkpoint is kept."""


class PretrainTask(BaseTask):
    """Wraps a model whose ``forward(batch, generator)`` returns an output with ``loss``.

    The mask generator of each micro-batch is seeded from ``(seed, step, micro-batch, rank)``, so
    masks are reproducible and identical after a resume. Non-finite losses or gradients skip the
    step (counted); past ``max_nonfinite`` the run stops with :class:`NonFiniteError`. Every
    ``log_every`` steps ``train/emb_std`` (mean per-dimension std of the batch's embeddings) is
    logged: a value near 0 means the encoder collapsed.
    """

    def __init__(self, model: nn.Module, cfg: TrainConfig, dataset: Dataset | None = None) -> None:
        self.__dict__["_pending_model"] = model  # set before nn.Module.__init__, read by configure_models
        super().__init__(cfg)
        self.dataset = dataset
        self.nonfinite_steps = 0
        self.last_loss = float("nan")
        self.samples_seen = 0

    def configure_models(self) -> None:
        self.model = self.__dict__.pop("_pending_model")

    def train_dataloader(self) -> DataLoader:
        if self.dataset is None:
            raise ValueError("PretrainTask needs a dataset to build its dataloader")
        n_batches = self.cfg.max_steps * self.cfg.accumulate
        return make_loader(self.dataset, self.cfg, n_batches, self.global_rank, self.trainer.world_size)

    def on_train_start(self) -> None:
        # resume: continue the step-indexed batch sequence where the checkpoint stopped
        loader = self.trainer.train_dataloader
        sampler = getattr(loader, "batch_sampler", None)
        if isinstance(sampler, StepSampler):
            sampler.start_batch = self.global_step * self.cfg.accumulate

    def _generator(self, batch_idx: int, device: torch.device) -> torch.Generator:
        micro = batch_idx % self.cfg.accumulate
        seed = self.cfg.seed * 1_000_003 + self.global_step * 1009 + micro * 31 + self.global_rank
        return torch.Generator(device=device).manual_seed(seed % (2**63))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        device = next(self.model.parameters()).device
        out = self.model(batch, generator=self._generator(batch_idx, device))
        loss = out.loss
        if not torch.isfinite(loss):
            self._count_nonfinite("loss")
            return None
        bs = _batch_size(batch)
        self.samples_seen += bs
        self.last_loss = float(loss.detach())
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=bs)
        for k, v in getattr(out, "extras", {}).items():
            self.log(f"train/{k}", v, batch_size=bs)
        if self.global_step % self.cfg.log_every == 0 and hasattr(self.model, "encode"):
            with torch.no_grad():
                emb = self.model.encode(batch).float()
            if emb.shape[0] > 1:
                self.log("train/emb_std", emb.std(0).mean(), batch_size=bs)
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        if grads and not all(torch.isfinite(g).all() for g in grads):
            self._count_nonfinite("gradient")
            for p in self.model.parameters():
                p.grad = None  # AdamW skips parameters without a gradient: no update this step

    def _count_nonfinite(self, what: str) -> None:
        self.nonfinite_steps += 1
        self.log("train/nonfinite_steps", float(self.nonfinite_steps))
        log.warning("non-finite %s at step %d: step skipped (%d so far)", what, self.global_step, self.nonfinite_steps)
        if self.nonfinite_steps > self.cfg.max_nonfinite:
            raise NonFiniteError(
                f"{self.nonfinite_steps} non-finite steps, more than train.max_nonfinite="
                f"{self.cfg.max_nonfinite}; stopping at step {self.global_step}. The last good "
                "checkpoint is kept; lower the learning rate or check the data for NaN/inf."
            )


def _batch_size(batch: dict[str, Any]) -> int:
    for v in batch.values():
        if isinstance(v, torch.Tensor):
            return int(v.shape[0])
    return 1


class _Timer(Callback):
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start_step = trainer.global_step
        self.t0 = time.perf_counter()


def build_trainer(
    cfg: TrainConfig,
    run_dir: Path,
    callbacks: Sequence[Callback] = (),
    logger: bool = True,
    allow_unsafe: bool = False,
) -> L.Trainer:
    accelerator = cfg.accelerator
    if accelerator == "auto":
        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    cbs: list[Callback] = [PeriodicCheckpoint(run_dir / "checkpoints", cfg.ckpt_every), *callbacks]
    if cfg.progress:
        cbs.append(TQDMProgressBar(refresh_rate=max(1, cfg.log_every // 2)))
    return L.Trainer(
        accelerator=accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=cfg.strategy,
        precision=cfg.resolved_precision(accelerator),  # type: ignore[arg-type]
        max_steps=cfg.max_steps,
        max_epochs=-1,
        accumulate_grad_batches=cfg.accumulate,
        gradient_clip_val=cfg.grad_clip or None,
        log_every_n_steps=cfg.log_every,
        logger=AppendingCSVLogger(str(run_dir)) if logger else False,
        callbacks=cbs,
        enable_checkpointing=False,
        enable_progress_bar=cfg.progress,
        enable_model_summary=False,
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        plugins=[AtomicCheckpointIO(allow_unsafe)],
        default_root_dir=str(run_dir),
    )


def run_pretrain(
    model: nn.Module,
    dataset: Dataset,
    run_dir: str | Path,
    cfg: TrainConfig,
    resume: str | None = None,
    callbacks: Sequence[Callback] = (),
    logger: bool = True,
) -> dict[str, Any]:
    """Pretrain ``model`` on ``dataset``; write checkpoints, metrics and ``RUN/export``.

    ``resume="auto"`` continues from ``RUN/checkpoints/last.ckpt`` when it exists. Returns a summary:
    steps, wall_s, samples_per_s, final_loss, nonfinite_steps, export_dir, metrics_csv,
    last_checkpoint.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    ckpt = find_resume_checkpoint(run_dir, resume)
    task = PretrainTask(model, cfg, dataset)
    timer = _Timer()
    trainer = build_trainer(cfg, run_dir, [timer, *callbacks], logger)
    trainer.fit(task, ckpt_path=str(ckpt) if ckpt else None)
    wall = time.perf_counter() - getattr(timer, "t0", time.perf_counter())
    steps_done = trainer.global_step - getattr(timer, "start_step", 0)
    samples = steps_done * cfg.batch_size * cfg.accumulate * trainer.world_size
    export_dir = run_dir / "export"
    if trainer.is_global_zero:
        model.save_pretrained(export_dir)
    summary = {
        "steps": trainer.global_step,
        "steps_this_run": steps_done,
        "wall_s": round(wall, 3),
        "samples_per_s": round(samples / wall, 3) if wall > 0 else None,
        "final_loss": task.last_loss,
        "nonfinite_steps": task.nonfinite_steps,
        "export_dir": str(export_dir),
        "metrics_csv": str(run_dir / "metrics.csv"),
        "last_checkpoint": str(run_dir / "checkpoints" / "last.ckpt"),
    }
    if trainer.is_global_zero:
        print(
            f"done: {summary['steps']} steps ({steps_done} this run) in {wall:.1f} s, "
            f"{summary['samples_per_s']} samples/s, final loss {task.last_loss:.4f}"
        )
    return summary
