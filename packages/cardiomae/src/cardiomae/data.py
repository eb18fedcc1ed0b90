"""Datasets of model-ready windows: pretraining windows, labelled windows, beats around R peaks.

A sample is a dict with documented keys:

- ``x``         ``[G, W]`` float32 standardised signal, one row per model lead slot (0 where not
  measured: those values are never seen, see ``valid``),
- ``valid``     ``[G, W]`` bool, False where nothing was measured (absent lead, NaN gap, flat run),
- ``group_pad`` ``[G]`` bool, True for a lead slot with no measured value in the window,
- ``mean``, ``std`` ``[G]`` the standardisation used (to return to mV),
- ``record``    the recording's path, ``start_s`` the window start in seconds,
- ``label``     for labelled datasets only.

The tokenizer (:class:`maecore.tokenizers.PatchTokenizer`) turns ``valid``/``group_pad`` into
padding tokens.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from cardiomae.io import read_recording
from cardiomae.leads import lead_type
from cardiomae.preprocess import LeadNorm, Prepared, PrepConfig, ecg_quality, prepare, window_starts
from maecore.errors import DataError, read_all

log = logging.getLogger(__name__)


def sample_dir() -> Path:
    """The bundled real sample (cropped PhysioNet records, see ``sample/PROVENANCE.md``)."""
    from importlib import resources

    return Path(str(resources.files("cardiomae").joinpath("sample")))


@dataclass
class ArrayOptions:
    """Rate, lead names and units for arrays that do not carry them (``data.array_*``)."""

    fs: float | None = None
    leads: list[str] | None = None
    units: list[str] | None = None

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> ArrayOptions:
        d = cfg.get("data", {})
        return cls(d.get("array_fs"), d.get("array_leads"), d.get("array_units"))


def window_sample(raw: np.ndarray, norm: LeadNorm) -> dict[str, torch.Tensor]:
    """Model input of one window ``raw [G, W]`` (model units, NaN = not measured): ``x``, ``valid``,
    ``group_pad`` and the statistics ``mean``/``std`` [G] that :meth:`LeadNorm.invert` needs."""
    z, mean, std = norm.apply(raw)
    valid = np.isfinite(z)
    return {
        "x": torch.from_numpy(np.where(valid, z, 0.0).astype(np.float32)),
        "valid": torch.from_numpy(valid),
        "group_pad": torch.from_numpy(~valid.any(1)),
        "mean": torch.from_numpy(mean.astype(np.float32)),
        "std": torch.from_numpy(std.astype(np.float32)),
    }


def load_prepared(paths: Sequence[Path], cfg: PrepConfig, arrays: ArrayOptions | None = None,
                  skip_bad: bool = False) -> list[Prepared]:
    """Read and prepare every recording. Bad ones raise one DataError listing them all, or with
    ``skip_bad`` are printed and left out."""
    arrays = arrays or ArrayOptions()
    return read_all(paths, lambda p: prepare(read_recording(p, arrays.fs, arrays.leads, arrays.units), cfg),
                    skip_bad, noun="recording")


def split_point(rec: Prepared, holdout_fraction: float) -> int:
    """Sample index where a recording's held-out tail starts (time split, no overlap)."""
    n = rec.x.shape[1]
    return n - int(round(n * holdout_fraction))


class Windows(Dataset):
    """Fixed windows of prepared recordings, standardised by ``norm``.

    ``spans[i] = (a, b)`` limits recording ``i`` to samples ``[a, b)``; values outside a span are
    never read (a window running past ``b`` is padded), so train and held-out parts do not mix.
    ``quality_min`` drops windows whose mean neurokit2 ECG quality is lower (counted in
    ``self.dropped``); windows with no measured value at all are dropped too.
    """

    def __init__(self, records: list[Prepared], cfg: PrepConfig, norm: LeadNorm,
                 spans: list[tuple[int, int]] | None = None, stride: int | None = None,
                 quality_min: float | None = None) -> None:
        self.records, self.cfg, self.norm = records, cfg, norm
        self.window = cfg.window
        stride = stride or int(round(cfg.stride_s * cfg.fs))
        self.spans = spans or [(0, r.x.shape[1]) for r in records]
        self.items: list[tuple[int, int]] = []
        self.dropped = {"empty": 0, "quality": 0}
        ecg = [g for g, lead in enumerate(cfg.leads) if lead_type(lead) == "ecg"]
        for i, r in enumerate(records):
            for s in window_starts(r.x.shape[1], self.window, stride, self.spans[i]):
                raw = self.raw(i, s)
                if not np.isfinite(raw).any():
                    self.dropped["empty"] += 1
                    continue
                if quality_min is not None:
                    rows = [g for g in ecg if np.isfinite(raw[g]).any()]
                    q = np.mean([ecg_quality(raw[g], cfg.fs) for g in rows]) if rows else 1.0
                    if q < quality_min:
                        self.dropped["quality"] += 1
                        continue
                self.items.append((i, s))
        if not self.items:
            raise DataError(None, "at least one window with measured samples", f"none (dropped {self.dropped})")

    def __len__(self) -> int:
        return len(self.items)

    def raw(self, i: int, start: int) -> np.ndarray:
        """``[G, W]`` signal of recording ``i`` from ``start``, NaN past its span (in model units)."""
        r, b = self.records[i], self.spans[i][1]
        stop = min(start + self.window, b)
        out = np.full((r.x.shape[0], self.window), np.nan, dtype=np.float32)
        out[:, : stop - start] = r.x[:, start:stop]
        return out

    def sample(self, i: int, start: int) -> dict[str, Any]:
        return {**window_sample(self.raw(i, start), self.norm), "record": self.records[i].path,
                "start_s": float(start / self.cfg.fs)}

    def __getitem__(self, k: int) -> dict[str, Any]:
        return self.sample(*self.items[k])


def split_windows(records: list[Prepared], cfg: PrepConfig,
                  holdout_fraction: float) -> tuple[Windows, Windows, LeadNorm]:
    """Training windows from the first ``1 - holdout_fraction`` of each record (overlapping by
    ``cfg.stride_s``), held-out windows from the rest (non-overlapping), and the per-lead
    standardisation fitted on the training parts only. With ``holdout_fraction=0`` the held-out
    set is the training set."""
    if not 0 <= holdout_fraction < 1:
        raise ValueError(f"data.holdout_fraction must be in [0, 1), got {holdout_fraction}")
    train_spans = [(0, split_point(r, holdout_fraction)) for r in records]
    norm = LeadNorm.fit(records, cfg, train_spans)
    train = Windows(records, cfg, norm, train_spans, quality_min=cfg.quality_min)
    if holdout_fraction == 0:
        return train, train, norm
    held = Windows(records, cfg, norm, [(split_point(r, holdout_fraction), r.x.shape[1]) for r in records],
                   stride=cfg.window)
    return train, held, norm


class Labelled(Dataset):
    """Samples of a base dataset with a ``label`` each (class id, multi-hot vector or value)."""

    def __init__(self, base: Dataset, labels: Sequence[Any], indices: Sequence[int] | None = None) -> None:
        self.base = base
        self.indices = list(indices) if indices is not None else list(range(len(labels)))
        self.labels = list(labels)
        if len(self.labels) != len(self.indices):
            raise ValueError(f"{len(self.labels)} labels for {len(self.indices)} samples")

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> dict[str, Any]:
        return {**self.base[self.indices[k]], "label": torch.as_tensor(self.labels[k])}


class Beats(Dataset):
    """Windows of ``window_s`` seconds centred on annotated beats (R peaks) of prepared recordings.

    ``beats`` holds ``(record index, centre sample at the model rate, symbol)``.
    """

    def __init__(self, records: list[Prepared], cfg: PrepConfig, norm: LeadNorm,
                 beats: list[tuple[int, int, str]], window_s: float) -> None:
        w = int(round(window_s * cfg.fs))
        w -= w % cfg.patch_size
        if w < cfg.patch_size:
            raise ValueError(f"beat window {window_s} s is shorter than one patch ({cfg.patch_size / cfg.fs:g} s)")
        self.records, self.cfg, self.norm, self.window = records, cfg, norm, w
        self.beats = beats

    def __len__(self) -> int:
        return len(self.beats)

    def __getitem__(self, k: int) -> dict[str, Any]:
        i, centre, symbol = self.beats[k]
        r = self.records[i]
        start = centre - self.window // 2
        out = np.full((r.x.shape[0], self.window), np.nan, dtype=np.float32)
        a, b = max(start, 0), min(start + self.window, r.x.shape[1])
        out[:, a - start : b - start] = r.x[:, a:b]
        return {**window_sample(out, self.norm), "record": r.path, "start_s": float(start / r.fs), "symbol": symbol}
