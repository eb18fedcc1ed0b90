"""Missing-modality synthesis and case embeddings over whole volumes (sliding windows).

Synthesis of modality ``want`` from the modalities ``have`` of one case:

1. preprocess the ``have`` files exactly as in training (RAS, the model's spacing, foreground
   crop, per-modality z-score over brain voxels); ``want`` gets an empty channel;
2. MONAI ``sliding_window_inference`` over the whole volume with the model's training crop as
   window (Gaussian blending): in each window the encoder sees every token of the ``have``
   modalities, every ``want`` token is masked, and the decoder predicts them all; modalities in
   neither list are padding (``group_pad``), as for a case that lacks them;
3. map the prediction (z-scores) back to intensities, resample it onto the input's grid and set
   voxels outside the inputs' brain mask (no non-zero voxel in any ``have`` file) to 0.

Intensity mapping (:func:`intensity_params`). MRI intensities have no absolute unit and the
statistics of a modality that was not acquired cannot be measured from the case. We take the
wanted modality's mean and standard deviation over brain voxels from the training data (stored in
the exported ``config.json`` as ``meta.intensity``) and multiply both by the case's gain: the
median over the ``have`` modalities of (this case's brain mean / the training brain mean of that
modality). Sequences of one session share the scanner's scaling to first order, so the gain puts
the synthesised image on this case's scale while its contrast relative to the other modalities
comes from the model. A model without stored statistics for ``want`` falls back to the case's own
statistics: the mean of the ``have`` modalities' brain means and standard deviations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference
from torch import Tensor, nn

from maecore import masking as M
from maecore.errors import DataError
from medmae.cases import Case, read_case
from medmae.data import DataConfig, preprocess_transforms, run_transform
from medmae.io import Volume


@dataclass
class PreparedCase:
    """A case preprocessed for inference: ``image [G, *S]`` z-scored in RAS at the model's spacing
    (cropped to the brain) with its ``affine``; ``group_pad [G]``; ``raw_stats [G, 2]`` (brain mean
    and std in file units); ``reference`` the first input file (the output grid) and ``brain`` its
    mask of voxels non-zero in any input; ``nonnegative``: no input has a negative voxel."""

    image: Tensor
    affine: np.ndarray
    group_pad: Tensor
    raw_stats: Tensor
    reference: Volume
    brain: np.ndarray
    modalities: list[str]
    nonnegative: bool = True


def model_data_config(model: nn.Module) -> DataConfig:
    """The preprocessing a model was trained with, from its exported ``meta`` (defaults otherwise)."""
    meta = getattr(model, "meta", {}) or {}
    mods = list(model.tokenizer.group_names)
    spacing = meta.get("spacing", [1.0, 1.0, 1.0])
    roi = meta.get("roi_size") or [max(p * 4, 32) for p in model.tokenizer.patch]
    return DataConfig(modalities=mods, modality_map=dict(meta.get("modality_map", {})), spacing=spacing,
                      roi_size=list(roi), cache="none")


def prepare_case(case: Case, dc: DataConfig, use: Sequence[str]) -> PreparedCase:
    """Preprocess the modalities ``use`` of ``case`` (the others become padding)."""
    missing = [m for m in use if m not in case.files]
    if missing:
        raise DataError(case.source or case.case_id, f"files for the modalities {list(use)}",
                        f"none for {missing} (present: {sorted(case.files)})")
    sub = Case(case.case_id, {m: case.files[m] for m in use}, source=case.source)
    vols = read_case(sub, dc.modalities)
    reference = vols[use[0]]
    brain = np.any([v.data != 0 for v in vols.values()], axis=0)
    nonnegative = all(float(v.data.min()) >= 0 for v in vols.values())
    d = run_transform(preprocess_transforms(dc, pad_to_roi=False),
        {"case_id": sub.case_id, "files": {m: str(p) for m, p in sub.files.items()}, "seg": None,
         "source": sub.source})
    image = d["image"]
    affine = np.asarray(image.affine, dtype=np.float64) if isinstance(image, MetaTensor) else reference.affine
    x = image.as_tensor() if isinstance(image, MetaTensor) else torch.as_tensor(image)
    return PreparedCase(x.float(), affine, torch.as_tensor(d["group_pad"]), torch.as_tensor(d["raw_stats"]),
                        reference, brain, list(dc.modalities), nonnegative)


def _check_model(model: nn.Module) -> None:
    if getattr(model, "norm_pix", False):
        raise ValueError("this model was pretrained with norm_pix=true: it predicts per-patch normalised values, "
                         "not intensities, and cannot synthesise a modality; pretrain with model.norm_pix=false")


@torch.no_grad()
def synthesise_window(model: nn.Module, x: Tensor, group_pad: Tensor, want: int) -> Tensor:
    """One batch of windows: ``x [B, G, *roi]`` -> prediction of modality ``want`` ``[B, 1, *roi]``.

    The encoder sees every real token of the present modalities; every token of ``want`` is masked
    and predicted by the decoder (``group_pad [B, G]`` marks modalities to ignore).
    """
    batch = {"x": x, "group_pad": group_pad}
    tokens = model.tokenizer.tokens(batch)
    hide = (tokens.group == want) & ~tokens.pad
    masking = M.finalize(hide, tokens.pad)
    latent = model.forward_encoder(tokens, masking)
    pred = model.forward_decoder(latent, tokens, masking)
    return model.tokenizer.untokenize(pred.float(), batch)[:, want : want + 1]


@torch.no_grad()
def synthesise_array(
    model: nn.Module, image: Tensor, group_pad: Tensor, want: int, roi_size: Sequence[int], overlap: float = 0.5,
    sw_batch_size: int = 4,
) -> Tensor:
    """Prediction of modality ``want`` over a whole preprocessed ``image [G, *S]`` (z-scores, ``[*S]``).

    ``group_pad [G]`` marks modalities that are absent (ignored); the ``want`` channel is emptied
    and every one of its tokens is predicted, window by window (Gaussian-blended overlaps).
    """
    _check_model(model)
    x = image.clone().float()
    x[want] = 0.0
    pad = group_pad.clone().bool()
    pad[want] = False
    device = next(model.parameters()).device

    def predictor(win: Tensor) -> Tensor:
        return synthesise_window(model, win, pad.to(win.device).expand(win.shape[0], -1), want)

    out = sliding_window_inference(x[None].to(device), list(roi_size), sw_batch_size, predictor,
                                   overlap=overlap, mode="gaussian")
    out = out.as_tensor() if isinstance(out, MetaTensor) else out
    return out[0, 0].float().cpu()


def synthesise_volume(
    model: nn.Module, prepared: PreparedCase, want: str, roi_size: Sequence[int], overlap: float = 0.5,
    sw_batch_size: int = 4,
) -> Tensor:
    """Z-scored prediction of ``want`` over the whole prepared volume: ``[*S]``."""
    return synthesise_array(model, prepared.image, prepared.group_pad, prepared.modalities.index(want), roi_size,
                            overlap, sw_batch_size)


def intensity_params(meta: dict[str, Any], prepared: PreparedCase, have: Sequence[str], want: str
                     ) -> dict[str, Any]:
    """Mean and std (file units) of the synthesised modality on this case (see module docstring)."""
    stats = (meta or {}).get("intensity", {})
    mods = prepared.modalities
    case_mean = {m: float(prepared.raw_stats[mods.index(m), 0]) for m in have}
    case_std = {m: float(prepared.raw_stats[mods.index(m), 1]) for m in have}
    if want in stats:
        ratios = [case_mean[m] / stats[m]["mean"] for m in have if m in stats and abs(stats[m]["mean"]) > 1e-12]
        gain = float(np.median(ratios)) if ratios else 1.0
        return {"mean": gain * stats[want]["mean"], "std": gain * stats[want]["std"], "gain": gain,
                "source": "training statistics of the wanted modality x case gain"}
    return {"mean": float(np.mean(list(case_mean.values()))), "std": float(np.mean(list(case_std.values()))),
            "gain": 1.0, "source": "this case's statistics of the present modalities (no stored statistics)"}


def resample_to_reference(vol: np.ndarray, affine: np.ndarray, reference: Volume, order: int = 1) -> np.ndarray:
    """``vol`` (with ``affine``) resampled onto the reference grid (0 outside ``vol``)."""
    from nibabel.processing import resample_from_to

    src = nib.Nifti1Image(np.asarray(vol, np.float32), affine)
    out = resample_from_to(src, (reference.shape, reference.affine), order=order, mode="constant", cval=0.0)
    return np.asarray(out.dataobj, dtype=np.float32)


def synthesise_case(
    model: nn.Module, case: Case, have: Sequence[str], want: str, overlap: float = 0.5, sw_batch_size: int = 4,
) -> dict[str, Any]:
    """Synthesise ``want`` from ``have`` on the case's grid.

    Returns ``volume`` (float32 on the reference grid, file units), ``reference`` (the
    :class:`Volume` whose grid it is on), ``prepared`` (:class:`PreparedCase`), ``z`` (the
    z-scored prediction in the prepared space) and ``intensity`` (the mapping used).
    """
    dc = model_data_config(model)
    mods = list(model.tokenizer.group_names)
    unknown = [m for m in [*have, want] if m not in mods]
    if unknown:
        raise ValueError(f"unknown modality name(s) {unknown}; this model's modalities are {mods}")
    if want in have:
        raise ValueError(f"--want {want} is also in --have {list(have)}: it would be an input, not synthesised")
    if not have:
        raise ValueError("need at least one modality in --have to synthesise from")
    prepared = prepare_case(case, dc, list(have))
    z = synthesise_volume(model, prepared, want, dc.roi_size, overlap, sw_batch_size)
    params = intensity_params(getattr(model, "meta", {}), prepared, have, want)
    inside = (prepared.image[[mods.index(m) for m in have]] != 0).any(0)
    values = torch.where(inside, params["mean"] + params["std"] * z, torch.zeros_like(z)).numpy()
    volume = resample_to_reference(values, prepared.affine, prepared.reference)
    volume[~prepared.brain] = 0.0
    if prepared.nonnegative:  # magnitude images in, magnitude image out: negative values are artefacts
        np.maximum(volume, 0.0, out=volume)
    return {"volume": volume, "reference": prepared.reference, "prepared": prepared, "z": z, "intensity": params}


# ---------------------------------------------------------------------- embeddings
def _tile_starts(size: int, roi: int) -> list[int]:
    if size <= roi:
        return [0]
    n = math.ceil(size / roi)
    return sorted({int(round(s)) for s in np.linspace(0, size - roi, n)})


@torch.no_grad()
def embed_prepared(model: nn.Module, prepared: PreparedCase, roi_size: Sequence[int], per_modality: bool = False
                   ) -> dict[str, np.ndarray]:
    """Mean token embedding over windows tiling the volume: ``case [D]`` and, with
    ``per_modality``, ``modality [G, D]`` (each present modality encoded alone; NaN rows for
    absent ones) and ``present [G]``."""
    x = prepared.image
    pads = []
    for s, r in zip(x.shape[1:], roi_size):
        pads = [0, max(r - s, 0), *pads]
    x = F.pad(x, pads)
    device = next(model.parameters()).device
    g_pad = prepared.group_pad[None].to(device)
    present = ~prepared.group_pad
    g_n = len(prepared.modalities)
    sums = {"case": None, **({g: None for g in range(g_n)} if per_modality else {})}
    counts = dict.fromkeys(sums, 0.0)
    starts = [_tile_starts(s, r) for s, r in zip(x.shape[1:], roi_size)]
    for a in starts[0]:
        for b in starts[1]:
            for c in starts[2]:
                win = x[:, a : a + roi_size[0], b : b + roi_size[1], c : c + roi_size[2]][None].to(device)
                batch = {"x": win, "group_pad": g_pad}
                for key in sums:
                    if key != "case" and not bool(present[key]):
                        continue
                    emb, pad = model.encode_tokens(batch, None if key == "case" else [key])
                    real = ~pad[0]
                    total = emb[0][real].float().sum(0).cpu()
                    sums[key] = total if sums[key] is None else sums[key] + total
                    counts[key] += float(real.sum())
    dim = int(model.embed_dim)
    out = {"case": (sums["case"] / max(counts["case"], 1.0)).numpy()}
    if per_modality:
        rows = [(sums[g] / max(counts[g], 1.0)).numpy() if sums[g] is not None else np.full(dim, np.nan, np.float32)
                for g in range(g_n)]
        out["modality"] = np.stack(rows).astype(np.float32)
        out["present"] = present.numpy()
    return out
