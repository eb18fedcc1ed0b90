from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import wfdb

from cardiomae.data import sample_dir

# the suite's reference copies: <repo parent>/shared/data/cardiac (or <repo>/shared/data/cardiac)
_ROOT = Path(__file__).resolve().parents[3]
SHARED = next((p for p in (_ROOT.parent / "shared" / "data" / "cardiac", _ROOT / "shared" / "data" / "cardiac")
               if p.is_dir()), _ROOT.parent / "shared" / "data" / "cardiac")


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture
def shared_cardiac() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"reference sample data not found at {SHARED}")
    return SHARED


@pytest.fixture
def sample() -> Path:
    return sample_dir()


def synthetic_ecg(seconds: float = 20.0, fs: float = 250.0, seed: int = 0) -> np.ndarray:
    """A seeded ECG-like signal in mV: narrow R waves at 72 bpm on a slow baseline, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * fs)) / fs
    beats = np.arange(0.3, seconds, 60 / 72)
    x = sum(1.2 * np.exp(-0.5 * ((t - b) / 0.012) ** 2) + 0.25 * np.exp(-0.5 * ((t - b - 0.25) / 0.04) ** 2)
            for b in beats)
    return x + 0.05 * np.sin(2 * np.pi * 0.2 * t) + 0.01 * rng.standard_normal(t.size)


def write_record(folder: Path, name: str, signals: np.ndarray, fs: float, names: list[str],
                 units: list[str] | None = None) -> Path:
    """A format-16 WFDB record ``folder/name`` from physical ``signals [T, C]``."""
    wfdb.wrsamp(name, fs=fs, units=units or ["mV"] * len(names), sig_name=names, p_signal=signals,
                fmt=["16"] * len(names), write_dir=str(folder))
    return folder / name


@pytest.fixture
def ecg():
    """``ecg(seconds=20, fs=250, seed=0)``: the seeded synthetic ECG of :func:`synthetic_ecg`."""
    return synthetic_ecg


@pytest.fixture
def make_record():
    """``make_record(folder, name, signals [T, C], fs, names, units=None)``: write a WFDB record."""
    return write_record


@pytest.fixture
def two_lead_record(tmp_path: Path) -> Path:
    ii = synthetic_ecg()
    return write_record(tmp_path, "synth", np.stack([ii, 0.6 * ii - 0.1], 1), 250.0, ["II", "V5"])
