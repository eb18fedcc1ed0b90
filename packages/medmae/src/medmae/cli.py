"""``medmae``: the suite's verbs on BraTS-style folders of NIfTI files (or a CSV manifest).

``medmae pretrain [--data DIR_OR_CSV]`` (no ``--data``: the bundled real case), ``finetune``,
``probe``, ``embed``, ``reconstruct --have t1,t2,flair --want t1ce``, ``prepare``, ``check``,
``info``. Each verb is a thin wrapper over :mod:`medmae.tasks` and the core's engine.

MONAI (through :mod:`medmae.data` and :mod:`medmae.tasks`) loads inside the verbs that read
images, so ``--help`` and ``info`` take about 2 s instead of 7-8.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from maecore.atomic import atomic_write_text
from maecore.cli.app import build_cli, config_overrides, run_dir_of
from maecore.cli.domain import Domain, LabelledData, Problem
from maecore.errors import ConfigError, DataError
from maecore.figures import reconstruct_batch
from maecore.models.pretrained import read_export_config
from maecore.tasks.data import collate_dict
from medmae import sample_case, sample_dir
from medmae.dataconfig import DataConfig
from medmae.figures import plot_three_planes, rows_from_batch
from medmae.modalities import known_names
from medmae.models import SIZES


def _model_patch(cfg: dict[str, Any]) -> list[int]:
    m = cfg.get("model", {})
    patch = m.get("patch_size")
    if patch is None:
        size = str(m.get("name", "")).removeprefix("medmae_")
        patch = SIZES.get(size, {}).get("patch_size", 16)
    return [int(patch)] * 3 if isinstance(patch, int) else [int(p) for p in patch]


def data_config(cfg: dict[str, Any], check_patch: bool = True) -> DataConfig:
    """The ``data`` section, with ``model.modalities`` filled from it (or checked against it)."""
    dc = DataConfig.from_cfg(cfg)
    model = cfg.setdefault("model", {})
    if model.get("modalities") is None:
        model["modalities"] = list(dc.modalities)
    elif [str(m).lower() for m in model["modalities"]] != dc.modalities:
        raise ConfigError(f"model.modalities {model['modalities']} differ from data.modalities {dc.modalities}; "
                          "set one of them (model.modalities: null follows data.modalities)")
    patch = _model_patch(cfg)
    if check_patch and any(r % p for r, p in zip(dc.roi_size, patch)):
        raise ConfigError(f"data.roi_size {dc.roi_size} must be a multiple of the model's patch size {patch}")
    return dc


class MedDomain(Domain):
    name = "medmae"
    package = "medmae"
    description = ("Multimodal brain-MRI masked autoencoders (after BM-MAE): BraTS-style NIfTI folders or CSV "
                   "manifests, any subset of t1/t1ce/t2/flair, missing-modality synthesis as NIfTI.")

    def add_arguments(self, verb: str, parser: argparse.ArgumentParser) -> None:
        if verb in ("embed", "reconstruct"):
            what = "a case folder" if verb == "reconstruct" else "a case folder, a folder of cases or a CSV manifest"
            parser.add_argument("--input", type=Path, default=None, help=f"{what} (default: the bundled case)")
            parser.add_argument("--have", default=None,
                                help="modalities to use, comma separated (default: all present)")
        if verb == "embed":
            parser.add_argument("--out", type=Path, required=True, help="output .npz")
            parser.add_argument("--per-modality", action="store_true", help="also one vector per modality")
        if verb == "reconstruct":
            parser.add_argument("--want", required=True, help="the modality to synthesise, e.g. t1ce")
            parser.add_argument("--out", type=Path, required=True, help="output .nii.gz (on the input's grid)")
            parser.add_argument("--plot", type=Path, default=None, help="also write a PNG figure")
            parser.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap (0..1)")
            parser.add_argument("--sw-batch-size", type=int, default=4, help="windows per forward pass")
            parser.add_argument("--dtype", choices=("float32", "input"), default="float32",
                                help="output data type: float32, or the input file's (scaled to fit)")

    # ------------------------------------------------------------------ data
    def pretrain_dataset(self, cfg: dict[str, Any], data: str | None, skip_bad: bool) -> Dataset:
        from medmae.data import MRIDataset, load_dataset_cases

        dc = data_config(cfg)
        cases = load_dataset_cases(data or sample_dir(), dc, skip_bad)
        return MRIDataset(cases, dc, train=True, skip_bad=skip_bad)

    def model_meta(self, cfg: dict[str, Any], dataset: Dataset) -> dict[str, Any]:
        from medmae.data import MRIDataset  # loaded already: the dataset is one

        assert isinstance(dataset, MRIDataset)
        dc = dataset.dc
        return {"modalities": dc.modalities, "modality_map": dc.modality_map, "spacing": dc.spacing,
                "roi_size": dc.roi_size, "orientation": "RAS", "normalisation": "z-score over non-zero voxels",
                "intensity": dataset.intensity_stats(), "n_cases": dataset.n_cases}

    def labelled_data(self, cfg: dict[str, Any], args: argparse.Namespace) -> LabelledData:
        """Labels from a CSV manifest (``data.label_column``) or label volumes (``data.task:
        segmentation``, or ``auto`` when every case has one); preprocessing follows the pretrained
        model's export (modalities, spacing, crop size)."""
        if not getattr(args, "data", None):
            raise DataError(None, "--data with a CSV manifest holding a label column, or cases with label "
                            "volumes (<case>_seg.nii.gz) for segmentation (the bundled sample has no labels)",
                            "no --data")
        from medmae.data import load_dataset_cases
        from medmae.tasks import labelled_datasets

        meta = read_export_config(args.model).get("meta", {})
        cfg.setdefault("data", {}).update({k: meta[k] for k in ("modalities", "spacing", "roi_size") if k in meta})
        cfg["model"]["modalities"] = None
        dc = data_config(cfg, check_patch=False)  # the crop size is the exported model's
        cases = load_dataset_cases(args.data, dc, skip_bad=False)
        train, val, n_classes, names = labelled_datasets(cases, dc, all_for_probe=args.verb == "probe")
        return LabelledData(train, val, dc.task, n_classes, names)

    # ------------------------------------------------------------------ outputs
    def figure(self, model: nn.Module, dataset: Dataset, path: Path) -> Path | None:
        """Centre crop of the first case with the model's own (group-budget) mask."""
        from medmae.data import MRIDataset

        assert isinstance(dataset, MRIDataset)
        sample = dataset.center_sample(0)
        batch = collate_dict([sample])
        result = reconstruct_batch(model, {"x": batch["x"], "group_pad": batch["group_pad"]}, seed=0)
        result["group_pad"] = batch["group_pad"]
        rows = rows_from_batch(result, dataset.dc.modalities)
        title = f"{sample['case_id']}: centre crop, masked loss {float(result['loss']):.3f}"
        return plot_three_planes(rows, path, title=title)

    def embed(self, model: nn.Module, args: argparse.Namespace) -> dict[str, Any]:
        from medmae.tasks import embed_cases, resolve_modalities

        mods = list(model.tokenizer.group_names)
        have = resolve_modalities(args.have, mods, (model.meta or {}).get("modality_map"))
        return embed_cases(model, args.input or sample_dir(), args.out, args.per_modality, have or None)

    def reconstruct(self, model: nn.Module, args: argparse.Namespace) -> dict[str, Any]:
        from medmae.tasks import reconstruct_file, resolve_modalities

        mods = list(model.tokenizer.group_names)
        mmap = (model.meta or {}).get("modality_map")
        want = resolve_modalities(args.want, mods, mmap)
        if len(want) != 1:
            raise ValueError(f"--want takes exactly one modality, got {args.want!r}")
        have = resolve_modalities(args.have, mods, mmap)
        return reconstruct_file(model, args.input or sample_case(), want[0], args.out, have or None, args.plot,
                                args.overlap, args.sw_batch_size, args.dtype)

    def prepare(self, cfg: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
        """Preprocess every case once (fills the disk cache with ``data.cache=disk``) and write the
        per-modality intensity statistics to ``--out`` (a folder) as ``intensity.json``."""
        from medmae.data import MRIDataset, load_dataset_cases

        dc = data_config(cfg)
        t0 = time.perf_counter()
        ds = MRIDataset(load_dataset_cases(args.data or sample_dir(), dc), dc, train=False)
        stats = ds.intensity_stats()  # reads (and caches) every case
        summary = {"cases": ds.n_cases, "seconds": round(time.perf_counter() - t0, 2), "cache": dc.cache,
                   "cache_dir": dc.cache_dir, "intensity": stats}
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            atomic_write_text(Path(args.out) / "intensity.json", json.dumps(summary, indent=2))
        return summary

    def check(self, paths: list[str], cfg: dict[str, Any]) -> tuple[int, list[Problem]]:
        from medmae.tasks import check_dataset

        n, errors = check_dataset(paths[0] if paths else sample_dir(), data_config(cfg))
        return n, [Problem(e.path or "", f"expected {e.expected}, found {e.found}") for e in errors]

    def info(self) -> dict[str, Any]:
        return {"bundled_sample": str(sample_case()),
                "modality_names": known_names(DataConfig().modalities),
                "default_spacing_mm": DataConfig().spacing, "default_roi": DataConfig().roi_size}


def cmd_finetune(domain: Domain, args: argparse.Namespace) -> int:
    """``finetune`` as the core's, plus the UNETR head for segmentation (``finetune.seg_head``)."""
    from maecore.config import dump_config, load_config
    from maecore.models import load_pretrained
    from maecore.tasks import TrainConfig
    from maecore.tasks.finetune import run_finetune
    from medmae.segmentation import SEG_HEADS, run_unetr_finetune

    cfg = load_config(domain.package, args.config, config_overrides(args))
    ft = dict(cfg.get("finetune", {}))
    seg_head = str(ft.pop("seg_head", "unetr")).lower()
    feature_size = int(ft.pop("unetr_feature_size", 16))
    if seg_head not in SEG_HEADS:
        raise ConfigError(f"finetune.seg_head must be one of {', '.join(SEG_HEADS)}, got {seg_head!r}")
    run_dir = run_dir_of(args, domain)
    model = load_pretrained(args.model)
    data = domain.labelled_data(cfg, args)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", dump_config(cfg))
    train_cfg = TrainConfig.from_dict(cfg.get("train", {}))
    if data.task == "segmentation" and seg_head == "unetr":
        summary = run_unetr_finetune(model, data.train, data.val, run_dir, train_cfg, data.n_classes, feature_size,
                                     class_names=data.class_names, **ft)
    else:
        summary = run_finetune(model, data.train, data.val, run_dir, train_cfg, task=data.task,
                               n_classes=data.n_classes, class_names=data.class_names, **ft)
        if data.task == "segmentation":
            summary["seg_head"] = "linear"
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2, default=str))
    print(json.dumps({k: v for k, v in summary.items() if not isinstance(v, (list, dict))}, indent=2, default=str))
    return 0


main = build_cli(MedDomain(), commands={"finetune": cmd_finetune})  # finetune: + the UNETR head

if __name__ == "__main__":
    raise SystemExit(main())
