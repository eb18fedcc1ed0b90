"""Turning a ``--data`` argument into the list of files a domain reads."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path

from maecore.errors import DataError


def expand_paths(data: str | os.PathLike[str] | None, extensions: Iterable[str], default: list[Path],
                 kind: str) -> list[Path]:
    """Files of ``data``: a folder (searched recursively for ``extensions``, case-insensitive), a
    glob pattern, or one path (kept as given, so a reader can name it when it is missing or
    wrong); ``None`` gives ``default`` (the bundled sample). No file at all is a DataError saying
    what ``kind`` of files was looked for."""
    if data is None:
        return list(default)
    exts = tuple(e.lower() for e in extensions)
    text = str(data)
    p = Path(text)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.name.lower().endswith(exts))
    elif any(c in text for c in "*?["):
        files = sorted(Path(f) for f in glob.glob(text, recursive=True) if Path(f).is_file())
    else:
        files = [p]
    if not files:
        raise DataError(text, f"{kind} ({', '.join(exts)})", "no files")
    return files
