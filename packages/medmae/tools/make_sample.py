"""Rebuild ``src/medmae/sample/`` from the suite's reference copy of TCGA-DU-7294.

Each modality is cropped to the brain's bounding box (plus a 2-voxel margin, even sizes) and
downsampled from 1 mm to 2 mm by averaging 2x2x2 blocks. The affine is the source affine composed
with the crop offset, the block scale and the half-voxel shift of the block centres, so the copy
lies exactly where the source does in world space. Values (0..1 in the source) are stored as int16
``round(v * 10000)`` with ``scl_slope = 1e-4``: background stays exactly 0.

usage: python packages/medmae/tools/make_sample.py [--src /path/to/shared/data/mri/TCGA-DU-7294]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np

HERE = Path(__file__).resolve().parents[1]
OUT = HERE / "src" / "medmae" / "sample" / "TCGA-DU-7294"
CASE = "TCGA-DU-7294"
SUFFIXES = ("t1", "t1c", "t2", "fla")
FACTOR = 2
MARGIN = 2
SLOPE = 1e-4


def brain_box(volumes: list[np.ndarray]) -> list[tuple[int, int]]:
    """Bounding box of voxels non-zero in any modality, widened by MARGIN to a multiple of FACTOR."""
    nz = np.argwhere(np.any([v != 0 for v in volumes], axis=0))
    box = []
    for axis, size in enumerate(volumes[0].shape):
        lo = max(int(nz[:, axis].min()) - MARGIN, 0)
        hi = min(int(nz[:, axis].max()) + 1 + MARGIN, size)
        if (hi - lo) % FACTOR:
            hi = hi + 1 if hi < size else hi
            lo = lo - 1 if (hi - lo) % FACTOR else lo
        box.append((lo, hi))
    return box


def downsample(vol: np.ndarray, box: list[tuple[int, int]]) -> np.ndarray:
    crop = vol[tuple(slice(a, b) for a, b in box)]
    shape = [s // FACTOR for s in crop.shape]
    blocks = crop.reshape(shape[0], FACTOR, shape[1], FACTOR, shape[2], FACTOR)
    return blocks.mean(axis=(1, 3, 5))


def new_affine(affine: np.ndarray, box: list[tuple[int, int]]) -> np.ndarray:
    """Voxel i of the copy is the centre of source voxels FACTOR*i .. FACTOR*i + FACTOR-1 (+ crop)."""
    step = np.eye(4)
    for axis, (lo, _) in enumerate(box):
        step[axis, axis] = FACTOR
        step[axis, 3] = lo + (FACTOR - 1) / 2
    return affine @ step


def main(argv: list[str] | None = None) -> None:
    root = Path(__file__).resolve().parents[3]
    default = next((p for p in (root.parent / "shared/data/mri" / CASE, root / "shared/data/mri" / CASE)
                    if p.is_dir()), root.parent / "shared/data/mri" / CASE)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=default)
    args = parser.parse_args(argv)
    images = [nib.load(args.src / f"{CASE}_{s}.nii.gz") for s in SUFFIXES]
    volumes = [np.asarray(im.dataobj, dtype=np.float64) for im in images]
    box = brain_box(volumes)
    OUT.mkdir(parents=True, exist_ok=True)
    for suffix, im, vol in zip(SUFFIXES, images, volumes):
        small = np.round(downsample(vol, box) / SLOPE).astype(np.int16)
        affine = new_affine(im.affine, box)
        out = nib.Nifti1Image(small, affine)
        out.set_qform(affine, code=int(im.header["qform_code"]))
        out.set_sform(affine, code=int(im.header["sform_code"]))
        out.header.set_xyzt_units(*im.header.get_xyzt_units())
        out.header.set_slope_inter(SLOPE, 0.0)
        path = OUT / f"{CASE}_{suffix}.nii.gz"
        nib.save(out, path)
        print(f"{path.name}: box {box}, shape {small.shape}, {path.stat().st_size / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
