"""Library functions behind the CLI verbs (each usable from a notebook).

- :func:`check_dataset`: every bad case of a dataset with its reason, never stopping at the first;
- :func:`labelled_datasets`: train / validation datasets with class labels from a CSV manifest
  (or label volumes for segmentation);
- :func:`reconstruct_file`: synthesise a missing modality and write it on the input's grid;
- :func:`embed_cases`: one vector per case (and per modality) written to ``.npz``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from torch import nn

from maecore.atomic import atomic_path
from maecore.errors import DataError
from medmae.cases import Case, find_cases, read_label_volume, scan_case_folder, validate_case
from medmae.data import DataConfig, MRIDataset
from medmae.io import read_volume, same_grid, write_volume
from medmae.metrics import psnr, rescaled_baseline, ssim
from medmae.modalities import alias_table
from medmae.synthesis import embed_prepared, model_data_config, prepare_case, synthesise_case

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------- check
def check_dataset(path: str | os.PathLike[str], dc: DataConfig) -> tuple[int, list[DataError]]:
    """``(n_cases, errors)``: every case read in full (truncation, NaN, 4D, grids, names)."""
    try:
        cases, problems = find_cases(path, dc.modalities, dc.modality_map)
    except DataError as err:  # the dataset as a whole is unreadable (no such path, bad CSV header)
        return 1, [err]
    n_cases = len(cases) + len(problems)  # bad cases found while scanning count as cases
    for case in cases:
        try:
            validate_case(case)
        except DataError as err:
            problems.append(err)
    return n_cases, problems


# ---------------------------------------------------------------------- modality names
def resolve_modalities(names: str | Sequence[str] | None, modalities: Sequence[str],
                       modality_map: dict[str, str] | None = None) -> list[str]:
    """``"t1,t1c,fla"`` -> ``["t1", "t1ce", "flair"]`` through the alias table; unknown names raise."""
    if names is None:
        return []
    items = [n.strip() for n in names.split(",")] if isinstance(names, str) else [str(n).strip() for n in names]
    table = alias_table(modality_map)
    out = []
    for n in items:
        if not n:
            continue
        key = n.lower().replace("-", "").replace("_", "")
        m = table.get(key, key)
        if m not in modalities:
            raise ValueError(f"unknown modality name {n!r}; this model's modalities are {list(modalities)} "
                             f"(aliases: {', '.join(sorted(k for k, v in table.items() if v in modalities))})")
        if m not in out:
            out.append(m)
    return out


# ---------------------------------------------------------------------- labelled data
def labelled_cases(cases: Sequence[Case], column: str | None) -> tuple[list[Case], list[int], list[str]]:
    """Cases with a non-empty label in ``column`` (default: the first label column), their class
    ids and the sorted class names. Cases without a label are left out with a log line."""
    columns = sorted({k for c in cases for k in c.labels}, key=lambda k: list(cases[0].labels).index(k)
                     if k in cases[0].labels else 1_000)
    if not columns:
        raise DataError(None, "a CSV manifest with a label column (finetune/probe need labels)",
                        "no label column (only the case id and modality columns)")
    col = column or columns[0]
    if col not in columns:
        raise DataError(None, f"a label column named {col!r} (data.label_column)", f"label columns {columns}")
    kept = [c for c in cases if c.labels.get(col, "")]
    for c in cases:
        if not c.labels.get(col, ""):
            log.warning("case %s has no label in column %r: left out", c.case_id, col)
    names = sorted({c.labels[col] for c in kept}, key=_natural)
    if len(names) < 2:
        raise DataError(None, f"at least two classes in label column {col!r}", f"classes {names}")
    return kept, [names.index(c.labels[col]) for c in kept], names


def _natural(v: str) -> tuple[int, float | str]:
    try:
        return (0, float(v))
    except ValueError:
        return (1, v)


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A seeded random split of ``n`` cases; at least one training case."""
    perm = np.random.default_rng(seed).permutation(n).tolist()
    n_val = min(int(round(n * val_fraction)), n - 1)
    return sorted(perm[n_val:]), sorted(perm[:n_val])


def segmentation_classes(cases: Sequence[Case]) -> int:
    """Number of classes of the label volumes: the largest label + 1 (at least 2). Every label
    volume is checked here (grid of its case's images, integer classes) before any training."""
    top = 0
    for c in cases:
        top = max(top, int(read_label_volume(c).data.max()))
    return max(top + 1, 2)


def resolve_task(cases: Sequence[Case], task: str) -> str:
    """``data.task``, with ``auto``: classification when the cases carry CSV labels, else
    segmentation when every case has a label volume (else classification, which then asks for labels)."""
    if task != "auto":
        return task
    if any(v for c in cases for v in c.labels.values()):
        return "classification"
    return "segmentation" if cases and all(c.seg is not None for c in cases) else "classification"


def labelled_datasets(cases: Sequence[Case], dc: DataConfig, all_for_probe: bool = False
                      ) -> tuple[MRIDataset, MRIDataset | None, int, list[str] | None]:
    """``(train, val, n_classes, class_names)`` for ``dc.task`` (``auto`` resolved by
    :func:`resolve_task`; ``dc.task`` is set to the result); ``all_for_probe`` puts every case,
    centre-cropped, in ``train`` (a probe cross-validates itself)."""
    dc.task = resolve_task(cases, dc.task)
    if dc.task == "segmentation":
        kept = list(cases)
        n_classes = segmentation_classes(kept)
        labels, names = None, [str(k) for k in range(n_classes)]
    else:
        kept, labels, names = labelled_cases(cases, dc.label_column)
        n_classes = len(names)
    with_seg = dc.task == "segmentation"
    if all_for_probe and with_seg:
        raise DataError(None, "class labels in a CSV manifest (probes classify cases)",
                        "label volumes only (use `medmae finetune` for segmentation)")
    if all_for_probe:
        return MRIDataset(kept, dc, train=False, labels=labels, with_seg=with_seg), None, n_classes, names
    tr, va = split_indices(len(kept), dc.val_fraction, dc.seed)

    def pick(idx: list[int]) -> tuple[list[Case], list[int] | None]:
        return [kept[i] for i in idx], (None if labels is None else [labels[i] for i in idx])

    train_cases, train_labels = pick(tr)
    train = MRIDataset(train_cases, dc, train=True, labels=train_labels, with_seg=with_seg)
    val = None
    if va:
        val_cases, val_labels = pick(va)
        val = MRIDataset(val_cases, dc, train=False, labels=val_labels, with_seg=with_seg)
    return train, val, n_classes, names


# ---------------------------------------------------------------------- reconstruct
def _canonical(vol: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Reorder a volume's axes to RAS for display."""
    ornt = nib.orientations.io_orientation(affine)
    return nib.orientations.apply_orientation(vol, ornt)


def reconstruct_file(
    model: nn.Module,
    case_dir: str | os.PathLike[str],
    want: str,
    out: str | os.PathLike[str],
    have: Sequence[str] | None = None,
    plot: str | os.PathLike[str] | None = None,
    overlap: float = 0.5,
    sw_batch_size: int = 4,
    dtype: str = "float32",
) -> dict[str, Any]:
    """Synthesise ``want`` from ``have`` (default: every other modality of the case) and write it
    as NIfTI on the input's grid. When the case also holds ``want``, PSNR and SSIM against it
    (over the inputs' brain mask) are returned too, and under ``baseline`` the same scores of the
    non-learned synthesis to beat (:func:`medmae.metrics.rescaled_baseline`)."""
    mods = list(model.tokenizer.group_names)
    meta = getattr(model, "meta", {}) or {}
    case = scan_case_folder(case_dir, mods, meta.get("modality_map"))
    have = list(have) if have else [m for m in mods if m in case.files and m != want]
    result = synthesise_case(model, case, have, want, overlap, sw_batch_size)
    ref = result["reference"]
    if dtype == "input":
        out_dtype = ref.header.get_data_dtype()
    elif dtype == "float32":
        out_dtype = np.float32
    else:
        raise ValueError(f"--dtype must be float32 or input, got {dtype!r}")
    write_volume(result["volume"], ref, out, dtype=out_dtype, description=f"medmae {want} from {'+'.join(have)}",
                 keep_scaling=dtype == "input")
    summary: dict[str, Any] = {"out": str(out), "shape": list(ref.shape), "have": have, "want": want,
                               "reference": ref.path, "intensity": result["intensity"]}
    truth = None
    if want in case.files:
        truth = read_volume(case.files[want])
        if same_grid(truth.shape, truth.affine, ref.shape, ref.affine):
            brain = result["prepared"].brain
            summary["psnr"] = psnr(result["volume"], truth.data, brain)
            summary["ssim"] = ssim(result["volume"], truth.data, brain)
            base = rescaled_baseline({m: read_volume(case.files[m]).data for m in have}, truth.data, brain)
            if base is not None:
                name, _, vol = base
                summary["baseline"] = {"method": f"{name} rescaled by a line fitted to this case's {want}",
                                       "psnr": psnr(vol, truth.data, brain), "ssim": ssim(vol, truth.data, brain)}
    if plot:
        summary["plot"] = str(_plot_synthesis(result, case, have, want, truth, plot))
    return summary


def _plot_synthesis(result: dict[str, Any], case: Case, have: Sequence[str], want: str, truth: Any,
                    path: str | os.PathLike[str]) -> Path:
    from medmae.figures import plot_three_planes

    ref = result["reference"]
    rows = []
    for m in have:
        v = _canonical(read_volume(case.files[m]).data, ref.affine)
        rows.append((m, {"input": v, "masked input": v, "reconstruction": v}))
    syn = _canonical(result["volume"], ref.affine)
    gt = _canonical(truth.data, ref.affine) if truth is not None and truth.shape == ref.shape else None
    rows.append((f"{want} (synthesised)", {"input": gt, "masked input": np.full(syn.shape, np.nan),
                                           "reconstruction": syn}))
    brain = _canonical(result["prepared"].brain.astype(np.uint8), ref.affine) > 0
    at = [int(round(np.mean(ix))) for ix in np.nonzero(brain)] if brain.any() else None
    title = f"{case.case_id}: {want} synthesised from {', '.join(have)}"
    return plot_three_planes(rows, path, at=at, title=title)


# ---------------------------------------------------------------------- embed
@torch.no_grad()
def embed_cases(
    model: nn.Module,
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    per_modality: bool = False,
    have: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Embed every case of a case folder, a folder of cases or a CSV manifest into ``out`` (.npz).

    Keys: ``case_ids [N]``, ``embeddings [N, D]`` (mean of all real token encodings over windows
    tiling the brain, all used modalities encoded together), ``modalities [G]`` and, with
    ``per_modality``, ``modality_embeddings [N, G, D]`` (each modality encoded alone; NaN rows where
    a case lacks it) and ``present [N, G]``. Raises on the first bad case (run ``check`` first).
    """
    model.eval()
    dc = model_data_config(model)
    mods = list(model.tokenizer.group_names)
    cases, problems = find_cases(path, mods, dc.modality_map)
    if problems:
        raise DataError(path, "only good cases (see `medmae check`)", "; ".join(str(p) for p in problems))
    ids, case_vecs, mod_vecs, present = [], [], [], []
    for case in cases:
        use = [m for m in mods if m in case.files and (not have or m in have)]
        if not use:
            raise DataError(case.source, f"at least one of the modalities {list(have or mods)}",
                            f"only {sorted(case.files)}")
        prepared = prepare_case(case, dc, use)
        emb = embed_prepared(model, prepared, dc.roi_size, per_modality)
        ids.append(case.case_id)
        case_vecs.append(emb["case"])
        if per_modality:
            mod_vecs.append(emb["modality"])
            present.append(emb["present"])
    arrays: dict[str, Any] = {"case_ids": np.array(ids), "embeddings": np.stack(case_vecs).astype(np.float32),
                              "modalities": np.array(mods)}
    if per_modality:
        arrays["modality_embeddings"] = np.stack(mod_vecs).astype(np.float32)
        arrays["present"] = np.stack(present)
    with atomic_path(out) as tmp:
        np.savez_compressed(tmp, **arrays)
    return {"out": str(out), "cases": len(ids), "embeddings": list(arrays["embeddings"].shape),
            "per_modality": per_modality}
