"""End to end on CPU: pretrain, resume, export, reconstruct, embed, finetune, probe, prepare, check, info."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geomae.cli import cache_mb, main
from geomae.data import sample_dir
from maecore.errors import ConfigError


def test_pretrain_run_folder(run: Path):
    for rel in ("config.yaml", "metrics.csv", "checkpoints/last.ckpt", "export/model.safetensors",
                "export/config.json", "figures/reconstruction.png", "summary.json"):
        assert (run / rel).is_file(), rel
    meta = json.loads((run / "export" / "config.json").read_text())["meta"]
    assert meta["preset"]["name"] == "landsat7_rgb" and meta["chip_size"] == 32 and meta["crs"] == "EPSG:32618"
    assert len(meta["stats"]["mean"]) == 3 and all(s > 1 for s in meta["stats"]["std"])
    assert json.loads((run / "summary.json").read_text())["final_loss"] > 0
    assert (run / "figures" / "reconstruction.png").stat().st_size > 10_000


def test_reconstruct_writes_geotiff_like_the_input(run: Path, tmp_path: Path):
    src = sample_dir() / "landsat_rgb.tif"
    out, png = tmp_path / "rec.tif", tmp_path / "rec.png"
    assert main(["reconstruct", "--model", str(run / "export"), "--input", str(src), "--out", str(out),
                 "--plot", str(png)]) == 0
    with rasterio.open(src) as a, rasterio.open(out) as b:
        assert (b.crs, b.transform, b.shape, b.count, b.dtypes, b.nodata) == (a.crs, a.transform, a.shape, a.count,
                                                                              a.dtypes, a.nodata)
        x, y = a.read(), b.read()
    nod = x == 0  # per-band nodata, as GDAL masks it
    assert (y[nod] == 0).all()  # nodata stays nodata
    assert (y[~nod] > 0).all()  # measured pixels never read back as holes
    assert np.abs(y.astype(int) - x.astype(int))[~nod].mean() < 120  # finite, in range
    assert png.stat().st_size > 10_000


def test_full_prediction_blends_seams(run: Path, tmp_path: Path):
    src = sample_dir() / "landsat_rgb.tif"
    out = tmp_path / "pred.tif"
    assert main(["reconstruct", "--model", str(run / "export"), "--input", str(src), "--out", str(out),
                 "--full-prediction", "--overlap", "16"]) == 0
    with rasterio.open(out) as b:
        y = b.read().astype(float)
    # a tile edge (every 16 px with stride 16) is not a visible jump: neighbours across it differ
    # no more than neighbours inside tiles
    d = np.abs(np.diff(y[:, 100:300, 100:300], axis=2)).mean((0, 1))
    assert d[15::16].mean() < 2 * d.mean()


def test_embed_raster_is_georeferenced(run: Path, tmp_path: Path):
    src = sample_dir() / "landsat_rgb.tif"
    out = tmp_path / "emb.tif"
    assert main(["embed", "--model", str(run / "export"), "--input", str(src), "--out", str(out)]) == 0
    with rasterio.open(src) as a, rasterio.open(out) as b:
        assert b.crs == a.crs and b.shape == (384 // 8, 384 // 8) and b.count == 64
        assert b.transform.a == pytest.approx(a.transform.a * 8) and b.transform.e == pytest.approx(a.transform.e * 8)
        assert (b.transform.c, b.transform.f) == (a.transform.c, a.transform.f)
        e = b.read()
        nod = (a.read() == 0).any(0).reshape(48, 8, 48, 8).any((1, 3))  # a patch with any nodata: padding
    assert np.isnan(e[:, nod]).all() and np.isfinite(e[:, ~nod]).all()
    assert np.nanstd(e, axis=(1, 2)).mean() > 1e-3


def test_embed_chip_folder_npz(run: Path, tmp_path: Path):
    out = tmp_path / "chips.npz"
    assert main(["embed", "--model", str(run / "export"), "--input", str(sample_dir() / "chips"),
                 "--out", str(out)]) == 0
    with np.load(out) as z:
        assert z["embeddings"].shape == (24, 64) and len(z["files"]) == 24


def test_finetune_and_probe_scene_classes(run: Path, tmp_path: Path):
    ft = tmp_path / "ft"
    assert main(["finetune", "--model", str(run / "export"), "--config", "tiny", "--out", str(ft),
                 "--max-steps", "4"]) == 0
    summary = json.loads((ft / "summary.json").read_text())
    assert 0.0 <= summary["val/acc"] <= 1.0
    assert json.loads((ft / "export" / "head.json").read_text())["class_names"] == ["cloud", "land", "water"]
    assert main(["probe", "--model", str(run / "export"), "--config", "tiny", "--out", str(tmp_path / "p")]) == 0
    res = json.loads((tmp_path / "p" / "probe.json").read_text())
    assert res["pretrained"]["linear"]["n"] == 24 and set(res) == {"pretrained", "random_init"}


def test_labels_csv(run: Path, tmp_path: Path):
    chips = sorted((sample_dir() / "chips").rglob("*.tif"))
    csv = tmp_path / "labels.csv"
    csv.write_text("file,label\n" + "".join(f"{c},{'bright' if 'cloud' in str(c) else 'dark'}\n" for c in chips))
    assert main(["probe", "--model", str(run / "export"), "--config", "tiny", "--labels", str(csv),
                 "--out", str(tmp_path / "p")]) == 0
    csv.write_text("file,label\n" + f"{chips[0]},x\n")
    assert main(["probe", "--model", str(run / "export"), "--config", "tiny", "--labels", str(csv),
                 "--out", str(tmp_path / "p")]) == 2


def test_prepare_stats_then_pretrain_and_resume(tmp_path: Path):
    prep = tmp_path / "prep"
    assert main(["prepare", "--stats", "--out", str(prep)]) == 0
    stats = json.loads((prep / "stats.json").read_text())
    assert stats["bands"] == ["red", "green", "blue"] and len(stats["std"]) == 3
    out = tmp_path / "run"
    args = ["pretrain", "--config", "tiny", "--out", str(out), "--set", f"data.stats={prep / 'stats.json'}"]
    assert main([*args, "--max-steps", "2"]) == 0
    meta = json.loads((out / "export" / "config.json").read_text())["meta"]
    assert meta["stats"]["mean"] == stats["mean"]
    assert main([*args, "--max-steps", "4", "--resume", "auto"]) == 0
    assert json.loads((out / "summary.json").read_text())["steps"] == 4


def test_prepare_shards_then_pretrain_from_them(tmp_path: Path, capsys):
    prep = tmp_path / "prep"
    assert main(["prepare", "--config", "tiny", "--shards", "--shard-size", "32", "--out", str(prep)]) == 0
    shards = prep / "shards"
    index = json.loads((shards / "shards.json").read_text())
    assert len(index["shards"]) >= 2 and all(c <= 32 for c in index["counts"])
    from maecore.archive import ShardDataset

    chip = ShardDataset(shards)[0]
    assert chip["x"].shape == (3, 32, 32) and chip["valid"].shape == (3, 32, 32)
    out = tmp_path / "run"
    assert main(["pretrain", "--config", "tiny", "--data", str(shards), "--out", str(out), "--max-steps", "3"]) == 0
    meta = json.loads((out / "export" / "config.json").read_text())["meta"]
    assert meta["chip_size"] == 32 and meta["preset"]["name"] and meta["crs"]
    rec = tmp_path / "rec.tif"
    src = sample_dir() / "landsat_rgb.tif"
    assert main(["reconstruct", "--model", str(out / "export"), "--input", str(src), "--out", str(rec)]) == 0
    with rasterio.open(src) as a, rasterio.open(rec) as b:
        assert (a.crs, a.transform, a.shape, a.count, a.dtypes) == (b.crs, b.transform, b.shape, b.count, b.dtypes)
    capsys.readouterr()
    assert main(["pretrain", "--data", str(shards), "--out", str(tmp_path / "run64"), "--max-steps", "1"]) != 0
    assert "geomae_shards.json: expected chips of data.chip_size=64 px, found chips of 32 px" in capsys.readouterr().err
    assert main(["prepare", "--out", str(prep)]) != 0
    assert "pass --stats" in capsys.readouterr().err


def test_simmim_and_torchgeo_reader(tmp_path: Path):
    out = tmp_path / "sim"
    assert main(["pretrain", "--config", "simmim_tiny", "--out", str(out), "--max-steps", "3",
                 "--set", "data.reader=torchgeo", "--set", "data.length=16", "--set", "train.batch_size=4",
                 "--set", "train.progress=false"]) == 0
    assert json.loads((out / "export" / "config.json").read_text())["model"] == "geomae_simmim_tiny"
    rec = tmp_path / "shade_rec.tif"
    assert main(["reconstruct", "--model", str(out / "export"), "--input", str(sample_dir() / "landsat_rgb.tif"),
                 "--out", str(rec), "--overlap", "0"]) == 0
    with rasterio.open(rec) as r:
        assert r.shape == (384, 384) and r.count == 3


def test_chip_size_must_fit_the_model(tmp_path: Path, capsys):
    assert main(["pretrain", "--config", "simmim_tiny", "--set", "data.chip_size=64", "--out", str(tmp_path)]) == 2
    assert "data.chip_size must equal model.img_size (32)" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["-1", "abc", "nan"])
def test_cache_budget_must_be_a_size(value: str):
    with pytest.raises(ConfigError, match=r"data.cache_mb must be a number of MiB >= 0 \(0 = window reads only\)"):
        cache_mb({"data": {"cache_mb": value}})
    assert cache_mb({"data": {"cache_mb": "0"}}) == 0.0


def test_hillshade_preset_and_band_mismatch(tmp_path: Path, capsys):
    shade = str(sample_dir() / "shade.tif")
    assert main(["pretrain", "--config", "tiny", "--data", shade, "--out", str(tmp_path / "a")]) == 2
    assert "shade.tif: expected 3 bands of preset 'landsat7_rgb'" in capsys.readouterr().err
    assert main(["pretrain", "--config", "tiny", "--data", shade, "--preset", "hillshade", "--max-steps", "2",
                 "--set", "data.min_valid=0.2", "--out", str(tmp_path / "b")]) == 0


def test_check_reports_every_bad_file(tmp_path: Path, make_tif, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = (sample_dir() / "landsat_rgb.tif").read_bytes()
    (folder / "good.tif").write_bytes(good)
    (folder / "cut.tif").write_bytes(good[:40_000])
    make_tif(folder / "empty.tif", np.zeros((3, 32, 32), np.uint8), nodata=0)
    make_tif(folder / "fourband.tif", np.ones((4, 32, 32), np.uint8))
    make_tif(folder / "mercator.tif", np.ones((3, 32, 32), np.uint8), crs="EPSG:3857")
    make_tif(folder / "complex.tif", np.ones((3, 32, 32), np.complex64))
    make_tif(folder / "small.tif", np.ones((3, 4, 4), np.uint8))
    assert main(["check", "--data", str(folder), "--config", "tiny"]) == 1
    out = capsys.readouterr().out
    assert "cut.tif: expected readable pixel data" in out or "cut.tif: expected a readable GeoTIFF" in out
    assert "empty.tif: expected at least one valid pixel, found every pixel is nodata" in out
    assert "fourband.tif: expected 3 bands of preset 'landsat7_rgb'" in out
    assert "mercator.tif: expected the CRS of the other inputs (EPSG:32618), found EPSG:3857" in out
    assert "complex.tif: expected a supported data type" in out
    assert "small.tif: expected a raster of at least the patch size 8x8 pixels, found 4x4" in out
    assert "checked 7 item(s): 1 good, 6 bad" in out


def test_pretrain_refuses_a_bad_file_unless_told_to_skip_it(tmp_path: Path, make_tif, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = (sample_dir() / "landsat_rgb.tif").read_bytes()
    (folder / "good.tif").write_bytes(good)
    (folder / "cut.tif").write_bytes(good[:3000])
    args = ["pretrain", "--config", "tiny", "--data", str(folder), "--max-steps", "2"]
    assert main([*args, "--out", str(tmp_path / "refused")]) != 0
    assert "cut.tif: expected readable pixel data" in capsys.readouterr().err
    assert not (tmp_path / "refused" / "export").exists()
    assert main([*args, "--out", str(tmp_path / "skipped"), "--skip-bad"]) == 0
    assert "skipped " in capsys.readouterr().out
    assert (tmp_path / "skipped" / "export" / "model.safetensors").is_file()


def test_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "geomae_simmim_satvision" in out and "modis_satvision (14 bands" in out and "GDAL" in out
