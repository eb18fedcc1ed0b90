from __future__ import annotations

import pytest

from medmae.modalities import known_names, modality_from_name


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # BraTS 2021
        ("BraTS2021_00000_t1.nii.gz", "t1"),
        ("BraTS2021_00000_t1ce.nii.gz", "t1ce"),
        ("BraTS2021_00000_t2.nii.gz", "t2"),
        ("BraTS2021_00000_flair.nii.gz", "flair"),
        ("BraTS2021_00000_seg.nii.gz", "seg"),
        # BraTS 2023
        ("BraTS-GLI-00000-000-t1n.nii.gz", "t1"),
        ("BraTS-GLI-00000-000-t1c.nii.gz", "t1ce"),
        ("BraTS-GLI-00000-000-t2w.nii.gz", "t2"),
        ("BraTS-GLI-00000-000-t2f.nii.gz", "flair"),
        # the TCGA sample and other common spellings
        ("TCGA-DU-7294_fla.nii.gz", "flair"),
        ("TCGA-DU-7294_t1c.nii", "t1ce"),
        ("sub-01_T1w.nii.gz", "t1"),
        ("patient3_T1_Gd.nii.gz", "t1ce"),
        ("patient3_t2_flair.nii.gz", "flair"),
        ("P7-T1GD.nii.gz", "t1ce"),
    ],
)
def test_brats_names_and_aliases(name, expected):
    assert modality_from_name(name) == expected


@pytest.mark.parametrize("name", ["case_dwi.nii.gz", "case_pd.nii.gz", "README", "case_adc.nii"])
def test_unknown_names(name):
    assert modality_from_name(name) is None


def test_user_map_adds_a_modality_and_an_alias():
    mods = ["t1", "t2", "pd"]
    assert modality_from_name("case_pd.nii.gz", mods, {"pd": "pd"}) == "pd"
    assert modality_from_name("case_mprage.nii.gz", mods, {"mprage": "t1"}) == "t1"
    # a modality outside the configured set is not returned
    assert modality_from_name("case_flair.nii.gz", mods) is None


def test_known_names_lists_aliases():
    text = known_names()
    assert "flair (" in text and "t2f" in text and "t1gd" in text and "t1n" in text
