"""bench_malloc: the same training with glibc's malloc as it is and keeping freed memory."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "shared" / "bench"))

import bench_malloc  # noqa: E402
from benchlib import backward_step  # noqa: E402


def test_a_row_runs_each_way_and_reports_the_modes_it_measured():
    r = bench_malloc.row("maecore", rounds=1, steps=3)
    assert r["kept"] is (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")
    assert r["system_sps"] > 0 and r["keep_sps"] > 0 and r["system_rss_mb"] > 100
    assert r["speedup"] == r["speedup_rounds"][0] == round(r["keep_sps_runs"][0] / r["system_sps_runs"][0], 3)


def test_a_failing_run_is_reported_with_its_error():
    with pytest.raises(RuntimeError, match=r"(?s)maecore \(keep\) exited \d+:.*train.max_steps must be >= 1, got -1"):
        bench_malloc.run_once("maecore", "keep", steps=-1)


@pytest.mark.parametrize("free_early", [False, True])
def test_backward_step_frees_the_gradients_where_the_engine_does(free_early):
    import torch

    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([w], lr=0.1)
    (w * 2).sum().backward()  # a stale gradient from the step before
    backward_step((w * 3).sum(), opt, free_early)
    assert (w.grad is None) is free_early
    # Lightning's order zeroes a stale gradient before the backward (the step uses 3); the early
    # order had freed it after the step before, so here it adds up (2 + 3)
    assert torch.allclose(w.detach(), torch.full((3,), 0.5 if free_early else 0.7))
