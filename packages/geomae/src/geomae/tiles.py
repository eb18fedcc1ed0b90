"""Whole rasters through a chip-sized model: tiled reconstruction with blended seams and
georeferenced embedding rasters (one pixel per patch)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from geomae.baselines import neighbour_fill
from geomae.data import BandMap, denormalize, grid_windows, to_model_input
from geomae.io import RasterInfo, info_of, open_raster, read_window
from geomae.tokenizers import position_embeddings
from maecore.figures import reconstruct_batch


@dataclass
class TileResult:
    """One tile's masked forward pass (model channel order, normalised units)."""

    row: int
    col: int
    result: dict[str, torch.Tensor]


def ramp_weight(tile: int, overlap: int) -> np.ndarray:
    """``[tile, tile]`` blending weight: 1 inside, a linear ramp over ``overlap`` pixels at each edge."""
    if overlap <= 0:
        return np.ones((tile, tile), np.float32)
    ramp = np.minimum(np.arange(tile) + 1, np.arange(tile)[::-1] + 1) / (overlap + 1)
    w1 = np.clip(ramp, 0, 1).astype(np.float32)
    return np.outer(w1, w1)


def _tile_input(src: Any, bmap: BandMap, stats: dict[str, Any] | None, r: int, c: int, tile: int) -> dict[str, Any]:
    from rasterio.windows import Window

    raw = read_window(src, Window(c, r, tile, tile), bmap.file_bands)
    m = to_model_input(raw, bmap, stats)
    return {k: v[None] for k, v in m.items()}


def psnr_db(mse: float, peak: float) -> float:
    """``10 log10(peak^2 / mse)``: inf for a perfect reconstruction (``mse == 0``), NaN when nothing
    was scored (``mse`` NaN: no hidden pixel had every band measured)."""
    if math.isnan(mse):
        return float("nan")
    return float(10 * np.log10(peak**2 / mse)) if mse > 0 else float("inf")


@torch.no_grad()
def reconstruct_raster(
    model: nn.Module, path: str | os.PathLike[str], bmap_of: Any, stats: dict[str, Any] | None, tile: int,
    overlap: int = 0, seed: int = 0, full_prediction: bool = False,
) -> dict[str, Any]:
    """Masked reconstruction of a whole raster, tile by tile (each tile its own seeded mask).

    ``bmap_of(info) -> BandMap``. Each tile contributes its reconstruction (the model's prediction
    at masked patches, the input elsewhere; ``full_prediction``: the prediction everywhere),
    weighted by :func:`ramp_weight` so seams between overlapping tiles are blended. Returns
    ``values`` float64 ``[count, H, W]`` in the file's band order and units, ``valid`` (input
    pixels with data), ``hidden`` (pixels masked in at least one tile), ``info``, ``tiles`` (the
    per-tile results, for figures) and ``masked_mse`` / ``masked_psnr`` over hidden valid pixels.

    The non-learned baseline the model has to beat, :func:`geomae.baselines.neighbour_fill` (each
    hidden patch = the mean of its nearest visible patches, per band, from the same tile and mask;
    0 in model units, the training band mean, where a tile has no visible patch), is blended and
    scored the same way: ``baseline_values`` and ``baseline_masked_mse`` / ``baseline_masked_psnr``
    over exactly the pixels the model is scored on. It fills hidden patches only, also with
    ``full_prediction``.
    """
    model.eval()
    with open_raster(path) as src:
        info: RasterInfo = info_of(src)
        bmap: BandMap = bmap_of(info)
        h, w, nch = info.height, info.width, len(bmap.source)
        acc = np.zeros((nch, h, w))
        base_acc = np.zeros((nch, h, w))
        wsum = np.zeros((h, w))
        hidden = np.zeros((h, w), bool)
        weight = ramp_weight(tile, overlap).astype(np.float64)
        p = int(model.tokenizer.patch[0])
        tiles = []
        for k, (r, c) in enumerate(grid_windows(h, w, tile, max(tile - overlap, 1))):
            batch = _tile_input(src, bmap, stats, r, c, tile)
            res = reconstruct_batch(model, batch, seed=seed + k)
            out = res["pred" if full_prediction else "recon"][0].float().numpy()
            base = neighbour_fill(batch["x"], res["hidden"], p)[0].float().numpy()
            hid = res["hidden"][0].any(0).numpy()
            sh, sw = min(tile, h - r), min(tile, w - c)
            acc[:, r:r + sh, c:c + sw] += np.nan_to_num(out[:, :sh, :sw]) * weight[:sh, :sw]
            base_acc[:, r:r + sh, c:c + sw] += np.nan_to_num(base[:, :sh, :sw]) * weight[:sh, :sw]
            wsum[r:r + sh, c:c + sw] += weight[:sh, :sw]
            hidden[r:r + sh, c:c + sw] |= hid[:sh, :sw]
            tiles.append(TileResult(r, c, res))
        full = read_window(src, None, bmap.file_bands)
    # model channels -> file bands (every file band is one model channel)
    order = [bmap.source.index(b) for b in range(1, info.count + 1)]
    modelled = to_model_input(full, bmap, None)["valid"].numpy()[order]  # pixels with every band measured
    raw_x = full["x"][[bmap.file_bands.index(b) for b in range(1, info.count + 1)]].astype(np.float64)
    valid_f = np.isfinite(raw_x)  # per band, as the file's nodata masks say
    partial = valid_f & ~modelled  # some band missing there: never modelled, written back as read
    x_true = np.nan_to_num(raw_x)
    scored = modelled & hidden[None]
    peak = float(np.iinfo(info.dtype).max) if np.dtype(info.dtype).kind in "iu" else float(np.ptp(x_true[valid_f]) or 1)
    result: dict[str, Any] = {"valid": valid_f, "hidden": hidden, "info": info, "tiles": tiles,
                              "hidden_fraction": float(hidden.mean())}
    for prefix, a in (("", acc), ("baseline_", base_acc)):
        values = denormalize(a / np.maximum(wsum, 1e-12), stats)[order]
        values[partial] = raw_x[partial]
        mse = float(((values - x_true) ** 2)[scored].mean()) if scored.any() else float("nan")
        psnr = psnr_db(mse, peak)
        result.update({f"{prefix}values": values, f"{prefix}masked_mse": mse, f"{prefix}masked_psnr": psnr})
    return result


@torch.no_grad()
def embed_raster(
    model: nn.Module, path: str | os.PathLike[str], bmap_of: Any, stats: dict[str, Any] | None, tile: int,
    batch_size: int = 8,
) -> dict[str, Any]:
    """One embedding per patch of a whole raster: ``emb`` float32 ``[D, ceil(H/p), ceil(W/p)]``
    (NaN where the patch has no data) and ``transform`` = the raster's scaled by the patch size."""
    from affine import Affine

    model.eval()
    p = int(model.tokenizer.patch[0])
    if tile % p:
        raise ValueError(f"tile {tile} must be a multiple of the patch size {p}")
    with open_raster(path) as src:
        info = info_of(src)
        bmap = bmap_of(info)
        gh, gw = -(-info.height // p), -(-info.width // p)
        origins = [(r, c) for r in range(0, info.height, tile) for c in range(0, info.width, tile)]
        out: np.ndarray | None = None
        g = tile // p
        for i in range(0, len(origins), batch_size):
            chunk = origins[i:i + batch_size]
            parts = [_tile_input(src, bmap, stats, r, c, tile) for r, c in chunk]
            batch = {k: torch.cat([q[k] for q in parts]) for k in parts[0]}
            emb, pad = model.encode_tokens(batch)
            grid = position_embeddings(emb.float(), pad, model.tokenizer.n_groups, (g, g)).numpy()
            if out is None:
                out = np.full((grid.shape[1], gh, gw), np.nan, np.float32)
            for (r, c), e in zip(chunk, grid):
                gr, gc = r // p, c // p
                sh, sw = min(g, gh - gr), min(g, gw - gc)
                out[:, gr:gr + sh, gc:gc + sw] = e[:, :sh, :sw]
    assert out is not None
    return {"emb": out, "transform": info.transform @ Affine.scale(p), "crs": info.crs, "info": info, "patch": p}
