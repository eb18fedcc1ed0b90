"""``RUN/metrics.csv`` that survives a resume: Lightning's CSV logger deletes an existing file.

A run killed after its last checkpoint has logged rows for steps that the resumed run does again;
:class:`PruneMetricsOnResume` drops those rows when training restarts, so every step appears once."""

from __future__ import annotations

import csv
import os

import lightning as L
from lightning.fabric.loggers.csv_logs import _ExperimentWriter
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger

from maecore.atomic import atomic_path


class _AppendingWriter(_ExperimentWriter):
    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir)
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as fh:
                self.metrics_keys = list(csv.DictReader(fh).fieldnames or [])

    def _check_log_dir_exists(self) -> None:  # keep the previous rows
        pass

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        """Lightning rewrites the whole file in place when a new metric first appears (``val/loss``,
        ``train/nonfinite_steps``): a run killed then lost every earlier row. Written to a temporary
        file and renamed instead."""
        with open(self.metrics_file_path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        with atomic_path(self.metrics_file_path) as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)


class AppendingCSVLogger(CSVLogger):
    """CSV metrics in ``save_dir/metrics.csv``, appended to across resumed runs."""

    def __init__(self, save_dir: str) -> None:
        super().__init__(save_dir=save_dir, name="", version="")

    @property
    def experiment(self) -> _ExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment

    def drop_rows_from(self, step: int) -> int:
        """Remove the rows logged at ``step`` or later (atomically); returns how many went."""
        path = os.path.join(self.log_dir, "metrics.csv")
        if not os.path.isfile(path):
            return 0
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            fields, rows = list(reader.fieldnames or []), list(reader)
        keep = [r for r in rows if not r.get("step") or int(float(r["step"])) < step]
        if len(keep) == len(rows):
            return 0
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            writer.writerows(keep)
        return len(rows) - len(keep)


class PruneMetricsOnResume(Callback):
    """On a resumed run, drop ``metrics.csv`` rows of the steps after the checkpoint (rank 0)."""

    def __init__(self, logger: AppendingCSVLogger) -> None:
        self.logger = logger

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step > 0 and trainer.is_global_zero:
            self.logger.drop_rows_from(trainer.global_step)
