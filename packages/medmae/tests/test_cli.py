"""The CLI end to end on CPU with the tiny config, in process."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medmae.cli import main


@pytest.fixture(scope="module")
def run(tiny_run) -> Path:
    """``medmae pretrain --config tiny`` on the bundled sample (no --data), 8 steps (conftest)."""
    return tiny_run


def test_pretrain_writes_the_run_folder(run):
    for rel in ("config.yaml", "metrics.csv", "export/model.safetensors", "export/config.json",
                "figures/reconstruction.png", "checkpoints/last.ckpt", "summary.json"):
        assert (run / rel).is_file(), rel
    with open(run / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert losses and all(np.isfinite(losses))
    spread = [float(r["train/emb_std"]) for r in rows if r.get("train/emb_std")]
    assert spread and min(spread) > 1e-3  # embeddings did not collapse
    cfg = json.loads((run / "export" / "config.json").read_text())
    meta = cfg["meta"]
    assert cfg["model"] == "medmae_tiny" and cfg["kwargs"]["modalities"] == ["t1", "t1ce", "t2", "flair"]
    assert meta["spacing"] == [2.0, 2.0, 2.0] and meta["roi_size"] == [32, 32, 32] and meta["orientation"] == "RAS"
    assert set(meta["intensity"]) == {"t1", "t1ce", "t2", "flair"}
    assert 0.2 < meta["intensity"]["t1"]["mean"] < 0.8  # the sample's 0..1 scale


def test_embed_from_the_export(run, tmp_path):
    out = tmp_path / "emb.npz"
    assert main(["embed", "--model", str(run / "export"), "--out", str(out), "--per-modality"]) == 0
    z = np.load(out)
    assert z["embeddings"].shape == (1, 64) and list(z["case_ids"]) == ["TCGA-DU-7294"]
    assert z["modality_embeddings"].shape == (1, 4, 64) and z["present"].all()
    assert np.isfinite(z["embeddings"]).all() and z["embeddings"].std() > 0


def test_reconstruct_from_the_export(run, tmp_path, bundled_case, capsys):
    out, fig = tmp_path / "syn" / "t1ce.nii.gz", tmp_path / "syn.png"
    code = main(["reconstruct", "--model", str(run / "export"), "--input", str(bundled_case), "--have", "t1,t2,flair",
                 "--want", "t1ce", "--out", str(out), "--plot", str(fig)])
    assert code == 0
    src = nib.load(str(bundled_case / "TCGA-DU-7294_t1.nii.gz"))
    img = nib.load(str(out))
    assert img.shape == src.shape
    np.testing.assert_array_equal(img.affine, src.affine)
    assert int(img.header["sform_code"]) == int(src.header["sform_code"])
    data = np.asarray(img.dataobj)
    brain = np.any([np.asarray(nib.load(str(bundled_case / f"TCGA-DU-7294_{m}.nii.gz")).dataobj) != 0
                    for m in ("t1", "t2", "fla")], axis=0)
    assert (data[~brain] == 0).all() and 0.05 < data[brain].mean() < 2.0  # input scale (0..1), not z-scores
    assert fig.stat().st_size > 10_000
    printed = capsys.readouterr().out
    summary = json.loads(printed[printed.index("{"):])
    assert summary["shape"] == [67, 83, 68] and summary["have"] == ["t1", "t2", "flair"]
    assert summary["intensity"]["gain"] == pytest.approx(1.0, abs=0.05)  # the training case itself
    assert np.isfinite(summary["psnr"]) and np.isfinite(summary["ssim"])
    assert summary["baseline"]["method"] == "t1 rescaled by a line fitted to this case's t1ce"
    assert summary["baseline"]["psnr"] > 15  # t1 and t1ce of this case correlate strongly


def test_reconstruct_refuses_unknown_modalities(run, tmp_path, capsys):
    code = main(["reconstruct", "--model", str(run / "export"), "--want", "dwi", "--out", str(tmp_path / "x.nii.gz")])
    assert code == 2
    assert "unknown modality name 'dwi'" in capsys.readouterr().err


def _bad_dataset(root: Path, bundled: Path, nifti_writer, volume_maker) -> dict[str, str]:
    """One good case and one bad case per kind; returns case -> expected reason fragment."""
    shutil.copytree(bundled, root / "good")
    t1 = bundled / "TCGA-DU-7294_t1.nii.gz"
    (root / "truncated").mkdir()
    (root / "truncated" / "tr_t1.nii.gz").write_bytes(t1.read_bytes()[:50_000])
    nifti_writer(root / "fourd" / "fd_t1.nii.gz", np.stack([volume_maker()] * 2, -1))
    nan = volume_maker().astype(np.float32)
    nan[5, 5, 5] = np.nan
    nifti_writer(root / "nan" / "nan_t1.nii.gz", nan)
    nifti_writer(root / "mismatch" / "mm_t1.nii.gz", volume_maker())
    nifti_writer(root / "mismatch" / "mm_t2.nii.gz", volume_maker(shape=(24, 28, 18)))
    nifti_writer(root / "unknown" / "un_dwi.nii.gz", volume_maker())
    (root / "notnifti").mkdir()
    (root / "notnifti" / "nn_t1.png").write_bytes(b"\x89PNG\r\n")
    return {"truncated": "truncated file", "fourd": "4D image", "nan": "NaN voxel", "mismatch": "same grid",
            "unknown": "unknown modality name", "notnifti": "expected a NIfTI file"}


def test_check_reports_every_bad_case(tmp_path, bundled_case, nifti_writer, volume_maker, capsys):
    expected = _bad_dataset(tmp_path / "data", bundled_case, nifti_writer, volume_maker)
    code = main(["check", "--data", str(tmp_path / "data")])
    out = capsys.readouterr().out
    assert code == 1
    bad_lines = [line for line in out.splitlines() if line.startswith("BAD")]
    assert len(bad_lines) == len(expected)
    for case, reason in expected.items():
        assert any(f"/{case}" in line and reason in line for line in bad_lines), (case, out)
    assert "checked 7 item(s): 1 good, 6 bad" in out


def test_check_a_manifest_with_a_missing_file(tmp_path, bundled_case, capsys):
    csv_path = tmp_path / "m.csv"
    csv_path.write_text(f"case_id,t1,t2\nok,{bundled_case}/TCGA-DU-7294_t1.nii.gz,{bundled_case}/TCGA-DU-7294_t2.nii.gz\n"
                        f"gone,{bundled_case}/TCGA-DU-7294_t1.nii.gz,missing_t2.nii.gz\n")
    assert main(["check", "--data", str(csv_path)]) == 1
    out = capsys.readouterr().out
    assert "missing_t2.nii.gz: expected an existing file (named in" in out and "1 good, 1 bad" in out


def test_check_the_bundled_sample(capsys):
    assert main(["check"]) == 0
    assert "1 good, 0 bad" in capsys.readouterr().out


def test_pretrain_refuses_a_bad_case_unless_skipped(tmp_path, bundled_case, nifti_writer, volume_maker, capsys):
    shutil.copytree(bundled_case, tmp_path / "data" / "good")
    nan = volume_maker().astype(np.float32)
    nan[1, 1, 1] = np.nan
    nifti_writer(tmp_path / "data" / "bad" / "bad_t1.nii.gz", nan)
    args = ["pretrain", "--config", "tiny", "--data", str(tmp_path / "data"), "--max-steps", "2"]
    assert main([*args, "--out", str(tmp_path / "r1")]) == 2
    assert "bad_t1.nii.gz: expected finite voxel values" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "r2"), "--skip-bad"]) == 0
    assert "skipped bad case" in capsys.readouterr().out and (tmp_path / "r2" / "export" / "config.json").is_file()


def _labelled_manifest(root: Path, case_maker, n: int = 6) -> Path:
    rows = [["case_id", "t1", "t1ce", "t2", "flair", "grade"]]
    for i in range(n):
        case_maker(root / f"c{i}", seed=i)
        grade = "HGG" if i % 2 else "LGG"
        files = [f"c{i}/c{i}_{m}.nii.gz" for m in ("t1", "t1ce", "t2", "flair")]
        if i == 3:
            files[1] = ""  # this case lacks t1ce
        rows.append([f"c{i}", *files, grade])
    path = root / "labels.csv"
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return path


def test_finetune_classification_from_csv_labels(run, tmp_path, case_maker):
    manifest = _labelled_manifest(tmp_path / "d", case_maker)
    out = tmp_path / "ft"
    code = main(["finetune", "--model", str(run / "export"), "--data", str(manifest), "--config", "tiny",
                 "--max-steps", "3", "--set", "train.batch_size=2", "--out", str(out)])
    assert code == 0
    head = json.loads((out / "export" / "head.json").read_text())
    assert head["task"] == "classification" and head["class_names"] == ["HGG", "LGG"]
    from maecore.tasks.finetune import load_finetuned

    model = load_finetuned(out / "export")
    assert model.head.n_classes == 2


def test_probe_against_random_init(run, tmp_path, case_maker, capsys):
    manifest = _labelled_manifest(tmp_path / "d", case_maker)
    code = main(["probe", "--model", str(run / "export"), "--data", str(manifest), "--config", "tiny",
                 "--out", str(tmp_path / "pr")])
    assert code == 0
    result = json.loads((tmp_path / "pr" / "probe.json").read_text())
    for which in ("pretrained", "random_init"):
        assert result[which]["linear"]["n"] == 6 and result[which]["linear"]["n_classes"] == 2
        assert 0 <= result[which]["knn"]["accuracy"] <= 1


def test_finetune_without_labels_is_an_error(run, capsys):
    assert main(["finetune", "--model", str(run / "export"), "--config", "tiny"]) == 2
    assert "CSV manifest holding a label column" in capsys.readouterr().err


def test_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "medmae_bmmae_base" in out and "medmae_tiny" in out and "TCGA-DU-7294" in out and "t2f" in out


def test_unknown_config_key_lists_valid_ones(capsys):
    assert main(["pretrain", "--config", "tiny", "--set", "data.voxel=2"]) == 2
    assert "valid keys in data" in capsys.readouterr().err
