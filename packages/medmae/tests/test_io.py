from __future__ import annotations

import gzip
import shutil

import nibabel as nib
import numpy as np
import pytest

from maecore.errors import DataError
from medmae.io import read_geometry, read_volume, write_volume


def test_read_bundled_sample(bundled_case):
    v = read_volume(bundled_case / "TCGA-DU-7294_t1c.nii.gz")
    assert v.shape == (67, 83, 68) and v.data.dtype == np.float32
    assert v.spacing == pytest.approx((2.0, 2.0, 2.0))
    assert nib.aff2axcodes(v.affine) == ("L", "P", "S")
    assert v.data.min() == 0.0 and 0.9 < v.data.max() <= 1.0  # source scale 0..1, background exactly 0


def test_bundled_sample_matches_the_shared_source(bundled_case, shared_mri):
    """Each 2 mm voxel is the mean of the 2x2x2 source block at the same world position."""
    small = read_volume(bundled_case / "TCGA-DU-7294_t2.nii.gz")
    src = read_volume(shared_mri / "TCGA-DU-7294_t2.nii.gz")
    for ijk in [(10, 20, 30), (33, 41, 34), (50, 60, 20)]:
        world = small.affine @ [*ijk, 1]
        corner = np.linalg.inv(src.affine) @ world - 0.5  # block centre -> first source voxel
        a, b, c = (int(round(x)) for x in corner[:3])
        block = src.data[a : a + 2, b : b + 2, c : c + 2]
        assert small.data[ijk] == pytest.approx(float(block.mean()), abs=1e-4)


@pytest.mark.parametrize("dtype", [np.float32, np.int16])
def test_write_round_trip_keeps_geometry(tmp_path, dtype, nifti_writer, volume_maker):
    path = nifti_writer(tmp_path / "in_t1.nii.gz", volume_maker())
    ref = read_volume(path)
    out = write_volume(ref.data * 1.5, ref, tmp_path / "out.nii.gz", dtype=dtype)
    back = read_volume(out)
    img, src = nib.load(str(out)), nib.load(str(path))
    assert back.shape == ref.shape
    np.testing.assert_array_equal(back.affine, ref.affine)
    np.testing.assert_array_equal(img.header.get_zooms(), src.header.get_zooms())
    assert int(img.header["qform_code"]) == int(src.header["qform_code"]) == 1
    assert int(img.header["sform_code"]) == int(src.header["sform_code"]) == 1
    np.testing.assert_allclose(img.header.get_qform(), src.header.get_qform())
    assert img.header.get_xyzt_units() == src.header.get_xyzt_units()
    assert img.header.get_data_dtype() == np.dtype(dtype)
    np.testing.assert_allclose(back.data, np.round(ref.data * 1.5) if dtype == np.int16 else ref.data * 1.5)


def test_write_with_the_inputs_scaled_int16(bundled_case, tmp_path):
    """--dtype input on int16 data stored with a slope: values survive within the quantisation step."""
    ref = read_volume(bundled_case / "TCGA-DU-7294_t1.nii.gz")
    values = ref.data * 0.9
    out = write_volume(values, ref, tmp_path / "o.nii.gz", dtype=ref.header.get_data_dtype(), keep_scaling=True)
    assert nib.load(str(out)).header.get_data_dtype() == np.int16
    np.testing.assert_allclose(read_volume(out).data, values, atol=1e-4)


def test_write_refuses_a_wrong_shape(tmp_path, nifti_writer, volume_maker):
    ref = read_volume(nifti_writer(tmp_path / "a_t1.nii.gz", volume_maker()))
    with pytest.raises(ValueError, match="does not fit the reference grid"):
        write_volume(np.zeros((3, 3, 3)), ref, tmp_path / "b.nii.gz")


def test_trailing_singleton_dimension_is_accepted(tmp_path, nifti_writer, volume_maker):
    path = nifti_writer(tmp_path / "a_t1.nii.gz", volume_maker()[..., None])
    assert read_volume(path).shape == (24, 28, 20)


# ---------------------------------------------------------------------- bad input
def test_truncated_gz(bundled_case, tmp_path):
    src = bundled_case / "TCGA-DU-7294_t1.nii.gz"
    bad = tmp_path / "cut_t1.nii.gz"
    bad.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    with pytest.raises(DataError, match=r"cut_t1\.nii\.gz: expected a complete NIfTI file, found a truncated file"):
        read_volume(bad)


def test_truncated_inside_the_header(bundled_case, tmp_path):
    bad = tmp_path / "tiny_t1.nii.gz"
    with gzip.open(bad, "wb") as fh:
        fh.write(gzip.decompress((bundled_case / "TCGA-DU-7294_t1.nii.gz").read_bytes())[:100])
    with pytest.raises(DataError, match=r"tiny_t1\.nii\.gz: expected a (complete NIfTI file|NIfTI-1 or NIfTI-2 image)"):
        read_volume(bad)


def test_4d_file(tmp_path, nifti_writer, volume_maker):
    path = nifti_writer(tmp_path / "a_t1.nii.gz", np.stack([volume_maker()] * 3, -1))
    with pytest.raises(DataError, match=r"a_t1\.nii\.gz: expected a 3D volume .*found a 4D image .*\(24, 28, 20, 3\)"):
        read_volume(path)


def test_nan_voxels(tmp_path, nifti_writer, volume_maker):
    vol = volume_maker().astype(np.float32)
    vol[3, 4, 5] = np.nan
    vol[6, 7, 8] = np.nan
    path = nifti_writer(tmp_path / "a_t1.nii.gz", vol)
    with pytest.raises(DataError, match=r"a_t1\.nii\.gz: expected finite voxel values, found 2 NaN voxel"):
        read_volume(path)


def test_non_nifti_extension(tmp_path):
    path = tmp_path / "scan_t1.mha"
    path.write_bytes(b"ObjectType = Image\n")
    with pytest.raises(DataError, match=r"scan_t1\.mha: expected a NIfTI file \(\.nii\.gz or \.nii\), found a file with '\.mha'"):
        read_volume(path)


def test_non_nifti_content(tmp_path):
    plain = tmp_path / "text_t1.nii"
    plain.write_text("this is not an image\n" * 40)
    with pytest.raises(DataError, match=r"text_t1\.nii: expected a NIfTI-1 or NIfTI-2 image, found unreadable content"):
        read_volume(plain)
    fake_gz = tmp_path / "png_t1.nii.gz"
    fake_gz.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    with pytest.raises(DataError, match=r"png_t1\.nii\.gz: expected a gzip-compressed NIfTI file"):
        read_volume(fake_gz)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope_t1\.nii\.gz: expected an existing NIfTI file, found nothing"):
        read_volume(tmp_path / "nope_t1.nii.gz")


def test_geometry_without_reading_data(tmp_path, bundled_case):
    src = bundled_case / "TCGA-DU-7294_t1.nii.gz"
    cut = tmp_path / "cut_t1.nii.gz"
    shutil.copy(src, cut)
    cut.write_bytes(src.read_bytes()[:2000])  # header intact, data gone
    shape, affine = read_geometry(cut)
    assert shape == (67, 83, 68)
    np.testing.assert_allclose(affine, nib.load(str(src)).affine)
