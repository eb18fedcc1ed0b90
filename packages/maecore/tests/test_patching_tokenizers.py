"""Patchify / unpatchify, sin-cos codes and the group patch tokenizer."""

from __future__ import annotations

import pytest
import torch

from maecore.patching import grid_coords, grid_shape, patchify, sincos_embed, unpatchify
from maecore.tokenizers import PatchTokenizer


@pytest.mark.parametrize(
    ("shape", "patch"),
    [((2, 3, 12), (4,)), ((2, 2, 8, 12), (4, 2)), ((1, 3, 4, 8, 6), (2, 4, 3))],
)
def test_patchify_round_trip_is_exact(shape, patch):
    x = torch.randn(*shape)
    tok = patchify(x, patch)
    grid = grid_shape(shape[2:], patch)
    assert tok.shape == (shape[0], torch.Size(grid).numel(), shape[1] * torch.Size(patch).numel())
    assert torch.equal(unpatchify(tok, patch, grid, shape[1]), x)


def test_patchify_token_order_by_hand():
    x = torch.arange(16.0).reshape(1, 1, 2, 8)  # rows 0..7 and 8..15
    tok = patchify(x, (2, 2))
    assert tok.shape == (1, 4, 4)
    assert tok[0, 0].tolist() == [0, 1, 8, 9]
    assert tok[0, 3].tolist() == [6, 7, 14, 15]


def test_grid_shape_errors():
    with pytest.raises(ValueError, match=r"spatial size \(10,\) is not a positive multiple of the patch size \(4,\)"):
        grid_shape((10,), (4,))
    with pytest.raises(ValueError, match=r"input has 2 spatial dims \(8, 8\), patch has 1"):
        grid_shape((8, 8), (4,))


def test_sincos_embed_values():
    coords = grid_coords((3, 4))
    code = sincos_embed(coords, 16)
    assert code.shape == (12, 16)
    # first axis: coordinate 0 gives sin 0 = 0 and cos 0 = 1
    assert torch.allclose(code[0, :4], torch.zeros(4)) and torch.allclose(code[0, 4:8], torch.ones(4))
    assert len({tuple(r.tolist()) for r in code}) == 12
    with pytest.raises(ValueError, match=r"embedding dim 4 is too small for 3 coordinate axes"):
        sincos_embed(torch.zeros(2, 3), 4)


CASES = [(1, (48,), 4, [2, 1]), (2, (8, 12), 4, [3, 1, 1]), (3, (8, 8, 4), 4, [1, 1])]


@pytest.mark.parametrize(("ndim", "spatial", "patch", "groups"), CASES)
def test_untokenize_inverts_targets_with_unequal_groups(ndim, spatial, patch, groups):
    tk = PatchTokenizer(ndim, groups, patch, 16)
    x = torch.randn(2, sum(groups), *spatial)
    batch = {"x": x}
    tokens = tk.tokens(batch)
    n = torch.Size(tk.grid(batch)).numel()
    assert tokens.x.shape == (2, len(groups) * n, 16)
    assert torch.equal(tk.untokenize(tk.targets(batch), batch), x)
    assert tokens.group[0].tolist() == [g for g in range(len(groups)) for _ in range(n)]
    assert torch.equal(tokens.pos[0, :n], grid_coords(tk.grid(batch)))
    valid = tk.target_valid()
    assert valid.shape == (len(groups), max(groups) * patch**ndim)
    assert valid.sum(1).tolist() == [g * patch**ndim for g in groups]


def test_group_pad_and_unmeasured_values_become_padding():
    tk = PatchTokenizer(2, [1, 1], 4, 8)
    x = torch.randn(2, 2, 8, 8)
    x[0, 0, 0, 0] = float("nan")  # one value in the first patch of group 0, sample 0
    valid = torch.ones(2, 2, 8, 8, dtype=torch.bool)
    valid[1, 1, 4:, 4:] = False  # the last patch of group 1, sample 1
    tokens = tk.tokens({"x": x, "valid": valid, "group_pad": torch.tensor([[False, True], [False, False]])})
    pad = tokens.pad.reshape(2, 2, 4)
    assert pad[0, 0].tolist() == [True, False, False, False]
    assert pad[0, 1].all()  # group 1 absent for sample 0
    assert pad[1, 0].sum() == 0 and pad[1, 1].tolist() == [False, False, False, True]
    assert torch.isfinite(tokens.x).all()


def test_tokenizer_errors():
    tk = PatchTokenizer(2, [2, 1], 4, 8)
    with pytest.raises(ValueError, match=r"expected 3 channels \(groups \{'g0': 2, 'g1': 1\}\), got 4"):
        tk.tokens({"x": torch.zeros(1, 4, 8, 8)})
    with pytest.raises(ValueError, match=r"expected input \[B, C, S, S\] with 2 spatial dims, got shape \[1, 3, 8\]"):
        tk.tokens({"x": torch.zeros(1, 3, 8)})
    with pytest.raises(ValueError, match=r"group_names must be 2 distinct names, got \['a', 'a'\]"):
        PatchTokenizer(2, [1, 1], 4, 8, ["a", "a"])
    with pytest.raises(ValueError, match=r"ndim must be 1, 2 or 3, got 4"):
        PatchTokenizer(4, [1], 4, 8)
    with pytest.raises(ValueError, match=r"patch size must be 2 positive integers, got \[4\]"):
        PatchTokenizer(2, [1], [4], 8)
