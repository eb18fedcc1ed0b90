"""Apply a pretrained model to whole sequences: masked reconstruction back in the input's units and
frame rate, and one embedding per sequence. Library functions the CLI and notebooks call."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from maecore.errors import DataError
from maecore.tasks.data import collate_dict
from skelmae.data import clip_of, prepare_motion, unnormalise, windows


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
    """The prepared sequence and its non-overlapping clips (the last one padded)."""
    check_joints(model, motion)
    s = model_settings(model)
    seq = prepare_motion(motion, s["fps"], s["view_normalise"])
    clips = [
        clip_of(seq, start, s["clip_len"]) for start in windows(len(seq["positions"]), s["clip_len"], s["clip_len"])
    ]
    return seq, clips


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


def reconstruct_motion(model: nn.Module, motion: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """Mask a whole sequence clip by clip with the model's strategy and predict the hidden joints.

    Returns ``positions [T, V, C]`` (input where visible, prediction where hidden, NaN where the
    input is missing), ``input [T, V, C]``, ``mask [T, V]`` (True = hidden and predicted), all at
    the input's frame rate and in its units, with ``joint_names``, ``edges``, ``fps`` and ``units``.
    """
    seq, clips = sequence_clips(model, motion)
    res = reconstruct_clips(model, collate_dict(clips), seed)
    n = len(seq["positions"])
    recon = np.concatenate(
        [
            unnormalise(res["recon"][i].numpy(), c["origin"].numpy(), float(c["scale"]), c["rotation"].numpy())
            for i, c in enumerate(clips)
        ]
    )[:n]
    hidden = res["hidden"].reshape(-1, res["hidden"].shape[-1]).numpy()[:n]
    lo, hi, w = _to_input_rate(recon, seq["fps"], motion["fps"], len(motion["positions"]))
    at_input = recon[lo] * (1 - w[:, None, None]) + recon[hi] * w[:, None, None]
    nearest = np.where(w < 0.5, lo, hi)
    mask = hidden[nearest] & motion["valid"]
    positions = np.where(mask[..., None], at_input, motion["positions"])
    topo = motion["topology"]
    return {
        "positions": positions,
        "input": motion["positions"],
        "mask": mask,
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
