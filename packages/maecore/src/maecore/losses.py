"""Reconstruction losses over masked tokens.

Every loss takes ``pred, target [B, L, P]``, ``weight [B, L]`` (1 where a token is masked and real,
i.e. scored) and ``elem_valid [B, L, P]`` (False for target columns a token does not have, e.g. a
narrow band group padded to the widest; None = all valid), and returns a scalar: the per-token
loss averaged over the scored tokens. With nothing scored the result is exactly 0 and still
connected to ``pred`` (no NaN, backward works).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def _token_mean(err: Tensor, elem_valid: Tensor | None) -> Tensor:
    """``[B, L, P] -> [B, L]``: mean over the valid entries of each token."""
    if elem_valid is None:
        return err.mean(-1)
    v = elem_valid.to(err.dtype)
    return (err * v).sum(-1) / v.sum(-1).clamp(min=1)


def _weighted(per_token: Tensor, weight: Tensor, pred: Tensor) -> Tensor:
    w = weight.to(per_token.dtype)
    total = w.sum()
    if total <= 0:
        return (pred * 0).sum()
    return (per_token * w).sum() / total


def normalize_targets(target: Tensor, elem_valid: Tensor | None = None, eps: float = 1e-6) -> Tensor:
    """MAE's per-patch normalisation: ``(t - mean) / sqrt(var + eps)`` over each token's valid
    entries (population variance). Invalid entries are returned as 0."""
    v = torch.ones_like(target) if elem_valid is None else elem_valid.to(target.dtype)
    n = v.sum(-1, keepdim=True).clamp(min=1)
    mean = (target * v).sum(-1, keepdim=True) / n
    var = (((target - mean) * v) ** 2).sum(-1, keepdim=True) / n
    return (target - mean) / (var + eps).sqrt() * v


def masked_mse(
    pred: Tensor,
    target: Tensor,
    weight: Tensor,
    elem_valid: Tensor | None = None,
    norm_pix: bool = False,
    eps: float = 1e-6,
) -> Tensor:
    """Mean squared error per token, averaged over scored tokens (MAE)."""
    if norm_pix:
        target = normalize_targets(target, elem_valid, eps)
    return _weighted(_token_mean((pred - target) ** 2, elem_valid), weight, pred)


def masked_l1(
    pred: Tensor,
    target: Tensor,
    weight: Tensor,
    elem_valid: Tensor | None = None,
    norm_pix: bool = False,
    eps: float = 1e-6,
) -> Tensor:
    """Absolute error per token, averaged over scored tokens (SimMIM)."""
    if norm_pix:
        target = normalize_targets(target, elem_valid, eps)
    return _weighted(_token_mean((pred - target).abs(), elem_valid), weight, pred)


def masked_chamfer(
    pred: Tensor,
    target: Tensor,
    weight: Tensor,
    elem_valid: Tensor | None = None,
    point_dim: int = 3,
) -> Tensor:
    """Chamfer-L2 per token between ``P // point_dim`` predicted and target points (Point-MAE):
    mean squared distance from each predicted point to its nearest target point plus the same
    from target to prediction. Only scored tokens are compared."""
    b, l, p = pred.shape
    if p % point_dim:
        raise ValueError(f"token width {p} is not a multiple of point_dim {point_dim}")
    sel = weight > 0
    if not bool(sel.any()):
        return (pred * 0).sum()
    from maecore.pointops import chamfer_distance

    a = pred[sel].reshape(-1, p // point_dim, point_dim)
    t = target[sel].reshape(-1, p // point_dim, point_dim)
    d_ab, d_ba = chamfer_distance(a, t)
    per_token = d_ab.mean(-1) + d_ba.mean(-1)
    w = weight[sel].to(per_token.dtype)
    return (per_token * w).sum() / w.sum()


def grid_alpha_mse(
    pred: Tensor,
    target: Tensor,
    weight: Tensor,
    elem_valid: Tensor | None = None,
    channels: int = 4,
    alpha_threshold: float = 0.01,
) -> Tensor:
    """NeRF-MAE-style loss for radiance-grid tokens laid out channel first ``[channels, vox]``
    (RGB first, alpha / density last). Per token:
    ``sum_{v: alpha_t(v) > thr} |rgb_p(v) - rgb_t(v)|^2 / (3 * n_occupied) + mean_v (alpha_p - alpha_t)^2``,
    the colour term being 0 for a token with no occupied voxel."""
    b, l, p = pred.shape
    if p % channels:
        raise ValueError(f"token width {p} is not a multiple of channels {channels}")
    vox = p // channels
    pr, tg = pred.reshape(b, l, channels, vox), target.reshape(b, l, channels, vox)
    occupied = (tg[:, :, -1] > alpha_threshold).to(pred.dtype)  # [B, L, vox]
    rgb_err = ((pr[:, :, :-1] - tg[:, :, :-1]) ** 2).sum(2) * occupied
    rgb = rgb_err.sum(-1) / ((channels - 1) * occupied.sum(-1)).clamp(min=1)
    alpha = ((pr[:, :, -1] - tg[:, :, -1]) ** 2).mean(-1)
    return _weighted(rgb + alpha, weight, pred)


LOSSES: dict[str, Callable[..., Tensor]] = {
    "mse": masked_mse,
    "l1": masked_l1,
    "chamfer": masked_chamfer,
    "grid_alpha_mse": grid_alpha_mse,
}


def get_loss(name: str) -> Callable[..., Tensor]:
    if name not in LOSSES:
        raise KeyError(f"unknown loss {name!r}; known losses: {', '.join(sorted(LOSSES))}")
    return LOSSES[name]
