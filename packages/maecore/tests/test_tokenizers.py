"""The generic patch tokenizer: exact round trips, token order, padding, targets, errors."""

from __future__ import annotations

import math

import pytest
import torch

from maecore.patching import grid_coords, patchify
from maecore.tokenizers import PatchTokenizer
from maecore.tokens import Tokenizer

GEOMETRIES = [(1, (24,), 4), (2, (8, 12), (4, 2)), (3, (4, 8, 6), (2, 4, 3))]
GROUPS = [[1], [2, 1], [3, 1, 1]]


def _x(groups: list[int], spatial: tuple[int, ...], b: int = 2) -> torch.Tensor:
    return torch.randn(b, sum(groups), *spatial, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("groups", GROUPS)
@pytest.mark.parametrize(("ndim", "spatial", "patch"), GEOMETRIES)
def test_untokenize_inverts_targets_exactly(ndim, spatial, patch, groups):
    tk = PatchTokenizer(ndim, groups, patch, 8)
    batch = {"x": _x(groups, spatial)}
    targets = tk.targets(batch)
    n = math.prod(tk.grid(batch))
    assert targets.shape == (2, len(groups) * n, tk.target_dim)
    assert torch.equal(tk.untokenize(targets, batch), batch["x"])


@pytest.mark.parametrize(("ndim", "spatial", "patch"), GEOMETRIES)
def test_targets_are_each_groups_patches_zero_padded(ndim, spatial, patch):
    tk = PatchTokenizer(ndim, [3, 1, 1], patch, 8)
    x = _x([3, 1, 1], spatial)
    targets = tk.targets({"x": x})
    vox = math.prod(tk.patch)
    n = math.prod(tk.grid({"x": x}))
    assert tk.target_dim == 3 * vox
    assert torch.equal(targets[:, :n], patchify(x[:, 0:3], tk.patch))
    for g, ch in ((1, 3), (2, 4)):
        block = targets[:, g * n : (g + 1) * n]
        assert torch.equal(block[..., :vox], patchify(x[:, ch : ch + 1], tk.patch))
        assert torch.equal(block[..., vox:], torch.zeros_like(block[..., vox:]))


def test_target_valid_table():
    tk = PatchTokenizer(2, [2, 1, 3], 2, 8)  # 4 voxels per patch, P = 12
    t = [True] * 12
    assert tk.target_valid().tolist() == [[True] * 8 + [False] * 4, [True] * 4 + [False] * 8, t]
    assert PatchTokenizer(1, [2, 2], 3, 8).target_valid().all()


@pytest.mark.parametrize("groups", GROUPS)
@pytest.mark.parametrize(("ndim", "spatial", "patch"), GEOMETRIES)
def test_token_order_is_group_major(ndim, spatial, patch, groups):
    tk = PatchTokenizer(ndim, groups, patch, 8)
    batch = {"x": _x(groups, spatial, b=3)}
    tokens = tk.tokens(batch)
    grid = tk.grid(batch)
    n = math.prod(grid)
    expected_group = torch.arange(len(groups)).repeat_interleave(n)
    assert tokens.x.shape == (3, len(groups) * n, 8)
    assert tokens.pos.shape == (3, len(groups) * n, ndim)
    for b in range(3):
        assert torch.equal(tokens.group[b], expected_group)
        assert torch.equal(tokens.pos[b], grid_coords(grid).repeat(len(groups), 1))
    assert not tokens.pad.any()


def test_token_embedding_is_projection_plus_group_embedding():
    tk = PatchTokenizer(2, [2, 1], 4, 8)
    x = _x([2, 1], (8, 12))
    tokens = tk.tokens({"x": x})
    with torch.no_grad():
        g0 = tk.proj[0](patchify(x[:, :2], (4, 4))) + tk.group_embed[0]
        g1 = tk.proj[1](patchify(x[:, 2:], (4, 4))) + tk.group_embed[1]
    assert torch.allclose(tokens.x, torch.cat([g0, g1], 1))


def test_group_pad_marks_every_token_of_that_group():
    tk = PatchTokenizer(2, [1, 2, 1], 4, 8)
    group_pad = torch.tensor([[False, True, False], [True, False, True]])
    tokens = tk.tokens({"x": _x([1, 2, 1], (8, 8)), "group_pad": group_pad})
    pad = tokens.pad.reshape(2, 3, 4)  # [B, G, N]
    assert torch.equal(pad, group_pad[:, :, None].expand(2, 3, 4))


def test_nan_values_pad_only_the_affected_patches():
    tk = PatchTokenizer(2, [2, 1], 4, 8)
    x = _x([2, 1], (8, 8))
    x[0, 1, 0, 0] = float("nan")  # group 0, patch 0 of sample 0 (second channel of the group)
    x[0, 2, 5, 6] = float("inf")  # group 1, patch 3 of sample 0
    x[1, 0, 3, 4] = float("nan")  # group 0, patch 1 of sample 1
    tokens = tk.tokens({"x": x})
    expected = torch.zeros(2, 2, 4, dtype=torch.bool)
    expected[0, 0, 0] = expected[0, 1, 3] = expected[1, 0, 1] = True
    assert torch.equal(tokens.pad.reshape(2, 2, 4), expected)
    assert int(tokens.pad.sum()) == 3
    assert torch.isfinite(tokens.x).all() and torch.isfinite(tk.targets({"x": x})).all()


def test_unmeasured_values_become_zero_in_the_targets():
    tk = PatchTokenizer(1, [1], 2, 8)
    x = torch.tensor([[[1.0, float("nan"), 3.0, 4.0]]])
    assert tk.targets({"x": x}).tolist() == [[[1.0, 0.0], [3.0, 4.0]]]


@pytest.mark.parametrize(
    ("valid_channels", "n_pad"),
    [
        (3, 3),  # per channel: only group 1's patches 2 and 3 of sample 1, plus group 0's patch 0
        (1, 6),  # one mask for every channel: the same patches in both groups
    ],
)
def test_valid_false_pads_only_the_affected_patches(valid_channels, n_pad):
    tk = PatchTokenizer(2, [2, 1], 4, 8)
    x = _x([2, 1], (8, 8))
    valid = torch.ones(2, valid_channels, 8, 8, dtype=torch.bool)
    valid[1, -1, 4:, 1:6] = False  # spans patches 2 and 3 (bottom row)
    valid[0, 0, 2, 2] = False  # patch 0
    tokens = tk.tokens({"x": x, "valid": valid})
    pad = tokens.pad.reshape(2, 2, 4)
    assert int(pad.sum()) == n_pad
    assert pad[1, 1].tolist() == [False, False, True, True]
    assert pad[0, 0].tolist() == [True, False, False, False]
    if valid_channels == 1:
        assert pad[1, 0].tolist() == [False, False, True, True] and pad[0, 1].tolist() == [True, False, False, False]


def test_group_pad_and_valid_combine():
    tk = PatchTokenizer(1, [1, 1], 2, 8)
    x = torch.zeros(1, 2, 8)
    valid = torch.ones(1, 2, 8, dtype=torch.bool)
    valid[0, 0, 7] = False
    tokens = tk.tokens({"x": x, "valid": valid, "group_pad": torch.tensor([[False, True]])})
    assert tokens.pad[0].tolist() == [False, False, False, True] + [True] * 4


def test_is_a_tokenizer():
    tk = PatchTokenizer(3, [1, 1], 2, 8, group_names=["t1", "flair"])
    assert isinstance(tk, Tokenizer)
    assert (tk.n_groups, tk.group_names, tk.coord_dim, tk.target_dim, tk.in_channels) == (2, ["t1", "flair"], 3, 8, 2)


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        ({"x": torch.zeros(1, 4, 8, 8)}, r"expected 3 channels \(groups \{'g0': 2, 'g1': 1\}\), got 4"),
        ({"x": torch.zeros(1, 3, 8)}, r"expected input \[B, C, S, S\] with 2 spatial dims, got shape \[1, 3, 8\]"),
        ({"x": torch.zeros(1, 3, 8, 8, 8)}, r"with 2 spatial dims, got shape \[1, 3, 8, 8, 8\]"),
        ({"x": torch.zeros(1, 3, 8, 6)}, r"spatial size \(8, 6\) is not a positive multiple of the patch size \(4, 4\)"),
        (
            {"x": torch.zeros(2, 3, 8, 8), "group_pad": torch.zeros(2, 3, dtype=torch.bool)},
            r"group_pad must be \[B, G\] = \[2, 2\] \(groups \['g0', 'g1'\]\), got \[2, 3\]",
        ),
        (
            {"x": torch.zeros(2, 3, 8, 8), "valid": torch.ones(2, 2, 8, 8, dtype=torch.bool)},
            r"valid must be \[B, C or 1, \*S\] with B=2, C=3, S=\(8, 8\), got \[2, 2, 8, 8\]",
        ),
        (
            {"x": torch.zeros(2, 3, 8, 8), "valid": torch.ones(2, 8, 8, dtype=torch.bool)},
            r"valid must be \[B, C or 1, \*S\] with B=2, C=3, S=\(8, 8\), got \[2, 8, 8\]",
        ),
    ],
)
def test_batch_errors(batch, message):
    tk = PatchTokenizer(2, [2, 1], 4, 8)
    with pytest.raises(ValueError, match=message):
        tk.tokens(batch)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((2, [1, 1], 4, 8, ["a", "a"]), r"group_names must be 2 distinct names, got \['a', 'a'\]"),
        ((2, [1, 1], 4, 8, ["a"]), r"group_names must be 2 distinct names, got \['a'\]"),
        ((2, [1], 4, 8, ["a", "b"]), r"group_names must be 1 distinct names, got \['a', 'b'\]"),
        ((4, [1], 4, 8), r"ndim must be 1, 2 or 3, got 4"),
        ((0, [1], 4, 8), r"ndim must be 1, 2 or 3, got 0"),
        ((2, [], 4, 8), r"group_channels must be positive integers, got \[\]"),
        ((2, [2, 0], 4, 8), r"group_channels must be positive integers, got \[2, 0\]"),
        ((2, [1], [4], 8), r"patch size must be 2 positive integers, got \[4\]"),
    ],
)
def test_constructor_errors(args, message):
    with pytest.raises(ValueError, match=message):
        PatchTokenizer(*args)
