"""Model registry: ``@register_model`` on a factory, ``create_model(name, **overrides)``.

Domain packages register their models at import and advertise themselves under the entry-point
group ``maecore.models`` so that ``create_model`` / ``from_pretrained`` find them by name without
the caller importing the domain first.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from torch import nn

from maecore.errors import ConfigError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_entry_points_loaded = False


def register_model(name: str | None = None) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a factory. The built model remembers its name and arguments for export."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or fn.__name__
        if key in _REGISTRY and _REGISTRY[key] is not fn:
            raise ValueError(f"model name {key!r} is already registered by {_REGISTRY[key].__module__}")
        _REGISTRY[key] = fn
        return fn

    return deco


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group="maecore.models"):
        try:
            ep.load()
        except ImportError:  # a broken optional domain must not hide the others
            continue


def list_models(pattern: str = "") -> list[str]:
    _load_entry_points()
    return sorted(k for k in _REGISTRY if pattern in k)


def model_package(name: str) -> str:
    """The top-level package that registered ``name`` (``"geomae"`` for ``geomae_mae_tiny``): the
    domain whose CLI, configs and readers go with the model."""
    return _lookup(name).__module__.split(".")[0]


def model_arguments(name: str) -> dict[str, Any]:
    """The factory's keyword arguments and defaults (what ``--set model.KEY=...`` accepts)."""
    fn = _lookup(name)
    return {
        p.name: (None if p.default is inspect.Parameter.empty else p.default)
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def _lookup(name: str) -> Callable[..., nn.Module]:
    if name not in _REGISTRY:
        _load_entry_points()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(list_models()) or 'none'}")
    return _REGISTRY[name]


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build a registered model. Unknown arguments raise with the valid ones listed."""
    fn = _lookup(name)
    valid = model_arguments(name)
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ConfigError(
            f"model {name!r} has no argument(s) {unknown}; valid arguments: {', '.join(sorted(valid))}"
        )
    model = fn(**overrides)
    model.model_name = name
    model.model_kwargs = dict(overrides)
    return model
