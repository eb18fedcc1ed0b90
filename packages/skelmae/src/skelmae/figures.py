"""Figure: a strip of skeleton frames, the input above its masked reconstruction."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from maecore.figures import save_figure

HIDDEN, VISIBLE, INPUT = "tab:red", "0.55", "tab:blue"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _draw(ax, pos: np.ndarray, edges: np.ndarray, hidden: np.ndarray | None, axes: tuple[int, int]) -> None:  # noqa: ANN001
    a, b = axes
    for i, j in edges:
        if not (np.isfinite(pos[i]).all() and np.isfinite(pos[j]).all()):
            continue
        hid = hidden is not None and (hidden[i] or hidden[j])
        color = HIDDEN if hid else (VISIBLE if hidden is not None else INPUT)
        ax.plot([pos[i, a], pos[j, a]], [pos[i, b], pos[j, b]], color=color, lw=1.6)
    if hidden is not None and hidden.any():
        ax.scatter(pos[hidden, a], pos[hidden, b], s=9, c=HIDDEN, zorder=3)


def plot_skeleton_strip(
    inp: np.ndarray,
    recon: np.ndarray,
    hidden: np.ndarray,
    edges: np.ndarray,
    path: str | Path,
    n_frames: int = 6,
    fps: float | None = None,
    axes: tuple[int, int] = (0, 1),
    title: str | None = None,
) -> Path:
    """Two rows of ``n_frames`` evenly spaced frames: the input (blue) and the reconstruction
    (visible bones grey, bones of hidden joints and the predicted joints red). ``inp, recon
    [T, V, C]``, ``hidden [T, V]``; ``axes`` picks the projection (default x, then y = up)."""
    plt = _plt()
    t = inp.shape[0]
    frames = np.unique(np.linspace(0, t - 1, min(n_frames, t)).round().astype(int))
    both = np.concatenate([inp[frames], recon[frames]])
    lo, hi = np.nanmin(both, axis=(0, 1)), np.nanmax(both, axis=(0, 1))
    half = 0.55 * max(hi[axes[0]] - lo[axes[0]], hi[axes[1]] - lo[axes[1]], 1e-6)
    fig, grid = plt.subplots(2, len(frames), figsize=(1.9 * len(frames), 4.4), squeeze=False)
    for k, f in enumerate(frames):
        for row, (pos, hid) in enumerate(((inp[f], None), (recon[f], hidden[f]))):
            ax = grid[row][k]
            _draw(ax, pos, edges, hid, axes)
            centre = np.nanmean(pos[:, list(axes)], 0)
            ax.set_xlim(centre[0] - half, centre[0] + half)
            ax.set_ylim(centre[1] - half, centre[1] + half)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"t = {f / fps:.2f} s" if fps else f"frame {f}", fontsize=8)
            if k == 0:
                ax.set_ylabel("input" if row == 0 else "reconstruction\n(red = masked)", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)
