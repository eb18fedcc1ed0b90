"""A run killed with SIGKILL and restarted with resume='auto' ends with bit-identical weights.

The runs (tests/scripts/tiny_pretrain.py) draw random numbers outside the mask generator on
purpose (data augmentation in the dataset, dropout in the model) and accumulate two micro-batches
per step, so these tests cover data position, item seeding, step seeding and masks together.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from maecore.errors import DataError
from maecore.tasks.checkpoint import find_resume_checkpoint

SCRIPT = Path(__file__).parent / "scripts" / "tiny_pretrain.py"
STEPS = 16
COMMON = ("--accumulate", "2")
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def _cmd(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, str(SCRIPT), str(run_dir), str(STEPS), *COMMON, *extra]


def _run(run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    res = subprocess.run(_cmd(run_dir, *extra), capture_output=True, text=True, timeout=240, env=ENV)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def _start(run_dir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(_cmd(run_dir, "--resume", "auto", *extra), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=ENV)


def _wait_for(cond, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not cond():
        time.sleep(0.02)


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it was killed"


def _mtime(p: Path) -> float:
    return p.stat().st_mtime if p.exists() else 0.0


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "rank0.safetensors"))


def _logged_steps(run_dir: Path) -> list[int]:
    with open(run_dir / "metrics.csv", newline="") as fh:
        return [int(float(r["step"])) for r in csv.DictReader(fh) if r.get("train/loss")]


def _assert_identical(run_dir: Path, reference: dict[str, torch.Tensor]) -> None:
    """Same weights as the uninterrupted run, and metrics.csv holds each of its steps once."""
    reference = dict(reference)
    assert _logged_steps(run_dir) == reference.pop("__logged_steps__").tolist()
    resumed = _weights(run_dir)
    assert resumed.keys() == reference.keys()
    for k in reference:
        assert torch.equal(resumed[k], reference[k]), f"{k} differs from the uninterrupted run"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    run = tmp_path_factory.mktemp("uninterrupted")
    _run(run)
    assert json.loads((run / "summary.json").read_text())["steps_this_run"] == STEPS
    steps = _logged_steps(run)
    assert steps and len(steps) == len(set(steps))
    return {**_weights(run), "__logged_steps__": torch.tensor(steps)}


def test_killed_mid_training_then_resumed_matches_uninterrupted_run(tmp_path: Path, reference):
    run = tmp_path / "killed"
    ckpt = run / "checkpoints" / "last.ckpt"
    proc = _start(run, "--slow", "0.1")
    _wait_for(lambda: ckpt.is_file() and torch.load(ckpt, weights_only=True)["global_step"] >= 6, proc)
    time.sleep(0.3)  # a step or two past the checkpoint: those are lost and redone
    _kill(proc)
    killed_at = torch.load(ckpt, weights_only=True)["global_step"]  # loads without pickle
    assert 0 < killed_at < STEPS
    # resume with two loader workers: the batches are a function of (seed, step) only
    res = _run(run, "--resume", "auto", "--workers", "2")
    assert f"resuming from {ckpt}" in res.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == STEPS and summary["steps_this_run"] == STEPS - killed_at
    assert len(json.loads((run / "rank0_indices.json").read_text())) == 2 * (STEPS - killed_at)
    _assert_identical(run, reference)
    assert torch.load(ckpt, weights_only=True)["global_step"] == STEPS


def test_five_kills_some_during_checkpoint_writes(tmp_path: Path, reference):
    """Kill 5 times: 3 times while a checkpoint is being written (its temp file exists, the rename
    has not happened), twice between steps; every restart resumes from the last complete one."""
    run = tmp_path / "faults"
    folder = run / "checkpoints"
    ckpt = folder / "last.ckpt"
    during_write = 0
    for attempt in range(5):
        started = time.time()
        proc = _start(run, "--slow", "0.05", "--slow-ckpt", "0.5")
        if attempt % 2 == 0:
            _wait_for(lambda: folder.is_dir() and any(folder.glob(".last.ckpt.*")), proc)
        else:
            _wait_for(lambda t0=started: _mtime(ckpt) > t0, proc)  # this process wrote a checkpoint
            time.sleep(0.15)
        during_write += folder.is_dir() and any(folder.glob(".last.ckpt.*"))
        _kill(proc)
        if ckpt.is_file():  # whatever is under the final name is complete
            assert torch.load(ckpt, weights_only=True)["global_step"] > 0
    assert during_write >= 3
    res = _run(run, "--resume", "auto")
    assert "removed the partial checkpoint" in res.stdout
    assert json.loads((run / "summary.json").read_text())["steps_this_run"] < STEPS
    _assert_identical(run, reference)
    assert not any(folder.glob(".last.ckpt.*"))


def test_partial_checkpoint_write_is_never_loaded(tmp_path: Path):
    folder = tmp_path / "checkpoints"
    folder.mkdir(parents=True)
    good = folder / "last.ckpt"
    torch.save({"global_step": 4}, good)
    partial = folder / ".last.ckpt.xxxx.tmp.ckpt"  # a temporary of maecore.atomic, cut off by a kill
    partial.write_bytes(b"\x80\x02half-written")
    keep = folder / ".notes"
    keep.write_text("not a temporary")
    assert find_resume_checkpoint(tmp_path, "auto") == good
    assert not partial.exists() and keep.exists()


def test_resume_paths(tmp_path: Path, capsys):
    assert find_resume_checkpoint(tmp_path, None) is None
    assert find_resume_checkpoint(tmp_path, "auto") is None  # nothing yet: fresh start
    assert "starting a fresh run" in capsys.readouterr().out
    with pytest.raises(DataError, match=r"missing.ckpt: expected a checkpoint file to resume from"):
        find_resume_checkpoint(tmp_path, str(tmp_path / "missing.ckpt"))
    explicit = tmp_path / "elsewhere.ckpt"
    torch.save({"global_step": 1}, explicit)
    assert find_resume_checkpoint(tmp_path, explicit) == explicit


def test_rows_logged_after_the_last_checkpoint_are_dropped_on_resume(tmp_path: Path, reference):
    """The CSV logger flushes on its own schedule too: a run killed after a flush but before its
    next checkpoint has rows for steps the resumed run does again. Here such rows are forged
    (loss 999) after an 8-step run; resuming to 16 steps leaves every step once and no forgery."""
    run = tmp_path / "flushed"
    res = subprocess.run([sys.executable, str(SCRIPT), str(run), "8", *COMMON], capture_output=True, text=True,
                         timeout=240, env=ENV)
    assert res.returncode == 0, res.stderr[-3000:]
    with open(run / "metrics.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        fields = list(reader.fieldnames or [])
    with open(run / "metrics.csv", "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        for step in (8, 9, 11):
            writer.writerow({"step": step, "train/loss": 999.0})
    _run(run, "--resume", "auto")
    with open(run / "metrics.csv", newline="") as fh:
        assert not any(r.get("train/loss") == "999.0" for r in csv.DictReader(fh))
    # (the weights differ from the reference: the first part's LR schedule ended at step 8)
    assert _logged_steps(run) == reference["__logged_steps__"].tolist()
