"""Readers, presets, band mapping and every bad input named in the issue."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from geomae.bands import PRESETS, get_preset, load_preset_file
from geomae.data import (
    ChipFolder,
    RasterChips,
    TorchgeoChips,
    band_map,
    compute_stats,
    grid_windows,
    open_sources,
    read_stats,
)
from geomae.io import cast_to, open_raster, raster_info, read_raster, read_window, scan_raster, write_raster
from maecore.errors import DataError

RGB = get_preset("landsat7_rgb")


def test_read_sample_keeps_geometry_and_marks_nodata(sample_tif: Path):
    r = read_raster(sample_tif)
    with rasterio.open(sample_tif) as src:
        raw = src.read()
        assert r["transform"] == src.transform and r["crs"] == src.crs
    assert r["x"].shape == (3, 384, 384) and r["x"].dtype == np.float32
    nod = (raw == 0)
    assert (~r["valid"] == nod).all() and np.isnan(r["x"][nod]).all()
    assert 0.05 < nod.all(0).mean() < 0.12  # the scene's nodata border
    np.testing.assert_array_equal(r["x"][~nod], raw[~nod].astype(np.float32))


def test_boundless_window_is_not_valid_outside(sample_tif: Path):
    with open_raster(sample_tif) as src:
        w = read_window(src, Window(380, 100, 8, 8))
    assert w["x"].shape == (3, 8, 8)
    assert not w["valid"][:, :, 4:].any() and w["valid"][:, :, :4].any()
    assert w["transform"].c == pytest.approx(src.transform.c + 380 * src.transform.a)


@pytest.mark.parametrize("name,n,groups", [("naip", 4, 2), ("sentinel2_l1c", 13, 4), ("sentinel2_l2a", 12, 4),
                                           ("landsat89", 7, 3), ("modis_satvision", 14, 2)])
def test_presets(name: str, n: int, groups: int):
    p = PRESETS[name]
    assert len(p.bands) == n and len(p.groups) == groups and sum(p.group_channels) == n
    assert all(b.wavelength_nm and b.gsd_m for b in p.bands)
    assert len(p.display_bands()) == 3


def test_modis_preset_is_satvision_order():
    names = PRESETS["modis_satvision"].band_names
    assert [int(n[1:]) for n in names] == [1, 2, 3, 26, 6, 20, 7, 27, 28, 29, 31, 32, 33, 34]


def test_user_preset_yaml(tmp_path: Path):
    f = tmp_path / "drone.yaml"
    f.write_text("name: drone\nbands:\n  - {name: red, wavelength_nm: 660, gsd_m: 0.05}\n"
                 "  - {name: nir, wavelength_nm: 840, gsd_m: 0.05}\ngroups: {red: [red], nir: [nir]}\n")
    p = load_preset_file(f)
    assert p.group_names == ["red", "nir"] and p.bands[1].wavelength_nm == 840
    assert get_preset(p.to_dict()) == p
    (tmp_path / "bad.yaml").write_text("bands: [red, red]\n")
    with pytest.raises(DataError, match=r"bad.yaml: expected a consistent preset, found .*distinct"):
        load_preset_file(tmp_path / "bad.yaml")
    (tmp_path / "broken.yaml").write_text("bands: [red\n")
    with pytest.raises(DataError, match=r"broken.yaml: expected valid YAML"):
        load_preset_file(tmp_path / "broken.yaml")
    with pytest.raises(DataError, match=r"expected a preset name .*found 'nope'"):
        get_preset("nope")


def test_band_count_not_matching_preset(sample_tif: Path):
    with pytest.raises(DataError, match=r"landsat_rgb.tif: expected 4 bands of preset 'naip'.*found 3 bands"):
        band_map(raster_info(sample_tif), PRESETS["naip"])


def test_band_subset_pads_missing_groups(sample_tif: Path):
    bmap = band_map(raster_info(sample_tif), PRESETS["naip"], bands=["red", "green", "blue"])
    assert bmap.group_pad == [False, True] and bmap.source == [1, 2, 3, None]
    with pytest.raises(DataError, match=r"expected 2 bands \(data.bands"):
        band_map(raster_info(sample_tif), PRESETS["naip"], bands=["red", "nir"])


def test_all_nodata_raster(tmp_path: Path, sample_tif: Path, make_tif):
    f = make_tif(tmp_path / "empty.tif", np.zeros((3, 40, 40), np.uint8), nodata=0)
    with pytest.raises(DataError, match=r"empty.tif: expected at least one valid pixel, found every pixel is nodata"):
        open_sources([f], RGB, None, 8)
    with pytest.raises(DataError, match=r"empty.tif: expected at least one valid pixel"):
        scan_raster(f)


def test_all_nodata_crop_of_real_hillshade(tmp_path: Path, shared_geo: Path, make_tif):
    with rasterio.open(shared_geo / "shade.tif") as src:  # this part of the hillshade is all nodata (255)
        arr, tr = src.read(window=Window(300, 300, 64, 64)), src.window_transform(Window(300, 300, 64, 64))
    f = make_tif(tmp_path / "shade_hole.tif", arr, crs="EPSG:3857", nodata=255, transform=tr)
    with pytest.raises(DataError, match=r"shade_hole.tif: expected at least one valid pixel"):
        open_sources([f], PRESETS["hillshade"], None, 8)


def test_inputs_in_different_crs(tmp_path: Path, sample_tif: Path, make_tif):
    arr = read_raster(sample_tif)["x"][:, :64, :64]
    f = make_tif(tmp_path / "other_crs.tif", np.nan_to_num(arr).astype(np.uint8), crs="EPSG:3857", nodata=0)
    with pytest.raises(DataError, match=r"other_crs.tif: expected the CRS of the other inputs \(EPSG:32618.*"
                                        r"found EPSG:3857"):
        open_sources([sample_tif, f], RGB, None, 8)


def test_corrupt_tiff(tmp_path: Path, sample_tif: Path):
    f = tmp_path / "cut.tif"
    f.write_bytes(sample_tif.read_bytes()[: 50_000])
    with pytest.raises(DataError, match=r"cut.tif: expected (a readable GeoTIFF|readable pixel data)"):
        scan_raster(f)
    g = tmp_path / "junk.tif"
    g.write_bytes(b"II*\x00" + b"\x07" * 64)
    with pytest.raises(DataError, match=r"junk.tif: expected a readable GeoTIFF"):
        raster_info(g)


def test_unsupported_dtype(tmp_path: Path, make_tif):
    f = make_tif(tmp_path / "complex.tif", np.ones((3, 16, 16), np.complex64))
    with pytest.raises(DataError, match=r"complex.tif: expected a supported data type .*found dtype complex64"):
        raster_info(f)


def test_chip_smaller_than_patch(tmp_path: Path, make_tif):
    folder = tmp_path / "chips" / "water"
    folder.mkdir(parents=True)
    f = make_tif(folder / "tiny.tif", np.full((3, 4, 6), 7, np.uint8))
    with pytest.raises(DataError, match=r"tiny.tif: expected a chip of at least the patch size 8x8 pixels, found 4x6"):
        ChipFolder([f], ["water"], RGB, 32, 8, None)
    with pytest.raises(DataError, match=r"tiny.tif: expected a raster of at least the patch size 8x8"):
        open_sources([f], RGB, None, 8)


@pytest.mark.parametrize("dtype", ["uint8", "int16", "uint16", "float32"])
def test_write_round_trip_and_cast(tmp_path: Path, dtype: str):
    rng = np.random.default_rng(0)
    vals = rng.uniform(1, 200, (2, 20, 30))
    valid = np.ones_like(vals, bool)
    valid[:, :3] = False
    nodata = 0 if dtype != "float32" else float("nan")
    arr = cast_to(vals, dtype, valid, nodata)
    tr = rasterio.transform.from_origin(10, 20, 2, 2)
    write_raster(tmp_path / "o.tif", arr, "EPSG:4326", tr, dtype, nodata)
    back = read_raster(tmp_path / "o.tif")
    assert back["info"].dtype == dtype and back["transform"] == tr and back["crs"].to_epsg() == 4326
    assert (back["valid"] == valid).all()
    np.testing.assert_allclose(back["x"][valid], np.rint(vals[valid]) if dtype != "float32" else vals[valid], rtol=1e-6)


def test_cast_keeps_measured_values_off_nodata():
    out = cast_to(np.array([[[0.2, -5.0, 300.0]]]), "uint8", np.ones((1, 1, 3), bool), 0)
    assert out.tolist() == [[[1, 1, 255]]]


def test_stats_and_chips(sample_tif: Path, tmp_path: Path):
    sources = open_sources([sample_tif], RGB, None, 8)
    stats = compute_stats(sources, RGB)
    raw = read_raster(sample_tif)
    all_ok = raw["valid"].all(0)  # a pixel counts when every band has data
    ref = [raw["x"][c][all_ok].astype(np.float64).mean() for c in range(3)]
    np.testing.assert_allclose(stats["mean"], ref, rtol=1e-4)
    (tmp_path / "s.json").write_text(__import__("json").dumps(stats))
    assert read_stats(tmp_path / "s.json", RGB)["std"] == stats["std"]
    with pytest.raises(DataError, match=r"s.json: expected statistics of bands \['red', 'green', 'blue', 'nir'\]"):
        read_stats(tmp_path / "s.json", PRESETS["naip"])
    ds = RasterChips(sources, 32, 32, stats, min_valid=0.5, jitter=False)
    assert 120 <= len(ds) < 144  # a 12 x 12 grid less the chips in the nodata border
    s = ds[0]
    assert s["x"].shape == (3, 32, 32) and s["valid"].shape == (3, 32, 32) and s["group_pad"].tolist() == [False]
    assert abs(float(s["x"][s["valid"]].mean())) < 3  # normalised
    assert (s["x"][~s["valid"]].isnan()).all()
    assert len(RasterChips(sources, 32, 32, stats, min_valid=0.99, jitter=False)) < 144


def test_cached_chips_equal_window_reads(sample_tif: Path, make_tif, tmp_path: Path):
    """The memory cache only changes where a chip is cut from: every chip (jittered, at the
    nodata border, past the edge of a raster smaller than a chip) equals its windowed read; a
    raster that does not fit what is left of the budget is read by windows."""
    import torch

    small = make_tif(tmp_path / "small.tif", np.random.default_rng(0).integers(1, 255, (3, 20, 24), dtype=np.uint8),
                     nodata=0)
    sources = open_sources([sample_tif, small], RGB, None, 8)
    stats = compute_stats(sources, RGB)
    plain = RasterChips(sources, 32, 32, stats, min_valid=0.3, jitter=True)
    cached = RasterChips(sources, 32, 32, stats, min_valid=0.3, jitter=True, cache_mb=64)
    assert len(plain) == len(cached) and plain.items[-1][0] == 1  # the small raster's one chip is in
    for k in range(len(plain)):
        torch.manual_seed(k)  # the jitter draw
        a = plain[k]
        torch.manual_seed(k)
        b = cached[k]
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, equal_nan=True)
    assert cached._scenes[0] is not None and cached._scenes[1] is not None
    one = 3 * 384 * 384 * 5 / 2**20  # the sample raster's decoded size in MiB: the small one no longer fits
    tight = RasterChips(sources, 32, 32, stats, min_valid=0.3, jitter=False, cache_mb=one)
    tight[0], tight[len(tight) - 1]
    assert tight._scenes[0] is not None and tight._scenes[1] is None
    with pytest.raises(ValueError, match="cache_mb must be >= 0"):
        RasterChips(sources, 32, 32, stats, cache_mb=-1)


def test_grid_windows_cover_the_raster():
    assert grid_windows(70, 64, 32, 32) == [(r, c) for r in (0, 32, 38) for c in (0, 32)]
    assert grid_windows(10, 10, 32, 16) == [(0, 0)]


def test_torchgeo_reader_matches_ours(sample_tif: Path):
    from rasterio.windows import from_bounds

    from geomae.data import to_model_input

    sources = open_sources([sample_tif], RGB, None, 8)
    tg = TorchgeoChips(sources, 32, None, length=4, sampler="grid")
    assert len(tg) >= 144  # 12 x 12 chips (torchgeo adds a row where the pixel size is not square)
    for k in (13, 77):
        q = tg.queries[k]
        with open_raster(sample_tif) as src:
            win = from_bounds(q[0].start, q[1].start, q[0].stop, q[1].stop, src.transform).round_offsets()
            ours = to_model_input(read_window(src, Window(win.col_off, win.row_off, 32, 32)), sources[0].bmap, None)
        theirs = tg[k]
        assert theirs["x"].shape == (3, 32, 32)
        np.testing.assert_array_equal(theirs["valid"].numpy(), ours["valid"].numpy())
        np.testing.assert_allclose(theirs["x"][theirs["valid"]].numpy(), ours["x"][ours["valid"]].numpy())
