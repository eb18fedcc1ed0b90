"""Every masking strategy: its defining property, padding, reproducibility, degenerate cases, errors.

Layout used throughout: ``G = 2`` groups on a ``(4, 8)`` token grid, so ``N = 32`` tokens per group
and ``L = 64`` tokens per sample, group major.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from maecore import masking as M

GRID = (4, 8)
G, N = 2, 32
L = G * N
SEEDS = [0, 1, 2]


def _group(b: int, g: int = G, n: int = N) -> torch.Tensor:
    return torch.arange(g).repeat_interleave(n).expand(b, -1)


def _pad(b: int = 4) -> torch.Tensor:
    """Sample 0 full, 1 shorter (group 1 half missing), 2 without group 1, 3 with 7 real tokens."""
    pad = torch.zeros(b, L, dtype=torch.bool)
    pad[1, N + 16 :] = True
    pad[2, N:] = True
    pad[3, 7:] = True
    return pad


def _difficulty(shape) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(99))


STRATEGIES = {
    "random": lambda pad, ratio, gen, **kw: M.random_masking(pad, ratio, gen),
    "block": lambda pad, ratio, gen, **kw: M.block_masking(pad, GRID, ratio, 2, gen),
    "tube": lambda pad, ratio, gen, **kw: M.tube_masking(pad, GRID, ratio, gen),
    "group_budget": lambda pad, ratio, gen, **kw: M.group_budget_masking(pad, _group(len(pad)), G, ratio, 1.0, gen),
    "group_drop": lambda pad, ratio, gen, drop_prob=0.5: M.group_drop_masking(
        pad, _group(len(pad)), G, ratio, drop_prob, gen
    ),
    "noise": lambda pad, ratio, gen, **kw: M.noise_masking(pad, GRID, ratio, "green", 1.0, gen),
    "loss_guided": lambda pad, ratio, gen, **kw: M.loss_guided_masking(pad, _difficulty(pad.shape), ratio, 0.5, gen),
}


def _check_invariants(m: M.Masking, pad: torch.Tensor) -> None:
    b, l = pad.shape
    vis = m.visible
    assert m.mask.shape == pad.shape and m.ids_restore.shape == pad.shape
    assert not (m.mask & pad).any(), "a padded token was masked"
    assert not (vis & pad).any(), "a padded token was visible"
    assert torch.equal(vis | m.mask | pad, torch.ones_like(pad)), "a real token is neither visible nor masked"
    # ids_keep: visible tokens first, in their original order; the rest of the slots are filler
    k = m.ids_keep.shape[1]
    assert k == max(int(vis.sum(1).max()), 1)
    for i in range(b):
        n = int(vis[i].sum())
        assert m.ids_keep[i, :n].tolist() == vis[i].nonzero().squeeze(1).tolist()
        assert m.keep_pad[i].tolist() == [False] * n + [True] * (k - n)
    # ids_restore undoes the shuffle: argsort(ids_restore) is ids_shuffle, which starts with ids_keep
    ids_shuffle = torch.argsort(m.ids_restore, 1)
    arange = torch.arange(l).expand(b, -1)
    assert torch.equal(torch.gather(ids_shuffle, 1, m.ids_restore), arange)
    assert torch.equal(torch.sort(ids_shuffle, 1).values, arange)
    first = ids_shuffle[:, :k]
    assert torch.equal(first[~m.keep_pad], m.ids_keep[~m.keep_pad])
    # MAE's gather then unshuffle gives back the original sequence
    x = torch.randn(b, l, 3)
    shuffled = torch.gather(x, 1, ids_shuffle[..., None].expand(-1, -1, 3))
    assert torch.equal(torch.gather(shuffled, 1, m.ids_restore[..., None].expand(-1, -1, 3)), x)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", STRATEGIES)
def test_invariants_with_padding(name, seed):
    pad = _pad()
    m = STRATEGIES[name](pad, 0.75, torch.Generator().manual_seed(seed))
    _check_invariants(m, pad)
    assert (m.visible.sum(1) >= 1).all()
    assert m.mask[0].any(), "nothing was masked"


@pytest.mark.parametrize("name", STRATEGIES)
def test_sample_made_only_of_padding(name, gen):
    pad = _pad()
    pad[2] = True
    m = STRATEGIES[name](pad, 0.75, gen)
    _check_invariants(m, pad)
    assert not m.visible[2].any() and not m.mask[2].any()
    assert m.keep_pad[2].all()


@pytest.mark.parametrize("name", STRATEGIES)
def test_batch_made_only_of_padding(name, gen):
    pad = torch.ones(3, L, dtype=torch.bool)
    m = STRATEGIES[name](pad, 0.75, gen)
    assert m.ids_keep.shape == (3, 1) and m.keep_pad.all()
    assert not m.mask.any() and not m.visible.any()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", STRATEGIES)
def test_a_single_real_token_stays_visible(name, seed):
    pad = _pad()
    pad[3] = True
    pad[3, 40] = False  # the only real token of sample 3, in group 1
    m = STRATEGIES[name](pad, 0.9, torch.Generator().manual_seed(seed))
    _check_invariants(m, pad)
    assert m.visible[3, 40] and m.visible[3].sum() == 1 and not m.mask[3].any()


@pytest.mark.parametrize("name", STRATEGIES)
def test_ratio_zero_masks_nothing(name, gen):
    pad = _pad()
    m = STRATEGIES[name](pad, 0.0, gen, drop_prob=0.0)
    assert not m.mask.any()
    assert torch.equal(m.visible, ~pad)


@pytest.mark.parametrize("name", STRATEGIES)
def test_reproducible_from_the_generator(name):
    pad = _pad()
    a = STRATEGIES[name](pad, 0.5, torch.Generator().manual_seed(5))
    b = STRATEGIES[name](pad, 0.5, torch.Generator().manual_seed(5))
    c = STRATEGIES[name](pad, 0.5, torch.Generator().manual_seed(6))
    assert torch.equal(a.mask, b.mask) and torch.equal(a.ids_keep, b.ids_keep)
    assert not torch.equal(a.mask, c.mask)


def test_masking_visible_property_recovers_padding():
    pad = _pad()
    m = M.random_masking(pad, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(m.visible, ~m.mask & ~pad)


# ---------------------------------------------------------------------------------------- finalize
def test_finalize_by_hand():
    mask = torch.tensor([[True, False, True, False, False], [True, True, True, False, False]])
    pad = torch.tensor([[False, False, False, False, True], [False, False, False, True, True]])
    m = M.finalize(mask, pad)
    # sample 1 had every real token masked: its first real token comes back
    assert m.mask.tolist() == [[True, False, True, False, False], [False, True, True, False, False]]
    assert m.ids_keep.tolist() == [[1, 3], [0, 1]]  # row 1: token 0, then filler
    assert m.keep_pad.tolist() == [[False, False], [False, True]]
    assert m.ids_restore[0].tolist() == [2, 0, 3, 1, 4]


def test_finalize_does_not_modify_its_inputs():
    mask = torch.tensor([[True, True]])
    pad = torch.tensor([[False, True]])
    M.finalize(mask, pad)
    assert mask.tolist() == [[True, True]] and pad.tolist() == [[False, True]]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 4), st.integers(1, 12), st.data())
def test_finalize_invariants_on_any_mask(b, l, data):
    bits = st.lists(st.booleans(), min_size=b * l, max_size=b * l)
    mask = torch.tensor(data.draw(bits)).reshape(b, l)
    pad = torch.tensor(data.draw(bits)).reshape(b, l)
    m = M.finalize(mask, pad)
    _check_invariants(m, pad)
    real = (~pad).any(1)
    assert (m.visible.sum(1)[real] >= 1).all() and not m.visible[~real].any()
    kept = mask & ~pad  # masked tokens stay masked unless one had to come back
    assert (m.mask <= kept).all() and (kept.sum(1) - m.mask.sum(1) <= 1).all()


# ------------------------------------------------------------------------------------------ random
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("ratio", [0.0, 0.5, 0.75, 0.9])
def test_random_exact_visible_count(ratio, seed):
    pad = _pad()
    m = M.random_masking(pad, ratio, torch.Generator().manual_seed(seed))
    n_real = (~pad).sum(1).tolist()
    expected = [max(1, round(n * (1 - ratio))) for n in n_real]
    assert m.visible.sum(1).tolist() == expected
    assert m.mask.sum(1).tolist() == [n - e for n, e in zip(n_real, expected)]


def test_random_is_uniform_over_real_tokens():
    pad = torch.zeros(2000, 16, dtype=torch.bool)
    pad[:, 12:] = True
    m = M.random_masking(pad, 0.75, torch.Generator().manual_seed(0))
    freq = m.visible.float().mean(0)
    assert torch.allclose(freq[:12], torch.full((12,), 0.25), atol=0.04)
    assert (freq[12:] == 0).all()


# ------------------------------------------------------------------------------------------- block
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(
    ("grid", "block", "ratio"),
    [((4, 8), 2, 0.5), ((4, 8), (2, 4), 0.75), ((16,), 4, 0.5), ((4, 4, 4), 2, 0.6), ((8, 8), 4, 0.5)],
)
def test_block_masks_whole_aligned_blocks(grid, block, ratio, seed):
    b, g = 3, 2
    n = math.prod(grid)
    blk = (block,) * len(grid) if isinstance(block, int) else block
    m = M.block_masking(torch.zeros(b, g * n, dtype=torch.bool), grid, ratio, block, torch.Generator().manual_seed(seed))
    shape = [b * g]
    for s, k in zip(grid, blk):
        shape += [s // k, k]
    cells = m.mask.reshape(shape)
    coarse_axes = list(range(1, 2 * len(grid), 2))
    inner_axes = list(range(2, 2 * len(grid) + 1, 2))
    cells = cells.permute(0, *coarse_axes, *inner_axes).reshape(b * g, -1, math.prod(blk))  # [B*G, blocks, cells]
    assert (cells.all(-1) | ~cells.any(-1)).all(), "a block is partly masked"
    n_blocks = cells.shape[1]
    assert (cells.all(-1).sum(-1) == n_blocks - max(1, round(n_blocks * (1 - ratio)))).all()


def test_block_masking_varies_the_position_of_blocks():
    pad = torch.zeros(200, 64, dtype=torch.bool)
    m = M.block_masking(pad, (8, 8), 0.5, 2, torch.Generator().manual_seed(0))
    freq = m.mask.float().mean(0)
    assert torch.allclose(freq, torch.full((64,), 0.5), atol=0.15)


# -------------------------------------------------------------------------------------------- tube
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("grid", "ratio"), [((5, 6), 0.5), ((4, 2, 3), 0.75), ((3, 10), 0.9)])
def test_tube_mask_is_identical_along_time(grid, ratio, seed):
    b, g = 2, 3
    rest = math.prod(grid[1:])
    pad = torch.zeros(b, g * math.prod(grid), dtype=torch.bool)
    m = M.tube_masking(pad, grid, ratio, torch.Generator().manual_seed(seed)).mask.reshape(b, g, grid[0], rest)
    assert (m == m[:, :, :1]).all()
    assert (m[:, :, 0].sum(-1) == rest - max(1, round(rest * (1 - ratio)))).all()
    assert not torch.equal(m[:, 0], m[:, 1]), "every group got the same tube pattern"


# ------------------------------------------------------------------------------------ group budget
def _per_group_visible(m: M.Masking, group: torch.Tensor, n_groups: int) -> torch.Tensor:
    return torch.stack([(m.visible & (group == k)).sum(1) for k in range(n_groups)], 1)  # [B, G]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("alpha", [0.3, 1.0, 5.0])
def test_group_budget_counts(alpha, seed):
    b, g, n = 64, 4, 16
    pad = torch.zeros(b, g * n, dtype=torch.bool)
    pad[:, 16:32] = True  # group 1 absent everywhere
    pad[:, 48:60] = True  # group 3 has only 4 real tokens
    pad[::2, 60:] = True  # ... and none in even samples
    group = _group(b, g, n)
    m = M.group_budget_masking(pad, group, g, 0.5, alpha, torch.Generator().manual_seed(seed))
    _check_invariants(m, pad)
    per = _per_group_visible(m, group, g)
    avail = torch.stack([(~pad & (group == k)).sum(1) for k in range(g)], 1)
    n_real = avail.sum(1)
    assert per.sum(1).tolist() == [max(1, round(int(r) * 0.5)) for r in n_real]
    assert (per <= avail).all()
    assert (per[:, 1] == 0).all() and (per[::2, 3] == 0).all()


def test_group_budget_shares_vary_and_average_one_over_g():
    b, g, n = 1000, 4, 16
    pad = torch.zeros(b, g * n, dtype=torch.bool)
    group = _group(b, g, n)
    m = M.group_budget_masking(pad, group, g, 0.75, 1.0, torch.Generator().manual_seed(0))
    share = _per_group_visible(m, group, g).float() / 16
    assert torch.allclose(share.mean(0), torch.full((g,), 0.25), atol=0.03)
    assert (share.std(0) > 0.12).all()  # Dirichlet(1, 1, 1, 1): std ~0.19


def test_group_budget_alpha_controls_the_spread():
    b, g, n = 500, 4, 16
    pad = torch.zeros(b, g * n, dtype=torch.bool)
    group = _group(b, g, n)
    spread = {}
    for alpha in (0.3, 10.0):
        m = M.group_budget_masking(pad, group, g, 0.5, alpha, torch.Generator().manual_seed(0))
        spread[alpha] = (_per_group_visible(m, group, g).float() / 32).std(0).mean()
    assert spread[0.3] > 2 * spread[10.0]


def test_group_budget_tiny_alpha_favours_no_group():
    # Gamma samples underflow to 0 for a tiny alpha; the draw must still pick a random group
    b, g, n = 2000, 4, 16
    pad = torch.zeros(b, g * n, dtype=torch.bool)
    group = _group(b, g, n)
    m = M.group_budget_masking(pad, group, g, 0.75, 0.003, torch.Generator().manual_seed(0))
    winner = _per_group_visible(m, group, g).argmax(1)
    freq = torch.bincount(winner, minlength=g).float() / b
    assert torch.allclose(freq, torch.full((g,), 0.25), atol=0.04)


def test_dirichlet_matches_the_distribution():
    share = M._dirichlet(torch.full((20000, 4), 0.5), torch.Generator().manual_seed(0))
    assert torch.allclose(share.sum(1), torch.ones(20000), atol=1e-5)
    assert torch.allclose(share.mean(0), torch.full((4,), 0.25), atol=0.01)
    var = 0.25 * 0.75 / (4 * 0.5 + 1)  # Dirichlet variance a_i (a0 - a_i) / (a0^2 (a0 + 1))
    assert torch.allclose(share.var(0), torch.full((4,), var), rtol=0.06)


# -------------------------------------------------------------------------------------- group drop
def _drop_setup(b: int = 200, g: int = 4, n: int = 8):
    pad = torch.zeros(b, g * n, dtype=torch.bool)
    pad[::3, 8:16] = True  # group 1 absent in every third sample
    pad[1::3, 30:] = True  # group 3 shorter in others
    group = _group(b, g, n)
    avail = torch.stack([(~pad & (group == k)).sum(1) for k in range(g)], 1)  # [B, G]
    return pad, group, avail


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("drop_prob", [0.3, 0.99])
def test_group_drop_drops_whole_groups_and_keeps_one(drop_prob, seed):
    pad, group, avail = _drop_setup()
    # ratio 0: a surviving group is fully visible, a dropped one fully masked, nothing in between
    m = M.group_drop_masking(pad, group, 4, 0.0, drop_prob, torch.Generator().manual_seed(seed))
    _check_invariants(m, pad)
    per_vis = _per_group_visible(m, group, 4)
    per_mask = torch.stack([(m.mask & (group == k)).sum(1) for k in range(4)], 1)
    survived, dropped = per_vis == avail, per_mask == avail
    present = avail > 0
    assert torch.equal((survived ^ dropped) | ~present, torch.ones_like(present))
    assert (survived & present).any(1).all(), "every present group was dropped"
    if drop_prob > 0.9:  # nearly everything dropped: exactly one survivor per sample
        assert ((survived & present).sum(1) == 1).float().mean() > 0.9


@pytest.mark.parametrize("seed", SEEDS)
def test_group_drop_masks_the_survivors_at_the_ratio(seed):
    pad, group, avail = _drop_setup()
    ratio = 0.5
    m = M.group_drop_masking(pad, group, 4, ratio, 0.4, torch.Generator().manual_seed(seed))
    _check_invariants(m, pad)
    per_vis = _per_group_visible(m, group, 4)
    fully_masked = (per_vis == 0) & (avail > 0)
    for i in range(len(pad)):  # some set of fully masked groups was dropped; the rest kept at the ratio
        candidates = fully_masked[i].nonzero().squeeze(1).tolist()
        n_real = int(avail[i].sum())
        options = set()
        for bits in range(2 ** len(candidates)):
            gone = sum(int(avail[i, k]) for j, k in enumerate(candidates) if bits >> j & 1)
            if gone < n_real:
                options.add(max(1, round((n_real - gone) * (1 - ratio))))
        assert int(per_vis[i].sum()) in options


def test_group_drop_without_drops_is_random_masking():
    pad, group, _ = _drop_setup()
    m = M.group_drop_masking(pad, group, 4, 0.75, 0.0, torch.Generator().manual_seed(0))
    n_real = (~pad).sum(1).tolist()
    assert m.visible.sum(1).tolist() == [max(1, round(n * 0.25)) for n in n_real]


def test_group_drop_rate_follows_drop_prob():
    b, g, n = 2000, 4, 4
    pad = torch.zeros(b, g * n, dtype=torch.bool)
    group = _group(b, g, n)
    m = M.group_drop_masking(pad, group, g, 0.0, 0.5, torch.Generator().manual_seed(0))
    dropped = (_per_group_visible(m, group, g) == 0).float().mean()
    assert abs(float(dropped) - (0.5 - 0.5**4 / 4)) < 0.03  # minus the rescued group


# ------------------------------------------------------------------------------------------- noise
def _clumpiness(mask: torch.Tensor, grid: tuple[int, int]) -> float:
    """Fraction of masked tokens' 4-neighbours (inside the grid) that are masked too."""
    m = mask.reshape(-1, 1, *grid).float()
    k = torch.tensor([[0.0, 1, 0], [1, 0, 1], [0, 1, 0]])[None, None]
    masked_nb = F.conv2d(m, k, padding=1)
    all_nb = F.conv2d(torch.ones_like(m), k, padding=1)
    return float((masked_nb * m).sum() / (all_nb * m).sum())


@pytest.mark.parametrize("ratio", [0.5, 0.75])
def test_noise_colours_order_clumpiness(ratio):
    grid = (16, 16)
    pad = torch.zeros(8, 256, dtype=torch.bool)
    clump = {
        c: sum(_clumpiness(M.noise_masking(pad, grid, ratio, c, 1.0, torch.Generator().manual_seed(s)).mask, grid)
               for s in range(4)) / 4
        for c in ("red", "white", "blue")
    }
    assert clump["red"] > clump["white"] + 0.1
    assert clump["white"] > clump["blue"] + 0.02


@pytest.mark.parametrize("color", M.NOISE_COLORS)
@pytest.mark.parametrize(("grid", "ratio"), [((8, 8), 0.6), ((32,), 0.75), ((4, 4, 4), 0.5)])
def test_noise_exact_count(color, grid, ratio, gen):
    n = math.prod(grid)
    pad = torch.zeros(3, 2 * n, dtype=torch.bool)
    pad[1, n:] = True
    m = M.noise_masking(pad, grid, ratio, color, 1.0, gen)
    n_real = (~pad).sum(1).tolist()
    assert m.visible.sum(1).tolist() == [round(r * (1 - ratio)) for r in n_real]
    assert not (m.mask & pad).any()


# ------------------------------------------------------------------------------------- loss guided
def test_loss_guided_full_hard_fraction_hides_the_hardest():
    pad = torch.zeros(3, 20, dtype=torch.bool)
    pad[1, 15:] = True
    difficulty = torch.randn(3, 20, generator=torch.Generator().manual_seed(0))
    difficulty[1, 15:] = 100.0  # padded tokens look hardest but must not take a slot
    m = M.loss_guided_masking(pad, difficulty, 0.5, 1.0, torch.Generator().manual_seed(0))
    for i, n_real in enumerate((20, 15, 20)):
        n_hide = n_real - round(n_real * 0.5)
        top = torch.topk(difficulty[i, :n_real], n_hide).indices.sort().values
        assert m.mask[i].nonzero().squeeze(1).tolist() == top.tolist()


def test_loss_guided_zero_hard_fraction_ignores_difficulty():
    pad = _pad()
    easy = torch.arange(float(L)).expand(4, -1)
    a = M.loss_guided_masking(pad, easy, 0.75, 0.0, torch.Generator().manual_seed(3))
    b = M.loss_guided_masking(pad, -easy, 0.75, 0.0, torch.Generator().manual_seed(3))
    assert torch.equal(a.mask, b.mask)
    n_real = (~pad).sum(1).tolist()
    assert a.visible.sum(1).tolist() == [max(1, round(n * 0.25)) for n in n_real]


def test_loss_guided_partial_hard_fraction():
    pad = torch.zeros(2, 40, dtype=torch.bool)
    difficulty = torch.arange(40.0).expand(2, -1)
    m = M.loss_guided_masking(pad, difficulty, 0.5, 0.5, torch.Generator().manual_seed(0))
    assert m.mask[:, 30:].all()  # floor(20 * 0.5) = 10 hardest
    assert (m.mask.sum(1) == 20).all()
    assert not torch.equal(m.mask[0], m.mask[1])  # the other 10 are random


# ------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("ratio", [1.0, -0.1, 1.5])
@pytest.mark.parametrize("name", STRATEGIES)
def test_ratio_errors(name, ratio):
    with pytest.raises(ValueError, match=rf"mask ratio must be in \[0, 1\), got {ratio}"):
        STRATEGIES[name](torch.zeros(2, L, dtype=torch.bool), ratio, None)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        pytest.param(lambda p: M.block_masking(p, (4, 8), 0.5, 3), r"grid \(4, 8\) is not divisible by block \(3, 3\)", id="block-3"),
        pytest.param(lambda p: M.block_masking(p, (4, 8), 0.5, 0), r"grid \(4, 8\) is not divisible by block \(0, 0\)", id="block-0"),
        pytest.param(lambda p: M.block_masking(p, (4, 8), 0.5, (2,)), r"grid \(4, 8\) is not divisible by block \(2,\)", id="block-short"),
        pytest.param(lambda p: M.block_masking(p, (5, 5), 0.5, 1), r"64 tokens are not a whole number of grids \(5, 5\)", id="block-grid"),
        pytest.param(lambda p: M.tube_masking(p, (5, 5), 0.5), r"64 tokens are not a whole number of grids \(5, 5\)", id="tube-grid"),
        pytest.param(lambda p: M.tube_masking(p, (32,), 0.5), r"tube masking needs a grid with a time axis and at least one more", id="tube-1d"),
        pytest.param(lambda p: M.group_budget_masking(p, _group(2), G, 0.5, alpha=0), r"alpha must be > 0, got 0", id="alpha-0"),
        pytest.param(lambda p: M.group_budget_masking(p, _group(2), G, 0.5, alpha=-1.0), r"alpha must be > 0, got -1.0", id="alpha-neg"),
        pytest.param(lambda p: M.group_drop_masking(p, _group(2), G, 0.5, drop_prob=1.0), r"drop_prob must be in \[0, 1\), got 1.0", id="drop-1"),
        pytest.param(lambda p: M.group_drop_masking(p, _group(2), G, 0.5, drop_prob=-0.5), r"drop_prob must be in \[0, 1\), got -0.5", id="drop-neg"),
        pytest.param(lambda p: M.noise_masking(p, GRID, 0.5, "pink"), r"noise color must be one of \('white', 'red', 'blue', 'green'\), got 'pink'", id="color"),
        pytest.param(lambda p: M.noise_masking(p, GRID, 0.5, "red", 0.0), r"noise sigma must be > 0, got 0.0", id="sigma"),
        pytest.param(lambda p: M.noise_masking(p, (5, 5), 0.5), r"64 tokens are not a whole number of grids \(5, 5\)", id="noise-grid"),
        pytest.param(lambda p: M.loss_guided_masking(p, torch.zeros(2, 3), 0.5), r"difficulty shape \[2, 3\] must equal pad shape \[2, 64\]", id="difficulty-shape"),
        pytest.param(lambda p: M.loss_guided_masking(p, torch.zeros(2, L), 0.5, 2.0), r"hard_fraction must be in \[0, 1\], got 2.0", id="hard-2"),
        pytest.param(lambda p: M.loss_guided_masking(p, torch.zeros(2, L), 0.5, -0.1), r"hard_fraction must be in \[0, 1\], got -0.1", id="hard-neg"),
    ],
)
def test_parameter_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call(torch.zeros(2, L, dtype=torch.bool))
