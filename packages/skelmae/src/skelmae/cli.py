"""``skelmae``: the shared verbs for skeleton motion (BVH, NTU ``.skeleton``, pyskl ``.pkl``, NumPy)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from maecore.atomic import atomic_path
from maecore.cli.app import build_cli
from maecore.cli.domain import Domain, LabelledData, Problem
from maecore.errors import ConfigError, DataError
from maecore.tasks.data import collate_dict
from skelmae.data import SkeletonClips, expand, labels_for, load_sequences, prepare_motion, sample_labels
from skelmae.figures import plot_skeleton_strip
from skelmae.inference import embed_motion, reconstruct_clips, reconstruct_motion
from skelmae.io import EXTS, read_sequences
from skelmae.topology import PRESETS


def _topology_value(topo: Any) -> str | dict[str, Any]:
    """A preset name when the data's joints are a preset's, else the full topology dict."""
    preset = PRESETS.get(topo.name)
    return topo.name if preset is not None and preset.joint_names == topo.joint_names else topo.to_dict()


class SkelmaeDomain(Domain):
    name = "skelmae"
    package = "skelmae"
    description = "SkeletonMAE-style graph MAE and MAMP on skeleton motion (BVH, NTU, pyskl, NumPy); CPU-first."

    def add_arguments(self, verb: str, parser: argparse.ArgumentParser) -> None:
        if verb in ("embed", "reconstruct"):
            parser.add_argument(
                "--input",
                required=True,
                help="skeleton file (.bvh .skeleton .npy .npz .pkl) or, for embed, a folder or glob",
            )
            parser.add_argument("--out", type=Path, required=True, help="output .npz")
            parser.add_argument("--topology", default=None, help="preset naming the joints of .npy/.pkl inputs")
        if verb == "reconstruct":
            parser.add_argument("--plot", type=Path, default=None, help="also write a PNG strip of frames")
            parser.add_argument("--seed", type=int, default=0, help="seed of the random mask")
            parser.add_argument(
                "--mm-per-unit",
                type=float,
                default=None,
                help="millimetres per unit of the input, to report errors in mm (known for metres; CMU BVH: 56.4)",
            )
        if verb in ("finetune", "probe"):
            parser.add_argument("--labels", default=None, help="CSV file,label (default: the bundled sample's)")

    def resolve_args(self, verb: str, args: argparse.Namespace) -> None:
        if getattr(args, "labels", None):
            args.set = [*args.set, f"data.labels={args.labels}"]

    # ------------------------------------------------------------------ data
    def _sequences(self, cfg: dict[str, Any], data: str | None, skip_bad: bool) -> list[dict[str, Any]]:
        return load_sequences(expand(data), cfg["data"], skip_bad)

    def _clip_len(self, cfg: dict[str, Any]) -> int:
        length, t_patch = int(cfg["data"]["clip_len"]), int(cfg["model"].get("t_patch", 1))
        if length % t_patch:
            raise ConfigError(f"data.clip_len ({length}) must be a multiple of model.t_patch ({t_patch})")
        return length

    def pretrain_dataset(self, cfg: dict[str, Any], data: str | None, skip_bad: bool) -> Dataset:
        seqs = self._sequences(cfg, data, skip_bad)
        cfg["model"]["topology"] = _topology_value(seqs[0]["topology"])  # the model is built for the data's joints
        d = cfg["data"]
        return SkeletonClips(seqs, self._clip_len(cfg), int(d["stride"]), jitter=True)

    def model_meta(self, cfg: dict[str, Any], dataset: Dataset) -> dict[str, Any]:
        d = cfg["data"]
        return {
            "fps": float(d["fps"]),
            "clip_len": int(d["clip_len"]),
            "view_normalise": bool(d["view_normalise"]),
            "topology": dataset.topology.to_dict(),  # type: ignore[attr-defined]
            "frame": "root-centred on each clip's first frame, divided by the sequence's body size",
        }

    def labelled_data(self, cfg: dict[str, Any], args: argparse.Namespace) -> LabelledData:
        seqs = self._sequences(cfg, args.data, skip_bad=False)
        csv = cfg["data"].get("labels") or (str(sample_labels()) if args.data is None else None)
        names = labels_for(seqs, csv)
        classes = sorted(set(names))
        length = self._clip_len(cfg)
        ds = SkeletonClips(seqs, length, length, labels=[classes.index(n) for n in names])
        # several clips per sequence: leave-one-sequence-out in probes
        return LabelledData(ds, ds, "classification", len(classes), classes, groups=ds.groups)

    # ------------------------------------------------------------------ outputs
    def figure(self, model: nn.Module, dataset: Dataset, path: Path) -> Path | None:
        sample = dataset[0]
        res = reconstruct_clips(model, collate_dict([sample]))
        x = sample["x"].numpy().copy()
        x[~sample["valid"].numpy()] = np.nan
        edges = dataset.topology.edge_array()  # type: ignore[attr-defined]
        return plot_skeleton_strip(
            x,
            res["recon"][0].numpy(),
            res["hidden"][0].numpy(),
            edges,
            path,
            fps=float(getattr(model, "meta", {}).get("fps", 30)),
        )

    def _read(self, path: str | Path, topology: str | None) -> list[dict[str, Any]]:
        return read_sequences(path, topology)

    def reconstruct(self, model: nn.Module, args: argparse.Namespace) -> dict[str, Any]:
        motion = self._read(args.input, args.topology)[0]
        res = reconstruct_motion(model, motion, seed=args.seed, mm_per_unit=args.mm_per_unit)
        with atomic_path(args.out) as tmp:
            np.savez_compressed(
                tmp,
                positions=res["positions"].astype(np.float32),
                input=res["input"].astype(np.float32),
                mask=res["mask"],
                joint_names=np.array(res["joint_names"]),
                edges=res["edges"],
                fps=np.float64(res["fps"]),
                units=np.array(res["units"]),
            )
        out = {
            "out": str(args.out),
            "frames": int(res["positions"].shape[0]),
            "joints": len(res["joint_names"]),
            "fps": res["fps"],
            "units": res["units"],
            "masked_fraction": round(float(res["mask"].mean()), 4),
            "scored_joints": res["scored_joints"],
        }
        for key in ("masked_mpjpe", "baseline_masked_mpjpe", "masked_mpjpe_mm", "baseline_masked_mpjpe_mm"):
            if key in res:  # the model's error beside the baseline's, on the same hidden joints
                out[key] = None if res[key] is None else float(f"{res[key]:.4g}")
        out["baseline_method"] = res["baseline_method"]
        if args.plot:
            out["plot"] = str(
                plot_skeleton_strip(
                    res["input"],
                    res["positions"],
                    res["mask"],
                    res["edges"],
                    args.plot,
                    fps=res["fps"],
                    title=Path(args.input).name,
                )
            )
        return out

    def embed(self, model: nn.Module, args: argparse.Namespace) -> dict[str, Any]:
        motions = [m for f in expand(args.input) for m in self._read(f, args.topology)]
        emb = np.stack([embed_motion(model, m) for m in motions])
        with atomic_path(args.out) as tmp:
            np.savez_compressed(
                tmp,
                embeddings=emb,
                files=np.array([m["path"] for m in motions]),
                names=np.array([m["name"] for m in motions]),
            )
        return {"out": str(args.out), "embeddings": list(emb.shape)}

    def check(self, paths: list[str], cfg: dict[str, Any]) -> tuple[int, list[Problem]]:
        files = expand(paths[0] if paths else None)
        problems = []
        for f in files:
            try:
                for m in read_sequences(
                    f,
                    cfg["data"].get("topology"),
                    cfg["data"].get("source_fps"),
                    bool(cfg["data"].get("allow_unsafe_pickle", False)),
                ):
                    prepare_motion(m, float(cfg["data"]["fps"]))
            except DataError as err:
                problems.append(Problem(str(f), f"expected {err.expected}, found {err.found}"))
        return len(files), problems

    def info(self) -> dict[str, Any]:
        import torch_geometric

        return {
            "readers": ", ".join(EXTS),
            "topologies": [f"{k} ({t.n_joints} joints)" for k, t in PRESETS.items()],
            "torch_geometric": torch_geometric.__version__,
            "bundled_sample": str(expand(None)[0].parent),
            "threads": torch.get_num_threads(),
        }


main = build_cli(SkelmaeDomain())

if __name__ == "__main__":
    raise SystemExit(main())
