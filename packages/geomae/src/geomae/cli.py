"""``geomae``: the shared verbs for GeoTIFF rasters (any band count and dtype)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

import geomae
from geomae.bands import PRESETS, Preset, get_preset
from geomae.data import (
    ChipFolder,
    RasterChips,
    TorchgeoChips,
    band_map,
    compute_stats,
    expand,
    labels_for,
    open_sources,
    read_stats,
    sample_dir,
)
from geomae.figures import plot_chips
from geomae.io import cast_to, nodata_for, scan_raster, write_raster
from geomae.models import input_size, patch_size
from geomae.scenes import DATASETS, SceneDataset, expected_layout
from geomae.segment import evaluate_segmentation, predict_raster, segmentation_sets, update_summary
from geomae.tiles import embed_raster, reconstruct_raster
from maecore.archive import ShardDataset, write_shards
from maecore.atomic import atomic_path, atomic_write_text
from maecore.cli.app import build_cli
from maecore.cli.domain import Domain, LabelledData, Problem
from maecore.errors import ConfigError, DataError, MAEError
from maecore.figures import reconstruct_batch
from maecore.models import model_arguments
from maecore.models.pretrained import read_export_config
from maecore.tasks.data import collate_dict

SHARD_META = "geomae_shards.json"


def _write_chip_shards(cfg: dict[str, Any], preset: Preset, sources: list, stats: dict[str, Any], out: Path,
                       shard_size: int) -> dict[str, Any]:
    """Every grid chip (no jitter) as model input (normalised ``x``, ``valid``, ``group_pad``) in tar
    shards, with the preset, statistics and georeference that an export needs beside them."""
    from tqdm.auto import tqdm

    chip = check_chip_size(cfg)
    d = cfg["data"]
    chips = RasterChips(sources, chip, int(d["stride"]), stats, float(d["min_valid"]), jitter=False,
                        cache_mb=cache_mb(cfg))
    keys = ("x", "valid", "group_pad", "window")

    def samples():
        for k in tqdm(range(len(chips)), desc="chips -> shards", unit="chip", disable=len(chips) < 200):
            item = chips[k]
            yield {key: item[key].numpy() for key in keys}

    shards = write_shards(samples(), out, samples_per_shard=shard_size)
    src = sources[0].info
    meta = {"preset": preset.to_dict(), "stats": stats, "chip_size": chip, "bands_in_file": d.get("bands"),
            "crs": src.crs_string, "res": list(src.res), "dtype": src.dtype,
            "files": [s.info.path for s in sources]}
    atomic_write_text(out / SHARD_META, json.dumps(meta, indent=2))
    return {"shards": str(out), "n_shards": len(shards), "chips": len(chips), "use": f"--data {out}"}


def _shard_dataset(folder: Path, chip: int) -> ShardDataset:
    """Chips written by ``geomae prepare --shards``; their chip size must be the run's."""
    meta = json.loads((folder / SHARD_META).read_text())
    if int(meta["chip_size"]) != chip:
        raise DataError(folder / SHARD_META, f"chips of data.chip_size={chip} px",
                        f"chips of {meta['chip_size']} px (prepare again, or --set data.chip_size={meta['chip_size']})")
    ds = ShardDataset(folder, transform=lambda s: {k: torch.from_numpy(v) for k, v in s.items()})
    ds.meta = {k: v for k, v in meta.items() if k != "files"}  # type: ignore[attr-defined]
    ds.preset, ds.stats = get_preset(meta["preset"]), meta["stats"]  # type: ignore[attr-defined]
    return ds


def resolve_preset(cfg: dict[str, Any]) -> Preset:
    """The run's preset; a YAML path in ``model.preset`` is replaced by its contents, so the
    exported model carries the preset itself."""
    section = cfg["model"]
    value = section.get("preset", model_arguments(section["name"]).get("preset"))
    preset = get_preset(value)
    if value is not None and not isinstance(value, dict) and value not in PRESETS:
        section["preset"] = preset.to_dict()
    return preset


def model_geometry(cfg: dict[str, Any]) -> tuple[int, int | None]:
    """``(patch, fixed input side or None)`` of the configured model."""
    args = {**model_arguments(cfg["model"]["name"]), **cfg["model"]}
    return int(args.get("patch_size") or 16), (int(args["img_size"]) if args.get("img_size") else None)


def check_chip_size(cfg: dict[str, Any]) -> int:
    chip = int(cfg["data"]["chip_size"])
    patch, fixed = model_geometry(cfg)
    if chip < patch or chip % patch:
        raise ConfigError(f"data.chip_size must be a positive multiple of the patch size {patch}, got {chip}")
    if fixed is not None and chip != fixed:
        raise ConfigError(f"data.chip_size must equal model.img_size ({fixed}) for {cfg['model']['name']}, got {chip}")
    return chip


def cache_mb(cfg: dict[str, Any]) -> float:
    """``data.cache_mb``, checked: a number of MiB >= 0."""
    value = cfg["data"]["cache_mb"]
    try:
        mb = float(value)
    except (TypeError, ValueError):
        mb = -1.0
    if not mb >= 0:  # also NaN
        raise ConfigError(f"data.cache_mb must be a number of MiB >= 0 (0 = window reads only), got {value!r}")
    return mb


def _meta_of(model: nn.Module) -> tuple[Preset, dict[str, Any] | None, int, list[str] | None]:
    meta = getattr(model, "meta", {}) or {}
    preset = get_preset(meta.get("preset") or model.model_kwargs.get("preset") or "landsat7_rgb")
    tile = input_size(model) or int(meta.get("chip_size", 64))
    return preset, meta.get("stats"), tile, meta.get("bands_in_file")


class GeoDomain(Domain):
    pending: dict[str, Any] | None = None  # a segmentation finetune's validation set, for the IoU report
    name = "geomae"
    package = "geomae"
    description = "MAE (FireRisk) and SimMIM (SatVision-TOA) on GeoTIFF rasters of any band count; CPU-first."

    def add_arguments(self, verb: str, parser: argparse.ArgumentParser) -> None:
        if verb in ("pretrain", "finetune", "probe", "check", "prepare"):
            parser.add_argument("--preset", default=None,
                                help=f"band preset ({', '.join(PRESETS)}) or a preset YAML file")
        if verb == "prepare":
            parser.add_argument("--stats", action="store_true", help="per-band mean/std -> OUT/stats.json")
            parser.add_argument("--shards", action="store_true",
                                help="grid chips as model input -> OUT/shards (tar shards; pretrain --data OUT/shards)")
            parser.add_argument("--shard-size", type=int, default=1000, help="chips per shard")
        if verb in ("embed", "reconstruct"):
            parser.add_argument("--input", required=True, help="GeoTIFF (embed: also a chip folder)")
            parser.add_argument("--out", type=Path, required=True, help="output GeoTIFF (embed of chips: .npz)")
        if verb == "reconstruct":
            parser.add_argument("--plot", type=Path, default=None, help="also write a PNG composite figure")
            parser.add_argument("--seed", type=int, default=0, help="seed of the random masks")
            parser.add_argument("--overlap", type=int, default=None, help="tile overlap in pixels (default tile/4)")
            parser.add_argument("--full-prediction", action="store_true",
                                help="write the prediction everywhere (default: only masked patches predicted)")
            parser.add_argument("--false-colour", action="store_true", help="NIR-red-green figure when possible")
        if verb in ("finetune", "probe"):
            parser.add_argument("--labels", default=None,
                                help="CSV file,label (default: parent folder names); finetune: label raster(s) "
                                     "(a .tif, folder or glob) for segmentation")
        if verb == "finetune":
            parser.add_argument("--predict", type=Path, default=None,
                                help="segmentation: also write the class map of the (first) image raster (GeoTIFF)")

    def resolve_args(self, verb: str, args: argparse.Namespace) -> None:
        if getattr(args, "preset", None):
            args.set = [*args.set, f"model.preset={args.preset}"]
        if getattr(args, "labels", None):
            args.set = [*args.set, f"data.labels={args.labels}"]
        if verb == "finetune" and args.out is None:  # the core's default, fixed now so the IoU report finds it
            args.out = Path("runs") / f"{self.name}-finetune-{time.strftime('%Y%m%d-%H%M%S')}"

    # ------------------------------------------------------------------ data
    def _sources(self, cfg: dict[str, Any], data: str | None, skip_bad: bool = False) -> tuple[Preset, list]:
        preset = resolve_preset(cfg)
        patch, _ = model_geometry(cfg)
        return preset, open_sources(expand(data), preset, cfg["data"].get("bands"), patch, skip_bad)

    def pretrain_dataset(self, cfg: dict[str, Any], data: str | None, skip_bad: bool) -> Dataset:
        chip = check_chip_size(cfg)
        if data and (Path(data) / SHARD_META).is_file():
            return _shard_dataset(Path(data), chip)
        preset, sources = self._sources(cfg, data, skip_bad)
        d = cfg["data"]
        stats = read_stats(d["stats"], preset) if d.get("stats") else compute_stats(sources, preset)
        if d.get("reader", "rasterio") == "torchgeo":
            ds: Dataset = TorchgeoChips(sources, chip, stats, int(d["length"]), "random", int(cfg["train"]["seed"]))
        elif d.get("reader", "rasterio") == "rasterio":
            ds = RasterChips(sources, chip, int(d["stride"]), stats, float(d["min_valid"]), jitter=True,
                             cache_mb=cache_mb(cfg))
        else:
            raise ConfigError(f"data.reader must be 'rasterio' or 'torchgeo', got {d['reader']!r}")
        ds.preset, ds.stats = preset, stats  # type: ignore[attr-defined]
        return ds

    def model_meta(self, cfg: dict[str, Any], dataset: Dataset) -> dict[str, Any]:
        if isinstance(dataset, ShardDataset):
            return dict(dataset.meta)  # type: ignore[attr-defined]
        src = dataset.sources[0].info  # type: ignore[attr-defined]
        return {"preset": dataset.preset.to_dict(), "stats": dataset.stats,  # type: ignore[attr-defined]
                "chip_size": int(cfg["data"]["chip_size"]), "bands_in_file": cfg["data"].get("bands"),
                "crs": src.crs_string, "res": list(src.res), "dtype": src.dtype}

    def labelled_data(self, cfg: dict[str, Any], args: argparse.Namespace) -> LabelledData:
        exported = read_export_config(args.model)
        meta = exported.get("meta", {})
        preset = get_preset(meta.get("preset") or resolve_preset(cfg))
        patch, fixed = model_geometry({"model": {**exported["kwargs"], "name": exported["model"]}})
        chip = fixed or int(meta.get("chip_size", cfg["data"]["chip_size"]))
        d = cfg["data"]
        dataset = d.get("dataset") or "chips"
        if dataset != "chips":
            return self._scene_data(cfg, args, dataset, preset, chip, meta.get("stats"))
        labels = d.get("labels")
        task = d.get("task") or ("segmentation" if labels and not str(labels).lower().endswith(".csv")
                                 else "classification")
        if task == "segmentation":
            return self._segmentation_data(cfg, args, preset, patch, chip, meta.get("stats"))
        if task != "classification":
            raise ConfigError(f"data.task must be classification or segmentation, got {task!r}")
        files = expand(args.data if args.data else sample_dir() / "chips")
        names = labels_for(files, cfg["data"].get("labels"))
        ds = ChipFolder(files, names, preset, chip, patch, meta.get("stats"), cfg["data"].get("bands"))
        classes = ds.class_names or []
        if args.verb == "probe" or len(ds) < 8:
            return LabelledData(ds, ds if args.verb != "probe" else None, "classification", len(classes), classes)
        val = [i for i in range(len(ds)) if i % 4 == 3]  # every 4th chip of each class folder held out
        train = [i for i in range(len(ds)) if i % 4 != 3]
        return LabelledData(Subset(ds, train), Subset(ds, val), "classification", len(classes), classes)

    def _scene_data(self, cfg: dict[str, Any], args: argparse.Namespace, dataset: str, preset: Preset, chip: int,
                    stats: dict[str, Any] | None) -> LabelledData:
        """torchgeo FireRisk / EuroSAT from ``--data ROOT`` (train split; finetune validates on val)."""
        if dataset not in DATASETS:
            raise ConfigError(f"data.dataset must be chips, {' or '.join(DATASETS)}; got {dataset!r}")
        if not args.data:
            raise DataError(None, f"--data ROOT of the local {dataset} dataset ({expected_layout(dataset)})",
                            "no --data")
        bands = cfg["data"].get("bands")
        train = SceneDataset(dataset, args.data, "train", preset, chip, stats, bands)
        val = None if args.verb == "probe" else SceneDataset(dataset, args.data, "val", preset, chip, stats, bands)
        return LabelledData(train, val, "classification", len(train.class_names), train.class_names)

    def _segmentation_data(self, cfg: dict[str, Any], args: argparse.Namespace, preset: Preset, patch: int,
                           chip: int, stats: dict[str, Any] | None) -> LabelledData:
        """Image rasters (``--data``, default the bundled crop) + label rasters (``--labels``)."""
        d = cfg["data"]
        if args.verb == "probe":
            raise ConfigError("geomae probe takes scene labels (chip folders, FireRisk, EuroSAT), not label rasters")
        if not d.get("labels"):
            raise DataError(None, "--labels LABELS.tif (label rasters aligned with the --data images)", "no --labels")
        images = expand(args.data)
        sources = open_sources(images, preset, d.get("bands"), patch)
        ignore = int(cfg.get("finetune", {}).get("ignore_index", -100))
        nodata = d.get("label_nodata")
        train, val, names, pairs = segmentation_sets(
            images, expand(d["labels"]), sources, chip, int(d["stride"]), stats, ignore, float(d["min_valid"]),
            float(d.get("val_fraction", 0.25)), d.get("class_names"), None if nodata is None else int(nodata))
        self.pending = {"run_dir": Path(args.out), "val": val, "class_names": names, "ignore": ignore,
                        "predict": getattr(args, "predict", None), "source": pairs[0], "stats": stats, "chip": chip}
        return LabelledData(train, val, "segmentation", len(names), names)

    def finish_segmentation(self) -> dict[str, Any] | None:
        """After ``finetune`` of a segmentation task: per-class IoU of the export on the validation
        chips (and the ``--predict`` class map) merged into ``RUN/summary.json``."""
        from maecore.tasks.finetune import load_finetuned

        p, self.pending = self.pending, None
        if p is None:
            return None
        model = load_finetuned(p["run_dir"] / "export")
        report: dict[str, Any] = {"iou": {}, "miou": None, "confusion": None, "pixels": {}}
        if p["val"] is not None:
            report = evaluate_segmentation(model, p["val"], p["class_names"], p["ignore"])
        if p["predict"] is not None:
            report.update(predict_raster(model, p["source"], p["stats"], p["chip"], p["predict"]))
        update_summary(p["run_dir"], report)
        return report

    # ------------------------------------------------------------------ outputs
    def figure(self, model: nn.Module, dataset: Dataset, path: Path) -> Path | None:
        n = min(4, len(dataset))  # type: ignore[arg-type]
        picks = np.linspace(0, len(dataset) - 1, n).round().astype(int)  # type: ignore[arg-type]
        batch = collate_dict([dataset[int(i)] for i in picks])
        batch = {k: v for k, v in batch.items() if k in ("x", "valid", "group_pad")}
        return plot_chips(reconstruct_batch(model, batch), dataset.preset, path, title="pretraining chips")  # type: ignore[attr-defined]

    def reconstruct(self, model: nn.Module, args: argparse.Namespace) -> dict[str, Any]:
        preset, stats, tile, bands = _meta_of(model)
        overlap = tile // 4 if args.overlap is None else int(args.overlap)
        if not 0 <= overlap < tile:
            raise ConfigError(f"--overlap must be in [0, {tile}) for {tile}-pixel tiles, got {overlap}")
        res = reconstruct_raster(model, args.input, lambda info: band_map(info, preset, bands), stats, tile,
                                 overlap, args.seed, args.full_prediction)
        info = res["info"]
        nodata = nodata_for(info.dtype, info.nodata)
        out = cast_to(res["values"], info.dtype, res["valid"], nodata)
        write_raster(args.out, out, info.crs, info.transform, info.dtype, nodata, list(info.descriptions)
                     if all(info.descriptions) else None)
        summary = {"out": str(args.out), "shape": list(out.shape), "dtype": info.dtype, "crs": info.crs_string,
                   "tiles": len(res["tiles"]), "tile": tile, "overlap": overlap,
                   "hidden_fraction": round(res["hidden_fraction"], 4), "masked_mse": res["masked_mse"],
                   "masked_psnr_db": round(res["masked_psnr"], 2),
                   # the non-learned neighbour_fill baseline, scored on the same hidden valid pixels
                   "baseline": "neighbour_fill", "baseline_masked_mse": res["baseline_masked_mse"],
                   "baseline_masked_psnr_db": round(res["baseline_masked_psnr"], 2)}
        if args.plot:
            best = sorted(res["tiles"], key=lambda t: -float(t.result["hidden"].float().mean() *
                                                              torch.isfinite(t.result["input"]).float().mean()))
            picked = best[:4]
            batch = {k: torch.cat([t.result[k] for t in picked]) for k in ("input", "masked", "recon")}
            summary["plot"] = str(plot_chips(batch, preset, args.plot, args.false_colour,
                                             title=Path(args.input).name))
        return summary

    @torch.no_grad()
    def embed(self, model: nn.Module, args: argparse.Namespace) -> dict[str, Any]:
        preset, stats, tile, bands = _meta_of(model)
        src = Path(args.input)
        if src.is_dir() or Path(args.out).suffix == ".npz":
            files = expand(src)
            ds = ChipFolder(files, None, preset, tile, patch_size(model), stats, bands)
            from maecore.tasks.probe import extract_embeddings  # with scikit-learn: not at start-up

            # the core's loop: the model's device, eval mode, bf16 on CUDA (a hand loop here left batches on the CPU)
            emb, _ = extract_embeddings(model, DataLoader(ds, batch_size=16, collate_fn=collate_dict))
            with atomic_path(args.out) as tmp:
                np.savez_compressed(tmp, embeddings=emb, files=np.array([str(f) for f in files]))
            return {"out": str(args.out), "embeddings": list(emb.shape)}
        res = embed_raster(model, src, lambda info: band_map(info, preset, bands), stats, tile)
        emb = res["emb"]
        write_raster(args.out, emb, res["crs"], res["transform"], "float32", float("nan"),
                     [f"emb_{i:03d}" for i in range(emb.shape[0])])
        return {"out": str(args.out), "shape": list(emb.shape), "patch": res["patch"],
                "transform": list(res["transform"])[:6], "crs": res["info"].crs_string,
                "nodata_pixels": int(np.isnan(emb[0]).sum())}

    def prepare(self, cfg: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
        if not (args.stats or args.shards):
            raise ConfigError("geomae prepare: pass --stats (per-band statistics) and/or --shards (chip shards)")
        preset, sources = self._sources(cfg, args.data)
        d = cfg["data"]
        stats = read_stats(d["stats"], preset) if d.get("stats") else compute_stats(sources, preset)
        out_dir = Path(args.out) if args.out else Path("runs") / "geomae-prepare"
        result: dict[str, Any] = {}
        if args.stats:
            out = out_dir / "stats.json"
            atomic_write_text(out, json.dumps({**stats, "preset": preset.name,
                                               "files": [s.info.path for s in sources]}, indent=2))
            result.update({"stats": str(out), "bands": stats["bands"], "mean": stats["mean"], "std": stats["std"],
                           "use": f"--set data.stats={out}"})
        if args.shards:
            result.update(_write_chip_shards(cfg, preset, sources, stats, out_dir / "shards", args.shard_size))
        return result

    def check(self, paths: list[str], cfg: dict[str, Any]) -> tuple[int, list[Problem]]:
        files = expand(paths[0] if paths else None)
        preset = resolve_preset(cfg)
        patch, _ = model_geometry(cfg)
        problems, first = [], None
        for f in files:
            try:
                info = scan_raster(f)
                if min(info.width, info.height) < patch:
                    raise DataError(f, f"a raster of at least the patch size {patch}x{patch} pixels",
                                    f"{info.height}x{info.width}")
                band_map(info, preset, cfg["data"].get("bands"))
                if first is None:
                    first = info
                elif info.crs != first.crs:
                    raise DataError(f, f"the CRS of the other inputs ({first.crs_string})", info.crs_string)
            except DataError as err:
                problems.append(Problem(str(f), f"expected {err.expected}, found {err.found}"))
        return len(files), problems

    def info(self) -> dict[str, Any]:
        import rasterio
        import torchgeo

        return {"geomae": geomae.__version__, "rasterio": f"{rasterio.__version__} (GDAL {rasterio.__gdal_version__})",
                "torchgeo": torchgeo.__version__,
                "presets": [f"{p.name} ({len(p.bands)} bands: {', '.join(p.group_names)})" for p in PRESETS.values()],
                "bundled_sample": str(sample_dir())}


DOMAIN = GeoDomain()
_core_main = build_cli(DOMAIN)


def main(argv: list[str] | None = None) -> int:
    """The shared CLI; after a segmentation ``finetune`` it adds per-class IoU (and ``--predict``)."""
    DOMAIN.pending = None
    rc = _core_main(argv)
    if rc != 0 or DOMAIN.pending is None:
        DOMAIN.pending = None
        return rc
    try:
        report = DOMAIN.finish_segmentation()
    except (MAEError, ValueError) as err:
        print(f"geomae finetune: error: {err}", file=sys.stderr)
        return 2
    if report:
        width = max([len(k) for k in report["iou"]] + [5])
        rows = [f"  {k:<{width}}  IoU {'n/a' if v is None else f'{v:.4f}'}  ({report['pixels'].get(k, 0)} px)"
                for k, v in report["iou"].items()]
        miou = report["miou"]
        print("validation per-class IoU:\n" + "\n".join(rows)
              + (f"\n  mIoU {miou:.4f}" if isinstance(miou, float) else "")
              + (f"\nclass map: {report['predict']}" if "predict" in report else ""))
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
