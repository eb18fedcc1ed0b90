"""The non-learned neighbour-fill baseline, on chips of the bundled Landsat crop, and its score in reconstruct."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from rasterio.windows import Window

from geomae.baselines import neighbour_fill
from geomae.cli import _meta_of, main
from geomae.data import band_map
from geomae.io import open_raster, read_window
from geomae.tiles import psnr_db, reconstruct_raster
from maecore.models import load_pretrained

P = 8  # patch side of the tests' grids


def chip(path: Path, row: int, col: int, h: int, w: int) -> torch.Tensor:
    """``[1, 3, h, w]`` float32 window of the sample, NaN at nodata."""
    with open_raster(path) as src:
        return torch.from_numpy(read_window(src, Window(col, row, w, h))["x"])[None]


def hide(cells: np.ndarray | torch.Tensor, c: int = 3) -> torch.Tensor:
    """Patch-grid mask ``[gh, gw]`` (or ``[c, gh, gw]``) -> pixel mask ``[1, c, gh*P, gw*P]``."""
    m = torch.as_tensor(np.asarray(cells), dtype=torch.bool)
    m = m.expand(c, *m.shape[-2:])
    return m.repeat_interleave(P, -2).repeat_interleave(P, -1)[None].clone()


def cell(t: torch.Tensor, y: int, x: int) -> torch.Tensor:
    """The ``P x P`` patch at grid ``(y, x)`` of ``[1, C, H, W]``: ``[C, P, P]``."""
    return t[0, :, y * P:(y + 1) * P, x * P:(x + 1) * P]


def test_constant_bands_come_back_exactly(sample_tif: Path):
    x = chip(sample_tif, 64, 64, 32, 32)
    assert torch.isfinite(x).all()  # a chip with no nodata
    const = x.mean((2, 3), keepdim=True).expand_as(x).contiguous()  # each band flat at its real mean
    cells = np.zeros((4, 4), bool)
    cells[::2, ::2] = True  # isolated hidden patches: 4-neighbours visible
    cells[1:3, 1:3] = True  # and a 2x2 block, some of whose patches have only diagonal neighbours
    out = neighbour_fill(const, hide(cells), P)
    assert torch.equal(out, const)


def test_plane_is_filled_with_its_patch_mean(sample_tif: Path):
    x = chip(sample_tif, 64, 64, 32, 32)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    plane = x.mean((2, 3), keepdim=True) + 0.7 * yy - 0.3 * xx  # a smooth ramp through the band means
    cells = np.zeros((4, 4), bool)
    cells[1, 2] = True  # all four neighbours visible and symmetric around it
    out = neighbour_fill(plane, hide(cells), P)
    expected = cell(plane, 1, 2).mean((1, 2), keepdim=True).expand(3, P, P)
    torch.testing.assert_close(cell(out, 1, 2), expected, rtol=0, atol=1e-4)
    assert not torch.equal(cell(out, 1, 2), cell(plane, 1, 2))  # a flat patch, not the ramp itself


def test_visible_pixels_and_nodata_are_never_touched_and_hidden_truth_never_read(sample_tif: Path):
    x = chip(sample_tif, 0, 0, 64, 64)  # the crop's corner: whole-nodata and partly-nodata patches
    assert torch.isnan(x).any() and torch.isfinite(x).any()
    gen = torch.Generator().manual_seed(0)
    hidden = hide(torch.rand(3, 8, 8, generator=gen) < 0.6)  # per band, as band-group masks can be
    out = neighbour_fill(x, hidden, P)
    assert torch.equal(out[~hidden].isnan(), x[~hidden].isnan())
    assert torch.equal(out[~hidden].nan_to_num(-1), x[~hidden].nan_to_num(-1))
    filled = out[hidden & torch.isfinite(x)]
    assert torch.isfinite(filled).all() and filled.min() >= np.nanmin(x.numpy()) and filled.max() <= np.nanmax(x.numpy())
    # a mask finer than the patches: only the hidden values change
    one = torch.zeros_like(hidden)
    one[0, :, 45, 60] = True  # a measured pixel
    changed = neighbour_fill(x, one, P).nan_to_num(-1) != x.nan_to_num(-1)
    assert torch.equal(changed, one)
    # the values under the mask are never read: changing them changes nothing
    tampered = x.masked_fill(hidden, 1e6)
    assert torch.equal(neighbour_fill(tampered, hidden, P).nan_to_num(-1), out.nan_to_num(-1))


def test_hidden_patch_is_the_mean_of_its_visible_neighbours_skipping_nodata(sample_tif: Path):
    x = chip(sample_tif, 0, 32, 32, 64)  # grid 4 x 8 along the crop's nodata edge
    assert torch.isnan(cell(x, 0, 3)).all() and torch.isnan(cell(x, 1, 2)).all()  # up, left: nodata
    assert torch.isnan(cell(x, 2, 3)).any() and torch.isfinite(cell(x, 2, 3)).any()  # down: partly measured
    assert torch.isfinite(cell(x, 1, 4)).all()  # right: measured
    cells = np.zeros((4, 8), bool)
    cells[1, 3] = True
    out = neighbour_fill(x, hide(cells), P)
    # only the two measured neighbours count, each by the mean of its measured pixels
    means = [cell(x, y, xx).double().nanmean((1, 2)) for y, xx in ((2, 3), (1, 4))]
    expected = torch.stack(means).mean(0).float()
    torch.testing.assert_close(cell(out, 1, 3), expected[:, None, None].expand(3, P, P), rtol=0, atol=1e-5)


def test_patch_with_no_visible_neighbour_takes_the_nearest_ring(sample_tif: Path):
    x = chip(sample_tif, 128, 128, 40, 40)  # grid 5 x 5, all measured
    assert torch.isfinite(x).all()
    cells = np.zeros((5, 5), bool)
    cells[1:4, 1:4] = True  # the centre (2, 2) has no visible 4-neighbour
    out = neighbour_fill(x, hide(cells), P)
    # nearest visible patches: Manhattan distance 2 (the diagonals at 2 are hidden too)
    ring = torch.stack([cell(x, y, xx).double().mean((1, 2)) for y, xx in ((0, 2), (4, 2), (2, 0), (2, 4))])
    torch.testing.assert_close(cell(out, 2, 2), ring.mean(0).float()[:, None, None].expand(3, P, P),
                               rtol=0, atol=1e-5)


@pytest.mark.parametrize("fill_value", [0.0, -2.5])
def test_band_with_nothing_visible_gets_fill_value(sample_tif: Path, fill_value: float):
    x = chip(sample_tif, 128, 128, 32, 32)
    cells = np.zeros((3, 4, 4), bool)
    cells[0] = True  # band 0 entirely hidden
    cells[1, 1, 1] = True  # band 1: one patch hidden; band 2: nothing hidden
    hidden = hide(cells)
    out = neighbour_fill(x, hidden, P, fill_value=fill_value)
    assert (out[0, 0] == fill_value).all()
    assert torch.isfinite(cell(out, 1, 1)[1]).all() and (cell(out, 1, 1)[1] != fill_value).all()
    assert torch.equal(out[0, 1:][~hidden[0, 1:]], x[0, 1:][~hidden[0, 1:]])
    assert torch.equal(out[0, 2], x[0, 2])


@pytest.mark.parametrize(("x", "hidden", "p", "match"), [
    (torch.zeros(3, 16, 16), torch.zeros(3, 16, 16, dtype=torch.bool), 8, r"x must be \[B, C, H, W\], got shape \(3, 16, 16\)"),
    (torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 8, dtype=torch.bool), 8,
     r"hidden must be a bool tensor of x's shape \(1, 3, 16, 16\), got torch.bool \(1, 3, 16, 8\)"),
    (torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16), 8, r"hidden must be a bool tensor .* got torch.float32"),
    (torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16, dtype=torch.bool), 0,
     r"patch size p must be a positive divisor of H=16 and W=16, got 0"),
    (torch.zeros(1, 3, 16, 24), torch.zeros(1, 3, 16, 24, dtype=torch.bool), 16,
     r"patch size p must be a positive divisor of H=16 and W=24, got 16"),
])
def test_bad_arguments(x: torch.Tensor, hidden: torch.Tensor, p: int, match: str):
    with pytest.raises(ValueError, match=match):
        neighbour_fill(x, hidden, p)


def test_reconstruct_scores_the_baseline_on_the_models_pixels(run: Path, sample_tif: Path, tmp_path: Path, capsys):
    model = load_pretrained(run / "export").eval()
    preset, stats, tile, bands = _meta_of(model)
    res = reconstruct_raster(model, sample_tif, lambda info: band_map(info, preset, bands), stats, tile, 8, seed=0)
    with open_raster(sample_tif) as src:
        raw = read_window(src)["x"].astype(np.float64)
    assert np.isnan(raw).any()  # the crop's nodata border: never scored
    scored = np.isfinite(raw).all(0) & res["hidden"]  # hidden pixels with every band measured
    assert scored.sum() > 10_000
    for prefix in ("", "baseline_"):
        mse = ((res[f"{prefix}values"] - raw) ** 2)[:, scored].mean()
        assert math.isclose(res[f"{prefix}masked_mse"], mse, rel_tol=1e-9)
        assert math.isfinite(res[f"{prefix}masked_psnr"])
        assert math.isclose(res[f"{prefix}masked_psnr"], 10 * math.log10(255**2 / mse), rel_tol=1e-9)
    # the baseline keeps every measured pixel no tile hid and fills hidden ones with data-like values
    keep = np.isfinite(raw) & ~res["hidden"][None]
    assert np.abs(res["baseline_values"][keep] - raw[keep]).max() < 1e-3  # float32 normalisation round trip
    assert (res["baseline_values"][:, scored] >= 1).all() and (res["baseline_values"][:, scored] <= 255).all()
    # nearby patches say more than the scene's band means (about 0.6 of their error on this crop), never all
    band_mean_mse = ((raw - np.nanmean(raw, (1, 2))[:, None, None]) ** 2)[:, scored].mean()
    assert 0 < res["baseline_masked_mse"] < 0.8 * band_mean_mse
    out = tmp_path / "rec.tif"
    capsys.readouterr()
    assert main(["reconstruct", "--model", str(run / "export"), "--input", str(sample_tif), "--out", str(out),
                 "--overlap", "8"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["baseline"] == "neighbour_fill"
    assert summary["baseline_masked_psnr_db"] == round(res["baseline_masked_psnr"], 2)
    assert summary["baseline_masked_mse"] == res["baseline_masked_mse"]
    assert summary["masked_psnr_db"] == round(res["masked_psnr"], 2)


def test_psnr_is_nan_when_nothing_was_scored_and_inf_when_perfect():
    assert math.isnan(psnr_db(float("nan"), 255.0))  # was inf: "perfect" for an empty score
    assert psnr_db(0.0, 255.0) == float("inf")
    assert psnr_db(255.0**2 / 100, 255.0) == pytest.approx(20.0)
