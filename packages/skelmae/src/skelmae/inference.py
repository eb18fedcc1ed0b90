"""Apply a pretrained model to whole sequences: masked reconstruction back in the input's units and
frame rate, scored against a non-learned baseline, and one embedding per sequence. Library functions
the CLI and notebooks call."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from maecore.errors import DataError
from maecore.tasks.data import collate_dict
from skelmae.data import clip_of, prepare_motion, unnormalise

BASELINE_METHOD = (
    "linear interpolation in time of each hidden joint from its seen frames of the same clip "
    "(held at the clip's ends; a joint seen in no frame takes the frame's seen-joint centroid)"
)
MM_PER_UNIT = {"metres": 1000.0}  # the ``units`` a reader names whose scale to millimetres is known


def model_settings(model: nn.Module) -> dict[str, Any]:
    """Frame rate, clip length and view normalisation the model was pretrained with (``meta``)."""
    meta = getattr(model, "meta", {}) or {}
    return {
        "fps": float(meta.get("fps", 30.0)),
        "clip_len": int(meta.get("clip_len", 32)),
        "view_normalise": bool(meta.get("view_normalise", False)),
    }


def check_joints(model: nn.Module, motion: dict[str, Any]) -> None:
    tok = model.tokenizer
    v, c = motion["positions"].shape[1:]
    if v != tok.n_joints or c != tok.channels:
        raise DataError(
            motion["path"],
            f"{tok.n_joints} joints x {tok.channels} channels (the model's topology)",
            f"{v} joints x {c} channels ({motion['topology'].name})",
        )


def sequence_clips(model: nn.Module, motion: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The prepared sequence and its non-overlapping clips (the last one padded), so that the
    clips laid end to end are the sequence frame by frame."""
    check_joints(model, motion)
    s = model_settings(model)
    seq = prepare_motion(motion, s["fps"], s["view_normalise"])
    clips = [clip_of(seq, start, s["clip_len"]) for start in range(0, len(seq["positions"]), s["clip_len"])]
    return seq, clips


def interpolate_hidden(x: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """The non-learned baseline a masked reconstruction has to beat: ``x [T, V, C], seen [T, V] ->
    [T, V, C]``, each joint's unseen frames linearly interpolated in time from its seen frames
    (``np.interp`` along each joint's track: held at the first / last seen value before / after
    them). A joint seen in no frame takes, in each frame, the centroid of that frame's seen joints,
    and ``0.0`` in a frame with no seen joint at all. Seen entries are returned unchanged and unseen
    ones of ``x`` are never read (they may be NaN)."""
    x, seen = np.asarray(x), np.asarray(seen, dtype=bool)
    if x.ndim != 3 or seen.shape != x.shape[:2]:
        raise ValueError(f"interpolate_hidden takes x [T, V, C] and seen [T, V], got {x.shape} and {seen.shape}")
    out = x.copy()
    n = len(x)
    t = np.arange(n)[:, None]
    tracked = seen.any(0)  # [V]
    if tracked.any():
        s = seen[:, tracked]
        # the seen frames around each frame, at or before (lo) and at or after (hi) it, held at the ends
        lo = np.maximum.accumulate(np.where(s, t, -1), axis=0)
        hi = np.minimum.accumulate(np.where(s, t, n)[::-1], axis=0)[::-1]
        lo, hi = np.where(lo < 0, hi, lo), np.where(hi >= n, lo, hi)
        joint = np.arange(s.shape[1])
        y = x[:, tracked].astype(np.float64)
        y0, y1 = y[lo, joint], y[hi, joint]
        gap = (hi - lo)[..., None].astype(np.float64)
        slope = (y1 - y0) / np.maximum(gap, 1.0)
        out[:, tracked] = np.where(gap > 0, slope * (t - lo)[..., None] + y0, y0)  # np.interp's arithmetic
    if not tracked.all():
        for f in range(n):
            out[f, ~tracked] = x[f][seen[f]].mean(0) if seen[f].any() else 0.0
    return out


def mpjpe(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float | None:
    """Mean per-joint position error over the joints ``mask`` marks: the mean Euclidean distance
    ``[T, V, C], [T, V, C], [T, V] -> float`` in the inputs' units; None when ``mask`` marks none."""
    if not mask.any():
        return None
    return float(np.linalg.norm(pred[mask] - truth[mask], axis=-1).mean())


def mm_scale(units: str, mm_per_unit: float | None = None) -> float | None:
    """Millimetres per unit of the input: ``mm_per_unit`` when given (a positive number), else
    known from the reader's ``units`` (:data:`MM_PER_UNIT`), else None."""
    if mm_per_unit is None:
        return MM_PER_UNIT.get(units)
    if not (np.isfinite(mm_per_unit) and mm_per_unit > 0):
        raise ValueError(f"mm_per_unit must be a positive number of millimetres per {units!r} unit, got {mm_per_unit}")
    return float(mm_per_unit)


@torch.no_grad()
def reconstruct_clips(model: nn.Module, batch: dict[str, Any], seed: int = 0) -> dict[str, torch.Tensor]:
    """One masked forward pass: ``pred [B, T, V, C]`` and ``hidden [B, T, V]`` (real joints the
    model did not see), ``recon`` (prediction where hidden, input elsewhere)."""
    was = model.training
    model.eval()
    out = model(batch, generator=torch.Generator().manual_seed(seed))
    model.train(was)
    tok = model.tokenizer
    pred = tok.untokenize(out.pred.float(), batch)
    hidden = tok.token_to_frames(out.mask & ~out.pad, batch) & batch["valid"].bool()
    recon = torch.where(hidden[..., None], pred, batch["x"])
    return {"pred": pred, "hidden": hidden, "recon": recon, "loss": out.loss}


def _to_input_rate(
    values: np.ndarray, fps_model: float, fps_in: float, n_in: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices and weights to sample model-rate frames at the input's frame times."""
    f = np.arange(n_in) / fps_in * fps_model
    lo = np.clip(np.floor(f + 1e-6).astype(int), 0, len(values) - 1)
    hi = np.minimum(lo + 1, len(values) - 1)
    w = np.clip(f - lo, 0, 1)
    return lo, hi, np.where(w < 1e-6, 0.0, w)


def _unclip(values: np.ndarray, clips: list[dict[str, Any]], n: int) -> np.ndarray:
    """Normalised clips ``[B, T, V, C]`` laid end to end, back in the input's units: ``[n, V, C]``."""
    return np.concatenate(
        [
            unnormalise(values[i], c["origin"].numpy(), float(c["scale"]), c["rotation"].numpy())
            for i, c in enumerate(clips)
        ]
    )[:n]


def _scores(
    positions: np.ndarray, baseline: np.ndarray, truth: np.ndarray, mask: np.ndarray, mm: float | None
) -> dict[str, Any]:
    """The model's and the baseline's masked-joint errors on the same joints (and in mm when known)."""
    out: dict[str, Any] = {
        "masked_mpjpe": mpjpe(positions, truth, mask),
        "baseline_masked_mpjpe": mpjpe(baseline, truth, mask),
        "baseline_method": BASELINE_METHOD,
        "scored_joints": int(mask.sum()),
    }
    if mm is not None:
        for key in ("masked_mpjpe", "baseline_masked_mpjpe"):
            out[f"{key}_mm"] = None if out[key] is None else out[key] * mm
        out["mm_per_unit"] = mm
    return out


def reconstruct_motion(
    model: nn.Module, motion: dict[str, Any], seed: int = 0, mm_per_unit: float | None = None
) -> dict[str, Any]:
    """Mask a whole sequence clip by clip with the model's strategy and predict the hidden joints.

    Returns ``positions [T, V, C]`` (input where visible, prediction where hidden, NaN where the
    input is missing), ``input [T, V, C]``, ``mask [T, V]`` (True = hidden and predicted), all at
    the input's frame rate and in its units, with ``joint_names``, ``edges``, ``fps`` and ``units``.

    The hidden joints are also filled by the non-learned baseline (:func:`interpolate_hidden` on
    each clip's seen joints, the model's input, then taken to the input's frame rate the same way):
    ``baseline_positions [T, V, C]``, and both are scored on the same joints (``mask``):
    ``masked_mpjpe`` and ``baseline_masked_mpjpe`` (:func:`mpjpe`, input units; None when nothing is
    hidden), ``baseline_method``, ``scored_joints``, and, where the millimetres per unit are known
    (``mm_per_unit``, or from ``units``: :func:`mm_scale`), the same in mm (``*_mm``, ``mm_per_unit``).
    """
    mm = mm_scale(motion["units"], mm_per_unit)
    seq, clips = sequence_clips(model, motion)
    batch = collate_dict(clips)
    res = reconstruct_clips(model, batch, seed)
    hid, x = res["hidden"].numpy(), batch["x"].numpy()
    seen = batch["valid"].numpy() & ~hid
    guess = np.stack([np.where(hid[i, ..., None], interpolate_hidden(x[i], seen[i]), x[i]) for i in range(len(x))])
    n = len(seq["positions"])
    recon, base = _unclip(res["recon"].numpy(), clips, n), _unclip(guess, clips, n)
    lo, hi, w = _to_input_rate(recon, seq["fps"], motion["fps"], len(motion["positions"]))
    w = w[:, None, None]
    nearest = np.where(w[:, 0, 0] < 0.5, lo, hi)
    mask = hid.reshape(-1, hid.shape[-1])[:n][nearest] & motion["valid"]
    positions = np.where(mask[..., None], recon[lo] * (1 - w) + recon[hi] * w, motion["positions"])
    baseline = np.where(mask[..., None], base[lo] * (1 - w) + base[hi] * w, motion["positions"])
    topo = motion["topology"]
    return {
        "positions": positions,
        "input": motion["positions"],
        "mask": mask,
        "baseline_positions": baseline,
        **_scores(positions, baseline, motion["positions"], mask, mm),
        "fps": motion["fps"],
        "joint_names": list(topo.joint_names),
        "edges": topo.edge_array(),
        "units": motion["units"],
        "model_fps": seq["fps"],
        "clips": len(clips),
    }


@torch.no_grad()
def embed_motion(model: nn.Module, motion: dict[str, Any]) -> np.ndarray:
    """``[D]``: the mean of the encodings of the sequence's clips (weighted by real frames)."""
    _, clips = sequence_clips(model, motion)
    was = model.training
    model.eval()
    batch = collate_dict(clips)
    emb = model.encode(batch).float()
    model.train(was)
    w = batch["valid"].any(-1).float().sum(1, keepdim=True)
    return ((emb * w).sum(0) / w.sum().clamp(min=1)).numpy()
