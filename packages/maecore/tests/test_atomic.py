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
