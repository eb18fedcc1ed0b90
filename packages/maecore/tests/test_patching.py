"""Patchify / unpatchify in 1D, 2D and 3D, grid helpers and fixed sin-cos codes."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from maecore.patching import as_patch_size, grid_coords, grid_shape, patchify, sincos_embed, unpatchify


@pytest.mark.parametrize(
    ("shape", "patch"),
    [
        ((2, 3, 12), (4,)),  # 1D, three channels
        ((1, 1, 10), (5,)),  # 1D, odd patch
        ((2, 2, 8, 12), (4, 2)),  # 2D, non-square image and patch
        ((3, 3, 6, 4), (2, 4)),  # 2D, taller than wide
        ((1, 3, 4, 8, 6), (2, 4, 3)),  # 3D, every axis different
        ((2, 1, 2, 2, 2), (1, 1, 1)),  # 3D, one voxel per patch
    ],
)
def test_patchify_round_trip_is_exact(shape, patch):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    tok = patchify(x, patch)
    grid = grid_shape(shape[2:], patch)
    assert tok.shape == (shape[0], math.prod(grid), shape[1] * math.prod(patch))
    assert torch.equal(unpatchify(tok, patch, grid, shape[1]), x)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 3).flatmap(
        lambda n: st.tuples(st.lists(st.integers(1, 3), min_size=n, max_size=n),
                            st.lists(st.integers(1, 3), min_size=n, max_size=n))
    ),
    st.integers(1, 3),
)
def test_patchify_round_trip_for_any_shape(grid_patch, channels):
    grid, patch = grid_patch
    x = torch.randn(2, channels, *(g * p for g, p in zip(grid, patch)))
    tok = patchify(x, patch)
    assert tok.shape == (2, math.prod(grid), channels * math.prod(patch))
    assert torch.equal(unpatchify(tok, patch, grid, channels), x)


def test_patchify_accepts_a_non_contiguous_input():
    x = torch.randn(2, 8, 12, 3).permute(0, 3, 1, 2)  # [B, C, H, W] view of channels-last memory
    tok = patchify(x, (4, 4))
    assert torch.equal(unpatchify(tok, (4, 4), (2, 3), 3), x)


def test_token_order_by_hand_2d():
    # a 2 x 4 image, patch 2: two tokens, left then right, each row-major inside the patch
    x = torch.tensor([[0.0, 1, 2, 3], [4, 5, 6, 7]]).reshape(1, 1, 2, 4)
    tok = patchify(x, (2, 2))
    assert tok.tolist() == [[[0, 1, 4, 5], [2, 3, 6, 7]]]


def test_token_order_channel_first_within_a_token():
    x = torch.arange(16.0).reshape(1, 2, 2, 4)  # channel 0 holds 0..7, channel 1 holds 8..15
    tok = patchify(x, (2, 2))
    assert tok[0, 0].tolist() == [0, 1, 4, 5, 8, 9, 12, 13]
    assert tok[0, 1].tolist() == [2, 3, 6, 7, 10, 11, 14, 15]


def test_token_order_is_row_major_over_the_grid():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    tok = patchify(x, (2, 2))  # grid 2 x 2: top-left, top-right, bottom-left, bottom-right
    assert tok[0, :, 0].tolist() == [0, 2, 8, 10]


def test_token_order_1d_and_3d():
    assert patchify(torch.arange(6.0).reshape(1, 1, 6), (2,))[0].tolist() == [[0, 1], [2, 3], [4, 5]]
    x = torch.arange(8.0).reshape(1, 1, 2, 2, 2)
    tok = patchify(x, (1, 2, 2))  # two depth slices
    assert tok[0].tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]


@pytest.mark.parametrize(
    ("spatial", "patch", "message"),
    [
        ((10,), (4,), r"spatial size \(10,\) is not a positive multiple of the patch size \(4,\)"),
        ((8, 6), (4, 4), r"spatial size \(8, 6\) is not a positive multiple of the patch size \(4, 4\)"),
        ((2, 8), (4, 4), r"spatial size \(2, 8\) is not a positive multiple"),  # smaller than the patch
        ((0, 8), (4, 4), r"spatial size \(0, 8\) is not a positive multiple"),  # empty axis
        ((8, 8), (4,), r"input has 2 spatial dims \(8, 8\), patch has 1"),
    ],
)
def test_grid_shape_errors(spatial, patch, message):
    with pytest.raises(ValueError, match=message):
        grid_shape(spatial, patch)


def test_grid_shape_values():
    assert grid_shape((8, 12, 6), (4, 4, 3)) == (2, 3, 2)


def test_patchify_rejects_a_non_multiple_input():
    with pytest.raises(ValueError, match=r"spatial size \(9, 8\) is not a positive multiple of the patch size \(4, 4\)"):
        patchify(torch.zeros(1, 1, 9, 8), (4, 4))


@pytest.mark.parametrize(
    ("shape", "grid", "channels", "message"),
    [
        ((1, 5, 8), (2, 2), 2, r"tokens \[1, 5, 8\] do not match grid \(2, 2\), patch \(2, 2\), channels 2"),
        ((1, 4, 8), (2, 2), 3, r"tokens \[1, 4, 8\] do not match grid \(2, 2\), patch \(2, 2\), channels 3"),
    ],
)
def test_unpatchify_errors(shape, grid, channels, message):
    with pytest.raises(ValueError, match=message):
        unpatchify(torch.zeros(shape), (2, 2), grid, channels)


@pytest.mark.parametrize(
    ("patch", "ndim", "expected"), [(4, 2, (4, 4)), (3, 1, (3,)), ([2, 4, 1], 3, (2, 4, 1))]
)
def test_as_patch_size(patch, ndim, expected):
    assert as_patch_size(patch, ndim) == expected


@pytest.mark.parametrize(
    ("patch", "ndim", "message"),
    [
        ([4], 2, r"patch size must be 2 positive integers, got \[4\]"),
        (0, 2, r"patch size must be 2 positive integers, got 0"),
        ((4, -1), 2, r"patch size must be 2 positive integers, got \(4, -1\)"),
    ],
)
def test_as_patch_size_errors(patch, ndim, message):
    with pytest.raises(ValueError, match=message):
        as_patch_size(patch, ndim)


def test_grid_coords_in_c_order():
    assert grid_coords((2, 3)).tolist() == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]
    assert grid_coords((4,)).tolist() == [[0], [1], [2], [3]]
    assert grid_coords((2, 2, 2))[5].tolist() == [1, 0, 1]


@pytest.mark.parametrize(("lead", "c", "dim"), [((12,), 2, 16), ((2, 5), 3, 24), ((7,), 1, 8)])
def test_sincos_embed_shape(lead, c, dim):
    assert sincos_embed(torch.zeros(*lead, c), dim).shape == (*lead, dim)


def test_sincos_embed_at_the_origin_is_sin_0_and_cos_0():
    code = sincos_embed(torch.zeros(1, 2), 16)  # two axes, 8 dims each: 4 sin then 4 cos
    assert code[0].tolist() == [0.0] * 4 + [1.0] * 4 + [0.0] * 4 + [1.0] * 4


def test_sincos_embed_values_at_a_known_coordinate():
    # one axis, dim 8: frequencies 10000 ** (-k / 4) for k = 0..3
    code = sincos_embed(torch.tensor([[2.0]]), 8)[0]
    omega = [1.0, 0.1, 0.01, 0.001]
    expected = [math.sin(2 * w) for w in omega] + [math.cos(2 * w) for w in omega]
    assert torch.allclose(code, torch.tensor(expected), atol=1e-6)


def test_sincos_embed_axes_are_independent_blocks():
    code = sincos_embed(torch.tensor([[3.0, 0.0]]), 16)[0]
    assert torch.equal(code[8:], sincos_embed(torch.zeros(1, 2), 16)[0, 8:])  # second axis still at 0
    assert torch.equal(code[:8], sincos_embed(torch.tensor([[3.0]]), 8)[0])


def test_sincos_embed_gives_distinct_codes_for_distinct_cells():
    code = sincos_embed(grid_coords((6, 7)), 32)
    dist = torch.cdist(code, code)
    off_diagonal = dist[~torch.eye(42, dtype=torch.bool)]
    assert off_diagonal.min() > 0.1


def test_sincos_embed_pads_leftover_dims_with_zeros():
    code = sincos_embed(grid_coords((3, 3, 3)), 10)  # 3 axes x 2 dims = 6 used, 4 left over
    assert torch.equal(code[:, 6:], torch.zeros(27, 4))
    assert code[:, :6].abs().sum() > 0


@pytest.mark.parametrize(("c", "dim"), [(3, 4), (2, 3), (1, 1)])
def test_sincos_embed_too_small_dim(c, dim):
    with pytest.raises(ValueError, match=rf"embedding dim {dim} is too small for {c} coordinate axes"):
        sincos_embed(torch.zeros(2, c), dim)
