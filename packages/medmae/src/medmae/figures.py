"""Axial, coronal and sagittal slices of inputs, masked inputs and reconstructions.

Volumes are ``[X, Y, Z]`` arrays in RAS voxel order (as preprocessed); NaN marks hidden (masked)
or absent voxels and is drawn grey. Slices follow the neurological convention (the patient's right
on the image's right), anterior up in axial slices, superior up in coronal and sagittal ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from maecore.atomic import atomic_path

COLUMNS = ("input", "masked input", "reconstruction")
PLANES = ("axial", "coronal", "sagittal")


def _slice(vol: np.ndarray, plane: str, at: Sequence[int]) -> np.ndarray:
    """2D image with the display's vertical axis first (flipped so anterior / superior is up)."""
    if plane == "axial":
        img = vol[:, :, at[2]].T
    elif plane == "coronal":
        img = vol[:, at[1], :].T
    else:
        img = vol[at[0], :, :].T
    return img[::-1]


def plot_three_planes(
    rows: Sequence[tuple[str, dict[str, np.ndarray | None]]],
    path: str | Path,
    at: Sequence[int] | None = None,
    title: str | None = None,
) -> Path:
    """One row per modality, columns = for each plane: input, masked input, reconstruction.

    ``rows``: ``(label, {"input": vol, "masked input": vol, "reconstruction": vol})``; a missing or
    ``None`` volume is drawn as an empty grey panel. ``at``: the voxel the three planes cross
    (default: the volume centre). Each row shares one grey-level window (1st-99th percentile of its
    input, or of its reconstruction when there is no input). Written atomically as PNG.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shape = next(v.shape for _, d in rows for v in d.values() if v is not None)
    at = [s // 2 for s in shape] if at is None else list(at)
    n_cols = len(PLANES) * len(COLUMNS)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(1.45 * n_cols, 1.6 * len(rows) + 0.5), squeeze=False)
    for r, (label, vols) in enumerate(rows):
        ref = vols.get("input") if vols.get("input") is not None else vols.get("reconstruction")
        finite = ref[np.isfinite(ref)] if ref is not None else np.zeros(1)
        lo, hi = (np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0))
        hi = hi if hi > lo else lo + 1.0
        for p, plane in enumerate(PLANES):
            for c, col in enumerate(COLUMNS):
                ax = axes[r][p * len(COLUMNS) + c]
                vol = vols.get(col)
                img = np.full((2, 2), np.nan) if vol is None else _slice(np.asarray(vol, np.float32), plane, at)
                shown = np.clip((img - lo) / (hi - lo), 0, 1)
                rgb = np.repeat(np.nan_to_num(shown, nan=0.0)[..., None], 3, -1)
                rgb[np.isnan(img)] = (0.55, 0.55, 0.6)
                ax.imshow(rgb, interpolation="nearest", aspect="equal")
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(f"{plane}\n{col}", fontsize=7)
                if p == 0 and c == 0:
                    ax.set_ylabel(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return Path(path)


def rows_from_batch(result: dict[str, object], modalities: Sequence[str], item: int = 0
                    ) -> list[tuple[str, dict[str, np.ndarray | None]]]:
    """Rows of :func:`plot_three_planes` from :func:`maecore.figures.reconstruct_batch` output
    (``input``, ``masked``, ``recon`` ``[B, G, X, Y, Z]``); absent modalities are shown empty."""
    pad = result.get("group_pad")
    rows = []
    for g, m in enumerate(modalities):
        absent = bool(pad[item, g]) if pad is not None else False
        if absent:
            rows.append((f"{m} (absent)", {"input": None, "masked input": None, "reconstruction": None}))
            continue
        rows.append((m, {
            "input": result["input"][item, g].float().cpu().numpy(),
            "masked input": result["masked"][item, g].float().cpu().numpy(),
            "reconstruction": result["recon"][item, g].float().cpu().numpy(),
        }))
    return rows
