"""Fuzz the BVH reader: truncated, byte-flipped and line-mangled copies of a real file end in a
DataError naming the file, or read into finite positions of the declared shape; never another
exception or a hang."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maecore.errors import DataError
from maecore.testing import damage
from skelmae.data import expand
from skelmae.io import read_bvh

SOURCE = expand(None)[-1].read_bytes()  # 09_03.bvh, 32 frames


def _check(path: Path, blob: bytes) -> None:
    path.write_bytes(blob)
    try:
        m = read_bvh(path)
    except DataError as err:
        assert path.name in str(err)
        return
    pos = m["positions"]
    assert pos.ndim == 3 and pos.shape[2] == 3 and pos.shape[1] == m["topology"].n_joints
    assert np.isfinite(pos).all() and m["fps"] > 0 and m["valid"].all()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.floats(0.0, 1.0), flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=8))
def test_truncations_and_byte_flips(tmp_path: Path, cut: float, flips: list[tuple[float, int]]):
    blob = damage(SOURCE, cut, flips)
    _check(tmp_path / "fuzz.bvh", blob)


TOKENS = st.sampled_from(
    [
        "{",
        "}",
        "JOINT",
        "End",
        "Site",
        "OFFSET",
        "CHANNELS",
        "3",
        "6",
        "nan",
        "inf",
        "-1e400",
        "MOTION",
        "Frames:",
        "Frame",
        "Time:",
        "0",
        "x",
        "Xrotation",
        "ROOT",
        "",
    ]
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.floats(0, 1), TOKENS), min_size=1, max_size=4))
def test_token_edits(tmp_path: Path, edits: list[tuple[float, str]]):
    lines = SOURCE.decode().splitlines()
    for where, token in edits:
        i = int(where * (len(lines) - 1))
        words = lines[i].split() or [""]
        words[int(where * 997) % len(words)] = token
        lines[i] = " ".join(words)
    _check(tmp_path / "edit.bvh", "\n".join(lines).encode())


@pytest.mark.parametrize(
    "text", ["", "HIERARCHY\n", "MOTION\nFrames: 1\nFrame Time: 1\n0\n", "HIERARCHY\nROOT\nMOTION\n"]
)
def test_degenerate_files(tmp_path: Path, text: str):
    with pytest.raises(DataError, match=r"bad.bvh: expected"):
        (tmp_path / "bad.bvh").write_text(text)
        read_bvh(tmp_path / "bad.bvh")


def _ntu_source(tmp: Path, write_ntu) -> bytes:
    """An NTU .skeleton text file holding real motion: the first 25 joints of a bundled CMU
    sequence in metres, 12 frames, two tracked bodies (the second one still)."""
    pos = read_bvh(expand(None)[0])["positions"][:12, :25] * 0.0564
    still = pos[0] + np.array([1.0, 0.0, 0.0])
    return write_ntu(tmp / "src.skeleton", [[frame, still] for frame in pos]).read_bytes()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.floats(0.0, 1.0), flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=8))
def test_ntu_truncations_and_byte_flips(tmp_path: Path, write_ntu, cut: float, flips: list[tuple[float, int]]):
    from skelmae.io import read_ntu

    source = _ntu_source(tmp_path, write_ntu)
    blob = damage(source, cut, flips)
    path = tmp_path / "fuzz.skeleton"
    path.write_bytes(blob)
    try:
        m = read_ntu(path)
    except DataError as err:
        assert path.name in str(err)
        return
    pos = m["positions"]
    assert pos.ndim == 3 and pos.shape[1:] == (25, 3) and len(pos) <= 12
    assert np.isfinite(pos[m["valid"]]).all() if "valid" in m else np.isfinite(pos).all()
