"""``maecore``'s own CLI: the shared verbs on multichannel image arrays (``.npz`` / ``.npy``).

It exists so the suite's first command does something real with only the core installed:
``maecore pretrain`` trains a tiny MAE on chips of a bundled Landsat crop (columns left of the
held-out strip), writes the run folder, the exported model and a reconstruction figure of
held-out chips. Domain packages (geomae, medmae, ...) provide the same verbs for their formats.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import ConcatDataset, Dataset

from maecore.atomic import atomic_path
from maecore.cli.app import build_cli
from maecore.cli.domain import Domain, LabelledData, Problem
from maecore.errors import DataError, read_all
from maecore.figures import plot_reconstruction_2d, reconstruct_batch
from maecore.paths import expand_paths
from maecore.sample import ImageChips, read_image_array, sample_path
from maecore.tasks.data import collate_dict


class _Cloudy(Dataset):
    """Adds ``label`` = 1 when more than 5 % of a chip's pixels exceed 200 in every band."""

    def __init__(self, chips: ImageChips, image: np.ndarray) -> None:
        self.chips = chips
        bright = (image > 200).all(0)
        c = chips.chip
        self.labels = [int(bright[r : r + c, q : q + c].mean() > 0.05) for r, q in chips.origins]

    def __len__(self) -> int:
        return len(self.chips)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**self.chips[i], "label": torch.tensor(self.labels[i])}


def _expand(data: str | None) -> list[Path]:
    return expand_paths(data, (".npz", ".npy"), [sample_path()],
                        "image arrays (.npz with key 'image', or .npy [C, H, W])")


class ImageDomain(Domain):
    name = "maecore"
    package = "maecore"
    description = "Masked-autoencoder core: pretrain a tiny MAE on multichannel image arrays."

    def add_arguments(self, verb: str, parser: argparse.ArgumentParser) -> None:
        if verb in ("embed", "reconstruct"):
            parser.add_argument("--input", type=Path, default=None, help=".npz/.npy image (default: sample)")
            parser.add_argument("--out", type=Path, required=True, help="output .npz")
        if verb == "reconstruct":
            parser.add_argument("--plot", type=Path, default=None, help="also write a PNG figure")
            parser.add_argument("--seed", type=int, default=0, help="seed of the random mask")

    # ------------------------------------------------------------------ data
    def _split(self, cfg: dict[str, Any], image: np.ndarray) -> tuple[int, int]:
        h = image.shape[1]
        held = int(round(h * float(cfg["data"]["holdout_fraction"])))
        return 0, h - held

    def _read_all(self, paths: list[Path], skip_bad: bool) -> list[dict[str, Any]]:
        return read_all(paths, read_image_array, skip_bad, noun="image array")

    def pretrain_dataset(self, cfg: dict[str, Any], data: str | None, skip_bad: bool) -> Dataset:
        """Chips from the rows above each image's held-out bottom strip (``data.holdout_fraction``)."""
        d = cfg["data"]
        chip = int(d["chip_size"])
        arrays = self._read_all(_expand(data), skip_bad)
        parts = []
        for i, arr in enumerate(arrays):
            _, cut = self._split(cfg, arr["image"])
            parts.append(ImageChips(arr["image"], chip, int(d["chips_per_image"]), seed=i, rows=(0, cut)))
        # held-out chips (for the figure) from the first image's bottom strip, train statistics
        image = arrays[0]["image"]
        _, cut = self._split(cfg, image)
        self._held_out = None
        if image.shape[1] - cut >= chip:
            self._held_out = ImageChips(
                image, chip, 8, seed=99, rows=(cut, image.shape[1]), mean=parts[0].mean, std=parts[0].std
            )
        return parts[0] if len(parts) == 1 else ConcatDataset(parts)

    def labelled_data(self, cfg: dict[str, Any], args: argparse.Namespace) -> LabelledData:
        """A task defined from the data itself: does a chip hold cloud? (> 5 % of its pixels bright
        in all three bands, i.e. above 200 of 255 in the raw crop). Train chips from the upper
        rows, validation chips from the held-out bottom strip."""
        d = cfg["data"]
        chip = int(d["chip_size"])
        image = self._read_all(_expand(args.data), skip_bad=False)[0]["image"]
        _, cut = self._split(cfg, image)
        train = ImageChips(image, chip, int(d["chips_per_image"]), seed=0, rows=(0, cut))
        val = ImageChips(image, chip, 64, seed=1, rows=(cut, image.shape[1]), mean=train.mean, std=train.std)
        return LabelledData(_Cloudy(train, image), _Cloudy(val, image), "classification", 2, ["clear", "cloudy"])

    def model_meta(self, cfg: dict[str, Any], dataset: Dataset) -> dict[str, Any]:
        first = dataset if isinstance(dataset, ImageChips) else dataset.datasets[0]  # type: ignore[attr-defined]
        return {"norm_mean": first.mean.tolist(), "norm_std": first.std.tolist(), "chip_size": first.chip}

    # ------------------------------------------------------------------ outputs
    def figure(self, model: nn.Module, dataset: Dataset, path: Path) -> Path | None:
        source = getattr(self, "_held_out", None) or dataset
        batch = collate_dict([source[i] for i in range(min(4, len(source)))])
        result = reconstruct_batch(model, batch)
        return plot_reconstruction_2d(result, path, title=f"held-out chips, masked loss {result['loss']:.3f}")

    def _chips_of(self, model: nn.Module, path: Path | None) -> tuple[dict[str, Any], dict[str, Any]]:
        arr = read_image_array(path or sample_path())
        meta = getattr(model, "meta", {})
        chip = int(meta.get("chip_size", 32))
        image = arr["image"]
        c, h, w = image.shape
        if c != model.tokenizer.in_channels:
            expected = f"{model.tokenizer.in_channels} bands as the model was trained on"
            raise DataError(arr["path"], expected, f"{c} bands")
        if h < chip or w < chip:
            raise DataError(arr["path"], f"an image of at least {chip} x {chip} pixels", f"{h} x {w}")
        mean = np.asarray(meta.get("norm_mean", np.nanmean(image, (1, 2))), np.float32)
        std = np.asarray(meta.get("norm_std", np.nanstd(image, (1, 2)) + 1e-6), np.float32)
        norm = (image - mean[:, None, None]) / std[:, None, None]
        rows, cols = h // chip, w // chip
        tiles = [
            norm[:, r * chip : (r + 1) * chip, q * chip : (q + 1) * chip] for r in range(rows) for q in range(cols)
        ]
        batch = {"x": torch.from_numpy(np.stack(tiles).astype(np.float32))}
        return batch, {"rows": rows, "cols": cols, "chip": chip, "mean": mean, "std": std, "arr": arr}

    @torch.no_grad()
    def embed(self, model: nn.Module, args: argparse.Namespace) -> dict[str, Any]:
        batch, g = self._chips_of(model, args.input)
        emb = model.encode(batch).float().numpy()
        grid = emb.reshape(g["rows"], g["cols"], -1)
        with atomic_path(args.out) as tmp:
            np.savez_compressed(tmp, embeddings=grid, chip=g["chip"], source=g["arr"]["path"])
        return {"out": str(args.out), "embeddings": list(grid.shape)}

    @torch.no_grad()
    def reconstruct(self, model: nn.Module, args: argparse.Namespace) -> dict[str, Any]:
        batch, g = self._chips_of(model, args.input)
        result = reconstruct_batch(model, batch, seed=args.seed)
        chip, rows, cols = g["chip"], g["rows"], g["cols"]
        def mosaic(t: torch.Tensor) -> np.ndarray:
            a = t.float().numpy().reshape(rows, cols, -1, chip, chip).transpose(2, 0, 3, 1, 4)
            return a.reshape(a.shape[0], rows * chip, cols * chip)

        recon = mosaic(result["recon"]) * g["std"][:, None, None] + g["mean"][:, None, None]
        hidden = mosaic(result["hidden"].float()) > 0.5
        with atomic_path(args.out) as tmp:
            np.savez_compressed(tmp, image=recon.astype(np.float32), hidden=hidden, bands=np.array(g["arr"]["bands"]))
        out = {"out": str(args.out), "shape": list(recon.shape), "masked_fraction": float(hidden.mean())}
        if args.plot:
            plot_reconstruction_2d(result, args.plot, max_items=4)
            out["plot"] = str(args.plot)
        return out

    def check(self, paths: list[str], cfg: dict[str, Any]) -> tuple[int, list[Problem]]:
        files = _expand(paths[0] if paths else None)
        problems = []
        for f in files:
            try:
                arr = read_image_array(f)
                chip = int(cfg["data"]["chip_size"])
                if min(arr["image"].shape[1:]) < chip:
                    size = list(arr["image"].shape[1:])
                    raise DataError(f, f"an image of at least {chip} x {chip} pixels", f"{size}")
            except DataError as err:
                problems.append(Problem(str(f), f"expected {err.expected}, found {err.found}"))
        return len(files), problems

    def info(self) -> dict[str, Any]:
        return {"bundled_sample": str(sample_path())}


main = build_cli(ImageDomain())

if __name__ == "__main__":
    raise SystemExit(main())
