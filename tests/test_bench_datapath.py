"""bench_datapath's measure of the engine's fixed per-step cost (a model that costs nothing)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "shared" / "bench"))

import bench_datapath  # noqa: E402

from maecore.tasks import TrainConfig  # noqa: E402


def test_null_model_uses_the_first_float_tensor_and_trains():
    model = bench_datapath.NullModel()
    batch = {"ids": torch.arange(3), "x": torch.full((3, 2, 5), 2.0)}
    out = model(batch)
    assert float(out.loss) == 8.0  # 4 weights of 1 times a mean of 2
    out.loss.backward()
    assert torch.equal(model.w.grad, torch.full((4,), 2.0))
    assert model.encode(batch).shape == (3, 4)
    batch["x"][0, 0, 0] = float("nan")  # a nodata pixel: the loss stays finite, or the engine stops the run
    assert torch.isfinite(model(batch).loss)


def test_engine_fixed_cost_is_measured_and_leaves_nothing_behind():
    held = [{"x": torch.randn(2, 8)} for _ in range(8)]
    tc = TrainConfig(max_steps=12, batch_size=4, log_every=5, ckpt_every=13, progress=False, accelerator="cpu")
    before = set(Path(tempfile.gettempdir()).glob("datapath-null-*"))
    ms = bench_datapath.engine_fixed_ms(held, tc, warmup=2)
    assert 0.0 < ms < 1000.0
    assert set(Path(tempfile.gettempdir()).glob("datapath-null-*")) == before
