"""Masked pretraining of any model with the MAE surface, and ``run_pretrain`` for CLI/notebooks."""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, TQDMProgressBar
from lightning.pytorch.loggers import Logger
from lightning.pytorch.profilers import PassThroughProfiler
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy
from lightning.pytorch.utilities import rank_zero_only
from torch import nn
from torch.utils.data import DataLoader, Dataset

from maecore.tasks.base import BaseTask
from maecore.tasks.checkpoint import CHECKPOINT_DIR, AtomicCheckpointIO, LastCheckpoint, find_resume_checkpoint
from maecore.tasks.config import TrainConfig
from maecore.tasks.data import make_eval_loader, make_loader, mix_seed
from maecore.tasks.logger import AppendingCSVLogger, PruneMetricsOnResume

log = logging.getLogger(__name__)
VAL_STREAM = 5  # mix_seed salt of validation masks
# TrainConfig keys that do not change the result of a run: a resume may change them freely
RESUME_FREE_KEYS = ("progress", "log_every", "ckpt_every", "num_workers", "max_nonfinite", "max_steps", "compile")


class NonFiniteError(RuntimeError):
    """Too many non-finite steps; the last good checkpoint is kept."""


EMB_SAMPLES = 16  # samples encoded for train/emb_std on a log step, when the output has no latent to pool


def embedding_spread(emb: torch.Tensor) -> torch.Tensor:
    """Collapse watch: ``emb [B, D] -> []``, the mean over dimensions of the per-dimension std over
    the batch. Near 0 when every sample gets the same embedding."""
    return emb.float().std(0).mean()


def visible_embedding(out: Any) -> torch.Tensor | None:
    """``out.latent [B, K, D]`` pooled over the slots ``out.latent_pad [B, K]`` does not mark: each
    sample's mean visible-token encoding ``[B, D]`` from the training forward itself; None when the
    output lacks either (or a sample has no visible token)."""
    latent, pad = getattr(out, "latent", None), getattr(out, "latent_pad", None)
    if latent is None or pad is None or bool(pad.all(1).any()):
        return None
    w = (~pad).to(latent.dtype)[..., None]
    return (latent.detach() * w).sum(1) / w.sum(1)


def batch_head(batch: dict[str, Any], n: int) -> dict[str, Any]:
    """The first ``n`` samples of a collated batch: tensors and lists of the batch's length are cut,
    anything else (shared metadata) is kept."""
    bs = batch_size_of(batch)
    if bs <= n:
        return batch
    return {k: v[:n] if isinstance(v, (torch.Tensor, list, tuple)) and len(v) == bs else v for k, v in batch.items()}


def batch_size_of(batch: dict[str, Any]) -> int:
    """Leading size of the first tensor in ``batch`` (1 when there is none)."""
    return next((int(v.shape[0]) for v in batch.values() if isinstance(v, torch.Tensor)), 1)


class PretrainTask(BaseTask):
    """Pretrains a model whose ``forward(batch, generator=g)`` returns an output with ``loss``.

    - Masks: each micro-batch's ``g`` lives on the batch's device and is seeded from
      ``(seed, global_step, micro-batch, rank)``, so masks repeat exactly after a resume.
    - Logs, every ``log_every`` steps (the steps Lightning writes; nothing is computed in between,
      and the values go straight to the loggers after the step's optimizer step): ``train/loss``
      (mean over the step's micro-batches; nan/inf on a skipped step), ``train/lr``,
      ``train/grad_norm``, ``train/<k>`` for each ``out.extras`` entry, and ``train/emb_std``
      (:func:`embedding_spread` over the batch: a value near 0 means the encoder collapsed). The
      embeddings are the training forward's own visible-token encodings, pooled
      (:func:`visible_embedding`), when the output carries ``latent`` and ``latent_pad``; else
      ``model.encode`` of the first ``EMB_SAMPLES`` samples, an extra forward over every token
      (for the ViT-B MAE at batch 8 that forward cost about half a training step, 5 % of the run
      at ``log_every=10``).
    - Clipping (``cfg.grad_clip``) uses the gradient norm computed for the non-finite check below
      (Lightning's own clipping on sharded strategies).
    - Non-finite loss or gradients (a gradient norm that is not finite): the optimizer step is
      skipped on every rank (gradients dropped; the LR schedule still advances), counted in
      ``nonfinite_steps`` (kept in the checkpoint) and logged as ``train/nonfinite_steps`` from then
      on; past ``cfg.max_nonfinite`` the run stops with :class:`NonFiniteError`, leaving the last
      checkpoint as it was.
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        dataset: Dataset | None = None,
        val_dataset: Dataset | None = None,
    ) -> None:
        self.__dict__["_pending_model"] = model  # read by configure_models inside BaseTask.__init__
        super().__init__(cfg)
        self.dataset, self.val_dataset = dataset, val_dataset
        self.nonfinite_steps = 0
        self._last_loss: torch.Tensor | None = None
        self._step_losses: list[torch.Tensor] = []
        self._clip_with: tuple[list[nn.Parameter], torch.Tensor] | None = None
        self._metrics: dict[str, Any] = {}  # this log step's train/* values, written after its optimizer step
        self._write_step: int | None = None
        self.train_started: tuple[int, float] | None = None  # (global step, perf_counter) when training began

    def configure_models(self) -> None:
        self.model = self.__dict__.pop("_pending_model")

    def forward(self, batch: dict[str, Any], generator: torch.Generator | None = None) -> Any:
        return self.model(batch, generator=generator)

    # data ----------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        if self.dataset is None:
            raise ValueError("PretrainTask needs a dataset to build its dataloader")
        n_batches = self.cfg.max_steps * self.cfg.accumulate
        return make_loader(self.dataset, self.cfg, n_batches, self.global_rank, self.trainer.world_size)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_dataset is None:
            return []
        return make_eval_loader(self.val_dataset, self.cfg, self.global_rank, self.trainer.world_size)

    # steps ---------------------------------------------------------------------
    def on_fit_start(self) -> None:
        super().on_fit_start()
        self.model.train()  # a model handed over in eval mode would train with eval behaviour

    def on_train_start(self) -> None:
        super().on_train_start()
        self.train_started = (self.global_step, time.perf_counter())  # run_pretrain's wall time and steps

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        micro = self.micro_batch(batch_idx)
        device = next(self.model.parameters()).device
        out = self(batch, generator=self.step_generator(micro, device))
        # a non-finite loss is still back-propagated, so every DDP rank takes part in the gradient
        # all-reduce; on_before_optimizer_step then drops the update on all ranks
        self._step_losses.append(out.loss.detach().float())
        if not self._log_step():
            return out.loss
        for k, v in (getattr(out, "extras", None) or {}).items():
            self._metrics[f"train/{k}"] = v.detach() if isinstance(v, torch.Tensor) else v
        if micro == 0 and batch_size_of(batch) > 1:
            emb = visible_embedding(out)
            if emb is None and hasattr(self.model, "encode"):
                with torch.no_grad():
                    emb = self.model.encode(batch_head(batch, EMB_SAMPLES))
            if emb is not None:
                self._metrics["train/emb_std"] = embedding_spread(emb)
        return out.loss

    def _log_step(self) -> bool:
        """True on the steps whose metrics Lightning writes (``(step + 1) % log_every == 0``)."""
        return (self.global_step + 1) % self.cfg.log_every == 0

    @property
    def last_loss(self) -> float:
        """Mean training loss of the last step that updated the weights (nan before the first)."""
        return float(self._last_loss) if self._last_loss is not None else float("nan")

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        losses = torch.stack(self._step_losses) if self._step_losses else torch.zeros(1)
        self._step_losses = []
        self._clip_with = None
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        grads = [p.grad for p in params]
        # one fused pass over the gradients: their total norm is finite iff every entry is (or the
        # sum of squares overflows, which no step should take either)
        norm = torch.nn.utils.get_total_norm(grads) if grads else losses.new_zeros(())
        checks = [losses.isfinite().all()]
        if getattr(self.trainer.precision_plugin, "scaler", None) is None:  # a GradScaler skips fp16 overflows itself
            checks.append(norm.isfinite())
        # clip_grads_with_norm_ multiplies by min(1, clip / (norm + 1e-6)): a step under the limit skips that
        # pass over the gradients (a no-op multiplication by 1.0), decided with the same float32 values
        clip = float(self.cfg.grad_clip)
        under = (clip / (norm + 1e-6)).clamp(max=1.0).eq(1.0) if clip > 0 and grads else norm.new_ones((), dtype=bool)
        flags = torch.stack([torch.stack(checks).all(), under]).tolist()  # the one host sync of a step
        bad = not flags[0]
        if self.trainer.world_size > 1:
            bad = self.trainer.strategy.reduce_boolean_decision(bad, all=False)
        if self._log_step():
            self._write_step = self.global_step
            self._metrics["train/loss"] = losses.mean()  # nan/inf on a skipped step: written as it was
            self._metrics["train/lr"] = optimizer.param_groups[0]["lr"]
            if self.cfg.progress:
                self.log("train/loss", losses.mean(), prog_bar=True, logger=False)
        if bad:
            for p in self.parameters():
                p.grad = None  # AdamW leaves parameters without a gradient untouched
            self._count_nonfinite()
            return
        self._last_loss = losses.mean()
        if grads and self._log_step():
            self._metrics["train/grad_norm"] = norm
        if grads and isinstance(self.trainer.strategy, (SingleDeviceStrategy, DDPStrategy)):
            # whole gradients on every rank: their norm is the one to clip by (and every rank decides alike)
            self._clip_with = ([] if flags[1] else params, norm)

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip by the gradient norm :meth:`on_before_optimizer_step` already computed (Lightning
        would compute it again), and only when it is over ``train.grad_clip``; sharded strategies,
        value clipping and skipped steps go to Lightning."""
        clip_with, self._clip_with = self._clip_with, None
        if (gradient_clip_val == self.cfg.grad_clip and gradient_clip_val and clip_with is not None
                and gradient_clip_algorithm in (None, "norm")):
            if clip_with[0]:  # empty: the norm is under the limit
                torch.nn.utils.clip_grads_with_norm_(clip_with[0], gradient_clip_val, clip_with[1])
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Write the log step's metrics to the loggers, as Lightning's logger connector would (same
        ``step`` and ``epoch``). Not through ``self.log``: each call cost about 2 ms here, in
        Lightning's result bookkeeping, 5 calls a log step; the values are rank 0's, as before."""
        step, self._write_step = self._write_step, None
        if step is None:
            return
        metrics, self._metrics = self._metrics, {}
        if self.nonfinite_steps:
            metrics["train/nonfinite_steps"] = self.nonfinite_steps  # a running count once a step was skipped
        if not self.trainer.is_global_zero or not self.loggers:
            return
        scalars = {"epoch": self.current_epoch, **{k: float(v) for k, v in metrics.items()}}
        for logger in self.loggers:
            logger.log_metrics(scalars, step=step)
            logger.save()

    def _count_nonfinite(self) -> None:
        self.nonfinite_steps += 1
        if self.global_rank == 0:
            log.warning("non-finite loss or gradients at step %d: step skipped (%d so far)", self.global_step,
                        self.nonfinite_steps)
        if self.nonfinite_steps > self.cfg.max_nonfinite:
            raise NonFiniteError(
                f"{self.nonfinite_steps} non-finite steps, more than train.max_nonfinite={self.cfg.max_nonfinite}; "
                f"stopped at step {self.global_step}; last good checkpoint is {self._last_checkpoint()}. "
                "Lower the learning rate or check the data for NaN/inf values."
            )

    def _last_checkpoint(self) -> str:
        cb = next((c for c in self.trainer.callbacks if isinstance(c, LastCheckpoint)), None)
        if cb is None or cb.saved_step is None:
            return "none was written yet"
        return f"{cb.path} (step {cb.saved_step})"

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        device = next(self.model.parameters()).device
        seed = mix_seed(self.cfg.seed, VAL_STREAM, batch_idx, self.global_rank)  # the same masks every time
        out = self(batch, generator=torch.Generator(device=device).manual_seed(seed))
        self.log("val/loss", out.loss.detach(), batch_size=batch_size_of(batch), sync_dist=True)

    # checkpoint extras ----------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["maecore"] = {"nonfinite_steps": self.nonfinite_steps, "train": self.cfg.to_dict()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        extra = checkpoint.get("maecore", {})
        self.nonfinite_steps = int(extra.get("nonfinite_steps", 0))
        saved, now = extra.get("train", {}), self.cfg.to_dict()
        changed = sorted(k for k in now if k in saved and saved[k] != now[k] and k not in RESUME_FREE_KEYS)
        if changed:
            warnings.warn(
                f"resuming with changed train settings {changed} (checkpoint: "
                f"{ {k: saved[k] for k in changed} }); the run will not match an uninterrupted one",
                stacklevel=2,
            )


class NoProfiler(PassThroughProfiler):
    """Lightning's default profiler, minus its cost: the loop enters ``profiler.profile(name)``
    around every hook and callback, dozens of times a step, and the default's generator-made
    context managers cost 0.05 ms a step here (5 % of the engine's fixed cost per step). This one
    hands back one reusable null context."""

    def profile(self, action_name: str) -> contextlib.nullcontext:
        return _NULL_CONTEXT


_NULL_CONTEXT = contextlib.nullcontext()


def build_trainer(
    cfg: TrainConfig,
    run_dir: Path,
    callbacks: Sequence[Callback] = (),
    logger: bool | Logger | Sequence[Logger] = True,
    allow_unsafe: bool = False,
    val_every: int | None = None,
) -> L.Trainer:
    """The Lightning Trainer of every task: ``cfg`` settings, ``RUN/checkpoints/last.ckpt`` every
    ``cfg.ckpt_every`` steps and at the end, atomic ``weights_only`` checkpoint IO, metrics in
    ``RUN/metrics.csv`` (``logger=True``; or given Lightning loggers; ``False``: none).

    ``val_every``: validate every that many optimizer steps (None: at the end of the data).
    Lightning's profiling hooks cost nothing (:class:`NoProfiler`).
    """
    run_dir = Path(run_dir)
    accelerator = cfg.accelerator
    if accelerator == "auto":
        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    cbs: list[Callback] = [LastCheckpoint(run_dir / CHECKPOINT_DIR, cfg.ckpt_every), *callbacks]
    if cfg.progress:
        cbs.append(TQDMProgressBar(refresh_rate=max(1, cfg.log_every // 2)))
    if logger is True:
        logger = AppendingCSVLogger(str(run_dir))
        cbs.append(PruneMetricsOnResume(logger))
    val_kwargs: dict[str, Any] = {}
    if val_every is not None:
        val_kwargs = {"val_check_interval": val_every * cfg.accumulate, "check_val_every_n_epoch": None}
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
        logger=logger,  # type: ignore[arg-type]
        callbacks=cbs,
        enable_checkpointing=True,
        enable_progress_bar=cfg.progress,
        enable_model_summary=False,
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        plugins=[AtomicCheckpointIO(allow_unsafe)],
        profiler=NoProfiler(),
        default_root_dir=str(run_dir),
        **val_kwargs,
    )


def run_pretrain(
    model: nn.Module,
    dataset: Dataset,
    run_dir: str | Path,
    cfg: TrainConfig,
    resume: str | Path | None = None,
    val_dataset: Dataset | None = None,
    callbacks: Sequence[Callback] = (),
    logger: bool | Logger | Sequence[Logger] = True,
    allow_unsafe: bool = False,
) -> dict[str, Any]:
    """Pretrain ``model`` on ``dataset`` for ``cfg.max_steps`` optimizer steps into ``run_dir``.

    Writes ``RUN/checkpoints/last.ckpt`` (every ``cfg.ckpt_every`` steps and at the end),
    ``RUN/metrics.csv`` and, on rank 0, ``RUN/export`` (``model.save_pretrained``). ``resume``:
    None starts fresh, ``"auto"`` continues from ``RUN/checkpoints/last.ckpt`` when present, a
    path continues from that checkpoint; a resumed run ends with the weights an uninterrupted one
    would have. ``val_dataset``: ``val/loss`` every ``ckpt_every`` steps (fixed masks).
    ``allow_unsafe`` lets a resume load a checkpoint that needs pickle.

    Returns ``steps`` (global step reached), ``steps_this_run``, ``wall_s`` and ``samples_per_s``
    (this call, from the first step), ``final_loss`` (last finite training loss on rank 0, None
    when no step ran), ``val_loss``, ``nonfinite_steps``, ``export_dir``, ``metrics_csv``,
    ``last_checkpoint``.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    ckpt = find_resume_checkpoint(run_dir, resume)
    task = PretrainTask(model, cfg, dataset, val_dataset)
    val_every = min(cfg.ckpt_every, cfg.max_steps) if val_dataset is not None else None
    trainer = build_trainer(cfg, run_dir, callbacks, logger, allow_unsafe, val_every)
    if val_dataset is None:
        trainer.limit_val_batches = 0
    trainer.fit(task, ckpt_path=str(ckpt) if ckpt else None, weights_only=not allow_unsafe)
    summary = _summary(trainer, task, run_dir, cfg)
    if trainer.is_global_zero:
        _export(model, Path(summary["export_dir"]))
        _print_summary(summary)
    return summary


def _summary(trainer: L.Trainer, task: PretrainTask, run_dir: Path, cfg: TrainConfig) -> dict:
    started = task.train_started
    wall = time.perf_counter() - started[1] if started else 0.0
    steps_done = trainer.global_step - started[0] if started else 0
    samples = steps_done * cfg.batch_size * cfg.accumulate * trainer.world_size
    csv_path = run_dir / "metrics.csv"
    val = trainer.callback_metrics.get("val/loss")
    ckpt = run_dir / CHECKPOINT_DIR / "last.ckpt"
    return {
        "steps": trainer.global_step,
        "steps_this_run": steps_done,
        "wall_s": round(wall, 3),
        "samples_per_s": round(samples / wall, 3) if wall > 0 else None,
        "final_loss": task.last_loss if task.last_loss == task.last_loss else None,
        "val_loss": float(val) if val is not None else None,
        "nonfinite_steps": task.nonfinite_steps,
        "export_dir": str(run_dir / "export"),
        "metrics_csv": str(csv_path) if csv_path.is_file() else None,
        "last_checkpoint": str(ckpt) if ckpt.is_file() else None,
    }


def _export(model: nn.Module, export_dir: Path) -> None:
    save = getattr(model, "save_pretrained", None)
    if save is None:
        warnings.warn(f"{type(model).__name__} has no save_pretrained: no export written", stacklevel=3)
        return
    save(export_dir)


@rank_zero_only
def _print_summary(s: dict[str, Any]) -> None:
    loss = f"{s['final_loss']:.4f}" if s["final_loss"] is not None else "n/a"
    print(
        f"pretrain done: {s['steps']} steps ({s['steps_this_run']} this run) in {s['wall_s']:.1f} s, "
        f"{s['samples_per_s'] or 0:.1f} samples/s, final loss {loss}, non-finite steps {s['nonfinite_steps']}",
        flush=True,
    )
