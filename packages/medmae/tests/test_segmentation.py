"""Segmentation fine-tuning with the UNETR-style head (MONAI blocks) on the tiny config, CPU.

The bundled sample has no expert segmentation: the label volume used here is derived from the
data itself (:func:`medmae.segmentation.flair_hyperintense_label`: FLAIR above its 97th percentile
within the brain, opened), written as ``<case>_seg.nii.gz`` next to the case's images.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from maecore.errors import ConfigError, DataError
from maecore.models import create_model
from medmae.cases import scan_case_folder
from medmae.cli import main
from medmae.data import DataConfig
from medmae.segmentation import (
    UNETRHead,
    flair_hyperintense_label,
    fuse_groups,
    hidden_layers,
    load_segmenter,
    make_unetr_head,
    segment_case,
    segment_logits,
)
from medmae.tasks import check_dataset, labelled_datasets, segmentation_classes


def _copy_case(src: Path, dst: Path, drop: str | None = None) -> Path:
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if drop and f.name.endswith(f"_{drop}.nii.gz"):
            continue
        shutil.copy(f, dst / f.name.replace(src.name, dst.name))
    return dst


@pytest.fixture(scope="module")
def seg_data(tmp_path_factory) -> Path:
    """Two copies of the bundled case with a FLAIR-derived label; ``caseB`` lacks t1ce (padding)."""
    from medmae import sample_case

    root = tmp_path_factory.mktemp("segdata") / "data"
    for name, drop in (("caseA", None), ("caseB", "t1c")):
        flair_hyperintense_label(_copy_case(sample_case(), root / name, drop))
    return root


@pytest.fixture(scope="module")
def unetr_run(tiny_run, seg_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ft") / "unetr"
    code = main(["finetune", "--model", str(tiny_run / "export"), "--data", str(seg_data), "--config", "tiny",
                 "--max-steps", "4", "--set", "train.batch_size=2", "--set", "data.val_fraction=0.5",
                 "--out", str(out)])
    assert code == 0
    return out


# ---------------------------------------------------------------------- the label from the data
def test_flair_label_is_a_binary_map_on_the_flair_grid(seg_data):
    flair = nib.load(seg_data / "caseA" / "caseA_fla.nii.gz")
    seg = nib.load(seg_data / "caseA" / "caseA_seg.nii.gz")
    lab = np.asarray(seg.dataobj)
    assert seg.shape == flair.shape and np.allclose(seg.affine, flair.affine)
    assert set(np.unique(lab)) == {0, 1}
    brain = np.asarray(flair.dataobj) != 0
    frac = lab[brain].mean()
    assert 0.002 < frac < 0.03  # at most the 3 % above the 97th percentile, fewer after the opening
    values = np.asarray(flair.dataobj, np.float32)
    assert values[lab == 1].min() > np.percentile(values[brain], 97) - 1e-6
    assert scan_case_folder(seg_data / "caseA").seg == seg_data / "caseA" / "caseA_seg.nii.gz"


def test_flair_label_needs_flair(tmp_path, bundled_case):
    case = _copy_case(bundled_case, tmp_path / "noflair", drop="fla")
    with pytest.raises(DataError, match="a FLAIR image"):
        flair_hyperintense_label(case)


# ---------------------------------------------------------------------- the head
def test_hidden_layers_are_evenly_spaced():
    assert hidden_layers(12) == [2, 5, 8, 11]
    assert hidden_layers(2) == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="at least one block"):
        hidden_layers(0)


@pytest.mark.parametrize("patch", [8, 16])
def test_unetr_head_gives_logits_at_input_resolution(patch):
    torch.manual_seed(0)
    model = create_model("medmae_tiny", patch_size=patch)
    head = make_unetr_head(model, 3, feature_size=4)
    x = torch.randn(2, 4, 32, 32, 32)
    out = segment_logits(model, head, {"x": x, "group_pad": torch.zeros(2, 4, dtype=torch.bool)})
    assert out.shape == (2, 3, 32, 32, 32)
    loss = head.loss(out, torch.randint(0, 3, (2, 32, 32, 32)))
    loss.backward()
    assert torch.isfinite(loss) and head.encoder1.layer.conv1.conv.weight.grad.abs().sum() > 0
    assert model.encoder.blocks[0].attn.qkv.weight.grad is not None  # the encoder is fine-tuned too


def test_unetr_head_refuses_other_patch_sizes():
    with pytest.raises(ValueError, match="isotropic power-of-two patch size of at least 8"):
        UNETRHead(64, 2, 4, 12, 2)
    with pytest.raises(ValueError, match="isotropic power-of-two"):
        UNETRHead(64, 2, 4, [8, 8, 16], 2)


def test_absent_modality_is_never_seen():
    """An absent modality is padding: what its channel holds changes nothing."""
    torch.manual_seed(0)
    model = create_model("medmae_tiny").eval()
    head = make_unetr_head(model, 2, feature_size=4).eval()
    x = torch.randn(1, 4, 32, 32, 32)
    pad = torch.tensor([[False, True, False, False]])
    y = x.clone()
    y[:, 1] = torch.randn(32, 32, 32) * 100
    with torch.no_grad():
        a = segment_logits(model, head, {"x": x, "group_pad": pad})
        b = segment_logits(model, head, {"x": y, "group_pad": pad})
        c = segment_logits(model, head, {"x": y, "group_pad": torch.zeros(1, 4, dtype=torch.bool)})
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, c, atol=1e-3)  # when present, the modality does count


def test_fuse_groups_averages_present_modalities_only():
    emb = torch.arange(2 * 8 * 3, dtype=torch.float32).reshape(1, 16, 3)  # G=2 groups, grid 2x2x2
    pad = torch.zeros(1, 16, dtype=torch.bool)
    pad[0, 8:] = True
    out = fuse_groups(emb, pad, (2, 2, 2))
    assert out.shape == (1, 3, 2, 2, 2)
    assert torch.equal(out[0, :, 0, 1, 1], emb[0, 3])  # C order, group 1 ignored
    pad[0, 8:] = False
    assert torch.allclose(fuse_groups(emb, pad, (2, 2, 2))[0, :, 0, 0, 0], (emb[0, 0] + emb[0, 8]) / 2)


# ---------------------------------------------------------------------- end to end
def test_unetr_finetune_end_to_end(unetr_run, seg_data, tmp_path):
    summary = json.loads((unetr_run / "summary.json").read_text())
    assert summary["task"] == "segmentation" and summary["seg_head"] == "unetr" and summary["steps"] == 4
    for key in ("val/dice", "val/dice_0", "val/dice_1", "val/loss"):
        assert np.isfinite(summary[key]), key
    assert 0 <= summary["val/dice"] <= 1 and set(summary["val_dice_per_class"]) == {"0", "1"}
    head = json.loads((unetr_run / "export" / "head.json").read_text())
    assert head["head"]["type"] == "unetr" and head["head"]["feature_size"] == 8 and head["class_names"] == ["0", "1"]

    seg = load_segmenter(unetr_run / "export")
    ref = nib.load(seg_data / "caseB" / "caseB_fla.nii.gz")
    out = tmp_path / "pred.nii.gz"
    result = segment_case(seg, seg_data / "caseB", out=out, overlap=0.25)  # caseB lacks t1ce
    pred = nib.load(out)
    assert pred.shape == ref.shape and result["volume"].shape == ref.shape
    assert np.allclose(pred.affine, ref.affine) and pred.get_data_dtype() == np.uint8
    assert set(np.unique(np.asarray(pred.dataobj))) <= {0, 1}
    assert result["used"] == ["t1", "t2", "flair"] and set(result["dice"]) >= {"0", "1"}
    # the reloaded model predicts what the trained one would on a crop
    batch = {"x": torch.randn(1, 4, 32, 32, 32), "group_pad": torch.tensor([[False, True, False, False]])}
    assert seg.predict(batch).shape == (1, 32, 32, 32)


def test_linear_head_stays_selectable(tiny_run, seg_data, tmp_path):
    out = tmp_path / "lin"
    code = main(["finetune", "--model", str(tiny_run / "export"), "--data", str(seg_data), "--config", "tiny",
                 "--max-steps", "2", "--set", "train.batch_size=2", "--set", "finetune.seg_head=linear",
                 "--out", str(out)])
    assert code == 0
    assert json.loads((out / "export" / "head.json").read_text())["head"]["type"] == "segmentation"
    model = load_segmenter(out / "export")
    x = {"x": torch.randn(1, 4, 32, 32, 32), "group_pad": torch.zeros(1, 4, dtype=torch.bool)}
    assert model.predict(x).shape == (1, 32, 32, 32)
    result = segment_case(model, seg_data / "caseA", overlap=0.0)  # whole volumes work with either head
    assert result["volume"].shape == nib.load(seg_data / "caseA" / "caseA_fla.nii.gz").shape


def test_unknown_seg_head_is_a_config_error(tiny_run, seg_data):
    with pytest.raises(ConfigError, match="finetune.seg_head must be one of unetr, linear"):
        main(["-v", "finetune", "--model", str(tiny_run / "export"), "--data", str(seg_data), "--config", "tiny",
              "--set", "finetune.seg_head=unet"])


# ---------------------------------------------------------------------- bad label volumes
def _bad_label_case(tmp_path: Path, bundled_case: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    case = _copy_case(bundled_case, tmp_path / "data" / "caseX")
    ref = nib.load(case / "caseX_fla.nii.gz")
    nib.save(nib.Nifti1Image(data, ref.affine if affine is None else affine), str(case / "caseX_seg.nii.gz"))
    return case


def _dc() -> DataConfig:
    return DataConfig(spacing=[2.0, 2.0, 2.0], roi_size=[32, 32, 32], cache="none", task="segmentation")


def test_label_volume_of_another_shape_names_both_files(tmp_path, bundled_case):
    case_dir = _bad_label_case(tmp_path, bundled_case, np.zeros((60, 83, 68), np.uint8))
    case = scan_case_folder(case_dir)
    with pytest.raises(DataError, match=r"caseX_fla\.nii\.gz and .*caseX_seg\.nii\.gz with shape \(67, 83, 68\) vs "
                                        r"\(60, 83, 68\)"):
        segmentation_classes([case])
    n, problems = check_dataset(tmp_path / "data", _dc())  # `medmae check` reports it too
    assert n == 1 and len(problems) == 1 and "caseX_seg.nii.gz" in str(problems[0])


def test_label_volume_with_another_affine_names_both_files(tmp_path, bundled_case):
    affine = nib.load(bundled_case / "TCGA-DU-7294_fla.nii.gz").affine.copy()
    affine[0, 3] += 4.0
    case_dir = _bad_label_case(tmp_path, bundled_case, np.zeros((67, 83, 68), np.uint8), affine)
    with pytest.raises(DataError, match=r"caseX_fla\.nii\.gz and .*caseX_seg\.nii\.gz with affines that differ"):
        labelled_datasets([scan_case_folder(case_dir)], _dc())


def test_label_volume_with_fractional_values(tmp_path, bundled_case):
    data = np.zeros((67, 83, 68), np.float32)
    data[30:34, 40:44, 30:34] = 0.5
    case_dir = _bad_label_case(tmp_path, bundled_case, data)
    with pytest.raises(DataError, match=r"caseX_seg\.nii\.gz: expected a label volume of integer class ids.*"
                                        r"found non-integer values \(e\.g\. 0\.5 in 64 voxels\)"):
        segmentation_classes([scan_case_folder(case_dir)])


def test_label_volume_with_negative_values(tmp_path, bundled_case):
    data = np.zeros((67, 83, 68), np.int16)
    data[0, 0, 0] = -1
    case_dir = _bad_label_case(tmp_path, bundled_case, data)
    with pytest.raises(DataError, match="found negative values"):
        segmentation_classes([scan_case_folder(case_dir)])


def test_auto_task_picks_segmentation_for_label_volumes(seg_data):
    from medmae.cases import find_cases

    cases, problems = find_cases(seg_data)
    dc = _dc()
    dc.task = "auto"
    assert not problems
    train, val, k, names = labelled_datasets(cases, dc)
    assert dc.task == "segmentation" and k == 2 and names == ["0", "1"] and val is None
    assert train[0]["mask"].shape == (32, 32, 32)
    # training crops are drawn around labelled voxels half of the time (RandCropByPosNegLabeld)
    assert sum(bool(train[i]["mask"].any()) for i in range(8)) >= 4


def test_probe_refuses_label_volumes(seg_data):
    from medmae.cases import find_cases

    with pytest.raises(DataError, match="class labels in a CSV manifest"):
        labelled_datasets(find_cases(seg_data)[0], _dc(), all_for_probe=True)
