"""Voxel-wise segmentation on the pretrained medmae encoder with a UNETR-style decoder (MONAI).

The decoder follows ``monai.networks.nets.UNETR`` (Hatamizadeh et al. 2022) and is built from
MONAI's blocks (``UnetrBasicBlock``, ``UnetrPrUpBlock``, ``UnetrUpBlock``, ``UnetOutBlock``) on top
of our ViT encoder instead of MONAI's own:

- the encoder sees every real token (nothing is masked at fine-tune time); the hidden states of 4
  evenly spaced blocks are captured with forward hooks on ``encoder.blocks`` (the last one is the
  encoder's normed output), e.g. blocks 3, 6, 9, 12 of ViT-B;
- each hidden state ``[B, G * N, D]`` (group-major: one token per modality and patch) is fused over
  the modalities present (the mean over non-padded tokens at each patch position: an absent
  modality is padding, as everywhere in medmae, and never contributes) and reshaped to the patch
  grid ``[B, D, *grid]``;
- skips at 1/2, 1/4, 1/8 of the input resolution come from the first three hidden states
  (transposed convolutions up from the grid), the full-resolution skip is the input volume itself
  (absent modalities' channels zeroed), and ``UnetrUpBlock``\\ s decode the last hidden state back to
  the input resolution: ``logits [B, K, *S]``.

The patch size must be a power of two of at least 8 on every axis (8: the 1/8 skip is at the grid
itself; 16 as in UNETR; larger patches upsample the bottleneck by more than 2 in one step).

Training loss: MONAI ``DiceCELoss`` (softmax Dice + cross-entropy, one-hot labels); metric: MONAI
``DiceMetric`` per class (the background class included; ``dice`` is the mean over the foreground
classes). :func:`flair_hyperintense_label` derives a label volume from a case's own FLAIR image
for demos and tests (the bundled sample has no expert segmentation).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss
from monai.metrics import DiceMetric
from monai.networks.blocks import UnetOutBlock, UnetrBasicBlock, UnetrPrUpBlock, UnetrUpBlock
from safetensors.torch import load_model
from torch import Tensor, nn
from torch.utils.data import Dataset

from maecore import masking as M
from maecore.errors import DataError
from maecore.models.pretrained import load_pretrained
from maecore.tasks.config import TrainConfig
from maecore.tasks.finetune import HEAD_CONFIG, HEAD_WEIGHTS, FinetuneTask, fit_finetune, load_finetuned

log = logging.getLogger(__name__)
SEG_HEADS = ("unetr", "linear")
N_HIDDEN = 4


# ---------------------------------------------------------------------- encoder features
def hidden_layers(depth: int, n: int = N_HIDDEN) -> list[int]:
    """Indices of ``n`` evenly spaced encoder blocks ending with the last: 12 -> [2, 5, 8, 11];
    a shallower encoder repeats blocks (2 -> [0, 0, 1, 1])."""
    if depth < 1:
        raise ValueError(f"the encoder needs at least one block, got depth {depth}")
    return [max(1, math.ceil(depth * k / n)) - 1 for k in range(1, n + 1)]


def encoder_hidden_states(model: nn.Module, batch: dict[str, Any], layers: Sequence[int]
                          ) -> tuple[list[Tensor], Tensor]:
    """Hidden states of the encoder blocks ``layers`` (the last one: the encoder's normed output)
    for every real token, unmasked: ``([emb [B, L, D]] * len(layers), pad [B, L])``.

    Blocks before the last are read with forward hooks on ``model.encoder.blocks``; padded tokens
    (absent modalities, unmeasured voxels) are never encoded and come back as zeros.
    """
    blocks = model.encoder.blocks
    tokens = model.tokenizer.tokens(batch)
    masking = M.finalize(torch.zeros_like(tokens.pad), tokens.pad)
    captured: dict[int, Tensor] = {}

    def hook(i: int):
        def fn(module: nn.Module, inputs: Any, output: Tensor) -> None:
            captured[i] = output
        return fn

    handles = [blocks[i].register_forward_hook(hook(i)) for i in sorted(set(layers[:-1]))]
    try:
        latent = model.forward_encoder(tokens, masking)
    finally:
        for h in handles:
            h.remove()
    states = [captured[i] for i in layers[:-1]] + [latent]
    b, length = tokens.pad.shape
    index = masking.ids_keep[..., None]
    out = []
    for h in states:
        h = h.masked_fill(masking.keep_pad[..., None], 0)
        out.append(h.new_zeros(b, length, h.shape[-1]).scatter(1, index.expand_as(h), h))
    return out, tokens.pad


def fuse_groups(emb: Tensor, pad: Tensor, grid: Sequence[int]) -> Tensor:
    """``emb [B, G * N, D]`` -> ``[B, D, *grid]``: the mean over the groups present at each position
    (padded tokens weigh 0; a position with no group present is 0)."""
    b, length, d = emb.shape
    n = math.prod(grid)
    if length % n:
        raise ValueError(f"{length} tokens do not form whole grids {tuple(grid)}")
    e = emb.reshape(b, length // n, n, d)
    w = (~pad).to(emb.dtype).reshape(b, length // n, n, 1)
    fused = (e * w).sum(1) / w.sum(1).clamp(min=1)  # [B, N, D], C order over the grid
    return fused.reshape(b, *grid, d).movedim(-1, 1).contiguous()


# ---------------------------------------------------------------------- the decoder
def _levels(patch: int | Sequence[int]) -> tuple[int, int]:
    ps = [int(patch)] * 3 if isinstance(patch, int) else [int(p) for p in patch]
    if len(set(ps)) != 1 or ps[0] < 8 or ps[0] & (ps[0] - 1):
        raise ValueError(f"the UNETR head needs an isotropic power-of-two patch size of at least 8, got {ps} "
                         "(use finetune.seg_head=linear for other patch sizes)")
    return ps[0], int(math.log2(ps[0]))


class UNETRHead(nn.Module):
    """UNETR decoder from MONAI blocks: ``(features [4 x [B, D, *grid]], x [B, C, *S]) -> [B, K, *S]``.

    ``dim``: encoder width; ``in_channels``: input channels (one per modality); ``patch``: the
    tokenizer's patch size; ``depth``: encoder blocks (which hidden states to read, see
    :func:`hidden_layers`); ``feature_size``: width of the full-resolution stage (x2 per level down,
    16 in UNETR). ``loss`` is MONAI ``DiceCELoss`` on a label map ``[B, *S]``.
    """

    kind = "segmentation"

    def __init__(self, dim: int, n_classes: int, in_channels: int, patch: int | Sequence[int], depth: int,
                 feature_size: int = 16, norm_name: str = "instance", res_block: bool = True) -> None:
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"n_classes must be >= 2 for segmentation, got {n_classes}")
        if feature_size < 1 or dim < 1 or in_channels < 1:
            raise ValueError(f"dim, in_channels and feature_size must be >= 1, got {dim}, {in_channels}, "
                             f"{feature_size}")
        self.patch, levels = _levels(patch)
        self.dim, self.n_classes, self.in_channels, self.depth = int(dim), int(n_classes), int(in_channels), int(depth)
        self.feature_size, self.norm_name, self.res_block = int(feature_size), str(norm_name), bool(res_block)
        self.layers = hidden_layers(self.depth)
        fs, nd = self.feature_size, 3

        def skip(out_ch: int, ups: int) -> nn.Module:  # hidden state -> grid * 2**ups
            if ups == 0:
                return UnetrBasicBlock(nd, dim, out_ch, 3, 1, norm_name, res_block=res_block)
            return UnetrPrUpBlock(nd, dim, out_ch, num_layer=ups - 1, kernel_size=3, stride=1, upsample_kernel_size=2,
                                  norm_name=norm_name, conv_block=True, res_block=res_block)

        self.encoder1 = UnetrBasicBlock(nd, in_channels, fs, 3, 1, norm_name, res_block=res_block)  # S
        self.encoder2 = skip(fs * 2, levels - 1)  # S / 2
        self.encoder3 = skip(fs * 4, levels - 2)  # S / 4
        self.encoder4 = skip(fs * 8, levels - 3)  # S / 8
        self.decoder5 = UnetrUpBlock(nd, dim, fs * 8, 3, 2 ** (levels - 3), norm_name, res_block=res_block)
        self.decoder4 = UnetrUpBlock(nd, fs * 8, fs * 4, 3, 2, norm_name, res_block=res_block)
        self.decoder3 = UnetrUpBlock(nd, fs * 4, fs * 2, 3, 2, norm_name, res_block=res_block)
        self.decoder2 = UnetrUpBlock(nd, fs * 2, fs, 3, 2, norm_name, res_block=res_block)
        self.out = UnetOutBlock(nd, fs, n_classes)
        self.loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)

    def forward(self, features: Sequence[Tensor], x: Tensor) -> Tensor:
        if len(features) != N_HIDDEN:
            raise ValueError(f"the UNETR head takes {N_HIDDEN} hidden states, got {len(features)}")
        grid = tuple(features[0].shape[2:])
        if tuple(x.shape[2:]) != tuple(g * self.patch for g in grid):
            raise ValueError(f"input {list(x.shape)} does not match the token grid {grid} x patch {self.patch}")
        enc1 = self.encoder1(x)
        enc2 = self.encoder2(features[0])
        enc3 = self.encoder3(features[1])
        enc4 = self.encoder4(features[2])
        dec = self.decoder5(features[3], enc4)
        dec = self.decoder4(dec, enc3)
        dec = self.decoder3(dec, enc2)
        dec = self.decoder2(dec, enc1)
        return self.out(dec)

    def loss(self, logits: Tensor, y: Tensor) -> Tensor:
        if y.shape[1:] != logits.shape[2:]:
            raise ValueError(f"label map {list(y.shape)} does not match logits {list(logits.shape)} (need [B, *S])")
        return self.loss_fn(logits.float(), y[:, None].long())

    def config(self) -> dict[str, Any]:
        return {"type": "unetr", "dim": self.dim, "n_classes": self.n_classes, "in_channels": self.in_channels,
                "patch": self.patch, "depth": self.depth, "feature_size": self.feature_size,
                "norm_name": self.norm_name, "res_block": self.res_block}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> UNETRHead:
        try:
            return cls(int(config["dim"]), int(config["n_classes"]), int(config["in_channels"]), config["patch"],
                       int(config["depth"]), int(config.get("feature_size", 16)),
                       str(config.get("norm_name", "instance")), bool(config.get("res_block", True)))
        except KeyError as err:
            raise KeyError(f"UNETR head config lacks key {err}; got keys {sorted(config)}") from err


def make_unetr_head(model: nn.Module, n_classes: int, feature_size: int = 16) -> UNETRHead:
    """A :class:`UNETRHead` sized for a medmae model (width, modalities, patch, depth)."""
    tok = model.tokenizer
    return UNETRHead(int(model.embed_dim), n_classes, len(tok.group_names), list(tok.patch),
                     len(model.encoder.blocks), feature_size)


def segment_logits(model: nn.Module, head: UNETRHead, batch: dict[str, Any]) -> Tensor:
    """``batch {"x" [B, G, *S], "group_pad" [B, G]}`` -> logits ``[B, K, *S]``."""
    states, pad = encoder_hidden_states(model, batch, head.layers)
    grid = model.tokenizer.grid(batch)
    feats = [fuse_groups(h, pad, grid) for h in states]
    x = batch["x"]
    gp = batch.get("group_pad")
    if gp is not None:  # an absent modality's channel is never seen, not even by the skip
        x = x * (~gp.to(torch.bool)).to(x.dtype)[:, :, None, None, None]
    x = torch.nan_to_num(x, nan=0.0)
    return head(feats, x.to(feats[0].dtype))


# ---------------------------------------------------------------------- Dice
def dice_metric() -> DiceMetric:
    """MONAI ``DiceMetric`` per class (background included) averaged over samples; a class absent
    from a sample's labels is left out of that class's mean (``ignore_empty``)."""
    return DiceMetric(include_background=True, reduction="mean_batch", ignore_empty=True)


def update_dice(metric: DiceMetric, logits: Tensor, y: Tensor) -> None:
    """Accumulate Dice of the predicted classes of ``logits [B, K, *S]`` against ``y [B, *S]``."""
    update_dice_labels(metric, logits.detach().argmax(1), y, logits.shape[1])


def dice_values(metric: DiceMetric, stage: str) -> dict[str, float]:
    """``{stage/dice_<k>: ..., stage/dice: mean over foreground classes}`` (NaN-free entries only)."""
    try:
        per_class = metric.aggregate()
    except Exception:  # nothing accumulated
        return {}
    per_class = torch.as_tensor(per_class, dtype=torch.float32).reshape(-1)
    out = {f"{stage}/dice_{k}": float(v) for k, v in enumerate(per_class) if torch.isfinite(v)}
    fg = per_class[1:]
    fg = fg[torch.isfinite(fg)]
    if fg.numel():
        out[f"{stage}/dice"] = float(fg.mean())
    return out


# ---------------------------------------------------------------------- fine-tuning
class UNETRFinetuneTask(FinetuneTask):
    """:class:`maecore.tasks.finetune.FinetuneTask` for segmentation with a :class:`UNETRHead`:
    DiceCELoss, layer-wise LR decay on the encoder (the whole decoder at the top rate), the core's
    mIoU / pixel accuracy plus MONAI Dice per class in ``train/`` and ``val/``."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, n_classes: int, feature_size: int = 16,
                 layer_decay: float = 0.75, freeze_encoder: bool = False, train_dataset: Dataset | None = None,
                 val_dataset: Dataset | None = None) -> None:
        self.__dict__["_feature_size"] = int(feature_size)
        super().__init__(model, cfg, "segmentation", n_classes, layer_decay, freeze_encoder, "mask", -100, None,
                         train_dataset, val_dataset)

    def configure_models(self) -> None:
        super().configure_models()  # the backbone, decoder frozen (and a linear head, replaced here)
        self.head = make_unetr_head(self.model, self.n_classes, self.__dict__["_feature_size"])

    def configure_metrics(self) -> None:
        super().configure_metrics()
        self.__dict__["dice"] = {"train": dice_metric(), "val": dice_metric()}

    def forward(self, batch: dict[str, Any]) -> Tensor:
        return segment_logits(self.model, self.head, batch)

    def _step(self, batch: dict[str, Any], metrics: nn.ModuleDict, stage: str) -> Tensor:
        y = batch["mask"]
        out = self(batch)
        loss = self.head.loss(out, y)
        for m in metrics.values():
            m.update(out.detach().float(), y.long())
        update_dice(self.__dict__["dice"][stage], out, y)
        train = stage == "train"
        self.log(f"{stage}/loss", loss.detach(), prog_bar=True, batch_size=int(y.shape[0]),
                 on_step=train, on_epoch=not train, sync_dist=not train)
        return loss

    def _log_metrics(self, metrics: nn.ModuleDict, stage: str) -> None:
        super()._log_metrics(metrics, stage)
        dice = self.__dict__["dice"][stage]
        values = dice_values(dice, stage)
        dice.reset()
        if values:
            self.log_dict(values)


def run_unetr_finetune(
    model: nn.Module,
    train_dataset: Dataset,
    val_dataset: Dataset | None,
    run_dir: str | os.PathLike[str],
    cfg: TrainConfig,
    n_classes: int,
    feature_size: int = 16,
    layer_decay: float = 0.75,
    freeze_encoder: bool = False,
    class_names: Sequence[str] | None = None,
    resume: str | None = None,
    callbacks: Sequence[Callback] = (),
    logger: bool = True,
) -> dict[str, Any]:
    """Fine-tune ``model`` with a UNETR head (as :func:`maecore.tasks.finetune.run_finetune`):
    metrics in ``RUN/metrics.csv``, validation once at the end, export to ``RUN/export`` (load it
    with :func:`load_segmenter`). The summary holds the final ``val/dice`` and ``val/dice_<k>``."""
    def make_task() -> UNETRFinetuneTask:
        return UNETRFinetuneTask(model, cfg, n_classes, feature_size, layer_decay, freeze_encoder, train_dataset,
                                 val_dataset)

    summary = fit_finetune(make_task, run_dir, cfg, class_names, resume, callbacks, logger)
    dice = {k.split("dice_", 1)[1]: v for k, v in summary.items() if k.startswith("val/dice_")}
    return {"task": "segmentation", "seg_head": "unetr", **summary, "val_dice_per_class": dice or None}


# ---------------------------------------------------------------------- the fine-tuned export
class Segmenter(nn.Module):
    """A loaded UNETR fine-tune: ``model(batch)`` -> logits ``[B, K, *S]``; :meth:`predict` -> label map."""

    def __init__(self, backbone: nn.Module, head: UNETRHead, info: dict[str, Any]) -> None:
        super().__init__()
        self.backbone, self.head, self.info = backbone, head, info
        self.task = "segmentation"
        self.class_names = info.get("class_names")

    def forward(self, batch: dict[str, Any]) -> Tensor:
        return segment_logits(self.backbone, self.head, batch)

    @torch.no_grad()
    def predict(self, batch: dict[str, Any]) -> Tensor:
        return self(batch).argmax(1)


def load_segmenter(directory: str | os.PathLike[str], map_location: str = "cpu") -> nn.Module:
    """A fine-tuned medmae export, offline: a :class:`Segmenter` for a UNETR head, else the core's
    :func:`~maecore.tasks.finetune.load_finetuned` (linear segmentation head, classification)."""
    d = Path(directory)
    cfg_path = d / HEAD_CONFIG
    if not cfg_path.is_file() or not (d / HEAD_WEIGHTS).is_file():
        return load_finetuned(d, map_location)  # raises its DataError naming the missing file
    try:
        info = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(cfg_path, "valid JSON", f"a parse error ({err})") from err
    if not isinstance(info, dict) or not isinstance(info.get("head"), dict) or info["head"].get("type") != "unetr":
        return load_finetuned(d, map_location)
    backbone = load_pretrained(d, map_location)
    head = UNETRHead.from_config(info["head"])
    try:
        load_model(head, str(d / HEAD_WEIGHTS), device=map_location)
    except Exception as err:
        raise DataError(d / HEAD_WEIGHTS, f"the weights of the UNETR head described in {HEAD_CONFIG}",
                        f"{type(err).__name__}: {str(err).splitlines()[0]}") from err
    return Segmenter(backbone, head, info).eval()


# ---------------------------------------------------------------------- whole volumes
@torch.no_grad()
def segment_case(segmenter: nn.Module, case_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None,
                 have: Sequence[str] | None = None, overlap: float = 0.5, sw_batch_size: int = 4) -> dict[str, Any]:
    """Label map of a whole case on the case's own grid (same shape and affine as its images).

    The case is preprocessed as in training (RAS, the model's spacing, brain crop, z-scores); MONAI
    ``sliding_window_inference`` with the training crop as window (Gaussian blending of softmax
    probabilities) gives the classes, which are resampled (nearest) back onto the first input
    file's grid; voxels outside the crop are background. With ``out`` the map is written as uint8
    NIfTI with the input's header geometry. When the case holds a label volume, the Dice per class
    against it is returned too.
    """
    from medmae.cases import read_label_volume, scan_case_folder
    from medmae.io import write_volume
    from medmae.synthesis import model_data_config, prepare_case, resample_to_reference

    dc = model_data_config(segmenter.backbone)
    mods = list(segmenter.backbone.tokenizer.group_names)
    case = scan_case_folder(case_dir, mods, dc.modality_map)
    use = [m for m in mods if m in case.files and (not have or m in have)]
    if not use:
        raise DataError(case.source, f"at least one of the modalities {list(have or mods)}",
                        f"only {sorted(case.files)}")
    prepared = prepare_case(case, dc, use)
    labels = segment_array(segmenter, prepared.image, prepared.group_pad, dc.roi_size, overlap, sw_batch_size)
    labels = labels.numpy().astype(np.float32)
    volume = np.rint(resample_to_reference(labels, prepared.affine, prepared.reference, order=0)).astype(np.uint8)
    summary: dict[str, Any] = {"shape": list(volume.shape), "reference": prepared.reference.path, "used": use,
                               "voxels_per_class": np.bincount(volume.ravel(), minlength=segmenter.head.n_classes
                                                               ).tolist()}
    if out is not None:
        write_volume(volume, prepared.reference, out, dtype=np.uint8, description="medmae segmentation")
        summary["out"] = str(out)
    if case.seg is not None:
        truth = read_label_volume(case)
        k = segmenter.head.n_classes
        metric = dice_metric()
        update_dice_labels(metric, torch.from_numpy(volume.astype(np.int64))[None], torch.from_numpy(
            np.rint(truth.data).astype(np.int64))[None], k)
        summary["dice"] = {key.split("dice_", 1)[1] if "dice_" in key else "mean_foreground": v
                           for key, v in dice_values(metric, "case").items()}
    return {**summary, "volume": volume}


@torch.no_grad()
def segment_array(segmenter: nn.Module, image: Tensor, group_pad: Tensor, roi_size: Sequence[int],
                  overlap: float = 0.5, sw_batch_size: int = 4) -> Tensor:
    """Classes ``[*S]`` of a preprocessed volume ``image [G, *S]`` (``group_pad [G]``: absent
    modalities), by MONAI ``sliding_window_inference`` (Gaussian-blended softmax) with ``roi_size``
    windows. ``segmenter(batch)`` must give logits ``[B, K, *roi]`` (a :class:`Segmenter` or the
    core's linear-head ``FinetunedModel``)."""
    device = next(segmenter.parameters()).device
    pad = torch.as_tensor(group_pad).bool().to(device)

    def predictor(win: Tensor) -> Tensor:
        return segmenter({"x": win, "group_pad": pad.expand(win.shape[0], -1)}).float().softmax(1)

    x = torch.as_tensor(image).float()[None].to(device)
    prob = sliding_window_inference(x, list(roi_size), sw_batch_size, predictor, overlap=overlap, mode="gaussian")
    prob = prob.as_tensor() if isinstance(prob, MetaTensor) else prob
    return prob[0].argmax(0).cpu()


def update_dice_labels(metric: DiceMetric, pred: Tensor, y: Tensor, k: int) -> None:
    """Accumulate Dice of label maps ``pred, y [B, *S]`` with ``k`` classes."""
    metric(F.one_hot(pred.long().clamp(0, k - 1), k).movedim(-1, 1),
           F.one_hot(y.long().clamp(0, k - 1), k).movedim(-1, 1))


# ---------------------------------------------------------------------- a label from the data itself
def flair_hyperintense_label(case_dir: str | os.PathLike[str], percentile: float = 97.0, opening: int = 1,
                             out: str | os.PathLike[str] | None = None) -> Path:
    """Write a label volume derived from the case's own FLAIR image (NOT an expert segmentation).

    Label 1 ("FLAIR-hyperintense region"): voxels above the ``percentile``-th percentile of the
    FLAIR intensities within the brain (non-zero voxels of any modality), cleaned by a morphological
    opening with a ``(2 * opening + 1)^3`` cube (scipy); label 0: everything else. Written as uint8
    NIfTI on the FLAIR grid, by default as ``<case>_seg.nii.gz`` in the case folder, which the
    dataset code reads as the case's label volume. For tests and demos of segmentation only.
    """
    from scipy import ndimage

    from medmae.cases import read_case, scan_case_folder
    from medmae.io import write_volume

    case = scan_case_folder(case_dir)
    if "flair" not in case.files:
        raise DataError(case.source, "a FLAIR image (flair/fla/t2f) to derive the label from",
                        f"only {sorted(case.files)}")
    vols = read_case(case)
    flair = vols["flair"]
    brain = np.any([v.data != 0 for v in vols.values()], axis=0)
    if not brain.any():
        raise DataError(flair.path, "non-zero brain voxels", "an all-zero case")
    region = (flair.data > np.percentile(flair.data[brain], percentile)) & brain
    if opening > 0:
        region = ndimage.binary_opening(region, structure=np.ones((2 * opening + 1,) * 3, bool))
    path = Path(out) if out is not None else Path(case_dir) / f"{case.case_id}_seg.nii.gz"
    write_volume(region.astype(np.uint8), flair, path, dtype=np.uint8,
                 description=f"FLAIR > p{percentile:g} in brain, opened; not expert")
    return path


__all__ = [
    "SEG_HEADS",
    "Segmenter",
    "UNETRFinetuneTask",
    "UNETRHead",
    "dice_metric",
    "flair_hyperintense_label",
    "encoder_hidden_states",
    "fuse_groups",
    "hidden_layers",
    "load_segmenter",
    "make_unetr_head",
    "run_unetr_finetune",
    "segment_array",
    "segment_case",
    "update_dice_labels",
    "segment_logits",
]
