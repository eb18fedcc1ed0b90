"""``RUN/metrics.csv`` that survives a resume: Lightning's CSV logger deletes an existing file."""

from __future__ import annotations

import csv
import os

from lightning.fabric.loggers.csv_logs import _ExperimentWriter
from lightning.pytorch.loggers import CSVLogger


class _AppendingWriter(_ExperimentWriter):
    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir)
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as fh:
                self.metrics_keys = list(csv.DictReader(fh).fieldnames or [])

    def _check_log_dir_exists(self) -> None:  # keep the previous rows
        pass


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
