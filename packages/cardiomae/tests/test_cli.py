"""End to end on CPU with the tiny config: pretrain, resume, embed, reconstruct, finetune, probe,
prepare, check, info."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import wfdb

from cardiomae.cli import main
from cardiomae.io import read_wfdb


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cardiomae") / "run"
    assert main(["pretrain", "--config", "tiny", "--out", str(out)]) == 0
    return out


def test_pretrain_run_folder(run: Path):
    for rel in ("config.yaml", "metrics.csv", "checkpoints/last.ckpt", "export/model.safetensors",
                "export/config.json", "figures/reconstruction.png"):
        assert (run / rel).is_file(), rel
    cfg = json.loads((run / "export" / "config.json").read_text())
    assert cfg["model"] == "cardiomae_tiny"
    meta = cfg["meta"]
    assert meta["prep"]["fs"] == 250 and meta["prep"]["window_s"] == 4.0 and meta["prep"]["lead_map"]["MLII"] == "II"
    assert len(meta["norm"]["std"]) == 13 and meta["norm"]["window"][-1] is True  # PPG z-scored per window
    assert [Path(r).name for r in meta["records"]] == ["03700181", "100", "a103l", "s0010_re", "v102s"]
    assert (run / "figures" / "reconstruction.png").stat().st_size > 20_000
    steps = [int(row.split(",")[1]) for row in (run / "metrics.csv").read_text().splitlines()[1:]]
    assert max(steps) >= 5


def test_resume_continues(run: Path, tmp_path: Path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    assert main(["pretrain", "--config", "tiny", "--out", str(copy), "--max-steps", "8", "--resume", "auto"]) == 0
    assert json.loads((copy / "summary.json").read_text())["steps"] == 8


def _printed_json(text: str) -> dict:
    return json.loads(text[text.index("{"):])


def test_reconstruct_chest_leads_as_wfdb(run: Path, tmp_path: Path, sample: Path, capsys):
    out, png = tmp_path / "s10_syn", tmp_path / "s10.png"
    assert main(["reconstruct", "--model", str(run / "export"), "--input", str(sample / "s0010_re"),
                 "--have", "I,II,III", "--want", "V1,V2,V3,V4,V5,V6", "--out", str(out), "--plot", str(png)]) == 0
    result = _printed_json(capsys.readouterr().out)
    ours, base = result["metrics_vs_input"], result["baseline"]
    assert list(ours) == list(base["metrics_vs_input"]) == ["V1", "V2", "V3", "V4", "V5", "V6"]
    assert base["method"].startswith("least-squares linear mix (with intercept) of i,ii,iii, fitted and scored "
                                     "on this record's own V1,V2,V3,V4,V5,V6 (optimistic")
    for lead, score in base["metrics_vs_input"].items():  # the same metric over the same samples as ours
        assert score["n"] == ours[lead]["n"] == 9600 and 0 < score["rmse_mv"] < 1
        assert 0.3 < score["pearson_r"] < 1  # the limb leads explain part of every chest lead, never all
    rec = wfdb.rdrecord(str(out))
    src = wfdb.rdrecord(str(sample / "s0010_re"))
    assert rec.sig_name == ["i", "ii", "iii", "V1", "V2", "V3", "V4", "V5", "V6"]
    assert rec.fs == 1000 and rec.sig_len == src.sig_len and rec.units == ["mV"] * 9
    step = (src.p_signal[:, :3].max(0) - src.p_signal[:, :3].min(0)) / 32000  # 16-bit quantisation
    assert (np.abs(rec.p_signal[:, :3] - src.p_signal[:, :3]) <= step).all()  # given leads as they were
    syn = rec.p_signal[:, 3:]
    assert np.isfinite(syn).all() and (syn.std(0) > 0).all()
    assert "synthesised from i,ii,iii" in " ".join(rec.comments)
    assert png.stat().st_size > 20_000


def test_reconstruct_keeps_a_multifrequency_input(run: Path, tmp_path: Path, sample: Path, capsys):
    out = tmp_path / "mcl"
    assert main(["reconstruct", "--model", str(run / "export"), "--input", str(sample / "03700181.hea"),
                 "--have", "MCL1", "--want", "II,PPG", "--out", str(out)]) == 0
    back = read_wfdb(out)
    assert back.names == ["MCL1", "II", "PPG"] and back.units == ["mV", "mV", "NU"]
    result = _printed_json(capsys.readouterr().out)
    assert result["metrics_vs_input"] == {} and "baseline" not in result  # no II or PPG here to score against
    assert back.fs == [500.0, 500.0, 500.0] and [len(s) for s in back.signals] == [90000] * 3


def test_reconstruct_refuses_bad_requests(run: Path, tmp_path: Path, sample: Path, capsys):
    base = ["reconstruct", "--model", str(run / "export"), "--input", str(sample / "100"), "--out", str(tmp_path / "o")]
    assert main([*base, "--have", "I", "--want", "V5"]) == 2
    assert "expected lead 'I' (--have), found leads MLII, V5" in capsys.readouterr().err
    assert main([*base, "--have", "MLII", "--want", "V7"]) == 2
    assert "--want leads among the model's leads" in capsys.readouterr().err
    assert main([*base, "--have", "MLII", "--want", "II"]) == 2  # MLII feeds the II slot
    assert "not among the given leads" in capsys.readouterr().err


def test_embed_per_window_and_record(run: Path, tmp_path: Path, sample: Path):
    folder = tmp_path / "two"
    folder.mkdir()
    for f in ("s0010_re.hea", "s0010_re.dat", "s0010_re.xyz", "a103l.hea", "a103l.mat"):
        shutil.copy(sample / f, folder / f)
    out = tmp_path / "emb.npz"
    assert main(["embed", "--model", str(run / "export"), "--input", str(folder), "--out", str(out)]) == 0
    with np.load(out) as z:
        emb, rec_emb, idx = z["window_embeddings"], z["record_embeddings"], z["window_record"]
        assert [Path(r).name for r in z["records"]] == ["a103l", "s0010_re"]
        assert rec_emb.shape == (2, 64) and emb.shape[1] == 64 and len(idx) == len(emb) == len(z["window_start_s"])
        assert np.bincount(idx).tolist() == [83, 10]  # 330 s and 38.4 s in 4 s windows, the last at the end
        assert z["window_start_s"][idx == 1][-1] == pytest.approx(38.4 - 4.0)
        np.testing.assert_allclose(rec_emb[1], emb[idx == 1].mean(0), rtol=1e-5)
        assert z["record_leads"].tolist() == ["II,PPG", "I,II,III,aVR,aVL,aVF,V1,V2,V3,V4,V5,V6"]
        assert np.isfinite(emb).all() and emb.std(0).mean() > 0
    one = tmp_path / "one.npz"
    assert main(["embed", "--model", str(run / "export"), "--input", str(sample / "s0010_re"), "--leads", "I",
                 "--out", str(one)]) == 0
    with np.load(one) as z:
        assert not np.allclose(z["window_embeddings"], emb[idx == 1])  # a lead subset changes the embedding


def test_finetune_heart_rate_and_beat_classes(run: Path, tmp_path: Path, sample: Path):
    one = str(sample / "100")
    assert main(["finetune", "--model", str(run / "export"), "--config", "tiny", "--data", one,
                 "--out", str(tmp_path / "hr")]) == 0
    summary = json.loads((tmp_path / "hr" / "summary.json").read_text())
    assert summary["task"] == "regression" and np.isfinite(summary["val/mae"])
    assert (tmp_path / "hr" / "export" / "head.safetensors").is_file()
    assert main(["finetune", "--model", str(run / "export"), "--config", "tiny", "--target", "annotations",
                 "--data", one, "--out", str(tmp_path / "ann")]) == 0
    head = json.loads((tmp_path / "ann" / "export" / "head.json").read_text())
    assert head["task"] == "multilabel" and head["class_names"] == ["N", "S", "V"]


def test_finetune_from_a_label_csv(run: Path, tmp_path: Path):
    labels = tmp_path / "labels.csv"
    labels.write_text("record,rhythm\n100,sinus\na103l,alarm\nv102s,alarm\ns0010_re,sinus\n03700181,sinus\n")
    assert main(["finetune", "--model", str(run / "export"), "--config", "tiny", "--labels", str(labels),
                 "--out", str(tmp_path / "csv")]) == 0
    head = json.loads((tmp_path / "csv" / "export" / "head.json").read_text())
    assert head["task"] == "classification" and head["class_names"] == ["alarm", "sinus"]


def test_probe_beats_against_random(run: Path, tmp_path: Path, sample: Path, capsys):
    assert main(["probe", "--model", str(run / "export"), "--config", "tiny", "--data", str(sample / "100"),
                 "--out", str(tmp_path / "p")]) == 0
    res = json.loads((tmp_path / "p" / "probe.json").read_text())
    assert "592 annotated beats: 576 N, 16 S/V" in capsys.readouterr().out
    for who in ("pretrained", "random_init"):
        lin = res[who]["linear"]
        assert lin["n"] == 592 and lin["cv"] == "leave-one-group-out" and 0 <= lin["auroc"] <= 1


def test_prepare_then_pretrain_from_prepared(tmp_path: Path, sample: Path):
    out = tmp_path / "prep"
    assert main(["prepare", "--config", "tiny", "--data", str(sample / "a103l"), "--out", str(out)]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["records"] == 1 and stats["windows"] == 83  # 330 s in 4 s windows
    with np.load(out / "a103l.npz") as z:
        assert z["sig_name"].tolist() == ["II", "PPG"] and z["fs"] == 250 and z["signal"].shape == (82500, 2)
    assert main(["pretrain", "--config", "tiny", "--data", str(out), "--max-steps", "2",
                 "--out", str(tmp_path / "r")]) == 0


def test_check_reports_every_bad_record(tmp_path: Path, sample: Path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for f in ("a103l.hea", "a103l.mat", "100.hea"):  # a103l is good; 100 lost its .dat
        shutil.copy(sample / f, folder / f)
    shutil.copy(sample / "s0010_re.hea", folder / "short.hea")
    (folder / "short.hea").write_text((sample / "s0010_re.hea").read_text().replace("s0010_re", "short"))
    (folder / "short.dat").write_bytes(b"\0" * 1000)
    (folder / "short.xyz").write_bytes((sample / "s0010_re.xyz").read_bytes())
    assert main(["check", "--data", str(folder), "--config", "tiny"]) == 1
    out = capsys.readouterr().out
    assert "100.dat: expected the signal file named in 100.hea, found no such file" in out
    assert "short.dat: expected 921600 bytes" in out and "shorter than its header says" in out
    assert "checked 3 item(s): 1 good, 2 bad" in out


def test_pretrain_refuses_a_bad_record_unless_skipped(tmp_path: Path, sample: Path, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    for f in ("a103l.hea", "a103l.mat", "100.hea"):
        shutil.copy(sample / f, folder / f)
    assert main(["pretrain", "--config", "tiny", "--data", str(folder), "--out", str(tmp_path / "r1")]) == 2
    assert "1 bad recording(s)" in capsys.readouterr().err
    assert main(["pretrain", "--config", "tiny", "--data", str(folder), "--skip-bad", "--max-steps", "2",
                 "--out", str(tmp_path / "r2")]) == 0
    out = capsys.readouterr().out
    assert "skipped" in out and "100.dat: expected the signal file" in out


def test_unknown_config_key_and_info(capsys):
    assert main(["pretrain", "--set", "data.sampling=250"]) == 2
    assert "unknown config key 'data.sampling'" in capsys.readouterr().err
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "cardiomae_csfm_tiny" in out and "lead_slots: I, II, III, aVR" in out
