"""Lightning training engine: pretraining, fine-tuning and probes on frozen embeddings."""

from maecore.tasks.base import BaseTask
from maecore.tasks.checkpoint import AtomicCheckpointIO, LastCheckpoint, find_resume_checkpoint, safe_torch_load
from maecore.tasks.config import TrainConfig
from maecore.tasks.data import StepLoader, StepSampler, collate_dict, make_loader
from maecore.tasks.pretrain import NonFiniteError, PretrainTask, run_pretrain

__all__ = [
    "AtomicCheckpointIO",
    "BaseTask",
    "LastCheckpoint",
    "NonFiniteError",
    "PretrainTask",
    "StepLoader",
    "StepSampler",
    "TrainConfig",
    "collate_dict",
    "find_resume_checkpoint",
    "make_loader",
    "run_pretrain",
    "safe_torch_load",
]
