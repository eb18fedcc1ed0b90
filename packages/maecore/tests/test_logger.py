"""RUN/metrics.csv: appended across resumes, and never lost when a new metric widens the header."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from maecore.tasks.logger import AppendingCSVLogger


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_new_metric_rewrites_the_header_and_keeps_earlier_rows(tmp_path: Path):
    logger = AppendingCSVLogger(str(tmp_path))
    logger.log_metrics({"train/loss": 1.5}, step=0)
    logger.save()
    logger.log_metrics({"train/loss": 1.25, "val/loss": 2.0}, step=1)
    logger.save()
    rows = _rows(tmp_path / "metrics.csv")
    assert [(r["step"], r["train/loss"], r["val/loss"]) for r in rows] == [("0", "1.5", ""), ("1", "1.25", "2.0")]


def test_failure_while_widening_the_header_leaves_the_file_as_it_was(tmp_path: Path, monkeypatch):
    logger = AppendingCSVLogger(str(tmp_path))
    for step in range(3):
        logger.log_metrics({"train/loss": 1.0 / (step + 1)}, step=step)
    logger.save()
    path = tmp_path / "metrics.csv"
    before = path.read_bytes()

    def killed(self, rows):
        raise KeyboardInterrupt("killed while rewriting metrics.csv")

    logger.log_metrics({"train/loss": 0.2, "train/nonfinite_steps": 1}, step=3)
    monkeypatch.setattr(csv.DictWriter, "writerows", killed)
    with pytest.raises(KeyboardInterrupt, match="killed while rewriting"):
        logger.save()
    assert path.read_bytes() == before  # Lightning's in-place rewrite had truncated it here
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]  # no temporary left behind
