"""Run configuration: shipped YAML defaults, user YAML files and ``--set key=value`` overrides.

A config is a nested dict with sections ``model`` (``name`` plus the registered factory's
arguments), ``data`` (domain-specific), ``train`` (:class:`maecore.tasks.config.TrainConfig`) and any
section a domain adds. The shipped default of a domain is the schema: a key that is not in it is an
error listing the valid keys. ``model`` keys are checked against the chosen model's arguments.
YAML is always read with ``yaml.safe_load``.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from maecore.errors import ConfigError

FREE_SECTIONS = ("model",)  # checked against the model factory instead of the defaults


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError as err:
        raise ConfigError(f"config file {p} does not exist") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {p} is not valid YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping at top level, found {type(data).__name__}")
    return data


def shipped_configs(package: str) -> dict[str, Path]:
    """``{name: path}`` of the YAML files shipped in ``<package>/configs/``."""
    root = resources.files(package).joinpath("configs")
    out = {}
    for entry in root.iterdir():
        if entry.name.endswith((".yaml", ".yml")):
            out[entry.name.rsplit(".", 1)[0]] = Path(str(entry))
    return out


def resolve_config_file(name_or_path: str, package: str) -> Path:
    """A shipped config name (``tiny``) or a path to a YAML file."""
    shipped = shipped_configs(package)
    if name_or_path in shipped:
        return shipped[name_or_path]
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        return p
    raise ConfigError(
        f"unknown config {name_or_path!r}: not a file and not one of the shipped configs "
        f"{sorted(shipped)} of {package}"
    )


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"train.lr=1e-3"`` -> ``(["train", "lr"], 0.001)``; the value is parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"--set expects KEY=VALUE (e.g. train.lr=1e-3), got {item!r}")
    key, raw = item.split("=", 1)
    parts = [k for k in key.strip().split(".") if k]
    if not parts:
        raise ConfigError(f"--set has an empty key in {item!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    # YAML reads 1e-3 as a string (no dot before e); users mean a number
    if isinstance(value, str) and any(c in value for c in "eE."):
        with contextlib.suppress(ValueError):
            value = float(value)
    return parts, value


def set_path(cfg: dict[str, Any], parts: list[str], value: Any) -> None:
    node = cfg
    for k in parts[:-1]:
        if not isinstance(node.get(k), dict):
            node[k] = {}
        node = node[k]
    node[parts[-1]] = value


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for k, v in update.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict) and k not in FREE_SECTIONS:
            out[k] = deep_merge(out[k], v)
        elif isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = {**out[k], **copy.deepcopy(dict(v))}
        else:
            out[k] = copy.deepcopy(v)
    return out


def validate_keys(cfg: Mapping[str, Any], schema: Mapping[str, Any], where: str = "") -> None:
    """Every key of ``cfg`` must exist in ``schema`` (recursively, except free sections)."""
    for k, v in cfg.items():
        path = f"{where}.{k}" if where else k
        if k not in schema:
            valid = ", ".join(sorted(schema))
            raise ConfigError(f"unknown config key {path!r}; valid keys{' in ' + where if where else ''}: {valid}")
        if not where and k in FREE_SECTIONS:
            continue
        if isinstance(v, Mapping) and isinstance(schema[k], Mapping) and schema[k]:
            validate_keys(v, schema[k], path)


def validate_model_section(section: Mapping[str, Any]) -> None:
    from maecore.models.registry import model_arguments

    if "name" not in section:
        raise ConfigError("config section 'model' needs a 'name' (see `info` for registered models)")
    valid = model_arguments(section["name"])
    for k in section:
        if k != "name" and k not in valid:
            raise ConfigError(
                f"unknown config key 'model.{k}' for model {section['name']!r}; valid keys: "
                f"{', '.join(['name', *sorted(valid)])}"
            )


def load_config(
    package: str,
    config: str | None = None,
    overrides: Iterable[str] = (),
    default: str = "default",
) -> dict[str, Any]:
    """Shipped ``default`` <- ``config`` (name or YAML path) <- ``--set`` overrides, validated."""
    schema = read_yaml(resolve_config_file(default, package))
    cfg = copy.deepcopy(schema)
    if config and config != default:
        user = read_yaml(resolve_config_file(config, package))
        validate_keys(user, schema)
        if "model" in user and "name" in user["model"] and user["model"]["name"] != cfg["model"].get("name"):
            cfg["model"] = {}  # another model: its own arguments, not the default model's
        cfg = deep_merge(cfg, user)
    for item in overrides:
        parts, value = parse_override(item)
        validate_keys(_nest(parts, value), schema)
        if parts == ["model", "name"] and value != cfg["model"].get("name"):
            cfg["model"] = {}
        set_path(cfg, parts, value)
    validate_model_section(cfg.get("model", {}))
    return cfg


def _nest(parts: list[str], value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    set_path(out, parts, value)
    return out


def model_kwargs(cfg: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    section = dict(cfg["model"])
    return section.pop("name"), section


def dump_config(cfg: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(cfg), sort_keys=False)
