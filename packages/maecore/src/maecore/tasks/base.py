"""One LightningModule base for every task: optimiser, schedule and the hooks domains override.

Hooks (torchgeo ``BaseTask`` style): ``configure_models`` builds modules, ``configure_metrics``
builds metric objects, ``param_groups`` returns AdamW parameter groups (fine-tuning overrides it
for layer-wise learning-rate decay). The loop itself is Lightning's.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn

from maecore.tasks.config import TrainConfig

NO_DECAY_NAMES = ("mask_token", "cls_token", "group_embed", "pos_embed", "decoder_group")


def no_decay(name: str, param: nn.Parameter) -> bool:
    """Biases, norms, learned embeddings and tokens and other 1-D parameters get no weight decay.

    Matched on the parameter's own name (``tokenizer.proj.0.weight`` is a projection: it decays).
    """
    return param.ndim <= 1 or any(part in NO_DECAY_NAMES for part in name.split("."))


def default_param_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, plain = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (plain if no_decay(name, p) else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """LR multiplier: linear warm-up to 1 over ``warmup`` steps, cosine down to ``min_ratio`` at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(total - warmup, 1)
    progress = min(max(step - warmup, 0) / span, 1.0)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class BaseTask(L.LightningModule):
    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.configure_models()
        self.configure_metrics()

    # hooks -------------------------------------------------------------------
    def configure_models(self) -> None:
        """Build the modules of the task."""

    def configure_metrics(self) -> None:
        """Build metric objects (torchmetrics)."""

    def param_groups(self) -> list[dict[str, Any]]:
        """AdamW parameter groups; an optional ``lr_scale`` per group multiplies the LR."""
        return default_param_groups(self, self.cfg.weight_decay)

    # optimiser ---------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        groups = self.param_groups()
        for g in groups:
            g["lr"] = self.cfg.lr * g.pop("lr_scale", 1.0)
        opt = torch.optim.AdamW(groups, lr=self.cfg.lr, betas=self.cfg.betas)
        cfg = self.cfg

        def factor(step: int) -> float:
            return warmup_cosine(step, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio)

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
