"""Masking strategies: pure, padding-aware functions seeded by an optional ``torch.Generator``.

Every strategy returns a :class:`Masking`. Conventions (``B`` samples, ``L`` tokens):

- ``pad  [B, L]`` bool, True where a token does not exist: never visible, never masked (scored).
- ``mask [B, L]`` bool, True where a real token is hidden from the encoder and scored by the loss.
- ``ids_keep [B, K]`` the visible tokens of each sample first (in token order), then filler;
  ``keep_pad [B, K]`` is True on filler slots (samples with fewer than ``K`` visible tokens).
- ``ids_restore [B, L]`` inverts the shuffle that put visible tokens first.

Degenerate cases are guarded in :func:`finalize`: each sample with at least one real token keeps at
least one visible token, and a sample made only of padding has none (its slots are all filler).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class Masking:
    ids_keep: Tensor
    ids_restore: Tensor
    mask: Tensor
    keep_pad: Tensor

    @property
    def visible(self) -> Tensor:
        """``[B, L]`` bool: tokens the encoder sees."""
        return ~self.mask & ~self._pad

    def __post_init__(self) -> None:
        # pad is recoverable: a token that is neither visible nor masked
        b, l = self.mask.shape
        vis = torch.zeros(b, l, dtype=torch.bool, device=self.mask.device)
        vis.scatter_(1, self.ids_keep, ~self.keep_pad)
        self._pad = ~vis & ~self.mask


def _check_ratio(ratio: float) -> None:
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")


def _uniform(shape: Sequence[int], like: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.rand(*shape, generator=generator, device=like.device)


def finalize(mask: Tensor, pad: Tensor) -> Masking:
    """Turn a hide-mask into indices. ``mask, pad [B, L] -> Masking``.

    Padded tokens are removed from the mask; a sample left with no visible real token gets its
    first real token back, so the encoder always has something to attend to.
    """
    mask = mask & ~pad
    visible = ~mask & ~pad
    starved = ~visible.any(1) & (~pad).any(1)
    if starved.any():
        first_real = (~pad).float().argmax(1)
        rows = starved.nonzero().squeeze(1)
        visible[rows, first_real[rows]] = True
        mask[rows, first_real[rows]] = False
    n_vis = visible.sum(1)
    k = max(int(n_vis.max().item()), 1)
    # stable sort puts visible tokens first, in their original order
    ids_shuffle = torch.argsort((~visible).to(torch.int8), dim=1, stable=True)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :k]
    keep_pad = torch.arange(k, device=mask.device)[None] >= n_vis[:, None]
    return Masking(ids_keep=ids_keep, ids_restore=ids_restore, mask=mask, keep_pad=keep_pad)


def _keep_lowest(score: Tensor, pad: Tensor, n_keep: Tensor) -> Tensor:
    """Hide-mask that keeps, per sample, the ``n_keep`` real tokens with the lowest score."""
    score = score.masked_fill(pad, float("inf"))
    rank = torch.argsort(torch.argsort(score, dim=1), dim=1)
    return (rank >= n_keep[:, None]) & ~pad


def _n_keep(pad: Tensor, ratio: float) -> Tensor:
    n_real = (~pad).sum(1)
    keep = torch.round(n_real.float() * (1.0 - ratio)).long()
    return torch.where(n_real > 0, keep.clamp(min=1), keep)


def random_masking(pad: Tensor, ratio: float, generator: torch.Generator | None = None) -> Masking:
    """MAE: hide ``round(n_real * ratio)`` real tokens per sample, uniformly at random."""
    _check_ratio(ratio)
    noise = _uniform(pad.shape, pad, generator)
    return finalize(_keep_lowest(noise, pad, _n_keep(pad, ratio)), pad)


def _group_grid(pad: Tensor, grid: Sequence[int]) -> int:
    n = math.prod(grid)
    if pad.shape[1] % n != 0:
        raise ValueError(f"{pad.shape[1]} tokens are not a whole number of grids {tuple(grid)}")
    return pad.shape[1] // n


def block_masking(
    pad: Tensor,
    grid: Sequence[int],
    ratio: float,
    block: int | Sequence[int] = 2,
    generator: torch.Generator | None = None,
) -> Masking:
    """SimMIM: hide contiguous ``block``-sized cells of the token grid (per group, group-major).

    The ratio is exact on the coarse grid of blocks; every axis of ``grid`` must be divisible by
    the block size on that axis.
    """
    _check_ratio(ratio)
    blk = (block,) * len(grid) if isinstance(block, int) else tuple(block)
    if len(blk) != len(grid) or any(s < 1 or g % s for g, s in zip(grid, blk)):
        raise ValueError(f"grid {tuple(grid)} is not divisible by block {blk}")
    g = _group_grid(pad, grid)
    coarse = [s // c for s, c in zip(grid, blk)]
    b = pad.shape[0]
    n_coarse = math.prod(coarse)
    noise = _uniform((b * g, n_coarse), pad, generator)
    n_keep = torch.full((b * g,), max(1, round(n_coarse * (1 - ratio))), device=pad.device)
    cmask = _keep_lowest(noise, torch.zeros_like(noise, dtype=torch.bool), n_keep)
    cmask = cmask.reshape(b * g, 1, *coarse).float()
    if len(grid) > 1:
        fine = F.interpolate(cmask, scale_factor=blk, mode="nearest")
    else:
        fine = cmask.repeat_interleave(blk[0], -1)
    return finalize(fine.reshape(b, -1).bool(), pad)


def tube_masking(
    pad: Tensor, grid: Sequence[int], ratio: float, generator: torch.Generator | None = None
) -> Masking:
    """VideoMAE: one random mask over the non-time axes, repeated along axis 0 (time) of ``grid``."""
    _check_ratio(ratio)
    if len(grid) < 2:
        raise ValueError(f"tube masking needs a grid with a time axis and at least one more, got {tuple(grid)}")
    g = _group_grid(pad, grid)
    t, rest = grid[0], math.prod(grid[1:])
    b = pad.shape[0]
    noise = _uniform((b * g, rest), pad, generator)
    n_keep = torch.full((b * g,), max(1, round(rest * (1 - ratio))), device=pad.device)
    m = _keep_lowest(noise, torch.zeros_like(noise, dtype=torch.bool), n_keep)
    m = m.reshape(b, g, 1, rest).expand(b, g, t, rest)
    return finalize(m.reshape(b, -1), pad)


def _dirichlet(alpha: Tensor, generator: torch.Generator | None, present: Tensor | None = None) -> Tensor:
    """Dirichlet draw from Gamma(alpha, 1) samples, seeded by ``generator``: ``[B, G] -> [B, G]``.

    Marsaglia-Tsang via torch's standard-normal and uniform generators so the generator is
    honoured. Normalised in log space, so small alphas (whose Gamma samples underflow to 0) still
    give a valid draw; groups where ``present`` is False get share 0.
    """
    a = alpha.clamp(min=1e-3)
    boost = a < 1
    d = torch.where(boost, a + 1, a) - 1.0 / 3.0
    c = 1.0 / torch.sqrt(9.0 * d)
    out = torch.zeros_like(a)
    todo = torch.ones_like(a, dtype=torch.bool)
    for _ in range(64):
        z = torch.randn(a.shape, generator=generator, device=a.device)
        u = torch.rand(a.shape, generator=generator, device=a.device)
        v = (1 + c * z) ** 3
        ok = (v > 0) & (torch.log(u.clamp(min=1e-12)) < 0.5 * z**2 + d - d * v + d * torch.log(v.clamp(min=1e-12)))
        take = todo & ok
        out = torch.where(take, d * v, out)
        todo = todo & ~ok
        if not todo.any():
            break
    out = torch.where(todo, d, out)
    u = torch.rand(a.shape, generator=generator, device=a.device)
    log_g = torch.log(out) + torch.where(boost, torch.log(u.clamp(min=1e-12)) / a, torch.zeros_like(a))
    if present is not None:
        log_g = log_g.masked_fill(~present, float("-inf"))
    return torch.nan_to_num(torch.softmax(log_g, -1), nan=0.0)  # a row with nothing present: all 0


def group_budget_masking(
    pad: Tensor,
    group: Tensor,
    n_groups: int,
    ratio: float,
    alpha: float = 1.0,
    generator: torch.Generator | None = None,
) -> Masking:
    """MultiMAE / BM-MAE: split the visible budget over present groups by a Dirichlet draw.

    The total visible count per sample is exactly ``round(n_real * (1 - ratio))`` (at least 1);
    a group gets ``share * budget`` tokens, capped by how many real tokens it has, and whatever a
    capped group cannot take goes to the others.
    """
    _check_ratio(ratio)
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    b = pad.shape[0]
    onehot = F.one_hot(group.long(), n_groups).bool() & ~pad[..., None]  # [B, L, G]
    avail = onehot.sum(1)  # [B, G]
    present = avail > 0
    share = _dirichlet(torch.full((b, n_groups), float(alpha), device=pad.device), generator, present)
    budget = _n_keep(pad, ratio)
    quota = torch.minimum(torch.floor(share * budget[:, None]).long(), avail)
    for _ in range(n_groups + 1):  # hand leftovers to groups with room, largest share first
        left = budget - quota.sum(1)
        if not (left > 0).any():
            break
        room = (avail - quota).clamp(min=0)
        order = torch.argsort(torch.where(room > 0, share, torch.full_like(share, -1.0)), 1, descending=True)
        best = order[:, 0:1]
        give = torch.minimum(left[:, None], torch.gather(room, 1, best))
        quota.scatter_add_(1, best, give)
    # within each group keep its quota of lowest-noise tokens
    noise = _uniform(pad.shape, pad, generator).masked_fill(pad, float("inf"))
    rank = torch.zeros_like(group, dtype=torch.long)
    for gid in range(n_groups):
        in_g = group == gid
        s = torch.where(in_g, noise, torch.full_like(noise, float("inf")))
        r = torch.argsort(torch.argsort(s, 1), 1)
        rank = torch.where(in_g, r, rank)
    q = torch.gather(quota, 1, group.long())
    return finalize((rank >= q) & ~pad, pad)


def group_drop_masking(
    pad: Tensor,
    group: Tensor,
    n_groups: int,
    ratio: float,
    drop_prob: float = 0.25,
    generator: torch.Generator | None = None,
) -> Masking:
    """Hide whole groups (a simulated missing modality / lead) and random tokens in the rest.

    Each present group is dropped with ``drop_prob``; at least one present group always survives.
    Dropped groups are fully masked (scored: the model learns to synthesise them); the surviving
    groups are masked at ``ratio`` as in :func:`random_masking`.
    """
    _check_ratio(ratio)
    if not 0.0 <= drop_prob < 1.0:
        raise ValueError(f"drop_prob must be in [0, 1), got {drop_prob}")
    b = pad.shape[0]
    present = (F.one_hot(group.long(), n_groups).bool() & ~pad[..., None]).any(1)  # [B, G]
    drop = (_uniform((b, n_groups), pad, generator) < drop_prob) & present
    all_gone = present.any(1) & ~(present & ~drop).any(1)
    if all_gone.any():  # rescue one present group at random
        score = _uniform((b, n_groups), pad, generator)
        pick = torch.where(present, score, torch.full_like(score, -1.0)).argmax(1)
        rescue = F.one_hot(pick, n_groups).bool() & all_gone[:, None]
        drop = drop & ~rescue
    dropped_tok = torch.gather(drop, 1, group.long()) & ~pad
    rest = random_masking(pad | dropped_tok, ratio, generator).mask
    return finalize(rest | dropped_tok, pad)


def _blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of ``x [N, 1, *grid]`` (edges padded by replication)."""
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    nd = x.dim() - 2
    conv = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
    for axis in range(nd):
        shape = [1, 1] + [1] * nd
        shape[2 + axis] = k.numel()
        pad_ = [0] * (2 * nd)
        pad_[2 * (nd - 1 - axis)] = radius
        pad_[2 * (nd - 1 - axis) + 1] = radius
        x = conv(F.pad(x, pad_, mode="replicate"), k.reshape(shape))
    return x


NOISE_COLORS = ("white", "red", "blue", "green")


def noise_masking(
    pad: Tensor,
    grid: Sequence[int],
    ratio: float,
    color: str = "green",
    sigma: float = 1.0,
    generator: torch.Generator | None = None,
) -> Masking:
    """ColorMAE-style data-free masks from filtered random noise on the token grid.

    ``red`` (low-pass) gives blob-shaped masked regions, ``blue`` (high-pass) spreads them out,
    ``green`` (band-pass, difference of Gaussians) lies between, ``white`` is plain random. The
    ``1 - ratio`` tokens with the lowest filtered noise stay visible (exact count per sample).
    """
    _check_ratio(ratio)
    if color not in NOISE_COLORS:
        raise ValueError(f"noise color must be one of {NOISE_COLORS}, got {color!r}")
    if not sigma > 0:
        raise ValueError(f"noise sigma must be > 0, got {sigma}")
    g = _group_grid(pad, grid)
    b = pad.shape[0]
    w = torch.randn(b * g, 1, *grid, generator=generator, device=pad.device)
    if color == "red":
        w = _blur(w, sigma)
    elif color == "blue":
        w = w - _blur(w, sigma)
    elif color == "green":
        w = _blur(w, sigma) - _blur(w, 2 * sigma)
    return finalize(_keep_lowest(w.reshape(b, -1), pad, _n_keep(pad, ratio)), pad)


def loss_guided_masking(
    pad: Tensor,
    difficulty: Tensor,
    ratio: float,
    hard_fraction: float = 0.5,
    generator: torch.Generator | None = None,
) -> Masking:
    """HPM-style: hide the tokens predicted hardest, plus random ones.

    ``difficulty [B, L]`` is the predicted per-token reconstruction loss. Of the tokens to hide,
    ``hard_fraction`` are the hardest; the rest are drawn at random from the remaining tokens.
    HPM ramps ``hard_fraction`` up during training (easy-to-hard); pass the current value.
    """
    _check_ratio(ratio)
    if not 0.0 <= hard_fraction <= 1.0:
        raise ValueError(f"hard_fraction must be in [0, 1], got {hard_fraction}")
    if difficulty.shape != pad.shape:
        raise ValueError(f"difficulty shape {list(difficulty.shape)} must equal pad shape {list(pad.shape)}")
    n_real = (~pad).sum(1)
    n_hide = n_real - _n_keep(pad, ratio)
    n_hard = torch.floor(n_hide.float() * hard_fraction).long()
    d = difficulty.detach().float().masked_fill(pad, float("-inf"))
    rank = torch.argsort(torch.argsort(-d, 1), 1)
    hard = (rank < n_hard[:, None]) & ~pad
    rest = pad | hard
    noise = _uniform(pad.shape, pad, generator)
    # the n_hide - n_hard lowest-noise tokens outside `rest` are the random extra ones
    chosen = ~_keep_lowest(noise, rest, n_hide - n_hard) & ~rest
    return finalize(hard | chosen, pad)
