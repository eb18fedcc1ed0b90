"""A run killed with SIGKILL and restarted with resume='auto' ends with bit-identical weights."""

from __future__ import annotations

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
STEPS = 24


def _run(run_dir: Path, *extra: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(run_dir), str(STEPS), *extra],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _kill_after_checkpoint(run_dir: Path, min_step_file_mtime: float = 0.0) -> None:
    """Start a slowed-down run and SIGKILL it once its first checkpoints exist."""
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(run_dir), str(STEPS), "--resume", "auto", "--slow", "0.15"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if ckpt.is_file() and ckpt.stat().st_mtime > min_step_file_mtime:
            time.sleep(0.4)  # a few more steps past the checkpoint, then kill mid-training
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "rank0.safetensors"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    run = tmp_path_factory.mktemp("uninterrupted")
    res = _run(run)
    assert res.returncode == 0, res.stderr[-2000:]
    return _weights(run)


def test_killed_twice_then_resumed_matches_uninterrupted_run(tmp_path: Path, reference):
    run = tmp_path / "killed"
    kills = 0
    for _ in range(2):
        before = (run / "checkpoints" / "last.ckpt").stat().st_mtime if (run / "checkpoints" / "last.ckpt").exists() else 0
        _kill_after_checkpoint(run, before)
        kills += 1
        assert (run / "checkpoints" / "last.ckpt").is_file()
        assert not (run / "rank0.safetensors").exists(), "the run finished before it was killed"
    res = _run(run, "--resume", "auto")
    assert res.returncode == 0, res.stderr[-2000:]
    assert kills == 2
    resumed = _weights(run)
    assert resumed.keys() == reference.keys()
    for k in reference:
        assert torch.equal(resumed[k], reference[k]), f"{k} differs after resume"
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == STEPS


def test_partial_checkpoint_write_is_never_loaded(tmp_path: Path):
    folder = tmp_path / "checkpoints"
    folder.mkdir(parents=True)
    good = folder / "last.ckpt"
    torch.save({"global_step": 4}, good)
    partial = folder / ".last.ckpt.abc123.tmp.ckpt"
    partial.write_bytes(b"\x80\x02half-written")
    assert find_resume_checkpoint(tmp_path, "auto") == good
    assert not partial.exists()


def test_resume_paths(tmp_path: Path):
    assert find_resume_checkpoint(tmp_path, None) is None
    assert find_resume_checkpoint(tmp_path, "auto") is None  # nothing yet: fresh start
    with pytest.raises(DataError, match=r"missing.ckpt: expected a checkpoint file to resume from"):
        find_resume_checkpoint(tmp_path, str(tmp_path / "missing.ckpt"))


def test_five_kills_some_during_checkpoint_writes(tmp_path: Path, reference):
    """Kill 5 times: 3 times while a checkpoint is being written (its temp file exists, the rename
    has not happened), twice between steps; every restart resumes from the last complete one."""
    run = tmp_path / "faults"
    ckpt_dir = run / "checkpoints"
    during_write = 0
    for attempt in range(5):
        proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), str(run), str(STEPS), "--resume", "auto", "--slow", "0.1",
             "--slow-ckpt", "0.6"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 120
        want_write = attempt % 2 == 0
        while time.time() < deadline and proc.poll() is None:
            temps = list(ckpt_dir.glob(".last.ckpt.*")) if ckpt_dir.is_dir() else []
            if want_write and temps:
                break  # a checkpoint is being written right now
            if not want_write and (ckpt_dir / "last.ckpt").is_file() and time.time() > deadline - 118:
                break
            time.sleep(0.02)
        killed_during_write = bool(list(ckpt_dir.glob(".last.ckpt.*"))) if ckpt_dir.is_dir() else False
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL, "the run ended before it was killed"
        during_write += killed_during_write
        if (ckpt_dir / "last.ckpt").is_file():  # whatever is under the final name is complete
            assert torch.load(ckpt_dir / "last.ckpt", weights_only=True)["global_step"] > 0
    assert during_write >= 3
    res = _run(run, "--resume", "auto")
    assert res.returncode == 0, res.stderr[-2000:]
    resumed = _weights(run)
    for k in reference:
        assert torch.equal(resumed[k], reference[k]), f"{k} differs after 5 kills"
