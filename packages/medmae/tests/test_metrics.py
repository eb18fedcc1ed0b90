from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from medmae.metrics import psnr, rescaled_baseline, ssim


def test_identical_volumes():
    rng = np.random.default_rng(0)
    x = rng.random((12, 12, 12))
    assert psnr(x, x) == float("inf")
    assert ssim(x, x) == pytest.approx(1.0)


def test_noise_lowers_both_and_psnr_matches_its_formula():
    rng = np.random.default_rng(1)
    x = np.zeros((16, 16, 16))
    x[4:12, 4:12, 4:12] = 1.0
    noisy = x + rng.normal(0, 0.1, x.shape)
    noisier = x + rng.normal(0, 0.3, x.shape)
    assert psnr(noisy, x) == pytest.approx(10 * np.log10(1.0 / np.mean((noisy - x) ** 2)))
    assert psnr(noisy, x) > psnr(noisier, x)
    assert 1 > ssim(noisy, x) > ssim(noisier, x)


def test_mask_and_shape_errors():
    x = np.ones((4, 4, 4))
    with pytest.raises(ValueError, match="same shape"):
        psnr(x, np.ones((4, 4, 5)))
    with pytest.raises(ValueError, match="at least one voxel"):
        ssim(x, x, np.zeros_like(x, bool))


def _bundled(case, *mods: str) -> list[np.ndarray]:
    return [np.asarray(nib.load(str(case / f"TCGA-DU-7294_{m}.nii.gz")).dataobj, dtype=np.float64) for m in mods]


def test_rescaled_baseline_picks_the_input_a_line_maps_onto_the_target(bundled_case):
    t1, t2, t1c = _bundled(bundled_case, "t1", "t2", "t1c")
    brain = (t1 != 0) | (t2 != 0)
    target = np.where(brain, 3.0 * t2 - 0.5, 0.0)  # a line of t2 exactly
    name, r, vol = rescaled_baseline({"t1": t1, "t2": t2}, target, brain)
    assert name == "t2" and r == pytest.approx(1.0) and psnr(vol, target, brain) > 100 and (vol[~brain] == 0).all()
    # the real t1c: some line of the better-correlated input, never better than a perfect synthesis
    name, r_best, vol = rescaled_baseline({"t1": t1, "t2": t2}, t1c, brain)
    r = {m: abs(np.corrcoef(v[brain], t1c[brain])[0, 1]) for m, v in (("t1", t1), ("t2", t2))}
    assert name == max(r, key=r.get) and r_best == pytest.approx(r[name]) and 10 < psnr(vol, t1c, brain) < 40
    # fitted on one half, applied to the other: the line of the first half, on the second half's voxels
    half = t1.shape[0] // 2
    fit, held = (slice(None, half),), (slice(half, None),)
    name, _, vol = rescaled_baseline({"t1": t1[fit], "t2": t2[fit]}, t1c[fit], brain[fit],
                                     apply_to={"t1": t1[held], "t2": t2[held]}, apply_mask=brain[held])
    a, b = np.polyfit({"t1": t1, "t2": t2}[name][fit][brain[fit]], t1c[fit][brain[fit]], 1)
    np.testing.assert_allclose(vol, np.where(brain[held], a * {"t1": t1, "t2": t2}[name][held] + b, 0.0))


def test_rescaled_baseline_skips_flat_inputs_and_checks_shapes():
    rng = np.random.default_rng(0)
    target, mask = rng.random((6, 6, 6)), np.ones((6, 6, 6), bool)
    assert rescaled_baseline({"flat": np.ones((6, 6, 6))}, target, mask) is None
    assert rescaled_baseline({"flat": np.ones((6, 6, 6)), "noise": rng.random((6, 6, 6))}, target, mask)[0] == "noise"
    with pytest.raises(ValueError, match="the mask must have the volumes' shape"):
        rescaled_baseline({"t1": rng.random((6, 6, 6))}, target, mask, {"t1": rng.random((4, 6, 6))}, mask)
    with pytest.raises(ValueError, match="same shape"):
        rescaled_baseline({"t1": np.ones((6, 6, 5))}, target, mask)
