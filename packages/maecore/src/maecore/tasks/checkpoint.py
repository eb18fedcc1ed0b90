"""Atomic, pickle-free checkpoints and resume lookup.

Checkpoints are written to a temporary file beside the target (``.last.ckpt.<hex>.tmp.ckpt``),
fsynced and renamed (:func:`maecore.atomic.atomic_path`), so a run killed during a write keeps its
previous checkpoint; temporaries a killed write left behind are never loaded and are removed on
resume. Checkpoints load with ``torch.load(weights_only=True)``: everything the engine saves is
tensors, numbers, strings, lists and dicts. A file that needs pickle is refused with
:class:`~maecore.errors.UnsafeCheckpointError` unless the caller passes ``allow_unsafe=True``.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only

from maecore.atomic import atomic_path
from maecore.errors import DataError, UnsafeCheckpointError

LAST = "last.ckpt"
CHECKPOINT_DIR = "checkpoints"
_TEMP = re.compile(r"^\..+\.tmp(\..*)?$")  # maecore.atomic's temporaries: .last.ckpt.<hex>.tmp.ckpt


def safe_torch_load(path: str | os.PathLike[str], map_location: Any = "cpu", allow_unsafe: bool = False) -> Any:
    """``torch.load(path, weights_only=True)``.

    A file that needs pickle raises :class:`UnsafeCheckpointError` (nothing in it is executed);
    with ``allow_unsafe=True`` it is loaded with ``weights_only=False`` and a warning. A missing
    or truncated file raises :class:`DataError` naming it.
    """
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
    """Lightning checkpoint IO: atomic writes, ``weights_only`` reads (see :func:`safe_torch_load`)."""

    def __init__(self, allow_unsafe: bool = False) -> None:
        super().__init__()
        self.allow_unsafe = allow_unsafe

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        # ``weights_only`` from Lightning is ignored on purpose: only ``allow_unsafe`` turns pickle on
        return safe_torch_load(path, map_location or "cpu", self.allow_unsafe)


class LastCheckpoint(ModelCheckpoint):
    """``folder/last.ckpt`` every ``every`` optimizer steps and at the end of training.

    A ``ModelCheckpoint`` keeping no top-k files, only ``last.ckpt`` (a full copy, not a link).
    ``saved_step`` is the global step of the newest checkpoint written (None before the first);
    the loggers are flushed with every checkpoint, so ``metrics.csv`` covers at least up to it.
    """

    def __init__(self, folder: str | os.PathLike[str], every: int) -> None:
        super().__init__(dirpath=str(folder), save_top_k=0, save_last=True, every_n_train_steps=every,
                         enable_version_counter=False)
        self.saved_step: int | None = None

    @property
    def path(self) -> Path:
        return Path(self.dirpath or ".") / LAST

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # a run folder may have been moved or copied: the checkpoint's folder is this one
        super().load_state_dict({**state_dict, "dirpath": self.dirpath, "last_model_path": str(self.path)})

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Only right after an optimizer step, and once per step. ModelCheckpoint alone would also
        # save after the first micro-batch of a resumed run (its "last saved step" is not restored),
        # a checkpoint that loses that micro-batch's accumulated gradient.
        if (batch_idx + 1) % trainer.accumulate_grad_batches or self.saved_step == trainer.global_step:
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        self.saved_step = trainer.global_step
        for logger in trainer.loggers:
            logger.save()

    def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        self.saved_step = int(checkpoint.get("global_step", 0))

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if self.saved_step != trainer.global_step:  # the final step, unless just saved by the interval
            self.last_model_path = str(self.path)
            trainer.save_checkpoint(self.path, weights_only=False)  # a full checkpoint (optimizer, loops)


def clean_partial_checkpoints(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove temporary files a killed write left in ``folder``; returns what was removed."""
    d = Path(folder)
    removed = [p for p in d.iterdir() if p.is_file() and _TEMP.match(p.name)] if d.is_dir() else []
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


def find_resume_checkpoint(run_dir: str | os.PathLike[str], resume: str | os.PathLike[str] | None) -> Path | None:
    """Which checkpoint a run starts from.

    ``None`` (or ``""``): a fresh run. ``"auto"``: ``RUN/checkpoints/last.ckpt`` when it exists, else
    a fresh run (said on stdout); leftover temporaries are removed first. A path: that file, or a
    :class:`DataError` naming it.
    """
    if resume is None or resume == "":
        return None
    if resume != "auto":
        path = Path(resume)
        if not path.is_file():
            raise DataError(path, "a checkpoint file to resume from (or resume='auto')", "nothing at that path")
        return path
    folder = Path(run_dir) / CHECKPOINT_DIR
    if rank_zero_only.rank == 0:  # DDP: other ranks start while rank 0 may already be writing
        for p in clean_partial_checkpoints(folder):
            _say(f"removed the partial checkpoint {p} (a write was interrupted)")
    last = folder / LAST
    if last.is_file():
        _say(f"resuming from {last}")
        return last
    _say(f"no checkpoint in {folder}: starting a fresh run")
    return None


@rank_zero_only
def _say(msg: str) -> None:
    print(msg, flush=True)
