"""From a :class:`~cardiomae.io.Recording` to model-rate lead slots: unit checks, flat and NaN
handling, resampling, neurokit2 cleaning, per-lead standardisation and windows.

A prepared recording is ``x [G, T]`` at ``fs`` Hz, one row per model lead slot (``leads``), NaN
wherever nothing was measured: an absent lead, a NaN gap, a flat run. NaN becomes padding tokens in
the tokenizer (``valid`` / ``group_pad``), never zeros the model learns from.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from cardiomae.io import Recording
from cardiomae.leads import CANONICAL_LEADS, DEFAULT_LEAD_MAP, PPG, canonical_lead, lead_type, model_slot
from maecore.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class PrepConfig:
    """What turns a recording into model input (the ``data`` section plus the model's leads)."""

    leads: list[str] = field(default_factory=lambda: list(CANONICAL_LEADS))
    fs: float = 250.0
    window_s: float = 10.0
    stride_s: float = 5.0
    patch_size: int = 25
    min_fs: float = 100.0
    clean: bool = True
    norm: str = "lead"
    window_norm: list[str] = field(default_factory=lambda: [PPG])
    lead_map: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_LEAD_MAP))
    unknown_leads: str = "ignore"
    flat_leads: str = "error"
    flat_std_mv: float = 0.005
    flat_run_s: float = 2.0
    max_nan_fraction: float = 0.5
    quality_min: float | None = None

    def __post_init__(self) -> None:
        choices = {"norm": ("lead", "window"), "unknown_leads": ("ignore", "error"), "flat_leads": ("error", "drop")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"data.{key} must be one of {allowed}, got {getattr(self, key)!r}")
        if self.fs <= 0 or self.window_s <= 0 or self.stride_s <= 0:
            raise ValueError(f"data.fs, window_s, stride_s must be > 0, got {self.fs}, {self.window_s}, "
                             f"{self.stride_s}")
        if round(self.window_s * self.fs) % self.patch_size:
            raise ValueError(f"data.window_s * data.fs = {self.window_s * self.fs:g} samples must be a multiple of "
                             f"the patch size {self.patch_size}")
        if not 0 <= self.max_nan_fraction <= 1:
            raise ValueError(f"data.max_nan_fraction must be in [0, 1], got {self.max_nan_fraction}")

    @property
    def window(self) -> int:
        return int(round(self.window_s * self.fs))

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> PrepConfig:
        d, m = cfg.get("data", {}), cfg.get("model", {})
        keys = cls.__dataclass_fields__
        kwargs = {k: v for k, v in d.items() if k in keys}
        if m.get("leads"):
            kwargs["leads"] = list(m["leads"])
        if m.get("patch_size"):
            kwargs["patch_size"] = int(m["patch_size"])
        kwargs["lead_map"] = parse_lead_map(kwargs.get("lead_map"))
        kwargs["window_norm"] = list(kwargs.get("window_norm") or [])
        return cls(**kwargs)

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> PrepConfig:
        keys = cls.__dataclass_fields__
        return cls(**{k: v for k, v in meta.get("prep", {}).items() if k in keys})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_lead_map(value: Any) -> dict[str, str]:
    """``["MLII=II", ...]`` or ``{"MLII": "II"}`` -> ``{"MLII": "II"}`` (names canonicalised)."""
    if not value:
        return {}
    if isinstance(value, dict):
        pairs = list(value.items())
    else:
        pairs = []
        for item in [value] if isinstance(value, str) else value:
            if "=" not in str(item):
                raise ValueError(f"data.lead_map entries must look like FROM=SLOT (e.g. MLII=II), got {item!r}")
            src, dst = str(item).split("=", 1)
            pairs.append((src, dst))
    return {canonical_lead(a.strip()): canonical_lead(b.strip()) for a, b in pairs}


@dataclass
class Prepared:
    """A recording at the model rate: ``x [G, T]`` float32 with NaN where not measured."""

    path: str
    x: np.ndarray
    fs: float
    leads: list[str]
    sources: dict[str, str]  # model slot -> lead name in the file
    notes: list[str] = field(default_factory=list)

    @property
    def present(self) -> np.ndarray:
        return np.isfinite(self.x).any(1)

    @property
    def duration_s(self) -> float:
        return self.x.shape[1] / self.fs


# ---------------------------------------------------------------------- signal steps
def fill_gaps(x: np.ndarray) -> np.ndarray:
    """Linear interpolation over NaN (nearest value at the ends), for filters that cannot skip NaN."""
    bad = ~np.isfinite(x)
    if not bad.any():
        return x
    idx = np.arange(len(x))
    return np.interp(idx, idx[~bad], x[~bad])


def resample(x: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """Polyphase resampling ``[n] -> [floor(n * fs_out / fs_in)]``; NaN gaps stay NaN (widened by
    one input sample so filtered values next to a gap are not trusted)."""
    n_out = int(np.floor(len(x) * fs_out / fs_in + 1e-9))
    bad = ~np.isfinite(x)
    if fs_in == fs_out:
        y = x.copy()
    else:
        from scipy.signal import resample_poly  # scipy.signal costs ~0.7 s to import: only when resampling

        ratio = Fraction(fs_out / fs_in).limit_denominator(1000)
        y = resample_poly(fill_gaps(x) if bad.any() else x, ratio.numerator, ratio.denominator)
    y = y[:n_out]
    if len(y) < n_out:
        y = np.pad(y, (0, n_out - len(y)), mode="edge")
    if bad.any():
        t_out = np.arange(n_out) / fs_out * fs_in
        near = np.interp(t_out, np.arange(len(x)), bad.astype(float)) > 0
        y[near] = np.nan
    return y


def clean(x: np.ndarray, fs: float, kind: str) -> np.ndarray:
    """neurokit2 ``ecg_clean`` (0.5 Hz high-pass, powerline) or ``ppg_clean``; NaN kept."""
    import neurokit2 as nk

    bad = ~np.isfinite(x)
    if bad.all() or kind == "other" or len(x) < int(fs):
        return x
    filled = fill_gaps(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = nk.ecg_clean(filled, sampling_rate=int(round(fs))) if kind == "ecg" else \
            nk.ppg_clean(filled, sampling_rate=int(round(fs)))
    out = np.asarray(out, dtype=np.float64)
    out[bad] = np.nan
    return out


def flat_runs(x: np.ndarray, fs: float, min_s: float) -> np.ndarray:
    """``[n]`` bool: samples inside runs of one repeated value lasting at least ``min_s`` seconds."""
    n = len(x)
    out = np.zeros(n, dtype=bool)
    if n < 2 or min_s <= 0:
        return out
    same = np.r_[False, x[1:] == x[:-1]]
    starts = np.flatnonzero(~same)
    ends = np.r_[starts[1:], n]
    for s, e in zip(starts, ends):
        if e - s >= max(2, min_s * fs):
            out[s:e] = True
    return out


def nan_runs(x: np.ndarray, fs: float) -> tuple[float, float]:
    """``(longest NaN run in s, its start in s)``."""
    bad = np.r_[False, ~np.isfinite(x), False]
    edges = np.flatnonzero(np.diff(bad.astype(np.int8)))
    if not len(edges):
        return 0.0, 0.0
    starts, ends = edges[::2], edges[1::2]
    i = int(np.argmax(ends - starts))
    return float((ends[i] - starts[i]) / fs), float(starts[i] / fs)


# ---------------------------------------------------------------------- recording -> slots
def _slot_of(rec: Recording, cfg: PrepConfig) -> dict[int, str]:
    """Channel index -> model slot for every channel that feeds the model; raises on unknown leads."""
    out, unknown = {}, []
    for c, lead in enumerate(rec.leads):
        slot = model_slot(lead, cfg.lead_map)
        if slot in cfg.leads and slot not in out.values():
            out[c] = slot
        elif slot not in cfg.leads:
            unknown.append(rec.names[c])
    if unknown and cfg.unknown_leads == "error":
        raise DataError(rec.path, f"only lead names the model knows ({', '.join(cfg.leads)}; "
                        "data.unknown_leads=error)", f"unknown lead(s) {', '.join(map(repr, unknown))}")
    if not out:
        raise DataError(rec.path, f"at least one of the model's leads ({', '.join(cfg.leads)}; "
                        f"lead_map {cfg.lead_map})", f"only {', '.join(map(repr, rec.names))}")
    return out


def _check_lead(rec: Recording, c: int, slot: str, cfg: PrepConfig) -> np.ndarray | None:
    """Unit, flat-line and NaN checks of one channel; returns the signal with flat runs set to NaN,
    or None when the lead is to be treated as absent."""
    x, name, unit = rec.signals[c].astype(np.float64), rec.names[c], rec.units[c]
    if lead_type(slot) == "ecg" and unit != "mV":
        raise DataError(rec.path, f"a voltage unit (mV, uV, V) for ECG lead {name!r}", f"unit {unit!r}")
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        rec_note = f"lead {name!r} holds no finite sample: treated as absent"
        log.info("%s: %s", rec.path, rec_note)
        return None
    std = float(finite.std())
    flat = std < cfg.flat_std_mv if unit == "mV" else float(np.ptp(finite)) == 0.0
    if flat:
        what = f"a flat line (std {std:.2g} {unit} over {len(x) / rec.fs[c]:.1f} s)"
        if cfg.flat_leads == "error":
            raise DataError(rec.path, f"a varying signal in lead {name!r} (data.flat_leads=error; "
                            "set data.flat_leads=drop to treat it as absent)", what)
        return None
    x[flat_runs(x, rec.fs[c], cfg.flat_run_s)] = np.nan
    return x


def prepare(rec: Recording, cfg: PrepConfig) -> Prepared:
    """Check, resample to ``cfg.fs``, clean and place each usable lead in its model slot."""
    slots = _slot_of(rec, cfg)
    low = [f"{rec.names[c]} at {rec.fs[c]:g} Hz" for c in slots if rec.fs[c] < cfg.min_fs]
    if low:
        raise DataError(rec.path, f"a sampling rate of at least {cfg.min_fs:g} Hz (data.min_fs) to resample "
                        f"to the model's {cfg.fs:g} Hz", ", ".join(low))
    n = int(np.floor(rec.duration_s * cfg.fs + 1e-9))
    if n < cfg.patch_size:
        raise DataError(rec.path, f"at least {cfg.patch_size / cfg.fs:g} s of signal (one patch)",
                        f"{rec.duration_s:.3g} s")
    x = np.full((len(cfg.leads), n), np.nan, dtype=np.float32)
    sources, notes = {}, []
    for c, slot in slots.items():
        sig = _check_lead(rec, c, slot, cfg)
        if sig is None:
            notes.append(f"lead {rec.names[c]!r} treated as absent (flat or no finite sample)")
            continue
        y = resample(sig, rec.fs[c], cfg.fs)
        if cfg.clean and not rec.cleaned:
            y = clean(y, cfg.fs, lead_type(slot))
        m = min(n, len(y))
        x[cfg.leads.index(slot), :m] = y[:m]
        sources[slot] = rec.names[c]
    used = x[[cfg.leads.index(s) for s in sources]] if sources else x[:0]
    if not sources:
        raise DataError(rec.path, "at least one usable lead", "; ".join(notes))
    missing = float(np.mean(~np.isfinite(used)))
    if missing > cfg.max_nan_fraction:
        longest, at = max(nan_runs(row, cfg.fs) for row in used)
        raise DataError(rec.path, f"at most {cfg.max_nan_fraction:.0%} missing samples in the model's leads "
                        f"(data.max_nan_fraction)", f"{missing:.0%} NaN in NaN runs (longest {longest:.1f} s at "
                        f"{at:.1f} s)")
    return Prepared(rec.path, x, cfg.fs, list(cfg.leads), sources, notes)


# ---------------------------------------------------------------------- normalisation
@dataclass
class LeadNorm:
    """Per-lead standardisation: ``(x - mean[g]) / std[g]``; leads in ``window`` (and every lead when
    ``per_window``) use the window's own mean and std instead (arbitrary units such as PPG)."""

    mean: np.ndarray
    std: np.ndarray
    window: np.ndarray  # [G] bool

    @classmethod
    def fit(cls, records: list[Prepared], cfg: PrepConfig, spans: list[tuple[int, int]] | None = None) -> LeadNorm:
        g = len(cfg.leads)
        sums, sq, cnt = np.zeros(g), np.zeros(g), np.zeros(g)
        for i, r in enumerate(records):
            a, b = spans[i] if spans else (0, r.x.shape[1])
            seg = r.x[:, a:b].astype(np.float64)
            ok = np.isfinite(seg)
            sums += np.where(ok, seg, 0).sum(1)
            sq += np.where(ok, seg**2, 0).sum(1)
            cnt += ok.sum(1)
        seen = cnt > 0
        mean = np.where(seen, sums / np.maximum(cnt, 1), 0.0)
        std = np.sqrt(np.maximum(np.where(seen, sq / np.maximum(cnt, 1), 1.0) - mean**2, 0.0))
        ecg = np.array([lead_type(lead) == "ecg" for lead in cfg.leads])
        fallback = float(np.median(std[seen & ecg])) if (seen & ecg).any() else 1.0
        std = np.where(seen & (std > 1e-6), std, fallback)
        window = np.array([cfg.norm == "window" or lead in cfg.window_norm for lead in cfg.leads])
        return cls(mean.astype(np.float32), std.astype(np.float32), window)

    def apply(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``x [G, W]`` -> ``(z, mean [G], std [G])`` (the statistics used, for :meth:`invert`)."""
        mean, std = self.mean.copy(), self.std.copy()
        if self.window.any():
            wm, ws = nan_mean_std(x)
            use = self.window & np.isfinite(wm) & (ws > 1e-8)
            mean[use], std[use] = wm[use], ws[use]
        return ((x - mean[:, None]) / std[:, None]).astype(np.float32), mean, std

    @staticmethod
    def invert(z: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
        return z * std[..., None] + mean[..., None]

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "window": self.window.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LeadNorm:
        return cls(np.asarray(d["mean"], np.float32), np.asarray(d["std"], np.float32), np.asarray(d["window"], bool))


def nan_mean_std(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``x [G, W]``, the mean and standard deviation of its non-NaN values (NaN for a
    row with none): bit for bit ``np.nanmean(x, 1)``, ``np.nanstd(x, 1)`` (same sums, same
    casts), in a third of their time (each pays for its own NaN scan and copies; 0.1 ms a
    12-lead window, most of an ECG window's loading time), and without their all-NaN warnings."""
    mask = np.isnan(x)
    arr = np.where(mask, x.dtype.type(0), x)
    cnt = x.shape[1] - mask.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (arr.sum(1) / cnt).astype(x.dtype)
        dev = arr - mean[:, None]
        dev[mask] = 0
        var = ((dev * dev).sum(1) / cnt).astype(x.dtype)
    return mean, np.sqrt(var)


def window_starts(n: int, window: int, stride: int, span: tuple[int, int] | None = None) -> list[int]:
    """Window starts covering ``span`` (default the whole signal) so that every sample lands in a
    window: a span shorter than a window gives one window (its tail is padding), and the last
    window is aligned to the span's end."""
    a, b = span or (0, n)
    if b - a <= window:
        return [a]
    starts = list(range(a, b - window + 1, stride))
    if starts[-1] + window < b:
        starts.append(b - window)
    return starts


def ecg_quality(z: np.ndarray, fs: float) -> float:
    """Mean neurokit2 ``templatematch`` quality (0-1: correlation of each beat with the window's
    average beat) of a cleaned ECG window (NaN filled). A window where no beat is found, or whose
    index is undefined, scores 0. (``averageQRS`` rescales per window, so clean sinus rhythm scores
    about 0.6 and pure noise can score higher; ``templatematch`` gives ~0.99 on record 100.)"""
    import neurokit2 as nk

    ok = np.isfinite(z)
    if ok.mean() < 0.5:
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            q = nk.ecg_quality(fill_gaps(z), sampling_rate=int(round(fs)), method="templatematch")
        except Exception:  # no R peak detected: nothing to build a template from
            return 0.0
    q = np.asarray(q, dtype=float)
    return float(np.nanmean(q)) if np.isfinite(q).any() else 0.0
