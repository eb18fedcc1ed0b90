from __future__ import annotations

import numpy as np
import pytest

from maecore.errors import DataError
from medmae.cases import find_cases, read_case, read_manifest, scan_case_folder, validate_case

BRATS23 = {"t1": "X-000-t1n.nii.gz", "t1ce": "X-000-t1c.nii.gz", "t2": "X-000-t2w.nii.gz", "flair": "X-000-t2f.nii.gz"}


def test_bundled_sample_is_one_case(bundled_dir):
    cases, problems = find_cases(bundled_dir)
    assert problems == [] and [c.case_id for c in cases] == ["TCGA-DU-7294"]
    assert sorted(cases[0].files) == ["flair", "t1", "t1ce", "t2"]
    assert cases[0].files["flair"].name == "TCGA-DU-7294_fla.nii.gz"


def test_case_folder_given_directly(bundled_case):
    cases, _ = find_cases(bundled_case)
    assert len(cases) == 1 and cases[0].case_id == "TCGA-DU-7294"


def test_folder_of_brats2021_and_brats2023_cases(tmp_path, case_maker):
    case_maker(tmp_path / "a")  # BraTS 2021 names
    case_maker(tmp_path / "b", names=BRATS23)
    case_maker(tmp_path / "c", names={"t1": "c_t1.nii.gz", "flair": "c_flair.nii.gz"})  # lacks t1ce and t2
    (tmp_path / "a" / "notes.txt").write_text("ignored")
    (tmp_path / "b" / ".DS_Store").write_bytes(b"\0")
    cases, problems = find_cases(tmp_path)
    assert problems == []
    by_id = {c.case_id: c for c in cases}
    assert sorted(by_id["b"].files) == ["flair", "t1", "t1ce", "t2"]
    assert by_id["b"].files["flair"].name == "X-000-t2f.nii.gz"
    assert by_id["c"].present(["t1", "t1ce", "t2", "flair"]) == [True, False, False, True]


def test_user_modality_map(tmp_path, case_maker):
    case_maker(tmp_path / "p", names={"t1": "p_mprage.nii.gz", "t2": "p_t2.nii.gz"})
    with pytest.raises(DataError, match=r"p_mprage\.nii\.gz: expected a modality name .*found unknown modality name"):
        scan_case_folder(tmp_path / "p")
    case = scan_case_folder(tmp_path / "p", modality_map={"mprage": "t1"})
    assert case.files["t1"].name == "p_mprage.nii.gz"


def test_unknown_modality_name_in_a_folder(tmp_path, case_maker):
    case_maker(tmp_path / "good")
    case_maker(tmp_path / "bad", names={"t1": "bad_t1.nii.gz", "t2": "bad_dwi.nii.gz"})
    cases, problems = find_cases(tmp_path)
    assert [c.case_id for c in cases] == ["good"]
    assert len(problems) == 1
    with pytest.raises(DataError, match=r"bad_dwi\.nii\.gz: expected a modality name .* found unknown modality name in 'bad_dwi\.nii\.gz'"):
        raise problems[0]


def test_non_nifti_file_in_a_case_folder(tmp_path, case_maker):
    case_maker(tmp_path / "x")
    (tmp_path / "x" / "x_t1.mha").write_bytes(b"not nifti")
    with pytest.raises(DataError, match=r"x_t1\.mha: expected a NIfTI file \(\.nii or \.nii\.gz\) in a case folder, found a \.mha file"):
        scan_case_folder(tmp_path / "x")


def test_two_files_for_one_modality(tmp_path, case_maker):
    case_maker(tmp_path / "d", names={"t1": "d_t1.nii.gz", "flair": "d_fla.nii.gz"})
    case_maker(tmp_path / "d", names={"flair": "d_t2f.nii.gz"})
    with pytest.raises(DataError, match="one file per modality, found two for flair"):
        scan_case_folder(tmp_path / "d")


def test_shape_mismatch_names_both_files(tmp_path, case_maker):
    case_maker(tmp_path / "m", names={"t1": "m_t1.nii.gz", "t2": "m_t2.nii.gz"})
    case_maker(tmp_path / "m", names={"flair": "m_flair.nii.gz"}, shape=(24, 28, 22))
    case = scan_case_folder(tmp_path / "m")
    with pytest.raises(DataError, match=r"expected every modality of a case on the same grid .*m_flair\.nii\.gz and .*m_t1\.nii\.gz with shape \(24, 28, 22\) vs \(24, 28, 20\)"):
        read_case(case)


def test_affine_mismatch_names_both_files(tmp_path, case_maker):
    shifted = np.array([[-2.0, 0, 0, 33.0], [0, -2.0, 0, 40.0], [0, 0, 2.0, -10.0], [0, 0, 0, 1]])
    case_maker(tmp_path / "m", names={"t1": "m_t1.nii.gz"})
    case_maker(tmp_path / "m", names={"t2": "m_t2.nii.gz"}, affine=shifted)
    with pytest.raises(DataError, match=r"m_t1\.nii\.gz and .*m_t2\.nii\.gz with affines that differ by up to 3"):
        validate_case(scan_case_folder(tmp_path / "m"))


# ---------------------------------------------------------------------- CSV manifests
def write_csv(path, rows):
    path.write_text("\n".join(",".join(r) for r in rows) + "\n")
    return path


def test_manifest_with_labels_and_missing_modalities(tmp_path, case_maker):
    case_maker(tmp_path / "imgs" / "a")
    case_maker(tmp_path / "imgs" / "b", names={"t1": "b_t1.nii.gz", "flair": "b_flair.nii.gz"})
    csv = write_csv(tmp_path / "m.csv", [
        ["case_id", "t1", "T1c", "t2", "FLAIR", "grade", "age"],
        ["a", "imgs/a/a_t1.nii.gz", "imgs/a/a_t1ce.nii.gz", "imgs/a/a_t2.nii.gz", "imgs/a/a_flair.nii.gz", "LGG", "40"],
        ["b", "imgs/b/b_t1.nii.gz", "", "", str(tmp_path / "imgs/b/b_flair.nii.gz"), "HGG", "61"],
    ])
    cases, problems = read_manifest(csv)
    assert problems == []
    assert [c.case_id for c in cases] == ["a", "b"]
    assert sorted(cases[1].files) == ["flair", "t1"]
    assert cases[0].files["t1ce"] == tmp_path / "imgs/a/a_t1ce.nii.gz"
    assert cases[1].labels == {"grade": "HGG", "age": "61"}


def test_manifest_naming_a_missing_file(tmp_path, case_maker):
    case_maker(tmp_path / "a")
    csv = write_csv(tmp_path / "m.csv", [
        ["id", "t1", "t2"],
        ["a", "a/a_t1.nii.gz", "a/a_t2.nii.gz"],
        ["b", "b/b_t1.nii.gz", ""],
    ])
    cases, problems = find_cases(csv)
    assert [c.case_id for c in cases] == ["a"]
    with pytest.raises(DataError, match=r"b_t1\.nii\.gz: expected an existing file \(named in .*m\.csv line 3, column 't1'\), found nothing at that path"):
        raise problems[0]


def test_manifest_with_an_unknown_modality_column(tmp_path, case_maker):
    case_maker(tmp_path / "a")
    csv = write_csv(tmp_path / "m.csv", [["case", "t1", "dwi"], ["a", "a/a_t1.nii.gz", "a/a_t2.nii.gz"]])
    with pytest.raises(DataError, match=r"m\.csv: expected modality columns named after .* found unknown modality name in column 'dwi'"):
        read_manifest(csv)


def test_manifest_without_an_id_column(tmp_path):
    csv = write_csv(tmp_path / "m.csv", [["name", "t1"], ["a", "a.nii.gz"]])
    with pytest.raises(DataError, match=r"expected a case id column"):
        read_manifest(csv)


def test_nothing_at_the_dataset_path(tmp_path):
    with pytest.raises(DataError, match="nothing at that path"):
        find_cases(tmp_path / "absent")
