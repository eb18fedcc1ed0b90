"""NIfTI in and out (nibabel), with the checks that turn bad files into :class:`DataError`.

A volume travels as :class:`Volume`: ``data`` float32 ``[X, Y, Z]`` plus the ``affine`` and the
original ``header``, so a synthesised modality is written back on exactly the input's grid
(:func:`write_volume`). Dataset discovery (folders of cases, CSV manifests) lives in
:mod:`medmae.cases`.
"""

from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from maecore.atomic import atomic_path
from maecore.errors import DataError
from medmae.modalities import NIFTI_SUFFIXES, is_nifti

AFFINE_ATOL = 1e-3  # mm: affines that differ by less are the same grid


@dataclass
class Volume:
    """One 3D image: ``data`` float32 ``[X, Y, Z]`` in the file's voxel order, its 4x4 ``affine``
    (voxel -> world, RAS+ mm, as nibabel reports it), the file ``header`` and ``path``."""

    data: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header
    path: str

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.data.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in nib.affines.voxel_sizes(self.affine))  # type: ignore[return-value]


def _check_suffix(p: Path) -> None:
    if not is_nifti(p):
        suffix = "".join(p.suffixes) or "no extension"
        raise DataError(p, f"a NIfTI file ({' or '.join(NIFTI_SUFFIXES)})", f"a file with {suffix!r}")


def _load_image(p: Path) -> nib.Nifti1Image:
    """``nib.load`` with its failures named: not gzip, not a NIfTI header, a truncated header."""
    if not p.is_file():
        raise DataError(p, "an existing NIfTI file", "nothing at that path")
    if p.name.lower().endswith(".gz"):
        with open(p, "rb") as fh:
            magic = fh.read(2)
        if magic != b"\x1f\x8b":
            raise DataError(p, "a gzip-compressed NIfTI file (.nii.gz)", "a file that is not gzip-compressed")
    try:
        img = nib.load(str(p))
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise DataError(p, "a complete NIfTI file", f"a truncated file ({type(err).__name__}: {err})") from err
    except Exception as err:  # nibabel's ImageFileError, HeaderDataError, struct errors
        raise DataError(p, "a NIfTI-1 or NIfTI-2 image", f"unreadable content ({type(err).__name__}: {err})") from err
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise DataError(p, "a NIfTI-1 or NIfTI-2 image", f"a {type(img).__name__}")
    return img


def image_shape(shape: tuple[int, ...], p: Path) -> tuple[int, int, int]:
    """A 3D shape; trailing singleton dimensions (``[X, Y, Z, 1]``) are accepted and dropped."""
    dims = list(shape)
    while len(dims) > 3 and dims[-1] == 1:
        dims.pop()
    if len(dims) != 3:
        kind = f"a {len(dims)}D image" if len(dims) != 4 else "a 4D image (a time series or stacked modalities)"
        raise DataError(p, "a 3D volume (one modality per file)", f"{kind} of shape {tuple(shape)}")
    if min(dims) < 1:
        raise DataError(p, "a non-empty 3D volume", f"shape {tuple(shape)}")
    return dims[0], dims[1], dims[2]


def _stored_bytes(p: Path) -> int | None:
    """Bytes the file holds once decompressed: the file size, or a ``.gz`` file's ISIZE trailer
    (the uncompressed size modulo 2**32; None when the file is too short to have one)."""
    size = p.stat().st_size
    if not p.name.lower().endswith(".gz"):
        return size
    if size < 18:
        return None
    with open(p, "rb") as fh:
        fh.seek(-4, os.SEEK_END)
        return int.from_bytes(fh.read(4), "little")


def _check_data_size(img: nib.Nifti1Image, shape: tuple[int, int, int], p: Path) -> None:
    """Refuse a header whose dimensions ask for more voxel bytes than the file holds, before any
    allocation (a corrupted ``dim`` field would otherwise ask for terabytes)."""
    need = int(np.prod(shape, dtype=np.int64)) * img.header.get_data_dtype().itemsize
    need += int(img.header.get("vox_offset", 0) or 0)
    held = _stored_bytes(p)
    if held is None:
        return
    if p.name.lower().endswith(".gz") and need >= 2**32:
        # ISIZE wraps past 4 GiB; deflate expands at most ~1032:1, which still bounds the content
        held = max(held, 1032 * p.stat().st_size)
    if held < need:
        gz = " once decompressed" if p.name.lower().endswith(".gz") else ""
        raise DataError(p, "a complete NIfTI file",
                        f"a truncated file or a corrupted header ({held} bytes{gz}; the header's shape {shape} "
                        f"of {img.header.get_data_dtype()} needs {need})")


def read_volume(path: str | os.PathLike[str], *, allow_nonfinite: bool = False) -> Volume:
    """Read a 3D NIfTI into a :class:`Volume` (float32, scaling slope/intercept applied).

    Raises :class:`DataError` for a non-NIfTI or unreadable file, a truncated ``.nii.gz``, an image
    that is not 3D (``[X, Y, Z, 1]`` is accepted), a non-numeric data type and NaN/inf voxels
    (unless ``allow_nonfinite``).
    """
    p = Path(path)
    _check_suffix(p)
    img = _load_image(p)
    shape = image_shape(img.shape, p)
    dtype = img.header.get_data_dtype()
    if dtype.kind not in "iuf" or dtype.fields is not None:
        raise DataError(p, "an integer or real-valued image", f"data type {dtype}")
    _check_data_size(img, shape, p)
    try:
        data = np.asarray(img.dataobj, dtype=np.float32).reshape(shape)
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError, ValueError) as err:
        raise DataError(p, "a complete NIfTI file", f"a truncated file ({type(err).__name__}: {err})") from err
    except MemoryError as err:
        raise DataError(p, "a volume that fits in memory", f"a header asking for shape {shape} of {dtype}") from err
    if not allow_nonfinite:
        bad = ~np.isfinite(data)
        if bad.any():
            n_nan = int(np.isnan(data).sum())
            what = f"{n_nan} NaN voxel(s)" if n_nan == int(bad.sum()) else f"{int(bad.sum())} NaN/inf voxel(s)"
            raise DataError(p, "finite voxel values", what + " (fill them, e.g. with 0 outside the brain)")
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise DataError(p, "an invertible voxel-to-world affine", f"{affine[:3].tolist()}")
    return Volume(data=data, affine=affine, header=img.header.copy(), path=str(p))


def read_geometry(path: str | os.PathLike[str]) -> tuple[tuple[int, int, int], np.ndarray]:
    """``(shape, affine)`` from the header only (no voxel data read)."""
    p = Path(path)
    _check_suffix(p)
    img = _load_image(p)
    return image_shape(img.shape, p), np.asarray(img.affine, dtype=np.float64)


def same_grid(shape_a: tuple[int, ...], affine_a: np.ndarray, shape_b: tuple[int, ...], affine_b: np.ndarray) -> bool:
    return tuple(shape_a) == tuple(shape_b) and bool(np.allclose(affine_a, affine_b, atol=AFFINE_ATOL))


def grid_difference(shape_a: tuple[int, ...], affine_a: np.ndarray, shape_b: tuple[int, ...],
                    affine_b: np.ndarray) -> str:
    """How two grids differ, in words (for error messages)."""
    if tuple(shape_a) != tuple(shape_b):
        return f"shape {tuple(shape_a)} vs {tuple(shape_b)}"
    diff = float(np.abs(np.asarray(affine_a) - np.asarray(affine_b)).max())
    return f"affines that differ by up to {diff:.4g} (more than {AFFINE_ATOL} mm)"


def write_volume(
    data: np.ndarray,
    reference: Volume,
    path: str | os.PathLike[str],
    dtype: np.dtype | type = np.float32,
    description: str = "",
    keep_scaling: bool = False,
) -> Path:
    """Write ``data [X, Y, Z]`` on ``reference``'s grid, atomically.

    The output keeps the reference header's geometry (affine, qform and sform with their codes,
    voxel sizes, units, dim_info, slice information) and ``cal_min/cal_max`` span the data. The
    data type is ``dtype``: a float type is written unscaled (slope 1, intercept 0); an integer type
    with ``keep_scaling`` lets nibabel choose a slope and intercept that fit the values (as the
    input files of BraTS-style int16 data do), else the values are rounded.
    """
    arr = np.asarray(data)
    if arr.shape != reference.shape:
        raise ValueError(f"data of shape {arr.shape} does not fit the reference grid {reference.shape}")
    out_path = Path(path)
    _check_suffix(out_path)
    header = reference.header.copy()
    header.set_data_dtype(dtype)
    integer = np.dtype(dtype).kind in "iu"
    if integer and not keep_scaling:
        info = np.iinfo(dtype)
        arr = np.clip(np.round(arr), info.min, info.max)
    arr = arr.astype(np.float32) if integer and keep_scaling else arr.astype(dtype)
    img = nib.Nifti1Image(arr, reference.affine, header=header) if isinstance(header, nib.Nifti1Header) \
        else nib.Nifti2Image(arr, reference.affine, header=header)
    q_aff, q_code = reference.header.get_qform(coded=True)
    s_aff, s_code = reference.header.get_sform(coded=True)
    img.set_qform(q_aff if q_aff is not None else reference.affine, code=int(q_code))
    img.set_sform(s_aff if s_aff is not None else reference.affine, code=int(s_code))
    if not (integer and keep_scaling):
        img.header.set_slope_inter(1.0, 0.0)
    finite = arr[np.isfinite(arr)] if arr.dtype.kind == "f" else arr
    if finite.size:
        img.header["cal_min"], img.header["cal_max"] = float(finite.min()), float(finite.max())
    if description:
        img.header["descrip"] = description.encode("ascii", "replace")[:79]
    with atomic_path(out_path) as tmp:
        nib.save(img, str(tmp))
    return out_path
