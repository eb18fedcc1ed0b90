"""Non-learned baselines for masked reconstruction: what a model's masked PSNR has to beat."""

from __future__ import annotations

import torch
from torch import Tensor


def _grid_distance(gh: int, gw: int, device: torch.device) -> Tensor:
    """``[gh*gw, gh*gw]`` Manhattan distances between the cells of a ``gh x gw`` grid (row-major)."""
    yy, xx = torch.meshgrid(torch.arange(gh, device=device), torch.arange(gw, device=device), indexing="ij")
    yy, xx = yy.flatten(), xx.flatten()
    return (yy[:, None] - yy[None]).abs() + (xx[:, None] - xx[None]).abs()


def neighbour_fill(x: Tensor, hidden: Tensor, p: int, fill_value: float = 0.0) -> Tensor:
    """Fill every hidden patch from the visible patches around it; never reads a hidden value.

    ``x [B, C, H, W]`` (NaN where not measured), ``hidden [B, C, H, W]`` bool (True where the mask
    hid a value, e.g. ``maecore.figures.reconstruct_batch(...)["hidden"]``), ``p`` the patch side
    (``H`` and ``W`` multiples of it) -> ``[B, C, H, W]``, equal to ``x`` wherever ``hidden`` is False.

    Per sample and channel, on the grid of ``p x p`` patches: a patch is hidden when any of its
    values is, visible when not hidden and it has a measured value. A hidden patch becomes the mean
    of the means of the visible patches nearest to it (Manhattan distance on the patch grid: its
    visible 4-neighbours when it has any, else the nearest ring that has one). A channel of a sample
    with no visible patch at all is filled with ``fill_value`` (0: the band mean, for inputs
    normalised by the training statistics).
    """
    if x.ndim != 4:
        raise ValueError(f"x must be [B, C, H, W], got shape {tuple(x.shape)}")
    if hidden.shape != x.shape or hidden.dtype != torch.bool:
        raise ValueError(f"hidden must be a bool tensor of x's shape {tuple(x.shape)}, "
                         f"got {hidden.dtype} {tuple(hidden.shape)}")
    b, c, h, w = x.shape
    if p < 1 or h % p or w % p:
        raise ValueError(f"patch size p must be a positive divisor of H={h} and W={w}, got {p}")
    gh, gw = h // p, w // p
    # per-patch means of the measured values (float64: a constant comes back exactly) and which
    # patches are hidden / usable: [B, C, gh*gw]
    means = x.reshape(b, c, gh, p, gw, p).double().nanmean((3, 5)).reshape(b, c, -1)
    hid = hidden.reshape(b, c, gh, p, gw, p).any(5).any(3).reshape(b, c, -1)
    vis = ~hid & torch.isfinite(means)
    dist = _grid_distance(gh, gw, x.device)
    fill = torch.full_like(means, fill_value)
    patterns = torch.cat([hid, vis], -1).cpu().numpy()
    for i in range(b):
        # channels with the same hidden and visible patches (a band group, usually) share one weighting
        same: dict[bytes, list[int]] = {}
        for k in range(c):
            same.setdefault(patterns[i, k].tobytes(), []).append(k)
        for ks in same.values():
            idx = torch.tensor(ks, device=x.device)
            rows, cols = hid[i, ks[0]].nonzero()[:, 0], vis[i, ks[0]].nonzero()[:, 0]
            if len(rows) == 0 or len(cols) == 0:
                continue
            d = dist[rows][:, cols]  # hidden -> visible patches
            near = (d == d.amin(1, keepdim=True)).double()  # [hidden, visible]: 1 for the nearest
            fill[i, idx[:, None], rows[None]] = (means[i, idx][:, cols] @ near.T) / near.sum(1)
    full = fill.reshape(b, c, gh, 1, gw, 1).expand(b, c, gh, p, gw, p).reshape(b, c, h, w)
    return torch.where(hidden, full.to(x.dtype), x)


__all__ = ["neighbour_fill"]
