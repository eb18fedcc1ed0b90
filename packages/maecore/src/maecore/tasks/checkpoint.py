"""Atomic, pickle-free checkpoints and resume lookup.

Checkpoints are written to a temporary file beside the target, fsynced and renamed, so a run
killed during a write keeps its previous checkpoint. They load with ``torch.load(weights_only=True)``;
a file that needs pickle is refused unless the caller allows unsafe loading explicitly.
"""

from __future__ import annotations

import logging
import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback

from maecore.atomic import atomic_path
from maecore.errors import DataError, UnsafeCheckpointError

log = logging.getLogger(__name__)
LAST = "last.ckpt"


def safe_torch_load(path: str | os.PathLike[str], map_location: Any = "cpu", allow_unsafe: bool = False) -> Any:
    """``torch.load`` with ``weights_only=True``; pickle-only files raise :class:`UnsafeCheckpointError`."""
    p = Path(path)
    if not p.is_file():
        raise DataError(p, "a checkpoint file", "nothing at that path")
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if not allow_unsafe:
            raise UnsafeCheckpointError(
                f"{p}: this checkpoint needs pickle to load, and pickle can run arbitrary code; refused. "
                f"If you trust its source, load it with allow_unsafe=True. ({str(err).splitlines()[0]})"
            ) from err
        warnings.warn(f"loading {p} with pickle (allow_unsafe=True): only do this for trusted files", stacklevel=2)
        return torch.load(p, map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, OSError) as err:
        raise DataError(p, "a complete PyTorch checkpoint", f"{type(err).__name__}: {err}") from err


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO: atomic writes, ``weights_only`` reads."""

    def __init__(self, allow_unsafe: bool = False) -> None:
        super().__init__()
        self.allow_unsafe = allow_unsafe

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return safe_torch_load(path, map_location or "cpu", self.allow_unsafe)


class PeriodicCheckpoint(Callback):
    """Save ``RUN/checkpoints/last.ckpt`` every ``every`` optimizer steps and at the end."""

    def __init__(self, folder: str | os.PathLike[str], every: int) -> None:
        self.folder = Path(folder)
        self.every = every
        self._saved_at = -1

    def _save(self, trainer: Any) -> None:
        if trainer.global_step == self._saved_at:
            return
        trainer.save_checkpoint(self.folder / LAST, weights_only=False)
        self._saved_at = trainer.global_step

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step > 0 and trainer.global_step % self.every == 0:
            self._save(trainer)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._save(trainer)


def clean_partial_checkpoints(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove temporary files a killed write left behind; they are never loaded."""
    removed = []
    for p in Path(folder).glob(".*.tmp*"):
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def find_resume_checkpoint(run_dir: str | os.PathLike[str], resume: str | None) -> Path | None:
    """``None`` -> fresh run; ``"auto"`` -> ``RUN/checkpoints/last.ckpt`` if present; else a path."""
    if resume is None or resume == "":
        return None
    folder = Path(run_dir) / "checkpoints"
    if resume == "auto":
        if folder.is_dir():
            for p in clean_partial_checkpoints(folder):
                log.info("removed partial checkpoint %s", p)
        last = folder / LAST
        if last.is_file():
            return last
        log.info("no checkpoint in %s: starting a fresh run", folder)
        return None
    path = Path(resume)
    if not path.is_file():
        raise DataError(path, "a checkpoint file to resume from (or --resume auto)", "nothing at that path")
    return path
