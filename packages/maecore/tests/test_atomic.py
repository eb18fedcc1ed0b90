"""Atomic writes: a failing writer leaves the previous file intact and no temporary behind."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from maecore.atomic import atomic_path, atomic_write, atomic_write_text


class DiskFull(OSError):
    pass


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_success_replaces_content(tmp_path: Path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    assert atomic_write_text(target, "new") == target
    assert target.read_text() == "new"
    assert _files(tmp_path) == ["out.txt"]


def test_atomic_write_passes_a_temporary_path_to_the_writer(tmp_path: Path):
    target = tmp_path / "sub" / "deeper" / "weights.bin"  # missing folders are created
    seen = []

    def write(tmp: Path) -> None:
        seen.append(tmp)
        assert tmp != target and tmp.parent == target.parent and tmp.exists()
        tmp.write_bytes(b"\x00\x01")

    atomic_write(target, write)
    assert target.read_bytes() == b"\x00\x01"
    assert not seen[0].exists()
    assert _files(target.parent) == ["weights.bin"]


@pytest.mark.parametrize(
    ("name", "suffix"),
    [("scan.nii.gz", ".nii.gz"), ("tile.tif", ".tif"), ("model.safetensors", ".safetensors"), ("README", "")],
)
def test_temporary_keeps_the_suffix_and_the_folder(tmp_path: Path, name: str, suffix: str):
    target = tmp_path / name
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(f".{name}.")
        assert tmp.name.endswith(".tmp" + suffix)
        assert not target.exists()  # nothing under the final name until the end
        tmp.write_text("data")
    assert target.read_text() == "data"


@pytest.mark.parametrize("style", ["context", "function"])
def test_failing_writer_keeps_previous_file_and_leaves_no_temporary(tmp_path: Path, style: str):
    target = tmp_path / "model.safetensors"
    atomic_write_text(target, "good")

    def write(tmp: Path) -> None:
        tmp.write_text("half")
        raise DiskFull(errno.ENOSPC, "No space left on device")

    with pytest.raises(DiskFull, match="No space left on device"):
        if style == "context":
            with atomic_path(target) as tmp:
                write(tmp)
        else:
            atomic_write(target, write)
    assert target.read_text() == "good"
    assert _files(tmp_path) == ["model.safetensors"]


def test_failing_first_write_creates_nothing(tmp_path: Path):
    with pytest.raises(RuntimeError, match="boom"), atomic_path(tmp_path / "new.json") as tmp:
        tmp.write_text("{")
        raise RuntimeError("boom")
    assert _files(tmp_path) == []


def test_writer_that_never_writes_gives_an_empty_file(tmp_path: Path):
    atomic_write(tmp_path / "empty.txt", lambda tmp: None)
    assert (tmp_path / "empty.txt").read_bytes() == b""


def test_new_file_gets_the_permissions_of_a_plain_write(tmp_path: Path):
    atomic_write_text(tmp_path / "atomic.txt", "x")
    (tmp_path / "plain.txt").write_text("x")
    mode = stat.S_IMODE((tmp_path / "atomic.txt").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == 0o666 & ~_umask()


def test_replacing_keeps_the_previous_permissions(tmp_path: Path):
    target = tmp_path / "config.json"
    target.write_text("{}")
    target.chmod(0o640)
    atomic_write_text(target, '{"a": 1}')
    assert stat.S_IMODE(target.stat().st_mode) == 0o640 and target.read_text() == '{"a": 1}'


def test_disk_full_during_checkpoint_write_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch):
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
    assert _files(tmp_path) == ["last.ckpt"]
