"""Training hyper-parameters shared by pretraining and fine-tuning."""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

from maecore.errors import ConfigError

STRATEGIES = ("auto", "ddp", "ddp_spawn", "fsdp", "deepspeed")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
PRECISIONS = ("auto", "32-true", "32", "64-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true")
INT_FIELDS = ("max_steps", "warmup_steps", "accumulate", "num_nodes", "ckpt_every", "seed", "log_every",
              "max_nonfinite", "num_workers", "batch_size")
FLOAT_FIELDS = ("lr", "weight_decay", "min_lr_ratio", "grad_clip")


@dataclass
class TrainConfig:
    """The ``train`` section of a run config.

    ``lr`` is the peak learning rate as given: it is *not* scaled by the batch size (MAE's
    ``blr * batch / 256`` rule is left to the user, so the number in the config is the number
    used). ``batch_size`` is per device; with accumulation and several devices the effective
    batch is ``batch_size * accumulate * devices * num_nodes``. Steps (``max_steps``,
    ``warmup_steps``, ``ckpt_every``, ``log_every``) count optimizer steps. ``precision="auto"``
    means ``bf16-mixed`` on a CUDA GPU (``16-mixed`` on one without bf16) and ``32-true``
    otherwise; explicit values go to Lightning unchanged. ``grad_clip=0`` turns clipping off.
    ``compile`` runs the model's transformer blocks through ``torch.compile`` (a C++ compiler is
    needed on the CPU; the first steps pay the compilation, about a minute for ViT-B).
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
    compile: bool = False

    def __post_init__(self) -> None:
        self._check_types()
        checks = [
            ("max_steps", self.max_steps >= 1, ">= 1"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("lr", self.lr > 0, "> 0"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("warmup_steps", self.warmup_steps >= 0, ">= 0"),
            ("min_lr_ratio", 0 <= self.min_lr_ratio <= 1, "in [0, 1]"),
            ("grad_clip", self.grad_clip >= 0, ">= 0 (0 = off)"),
            ("accumulate", self.accumulate >= 1, ">= 1"),
            ("num_nodes", self.num_nodes >= 1, ">= 1"),
            ("ckpt_every", self.ckpt_every >= 1, ">= 1"),
            ("log_every", self.log_every >= 1, ">= 1"),
            ("max_nonfinite", self.max_nonfinite >= 0, ">= 0"),
            ("num_workers", self.num_workers >= 0, ">= 0"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(f"train.{name} must be {rule}, got {getattr(self, name)!r}")
        if len(self.betas) != 2 or not all(0 <= float(b) < 1 for b in self.betas):
            raise ValueError(f"train.betas must be two numbers in [0, 1), got {self.betas!r}")
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        for name, allowed in (("strategy", STRATEGIES), ("accelerator", ACCELERATORS), ("precision", PRECISIONS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"train.{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        if self.strategy == "fsdp" and self.grad_clip > 0:  # Lightning-AI/pytorch-lightning#19235
            raise ValueError(
                f"train.grad_clip={self.grad_clip} clips by the gradient norm, which Lightning's Trainer cannot do "
                "under train.strategy=fsdp (its FSDP precision plugin raises); set train.grad_clip=0 or use ddp"
            )
        if isinstance(self.devices, str) and self.devices != "auto":
            try:
                self.devices = int(self.devices)
            except ValueError as err:
                raise ValueError(f"train.devices must be an integer or 'auto', got {self.devices!r}") from err
        if isinstance(self.devices, int) and self.devices < 1:
            raise ValueError(f"train.devices must be >= 1 or 'auto', got {self.devices!r}")

    def _check_types(self) -> None:
        """Integers and numbers, also from strings (PyYAML reads ``1e-3`` as a string)."""
        for names, kind in ((INT_FIELDS, int), (FLOAT_FIELDS, float)):
            for name in names:
                v = getattr(self, name)
                if isinstance(v, str):
                    with contextlib.suppress(ValueError):
                        v = kind(v)
                ok = isinstance(v, int) if kind is int else isinstance(v, (int, float))
                if isinstance(v, bool) or not ok:
                    what = "an integer" if kind is int else "a number"
                    raise ValueError(f"train.{name} must be {what}, got {getattr(self, name)!r}")
                setattr(self, name, kind(v))
        for name in ("progress", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"train.{name} must be true or false, got {getattr(self, name)!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a config section; an unknown key raises :class:`ConfigError` listing the valid ones."""
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - valid)
        if unknown:
            raise ConfigError(f"unknown train key(s) {unknown}; valid keys: {', '.join(sorted(valid))}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (``betas`` as a list): YAML/JSON-ready and ``from_dict`` round-trips it."""
        out = asdict(self)
        out["betas"] = list(self.betas)
        return out

    def resolved_precision(self, accelerator: str) -> str:
        """The Lightning precision string for ``accelerator`` (``"cpu"``, ``"gpu"``, ``"cuda"``, ...)."""
        if self.precision != "auto":
            return self.precision
        if accelerator not in ("cuda", "gpu"):
            return "32-true"
        if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
            return "16-mixed"  # pre-Ampere GPUs
        return "bf16-mixed"
