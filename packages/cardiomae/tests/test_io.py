"""Readers and writers: real records, round trips, lead names, and every bad input of the issue."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import wfdb

from cardiomae.io import expand, read_annotations, read_array, read_recording, read_wfdb, write_wfdb
from cardiomae.leads import canonical_lead, to_mv_factor
from cardiomae.preprocess import PrepConfig, prepare
from maecore.errors import DataError


@pytest.mark.parametrize(("name", "canonical"), [
    ("i", "I"), ("ii", "II"), ("III", "III"), ("avr", "aVR"), ("AVL", "aVL"), ("aVF", "aVF"), ("v1", "V1"),
    ("V6", "V6"), ("ECG II", "II"), ("LEAD_I", "I"), ("lead v2", "V2"), ("PLETH", "PPG"), ("ppg", "PPG"),
    ("MLII", "MLII"), ("MCL1", "MCL1"), ("vx", "VX"), ("V", "V"), ("ABP", "ABP"), ("ECG 1", "ECG 1"),
])
def test_canonical_lead_names(name: str, canonical: str):
    assert canonical_lead(name) == canonical


@pytest.mark.parametrize(("unit", "factor"), [("mV", 1.0), ("uV", 1e-3), ("V", 1e3), ("", 1.0), ("NU", None),
                                               ("mmHg", None)])
def test_units_to_mv(unit: str, factor: float | None):
    assert to_mv_factor(unit) == factor


def test_bundled_sample_matches_the_reference_records(sample: Path, shared_cardiac: Path):
    ours = read_wfdb(sample / "100")
    ref = wfdb.rdrecord(str(shared_cardiac / "100"), sampfrom=19 * 60 * 360, sampto=27 * 60 * 360)
    np.testing.assert_array_equal(np.stack(ours.signals, 1), ref.p_signal)
    a = read_wfdb(sample / "a103l")  # .mat signal file, unchanged copy
    np.testing.assert_array_equal(np.stack(a.signals, 1), wfdb.rdrecord(str(shared_cardiac / "a103l")).p_signal)


def test_read_wfdb_metadata(sample: Path):
    r = read_recording(sample / "s0010_re.hea")
    assert r.leads[:12] == ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    assert r.leads[12:] == ["VX", "VY", "VZ"] and r.fs == [1000.0] * 15 and r.units == ["mV"] * 15
    a = read_recording(sample / "a103l")
    assert a.leads == ["II", "V", "PPG"] and a.units == ["mV", "mV", "NU"] and a.duration_s == 330.0
    # multi-frequency record: MCL1 has 4 samples per 125 Hz frame
    m = read_recording(sample / "03700181")
    assert m.fs == [500.0, 125.0, 125.0] and m.samps_per_frame == [4, 1, 1] and len(m.signals[0]) == 4 * 22500


def test_multisegment_record_reads_as_its_segments(sample: Path):
    whole = read_wfdb(sample / "v102s")
    parts = [wfdb.rdrecord(str(sample / f"v102s_{k}")).p_signal for k in (1, 2, 3)]
    np.testing.assert_array_equal(np.stack(whole.signals, 1), np.concatenate(parts))
    assert int(np.isnan(np.stack(whole.signals)).sum()) == 69  # the record's real gaps
    assert [p.name for p in expand(sample)] == ["03700181", "100", "a103l", "s0010_re", "v102s"]  # no segments


def test_annotations(sample: Path):
    samples, symbols, fs = read_annotations(sample / "100")
    assert fs == 360 and symbols.count("A") == 15 and symbols.count("V") == 1 and samples[0] == 77


@pytest.mark.parametrize("spf", [[1, 1], [4, 1]])
def test_write_wfdb_round_trip(tmp_path: Path, spf: list[int]):
    rng = np.random.default_rng(0)
    n = 1000
    sig = [rng.standard_normal(n * k) for k in spf]
    sig[0][10:30] = np.nan
    out = write_wfdb(tmp_path / "rt", sig, 250.0, ["II", "PPG"], ["mV", "NU"], spf, ["a comment"])
    back = read_wfdb(out)
    assert back.names == ["II", "PPG"] and back.units == ["mV", "NU"] and back.samps_per_frame == spf
    assert back.fs == [250.0 * k for k in spf] and "a comment" in back.comments
    for a, b in zip(back.signals, sig):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        step = np.nanmax(b) - np.nanmin(b)  # 16-bit quantisation: half a step of range / 32000
        assert np.nanmax(np.abs(a - b)) <= step / 32000


def test_arrays_round_trip(tmp_path: Path, ecg):
    x = np.stack([ecg(5.0), ecg(5.0, seed=1)], 1)
    np.savez(tmp_path / "a.npz", signal=x, fs=250.0, sig_name=np.array(["ECG I", "v2"]), units=np.array(["uV", "uV"]))
    r = read_array(tmp_path / "a.npz")
    assert r.leads == ["I", "V2"] and r.units == ["mV", "mV"] and r.fs == [250.0, 250.0]
    np.testing.assert_allclose(r.signals[0], x[:, 0] / 1000)
    np.save(tmp_path / "b.npy", x.T)  # [C, T] is accepted too
    r = read_recording(tmp_path / "b.npy", fs=250.0, leads=["I", "II"])
    np.testing.assert_array_equal(np.stack(r.signals, 1), x)
    t = np.arange(len(x)) / 500.0
    rows = ["time,I,II"] + [f"{a},{b},{c}" for a, b, c in zip(t, x[:, 0], x[:, 1])]
    rows[5] = f"{t[4]},,{x[4, 1]}"  # an empty cell is a gap
    (tmp_path / "c.csv").write_text("\n".join(rows))
    r = read_recording(tmp_path / "c.csv")
    assert r.fs == [pytest.approx(500.0)] * 2 and r.leads == ["I", "II"] and np.isnan(r.signals[0][4])
    np.testing.assert_allclose(r.signals[1], x[:, 1])


def test_array_without_rate_or_names_is_refused(tmp_path: Path):
    np.save(tmp_path / "x.npy", np.zeros((100, 2)))
    with pytest.raises(DataError, match=r"x.npy: expected a sampling rate .*found None"):
        read_recording(tmp_path / "x.npy", leads=["I", "II"])
    with pytest.raises(DataError, match=r"x.npy: expected lead names .*found none"):
        read_recording(tmp_path / "x.npy", fs=250.0)


# ---------------------------------------------------------------------- bad input (issue list)
def test_header_whose_dat_is_missing(tmp_path: Path, sample: Path):
    shutil.copy(sample / "100.hea", tmp_path / "100.hea")
    with pytest.raises(DataError, match=r"100.dat: expected the signal file named in 100.hea, found no such file"):
        read_recording(tmp_path / "100")


def test_signal_file_shorter_than_header_says(tmp_path: Path, sample: Path):
    shutil.copy(sample / "100.hea", tmp_path / "100.hea")
    (tmp_path / "100.dat").write_bytes((sample / "100.dat").read_bytes()[:100_000])
    with pytest.raises(DataError, match=r"100.dat: expected 518400 bytes \(172800 samples per signal, as 100.hea "
                                        r"says\), found 100000 bytes: the signal file is shorter"):
        read_recording(tmp_path / "100")


def test_truncated_segment_of_a_multisegment_record(tmp_path: Path, sample: Path):
    for f in sample.glob("v102s*"):
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "v102s.dat").write_bytes((sample / "v102s.dat").read_bytes()[:1000])
    with pytest.raises(DataError, match=r"v102s.dat: expected 450000 bytes .* found 1000 bytes"):
        read_recording(tmp_path / "v102s")


def test_unknown_lead_name_when_named_leads_are_required(tmp_path: Path, ecg, make_record):
    rec = make_record(tmp_path, "odd", np.stack([ecg(), ecg(seed=2)], 1), 250.0,
                       ["II", "ECG 1"])
    r = read_recording(rec)
    assert prepare(r, PrepConfig()).sources == {"II": "II"}  # default: unknown leads are ignored
    with pytest.raises(DataError, match=r"odd: expected only lead names the model knows .*found unknown lead\(s\) "
                                        r"'ECG 1'"):
        prepare(r, PrepConfig(unknown_leads="error"))


def test_record_with_no_model_lead(shared_cardiac: Path):
    with pytest.raises(DataError, match=r"test01_00s: expected at least one of the model's leads .*found only "
                                        r"'ECG 1', 'ECG 2', 'ECG 3', 'ECG 4'"):
        prepare(read_recording(shared_cardiac / "test01_00s"), PrepConfig())


def test_flat_line_lead(tmp_path: Path, ecg, make_record):
    ii = ecg()
    rec = make_record(tmp_path, "flat", np.stack([ii, np.full_like(ii, 0.3)], 1), 250.0, ["II", "V1"])
    r = read_recording(rec)
    with pytest.raises(DataError, match=r"flat: expected a varying signal in lead 'V1' .*found a flat line "
                                        r"\(std 0 mV over 20.0 s\)"):
        prepare(r, PrepConfig())
    p = prepare(r, PrepConfig(flat_leads="drop"))
    assert p.sources == {"II": "II"} and not p.present[PrepConfig().leads.index("V1")]
    assert "treated as absent" in p.notes[0]


def test_nan_runs_become_gaps_and_too_many_are_refused(tmp_path: Path, ecg, make_record):
    ii = ecg()
    ii[1000:1500] = np.nan  # a 2 s gap
    r = read_recording(make_record(tmp_path, "gap", ii[:, None], 250.0, ["II"]))
    x = prepare(r, PrepConfig()).x[1]
    assert np.isnan(x[1000:1500]).all() and np.isfinite(x[:999]).all() and np.isfinite(x[1501:]).all()
    ii[2000:4500] = np.nan
    r = read_recording(make_record(tmp_path, "holes", ii[:, None], 250.0, ["II"]))
    with pytest.raises(DataError, match=r"holes: expected at most 50% missing samples .*found 60% NaN in NaN runs "
                                        r"\(longest 10.0 s at 8.0 s\)"):
        prepare(r, PrepConfig())


def test_sampling_rate_below_what_the_model_needs(tmp_path: Path, ecg, make_record):
    slow = ecg(20.0, fs=50.0)
    r = read_recording(make_record(tmp_path, "slow", slow[:, None], 50.0, ["II"]))
    with pytest.raises(DataError, match=r"slow: expected a sampling rate of at least 100 Hz \(data.min_fs\) to "
                                        r"resample to the model's 250 Hz, found II at 50 Hz"):
        prepare(r, PrepConfig())


def test_ecg_lead_in_non_voltage_units(tmp_path: Path, ecg, make_record):
    r = read_recording(make_record(tmp_path, "nu", ecg()[:, None], 250.0, ["II"], ["NU"]))
    with pytest.raises(DataError, match=r"nu: expected a voltage unit .* for ECG lead 'II', found unit 'NU'"):
        prepare(r, PrepConfig())
