"""Readers and writers: WFDB records (single/multi-segment, ``.dat``/``.mat``), NumPy and CSV arrays.

Every reader returns a :class:`Recording`: one physical signal per channel at its own rate (WFDB
multi-frequency records keep their extra samples per frame), names as in the file plus canonical
lead names, units with voltages in mV, NaN where a sample was not measured. Bad files raise
:class:`maecore.errors.DataError` naming the file, what was expected and what was found.
"""

from __future__ import annotations

import csv
import glob
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cardiomae.leads import canonical_lead, to_mv_factor
from maecore.errors import DataError

if TYPE_CHECKING:
    import wfdb  # loaded by the functions that read or write records (with pandas and scipy, ~0.5 s)

ARRAY_SUFFIXES = (".npz", ".npy", ".csv")
#: bits per sample of each WFDB storage format (310/311 pack three samples in four bytes)
FORMAT_BITS = {"8": 8, "16": 16, "24": 24, "32": 32, "61": 16, "80": 8, "160": 16, "212": 12,
               "310": 32 / 3, "311": 32 / 3}


@dataclass
class Recording:
    """One recording. ``signals[c]`` is float64 ``[n_c]`` at ``fs[c]`` Hz (NaN = not measured)."""

    path: str
    signals: list[np.ndarray]
    fs: list[float]
    names: list[str]
    units: list[str]
    comments: list[str] = field(default_factory=list)
    cleaned: bool = False  # already cleaned at the model rate (``cardiomae prepare`` output)

    def __post_init__(self) -> None:
        self.leads = [canonical_lead(n) for n in self.names]

    @property
    def record_fs(self) -> float:
        return float(min(self.fs))

    @property
    def samps_per_frame(self) -> list[int]:
        return [max(1, int(round(f / self.record_fs))) for f in self.fs]

    @property
    def duration_s(self) -> float:
        return max(len(s) / f for s, f in zip(self.signals, self.fs))

    def index(self, lead: str) -> int:
        """Channel of a canonical or file lead name; KeyError listing the leads otherwise."""
        key = canonical_lead(lead)
        for i, (c, n) in enumerate(zip(self.leads, self.names)):
            if key == c or lead == n:
                return i
        raise KeyError(f"{self.path}: no lead {lead!r}; leads here: {', '.join(self.leads)}")


# ---------------------------------------------------------------------- locating records
def record_stem(path: str | os.PathLike[str]) -> Path:
    """``dir/100``, ``dir/100.hea`` or ``dir/100.dat`` -> ``dir/100`` (arrays keep their suffix)."""
    p = Path(path)
    if p.suffix in ARRAY_SUFFIXES:
        return p
    if p.suffix in (".hea", ".dat", ".mat", ".atr", ".xyz"):
        return p.with_suffix("")
    return p


def _segment_names(header: Path) -> list[str]:
    import wfdb

    try:
        h = wfdb.rdheader(str(header.with_suffix("")))
    except Exception:  # a broken header is reported when the record itself is read
        return []
    return list(getattr(h, "seg_name", None) or [])


def expand(data: str | os.PathLike[str] | None, default: Path | None = None) -> list[Path]:
    """Records of a folder, a glob, a comma-separated list or one path.

    Segment headers of a multi-segment record in the same folder are not listed on their own.
    """
    if data is None:
        if default is None:
            raise ValueError("no data given")
        data = default
    text = str(data)
    if "," in text and not Path(text).exists():
        return [p for part in text.split(",") if part.strip() for p in expand(part.strip())]
    p = Path(text)
    if p.is_dir():
        headers = sorted(p.glob("*.hea"))
        segments = {s for h in headers for s in _segment_names(h)}
        out = [h.with_suffix("") for h in headers if h.stem not in segments]
        out += sorted(f for f in p.iterdir() if f.suffix in ARRAY_SUFFIXES)
    elif any(ch in text for ch in "*?["):
        out = sorted({record_stem(f) for f in glob.glob(text)})
    else:
        out = [record_stem(p)]
    if not out:
        raise DataError(text, "WFDB records (.hea) or arrays (.npz, .npy, .csv)", "none")
    return out


# ---------------------------------------------------------------------- WFDB checks and reading
def _expected_bytes(h: wfdb.Record) -> dict[str, int]:
    """Bytes each signal file of a single-segment header needs (None entries: cannot tell)."""
    need: dict[str, float] = {}
    offset: dict[str, int] = {}
    for f, fmt, spf, off in zip(h.file_name, h.fmt, h.samps_per_frame or [1] * h.n_sig,
                                h.byte_offset or [None] * h.n_sig):
        bits = FORMAT_BITS.get(str(fmt))
        if bits is None:  # FLAC and other compressed formats: size is not a function of length
            need[f] = float("nan")
            continue
        need[f] = need.get(f, 0.0) + bits * int(spf or 1)
        offset.setdefault(f, int(off or 0))
    return {f: (-1 if math.isnan(b) else int(math.ceil(b * h.sig_len / 8)) + offset.get(f, 0)) for f, b in need.items()}


def _check_header_fields(h: wfdb.Record, hea: Path) -> None:
    """The fields a single-segment header must carry for its signals to be read at all."""
    n = int(h.n_sig)
    per_signal = {"file_name": h.file_name, "fmt": h.fmt, "sig_name": h.sig_name}
    for field_name, values in per_signal.items():
        if values is None or len(values) != n:
            found = "none" if values is None else f"{len(values)}"
            raise DataError(hea, f"{n} signal lines (the record line says n_sig={n}) with a {field_name}",
                            f"{found}: a truncated or damaged header")
    if h.fs is None or not np.isfinite(float(h.fs)) or float(h.fs) <= 0:
        raise DataError(hea, "a positive sampling frequency on the record line", f"{h.fs!r}")
    if h.sig_len is None or int(h.sig_len) < 0:
        raise DataError(hea, "a signal length on the record line", f"{h.sig_len!r}")
    bad = [str(f) for f in h.fmt if str(f) not in FORMAT_BITS and str(f) not in ("508", "516", "524")]
    if bad:
        raise DataError(hea, f"WFDB signal formats ({', '.join(sorted(FORMAT_BITS))}, FLAC 508/516/524)",
                        f"format(s) {', '.join(bad)}")


def check_wfdb(stem: Path) -> None:
    """Raise DataError if the header or a signal file is missing, or a signal file is short."""
    hea = stem.with_suffix(".hea")
    if not hea.is_file():
        raise DataError(hea, "a WFDB header file", "no such file")
    import wfdb

    try:
        h = wfdb.rdheader(str(stem))
    except Exception as err:
        raise DataError(hea, "a valid WFDB header", f"{type(err).__name__}: {err}") from err
    if getattr(h, "seg_name", None):
        for seg in h.seg_name:
            if seg != "~":
                if not (stem.parent / f"{seg}.hea").is_file():
                    raise DataError(stem.parent / f"{seg}.hea", f"the segment header named in {hea.name}",
                                    "no such file")
                check_wfdb(stem.parent / seg)
        return
    if not h.n_sig:
        return
    _check_header_fields(h, hea)
    for fname, need in _expected_bytes(h).items():
        f = stem.parent / fname
        if not f.is_file():
            raise DataError(f, f"the signal file named in {hea.name}", "no such file")
        size = f.stat().st_size
        if need >= 0 and size < need:
            frames = h.sig_len
            raise DataError(f, f"{need} bytes ({frames} samples per signal, as {hea.name} says)",
                            f"{size} bytes: the signal file is shorter than its header says")


def read_wfdb(path: str | os.PathLike[str]) -> Recording:
    """Read a WFDB record (single- or multi-segment; ``.dat`` or ``.mat`` signal files)."""
    stem = record_stem(path)
    check_wfdb(stem)
    import wfdb

    try:
        rec = wfdb.rdrecord(str(stem), smooth_frames=False)
    except Exception as err:
        raise DataError(stem.with_suffix(".hea"), "a readable WFDB record", f"{type(err).__name__}: {err}") from err
    spf = rec.samps_per_frame or [1] * rec.n_sig
    signals, units = [], []
    for sig, unit in zip(rec.e_p_signal, rec.units or [None] * rec.n_sig):
        factor = to_mv_factor(unit)
        signals.append(np.asarray(sig, dtype=np.float64) * (factor or 1.0))
        units.append("mV" if factor is not None else str(unit))
    fs = [float(rec.fs) * int(s) for s in spf]
    return Recording(str(stem), signals, fs, list(rec.sig_name), units, list(rec.comments or []))


# ---------------------------------------------------------------------- arrays
def _columns(array: np.ndarray, n_names: int, path: Path) -> np.ndarray:
    """``[T, C]`` from ``[T, C]`` or ``[C, T]`` (the axis matching the number of names is C)."""
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise DataError(path, "a 2D signal array [samples, leads]", f"shape {list(array.shape)}")
    if array.shape[1] != n_names and array.shape[0] == n_names:
        array = array.T
    if array.shape[1] != n_names:
        raise DataError(path, f"{n_names} signal columns (one per lead name)", f"shape {list(array.shape)}")
    return array


def read_array(path: str | os.PathLike[str], fs: float | None = None, leads: list[str] | None = None,
               units: list[str] | None = None) -> Recording:
    """``.npz`` (``signal`` or ``p_signal`` [T, C], ``fs``, ``sig_name`` or ``leads``, optional ``units``),
    ``.npy`` [T, C] or ``.csv`` (a header of lead names, optional ``time`` column in seconds).

    ``fs``, ``leads`` and ``units`` fill what the file does not say (units default to mV).
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(p, "an existing array file", "no such file")
    cleaned = False
    try:
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                key = "signal" if "signal" in z.files else "p_signal" if "p_signal" in z.files else None
                if key is None:
                    raise DataError(p, "a 'signal' array in the .npz", f"keys {z.files}")
                array = np.asarray(z[key], dtype=np.float64)
                fs = float(z["fs"]) if "fs" in z.files else fs
                names_key = "sig_name" if "sig_name" in z.files else "leads" if "leads" in z.files else None
                leads = [str(n) for n in z[names_key]] if names_key else leads
                units = [str(u) for u in z["units"]] if "units" in z.files else units
                cleaned = bool(z["cleaned"]) if "cleaned" in z.files else False
        elif p.suffix == ".npy":
            array = np.asarray(np.load(p, allow_pickle=False), dtype=np.float64)
        elif p.suffix == ".csv":
            array, leads, fs = _read_csv(p, leads, fs)
        else:
            raise DataError(p, f"one of {ARRAY_SUFFIXES}", f"extension {p.suffix!r}")
    except DataError:
        raise
    except Exception as err:
        raise DataError(p, "a readable array file", f"{type(err).__name__}: {err}") from err
    if fs is None or not fs > 0:
        raise DataError(p, "a sampling rate (an 'fs' entry, a time column, or data.fs)", f"{fs}")
    if not leads:
        raise DataError(p, "lead names (a 'sig_name' entry, a CSV header, or data.array_leads)", "none")
    array = _columns(array, len(leads), p)
    units = list(units) if units else ["mV"] * len(leads)
    signals, out_units = [], []
    for c, unit in enumerate(units):
        factor = to_mv_factor(unit)
        signals.append(array[:, c] * (factor or 1.0))
        out_units.append("mV" if factor is not None else unit)
    return Recording(str(p), signals, [float(fs)] * len(leads), list(leads), out_units, cleaned=cleaned)


def _read_csv(p: Path, leads: list[str] | None, fs: float | None) -> tuple[np.ndarray, list[str], float | None]:
    with open(p, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise DataError(p, "a CSV with a header row of lead names", "an empty file")
    header = [h.strip() for h in rows[0]]
    numeric = all(_is_number(h) for h in header)
    body = rows if numeric else rows[1:]
    names = leads if numeric else header
    values = np.array([[float(v) if v.strip() not in ("", "nan", "NaN", "NA") else np.nan for v in r]
                       for r in body if r], dtype=np.float64)
    if names and names[0].lower() in ("time", "t", "time_s", "seconds"):
        t = values[:, 0]
        if fs is None and len(t) > 1:
            fs = float(1.0 / np.median(np.diff(t)))
        values, names = values[:, 1:], names[1:]
    return values, list(names or []), fs


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_recording(path: str | os.PathLike[str], fs: float | None = None, leads: list[str] | None = None,
                   units: list[str] | None = None) -> Recording:
    """Dispatch on the path: arrays by suffix, anything else as a WFDB record."""
    p = record_stem(path)
    if p.suffix in ARRAY_SUFFIXES:
        return read_array(p, fs, leads, units)
    return read_wfdb(p)


# ---------------------------------------------------------------------- annotations and writing
def read_annotations(stem: str | os.PathLike[str], extension: str = "atr") -> tuple[np.ndarray, list[str], float]:
    """``(sample indices, symbols, fs)`` of a WFDB annotation file ``<stem>.<extension>``."""
    stem = record_stem(stem)
    f = stem.with_suffix(f".{extension}")
    if not f.is_file():
        raise DataError(f, f"a WFDB annotation file (.{extension})", "no such file")
    import wfdb

    try:
        ann = wfdb.rdann(str(stem), extension)
    except Exception as err:
        raise DataError(f, "a readable WFDB annotation file", f"{type(err).__name__}: {err}") from err
    fs = float(ann.fs) if ann.fs else float(wfdb.rdheader(str(stem)).fs)
    return np.asarray(ann.sample, dtype=np.int64), list(ann.symbol), fs


def write_wfdb(path: str | os.PathLike[str], signals: list[np.ndarray], record_fs: float, names: list[str],
               units: list[str], samps_per_frame: list[int] | None = None, comments: list[str] | None = None) -> Path:
    """Write a format-16 WFDB record ``<path>.hea/.dat``; the header is moved into place last.

    ``signals[c]`` has ``n_frames * samps_per_frame[c]`` samples; NaN is stored as WFDB's invalid
    sample and reads back as NaN.
    """
    import wfdb

    stem = record_stem(path)
    spf = list(samps_per_frame or [1] * len(signals))
    n_frames = min(len(s) // k for s, k in zip(signals, spf))
    e = [np.asarray(s[: n_frames * k], dtype=np.float64) for s, k in zip(signals, spf)]
    gains, baselines = [], []
    for s in e:  # the finest gain that fits the finite range into 16 bits
        finite = s[np.isfinite(s)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        gain = 32000.0 / max(hi - lo, 1e-6)
        gains.append(float(f"{min(gain, 1e7):.6g}"))
        baselines.append(int(round(-(hi + lo) / 2 * gains[-1])))
    stem.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{stem.name}.", dir=stem.parent))
    try:
        wfdb.wrsamp(stem.name, fs=float(record_fs), units=list(units), sig_name=list(names), e_p_signal=e,
                    samps_per_frame=spf, fmt=["16"] * len(e), adc_gain=gains, baseline=baselines,
                    comments=list(comments or []), write_dir=str(tmp))
        os.replace(tmp / f"{stem.name}.dat", stem.with_suffix(".dat"))
        os.replace(tmp / f"{stem.name}.hea", stem.with_suffix(".hea"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return stem
