"""Training hyper-parameters shared by pretraining and fine-tuning."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from maecore.errors import ConfigError


@dataclass
class TrainConfig:
    """The ``train`` section of a run config.

    ``lr`` is the peak learning rate as given (not scaled by batch size). ``batch_size`` is per
    device; with accumulation and several devices the effective batch is
    ``batch_size * accumulate * devices * num_nodes``. ``precision="auto"`` means ``bf16-mixed`` on
    a GPU and ``32-true`` on the CPU.
    """

    max_steps: int = 1000
    batch_size: int = 8
    lr: float = 1.5e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 100
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0
    accumulate: int = 1
    precision: str = "auto"
    accelerator: str = "auto"
    devices: int | str = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    ckpt_every: int = 100
    seed: int = 0
    log_every: int = 10
    max_nonfinite: int = 10
    progress: bool = True
    num_workers: int = 0

    def __post_init__(self) -> None:
        checks = [
            ("max_steps", self.max_steps >= 1, ">= 1"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("lr", self.lr > 0, "> 0"),
            ("warmup_steps", self.warmup_steps >= 0, ">= 0"),
            ("min_lr_ratio", 0 <= self.min_lr_ratio <= 1, "in [0, 1]"),
            ("grad_clip", self.grad_clip >= 0, ">= 0 (0 = off)"),
            ("accumulate", self.accumulate >= 1, ">= 1"),
            ("ckpt_every", self.ckpt_every >= 1, ">= 1"),
            ("log_every", self.log_every >= 1, ">= 1"),
            ("max_nonfinite", self.max_nonfinite >= 0, ">= 0"),
            ("num_workers", self.num_workers >= 0, ">= 0"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(f"train.{name} must be {rule}, got {getattr(self, name)!r}")
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        if self.strategy not in ("auto", "ddp", "ddp_spawn", "fsdp", "deepspeed"):
            raise ValueError(
                f"train.strategy must be one of auto, ddp, ddp_spawn, fsdp, deepspeed; got {self.strategy!r}"
            )
        if isinstance(self.devices, str) and self.devices != "auto":
            try:
                self.devices = int(self.devices)
            except ValueError as err:
                raise ValueError(f"train.devices must be an integer or 'auto', got {self.devices!r}") from err

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - valid)
        if unknown:
            raise ConfigError(f"unknown train key(s) {unknown}; valid keys: {', '.join(sorted(valid))}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["betas"] = list(self.betas)
        return out

    def resolved_precision(self, accelerator: str) -> str:
        if self.precision != "auto":
            return self.precision
        return "bf16-mixed" if accelerator in ("cuda", "gpu") else "32-true"
