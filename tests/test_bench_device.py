"""The benchmark scripts' device layer (shared/bench/benchlib.py) and bench_core's row comparisons."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "shared" / "bench"))

import bench_core  # noqa: E402
from benchlib import CPU, Device, matmul_peak, paired_ratio, time_train_step  # noqa: E402

needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the choice on a machine without CUDA")


@needs_no_cuda
def test_auto_picks_the_cpu_in_fp32_without_a_gpu():
    assert Device.pick() == Device("cpu", "fp32")
    assert Device.pick("cpu", "bf16") == Device("cpu", "bf16")


@pytest.mark.parametrize(
    ("device", "precision", "error", "match"),
    [
        ("tpu", "auto", ValueError, r"device must be auto, cpu or cuda, got 'tpu'"),
        ("cpu", "fp16", ValueError, r"precision must be auto, fp32 or bf16, got 'fp16'"),
        pytest.param("cuda", "auto", RuntimeError, r"--device cuda: torch sees no CUDA device here",
                     marks=needs_no_cuda),
    ],
)
def test_pick_rejects_what_it_cannot_run(device, precision, error, match):
    with pytest.raises(error, match=match):
        Device.pick(device, precision)


def test_bf16_autocast_runs_the_matmuls_in_bf16_and_fp32_leaves_them():
    a = torch.randn(8, 8)
    with Device("cpu", "bf16").autocast():
        assert (a @ a).dtype == torch.bfloat16
    with CPU.autocast():
        assert (a @ a).dtype == torch.float32
    assert CPU.memory().keys() == {"peak_rss_MB"}


def test_matmul_peak_is_measured_at_the_device_dtype():
    assert matmul_peak((64, 128), repeats=1) > 0
    assert matmul_peak((64,), repeats=1, device=Device("cpu", "bf16")) > 0


class _Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, batch: dict) -> SimpleNamespace:
        y = self.lin(batch["x"])
        return SimpleNamespace(loss=(y.float() - batch["x"]).pow(2).mean())


def test_time_train_step_trains_under_bf16_autocast():
    model = _Tiny()
    before = model.lin.weight.detach().clone()
    r = time_train_step(model, {"x": torch.randn(16, 4)}, steps=2, lr=1e-2, device=Device("cpu", "bf16"))
    assert r["step_s"] > 0 and r["peak_rss_MB"] > 0 and r["params_M"] == 0.0
    assert not torch.equal(model.lin.weight, before)  # the optimizer stepped
    assert model.lin.weight.dtype == torch.float32  # weights stay fp32 under autocast


def test_compare_pairs_peers_and_variants_at_the_same_batch():
    rows = [
        {"row": "matmul", "gflops": 100.0},
        {"row": "ours_vitb", "samples_per_s": 3.0, "step_s": 2.0, "model_gflops_per_s": 80.0, "peak_rss_MB": 900.0},
        {"row": "ours_vitb_ckpt", "samples_per_s": 2.0, "step_s": 3.0, "peak_rss_MB": 600.0},
        {"row": "ours_vitb_compile", "samples_per_s": 4.0, "step_s": 1.5, "peak_rss_MB": 990.0},
        {"row": "hf_vitmae", "samples_per_s": 2.0, "step_s": 3.0, "peak_rss_MB": 1000.0},
        {"row": "ours_vitb@32", "samples_per_s": 3.2, "step_s": 10.0, "peak_rss_MB": 2000.0},
        {"row": "ours_vitb_ckpt@32", "samples_per_s": 2.8, "step_s": 11.0, "peak_rss_MB": 1000.0},
        {"row": "monai_3d", "error": "RuntimeError: no"},
        {"row": "ours_3d", "samples_per_s": 1.0, "step_s": 1.0, "peak_rss_MB": 10.0},
    ]
    bench_core.compare(rows)
    by = {r["row"]: r for r in rows}
    assert by["ours_vitb"]["mfu_vs_matmul"] == 0.8
    assert by["ours_vitb"]["speed_vs_hf_vitmae"] == 1.5 and by["ours_vitb"]["memory_vs_hf_vitmae"] == 0.9
    assert by["ours_vitb_ckpt"]["time_vs_no_ckpt"] == 1.5 and by["ours_vitb_ckpt"]["memory_vs_no_ckpt"] == 0.667
    assert by["ours_vitb_compile"]["time_vs_default"] == 0.75 and by["ours_vitb_compile"]["memory_vs_default"] == 1.1
    assert by["ours_vitb_ckpt@32"]["time_vs_no_ckpt"] == 1.1 and by["ours_vitb_ckpt@32"]["memory_vs_no_ckpt"] == 0.5
    assert "speed_vs_hf_vitmae" not in by["ours_vitb@32"]  # no peer row at batch 32
    assert not any(k.startswith("speed_vs") for k in by["ours_3d"])  # the peer row failed


def test_compare_uses_the_gpu_allocator_peak_where_there_is_one():
    rows = [
        {"row": "ours_vitb", "samples_per_s": 2.0, "step_s": 1.0, "peak_rss_MB": 5000.0, "peak_alloc_MB": 300.0},
        {"row": "hf_vitmae", "samples_per_s": 1.0, "step_s": 2.0, "peak_rss_MB": 5000.0, "peak_alloc_MB": 600.0},
    ]
    bench_core.compare(rows)
    assert rows[0]["memory_vs_hf_vitmae"] == 0.5


def test_merge_rounds_keeps_the_median_run_and_every_step_time():
    runs = [{"row": "ours_vitb", "step_s": s, "peak_rss_MB": m} for s, m in ((3.0, 10.0), (2.0, 20.0), (4.0, 30.0))]
    merged = bench_core.merge_rounds(runs)
    assert merged["step_s"] == 3.0 and merged["peak_rss_MB"] == 10.0  # every number from the median run
    assert merged["step_s_rounds"] == [3.0, 2.0, 4.0]
    peaks = bench_core.merge_rounds([{"row": "matmul", "gflops": g} for g in (150.0, 190.0, 170.0)])
    assert peaks["gflops"] == 170.0 and peaks["gflops_rounds"] == [150.0, 190.0, 170.0]
    assert bench_core.merge_rounds(runs[:1]) == runs[0]


def test_merge_rounds_reports_a_failed_run():
    runs = [{"row": "hf_vitmae", "step_s": 3.0}, {"row": "hf_vitmae", "error": "MemoryError"}]
    assert bench_core.merge_rounds(runs) == {"row": "hf_vitmae", "error": "MemoryError", "failed_rounds": 1}


def test_compare_pairs_the_rounds_of_ours_and_the_peer():
    # round 2 ran in a slow minute for both rows: paired, every round says ours is 1.2x faster
    ours = {"row": "ours_vitb", "samples_per_s": 2.0, "step_s": 4.0, "step_s_rounds": [3.0, 6.0, 4.0],
            "peak_rss_MB": 900.0}
    peer = {"row": "hf_vitmae_fused", "samples_per_s": 1.667, "step_s": 4.8, "step_s_rounds": [3.6, 7.2, 4.8],
            "peak_rss_MB": 1000.0}
    ckpt = {"row": "ours_vitb_ckpt", "samples_per_s": 1.5, "step_s": 5.0, "step_s_rounds": [3.3, 7.2, 5.6],
            "peak_rss_MB": 500.0}
    bench_core.compare([ours, peer, ckpt])
    assert ours["speed_vs_hf_vitmae_fused"] == 1.2 and ours["speed_vs_hf_vitmae_fused_rounds"] == [1.2, 1.2, 1.2]
    assert ckpt["time_vs_no_ckpt"] == 1.2 and ckpt["time_vs_no_ckpt_rounds"] == [1.1, 1.2, 1.4]
    assert ours["memory_vs_hf_vitmae_fused"] == 0.9


def test_paired_ratio_takes_the_median_of_round_by_round_ratios():
    assert paired_ratio([2.0, 9.0, 3.0], [1.0, 10.0, 2.0]) == (1.5, [0.9, 1.5, 2.0])
    assert paired_ratio([1.0, 3.0], [1.0, 2.0]) == (1.25, [1.0, 1.5])  # even count: the middle two
    with pytest.raises(ValueError, match=r"two equally long, non-empty lists; got 2 and 1"):
        paired_ratio([1.0, 2.0], [1.0])
