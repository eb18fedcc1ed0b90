from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

import maecore.models as mm
from medmae.cases import scan_case_folder
from medmae.data import DataConfig
from medmae.io import read_volume
from medmae.synthesis import (
    embed_prepared,
    intensity_params,
    prepare_case,
    resample_to_reference,
    synthesise_case,
    synthesise_window,
)
from medmae.tasks import reconstruct_file, resolve_modalities


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    model = mm.create_model("medmae_tiny", patch_size=4).eval()
    model.meta = {"spacing": [3.0, 3.0, 3.0], "roi_size": [16, 16, 16],
                  "intensity": {"t1": {"mean": 300.0, "std": 30.0}, "t1ce": {"mean": 350.0, "std": 40.0},
                                "t2": {"mean": 150.0, "std": 20.0}, "flair": {"mean": 250.0, "std": 25.0}}}
    return model


def test_the_wanted_modality_is_never_seen(tiny_model):
    x = torch.randn(2, 4, 16, 16, 16)
    pad = torch.tensor([[False, False, False, True]] * 2)  # flair absent
    out = synthesise_window(tiny_model, x, pad, want=1)
    assert out.shape == (2, 1, 16, 16, 16)
    changed_want = x.clone()
    changed_want[:, 1] = torch.randn(2, 16, 16, 16) * 5
    torch.testing.assert_close(synthesise_window(tiny_model, changed_want, pad, want=1), out)
    changed_absent = x.clone()
    changed_absent[:, 3] += 3.0
    torch.testing.assert_close(synthesise_window(tiny_model, changed_absent, pad, want=1), out)
    changed_input = x.clone()
    changed_input[:, 0] += 1.0
    assert not torch.allclose(synthesise_window(tiny_model, changed_input, pad, want=1), out)


def test_output_lies_on_the_input_grid(tmp_path, case_maker, tiny_model):
    folder = case_maker(tmp_path / "k", shape=(30, 34, 26))  # LPS, 2 mm; the model works at 3 mm RAS
    case = scan_case_folder(folder)
    res = synthesise_case(tiny_model, case, ["t1", "t2", "flair"], "t1ce")
    ref = read_volume(folder / "k_t1.nii.gz")
    vol = res["volume"]
    assert vol.shape == ref.shape and vol.dtype == np.float32
    assert np.isfinite(vol).all() and (vol >= 0).all()
    assert (vol[ref.data == 0] == 0).all()  # nothing outside the inputs' brain
    assert vol[ref.data != 0].mean() > 0
    assert res["intensity"]["source"].startswith("training statistics")


def test_preprocessing_round_trips_onto_the_input_grid(tmp_path, case_maker):
    """Same spacing, LPS input: RAS + crop and back is exact (a permutation, no interpolation)."""
    folder = case_maker(tmp_path / "r")
    case = scan_case_folder(folder)
    dc = DataConfig(spacing=[2.0, 2.0, 2.0], roi_size=[16, 16, 16], cache="none")
    prepared = prepare_case(case, dc, ["t1", "t2"])
    assert prepared.group_pad.tolist() == [False, True, False, True]
    back = resample_to_reference(prepared.image[0].numpy(), prepared.affine, prepared.reference)
    t1 = read_volume(folder / "r_t1.nii.gz").data
    brain = t1 != 0
    z = (t1[brain] - t1[brain].mean()) / t1[brain].std()
    np.testing.assert_allclose(back[brain], z, atol=1e-4)


def test_intensity_gain_follows_the_present_modalities(tmp_path, case_maker, tiny_model):
    case = scan_case_folder(case_maker(tmp_path / "g"))
    dc = DataConfig(spacing=None, roi_size=[16, 16, 16], cache="none")
    prepared = prepare_case(case, dc, ["t1", "t2"])
    meta = {"intensity": {m: {"mean": float(prepared.raw_stats[i, 0]) / 2, "std": 10.0}
                          for i, m in enumerate(["t1", "t1ce", "t2", "flair"]) if not prepared.group_pad[i]}}
    meta["intensity"]["t1ce"] = {"mean": 100.0, "std": 10.0}
    p = intensity_params(meta, prepared, ["t1", "t2"], "t1ce")
    assert p["gain"] == pytest.approx(2.0) and p["mean"] == pytest.approx(200.0) and p["std"] == pytest.approx(20.0)
    fallback = intensity_params({}, prepared, ["t1", "t2"], "t1ce")
    assert fallback["mean"] == pytest.approx(float(prepared.raw_stats[[0, 2], 0].mean()))
    assert "this case's statistics" in fallback["source"]


def test_reconstruct_file_keeps_header_geometry_and_scores(tmp_path, case_maker, tiny_model):
    folder = case_maker(tmp_path / "h")
    out = tmp_path / "out" / "t1ce.nii.gz"
    summary = reconstruct_file(tiny_model, folder, "t1ce", out, plot=tmp_path / "fig.png")
    src, img = nib.load(str(folder / "h_t1.nii.gz")), nib.load(str(out))
    assert img.shape == src.shape
    np.testing.assert_array_equal(img.affine, src.affine)
    for key in ("qform_code", "sform_code", "pixdim", "xyzt_units"):
        np.testing.assert_array_equal(img.header[key], src.header[key])
    assert summary["have"] == ["t1", "t2", "flair"]
    assert np.isfinite(summary["psnr"]) and -1 <= summary["ssim"] <= 1
    base = summary["baseline"]
    assert base["method"].split()[0] in summary["have"] and base["method"].endswith("this case's t1ce")
    assert np.isfinite(base["psnr"]) and -1 <= base["ssim"] <= 1
    assert (tmp_path / "fig.png").stat().st_size > 10_000


def test_embeddings_per_case_and_per_modality(tmp_path, case_maker, tiny_model):
    case = scan_case_folder(case_maker(tmp_path / "e", names={"t1": "e_t1.nii.gz", "t2": "e_t2.nii.gz"}))
    dc = DataConfig(spacing=[3.0, 3.0, 3.0], roi_size=[16, 16, 16], cache="none")
    emb = embed_prepared(tiny_model, prepare_case(case, dc, ["t1", "t2"]), dc.roi_size, per_modality=True)
    assert emb["case"].shape == (64,) and np.isfinite(emb["case"]).all()
    assert emb["present"].tolist() == [True, False, True, False]
    assert np.isnan(emb["modality"][1]).all() and np.isfinite(emb["modality"][0]).all()
    assert not np.allclose(emb["modality"][0], emb["modality"][2])


def test_modality_names_on_the_command_line():
    mods = ["t1", "t1ce", "t2", "flair"]
    assert resolve_modalities("t1n, T1c,fla", mods) == ["t1", "t1ce", "flair"]
    with pytest.raises(ValueError, match="unknown modality name 'dwi'"):
        resolve_modalities("t1,dwi", mods)


def test_norm_pix_models_cannot_synthesise(tmp_path, case_maker):
    model = mm.create_model("medmae_tiny", patch_size=4, norm_pix=True).eval()
    model.meta = {"spacing": None, "roi_size": [16, 16, 16]}
    with pytest.raises(ValueError, match="norm_pix=true"):
        synthesise_case(model, scan_case_folder(case_maker(tmp_path / "n")), ["t1"], "t2")
