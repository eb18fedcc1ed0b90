"""Masked reconstruction of point clouds, scored beside the non-learned baseline it has to beat.

Library functions the CLI (``mae3d reconstruct``), the run figure and the benchmark call. The
model's tokenizer groups a cloud into patches (FPS centres, kNN neighbours, coordinates relative to
the centre); the model hides some and predicts them from the rest. Both the model and the baseline
(:func:`nearest_visible_fill`) are scored by :func:`masked_chamfer_l2` on the same masked patches:
Chamfer-L2 (Point-MAE's loss) per masked patch, averaged over the masked patches of each cloud.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mae3d.figures import plot_cloud_reconstruction
from mae3d.io import read_points, write_ply
from maecore.losses import masked_chamfer

BASELINE_METHOD = ("nearest visible patch: each masked patch is a copy of the visible patch whose centre is "
                   "nearest, moved onto the masked centre")
CHAMFER = ("Chamfer-L2 (squared distances, unit-sphere frame) of each masked patch, averaged over the masked "
           "patches; lower is better")
VISIBLE_RGB, PREDICTED_RGB = (150, 150, 150, 255), (220, 40, 40, 255)


def _check_patches(patches: Tensor, hidden: Tensor, name: str = "patches") -> None:
    if patches.dim() != 4 or patches.shape[-1] != 3:
        raise ValueError(f"{name} must be [B, G, k, 3], got {list(patches.shape)}")
    if hidden.dtype != torch.bool or hidden.shape != patches.shape[:2]:
        raise ValueError(f"hidden must be a bool mask [B, G] = {list(patches.shape[:2])}, "
                         f"got {hidden.dtype} {list(hidden.shape)}")


def nearest_visible_fill(centres: Tensor, patches: Tensor, hidden: Tensor) -> Tensor:
    """The non-learned baseline: fill each masked patch with the points of the visible patch whose
    centre is nearest to its own centre, so a filled patch is a translated copy of a visible one.

    ``centres [B, G, 3]``, ``patches [B, G, k, 3]`` relative to their centres (the tokenizer's
    ``group``), ``hidden [B, G]`` (True = masked) -> ``[B, G, k, 3]`` relative to the centres:
    masked rows are copies of visible rows, visible rows are returned unchanged. Every cloud needs
    at least one visible patch.
    """
    _check_patches(patches, hidden)
    if centres.shape != (*patches.shape[:2], 3):
        raise ValueError(f"centres must be [B, G, 3] = {[*patches.shape[:2], 3]}, got {list(centres.shape)}")
    starved = (~(~hidden).any(1)).nonzero().flatten()
    if len(starved):
        raise ValueError(f"cloud {int(starved[0])} has no visible patch to copy; the nearest-visible-patch "
                         f"baseline needs at least one")
    filled = patches.clone()
    for b in range(len(patches)):
        hid, vis = hidden[b], ~hidden[b]
        if not bool(hid.any()):
            continue
        # exact distances: matrix-multiply round-off could break near ties differently on other machines
        nearest = torch.cdist(centres[b][hid], centres[b][vis], compute_mode="donot_use_mm_for_euclid_dist")
        filled[b][hid] = patches[b][vis][nearest.argmin(1)]
    return filled


def masked_chamfer_l2(pred: Tensor, target: Tensor, hidden: Tensor) -> Tensor:
    """Per cloud, the mean over its masked patches of Chamfer-L2 between predicted and true points.

    ``pred, target [B, G, k, 3]``, ``hidden [B, G]`` (True = masked) -> ``[B]``: the model's own
    training loss (:func:`maecore.losses.masked_chamfer`, ``mean_i min_j |p_i - t_j|^2 + mean_j
    min_i |p_i - t_j|^2`` per patch) taken cloud by cloud. Every cloud needs at least one masked patch.
    """
    _check_patches(target, hidden, "target")
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {list(pred.shape)} and {list(target.shape)}")
    empty = (~hidden.any(1)).nonzero().flatten()
    if len(empty):
        raise ValueError(f"cloud {int(empty[0])} has no masked patch to score (a mask ratio of 0 hides none); "
                         f"a masked Chamfer needs at least one")
    pred, target, weight = pred.flatten(-2), target.flatten(-2), hidden.to(pred.dtype)  # tokens: [B, G, 3k]
    return torch.stack([masked_chamfer(pred[b : b + 1], target[b : b + 1], weight[b : b + 1])
                        for b in range(len(weight))])


@torch.no_grad()
def reconstruct_clouds(model: nn.Module, batch: dict[str, Any], seed: int = 0) -> dict[str, Tensor]:
    """One masked forward pass of a Point-MAE model on ``batch["points"] [B, N, 3]`` (normalised
    clouds), with the baseline filled and both scored on the same masked patches.

    Returns ``centres [B, G, 3]``; ``patches`` (true), ``pred`` (the model's) and ``baseline``
    (:func:`nearest_visible_fill`), each ``[B, G, k, 3]`` relative to the centres; ``hidden [B, G]``
    (True = masked, drawn from ``seed``); ``masked_chamfer`` and ``baseline_masked_chamfer [B]``.
    """
    was_training = model.training
    model.eval()
    out = model(batch, generator=torch.Generator(device=batch["points"].device).manual_seed(seed))
    model.train(was_training)
    centres, patches = model.tokenizer.group(batch)
    hidden = out.mask.bool()
    pred = out.pred.float().unflatten(-1, (-1, 3))  # the targets' layout: each patch's relative points, flat
    baseline = nearest_visible_fill(centres, patches, hidden)
    return {"centres": centres, "patches": patches, "pred": pred, "baseline": baseline, "hidden": hidden,
            "masked_chamfer": masked_chamfer_l2(pred, patches, hidden),
            "baseline_masked_chamfer": masked_chamfer_l2(baseline, patches, hidden)}


def cloud_parts(result: dict[str, Tensor], i: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(visible [V, 3], predicted [P, 3])`` points of cloud ``i`` of :func:`reconstruct_clouds`,
    in the normalised frame."""
    hidden, centres = result["hidden"][i], result["centres"][i][:, None]
    visible = (result["patches"][i] + centres)[~hidden].reshape(-1, 3)
    predicted = (result["pred"][i] + centres)[hidden].reshape(-1, 3)
    return visible.cpu().numpy(), predicted.cpu().numpy()


def reconstruct_points_file(
    model: nn.Module, path: str | Path, out: str | Path, seed: int = 0, plot: str | Path | None = None
) -> dict[str, Any]:
    """Mask and reconstruct one mesh or point file; write visible (grey) and predicted (red) points
    as a PLY in the input's frame. Returns a summary with the model's ``masked_chamfer`` and, on
    the same masked patches, ``baseline_masked_chamfer`` of ``baseline_method``."""
    meta = getattr(model, "meta", {}) or {}
    cloud = read_points(path, int(meta.get("n_points", 1024)))
    result = reconstruct_clouds(model, {"points": torch.from_numpy(cloud["points"])[None]}, seed)
    visible, predicted = cloud_parts(result)
    back = lambda p: p * cloud["scale"] + cloud["center"]  # noqa: E731  (input frame)
    colors = np.array([VISIBLE_RGB] * len(visible) + [PREDICTED_RGB] * len(predicted), dtype=np.uint8)
    write_ply(out, np.concatenate([back(visible), back(predicted)]), colors)
    summary = {"out": str(out), "visible_points": len(visible), "predicted_points": len(predicted),
               "colors": "grey = visible (input), red = predicted",
               "masked_patches": int(result["hidden"][0].sum()),
               "masked_chamfer": float(result["masked_chamfer"][0]),
               "baseline_masked_chamfer": float(result["baseline_masked_chamfer"][0]),
               "baseline_method": BASELINE_METHOD, "chamfer": CHAMFER}
    if plot:
        summary["plot"] = str(plot_cloud_reconstruction(cloud["points"], visible, predicted, plot))
    return summary
