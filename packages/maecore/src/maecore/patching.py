"""Patchify / unpatchify for 1D signals, 2D images and 3D volumes, and fixed sin-cos codes.

All functions are pure and work for any number of spatial dimensions ``n`` (1, 2 or 3):
``x [B, C, *S]`` with ``S[i]`` divisible by ``patch[i]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


def as_patch_size(patch: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    """``16 -> (16, 16)`` for ``ndim=2``; a sequence must have ``ndim`` entries."""
    size = (patch,) * ndim if isinstance(patch, int) else tuple(int(p) for p in patch)
    if len(size) != ndim or any(p < 1 for p in size):
        raise ValueError(f"patch size must be {ndim} positive integers, got {patch!r}")
    return size


def grid_shape(spatial: Sequence[int], patch: Sequence[int]) -> tuple[int, ...]:
    """Number of patches per axis; raises if an axis is not a multiple of the patch."""
    if len(spatial) != len(patch):
        raise ValueError(f"input has {len(spatial)} spatial dims {tuple(spatial)}, patch has {len(patch)}")
    for s, p in zip(spatial, patch):
        if s % p != 0 or s < p:
            raise ValueError(
                f"spatial size {tuple(spatial)} is not a positive multiple of the patch size "
                f"{tuple(patch)}; crop or pad the input first"
            )
    return tuple(s // p for s, p in zip(spatial, patch))


def patchify(x: Tensor, patch: Sequence[int]) -> Tensor:
    """``x [B, C, *S] -> [B, N, C * prod(patch)]`` with ``N = prod(S / patch)`` in C order.

    Within a token, values are ordered channel first, then patch voxels (row-major).
    """
    b, c, *spatial = x.shape
    grid = grid_shape(spatial, patch)
    n = len(spatial)
    # [B, C, g0, p0, g1, p1, ...] -> [B, g0, g1, ..., C, p0, p1, ...]
    shape = [b, c]
    for g, p in zip(grid, patch):
        shape += [g, p]
    x = x.reshape(shape)
    grid_axes = [2 + 2 * i for i in range(n)]
    patch_axes = [3 + 2 * i for i in range(n)]
    x = x.permute(0, *grid_axes, 1, *patch_axes)
    return x.reshape(b, math.prod(grid), c * math.prod(patch))


def unpatchify(tokens: Tensor, patch: Sequence[int], grid: Sequence[int], channels: int) -> Tensor:
    """Inverse of :func:`patchify`: ``[B, N, C * prod(patch)] -> [B, C, *(grid * patch)]``."""
    b, n_tok, p_len = tokens.shape
    n = len(grid)
    if n_tok != math.prod(grid) or p_len != channels * math.prod(patch):
        raise ValueError(
            f"tokens {list(tokens.shape)} do not match grid {tuple(grid)}, patch {tuple(patch)}, "
            f"channels {channels}"
        )
    x = tokens.reshape(b, *grid, channels, *patch)
    # [B, g0.., C, p0..] -> [B, C, g0, p0, g1, p1, ...]
    order = [0, n + 1]
    for i in range(n):
        order += [1 + i, n + 2 + i]
    x = x.permute(*order)
    return x.reshape(b, channels, *(g * p for g, p in zip(grid, patch)))


def grid_coords(grid: Sequence[int], device: torch.device | None = None) -> Tensor:
    """Integer coordinates of every cell of ``grid`` in C order: ``[prod(grid), len(grid)]``."""
    axes = [torch.arange(g, device=device, dtype=torch.float32) for g in grid]
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([m.reshape(-1) for m in mesh], dim=-1)


def sincos_embed(coords: Tensor, dim: int, temperature: float = 10000.0) -> Tensor:
    """Fixed sin-cos code of continuous coordinates: ``[..., C] -> [..., dim]``.

    Each of the C axes gets an equal, even share of ``dim`` (half sin, half cos, frequencies
    ``temperature ** (-k / share)`` as in MAE); leftover dims are zero.
    """
    c = coords.shape[-1]
    share = (dim // c) // 2 * 2
    if share == 0:
        raise ValueError(f"embedding dim {dim} is too small for {c} coordinate axes")
    half = share // 2
    omega = torch.arange(half, device=coords.device, dtype=torch.float32) / half
    omega = 1.0 / temperature**omega
    out = coords.float().unsqueeze(-1) * omega  # [..., C, half]
    code = torch.cat([out.sin(), out.cos()], dim=-1).flatten(-2)  # [..., C * share]
    if code.shape[-1] < dim:
        code = torch.nn.functional.pad(code, (0, dim - code.shape[-1]))
    return code
