"""Every masking strategy: its defining property, padding, reproducibility, degenerate cases."""

from __future__ import annotations

import pytest
import torch

from maecore import masking as M


def _pad(b: int = 4, l: int = 64) -> torch.Tensor:
    pad = torch.zeros(b, l, dtype=torch.bool)
    pad[1, 40:] = True  # a shorter sample
    pad[2] = True  # a sample made only of padding
    return pad


def _group(b: int = 4, g: int = 4, n: int = 16) -> torch.Tensor:
    return torch.arange(g).repeat_interleave(n).expand(b, -1)


def _invariants(m: M.Masking, pad: torch.Tensor) -> None:
    assert not (m.mask & pad).any(), "a padded token was masked"
    vis = m.visible
    assert not (vis & pad).any(), "a padded token was visible"
    real = (~pad).any(1)
    assert (vis.sum(1)[real] >= 1).all(), "a real sample has no visible token"
    assert (vis.sum(1)[~real] == 0).all()
    # ids_keep lists the visible tokens first, in their original order; filler is flagged
    for b in range(pad.shape[0]):
        n = int(vis[b].sum())
        assert m.ids_keep[b, :n].tolist() == vis[b].nonzero().squeeze(1).tolist()
        assert (~m.keep_pad[b, :n]).all() and m.keep_pad[b, n:].all()
    # ids_restore inverts the shuffle
    shuffle = torch.argsort(m.ids_restore, 1)
    assert torch.equal(torch.gather(shuffle, 1, m.ids_restore), torch.arange(pad.shape[1]).expand_as(pad))


STRATEGIES = {
    "random": lambda pad, g: M.random_masking(pad, 0.75, g),
    "block": lambda pad, g: M.block_masking(pad, (8, 8), 0.5, 2, g),
    "tube": lambda pad, g: M.tube_masking(pad, (4, 16), 0.5, g),
    "group_budget": lambda pad, g: M.group_budget_masking(pad, _group(pad.shape[0]), 4, 0.75, 1.0, g),
    "group_drop": lambda pad, g: M.group_drop_masking(pad, _group(pad.shape[0]), 4, 0.5, 0.5, g),
    "noise": lambda pad, g: M.noise_masking(pad, (8, 8), 0.6, "red", 1.0, g),
    "loss_guided": lambda pad, g: M.loss_guided_masking(pad, torch.rand(pad.shape, generator=g), 0.75, 0.5, g),
}


@pytest.mark.parametrize("name", STRATEGIES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_padding_and_degenerate_cases_for_every_strategy(name, seed):
    pad = _pad()
    pad[3, 1:] = True  # a sample with a single real token keeps it visible
    m = STRATEGIES[name](pad, torch.Generator().manual_seed(seed))
    _invariants(m, pad)
    assert m.visible[3, 0]


@pytest.mark.parametrize("name", STRATEGIES)
def test_reproducible_from_generator(name):
    pad = _pad()
    a = STRATEGIES[name](pad, torch.Generator().manual_seed(5)).mask
    b = STRATEGIES[name](pad, torch.Generator().manual_seed(5)).mask
    c = STRATEGIES[name](pad, torch.Generator().manual_seed(6)).mask
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("ratio", [0.0, 0.5, 0.75, 0.9])
def test_random_exact_visible_count(ratio, gen):
    pad = _pad()
    m = M.random_masking(pad, ratio, gen)
    n_real = (~pad).sum(1)
    expected = torch.where(n_real > 0, torch.round(n_real * (1 - ratio)).clamp(min=1), 0)
    assert torch.equal(m.visible.sum(1), expected.long())
    assert torch.equal(m.mask.sum(1), n_real - expected.long())


def test_block_masks_whole_aligned_blocks(gen):
    pad = torch.zeros(3, 2 * 64, dtype=torch.bool)  # two groups of an 8x8 grid
    m = M.block_masking(pad, (8, 8), 0.5, 2, gen)
    blocks = m.mask.reshape(3, 2, 4, 2, 4, 2).permute(0, 1, 2, 4, 3, 5).reshape(3, 2, 16, 4)
    assert (blocks.all(-1) | ~blocks.any(-1)).all(), "a block is partly masked"
    assert (blocks.all(-1).sum(-1) == 8).all()  # exactly half of the 16 blocks per group


def test_tube_mask_is_identical_along_time(gen):
    pad = torch.zeros(2, 3 * 5 * 6, dtype=torch.bool)  # 3 groups, grid (T=5, 6)
    m = M.tube_masking(pad, (5, 6), 0.5, gen).mask.reshape(2, 3, 5, 6)
    assert (m == m[:, :, :1]).all()
    assert (m[:, :, 0].sum(-1) == 3).all()


def test_group_budget_counts_and_dirichlet_shares():
    pad = torch.zeros(1, 64, dtype=torch.bool)
    pad[0, 16:32] = True  # group 1 absent
    pad[0, 48:60] = True  # group 3 has only 4 real tokens
    group = _group(1)
    shares = []
    for seed in range(200):
        m = M.group_budget_masking(pad, group, 4, 0.75, 1.0, torch.Generator().manual_seed(seed))
        vis = m.visible[0]
        per = torch.stack([(vis & (group[0] == k)).sum() for k in range(4)])
        assert per.sum() == round(36 * 0.25)
        assert per[1] == 0 and per[3] <= 4
        shares.append(per.float() / per.sum())
    s = torch.stack(shares)
    assert s[:, 0].std() > 0.1  # the split varies from draw to draw
    assert abs(s[:, 0].mean() - s[:, 2].mean()) < 0.1  # and is symmetric between equal groups


def test_group_drop_drops_whole_groups_and_keeps_one():
    group = _group(8)
    pad = torch.zeros(8, 64, dtype=torch.bool)
    for seed in range(20):
        m = M.group_drop_masking(pad, group, 4, 0.5, 0.99, torch.Generator().manual_seed(seed))
        per_group_vis = torch.stack([(m.visible & (group == k)).sum(1) for k in range(4)], 1)
        assert ((per_group_vis > 0).sum(1) >= 1).all()
        dropped = per_group_vis == 0
        for b in range(8):
            for k in range(4):
                if dropped[b, k]:
                    assert m.mask[b, group[b] == k].all()
                else:
                    assert per_group_vis[b, k] == 8  # the survivors are masked at ratio 0.5


def _clumpiness(mask: torch.Tensor) -> float:
    m = mask.reshape(-1, 16, 16).float()
    right = (m[:, :, 1:] * m[:, :, :-1]).sum()
    down = (m[:, 1:] * m[:, :-1]).sum()
    return float((right + down) / (2 * m.sum()))


def test_noise_colors_order_clumpiness():
    pad = torch.zeros(64, 256, dtype=torch.bool)
    clump = {c: _clumpiness(M.noise_masking(pad, (16, 16), 0.5, c, 1.5, torch.Generator().manual_seed(0)).mask)
             for c in M.NOISE_COLORS}
    assert clump["red"] > clump["white"] > clump["blue"]
    m = M.noise_masking(pad, (16, 16), 0.5, "green", 1.0, torch.Generator().manual_seed(0))
    assert (m.mask.sum(1) == 128).all()


def test_loss_guided_hides_the_hardest():
    pad = torch.zeros(2, 20, dtype=torch.bool)
    difficulty = torch.arange(20.0).expand(2, -1)
    m = M.loss_guided_masking(pad, difficulty, 0.5, 1.0, torch.Generator().manual_seed(0))
    assert m.mask[:, 10:].all() and not m.mask[:, :10].any()
    half = M.loss_guided_masking(pad, difficulty, 0.5, 0.5, torch.Generator().manual_seed(0))
    assert half.mask[:, 15:].all() and half.mask.sum() == 20


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda p: M.random_masking(p, 1.0), r"mask ratio must be in \[0, 1\), got 1.0"),
        (lambda p: M.block_masking(p, (8, 8), 0.5, 3), r"grid \(8, 8\) is not divisible by block \(3, 3\)"),
        (lambda p: M.tube_masking(p, (5, 5), 0.5), r"64 tokens are not a whole number of grids \(5, 5\)"),
        (lambda p: M.group_budget_masking(p, _group(4), 4, 0.5, alpha=0), r"alpha must be > 0, got 0"),
        (lambda p: M.group_drop_masking(p, _group(4), 4, 0.5, drop_prob=1.0), r"drop_prob must be in \[0, 1\), got 1.0"),
        (lambda p: M.noise_masking(p, (8, 8), 0.5, "pink"), r"noise color must be one of .*got 'pink'"),
        (lambda p: M.loss_guided_masking(p, torch.zeros(4, 3), 0.5), r"difficulty shape \[4, 3\] must equal pad shape"),
        (lambda p: M.loss_guided_masking(p, torch.zeros(4, 64), 0.5, 2.0), r"hard_fraction must be in \[0, 1\], got 2.0"),
    ],
)
def test_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call(torch.zeros(4, 64, dtype=torch.bool))
