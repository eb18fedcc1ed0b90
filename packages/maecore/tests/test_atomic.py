"""Atomic writes: a failing writer leaves the previous file intact and no temporary behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from maecore.atomic import atomic_path, atomic_write_text


def test_success_replaces_content_and_keeps_suffix(tmp_path: Path):
    target = tmp_path / "out.nii.gz"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp.name.endswith(".nii.gz") and tmp.parent == tmp_path
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nii.gz"]


def test_failing_writer_keeps_previous_file(tmp_path: Path):
    target = tmp_path / "model.safetensors"
    atomic_write_text(target, "good")

    class DiskFull(OSError):
        pass

    with pytest.raises(DiskFull), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise DiskFull(28, "No space left on device")
    assert target.read_text() == "good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_disk_full_during_checkpoint_write_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch):
    import errno

    import torch

    from maecore.tasks.checkpoint import AtomicCheckpointIO, safe_torch_load

    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 5}, target)
    real_save = torch.save

    def full_disk(obj, f, *a, **k):
        real_save({"partial": torch.zeros(10)}, f)  # some bytes reach the temp file, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left on device"):
        io.save_checkpoint({"global_step": 10}, target)
    assert safe_torch_load(target)["global_step"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
