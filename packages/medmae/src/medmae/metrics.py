"""Image-quality metrics of a synthesised volume against the acquired one, over a brain mask.

- PSNR: ``10 log10(R^2 / MSE)`` over masked voxels, ``R`` the data range of the target there.
- SSIM: Wang et al. (2004) with a 3D Gaussian window (sigma 1.5 voxels), ``K1 = 0.01``,
  ``K2 = 0.03``, local statistics from Gaussian filtering, averaged over masked voxels.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter


def _check(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    if pred.shape != target.shape:
        raise ValueError(f"pred {pred.shape} and target {target.shape} must have the same shape")
    m = np.ones(pred.shape, bool) if mask is None else np.asarray(mask, bool)
    if m.shape != pred.shape or not m.any():
        raise ValueError("the mask must have the volumes' shape and select at least one voxel")
    return m


def data_range(target: np.ndarray, mask: np.ndarray | None = None) -> float:
    v = target[_check(target, target, mask)]
    return float(v.max() - v.min()) or 1.0


def psnr(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None, rng: float | None = None) -> float:
    m = _check(pred, target, mask)
    r = data_range(target, m) if rng is None else float(rng)
    mse = float(np.mean((pred[m].astype(np.float64) - target[m]) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(r**2 / mse))


def ssim(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None, rng: float | None = None,
         sigma: float = 1.5) -> float:
    m = _check(pred, target, mask)
    r = data_range(target, m) if rng is None else float(rng)
    x, y = pred.astype(np.float64), target.astype(np.float64)
    c1, c2 = (0.01 * r) ** 2, (0.03 * r) ** 2
    mx, my = gaussian_filter(x, sigma), gaussian_filter(y, sigma)
    vx = gaussian_filter(x * x, sigma) - mx * mx
    vy = gaussian_filter(y * y, sigma) - my * my
    cxy = gaussian_filter(x * y, sigma) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s[m].mean())


def rescaled_baseline(
    inputs: dict[str, np.ndarray],
    target: np.ndarray,
    mask: np.ndarray,
    apply_to: dict[str, np.ndarray] | None = None,
    apply_mask: np.ndarray | None = None,
) -> tuple[str, float, np.ndarray] | None:
    """The non-learned synthesis to beat: the input most correlated with ``target`` over ``mask``,
    mapped by the least-squares line ``a * x + b``. Returns ``(name, |r|, volume)``, or None when
    no input varies over the mask.

    The line is fitted on ``inputs`` / ``target`` over ``mask`` and applied to ``apply_to[name]``
    over ``apply_mask`` (0 elsewhere; default: ``inputs`` and ``mask`` themselves). Applied to the
    volume it was fitted with, as when scoring one case against its own ``target``, this baseline
    is optimistic: a synthesis that beats it adds more than a rescaled copy of one input could.
    Fit on a training part and apply to a held-out part for an honest one.
    """
    m = _check(target, target, mask)
    y = target[m].astype(np.float64)
    best: tuple[float, str] | None = None
    for name, vol in inputs.items():
        _check(vol, target, m)
        x = vol[m].astype(np.float64)
        if x.std() == 0 or y.std() == 0:
            continue
        r = abs(float(np.corrcoef(x, y)[0, 1]))
        if best is None or r > best[0]:
            best = (r, name)
    if best is None:
        return None
    r, name = best
    a, b = np.polyfit(inputs[name][m].astype(np.float64), y, 1)
    x = (inputs if apply_to is None else apply_to)[name].astype(np.float64)
    keep = m if apply_mask is None else _check(x, x, apply_mask)
    return name, r, np.where(keep, a * x + b, 0.0)
