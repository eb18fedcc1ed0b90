"""One LightningModule base for every task: optimiser, schedule, seeding and the hooks tasks override.

Hooks (torchgeo ``BaseTask`` style), called in this order by ``BaseTask.__init__``:

- ``configure_models()``: build or attach the modules (``self.model``, heads). A subclass that is
  given a ready model stores it before ``super().__init__`` with
  ``self.__dict__["_pending_model"] = model`` (``nn.Module`` attributes cannot be set earlier) and
  pops it here.
- ``configure_losses()``: optional; build loss modules or functions.
- ``configure_metrics()``: build metric objects (torchmetrics modules are moved with the task).

Then Lightning's own hooks: ``training_step`` (required), ``validation_step``,
``train_dataloader``. ``param_groups()`` returns the AdamW groups: override it for layer-wise
learning-rate decay (a group may carry ``lr_scale``, a multiplier of ``cfg.lr``, or an absolute
``lr``). Clipping (``cfg.grad_clip``) and accumulation (``cfg.accumulate``) are the Trainer's
(:class:`~maecore.tasks.pretrain.PretrainTask` clips by the norm it already computed).
A subclass overriding ``on_fit_start``, ``on_train_start`` or ``on_train_batch_start`` should call
``super()``.

Seeding: before every micro-batch the global torch / ``random`` / numpy generators are seeded from
``(cfg.seed, global_step, micro-batch, rank)`` (:meth:`BaseTask.step_seed`), so dropout, drop-path
and any other draw repeat exactly after a resume; :meth:`BaseTask.step_generator` gives a
``torch.Generator`` on a device from the same tuple for explicit draws such as masks.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning as L
import torch
from torch import nn

from maecore.models.transformer import Block
from maecore.tasks.config import TrainConfig
from maecore.tasks.data import StepSampler, mix_seed, seed_cpu_rngs
from maecore.tasks.memory import freed_memory_kept, keep_freed_memory

log = logging.getLogger(__name__)
NO_DECAY_NAMES = ("mask_token", "cls_token", "group_embed", "pos_embed", "decoder_group")
GLOBAL_STREAM, GENERATOR_STREAM = 3, 4  # mix_seed salts


def no_decay(name: str, param: nn.Parameter) -> bool:
    """Biases, norms, learned embeddings and tokens and other 1-D parameters get no weight decay.

    Matched on the parameter's own name (``tokenizer.proj.0.weight`` is a projection: it decays).
    """
    return param.ndim <= 1 or any(part in NO_DECAY_NAMES for part in name.split("."))


def default_param_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """``[decayed (weight_decay), not decayed (0.0)]`` trainable parameters; empty groups dropped."""
    decay, plain = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (plain if no_decay(name, p) else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """LR multiplier of optimizer step ``step`` (0-based).

    Linear warm-up ``(step + 1) / warmup`` (so the first step already learns and step
    ``warmup - 1`` reaches 1), then a half cosine from 1 down to ``min_ratio`` at ``step = total``,
    and ``min_ratio`` after it.
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(total - warmup, 1)
    progress = min(max(step - warmup, 0) / span, 1.0)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class BaseTask(L.LightningModule):
    """AdamW + warm-up cosine (stepped every optimizer step) and step-seeded randomness.

    See the module docstring for the hooks a task overrides.
    """

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.configure_models()
        self.configure_losses()
        self.configure_metrics()

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets _current_fx_name before every hook, about 50 times a step; nn.Module's
        # __setattr__ (parameter, buffer and module checks) made that 0.3 ms of each step
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def configure_model(self) -> None:
        """Lightning's hook, run once the strategy is set up: ``train.compile`` compiles here."""
        if self.cfg.compile:
            for module in self.compile_targets():
                module.compile()  # in place: parameter names and checkpoints stay as they are

    def compile_targets(self) -> list[nn.Module]:
        """What ``train.compile`` hands to ``torch.compile``: every maecore transformer block (their
        shapes are static, so one graph per width serves every block), else each child module."""
        blocks = [m for m in self.modules() if isinstance(m, Block)]
        return blocks or [m for m in self.children() if next(m.parameters(), None) is not None]

    # hooks -------------------------------------------------------------------
    def configure_models(self) -> None:
        """Build or attach the task's modules."""

    def configure_losses(self) -> None:
        """Build loss modules (optional; the MAE models compute their own loss)."""

    def configure_metrics(self) -> None:
        """Build metric objects (torchmetrics)."""

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        """One micro-batch: return the loss to back-propagate."""
        raise NotImplementedError(f"{type(self).__name__} must implement training_step")

    def param_groups(self) -> list[dict[str, Any]]:
        """AdamW parameter groups: no weight decay on biases, norms, embeddings, tokens, 1-D tensors.

        Override for custom groups; an optional ``lr_scale`` per group multiplies ``cfg.lr``.
        """
        return default_param_groups(self, self.cfg.weight_decay)

    # optimiser ---------------------------------------------------------------
    def lr_factor(self, step: int) -> float:
        """The LR multiplier of optimizer step ``step`` (:func:`warmup_cosine` over ``cfg``)."""
        return warmup_cosine(step, self.cfg.warmup_steps, self.cfg.max_steps, self.cfg.min_lr_ratio)

    def configure_optimizers(self) -> Any:
        groups = self.param_groups()
        for g in groups:
            if "lr_scale" in g or "lr" not in g:
                g["lr"] = self.cfg.lr * g.get("lr_scale", 1.0)
        opt = adamw(groups, lr=self.cfg.lr, betas=self.cfg.betas, weight_decay=self.cfg.weight_decay)
        # a plain function: LambdaLR then stores nothing of it in the checkpoint
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: self.lr_factor(step))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}

    def on_fit_start(self) -> None:
        """On the CPU, glibc's malloc keeps freed memory for reuse (:mod:`maecore.tasks.memory`)."""
        if self.device.type == "cpu":
            keep_freed_memory()

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        """Lightning's step, then the gradients freed at once (set to None) where that is free.

        Lightning frees them only after the next forward pass, so they sit in that pass's peak
        memory: the model's size again in fp32 (0.45 GB for the ViT-B/16 MAE). On a GPU the caching
        allocator hands their memory straight to the forward pass. On the CPU it costs nothing only
        when malloc keeps freed memory (:func:`~maecore.tasks.memory.keep_freed_memory`, set in
        :meth:`on_fit_start`): with glibc's defaults the memory went back to the system and the next
        backward faulted it in again (88k page faults and +15 % step time for the 3D ViT-B at batch
        1), so then they are freed where Lightning frees them. The next backward starts from None
        either way: the training is the same to the bit.
        """
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if self.free_grads_after_step():
            optimizer.zero_grad(set_to_none=True)

    def free_grads_after_step(self) -> bool:
        """Whether :meth:`optimizer_step` frees the gradients: off the CPU, or when malloc keeps freed memory."""
        return self.device.type != "cpu" or freed_memory_kept()

    # seeding -----------------------------------------------------------------
    def micro_batch(self, batch_idx: int) -> int:
        """Index of ``batch_idx`` within its optimizer step (``0 .. accumulate - 1``)."""
        return batch_idx % self.cfg.accumulate

    def step_seed(self, micro: int, stream: int = GLOBAL_STREAM) -> int:
        """Seed of micro-batch ``micro`` of the current optimizer step on this rank."""
        return mix_seed(self.cfg.seed, stream, self.global_step, micro, self.global_rank)

    def step_generator(self, micro: int, device: torch.device | str = "cpu") -> torch.Generator:
        """A ``torch.Generator`` on ``device`` seeded for this step, micro-batch and rank."""
        return torch.Generator(device=device).manual_seed(self.step_seed(micro, GENERATOR_STREAM))

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Lightning walks the whole batch every step to move it; on the CPU there is nothing to move."""
        if device.type == "cpu":
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        seed = self.step_seed(self.micro_batch(batch_idx))
        seed_cpu_rngs(seed)
        if self.device.type == "cuda":  # not torch.cuda.is_available(): 0.35 ms a step on a CPU host
            torch.cuda.manual_seed_all(seed)

    def on_train_start(self) -> None:
        """Put a :class:`StepSampler` loader at batch ``global_step * accumulate``.

        Normally Lightning already restored the position from the checkpoint
        (:class:`maecore.tasks.data.StepLoader`); this covers checkpoints written without it.
        """
        sampler = getattr(self.trainer.train_dataloader, "batch_sampler", None)
        want = self.global_step * self.cfg.accumulate
        if isinstance(sampler, StepSampler) and sampler.start_step != want:
            if want:
                log.info("data position set to batch %d (step %d)", want, self.global_step)
            sampler.start_step = want


class AdamW(torch.optim.AdamW):
    """torch's AdamW, without its per-step CUDA-graph capture check when every parameter is on the CPU.

    ``AdamW.step`` first asks whether an accelerator is available. ``import lightning`` sets
    ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` (so the answer never initialises CUDA), and then a CUDA
    build of torch on a machine without an NVIDIA driver answers by loading the NVML library
    again on every call: 0.33 ms a step in a training process here, 5 % of a small model's step.
    The check is about CUDA/XPU graph capture, which never involves CPU parameters.
    """

    def _accelerator_graph_capture_health_check(self) -> None:
        if any(p.device.type != "cpu" for g in self.param_groups for p in g["params"]):
            super()._accelerator_graph_capture_health_check()


def adamw(groups: list[dict[str, Any]], **kwargs: Any) -> torch.optim.AdamW:
    """The engine's optimizer: :class:`AdamW` over ``groups`` (see :func:`default_param_groups`),
    with the fused kernel where :func:`_fused_ok` allows. Benchmarks build it the same way."""
    return AdamW(groups, fused=_fused_ok(groups), **kwargs)


def _fused_ok(groups: list[dict[str, Any]]) -> bool | None:
    """AdamW's fused kernel when every parameter is a float32/16-bit tensor on the CPU or CUDA:
    on this CPU it made the ViT-B optimizer step 3x faster (147 -> 48 ms, 97 M parameters), a fifth
    of a batch-1 3D pretraining step. None (the default loop) otherwise."""
    params = [p for g in groups for p in g["params"]]
    ok = all(p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.float16, torch.bfloat16)
             for p in params)
    return True if params and ok else None
