"""The non-learned lead synthesis to beat (:func:`cardiomae.tasks.linear_mix`) on the bundled records."""

from __future__ import annotations

import numpy as np
import pytest

from cardiomae.data import sample_dir
from cardiomae.io import Recording, read_recording
from cardiomae.preprocess import PrepConfig, prepare
from cardiomae.tasks import Synthesis, linear_mix, linear_mix_recording, pearson_rmse
from maecore.errors import DataError

PREP = PrepConfig(window_s=4.0, stride_s=4.0)  # the tiny config's preparation


@pytest.fixture(scope="module")
def s10() -> Recording:
    """PTB s0010_re: 12 leads + Frank at 1000 Hz, 38.4 s."""
    return read_recording(sample_dir() / "s0010_re")


@pytest.fixture(scope="module")
def s10_prepared(s10: Recording):
    return prepare(s10, PREP)


def _rows(prepared, leads: list[str]) -> np.ndarray:
    return prepared.x[[prepared.leads.index(lead) for lead in leads]].astype(np.float64)


def _crop(rec: Recording, t0: float, t1: float) -> Recording:
    sig = [s[int(round(t0 * f)): int(round(t1 * f))] for s, f in zip(rec.signals, rec.fs)]
    return Recording(rec.path, sig, rec.fs, rec.names, rec.units, rec.comments)


def test_linear_mix_recovers_an_exact_mix_of_real_leads(s10_prepared):
    x = _rows(s10_prepared, ["I", "II", "V2"])
    y = np.stack([0.8 * x[0] - 0.5 * x[1] + 0.3 * x[2] + 0.05, 2.0 * x[2] - 0.1])
    half = x.shape[1] // 2
    x_fit, y_fit = x[:, :half].copy(), y[:, :half].copy()
    x_fit[1, 100:300] = np.nan  # gaps are left out of the fit
    y_fit[0, 1000:1100] = np.nan
    pred = linear_mix(x_fit, y_fit, x[:, half:])  # fitted on the first half, applied to the second
    np.testing.assert_allclose(pred, y[:, half:], atol=1e-9)
    assert pearson_rmse(pred[0], y[0, half:])["pearson_r"] > 0.999999
    own = linear_mix(x_fit, y_fit)  # applied to what it was fitted on: NaN where an input lead is NaN
    assert np.isnan(own[:, 100:300]).all() and np.isfinite(own[:, 300:]).all()
    np.testing.assert_allclose(own[:, 300:], y[:, 300:half], atol=1e-9)


def test_linear_mix_of_real_leads_is_imperfect(s10_prepared):
    # V2 is no linear mix of the limb leads: the least-squares fit is the best line, not a copy
    x, v2 = _rows(s10_prepared, ["I", "II", "III"]), _rows(s10_prepared, ["V2"])
    score = pearson_rmse(linear_mix(x, v2)[0], v2[0])
    assert 0.3 < score["pearson_r"] < 0.95 and 0 < score["rmse_mv"] < v2.std()


def test_linear_mix_leaves_out_an_empty_lead_and_skips_a_lead_it_cannot_fit(s10_prepared):
    x = _rows(s10_prepared, ["I", "II"])
    x[1] = np.nan  # an absent input lead
    line = 1.5 * x[0] + 0.2
    y = np.full((3, x.shape[1]), np.nan)
    y[0] = line
    y[1, 500:502] = line[500:502]  # two finite samples for two coefficients (I and the intercept): fitted
    y[2, 500] = line[500]  # one finite sample: not fitted
    pred = linear_mix(x, y)
    np.testing.assert_allclose(pred[:2], np.stack([line, line]), atol=1e-6)
    assert np.isnan(pred[2]).all()


def test_linear_mix_recording_recovers_a_lead_built_as_a_mix(s10: Recording):
    names = [n.upper() for n in s10.names]
    i, iii, v1 = (names.index(n) for n in ("I", "III", "V1"))
    signals = list(s10.signals)
    # raw mV at 1000 Hz, no offset (resampling smears a constant at the record's edges, and the
    # 0.5 Hz high-pass carries that far into the record: a constant in mV is no line of the inputs)
    signals[v1] = 0.7 * s10.signals[i] - 0.4 * s10.signals[iii]
    rec = Recording(s10.path, signals, s10.fs, s10.names, s10.units)
    cut = rec.duration_s * 0.75
    train, test = _crop(rec, 0, cut), _crop(rec, cut, rec.duration_s)
    pred = linear_mix_recording(PREP, train, ["i", "ii", "iii"], ["V1", "V2"], apply=test)
    truth = _rows(prepare(test, PREP), ["V1", "V2"])
    assert pred.shape == truth.shape == (2, 2400)  # 9.6 s held out at 250 Hz
    built, real = pearson_rmse(pred[0], truth[0]), pearson_rmse(pred[1], truth[1])
    assert built["pearson_r"] > 0.999999 and built["rmse_mv"] < 1e-6  # fitted on the first 75 %, scored on the rest
    assert 0.3 < real["pearson_r"] < 0.95 and real["rmse_mv"] > 0.05


def test_synthesis_baseline_scores_like_metrics(s10_prepared):
    x = _rows(s10_prepared, ["I", "II", "III"])
    truth = {"V5": s10_prepared.x[s10_prepared.leads.index("V5")], "V6": 0.6 * x[0] + 0.4 * x[1] - 0.02}
    given = prepare(Recording(s10_prepared.path, list(x), [250.0] * 3, ["I", "II", "III"], ["mV"] * 3,
                              cleaned=True), PREP)
    syn = Synthesis(["V4", "V5", "V6"], ["I", "II", "III"], 250.0, np.zeros((3, x.shape[1]), np.float32), truth,
                    given)
    base = syn.baseline()
    assert base["method"].startswith("least-squares linear mix (with intercept) of I,II,III, fitted and scored "
                                     "on this record's own V5,V6 (optimistic")
    scores = base["metrics_vs_input"]
    assert list(scores) == list(syn.metrics()) == ["V5", "V6"]  # V4 has no truth: not scored
    assert scores["V6"]["pearson_r"] > 0.999999 and scores["V6"]["n"] == x.shape[1]
    assert 0.3 < scores["V5"]["pearson_r"] < 0.999 and np.isfinite(scores["V5"]["rmse_mv"])
    assert Synthesis(["V4"], ["I"], 250.0, syn.signals[:1], {}, given).baseline() is None


def test_linear_mix_refuses_bad_arrays():
    x, y = np.ones((2, 10)), np.ones((1, 10))
    with pytest.raises(ValueError, match=r"linear_mix needs \[leads, samples\] arrays, got have \(10,\)"):
        linear_mix(x[0], y)
    with pytest.raises(ValueError, match="have and want must hold the same samples, got 10 and 9"):
        linear_mix(x, y[:, :9])
    with pytest.raises(ValueError, match="apply_to must hold the 2 input leads of have, got 1"):
        linear_mix(x, y, x[:1])
    with pytest.raises(ValueError, match="no usable input lead: none of the 2 lead"):
        linear_mix(np.full((2, 10), np.nan), y)
    with pytest.raises(ValueError, match="no usable input lead: none of the 0 lead"):
        linear_mix(np.ones((0, 10)), y)


@pytest.mark.parametrize(("record", "have", "want", "missing"), [
    ("100", ["MLII"], ["V5", "V1"], "V1"),  # the record has no V1
    ("a103l", ["II"], ["PPG"], "PPG"),  # PPG (arbitrary units) is never scored
])
def test_linear_mix_recording_needs_the_wanted_leads_to_fit_on(record: str, have: list[str], want: list[str],
                                                                missing: str):
    rec = _crop(read_recording(sample_dir() / record), 0, 20)
    with pytest.raises(DataError, match=rf"expected the wanted ECG lead\(s\) {missing} in the recording the mix is "
                                        "fitted on, found leads"):
        linear_mix_recording(PREP, rec, have, want)
