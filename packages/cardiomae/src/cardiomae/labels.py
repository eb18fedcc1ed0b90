"""Targets for fine-tuning and probes: heart rate (neurokit2), beat types and beat-label sets from
WFDB annotation files, or a CSV of labels per record.

Beat symbols are grouped into the AAMI EC57 classes (N: normal and bundle-branch, S:
supraventricular ectopic, V: ventricular ectopic, F: fusion, Q: paced / unclassifiable); symbols
that are not beats (rhythm changes ``+``, noise ``~``, ...) are ignored.
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from cardiomae.data import Windows
from cardiomae.io import read_annotations, record_stem
from cardiomae.leads import lead_type
from cardiomae.preprocess import Prepared, fill_gaps
from maecore.errors import DataError

AAMI = {"N": "N", "L": "N", "R": "N", "e": "N", "j": "N", "A": "S", "a": "S", "J": "S", "S": "S",
        "V": "V", "E": "V", "F": "F", "/": "Q", "f": "Q", "Q": "Q"}


def heart_rate(raw: np.ndarray, leads: list[str], fs: float) -> float | None:
    """Heart rate (bpm) of a window ``raw [G, W]`` from neurokit2 R peaks on its best ECG lead
    (the one with most measured samples, II first on ties); None with fewer than 3 peaks."""
    import neurokit2 as nk

    order = sorted((g for g, lead in enumerate(leads) if lead_type(lead) == "ecg"),
                   key=lambda g: (-np.isfinite(raw[g]).sum(), leads[g] != "II"))
    if not order or np.isfinite(raw[order[0]]).mean() < 0.8:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            _, info = nk.ecg_peaks(fill_gaps(raw[order[0]].astype(np.float64)), sampling_rate=int(round(fs)))
        except Exception:
            return None
    peaks = np.asarray(info["ECG_R_Peaks"])
    if len(peaks) < 3:
        return None
    return float(60.0 * fs / np.median(np.diff(peaks)))


def hr_targets(ds: Windows) -> tuple[list[int], list[float]]:
    """``(window indices, heart rates)`` for the windows of ``ds`` where a rate can be measured."""
    idx, values = [], []
    for k, (i, s) in enumerate(ds.items):
        hr = heart_rate(ds.raw(i, s), ds.cfg.leads, ds.cfg.fs)
        if hr is not None:
            idx.append(k)
            values.append(hr)
    if len(idx) < 2:
        raise DataError(None, "windows with a measurable heart rate (>= 3 R peaks in an ECG lead)", f"{len(idx)}")
    return idx, values


def annotated_beats(records: list[Prepared], extension: str = "atr") -> list[tuple[int, int, str]]:
    """``(record index, beat sample at the model rate, AAMI class)`` of every annotated beat.

    Records without an annotation file are skipped; none at all is an error.
    """
    beats, missing = [], []
    for i, r in enumerate(records):
        stem = record_stem(r.path)
        if not stem.with_suffix(f".{extension}").is_file():
            missing.append(stem.name)
            continue
        samples, symbols, fs = read_annotations(stem, extension)
        for s, sym in zip(samples, symbols):
            if sym in AAMI:
                beats.append((i, int(round(s * r.fs / fs)), AAMI[sym]))
    if not beats:
        raise DataError(None, f"beat annotations (.{extension} files) next to the records", f"none ({missing})")
    return beats


def window_beat_sets(ds: Windows, beats: list[tuple[int, int, str]], classes: list[str]) -> np.ndarray:
    """Multi-hot ``[len(ds), len(classes)]``: which beat classes occur in each window."""
    out = np.zeros((len(ds), len(classes)), dtype=np.float32)
    by_rec: dict[int, list[tuple[int, str]]] = {}
    for i, s, c in beats:
        by_rec.setdefault(i, []).append((s, c))
    for k, (i, start) in enumerate(ds.items):
        for s, c in by_rec.get(i, []):
            if start <= s < start + ds.window and c in classes:
                out[k, classes.index(c)] = 1.0
    return out


def read_label_csv(path: str | Path) -> tuple[list[str], list[float | None], list[str], list[list[str]]]:
    """CSV with a ``record`` column (file stem), an optional ``start_s`` column and label columns.

    Returns ``(record stems, start_s or None per row, label column names, label values per row)``.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(p, "a label CSV with a 'record' column", "no such file")
    with open(p, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "record" not in rows[0]:
        raise DataError(p, "a label CSV with a 'record' column", f"columns {list(rows[0]) if rows else []}")
    cols = [c for c in rows[0] if c not in ("record", "start_s")]
    if not cols:
        raise DataError(p, "at least one label column besides 'record' and 'start_s'", "none")
    stems = [Path(r["record"]).stem if Path(r["record"]).suffix in (".hea", ".dat") else Path(r["record"]).name
             for r in rows]
    starts = [float(r["start_s"]) if r.get("start_s") not in (None, "") else None for r in rows]
    return stems, starts, cols, [[r[c] for c in cols] for r in rows]


def csv_targets(ds: Windows, path: str | Path, task: str | None) -> tuple[list[int], list[Any], str, list[str]]:
    """Window labels from a CSV (see :func:`read_label_csv`). A row without ``start_s`` labels every
    window of its record; with it, the window starting there. Returns ``(window indices, labels,
    task, class or target names)``; ``task`` is inferred when None (several columns: multilabel;
    one numeric column with more than 20 values: regression; else classification)."""
    stems, starts, cols, values = read_label_csv(path)
    if task is None:
        numeric = all(_number(v[0]) for v in values)
        task = "multilabel" if len(cols) > 1 else \
            "regression" if numeric and len({v[0] for v in values}) > 20 else "classification"
    classes = sorted({v[0] for v in values}) if task == "classification" else cols
    table: dict[tuple[str, float | None], Any] = {}
    for stem, start, v in zip(stems, starts, values):
        start = None if start is None else round(start, 3)
        if task == "classification":
            table[(stem, start)] = classes.index(v[0])
        else:
            table[(stem, start)] = np.array([float(x) for x in v], dtype=np.float32)
    idx, labels = [], []
    for k, (i, s) in enumerate(ds.items):
        stem = record_stem(ds.records[i].path).name
        key = (stem, round(s / ds.cfg.fs, 3))
        hit = table.get(key, table.get((stem, None)))
        if hit is not None:
            idx.append(k)
            labels.append(hit)
    if not idx:
        raise DataError(path, "label rows matching the records' names", f"none of {sorted(set(stems))[:5]}")
    return idx, labels, task, classes


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
