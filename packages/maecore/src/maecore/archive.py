"""Archives the suite reads and writes: sample shards for streaming large corpora, and a guarded
extraction for archives from elsewhere (prepared shards, downloaded datasets).

A shard is an uncompressed tar of ``NNNNNNNNN.npz`` members, one sample each (a dict of arrays,
loaded with ``allow_pickle=False``), beside a ``shards.json`` index with the sample count of every
shard. :class:`ShardDataset` reads samples by index straight from the tar files, nothing extracted.

Every member name is checked before anything is read or written: an absolute path, a ``..``
component, a link, a device or any other special file is refused with a :class:`DataError`
naming the archive and the member, and nothing of that archive is extracted.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import IO

import numpy as np
from torch.utils.data import Dataset

from maecore.atomic import atomic_path, atomic_write_text
from maecore.errors import DataError

INDEX = "shards.json"


def check_member_name(name: str, archive: str | os.PathLike[str]) -> PurePosixPath:
    """``name`` as a relative path that stays inside the extraction folder, else DataError."""
    posix = PurePosixPath(name.replace("\\", "/"))
    if not name or posix.is_absolute() or (posix.parts and posix.parts[0].endswith(":")) or name.startswith("/"):
        raise DataError(archive, "member names relative to the archive root", f"absolute member {name!r}")
    if ".." in posix.parts:
        raise DataError(archive, "member names without '..' components", f"member {name!r}")
    return posix


def _tar_members(tf: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    members = tf.getmembers()
    for m in members:
        check_member_name(m.name, archive)
        if not (m.isfile() or m.isdir()):
            kind = "a symlink" if m.issym() else "a hard link" if m.islnk() else "a device or special file"
            raise DataError(archive, "only regular files and folders", f"member {m.name!r} is {kind}")
    return members


def safe_extract(archive: str | os.PathLike[str], dest: str | os.PathLike[str]) -> list[Path]:
    """Extract a tar (any compression) or zip archive into ``dest`` after checking every member.

    Returns the extracted files. Nothing is written when any member is refused.
    """
    src, out = Path(archive), Path(dest)
    if not src.is_file():
        raise DataError(src, "an archive file", "nothing at that path")
    out.mkdir(parents=True, exist_ok=True)
    root = out.resolve()
    if zipfile.is_zipfile(src):
        with zipfile.ZipFile(src) as zf:
            members = []
            for info in zf.infolist():
                mode = (info.external_attr >> 16) & 0o170000
                if mode not in (0, 0o100000, 0o040000):  # symlinks and specials carry their type here
                    raise DataError(src, "only regular files and folders", f"member {info.filename!r} is a link")
                members.append((info.filename, info.is_dir(), lambda info=info: zf.open(info)))
            return _extract_checked(members, src, root)
    try:
        tf = tarfile.open(src)  # noqa: SIM115 (closed by the with block below)
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DataError(src, "a tar or zip archive", f"{type(err).__name__}: {err}") from err
    with tf:
        try:
            infos = _tar_members(tf, src)
        except (tarfile.TarError, EOFError, OSError) as err:
            raise DataError(src, "a complete tar archive", f"{type(err).__name__}: {err}") from err
        return _extract_checked([(m.name, m.isdir(), lambda m=m: tf.extractfile(m)) for m in infos], src, root)


def _extract_checked(members: list[tuple[str, bool, Callable[[], IO[bytes] | None]]], src: Path,
                     root: Path) -> list[Path]:
    """Check every member's target first (inside ``root``), then write them (atomically)."""
    targets = []
    for name, _, _ in members:
        target = (root / check_member_name(name, src)).resolve()
        if not target.is_relative_to(root):  # e.g. through a symlinked folder already in dest
            raise DataError(src, f"members inside {root}", f"member {name!r}")
        targets.append(target)
    written: list[Path] = []
    for (name, is_dir, open_member), target in zip(members, targets):
        if is_dir:
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        fh = open_member()
        if fh is None:
            raise DataError(src, "readable file members", f"member {name!r}")
        with fh, atomic_path(target) as tmp:
            tmp.write_bytes(fh.read())
        written.append(target)
    return written


def _npz_bytes(sample: Mapping[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in sample.items()})
    return buf.getvalue()


def write_shards(samples: Iterable[Mapping[str, np.ndarray]], out_dir: str | os.PathLike[str],
                 samples_per_shard: int = 1000, prefix: str = "shard") -> list[Path]:
    """Write ``samples`` (dicts of arrays; object arrays are refused) as ``prefix-NNNNN.tar`` shards
    plus ``shards.json``; each shard appears under its final name only once complete."""
    if samples_per_shard < 1:
        raise ValueError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shards: list[Path] = []
    counts: list[int] = []
    batch: list[bytes] = []

    def flush() -> None:
        path = out / f"{prefix}-{len(shards):05d}.tar"
        start = sum(counts)
        with atomic_path(path) as tmp, tarfile.open(tmp, "w") as tf:
            for i, blob in enumerate(batch):
                info = tarfile.TarInfo(f"{start + i:09d}.npz")
                info.size = len(blob)
                tf.addfile(info, io.BytesIO(blob))
        shards.append(path)
        counts.append(len(batch))
        batch.clear()

    for sample in samples:
        if any(np.asarray(v).dtype == object for v in sample.values()):
            raise ValueError("shard samples hold numeric or string arrays only (no Python objects)")
        batch.append(_npz_bytes(sample))
        if len(batch) == samples_per_shard:
            flush()
    if batch:
        flush()
    atomic_write_text(out / INDEX, json.dumps({"shards": [p.name for p in shards], "counts": counts}, indent=1))
    return shards


class ShardDataset(Dataset):
    """Samples of the shards in ``folder`` (its ``shards.json``), read by index without extracting.

    ``transform`` maps the dict of numpy arrays to what the model takes (default: unchanged).
    """

    def __init__(self, folder: str | os.PathLike[str], transform=None) -> None:
        self.folder = Path(folder)
        index = self.folder / INDEX
        if not index.is_file():
            raise DataError(index, f"a shard index ({INDEX}, written by write_shards)", "no such file")
        try:
            meta = json.loads(index.read_text())
            names, counts = list(meta["shards"]), [int(c) for c in meta["counts"]]
        except (ValueError, KeyError, TypeError) as err:
            raise DataError(index, "a shard index with 'shards' and 'counts'", f"{type(err).__name__}: {err}") from err
        self.transform = transform
        self.members: list[tuple[Path, tarfile.TarInfo]] = []
        for name, count in zip(names, counts):
            path = self.folder / check_member_name(name, index)
            try:
                with tarfile.open(path) as tf:
                    members = [m for m in _tar_members(tf, path) if m.isfile()]
            except (tarfile.TarError, OSError, EOFError) as err:
                raise DataError(path, "a complete tar shard", f"{type(err).__name__}: {err}") from err
            if len(members) != count:
                raise DataError(path, f"{count} samples (as {INDEX} says)", f"{len(members)}")
            self.members += [(path, m) for m in members]
        self._open: dict[Path, tarfile.TarFile] = {}

    def __len__(self) -> int:
        return len(self.members)

    def __getitem__(self, i: int):
        path, member = self.members[i]
        tf = self._open.get(path)
        if tf is None:  # one handle per shard and process (loader workers open their own)
            tf = self._open[path] = tarfile.open(path)  # noqa: SIM115 (kept open across reads)
        fh = tf.extractfile(member)
        try:
            with np.load(io.BytesIO(fh.read()), allow_pickle=False) as z:  # type: ignore[union-attr]
                sample = {k: z[k] for k in z.files}
        except (ValueError, OSError, EOFError) as err:
            raise DataError(path, f"an npz sample in member {member.name}", f"{type(err).__name__}: {err}") from err
        return self.transform(sample) if self.transform else sample

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_open": {}}
