"""Turning a ``--data`` argument into the list of files a domain reads."""

from __future__ import annotations

import csv
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


def labels_from_csv(paths: Iterable[str | os.PathLike[str]], labels_csv: str | os.PathLike[str],
                    what: str = "input file") -> list[str]:
    """A label per path from a CSV with columns ``file,label``: ``file`` relative to the CSV's
    folder or absolute, else matched by bare file name (when that name is unique in the CSV).
    A missing CSV, missing columns or a path without a label is a DataError naming the CSV."""
    csv_path = Path(labels_csv)
    if not csv_path.is_file():
        raise DataError(csv_path, "a labels CSV with columns file,label", "nothing at that path")
    by_path: dict[str, str] = {}
    by_name: dict[str, list[str]] = {}
    with open(csv_path, newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"file", "label"} <= set(reader.fieldnames):
            raise DataError(csv_path, "a CSV with columns 'file' and 'label'", f"columns {reader.fieldnames}")
        for row in reader:
            by_path[str((csv_path.parent / row["file"]).resolve())] = row["label"]
            by_name.setdefault(Path(row["file"]).name, []).append(row["label"])
    labels, missing = [], []
    for p in map(Path, paths):
        label = by_path.get(str(p.resolve()))
        if label is None and len(by_name.get(p.name, [])) == 1:
            label = by_name[p.name][0]
        if label is None:
            missing.append(str(p))
        labels.append(label)
    if missing:
        raise DataError(csv_path, f"a label for every {what}", f"no label for {missing[:3]}"
                        + (f" and {len(missing) - 3} more" if len(missing) > 3 else ""))
    return labels  # type: ignore[return-value]
