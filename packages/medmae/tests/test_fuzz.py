"""Fuzz the NIfTI reader: truncated and byte-flipped copies of the real sample end in DataError
naming the file, or read into a finite 3D volume with an invertible affine; never another
exception, a hang or a huge allocation from a corrupted header."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maecore.errors import DataError
from maecore.testing import damage
from medmae import sample_case
from medmae.io import read_volume


def _sources(tmp: Path) -> dict[str, bytes]:
    """The bundled T1 as shipped (.nii.gz) and a 20^3 uncompressed crop of it (.nii: the header
    and data bytes are all reachable by a flip)."""
    gz = next(sample_case().glob("*_t1.nii.gz"))
    img = nib.load(gz)
    crop = img.slicer[20:40, 30:50, 24:44]
    nii = tmp / "crop_t1.nii"
    nib.save(nib.Nifti1Image(np.asarray(crop.dataobj), crop.affine, crop.header), nii)
    return {"case_t1.nii.gz": gz.read_bytes(), "case_t1.nii": nii.read_bytes()}


@pytest.mark.parametrize("name", ["case_t1.nii.gz", "case_t1.nii"])
def test_truncations_and_byte_flips(name: str, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("fuzz")
    data = _sources(tmp)[name]
    header_bytes = 352  # NIfTI-1 header + extension flag: flips here hit dims, dtype, scaling, affine

    @settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(cut=st.floats(0.0, 1.0),
           flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255), st.booleans()), max_size=6))
    def check(cut: float, flips: list[tuple[float, int, bool]]) -> None:
        blob = damage(data, cut, flips, prefix=header_bytes if name.endswith(".nii") else None)
        path = tmp / name
        path.write_bytes(blob)
        try:
            vol = read_volume(path)
        except DataError as err:
            assert name in str(err)
            return
        assert vol.data.ndim == 3 and np.isfinite(vol.data).all()
        assert vol.data.nbytes <= 64 * len(data) + 4 * 20**3 * 1000
        assert abs(np.linalg.det(vol.affine[:3, :3])) > 0

    check()


@pytest.mark.parametrize("dims", [(20000, 20000, 20000), (20, 20, 2000)])
def test_header_dims_larger_than_the_file_are_refused_before_allocating(dims, tmp_path: Path):
    """Found by the fuzz test: a flipped ``dim`` field made nibabel allocate terabytes."""
    img = nib.load(next(sample_case().glob("*_t1.nii.gz")))
    crop = img.slicer[20:40, 30:50, 24:44]
    for name in ("big_t1.nii", "big_t1.nii.gz"):
        path = tmp_path / name
        nib.save(nib.Nifti1Image(np.asarray(crop.dataobj), crop.affine, crop.header), path)
        raw = bytearray(nib.openers.Opener(path).read())
        raw[42:48] = np.asarray(dims, "<i2").tobytes()  # dim[1..3] of the NIfTI-1 header
        if name.endswith(".gz"):
            import gzip

            path.write_bytes(gzip.compress(bytes(raw)))
        else:
            path.write_bytes(bytes(raw))
        with pytest.raises(DataError, match=rf"{name}: expected a complete NIfTI file, found a truncated file or a "
                                            rf"corrupted header .*needs \d+"):
            read_volume(path)
