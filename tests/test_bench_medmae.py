"""bench_medmae's ceiling of a linear output head (what a perfect network behind it could reach)."""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "shared" / "bench"))

import bench_medmae  # noqa: E402

from maecore.config import ConfigError  # noqa: E402
from medmae import sample_dir  # noqa: E402


def _t1c_block() -> np.ndarray:
    """A 42 x 30 x 22 block from the middle of the bundled case's T1c (real data), z-scored."""
    vol = np.asarray(nib.load(sample_dir() / "TCGA-DU-7294" / "TCGA-DU-7294_t1c.nii.gz").dataobj, dtype=np.float64)
    c = [n // 2 for n in vol.shape]
    block = vol[c[0] - 21 : c[0] + 21, c[1] - 15 : c[1] + 15, c[2] - 11 : c[2] + 11]
    return (block - block.mean()) / block.std()


def test_head_ceiling_grows_with_the_width_and_is_exact_at_full_rank():
    vol = _t1c_block()
    train, test = vol[:26], vol[26:]  # test: 16 x 30 x 22, so partial patches on two axes
    patch = (4, 4, 4)
    errors = []
    for width in (0, 4, 16, 64):
        out = bench_medmae.head_ceiling(train, test, patch, width)
        assert out.shape == test.shape
        errors.append(float(np.mean((out - test) ** 2)))
    assert errors == sorted(errors, reverse=True) and errors[0] > 10 * errors[2]
    assert errors[-1] < 1e-12  # 64 components span every 4^3 patch
    # width 0: every patch is the training part's mean patch
    mean = np.lib.stride_tricks.sliding_window_view(train, patch)[::2, ::2, ::2].reshape(-1, 64).mean(0)
    np.testing.assert_allclose(bench_medmae.head_ceiling(train, test, patch, 0)[4:8, :4, 8:12], mean.reshape(patch))


def test_set_overrides_reach_the_pretrained_config_and_unknown_keys_are_refused():
    cfg = bench_medmae.tiny_config(5, ["model.decoder_dim=128", "train.lr=0.003"])
    assert cfg["model"]["decoder_dim"] == 128 and cfg["train"]["lr"] == 0.003 and cfg["train"]["max_steps"] == 5
    with pytest.raises(ConfigError, match="unknown config key 'model.decoder_width'"):
        bench_medmae.tiny_config(5, ["model.decoder_width=128"])
