"""Lightning training engine: pretraining, fine-tuning and probes on frozen embeddings."""

from maecore.tasks.base import BaseTask
from maecore.tasks.config import TrainConfig
from maecore.tasks.pretrain import NonFiniteError, PretrainTask, run_pretrain

__all__ = ["BaseTask", "NonFiniteError", "PretrainTask", "TrainConfig", "run_pretrain"]
