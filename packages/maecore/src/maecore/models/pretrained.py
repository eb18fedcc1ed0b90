"""Export and load: ``model.safetensors`` + ``config.json``, from a local path, no network."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from maecore.atomic import atomic_path, atomic_write_text
from maecore.errors import ConfigError, DataError

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
FORMAT_VERSION = 1


class PretrainedMixin:
    """``save_pretrained(dir)`` / ``from_pretrained(dir)`` for registry-built models.

    ``self.meta`` holds what a user needs to apply the model correctly: normalisation statistics,
    sampling rate, spacing, band or lead names. It is written to and read from ``config.json``.
    """

    model_name: str
    model_kwargs: dict[str, Any]
    meta: dict[str, Any]

    def export_config(self) -> dict[str, Any]:
        if not getattr(self, "model_name", None):
            raise ValueError("only models built with maecore.create_model(...) can be exported")
        from maecore import __version__

        return {
            "format_version": FORMAT_VERSION,
            "maecore_version": __version__,
            "model": self.model_name,
            "kwargs": self.model_kwargs,
            "meta": getattr(self, "meta", {}) or {},
        }

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        cfg = self.export_config()
        assert isinstance(self, nn.Module)
        with atomic_path(out / WEIGHTS) as tmp:
            save_model(self, str(tmp), metadata={"model": self.model_name})
        atomic_write_text(out / CONFIG, json.dumps(cfg, indent=2, sort_keys=True, default=_jsonable))
        return out

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str], map_location: str = "cpu") -> nn.Module:
        return load_pretrained(directory, map_location)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot store {type(obj).__name__} in config.json")


def read_export_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(directory)
    cfg_path = path / CONFIG
    if not cfg_path.is_file():
        raise DataError(path, f"an exported model folder with {CONFIG} and {WEIGHTS}", "no config.json")
    if not (path / WEIGHTS).is_file():
        raise DataError(path, f"an exported model folder with {WEIGHTS}", f"no {WEIGHTS}")
    try:
        cfg = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(cfg_path, "valid JSON", f"a parse error ({err})") from err
    if not isinstance(cfg, dict) or "model" not in cfg or "kwargs" not in cfg:
        found = f"keys {sorted(cfg)}" if isinstance(cfg, dict) else type(cfg).__name__
        raise DataError(cfg_path, "keys 'model' and 'kwargs'", found)
    return cfg


def load_pretrained(directory: str | os.PathLike[str], map_location: str = "cpu") -> nn.Module:
    """Rebuild the model named in ``config.json`` and load ``model.safetensors`` strictly."""
    from maecore.models.registry import create_model

    cfg = read_export_config(directory)
    try:
        model = create_model(cfg["model"], **cfg["kwargs"])
    except (ConfigError, ValueError, TypeError) as err:  # unknown model (domain not installed) or arguments
        raise DataError(Path(directory) / CONFIG, "a model this installation can build", str(err)) from err
    weights = Path(directory) / WEIGHTS
    try:
        missing, unexpected = load_model(model, str(weights), strict=False, device=map_location)
    except RuntimeError as err:  # shape mismatch between config.json and the weights
        first = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        raise DataError(weights, f"the weights of {cfg['model']!r} as configured in {CONFIG}", first) from err
    except Exception as err:  # corrupt safetensors file
        raise DataError(weights, "a readable safetensors file", f"{type(err).__name__}: {err}") from err
    if missing or unexpected:
        raise DataError(
            Path(directory) / WEIGHTS,
            f"the weights of {cfg['model']!r}",
            f"missing {sorted(missing)[:5]} / unexpected {sorted(unexpected)[:5]}",
        )
    model.meta = cfg.get("meta", {})
    return model
