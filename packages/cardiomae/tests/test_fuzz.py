"""Fuzz the WFDB reader: truncated and byte-flipped copies of real records (header text, format-212
`.dat`, `.mat` signal file) end in DataError naming the record, or read into signals of the
length and count the header promises; never another exception or a hang."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cardiomae.io import read_recording
from maecore.errors import DataError
from maecore.testing import damage

CASES = {  # record -> file of it that gets damaged
    "100.hea": "100", "100.dat": "100", "a103l.hea": "a103l", "a103l.mat": "a103l", "v102s.hea": "v102s",
}


@pytest.mark.parametrize("target", sorted(CASES))
def test_truncations_and_byte_flips(target: str, sample: Path, tmp_path_factory: pytest.TempPathFactory):
    record = CASES[target]
    tmp = tmp_path_factory.mktemp("fuzz")
    for f in sample.glob(f"{record}*"):
        shutil.copy(f, tmp / f.name)
    data = (sample / target).read_bytes()
    clean = read_recording(tmp / record)

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(cut=st.floats(0.0, 1.0), flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=6))
    def check(cut: float, flips: list[tuple[float, int]]) -> None:
        blob = damage(data, cut, flips)
        (tmp / target).write_bytes(blob)
        try:
            rec = read_recording(tmp / record)
        except DataError as err:
            assert record in str(err)
            return
        assert len(rec.signals) == len(rec.names) == len(rec.fs) and rec.signals
        for sig, fs in zip(rec.signals, rec.fs):
            assert sig.ndim == 1 and fs > 0 and np.isfinite(fs)
        if target.endswith((".dat", ".mat")):  # a damaged signal file never changes the layout
            assert [len(s) for s in rec.signals] == [len(s) for s in clean.signals]

    check()
