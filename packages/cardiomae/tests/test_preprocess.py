"""Preprocessing: resampling, cleaning, slots, standardisation, windows and padding tokens."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from cardiomae.data import Beats, Windows, load_prepared, split_point, window_sample
from cardiomae.io import expand, read_recording
from cardiomae.labels import AAMI, annotated_beats, heart_rate
from cardiomae.preprocess import (
    LeadNorm,
    PrepConfig,
    clean,
    flat_runs,
    nan_mean_std,
    parse_lead_map,
    prepare,
    resample,
    window_starts,
)
from maecore.errors import DataError
from maecore.models import create_model


@pytest.mark.parametrize(("fs_in", "fs_out"), [(360.0, 250.0), (1000.0, 250.0), (125.0, 250.0), (250.0, 250.0)])
def test_resample_keeps_a_sine_and_maps_nan_gaps(fs_in: float, fs_out: float):
    t = np.arange(int(10 * fs_in)) / fs_in
    x = np.sin(2 * np.pi * 5 * t)
    x[int(4 * fs_in): int(5 * fs_in)] = np.nan
    y = resample(x, fs_in, fs_out)
    assert len(y) == int(10 * fs_out)
    ty = np.arange(len(y)) / fs_out
    gap = (ty >= 4) & (ty < 5)
    assert np.isnan(y[gap]).all()
    near = (ty > 4 - 2 / fs_in - 1 / fs_out) & (ty < 5 + 2 / fs_in)
    far = ~near & (ty > 0.2) & (ty < 9.8)  # away from the gap and the ends (filter edges)
    assert np.isfinite(y[far]).all()
    assert np.abs(y[far] - np.sin(2 * np.pi * 5 * ty[far])).max() < 0.02


def test_clean_removes_baseline_wander_and_keeps_nan(ecg):
    x = ecg(20.0) + 0.8 * np.sin(2 * np.pi * 0.1 * np.arange(5000) / 250)
    x[100:200] = np.nan
    y = clean(x, 250.0, "ecg")
    assert np.isnan(y[100:200]).all() and np.isfinite(np.delete(y, range(100, 200))).all()
    lows = lambda s: np.abs(np.fft.rfft(np.nan_to_num(s[500:]))[:3]).sum()  # noqa: E731  (< 0.2 Hz)
    assert lows(y) < 0.1 * lows(x)


def test_flat_runs_and_window_starts():
    x = np.r_[np.arange(10.0), np.full(600, 2.0), np.arange(10.0)]
    runs = flat_runs(x, 250.0, 2.0)
    assert runs.sum() == 600 and runs[10:610].all()  # 2.4 s of one value; the ramps are not flat
    assert not flat_runs(x, 250.0, 3.0).any()
    assert window_starts(1000, 250, 250) == [0, 250, 500, 750]
    assert window_starts(1100, 250, 250) == [0, 250, 500, 750, 850]
    assert window_starts(100, 250, 125) == [0]
    assert window_starts(1000, 250, 250, (300, 700)) == [300, 450]


def test_lead_map_parsing():
    assert parse_lead_map(["MLII=II", "mcl1 = v1"]) == {"MLII": "II", "MCL1": "V1"}
    assert parse_lead_map({"MLII": "ii"}) == {"MLII": "II"} and parse_lead_map([]) == {}
    with pytest.raises(ValueError, match="FROM=SLOT"):
        parse_lead_map(["MLII"])


def test_prepare_places_leads_in_slots(sample: Path):
    cfg = PrepConfig()
    p = prepare(read_recording(sample / "100"), cfg)
    assert p.sources == {"II": "MLII", "V5": "V5"} and p.x.shape == (13, 8 * 60 * 250)
    assert [cfg.leads[g] for g in np.flatnonzero(p.present)] == ["II", "V5"]
    kept = prepare(read_recording(sample / "100"), PrepConfig(lead_map={}, leads=["MLII", "V5"]))
    assert kept.sources == {"MLII": "MLII", "V5": "V5"}  # MLII kept by name when asked
    m = prepare(read_recording(sample / "03700181"), cfg)  # 500 Hz MCL1 (4 samples per frame) -> 250 Hz V1
    assert m.sources == {"V1": "MCL1"} and m.x.shape[1] == 180 * 250


def test_norm_round_trip_and_window_norm(sample: Path):
    cfg = PrepConfig()
    recs = load_prepared(expand(sample), cfg)
    norm = LeadNorm.fit(recs, cfg)
    raw = recs[2].x[:, :2500]  # a103l: II and PPG
    z, mean, std = norm.apply(raw)
    np.testing.assert_allclose(LeadNorm.invert(z, mean, std), raw, atol=1e-5)
    ppg = cfg.leads.index("PPG")
    assert abs(np.nanmean(z[ppg])) < 1e-4 and abs(np.nanstd(z[ppg]) - 1) < 1e-3  # z-scored per window
    ii = cfg.leads.index("II")
    assert mean[ii] == norm.mean[ii] and std[ii] == norm.std[ii]  # dataset statistics in mV
    assert 0.05 < norm.std[ii] < 1.0


def test_gaps_and_absent_leads_become_padding_tokens_not_zeros(sample: Path):
    """v102s has real NaN gaps: the patches holding them and every absent lead are padding."""
    cfg = PrepConfig()
    rec = prepare(read_recording(sample / "v102s"), cfg)
    twelve = prepare(read_recording(sample / "s0010_re"), cfg)
    norm = LeadNorm.fit([rec, twelve], cfg)
    ii = cfg.leads.index("II")
    gap = int(np.flatnonzero(np.isnan(rec.x[ii]))[0])
    start = gap - gap % 25 - 500
    s = window_sample(rec.x[:, start:start + 2500], norm)
    assert s["group_pad"].tolist() == [lead not in ("II", "PPG") for lead in cfg.leads]
    assert (s["x"][~s["valid"]] == 0).all() and not s["valid"][ii, 500:525].all()
    batch = {k: torch.stack([s[k], window_sample(twelve.x[:, :2500], norm)[k]]) for k in ("x", "valid", "group_pad")}
    tokens = create_model("cardiomae_tiny").tokenizer.tokens(batch)
    assert tokens.group[0].reshape(13, 100)[:, 0].tolist() == list(range(13))  # both samples: all 13 slots
    pad = tokens.pad.reshape(2, 13, 100)
    assert pad[0, ii, 20] and pad[0, ii].sum() == 1  # exactly the patch holding the gap
    absent = [g for g, lead in enumerate(cfg.leads) if lead not in ("II", "PPG")]
    assert pad[0, absent].all() and not pad[0, cfg.leads.index("PPG")].any()
    assert not pad[1, :12].any() and pad[1, 12].all()  # s0010_re: 12 leads, no PPG
    assert torch.isfinite(tokens.x).all()
    alone = create_model("cardiomae_tiny").tokenizer.tokens({k: v[:1] for k, v in batch.items()})
    assert alone.group[0].unique().tolist() == [ii, cfg.leads.index("PPG")]  # slots absent batch-wide: left out


def test_windows_respect_spans(sample: Path):
    cfg = PrepConfig()
    recs = load_prepared([sample / "s0010_re"], cfg)
    cut = split_point(recs[0], 0.25)
    ds = Windows(recs, cfg, LeadNorm.fit(recs, cfg), [(0, cut)])
    assert [s for _, s in ds.items] == [0, 1250, 2500, 3750, cut - 2500]  # 5 s stride, last one at the cut
    last = ds[len(ds) - 1]
    assert last["valid"].all(1).sum() == 12 and last["start_s"] == pytest.approx((cut - 2500) / 250)
    held = Windows(recs, cfg, LeadNorm.fit(recs, cfg), [(cut, recs[0].x.shape[1])], stride=2500)
    first = held[0]
    assert first["valid"].sum(1).max() == recs[0].x.shape[1] - cut  # 9.6 s measured, the rest padding


def test_quality_filter_drops_noisy_windows(sample: Path, ecg):
    cfg = PrepConfig()
    recs = load_prepared([sample / "100"], cfg)
    noisy = recs[0].x.copy()
    rng = np.random.default_rng(0)
    noisy[:, :2500] = np.where(np.isfinite(noisy[:, :2500]), rng.standard_normal((13, 2500)), np.nan)
    recs[0].x = noisy.astype(np.float32)
    ds = Windows(recs, cfg, LeadNorm.fit(recs, cfg), stride=2500, quality_min=0.5)
    assert ds.dropped["quality"] >= 1 and ds.items[0][1] != 0


def test_beats_and_heart_rate(sample: Path):
    cfg = PrepConfig()
    recs = load_prepared([sample / "100"], cfg)
    beats = annotated_beats(recs)
    assert len(beats) == 592 and sum(c == "S" for *_, c in beats) == 15 and AAMI["V"] == "V"
    ds = Beats(recs, cfg, LeadNorm.fit(recs, cfg), beats, 2.0)
    assert ds[0]["x"].shape == (13, 500) and not ds[0]["valid"][:, :25].any()  # first beat at 0.2 s: padded
    hr = heart_rate(recs[0].x[:, :2500], cfg.leads, 250.0)
    n_beats = sum(1 for _, s, _ in beats if s < 2500)
    assert hr is not None and abs(hr - 60 * n_beats / 10) < 15
    with pytest.raises(DataError, match="beat annotations"):
        annotated_beats(load_prepared([sample / "a103l"], cfg))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_mean_std_is_numpys_bit_for_bit(dtype):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((13, 1000)) * rng.uniform(0.01, 100, (13, 1))).astype(dtype)
    x[rng.random(x.shape) < 0.2] = np.nan
    x[4] = np.nan  # an absent lead
    x[6, 7] = np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = np.nanmean(x, 1), np.nanstd(x, 1)
    got = nan_mean_std(x)
    for w, g in zip(want, got):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)
    assert np.isnan(got[0][4]) and np.isnan(got[1][6])
