"""The ``data`` section of a medmae config, kept apart from :mod:`medmae.data` so that reading and
checking a config (``medmae info``, ``--help``, argument checks) does not import MONAI (about 4 s)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from maecore.errors import ConfigError
from medmae.modalities import DEFAULT_MODALITIES, alias_table

CACHE_KINDS = ("memory", "disk", "none")
TASKS = ("auto", "classification", "segmentation")


@dataclass
class DataConfig:
    """The ``data`` section of a medmae config (see ``configs/default.yaml``)."""

    modalities: list[str] = field(default_factory=lambda: list(DEFAULT_MODALITIES))
    modality_map: dict[str, str] = field(default_factory=dict)
    spacing: list[float] | None = field(default_factory=lambda: [1.0, 1.0, 1.0])
    roi_size: list[int] = field(default_factory=lambda: [128, 128, 128])
    samples_per_case: int = 8
    flip_prob: float = 0.5
    flip_axes: list[int] = field(default_factory=lambda: [0, 1, 2])
    cache: str = "memory"
    cache_dir: str | None = None
    label_column: str | None = None
    task: str = "auto"
    val_fraction: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        self.modalities = [str(m).lower() for m in self.modalities]
        if not self.modalities or len(set(self.modalities)) != len(self.modalities):
            raise ConfigError(f"data.modalities must be distinct names, got {self.modalities}")
        table = alias_table(self.modality_map)
        for k, v in self.modality_map.items():
            if str(v).lower() not in self.modalities:
                raise ConfigError(f"data.modality_map maps {k!r} to {v!r}, which is not in data.modalities "
                                  f"{self.modalities}")
        del table
        if len(self.roi_size) != 3 or any(int(r) < 1 for r in self.roi_size):
            raise ConfigError(f"data.roi_size must be three positive integers, got {self.roi_size}")
        self.roi_size = [int(r) for r in self.roi_size]
        if self.spacing is not None:
            if len(self.spacing) != 3 or any(float(s) <= 0 for s in self.spacing):
                raise ConfigError(f"data.spacing must be three positive numbers (mm) or null, got {self.spacing}")
            self.spacing = [float(s) for s in self.spacing]
        if self.cache not in CACHE_KINDS:
            raise ConfigError(f"data.cache must be one of {CACHE_KINDS}, got {self.cache!r}")
        if self.samples_per_case < 1:
            raise ConfigError(f"data.samples_per_case must be >= 1, got {self.samples_per_case}")
        if not 0 <= self.flip_prob <= 1:
            raise ConfigError(f"data.flip_prob must be in [0, 1], got {self.flip_prob}")
        if any(a not in (0, 1, 2) for a in self.flip_axes):
            raise ConfigError(f"data.flip_axes must be axes among 0, 1, 2, got {self.flip_axes}")
        if self.task not in TASKS:
            raise ConfigError(f"data.task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")

    @classmethod
    def from_cfg(cls, cfg: dict[str, Any]) -> DataConfig:
        d = dict(cfg.get("data", {}))
        d.setdefault("seed", int(cfg.get("train", {}).get("seed", 0)))
        valid = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - valid)
        if unknown:
            raise ConfigError(f"unknown data key(s) {unknown}; valid keys: {', '.join(sorted(valid))}")
        return cls(**{k: v for k, v in d.items() if v is not None or k in ("spacing", "cache_dir", "label_column")})

