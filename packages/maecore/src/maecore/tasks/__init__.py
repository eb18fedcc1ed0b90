"""Lightning training engine: pretraining, fine-tuning and probes on frozen embeddings.

The names below load on first use (PEP 562): ``maecore.tasks.data`` and ``maecore.tasks.config``
need only torch, so a CLI's ``--help``, ``info`` or ``check`` never pays for importing Lightning
(about 2-3.5 s here, with the torchmetrics, torchvision and transformers it pulls in).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "AtomicCheckpointIO": "checkpoint",
    "BaseTask": "base",
    "LastCheckpoint": "checkpoint",
    "NonFiniteError": "pretrain",
    "PretrainTask": "pretrain",
    "StepLoader": "data",
    "StepSampler": "data",
    "TrainConfig": "config",
    "collate_dict": "data",
    "find_resume_checkpoint": "checkpoint",
    "make_loader": "data",
    "run_pretrain": "pretrain",
    "safe_torch_load": "checkpoint",
}
__all__ = [  # the keys of _EXPORTS (a test keeps them equal)
    "AtomicCheckpointIO", "BaseTask", "LastCheckpoint", "NonFiniteError", "PretrainTask", "StepLoader",
    "StepSampler", "TrainConfig", "collate_dict", "find_resume_checkpoint", "make_loader", "run_pretrain",
    "safe_torch_load",
]

if TYPE_CHECKING:
    from maecore.tasks.base import BaseTask
    from maecore.tasks.checkpoint import AtomicCheckpointIO, LastCheckpoint, find_resume_checkpoint, safe_torch_load
    from maecore.tasks.config import TrainConfig
    from maecore.tasks.data import StepLoader, StepSampler, collate_dict, make_loader
    from maecore.tasks.pretrain import NonFiniteError, PretrainTask, run_pretrain


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'maecore.tasks' has no attribute {name!r}")
    return getattr(importlib.import_module(f"maecore.tasks.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
