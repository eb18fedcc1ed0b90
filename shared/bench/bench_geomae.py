"""geomae benchmark (issue: geomae quality and speed). Prints tables; writes JSON with --json.

1. Chip reading: chips/s from the Landsat scene (`shared/data/geo/RGB.byte.tif`, mosaicked 3 x 3
   into a 2373 x 2154 GeoTIFF so reads are not all cached) with our windowed rasterio reader and
   with torchgeo's RasterDataset + RandomGeoSampler as the peer, with 0 and 2 DataLoader workers.
2. Quality: pretrain geomae_mae_tiny on the CPU for --minutes on the scene's top part (rows < 480),
   then on 64-px chips of the held-out bottom part: PSNR of the masked pixels, ours against a
   non-learned baseline that fills each masked patch with the mean of its visible 4-neighbour
   patches (of the nearest visible ones when none is adjacent): `geomae.baselines.neighbour_fill`,
   the baseline `geomae reconstruct` reports too.
3. Linear/kNN probe on the 24 bundled scene chips (cloud / land / water by a spectral rule, see
   the package's sample/PROVENANCE.md), pretrained against the same model randomly initialised.
4. Training samples/s and peak RSS for the tiny and the ViT-B/16 config (a few steps each).

usage: python shared/bench/bench_geomae.py [--minutes 15] [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from benchlib import peak_rss_mb, time_limit
from torch.utils.data import DataLoader

from geomae.bands import get_preset
from geomae.baselines import neighbour_fill
from geomae.data import ChipFolder, RasterChips, TorchgeoChips, compute_stats, labels_for, open_sources, sample_dir
from geomae.tiles import psnr_db
from maecore.figures import reconstruct_batch
from maecore.models import create_model
from maecore.tasks import TrainConfig, run_pretrain
from maecore.tasks.data import collate_dict
from maecore.tasks.probe import compare_to_random

GEO = Path(__file__).resolve().parents[3] / "shared" / "data" / "geo"
if not GEO.is_dir():
    GEO = Path(__file__).resolve().parents[2] / "shared" / "data" / "geo"
RGB = get_preset("landsat7_rgb")


def write_part(src_path: Path, out: Path, rows: slice, tiles: int = 1) -> Path:
    with rasterio.open(src_path) as src:
        a = src.read()[:, rows]
        prof = {**src.profile, "height": a.shape[1] * tiles, "width": a.shape[2] * tiles, "tiled": True,
                "blockxsize": 256, "blockysize": 256, "compress": "deflate"}
        prof["transform"] = src.transform @ src.transform.translation(0, rows.start or 0)
        with rasterio.open(out, "w", **prof) as dst:
            dst.write(np.tile(a, (1, tiles, tiles)))
    return out


def read_throughput(path: Path, n: int, chip: int = 64) -> list[dict]:
    sources = open_sources([path], RGB, None, 8)
    rows = []
    for name, ds in (("geomae RasterChips (rasterio windows)", RasterChips(sources, chip, chip, None, 0.0)),
                     ("torchgeo RasterDataset + RandomGeoSampler",
                      TorchgeoChips(sources, chip, None, length=n, sampler="random"))):
        for workers in (0, 2):
            idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:n].tolist()
            loader = DataLoader(torch.utils.data.Subset(ds, idx), batch_size=16, num_workers=workers,
                                collate_fn=collate_dict)
            t0 = time.perf_counter()
            got = sum(len(b["x"]) for b in loader)
            rows.append({"reader": name, "workers": workers, "chips": got,
                         "chips_per_s": round(got / (time.perf_counter() - t0), 1)})
    return rows


def masked_psnr(model, ds, stats, n_seeds: int = 3) -> dict[str, float]:
    p = model.tokenizer.patch[0]
    std = torch.tensor(stats["std"])[None, :, None, None]
    batch = collate_dict([ds[i] for i in range(len(ds))])
    batch = {k: batch[k] for k in ("x", "valid", "group_pad")}
    se_ours, se_base, n = 0.0, 0.0, 0
    for seed in range(n_seeds):
        r = reconstruct_batch(model, batch, seed=seed)
        score = r["hidden"] & batch["valid"]
        base = neighbour_fill(batch["x"], r["hidden"], p)
        to_dn = lambda t: t * std  # noqa: E731  back to digital numbers (uint8 scale)
        se_ours += float(((to_dn(r["pred"]) - to_dn(batch["x"])) ** 2)[score].sum())
        se_base += float(((to_dn(base) - to_dn(batch["x"])) ** 2)[score & torch.isfinite(base)].sum())
        n += int(score.sum())
    return {"ours_db": round(psnr_db(se_ours / n, 255.0), 2),
            "neighbour_fill_db": round(psnr_db(se_base / n, 255.0), 2), "masked_values": n}


def train_speed(name: str, chip: int, steps: int, sources, stats, tmp: Path) -> dict:
    model = create_model(name, preset="landsat7_rgb")
    ds = RasterChips(sources, chip, chip // 2, stats, 0.5)
    cfg = TrainConfig(max_steps=steps, batch_size=8, progress=False, accelerator="cpu", ckpt_every=10**6,
                      warmup_steps=0)
    s = run_pretrain(model, ds, tmp / name, cfg, logger=False)
    return {"model": name, "chip": chip, "steps": steps, "samples_per_s": s["samples_per_s"],
            "peak_rss_mb": round(peak_rss_mb())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--quick", action="store_true", help="seconds, not minutes: a smoke run of every table")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    tmp = Path(tempfile.mkdtemp(prefix="bench_geomae_"))
    seconds = 20 if a.quick else a.minutes * 60
    results: dict = {}

    big = write_part(GEO / "RGB.byte.tif", tmp / "mosaic.tif", slice(0, 718), tiles=3)
    results["read"] = read_throughput(big, 64 if a.quick else 1024)

    train = write_part(GEO / "RGB.byte.tif", tmp / "train.tif", slice(0, 480))
    held = write_part(GEO / "RGB.byte.tif", tmp / "held.tif", slice(480, 718))
    sources = open_sources([train], RGB, None, 8)
    stats = compute_stats(sources, RGB)
    torch.manual_seed(0)
    model = create_model("geomae_mae_tiny")
    model.meta = {"preset": RGB.to_dict(), "stats": stats, "chip_size": 64}
    ds = RasterChips(sources, 64, 32, stats, 0.5)
    cfg = TrainConfig(max_steps=10**6, batch_size=16, lr=1e-3, warmup_steps=50, progress=False, accelerator="cpu",
                      ckpt_every=10**6)
    summary = run_pretrain(model, ds, tmp / "run", cfg, callbacks=[time_limit(seconds)], logger=False)
    held_ds = RasterChips(open_sources([held], RGB, None, 8), 64, 64, stats, 0.9, jitter=False)
    model.eval()
    results["pretrain"] = {k: summary[k] for k in ("steps", "wall_s", "samples_per_s", "final_loss")}
    results["masked_psnr_heldout"] = {**masked_psnr(model, held_ds, stats), "chips": len(held_ds)}

    files = sorted((sample_dir() / "chips").rglob("*.tif"))
    chips = ChipFolder(files, labels_for(files, None), RGB, 64, 8, stats)
    loader = DataLoader(chips, batch_size=8, collate_fn=collate_dict)
    y = [int(s["label"]) for s in chips]
    probe = compare_to_random(model, loader, y, probes=("linear", "knn"), seed=0)
    results["probe_scene_chips"] = probe

    results["train_speed"] = [train_speed("geomae_mae_tiny", 64, 5 if a.quick else 30, sources, stats, tmp)]
    results["train_speed"].append(train_speed("geomae_mae_vitb16", 224, 2 if a.quick else 5, sources, stats, tmp))

    print(json.dumps(results, indent=2, default=str))
    if a.json:
        a.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
