from __future__ import annotations

import numpy as np
import pytest

from medmae.metrics import psnr, ssim


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
