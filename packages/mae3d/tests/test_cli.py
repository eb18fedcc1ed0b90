"""End to end on CPU: pretrain, resume, export, reconstruct, embed, probe, check, info."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from mae3d.cli import main
from mae3d.io import read_points
from mae3d.reconstruction import reconstruct_clouds
from maecore.models import load_pretrained


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mae3d") / "run"
    assert main(["pretrain", "--config", "tiny", "--out", str(out)]) == 0
    return out


def test_pretrain_run_folder(run: Path):
    for rel in ("config.yaml", "metrics.csv", "checkpoints/last.ckpt", "export/model.safetensors",
                "export/config.json", "figures/reconstruction.png"):
        assert (run / rel).is_file(), rel
    meta = json.loads((run / "export" / "config.json").read_text())["meta"]
    assert meta["kind"] == "points" and meta["n_points"] == 512


def test_reconstruct_writes_ply_in_the_input_frame(run: Path, tmp_path: Path, shared_points: Path, capsys):
    src = shared_points / "ycb_google16k" / "fruit" / "013_apple.ply"
    out, png = tmp_path / "apple.ply", tmp_path / "apple.png"
    assert main(["reconstruct", "--model", str(run / "export"), "--input", str(src), "--out", str(out),
                 "--plot", str(png)]) == 0
    summary = json.loads(capsys.readouterr().out)
    # the model's masked Chamfer and the baseline's, on the same masked patches as the library computes
    assert summary["masked_patches"] == round(16 * 0.6) and summary["baseline_method"].startswith("nearest visible")
    r = reconstruct_clouds(load_pretrained(run / "export"), {"points": torch.from_numpy(read_points(src, 512)["points"])[None]})
    for key in ("masked_chamfer", "baseline_masked_chamfer"):
        assert np.isfinite(summary[key]) and summary[key] > 0
        assert summary[key] == pytest.approx(r[key].item(), rel=1e-5)
    cloud = trimesh.load(out)
    mesh = trimesh.load(src, process=False)
    pts = np.asarray(cloud.vertices)
    assert len(pts) == 16 * 16  # every patch: visible ones from the input, masked ones predicted
    red = (cloud.colors[:, :3] == [220, 40, 40]).all(1)
    assert red.sum() == round(16 * 0.6) * 16
    # visible points are input points, in metres, inside the apple's bounding box
    assert (pts[~red] >= mesh.bounds[0] - 1e-4).all() and (pts[~red] <= mesh.bounds[1] + 1e-4).all()
    assert png.stat().st_size > 5000


def test_embed_probe_and_resume(run: Path, tmp_path: Path):
    emb = tmp_path / "emb.npz"
    assert main(["embed", "--model", str(run / "export"), "--input", str(Path(__file__).parents[1] / "src" / "mae3d" / "sample" / "ycb"), "--out", str(emb)]) == 0
    with np.load(emb) as z:
        assert z["embeddings"].shape == (20, 64) and len(z["files"]) == 20
    assert main(["probe", "--model", str(run / "export"), "--config", "tiny", "--out", str(tmp_path / "p")]) == 0
    res = json.loads((tmp_path / "p" / "probe.json").read_text())
    assert res["pretrained"]["linear"]["n"] == 20
    assert main(["pretrain", "--config", "tiny", "--out", str(run), "--max-steps", "10", "--resume", "auto"]) == 0


def test_grid_kind_pretrain_and_reconstruct(tmp_path: Path, shared_points: Path):
    out = tmp_path / "grid"
    assert main(["pretrain", "--kind", "grid", "--config", "tiny", "--out", str(out), "--max-steps", "3"]) == 0
    assert json.loads((out / "export" / "config.json").read_text())["model"] == "mae3d_nerfmae_tiny"
    rec = tmp_path / "g.npz"
    src = shared_points / "ycb_google16k" / "ball" / "058_golf_ball.ply"
    assert main(["reconstruct", "--model", str(out / "export"), "--input", str(src), "--out", str(rec)]) == 0
    with np.load(rec) as z:
        assert z["rgbsigma"].shape == (16, 16, 16, 4) and z["hidden"].mean() == pytest.approx(0.75)


def test_check_reports_every_bad_file(tmp_path: Path, shared_points: Path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ("bunny.ply", "empty.ply", "points_ascii.ply"):
        (folder / name).write_bytes((shared_points / "trimesh_models" / name).read_bytes())
    (folder / "nan.obj").write_text("v nan 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    assert main(["check", "--data", str(folder), "--config", "tiny"]) == 1
    out = capsys.readouterr().out
    assert "empty.ply: expected a mesh with vertices, found an empty scene" in out
    assert "points_ascii.ply: expected at least 512 points (n_points), found 5 points" in out
    assert "nan.obj: expected finite vertex coordinates" in out
    assert "checked 4 item(s): 1 good, 3 bad" in out


def test_pretrain_refuses_bad_files_unless_skipped(tmp_path: Path, shared_points: Path, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("bunny.ply", "fandisk.obj", "empty.stl"):
        (folder / name).write_bytes((shared_points / "trimesh_models" / name).read_bytes())
    args = ["pretrain", "--config", "tiny", "--data", str(folder), "--max-steps", "2"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 2
    assert "empty.stl" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "b"), "--skip-bad", "--set", "train.batch_size=2"]) == 0


def test_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "point_ops" in out and "torch" in out and "mae3d_pointmae" in out


def test_finetune_classifies_objects_and_probe_reports_svm(run: Path, tmp_path: Path):
    ft = tmp_path / "ft"
    assert main(["finetune", "--model", str(run / "export"), "--config", "tiny", "--out", str(ft),
                 "--max-steps", "4"]) == 0
    summary = json.loads((ft / "summary.json").read_text())
    assert 0.0 <= summary["val/acc"] <= 1.0
    head = json.loads((ft / "export" / "head.json").read_text())
    assert head["class_names"] == ["ball", "box", "can", "fruit", "tool"]
    assert main(["probe", "--model", str(run / "export"), "--config", "tiny", "--out", str(tmp_path / "p")]) == 0
    res = json.loads((tmp_path / "p" / "probe.json").read_text())
    assert set(res["pretrained"]) >= {"linear", "knn", "svm"}
    assert res["pretrained"]["svm"]["cv"] and res["pretrained"]["svm"]["n"] == 20
