"""Shards round-trip; archives with escaping, absolute, linked or special members are refused
before anything is extracted."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from maecore.archive import ShardDataset, safe_extract, write_shards
from maecore.errors import DataError
from maecore.sample import read_image_array, sample_path


def _tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tf:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tf.addfile(m)
            else:
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tf.addfile(info, io.BytesIO(m[1]))
    return path


def _link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def test_shards_round_trip_real_chips(tmp_path: Path):
    image = read_image_array(sample_path())["image"]  # the bundled Landsat crop
    chips = [{"x": image[:, i:i + 32, j:j + 32], "row": np.array(i)} for i in (0, 64, 128) for j in (0, 96)]
    shards = write_shards(chips, tmp_path / "shards", samples_per_shard=4)
    assert [p.name for p in shards] == ["shard-00000.tar", "shard-00001.tar"]
    assert json.loads((tmp_path / "shards" / "shards.json").read_text())["counts"] == [4, 2]
    ds = ShardDataset(tmp_path / "shards")
    assert len(ds) == 6
    for i, chip in enumerate(chips):
        np.testing.assert_array_equal(ds[i]["x"], chip["x"])
        assert int(ds[i]["row"]) == int(chip["row"])


def test_shards_refuse_objects_and_report_a_short_shard(tmp_path: Path):
    with pytest.raises(ValueError, match="no Python objects"):
        write_shards([{"x": np.array([{"a": 1}], dtype=object)}], tmp_path / "o")
    write_shards([{"x": np.zeros(3)}] * 3, tmp_path / "s", samples_per_shard=3)
    shard = tmp_path / "s" / "shard-00000.tar"
    _tar(shard, [("000000000.npz", b"x")])
    with pytest.raises(DataError, match=r"shard-00000\.tar: expected 3 samples \(as shards\.json says\), found 1"):
        ShardDataset(tmp_path / "s")
    with pytest.raises(DataError, match=r"shards\.json: expected a shard index"):
        ShardDataset(tmp_path / "nothing")


@pytest.mark.parametrize(("member", "found"), [
    (("../evil.txt", b"x"), r"member '\.\./evil\.txt'"),
    (("a/../../evil.txt", b"x"), r"member 'a/\.\./\.\./evil\.txt'"),
    (("/tmp/evil.txt", b"x"), r"absolute member '/tmp/evil\.txt'"),
    (_link("passwd", "/etc/passwd", tarfile.SYMTYPE), r"member 'passwd' is a symlink"),
    (_link("hard", "/etc/passwd", tarfile.LNKTYPE), r"member 'hard' is a hard link"),
    (_link("dev", "", tarfile.CHRTYPE), r"member 'dev' is a device or special file"),
])
def test_crafted_tar_is_refused_and_nothing_is_extracted(member, found, tmp_path: Path):
    archive = _tar(tmp_path / "bad.tar", [("fine.txt", b"ok"), member])
    out = tmp_path / "out"
    with pytest.raises(DataError, match=rf"bad\.tar: expected .*found {found}"):
        safe_extract(archive, out)
    assert not (tmp_path / "evil.txt").exists() and not any(out.rglob("*"))


def test_crafted_zip_is_refused(tmp_path: Path):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("fine.txt", "ok")
        zf.writestr("../evil.txt", "x")
    with pytest.raises(DataError, match=r"bad\.zip: expected member names without '\.\.' components"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()
    link = tmp_path / "link.zip"
    with zipfile.ZipFile(link, "w") as zf:
        info = zipfile.ZipInfo("l")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(DataError, match=r"link\.zip: expected only regular files and folders, found member 'l' is a link"):
        safe_extract(link, tmp_path / "out2")


def test_good_archives_extract(tmp_path: Path):
    tar = _tar(tmp_path / "good.tar", [("d/a.txt", b"a"), ("b.txt", b"b")])
    assert sorted(p.name for p in safe_extract(tar, tmp_path / "t")) == ["a.txt", "b.txt"]
    assert (tmp_path / "t" / "d" / "a.txt").read_bytes() == b"a"
    zpath = tmp_path / "good.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("d/c.txt", "c")
    assert [p.name for p in safe_extract(zpath, tmp_path / "z")] == ["c.txt"]
    (tmp_path / "junk.tar").write_bytes(b"not an archive at all")
    with pytest.raises(DataError, match=r"junk\.tar: expected a tar or zip archive"):
        safe_extract(tmp_path / "junk.tar", tmp_path / "j")
