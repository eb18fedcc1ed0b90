"""Whole-sequence reconstruction scored against the non-learned baseline (interpolation in time)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maecore.models import create_model
from skelmae.data import expand
from skelmae.inference import (
    BASELINE_METHOD,
    interpolate_hidden,
    mm_scale,
    mpjpe,
    reconstruct_motion,
    sequence_clips,
)
from skelmae.io import read_bvh


def _loop_reference(x: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """The benchmark's original per-joint, per-channel ``np.interp`` loop."""
    out = x.copy()
    t = np.arange(len(x))
    for v in range(x.shape[1]):
        s = seen[:, v]
        if s.any():
            for c in range(x.shape[2]):
                out[:, v, c] = np.interp(t, t[s], x[s, v, c])
        else:
            for f in range(len(x)):
                out[f, v] = x[f][seen[f]].mean(0) if seen[f].any() else 0.0
    return out


@pytest.fixture(scope="module")
def dance() -> dict:
    return read_bvh(expand(None)[0])  # 01_01, 240 frames at 30 fps, 31 joints


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    m = create_model("skelmae_graph_tiny")
    m.meta = {"fps": 30.0, "clip_len": 32}
    return m


def _seen(t: int, v: int, ratio: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((t, v)) > ratio


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("ratio", "seed"), [(0.5, 0), (0.9, 1), (0.98, 2)])
def test_vectorised_baseline_equals_the_loop(dance: dict, dtype, ratio: float, seed: int):
    x = dance["positions"][:64].astype(dtype)
    seen = _seen(64, 31, ratio, seed)
    seen[:, 4] = False  # a joint hidden in every frame
    seen[10] = False  # a frame with no seen joint
    assert np.array_equal(interpolate_hidden(x, seen), _loop_reference(x, seen))


def test_baseline_is_exact_on_motion_linear_in_time(dance: dict):
    p = dance["positions"]
    t = np.arange(90, dtype=np.float64)[:, None, None]
    x = p[0] + t * (p[89] - p[0]) / 89  # every joint of a real pose moving at its own constant velocity
    seen = _seen(90, 31, 0.7, 3)
    seen[[0, -1]] = True  # every joint seen before and after each of its hidden frames
    out = interpolate_hidden(x, seen)
    assert np.abs(out - x).max() < 1e-9 and np.abs(out[~seen] - x[~seen]).mean() == pytest.approx(0, abs=1e-10)
    seen[:5, 7], seen[-5:, 7] = False, False  # hidden at the ends: held at the first / last seen value
    out = interpolate_hidden(x, seen)
    first, last = np.nonzero(seen[:, 7])[0][[0, -1]]
    assert np.array_equal(out[:first, 7], np.broadcast_to(x[first, 7], (first, 3)))
    assert np.array_equal(out[last:, 7], np.broadcast_to(x[last, 7], (90 - last, 3)))


def test_baseline_leaves_seen_joints_unchanged_and_never_reads_hidden_ones(dance: dict):
    x = dance["positions"][:48].copy()
    seen = _seen(48, 31, 0.5, 4)
    x[~seen] = np.nan  # what the baseline must not use
    out = interpolate_hidden(x, seen)
    assert np.array_equal(out[seen], x[seen]) and np.isfinite(out).all()


def test_a_joint_hidden_in_every_frame_takes_the_seen_centroid(dance: dict):
    x = dance["positions"][:20]
    seen = _seen(20, 31, 0.3, 5)
    seen[:, [3, 17]] = False
    seen[6] = False
    out = interpolate_hidden(x, seen)
    for f in (0, 11, 19):
        centroid = x[f][seen[f]].mean(0)
        assert np.allclose(out[f, 3], centroid) and np.allclose(out[f, 17], centroid)
        assert np.linalg.norm(centroid - x[f, 3]) > 1e-3  # a guess, not the hidden truth
    assert np.array_equal(out[6, [3, 17]], np.zeros((2, 3)))  # no seen joint in the frame at all


def test_baseline_and_score_errors():
    with pytest.raises(ValueError, match=r"x \[T, V, C\] and seen \[T, V\], got \(4, 3, 2\) and \(4, 2\)"):
        interpolate_hidden(np.zeros((4, 3, 2)), np.ones((4, 2), dtype=bool))
    with pytest.raises(ValueError, match=r"x \[T, V, C\] and seen \[T, V\], got \(4, 3\) and \(4, 3\)"):
        interpolate_hidden(np.zeros((4, 3)), np.ones((4, 3), dtype=bool))
    with pytest.raises(ValueError, match="mm_per_unit must be a positive number of millimetres per 'BVH file units'"):
        mm_scale("BVH file units", 0.0)
    with pytest.raises(ValueError, match="mm_per_unit must be a positive number.*got nan"):
        mm_scale("metres", float("nan"))
    assert mm_scale("metres") == 1000.0 and mm_scale("BVH file units") is None and mm_scale("as stored", 56.4) == 56.4


def test_mpjpe_is_the_mean_distance_over_the_mask():
    truth = np.zeros((2, 3, 3))
    pred = truth.copy()
    pred[0, 1] = [3.0, 4.0, 0.0]  # 5 away
    pred[1, 2] = [0.0, 0.0, 100.0]  # not scored
    mask = np.zeros((2, 3), dtype=bool)
    mask[0, 1] = mask[1, 0] = True
    assert mpjpe(pred, truth, mask) == pytest.approx(2.5)
    assert mpjpe(pred, truth, np.zeros((2, 3), dtype=bool)) is None


def test_clips_laid_end_to_end_are_the_sequence(model: torch.nn.Module, dance: dict):
    seq, clips = sequence_clips(model, dance)
    assert [int(c["start"]) for c in clips] == list(range(0, 240, 32))
    assert sum(int(c["valid"].any(-1).sum()) for c in clips) == len(seq["positions"]) == 240
    assert not clips[-1]["valid"][16:].any()  # the last one padded, not overlapping the one before


@pytest.mark.parametrize("index", [0, 11])  # 240 frames (the last clip padded) and 37 frames
def test_reconstruct_scores_model_and_baseline_on_the_same_joints(model: torch.nn.Module, index: int):
    motion = read_bvh(expand(None)[index])
    res = reconstruct_motion(model, motion, seed=3)
    truth, mask, base = motion["positions"], res["mask"], res["baseline_positions"]
    assert 0.3 < mask.mean() < 0.7 and res["scored_joints"] == int(mask.sum())
    assert np.array_equal(base[~mask], truth[~mask]) and np.array_equal(res["positions"][~mask], truth[~mask])
    # the baseline saw exactly the joints the model saw, clip by clip (30 fps input: no resampling)
    for s in range(0, len(truth), 32):
        block = slice(s, s + 32)
        guess = interpolate_hidden(truth[block], motion["valid"][block] & ~mask[block])
        assert np.allclose(base[block], guess, atol=1e-3), s
    err = np.linalg.norm(res["positions"][mask] - truth[mask], axis=-1).mean()
    base_err = np.linalg.norm(base[mask] - truth[mask], axis=-1).mean()
    assert res["masked_mpjpe"] == pytest.approx(err) and res["baseline_masked_mpjpe"] == pytest.approx(base_err)
    assert np.isfinite([err, base_err]).all() and 0 < base_err < err  # an untrained model loses to the baseline
    assert res["baseline_method"] == BASELINE_METHOD and "masked_mpjpe_mm" not in res  # BVH units: mm unknown


def test_reconstruct_in_mm_when_the_scale_is_given(model: torch.nn.Module, dance: dict):
    res = reconstruct_motion(model, dance, mm_per_unit=56.4)
    assert res["mm_per_unit"] == 56.4
    assert res["masked_mpjpe_mm"] == pytest.approx(res["masked_mpjpe"] * 56.4)
    assert res["baseline_masked_mpjpe_mm"] == pytest.approx(res["baseline_masked_mpjpe"] * 56.4)
    with pytest.raises(ValueError, match="mm_per_unit must be a positive number.*got -1.0"):
        reconstruct_motion(model, dance, mm_per_unit=-1.0)
    metres = {**dance, "positions": dance["positions"] * 0.0564, "units": "metres"}
    res_m = reconstruct_motion(model, metres)
    assert res_m["mm_per_unit"] == 1000.0 and res_m["baseline_masked_mpjpe_mm"] == pytest.approx(
        res["baseline_masked_mpjpe_mm"], rel=1e-3
    )
