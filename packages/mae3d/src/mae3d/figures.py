"""Figures: 3D scatter of input, visible and reconstructed points; slices of radiance grids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import Tensor

from maecore.figures import save_figure


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_cloud_reconstruction(inp: np.ndarray, visible: np.ndarray, predicted: np.ndarray, path: str | Path) -> Path:
    """Three 3D panels: the input cloud, the visible patches, visible (grey) + predicted (red)."""
    plt = _plt()
    fig = plt.figure(figsize=(11, 3.8))
    panels = [("input", [(inp, "tab:blue")]), ("visible patches", [(visible, "0.5")]),
              ("reconstruction", [(visible, "0.6"), (predicted, "tab:red")])]
    for i, (title, layers) in enumerate(panels):
        ax = fig.add_subplot(1, 3, i + 1, projection="3d")
        for pts, color in layers:
            if len(pts):
                ax.scatter(pts[:, 0], pts[:, 1], pts[:, 2], s=1.5, c=color, depthshade=False)
        ax.set_title(title)
        ax.set_xlim(-0.7, 0.7)  # the unit sphere, zoomed: clouds rarely reach its poles
        ax.set_ylim(-0.7, 0.7)
        ax.set_zlim(-0.7, 0.7)
        ax.set_box_aspect((1, 1, 1))
        ax.set_axis_off()
    return save_figure(fig, path)


def plot_grid_reconstruction(result: dict[str, Tensor], path: str | Path) -> Path:
    """Middle slices (along the last axis) of RGB x alpha: input, masked input, reconstruction."""
    plt = _plt()
    rows = [("input", result["input"]), ("masked", result["masked"]), ("reconstruction", result["recon"])]
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.4))
    for ax, (title, vol) in zip(axes, rows):
        v = vol[0].float().numpy()  # [4, X, Y, Z]
        mid = v.shape[-1] // 2
        rgb = np.clip(np.nan_to_num(v[:3, :, :, mid] * np.clip(v[3:, :, :, mid], 0, 1), nan=0.5), 0, 1)
        ax.imshow(rgb.transpose(1, 2, 0), origin="lower", interpolation="nearest")
        ax.set_title(f"{title} (z = {mid})")
        ax.set_axis_off()
    return save_figure(fig, path)
