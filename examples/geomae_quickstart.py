"""geomae quick start: pretrain a tiny MAE on the bundled Landsat crop, write a georeferenced
embedding raster (one pixel per 8 x 8 patch, same CRS) and show its first 3 principal components
as a map beside the input.

run: python examples/geomae_quickstart.py [--out DIR] [--steps N]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import rasterio

from geomae.cli import main as geomae


def pca_rgb(emb: np.ndarray) -> np.ndarray:
    """``[D, H, W]`` -> ``[H, W, 3]`` in [0, 1]: the first 3 principal components (NaN -> grey)."""
    d, h, w = emb.shape
    flat = emb.reshape(d, -1).T
    ok = np.isfinite(flat).all(1)
    x = flat[ok] - flat[ok].mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    pcs = x @ vt[:3].T
    pcs = (pcs - np.percentile(pcs, 2, 0)) / (np.percentile(pcs, 98, 0) - np.percentile(pcs, 2, 0) + 1e-9)
    out = np.full((h * w, 3), 0.5)
    out[ok] = np.clip(pcs, 0, 1)
    return out.reshape(h, w, 3)


def run(out: Path, steps: int) -> Path:
    from geomae.data import sample_dir

    src = sample_dir() / "landsat_rgb.tif"
    assert geomae(["pretrain", "--config", "tiny", "--out", str(out / "run"), "--max-steps", str(steps)]) == 0
    emb_tif = out / "embedding.tif"
    assert geomae(["embed", "--model", str(out / "run" / "export"), "--input", str(src), "--out", str(emb_tif)]) == 0
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from maecore.figures import save_figure

    with rasterio.open(src) as s, rasterio.open(emb_tif) as e:
        img, emb, bounds, ebounds = s.read(), e.read(), s.bounds, e.bounds
        print(f"input {s.shape} {s.crs}, embedding {e.count} x {e.shape}, pixel {e.res[0]:.0f} m")
    fig, ax = plt.subplots(1, 2, figsize=(10, 5))
    extent = [bounds.left, bounds.right, bounds.bottom, bounds.top]
    ax[0].imshow(img.transpose(1, 2, 0), extent=extent)
    ax[0].set_title("Landsat 7 RGB (EPSG:32618)")
    ax[1].imshow(pca_rgb(emb), extent=[ebounds.left, ebounds.right, ebounds.bottom, ebounds.top])
    ax[1].set_title("embedding, first 3 PCs")
    return save_figure(fig, out / "embedding_map.png")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="geomae_quickstart_")))
    ap.add_argument("--steps", type=int, default=100)
    a = ap.parse_args()
    print("figure:", run(a.out, a.steps))
