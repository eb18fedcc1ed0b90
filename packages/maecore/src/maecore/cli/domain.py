"""What a domain package provides to the shared CLI (:func:`maecore.cli.app.build_cli`).

A domain subclasses :class:`Domain` and overrides the hooks it supports; the CLI verbs are thin
wrappers that load the config, build the model and call these hooks. Hooks a domain does not
implement answer with a clear "not supported by <domain>" error.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import Dataset


@dataclass
class Problem:
    """One bad input found by ``check``: the file and why it is bad."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class LabelledData:
    """What ``finetune`` and ``probe`` need: datasets whose samples carry ``label``."""

    train: Dataset
    val: Dataset | None
    task: str  # classification | multilabel | regression | segmentation
    n_classes: int
    class_names: list[str] | None = None
    groups: list[Any] | None = None  # for leave-one-group-out probes (object, subject, sequence)


class Domain:
    #: CLI / package name, e.g. "geomae"
    name: str = "maecore"
    #: the importable package whose ``configs/`` folder holds the shipped YAML files
    package: str = "maecore"
    description: str = ""

    def add_arguments(self, verb: str, parser: argparse.ArgumentParser) -> None:
        """Add domain flags to a verb's parser (e.g. ``--have/--want`` for reconstruct)."""

    def resolve_args(self, verb: str, args: argparse.Namespace) -> None:
        """Adjust parsed arguments before the verb runs (e.g. ``--kind grid`` picks a config)."""

    # ---------------------------------------------------------------- data
    def pretrain_dataset(self, cfg: dict[str, Any], data: str | None, skip_bad: bool) -> Dataset:
        """Dataset of sample dicts for pretraining; ``data=None`` means the bundled sample.

        Must raise :class:`maecore.errors.DataError` naming every bad file unless ``skip_bad``,
        and then report what it skipped.
        """
        raise self.unsupported("pretrain")

    def model_meta(self, cfg: dict[str, Any], dataset: Dataset) -> dict[str, Any]:
        """Metadata stored in the exported config.json (normalisation, rates, names)."""
        return {}

    def labelled_data(self, cfg: dict[str, Any], args: argparse.Namespace) -> LabelledData:
        raise self.unsupported("finetune/probe")

    # ---------------------------------------------------------------- outputs
    def figure(self, model: nn.Module, dataset: Dataset, path: Path) -> Path | None:
        """Write the reconstruction figure of a trained model; return its path."""
        return None

    def embed(self, model: nn.Module, args: argparse.Namespace) -> dict[str, Any]:
        raise self.unsupported("embed")

    def reconstruct(self, model: nn.Module, args: argparse.Namespace) -> dict[str, Any]:
        raise self.unsupported("reconstruct")

    def prepare(self, cfg: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
        raise self.unsupported("prepare")

    def check(self, paths: list[str], cfg: dict[str, Any]) -> tuple[int, list[Problem]]:
        """Validate inputs without training: ``(n_checked, problems)``."""
        raise self.unsupported("check")

    def info(self) -> dict[str, Any]:
        return {}

    def unsupported(self, verb: str) -> NotImplementedError:
        return NotImplementedError(f"`{self.name} {verb}` is not supported by the {self.name} domain yet")
