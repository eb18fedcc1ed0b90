"""Preprocessing (resample, root-centre, body-size scale, view normalisation, fixed-length clips)
and the clip datasets.

A clip sample is::

    {"x": float32 [T, V, C]   normalised joint coordinates (0 where missing),
     "valid": bool [T, V]     measured joints; False on missing joints and on padding frames,
     "origin": float64 [C], "scale": float64 [], "rotation": float64 [C, C]   the inverse map:
                              input units = (x * scale) @ rotation.T + origin,
     "seq": int, "start": int (first frame of the clip in the resampled sequence), "index": int}

plus ``label`` when labels are given. Clips shorter than ``T`` are padded with frames marked
invalid: padding tokens, never repeated frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from maecore.errors import DataError, read_all
from maecore.paths import expand_paths, labels_from_csv
from skelmae.io import EXTS, read_sequences
from skelmae.topology import Topology


def sample_dir() -> Path:
    return Path(str(resources.files("skelmae").joinpath("sample")))


def sample_labels() -> Path:
    return sample_dir() / "labels.csv"


def expand(data: str | None) -> list[Path]:
    """Files of a path, folder (recursive) or glob; ``None`` = the bundled CMU sample."""
    default = sorted((sample_dir() / "cmu_mb2010").glob("*.bvh")) if data is None else []
    return expand_paths(data, EXTS, default, "skeleton files")


# ---------------------------------------------------------------------------- preprocessing
def resample(positions: np.ndarray, valid: np.ndarray, fps_in: float, fps_out: float) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation in time to ``fps_out``: ``[T, V, C], [T, V] -> [T', V, C], [T', V]``.
    A new frame is valid where both source frames around it are."""
    if fps_out <= 0:
        raise ValueError(f"fps must be > 0, got {fps_out}")
    t = positions.shape[0]
    if abs(fps_in - fps_out) < 1e-6 or t == 1:
        return positions.copy(), valid.copy()
    times = np.arange(0.0, (t - 1) / fps_in + 1e-9, 1.0 / fps_out) * fps_in  # in source frames
    lo = np.clip(np.floor(times + 1e-6).astype(int), 0, t - 1)
    hi = np.minimum(lo + 1, t - 1)
    w = np.clip(times - lo, 0, 1)[:, None, None]
    w = np.where(w < 1e-6, 0.0, w)
    pos = np.nan_to_num(positions)
    out = pos[lo] * (1 - w) + pos[hi] * w
    ok = valid[lo] & (valid[hi] | (w[..., 0] == 0))
    return np.where(ok[..., None], out, np.nan), ok


def body_size(positions: np.ndarray, valid: np.ndarray) -> float:
    """Median over frames of the RMS distance of the measured joints to their centroid (about
    0.4 of a standing adult's height); rotation-invariant and topology-agnostic."""
    sizes = []
    for p, v in zip(positions, valid):
        if v.sum() >= 2:
            q = p[v]
            sizes.append(np.sqrt(((q - q.mean(0)) ** 2).sum(-1).mean()))
    size = float(np.median(sizes)) if sizes else 0.0
    return size if size > 1e-8 else 1.0


def view_rotation(positions: np.ndarray, valid: np.ndarray, topo: Topology, up: int = 1) -> np.ndarray:
    """``[C, C]`` rotation about the ``up`` axis turning the first frame's left-to-right leg vector
    onto +x (identity when the legs are not found or not measured)."""
    c = positions.shape[-1]
    rot = np.eye(c)
    if c != 3 or "left_leg" not in topo.parts or "right_leg" not in topo.parts:
        return rot
    left = [topo.index(j) for j in topo.parts["left_leg"]]
    right = [topo.index(j) for j in topo.parts["right_leg"]]
    ok = valid[:, left].all(1) & valid[:, right].all(1)
    if not ok.any():
        return rot
    f = int(np.argmax(ok))
    d = positions[f, right].mean(0) - positions[f, left].mean(0)
    a, b = [i for i in range(3) if i != up]
    ang = np.arctan2(d[b], d[a])
    cs, sn = np.cos(ang), np.sin(ang)
    rot[a, a], rot[a, b], rot[b, a], rot[b, b] = cs, -sn, sn, cs  # d @ rot = (|d|, 0) in the (a, b) plane
    return rot


def normalise_clip(
    positions: np.ndarray, valid: np.ndarray, root: Sequence[int], scale: float, rotation: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Root-centre on the first frame where the root joints are measured, rotate, scale:
    ``x = ((p - origin) @ rotation) / scale``; returns ``(x, origin)``."""
    c = positions.shape[-1]
    rot = np.eye(c) if rotation is None else rotation
    ok = valid[:, list(root)].all(1)
    f = int(np.argmax(ok)) if ok.any() else int(np.argmax(valid.any(1)))
    origin = positions[f, list(root)].mean(0) if ok.any() else np.nanmean(positions[f][valid[f]], 0)
    x = (np.nan_to_num(positions - origin) @ rot) / scale
    return np.where(valid[..., None], x, 0.0), origin


def unnormalise(x: np.ndarray, origin: np.ndarray, scale: float, rotation: np.ndarray) -> np.ndarray:
    """Back to the input's units and frame: ``(x * scale) @ rotation.T + origin`` (``[..., C]``)."""
    return (np.asarray(x, dtype=np.float64) * float(scale)) @ np.asarray(rotation).T + np.asarray(origin)


def windows(n_frames: int, length: int, stride: int) -> list[int]:
    """Start frames of fixed-length windows covering a sequence (one padded window when short)."""
    if length < 1 or stride < 1:
        raise ValueError(f"clip length and stride must be >= 1, got {length}, {stride}")
    if n_frames <= length:
        return [0]
    starts = list(range(0, n_frames - length + 1, stride))
    if starts[-1] + length < n_frames:
        starts.append(n_frames - length)
    return starts


def prepare_motion(motion: dict[str, Any], fps: float, view_normalise: bool = False) -> dict[str, Any]:
    """Resampled to ``fps`` with its body size (and view rotation) computed over the whole sequence."""
    pos, valid = resample(motion["positions"], motion["valid"], motion["fps"], fps)
    if not valid.any():
        raise DataError(motion["path"], "measured joints after resampling", "none")
    topo = motion["topology"]
    rot = view_rotation(pos, valid, topo) if view_normalise else np.eye(pos.shape[-1])
    return {
        **motion,
        "positions": pos,
        "valid": valid,
        "fps": fps,
        "source_fps": motion["fps"],
        "scale": body_size(pos, valid),
        "rotation": rot,
    }


def clip_of(seq: dict[str, Any], start: int, length: int) -> dict[str, Any]:
    """One fixed-length normalised clip of a prepared sequence, padded with invalid frames."""
    pos, valid = seq["positions"][start : start + length], seq["valid"][start : start + length]
    x, origin = normalise_clip(pos, valid, seq["topology"].root_ids(), seq["scale"], seq["rotation"])
    pad = length - len(x)
    if pad > 0:
        x = np.concatenate([x, np.zeros((pad, *x.shape[1:]))])
        valid = np.concatenate([valid, np.zeros((pad, valid.shape[1]), dtype=bool)])
    return {
        "x": torch.from_numpy(x.astype(np.float32)),
        "valid": torch.from_numpy(valid),
        "origin": torch.from_numpy(origin.astype(np.float64)),
        "scale": torch.tensor(seq["scale"], dtype=torch.float64),
        "rotation": torch.from_numpy(seq["rotation"].astype(np.float64)),
        "start": torch.tensor(start),
    }


def load_sequences(files: Sequence[Path], cfg_data: dict[str, Any], skip_bad: bool = False) -> list[dict[str, Any]]:
    """Read and prepare every sequence; bad files are reported together (or skipped, and listed)."""
    def sequences(f: Path) -> list[dict[str, Any]]:  # a pyskl file may hold several
        return [prepare_motion(m, float(cfg_data["fps"]), bool(cfg_data.get("view_normalise", False)))
                for m in read_sequences(f, cfg_data.get("topology"), cfg_data.get("source_fps"),
                                        bool(cfg_data.get("allow_unsafe_pickle", False)))]

    good = [seq for per_file in read_all(files, sequences, skip_bad) for seq in per_file]
    if not good:
        raise DataError(None, "at least one sequence", "none in the readable files")
    joints = {s["topology"].joint_names for s in good}
    if len(joints) > 1:
        raise DataError(None, "one joint layout across the dataset", f"{len(joints)} different topologies")
    return good


def labels_for(seqs: Sequence[dict[str, Any]], labels_csv: str | None) -> list[str]:
    """A label per sequence from a CSV (columns ``file,label``, file relative to the CSV, absolute,
    or a bare file name), else from the sequence itself (pyskl annotations)."""
    if labels_csv is None:
        missing = [s["path"] for s in seqs if s.get("label") is None]
        if missing:
            raise DataError(missing[0], "a label (give a labels CSV with columns file,label)", "none")
        return [str(s["label"]) for s in seqs]
    return labels_from_csv([s["path"] for s in seqs], labels_csv)


class SkeletonClips(Dataset):
    """Fixed-length clips of prepared sequences: windows of ``length`` frames every ``stride``.
    With ``jitter`` each window start moves by up to ``stride - 1`` frames (seeded by the loader)."""

    def __init__(
        self,
        seqs: list[dict[str, Any]],
        length: int,
        stride: int,
        jitter: bool = False,
        labels: list[int] | None = None,
    ) -> None:
        self.seqs, self.length, self.stride, self.jitter = seqs, length, stride, jitter
        self.items = [(i, s) for i, q in enumerate(seqs) for s in windows(len(q["positions"]), length, stride)]
        self.labels = labels  # per sequence
        self.topology: Topology = seqs[0]["topology"]

    @property
    def groups(self) -> list[str]:
        """The sequence (file and name) of each clip, for leave-one-sequence-out probes."""
        return [f"{self.seqs[i]['path']}::{self.seqs[i]['name']}" for i, _ in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> dict[str, Any]:
        i, start = self.items[k]
        n = len(self.seqs[i]["positions"])
        if self.jitter and n > self.length:
            start = min(start + int(np.random.randint(0, self.stride)), n - self.length)
        out = clip_of(self.seqs[i], start, self.length)
        out.update(seq=torch.tensor(i), index=torch.tensor(k))
        if self.labels is not None:
            out["label"] = torch.tensor(self.labels[i])
        return out
