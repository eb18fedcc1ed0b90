"""Datasets of cases: a folder of case folders, a single case folder, or a CSV manifest.

A :class:`Case` names one file per present modality (a case may lack some), an optional label
volume and optional label values (CSV columns). Discovery never stops at the first bad case:
:func:`find_cases` returns the good cases and a :class:`DataError` for each bad one, so ``check``
reports them all and training can refuse (or, with ``skip_bad``, skip and list) them.

Folder layout (BraTS): ``ROOT/<case_id>/<anything>_<modality>.nii.gz``; the modality is read from
the end of the file name (see :func:`medmae.modalities.modality_from_name`). Files ending in
``.json .txt .md .csv .tsv`` and hidden files are ignored; any other file must be NIfTI.

CSV manifest: a case id column (``case_id``, ``case``, ``id``, ``subject``, ``patient``...), one
column per modality with a file path (relative to the CSV's folder; an empty cell is a missing
modality), an optional label-volume column (``seg``), and any other columns as labels.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from maecore.errors import DataError
from medmae.io import Volume, grid_difference, read_geometry, read_volume, same_grid
from medmae.modalities import DEFAULT_MODALITIES, is_nifti, known_names, modality_from_name

IGNORED_SUFFIXES = (".json", ".txt", ".md", ".csv", ".tsv")
ID_COLUMNS = ("case_id", "caseid", "case", "id", "subject", "subject_id", "patient", "patient_id", "brats21id")


@dataclass
class Case:
    """One subject: ``files`` maps each present modality to its NIfTI path."""

    case_id: str
    files: dict[str, Path]
    seg: Path | None = None
    labels: dict[str, str] = field(default_factory=dict)
    source: str = ""

    def present(self, modalities: Sequence[str]) -> list[bool]:
        return [m in self.files for m in modalities]

    def all_paths(self) -> list[Path]:
        return [*self.files.values(), *([self.seg] if self.seg else [])]


def scan_case_folder(
    folder: str | os.PathLike[str],
    modalities: Sequence[str] = DEFAULT_MODALITIES,
    modality_map: Mapping[str, str] | None = None,
) -> Case:
    """The :class:`Case` of one folder of NIfTI files; raises :class:`DataError` for a file whose
    name names no known modality, a non-NIfTI file, two files of one modality, or no image at all."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(root, "a case folder of NIfTI files", "no folder at that path")
    files: dict[str, Path] = {}
    seg = None
    for p in sorted(root.iterdir()):
        if p.name.startswith(".") or p.is_dir() or p.suffix.lower() in IGNORED_SUFFIXES:
            continue
        if not is_nifti(p):
            found = f"a {''.join(p.suffixes) or 'no-extension'} file"
            raise DataError(p, "a NIfTI file (.nii or .nii.gz) in a case folder", found)
        mod = modality_from_name(p.name, modalities, modality_map)
        if mod is None:
            raise DataError(
                p, f"a modality name at the end of the file name: {known_names(modalities, modality_map)}, "
                "or an entry for it in data.modality_map", f"unknown modality name in {p.name!r}",
            )
        if mod == "seg":
            if seg is not None:
                raise DataError(root, "one label volume per case", f"two: {seg.name} and {p.name}")
            seg = p
            continue
        if mod in files:
            raise DataError(root, f"one file per modality, found two for {mod}", f"{files[mod].name} and {p.name}")
        files[mod] = p
    if not files:
        raise DataError(root, f"at least one image of {list(modalities)}", "no NIfTI image")
    return Case(case_id=root.name, files=files, seg=seg, source=str(root))


def _is_case_folder(root: Path) -> bool:
    """A folder holding NIfTI files itself (one case), as opposed to a folder of case folders."""
    return any(is_nifti(p) for p in root.iterdir() if p.is_file())


def find_cases(
    path: str | os.PathLike[str],
    modalities: Sequence[str] = DEFAULT_MODALITIES,
    modality_map: Mapping[str, str] | None = None,
) -> tuple[list[Case], list[DataError]]:
    """Good cases and one :class:`DataError` per bad case, from a CSV, a case folder or a folder of them."""
    root = Path(path)
    if root.suffix.lower() == ".csv":
        return read_manifest(root, modalities, modality_map)
    if not root.exists():
        raise DataError(root, "a folder of case folders, a case folder or a CSV manifest", "nothing at that path")
    if root.is_file():
        raise DataError(root, "a folder of case folders, a case folder or a CSV manifest (.csv)",
                        f"a single file ({''.join(root.suffixes) or 'no extension'})")
    if _is_case_folder(root):
        folders = [root]
    else:
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not folders:
            raise DataError(root, "case folders (one folder of NIfTI files per case)",
                            "no sub-folder and no NIfTI file")
    cases, problems = [], []
    for folder in folders:
        try:
            cases.append(scan_case_folder(folder, modalities, modality_map))
        except DataError as err:
            problems.append(err)
    return cases, problems


# ---------------------------------------------------------------------- CSV manifest
def _looks_like_nifti(value: str) -> bool:
    return bool(value) and is_nifti(value.strip())


def read_manifest(
    csv_path: str | os.PathLike[str],
    modalities: Sequence[str] = DEFAULT_MODALITIES,
    modality_map: Mapping[str, str] | None = None,
) -> tuple[list[Case], list[DataError]]:
    """Cases of a CSV manifest; a missing file named in a row makes that row's case bad."""
    p = Path(csv_path)
    if not p.is_file():
        raise DataError(p, "a CSV manifest", "nothing at that path")
    try:
        with open(p, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
            header = list(rows[0].keys()) if rows else []
    except (UnicodeDecodeError, csv.Error) as err:
        raise DataError(p, "a UTF-8 CSV manifest", f"{type(err).__name__}: {err}") from err
    if not rows:
        raise DataError(p, "a CSV manifest with a header and at least one case row", "no rows")
    id_col = next((h for h in header if h and h.strip().lower() in ID_COLUMNS), None)
    if id_col is None:
        raise DataError(p, f"a case id column (one of {', '.join(ID_COLUMNS)})", f"columns {header}")
    image_cols: dict[str, str] = {}
    seg_col, label_cols = None, []
    for h in header:
        if h == id_col or h is None:
            continue
        mod = modality_from_name(h, modalities, modality_map)
        if mod == "seg":
            seg_col = h
        elif mod is not None:
            if mod in image_cols.values():
                other = next(k for k, v in image_cols.items() if v == mod)
                raise DataError(p, f"one column per modality, found two for {mod}", f"{other!r} and {h!r}")
            image_cols[h] = mod
        elif any(_looks_like_nifti(r.get(h) or "") for r in rows):
            raise DataError(
                p, f"modality columns named after {known_names(modalities, modality_map)} "
                "(or mapped in data.modality_map)", f"unknown modality name in column {h!r}",
            )
        else:
            label_cols.append(h)
    if not image_cols:
        raise DataError(p, f"at least one modality column ({known_names(modalities, modality_map)})",
                        f"columns {header}")
    cases, problems = [], []
    seen: set[str] = set()
    for i, row in enumerate(rows, start=2):  # line 1 is the header
        try:
            cases.append(_manifest_case(p, i, row, id_col, image_cols, seg_col, label_cols, seen))
        except DataError as err:
            problems.append(err)
    return cases, problems


def _manifest_case(p: Path, line: int, row: dict[str, str], id_col: str, image_cols: dict[str, str],
                   seg_col: str | None, label_cols: list[str], seen: set[str]) -> Case:
    where = f"{p} line {line}"
    case_id = (row.get(id_col) or "").strip()
    if not case_id:
        raise DataError(where, f"a case id in column {id_col!r}", "an empty cell")
    if case_id in seen:
        raise DataError(where, "a unique case id", f"{case_id!r} again")
    seen.add(case_id)

    def resolve(col: str) -> Path | None:
        value = (row.get(col) or "").strip()
        if not value:
            return None
        f = Path(value) if Path(value).is_absolute() else p.parent / value
        if not f.is_file():
            raise DataError(f, f"an existing file (named in {where}, column {col!r})", "nothing at that path")
        return f

    files = {mod: f for col, mod in image_cols.items() if (f := resolve(col)) is not None}
    if not files:
        raise DataError(where, f"at least one image path in columns {list(image_cols)}", "only empty cells")
    labels = {c: (row.get(c) or "").strip() for c in label_cols}
    return Case(case_id=case_id, files=files, seg=resolve(seg_col) if seg_col else None, labels=labels,
                source=where)


# ---------------------------------------------------------------------- reading a case
def check_case_geometry(case: Case) -> tuple[tuple[int, int, int], np.ndarray]:
    """Header-only check that all files of a case share one grid; returns ``(shape, affine)``."""
    ref_path, ref = None, None
    for path in case.all_paths():
        shape, affine = read_geometry(path)
        if ref is None:
            ref_path, ref = path, (shape, affine)
        elif not same_grid(ref[0], ref[1], shape, affine):
            raise mismatch_error(case, ref_path, path, grid_difference(ref[0], ref[1], shape, affine))
    assert ref is not None  # a Case always has at least one file
    return ref


def mismatch_error(case: Case, a: Path | None, b: Path, how: str) -> DataError:
    return DataError(case.source or case.case_id,
                     "every modality of a case on the same grid (shape and affine)",
                     f"{a} and {b} with {how}")


def read_case(case: Case, modalities: Sequence[str] | None = None) -> dict[str, Volume]:
    """Read and validate every (wanted) modality of a case: ``{modality: Volume}``.

    Raises :class:`DataError` for a bad file (see :func:`medmae.io.read_volume`) or files whose
    shapes or affines disagree (the message names both files).
    """
    wanted = [m for m in (modalities or case.files) if m in case.files]
    vols = {m: read_volume(case.files[m]) for m in wanted}
    first = next(iter(vols.values()), None)
    for v in vols.values():
        if first is not None and not same_grid(first.shape, first.affine, v.shape, v.affine):
            raise mismatch_error(case, Path(first.path), Path(v.path),
                                 grid_difference(first.shape, first.affine, v.shape, v.affine))
    return vols


def validate_case(case: Case) -> None:
    """Every check a case can fail: each file fully read (truncation, NaN, 4D) and a common grid."""
    read_case(case)
    if case.seg is not None:
        read_label_volume(case)


def read_label_volume(case: Case) -> Volume:
    """The case's label volume, checked: on the grid of the case's images (shape and affine; the
    message names the image and the label file) and holding non-negative integer class ids."""
    if case.seg is None:
        raise DataError(case.source or case.case_id, "a label volume (segmentation task)", "none for this case")
    ref_path = next(iter(case.files.values()))
    shape, affine = read_geometry(ref_path)
    seg = read_volume(case.seg)
    if not same_grid(shape, affine, seg.shape, seg.affine):
        raise DataError(case.seg, "a label volume on the grid of the case's images (shape and affine)",
                        f"{ref_path} and {case.seg} with {grid_difference(shape, affine, seg.shape, seg.affine)}")
    data = seg.data
    frac = np.abs(data - np.round(data)) > 1e-3
    if frac.any():
        v = float(data[frac].flat[0])
        raise DataError(case.seg, "a label volume of integer class ids (0 background, 1, 2, ...)",
                        f"non-integer values (e.g. {v:.4g} in {int(frac.sum())} voxels)")
    if data.min() < 0:
        raise DataError(case.seg, "a label volume of non-negative integer class ids",
                        f"negative values (min {data.min():g})")
    return seg
