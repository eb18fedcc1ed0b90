"""shared/bench/targets.py: issue 8's targets read from result files, and report.py's page that leads with them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "shared" / "bench"))

import report  # noqa: E402
import targets  # noqa: E402


def _core(**rows: dict) -> dict:
    return {"device": "cpu", "rows": [{"row": k, **v} for k, v in rows.items()]}


def _target(res: dict, words: str) -> dict[str, str]:
    """The evaluated row of the target whose text contains ``words``."""
    return next(r for r in targets.evaluate(res) if words in r["target"])


def test_every_target_says_not_measured_without_result_files():
    rows = targets.evaluate({})
    assert len(rows) == len(targets.TARGETS)
    assert {r["verdict"] for r in rows} == {"not measured"}
    assert any("bench_datapath.json missing" in r["measured"] for r in rows)


def test_peer_verdict_uses_the_fused_twin_and_the_paired_rounds():
    ours = {"speed_vs_hf_vitmae_fused": 1.02, "memory_vs_hf_vitmae_fused": 0.99,
            "speed_vs_hf_vitmae_fused_rounds": [0.97, 1.02, 1.05], "speed_vs_hf_vitmae": 1.1,
            "memory_vs_hf_vitmae": 0.98, "mfu_vs_matmul": 0.7}
    res = {"bench_core_peers": _core(ours_vitb=ours, hf_vitmae_fused={}),
           "bench_core": _core(ours_vitb={**ours, "speed_vs_hf_vitmae_fused": 0.9}, hf_vitmae_fused={})}
    text, met, source = targets.peers("ours_vitb", "hf_vitmae")(res)
    assert met and source == "bench_core_peers"  # the paired file wins over the single run
    assert "1.02x speed (rounds 0.97-1.05), 0.99x memory" in text and "vs hf_vitmae: 1.10x speed" in text
    slower = {**ours, "speed_vs_hf_vitmae_fused": 0.98}
    assert targets.peers("ours_vitb", "hf_vitmae")({"bench_core": _core(ours_vitb=slower, hf_vitmae_fused={})})[1] is False
    with pytest.raises(targets.NotMeasured, match=r"rows ours_3d, monai_3d_fused missing"):
        targets.peers("ours_3d", "monai_3d")(res)


def test_checkpointing_is_met_at_the_batches_that_meet_both_limits():
    res = {"bench_core": _core(**{
        "ours_vitb_ckpt": {"batch": 8, "memory_vs_no_ckpt": 0.94, "time_vs_no_ckpt": 1.22},
        "ours_vitb_ckpt@64": {"batch": 64, "memory_vs_no_ckpt": 0.57, "time_vs_no_ckpt": 1.06},
        "ours_vitb_ckpt@128": {"batch": 128, "memory_vs_no_ckpt": 0.5, "time_vs_no_ckpt": 1.4},  # too slow
    })}
    text, met, _ = targets.checkpointing(res)
    assert met and text.endswith("(met at batch 64)")
    assert "b8: -6 % memory at 1.22x time" in text


def test_data_path_needs_every_domain_at_0_9():
    rows = [{"domain": "geomae", "ratio": 0.93, "ratio_bound": 0.97},
            {"domain": "medmae", "ratio": 0.85, "ratio0": 0.88, "ratio_bound": 0.95}]
    text, met, _ = targets.data_path({"bench_datapath": {"domains": rows}})
    assert not met and "medmae 0.85 (0 workers 0.88, engine bound 0.95)" in text and "geomae 0.93 (engine" in text
    assert targets.data_path({"bench_datapath": {"domains": rows[:1]}})[1] is True
    cache = [{"case": "bundled", "cache": "memory", "speedup": 41.0}, {"case": "bundled", "cache": "none", "speedup": 1.3}]
    assert targets.mri_cache({"bench_datapath": {"medmae_cache": cache}}) == ("bundled: 41.0x", True, "bench_datapath")


def test_point_ops_report_the_slowest_ratio_of_each_op():
    ratios = [{"N": 1024, "fps_ms_time_ours_over_pytorch3d": 0.9, "knn_ms_time_ours_over_pytorch3d": 0.5},
              {"N": 32768, "fps_ms_time_ours_over_pytorch3d": 0.3, "knn_ms_time_ours_over_pytorch3d": 1.2}]
    text, met, _ = targets.point_ops({"bench_pointops": {"ratios_vs_pytorch3d": ratios}})
    assert not met and "fps 0.90 (N=1024), knn 1.20 (N=32768)" in text and "N=1024-32768" in text
    with pytest.raises(targets.NotMeasured, match="without pytorch3d"):
        targets.point_ops({"bench_pointops": {"ratios_vs_pytorch3d": []}})


def test_gpu_row_counts_only_files_from_a_gpu():
    assert _target({"bench_core": {"device": "cpu", "rows": []}}, "on a GPU")["verdict"] == "not measured"
    row = _target({"bench_core_gpu": {"device": "cuda", "rows": []}}, "on a GPU")
    assert row["measured"] == "GPU result files: bench_core_gpu" and row["verdict"] == "-"


def test_report_page_leads_with_the_targets(tmp_path, monkeypatch):
    (tmp_path / "bench_datapath.json").write_text(json.dumps(
        {"machine": "test box", "domains": [{"domain": "skelmae", "ratio": 0.95, "ratio_bound": 0.97}]}))
    monkeypatch.setattr(sys, "argv", ["report.py", "--results", str(tmp_path)])
    report.main()
    page = (tmp_path / "README.md").read_text()
    assert page.index("## Targets (issue 8)") < page.index("## bench_datapath")
    assert "| skelmae 0.95 (engine bound 0.97) | met | bench_datapath |" in page
    assert "Machine: test box" in page
