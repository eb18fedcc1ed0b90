"""``mae3d``: the shared verbs for point clouds (``--kind points``, default) and radiance grids."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from mae3d.data import Grids, PointClouds, expand, labels_for
from mae3d.figures import plot_cloud_reconstruction, plot_grid_reconstruction
from mae3d.io import read_grid_or_shape, read_points, write_grid
from mae3d.reconstruction import cloud_parts, reconstruct_clouds, reconstruct_points_file
from maecore.atomic import atomic_path
from maecore.cli.app import build_cli
from maecore.cli.domain import Domain, LabelledData, Problem
from maecore.errors import DataError
from maecore.figures import reconstruct_batch
from maecore.pointops import backend
from maecore.tasks.data import collate_dict

GRID_MODEL = "mae3d_nerfmae_tiny"


def _kind(model: nn.Module) -> str:
    return "points" if hasattr(model.tokenizer, "group_size") else "grid"


class Mae3dDomain(Domain):
    name = "mae3d"
    package = "mae3d"
    description = "Point-MAE on point clouds and meshes, NeRF-MAE-style MAE on radiance grids; CPU-first."

    def add_arguments(self, verb: str, parser: argparse.ArgumentParser) -> None:
        if verb in ("pretrain", "finetune", "probe", "check"):
            parser.add_argument("--kind", choices=("points", "grid"), default=None,
                                help="points (Point-MAE, default) or grid (radiance grids)")
        if verb in ("embed", "reconstruct"):
            parser.add_argument("--input", required=True, help="mesh/point file (or a folder for embed), grid .npz")
            parser.add_argument("--out", type=Path, required=True, help="output .ply / .npz")
        if verb == "reconstruct":
            parser.add_argument("--plot", type=Path, default=None, help="also write a PNG figure")
            parser.add_argument("--seed", type=int, default=0, help="seed of the random mask")
        if verb in ("finetune", "probe"):
            parser.add_argument("--labels", default=None, help="CSV file,label (default: parent folder names)")

    def resolve_args(self, verb: str, args: argparse.Namespace) -> None:
        if getattr(args, "kind", None) == "grid":
            args.set = ["data.kind=grid", f"model.name={GRID_MODEL}", *args.set]
        if getattr(args, "labels", None):
            args.set = [*args.set, f"data.labels={args.labels}"]

    # ------------------------------------------------------------------ data
    def _dataset(self, cfg: dict[str, Any], files: list[Path], skip_bad: bool) -> Dataset:
        d = cfg["data"]
        if d["kind"] == "grid":
            res = int(d["resolution"])
            model_res = cfg["model"].get("resolution", res)
            if int(model_res) != res:
                raise DataError(None, f"model.resolution equal to data.resolution ({res})", f"{model_res}")
            return Grids.from_files(files, res, skip_bad)
        if d["kind"] != "points":
            raise DataError(None, "data.kind 'points' or 'grid'", repr(d["kind"]))
        ds = PointClouds.from_files(files, int(d["n_points"]), skip_bad, seed=int(cfg["train"]["seed"]))
        aug = d.get("augment")
        if aug:
            augment = {"scale": list(aug.get("scale", [2 / 3, 3 / 2])), "translate": float(aug.get("translate", 0.2))}
            ds.augment = PointClouds(ds.items, augment=augment).augment  # the constructor validates the ranges
        return ds

    def pretrain_dataset(self, cfg: dict[str, Any], data: str | None, skip_bad: bool) -> Dataset:
        return self._dataset(cfg, expand(data), skip_bad)

    def model_meta(self, cfg: dict[str, Any], dataset: Dataset) -> dict[str, Any]:
        d = cfg["data"]
        return {"kind": d["kind"], "n_points": int(d["n_points"]), "resolution": int(d["resolution"]),
                "frame": "unit sphere; outputs return to the input frame with the stored center and scale"}

    def labelled_data(self, cfg: dict[str, Any], args: argparse.Namespace) -> LabelledData:
        files = expand(args.data)
        ds = self._dataset(cfg, files, skip_bad=False)
        names = labels_for(files, cfg["data"].get("labels"))
        classes = sorted(set(names))
        ds.labels = [classes.index(n) for n in names]
        # one object per file: leave-one-object-out in probes
        return LabelledData(ds, ds, "classification", len(classes), classes, groups=[str(f) for f in files])

    # ------------------------------------------------------------------ outputs
    def figure(self, model: nn.Module, dataset: Dataset, path: Path) -> Path | None:
        batch = collate_dict([dataset[0]])
        if _kind(model) == "grid":
            return plot_grid_reconstruction(reconstruct_batch(model, batch), path)
        visible, predicted = cloud_parts(reconstruct_clouds(model, batch, seed=0))
        return plot_cloud_reconstruction(batch["points"][0].numpy(), visible, predicted, path)

    def reconstruct(self, model: nn.Module, args: argparse.Namespace) -> dict[str, Any]:
        meta = getattr(model, "meta", {})
        if _kind(model) == "grid":
            g = read_grid_or_shape(args.input, int(meta.get("resolution", 16)))
            batch = {"x": torch.from_numpy(np.ascontiguousarray(g["rgbsigma"].transpose(3, 0, 1, 2)))[None]}
            result = reconstruct_batch(model, batch, seed=args.seed)
            recon = result["recon"][0].permute(1, 2, 3, 0).numpy()
            hidden = result["hidden"][0, 0].numpy()
            write_grid(args.out, recon, g["bounds"], hidden=hidden)
            out = {"out": str(args.out), "shape": list(recon.shape), "masked_fraction": float(hidden.mean())}
            if args.plot:
                out["plot"] = str(plot_grid_reconstruction(result, args.plot))
            return out
        # points: the PLY, the model's masked Chamfer and the nearest-visible-patch baseline's beside it
        return reconstruct_points_file(model, args.input, args.out, seed=args.seed, plot=args.plot)

    @torch.no_grad()
    def embed(self, model: nn.Module, args: argparse.Namespace) -> dict[str, Any]:
        from maecore.tasks.probe import extract_embeddings  # with scikit-learn: not at start-up

        meta = getattr(model, "meta", {})
        files = expand(args.input)
        if _kind(model) == "grid":
            ds: Dataset = Grids.from_files(files, int(meta.get("resolution", 16)))
        else:
            ds = PointClouds.from_files(files, int(meta.get("n_points", 1024)))
        # the core's loop: the model's device, eval mode, bf16 on CUDA (a hand loop here left batches on the CPU)
        emb, _ = extract_embeddings(model, DataLoader(ds, batch_size=16, collate_fn=collate_dict))
        with atomic_path(args.out) as tmp:
            np.savez_compressed(tmp, embeddings=emb, files=np.array([str(f) for f in files]))
        return {"out": str(args.out), "embeddings": list(emb.shape)}

    def check(self, paths: list[str], cfg: dict[str, Any]) -> tuple[int, list[Problem]]:
        files = expand(paths[0] if paths else None)
        problems = []
        for f in files:
            try:
                self._read_one(cfg, f)
            except DataError as err:
                problems.append(Problem(str(f), f"expected {err.expected}, found {err.found}"))
        return len(files), problems

    def _read_one(self, cfg: dict[str, Any], path: Path) -> dict[str, Any]:
        d = cfg["data"]
        if d["kind"] == "grid":
            return read_grid_or_shape(path, int(d["resolution"]))
        return read_points(path, int(d["n_points"]))

    def info(self) -> dict[str, Any]:
        ops = ("pytorch3d for CUDA tensors, pure torch on the CPU (faster there)" if backend() == "pytorch3d"
               else "pure torch (pytorch3d is optional: pip install 'mae3d[pytorch3d]' after building it)")
        return {"point_ops": ops,
                "bundled_sample": str(expand(None)[0].parent.parent)}


main = build_cli(Mae3dDomain())

if __name__ == "__main__":
    raise SystemExit(main())
