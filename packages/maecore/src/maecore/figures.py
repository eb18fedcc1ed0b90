"""Figures a person looks at: input, masked input and reconstruction side by side."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from maecore.atomic import atomic_path


@torch.no_grad()
def reconstruct_batch(model: nn.Module, batch: dict[str, Any], seed: int = 0) -> dict[str, Tensor]:
    """Run one masked forward pass and return domain tensors ``[B, C, *S]``.

    Returns ``input``, ``masked`` (hidden patches set to NaN), ``recon`` (model prediction at hidden
    patches, input elsewhere), ``pred`` (raw prediction everywhere) and ``hidden`` (bool, per value).
    A ``norm_pix`` model predicts per-patch normalised values, so its ``recon`` is in those units.
    """
    was_training = model.training
    model.eval()
    gen = torch.Generator(device=batch["x"].device).manual_seed(seed)
    out = model(batch, generator=gen)
    tok = model.tokenizer
    x = batch["x"]
    hidden_tok = out.mask[..., None].expand_as(out.target).to(out.target.dtype)
    hidden = tok.untokenize(hidden_tok, batch).bool()
    pred = tok.untokenize(out.pred.float(), batch)
    recon = torch.where(hidden, pred, x)
    masked = x.masked_fill(hidden, float("nan"))
    model.train(was_training)
    return {"input": x, "masked": masked, "recon": recon, "pred": pred, "hidden": hidden, "loss": out.loss}


def _to_rgb(img: np.ndarray, rgb: Sequence[int], lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``[C, H, W]`` -> ``[H, W, 3]`` in [0, 1] with a fixed per-band stretch; NaN shown grey."""
    chans = list(rgb) if img.shape[0] >= 3 else [0, 0, 0]
    out = np.stack([(img[c] - lo[c]) / max(hi[c] - lo[c], 1e-6) for c in chans], -1)
    nan = np.isnan(out).any(-1)
    out = np.clip(np.nan_to_num(out, nan=0.5), 0, 1)
    out[nan] = 0.5
    return out


def plot_reconstruction_2d(
    result: dict[str, Tensor],
    path: str | Path,
    rgb: Sequence[int] = (0, 1, 2),
    max_items: int = 4,
    title: str | None = None,
) -> Path:
    """Grid of input / masked / reconstruction for up to ``max_items`` 2D samples; atomic PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = result["input"].float().cpu().numpy()
    n = min(max_items, x.shape[0])
    flat = x[:n].transpose(1, 0, 2, 3).reshape(x.shape[1], -1)
    lo, hi = np.nanpercentile(flat, 2, axis=1), np.nanpercentile(flat, 98, axis=1)
    rows = [("input", "input"), ("masked", "masked input"), ("recon", "reconstruction")]
    fig, axes = plt.subplots(len(rows), n, figsize=(2.2 * n, 2.2 * len(rows)), squeeze=False)
    for r, (key, label) in enumerate(rows):
        imgs = result[key].float().cpu().numpy()
        for i in range(n):
            ax = axes[r][i]
            ax.imshow(_to_rgb(imgs[i], rgb, lo, hi), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(label)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def save_figure(fig: Any, path: str | Path, dpi: int = 110) -> Path:
    """Lay out, write a matplotlib figure as PNG atomically, and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return Path(path)
