"""End to end: the core's own CLI (`maecore ...`) on the bundled real Landsat crop, on CPU."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from maecore.cli.demo import main
from maecore.models import load_pretrained
from maecore.sample import sample_path


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "run"
    assert main(["pretrain", "--config", "tiny", "--out", str(out), "--max-steps", "12"]) == 0
    return out


def test_pretrain_writes_the_run_folder(run: Path):
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["train"]["max_steps"] == 12
    assert (run / "export" / "model.safetensors").is_file()
    exported = json.loads((run / "export" / "config.json").read_text())
    assert exported["model"] == "mae_vit_tiny"
    assert len(exported["meta"]["norm_mean"]) == 3
    assert (run / "figures" / "reconstruction.png").stat().st_size > 10_000
    assert (run / "checkpoints" / "last.ckpt").is_file()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 12
    assert np.isfinite(summary["final_loss"])
    metrics = Path(summary["metrics_csv"]).read_text().splitlines()
    assert "train/loss" in metrics[0]


def test_the_same_command_gives_the_same_weights_and_the_seed_changes_them(tmp_path: Path):
    runs = {}
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        torch.rand(7)  # whatever the process drew before must not matter
        assert main(["pretrain", "--config", "tiny", "--out", str(tmp_path / name), "--max-steps", "2",
                     "--seed", seed]) == 0
        runs[name] = load_file(tmp_path / name / "export" / "model.safetensors")
    assert all(torch.equal(runs["a"][k], runs["b"][k]) for k in runs["a"])
    assert not all(torch.equal(runs["a"][k], runs["c"][k]) for k in runs["a"])


def test_resume_auto_continues_to_new_max_steps(run: Path, tmp_path: Path):
    import shutil

    copy = tmp_path / "resumed"
    shutil.copytree(run, copy)
    assert main(["pretrain", "--config", "tiny", "--out", str(copy), "--max-steps", "16", "--resume", "auto"]) == 0
    assert json.loads((copy / "summary.json").read_text())["steps"] == 16


def test_embed_and_reconstruct_from_the_export(run: Path, tmp_path: Path):
    emb = tmp_path / "emb.npz"
    assert main(["embed", "--model", str(run / "export"), "--out", str(emb)]) == 0
    with np.load(emb) as z:
        assert z["embeddings"].shape == (8, 8, 64)  # 256 px / 32 px chips, 64-wide tiny encoder
        assert np.isfinite(z["embeddings"]).all()
    rec, png = tmp_path / "rec.npz", tmp_path / "rec.png"
    assert main(["reconstruct", "--model", str(run / "export"), "--out", str(rec), "--plot", str(png)]) == 0
    with np.load(rec) as z, np.load(sample_path()) as src:
        assert z["image"].shape == src["image"].shape
        hidden = z["hidden"]
        assert 0.7 < hidden.mean() < 0.8  # 75 % masking
        # visible pixels come back exactly (up to float32 normalisation round trip)
        np.testing.assert_allclose(z["image"][~hidden], src["image"].astype(np.float32)[~hidden], atol=1e-3)
    assert png.stat().st_size > 10_000
    model = load_pretrained(run / "export")
    assert model.meta["domain"] == "maecore"


def test_check_reports_every_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    folder = tmp_path / "data"
    folder.mkdir()
    np.savez(folder / "good.npz", image=np.random.default_rng(0).random((3, 40, 40)).astype(np.float32))
    np.save(folder / "flat.npy", np.zeros((40, 40)))
    (folder / "junk.npz").write_bytes(b"not a zip file")
    assert main(["check", "--data", str(folder)]) == 1
    out = capsys.readouterr().out
    assert "flat.npy: expected an image array [C, H, W], found shape [40, 40]" in out
    assert "junk.npz: expected a readable NumPy array file" in out
    assert "checked 3 item(s): 1 good, 2 bad" in out


def test_pretrain_refuses_bad_files_unless_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    folder = tmp_path / "data"
    folder.mkdir()
    np.savez(folder / "good.npz", image=np.random.default_rng(0).random((3, 64, 64)).astype(np.float32))
    (folder / "junk.npz").write_bytes(b"\x00" * 10)
    args = ["pretrain", "--config", "tiny", "--data", str(folder), "--max-steps", "2"]
    assert main([*args, "--out", str(tmp_path / "r1")]) == 2
    assert "junk.npz" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "r2"), "--skip-bad"]) == 0
    assert "skipped" in capsys.readouterr().out


def test_unknown_set_key_is_an_error_listing_valid_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["pretrain", "--out", str(tmp_path / "r"), "--set", "train.learning_rate=1"]) == 2
    assert "valid keys in train:" in capsys.readouterr().err


def test_info_lists_models(capsys: pytest.CaptureFixture[str]):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "mae_vit_base" in out and "bundled_sample" in out
    assert re.search(r"cpu_malloc: (keeps freed memory when training on the CPU|as it is)", out)


def test_info_says_malloc_is_left_alone_and_refuses_a_bad_setting(capsys, monkeypatch):
    monkeypatch.setenv("MAECORE_CPU_MALLOC", "system")
    assert main(["info"]) == 0
    assert "cpu_malloc: as it is (MAECORE_CPU_MALLOC=system)" in capsys.readouterr().out
    monkeypatch.setenv("MAECORE_CPU_MALLOC", "tcmalloc")
    assert main(["info"]) == 2
    assert "MAECORE_CPU_MALLOC must be one of keep, system; got 'tcmalloc'" in capsys.readouterr().err


def test_finetune_and_probe_on_a_task_defined_from_the_data(run: Path, tmp_path: Path, capsys):
    ft = tmp_path / "ft"
    assert main(["finetune", "--model", str(run / "export"), "--config", "tiny", "--out", str(ft),
                 "--max-steps", "6"]) == 0
    summary = json.loads((ft / "summary.json").read_text())
    assert 0.0 <= summary["val/acc"] <= 1.0 and summary["steps"] == 6
    assert (ft / "export" / "head.safetensors").is_file()
    pr = tmp_path / "probe"
    assert main(["probe", "--model", str(run / "export"), "--config", "tiny", "--out", str(pr)]) == 0
    res = json.loads((pr / "probe.json").read_text())
    for which in ("pretrained", "random_init"):
        assert 0.0 <= res[which]["linear"]["accuracy"] <= 1.0
        assert res[which]["linear"]["n"] == 64  # tiny config: 64 chips


def test_a_domain_can_replace_a_verb_but_not_invent_one(capsys: pytest.CaptureFixture[str]):
    from maecore.cli.app import build_cli
    from maecore.cli.demo import ImageDomain

    calls = []
    main = build_cli(ImageDomain(), commands={"info": lambda domain, args: calls.append(args.verb) or 0})
    assert main(["info"]) == 0 and calls == ["info"]
    with pytest.raises(ValueError, match=r"unknown verb\(s\) \['segment'\]; the verbs are pretrain, finetune"):
        build_cli(ImageDomain(), commands={"segment": lambda domain, args: 0})
