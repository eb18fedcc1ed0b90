"""End to end on CPU: pretrain, resume, export, reconstruct, embed, probe, finetune, check, info."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from skelmae.cli import main
from skelmae.data import expand
from skelmae.io import read_bvh


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("skelmae") / "run"
    assert main(["pretrain", "--config", "tiny", "--out", str(out)]) == 0
    return out


def test_pretrain_run_folder(run: Path):
    for rel in (
        "config.yaml",
        "metrics.csv",
        "checkpoints/last.ckpt",
        "export/model.safetensors",
        "export/config.json",
        "figures/reconstruction.png",
    ):
        assert (run / rel).is_file(), rel
    cfg = json.loads((run / "export" / "config.json").read_text())
    assert cfg["model"] == "skelmae_graph_tiny" and cfg["kwargs"]["topology"] == "cmu31"
    assert cfg["meta"]["fps"] == 30.0 and cfg["meta"]["clip_len"] == 32
    assert len(cfg["meta"]["topology"]["joint_names"]) == 31
    assert (run / "figures" / "reconstruction.png").stat().st_size > 5000


def test_reconstruct_in_the_input_units_and_frame_rate(run: Path, tmp_path: Path, shared_skeleton: Path, capsys):
    src = shared_skeleton / "cmu_mb2010" / "09_01.bvh"  # 120 fps, 149 frames
    out, png = tmp_path / "r.npz", tmp_path / "r.png"
    args = ["reconstruct", "--model", str(run / "export"), "--input", str(src), "--out", str(out)]
    assert main([*args, "--plot", str(png), "--mm-per-unit", "56.4"]) == 0
    summary = json.loads(capsys.readouterr().out)
    truth = read_bvh(src)["positions"]
    with np.load(out) as z:
        pos, mask = z["positions"], z["mask"]
        assert pos.shape == (149, 31, 3) and float(z["fps"]) == 120.0 and str(z["units"]) == "BVH file units"
        assert z["joint_names"][0] == "Hips" and z["edges"].shape == (30, 2)
        assert np.allclose(z["input"], truth, atol=1e-4)
    assert 0.3 < mask.mean() < 0.7  # body parts hidden, 50 % of the tokens
    assert np.array_equal(pos[~mask], truth[~mask].astype(np.float32))  # visible joints are the input
    err = np.linalg.norm(pos[mask] - truth[mask], axis=-1)
    frame = np.nonzero(mask)[0]
    to_hips = np.linalg.norm(pos[mask] - truth[frame, 0], axis=-1)
    # predictions are in the input's frame and units: near the person (a body is ~25 units tall; 10 training steps)
    assert np.isfinite(err).all() and np.median(to_hips) < 40 and to_hips.max() < 100
    assert png.stat().st_size > 5000
    # the model's error and the interpolation baseline's, on the same hidden joints, in file units and mm
    assert summary["scored_joints"] == int(mask.sum()) and "interpolation" in summary["baseline_method"]
    assert summary["masked_mpjpe"] == pytest.approx(err.mean(), rel=1e-3)
    assert summary["masked_mpjpe_mm"] == pytest.approx(err.mean() * 56.4, rel=1e-3)
    base, base_mm = summary["baseline_masked_mpjpe"], summary["baseline_masked_mpjpe_mm"]
    assert np.isfinite([base, base_mm]).all() and 0 < base < 40 and base_mm == pytest.approx(base * 56.4, rel=1e-3)
    assert main([*args, "--mm-per-unit", "0"]) == 2
    assert "mm_per_unit must be a positive number of millimetres per 'BVH file units' unit, got 0.0" in (
        capsys.readouterr().err
    )


def test_embed_probe_and_resume(run: Path, tmp_path: Path):
    emb = tmp_path / "emb.npz"
    assert (
        main(["embed", "--model", str(run / "export"), "--input", str(expand(None)[0].parent), "--out", str(emb)]) == 0
    )
    with np.load(emb) as z:
        assert z["embeddings"].shape == (14, 32) and len(z["files"]) == 14 and np.isfinite(z["embeddings"]).all()
        assert z["embeddings"].std(0).mean() > 1e-3
    assert main(["probe", "--model", str(run / "export"), "--config", "tiny", "--out", str(tmp_path / "p")]) == 0
    res = json.loads((tmp_path / "p" / "probe.json").read_text())
    lin = res["pretrained"]["linear"]
    assert lin["cv"] == "leave-one-group-out" and lin["n_splits"] == 14 and lin["n_classes"] == 5
    assert main(["pretrain", "--config", "tiny", "--out", str(run), "--max-steps", "10", "--resume", "auto"]) == 0
    assert json.loads((run / "summary.json").read_text())["steps"] == 10


def test_finetune_classifies_motions(run: Path, tmp_path: Path):
    ft = tmp_path / "ft"
    assert (
        main(["finetune", "--model", str(run / "export"), "--config", "tiny", "--out", str(ft), "--max-steps", "3"])
        == 0
    )
    head = json.loads((ft / "export" / "head.json").read_text())
    assert head["class_names"] == ["dance", "dribble", "jump", "run", "walk"]
    assert 0.0 <= json.loads((ft / "summary.json").read_text())["val/acc"] <= 1.0


def test_mamp_pretrain_on_a_glob_and_config_errors(tmp_path: Path, shared_skeleton: Path):
    out = tmp_path / "mamp"
    args = [
        "pretrain",
        "--config",
        "tiny",
        "--out",
        str(out),
        "--max-steps",
        "2",
        "--set",
        "model.name=skelmae_mamp_tiny",
        "--set",
        "model.t_patch=4",
        "--data",
        str(shared_skeleton / "cmu_mb2010" / "09_0*.bvh"),
    ]
    assert main(args) == 0
    assert json.loads((out / "export" / "config.json").read_text())["model"] == "skelmae_mamp_tiny"
    bad = ["pretrain", "--config", "tiny", "--out", str(tmp_path / "x"), "--set", "model.t_patch=3"]
    assert main(bad) == 2


def test_check_reports_every_bad_file(tmp_path: Path, capsys, write_ntu):
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = expand(None)[-1]
    (folder / "good.bvh").write_text(good.read_text())
    (folder / "nomotion.bvh").write_text(good.read_text().split("MOTION")[0])
    np.save(folder / "nan.npy", np.full((4, 25, 3), np.nan))
    write_ntu(folder / "wrong.skeleton", [[np.ones((25, 3))]], body_counts=[2])
    assert main(["check", "--data", str(folder), "--config", "tiny", "--set", "data.topology=ntu25"]) == 1
    out = capsys.readouterr().out
    assert "nomotion.bvh: expected a MOTION section after the HIERARCHY, found no line 'MOTION'" in out
    assert "nan.npy: expected at least one measured joint" in out
    assert "wrong.skeleton: expected a 10-value body line for body 2 of 2 in frame 0" in out
    assert "checked 4 item(s): 1 good, 3 bad" in out


def test_pretrain_refuses_bad_files_unless_skipped(tmp_path: Path, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    for f in expand(None)[-3:]:
        (folder / f.name).write_text(f.read_text())
    (folder / "broken.bvh").write_text("HIERARCHY\nROOT Hips\n{\n")
    args = ["pretrain", "--config", "tiny", "--data", str(folder), "--max-steps", "2"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 2
    assert "broken.bvh" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "b"), "--skip-bad"]) == 0


def test_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "torch_geometric" in out and "skelmae_mamp" in out and "ntu25 (25 joints)" in out
