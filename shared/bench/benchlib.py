"""What the benchmark scripts share (they import it as a sibling module: `python shared/bench/X.py`
puts this folder first on sys.path)."""

from __future__ import annotations

import resource
import time
from datetime import timedelta
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Timer


def time_limit(seconds: float) -> Timer:
    """Lightning's Timer, checked after every step: a pretraining run stops after ``seconds``."""
    return Timer(duration=timedelta(seconds=seconds), interval="step")


def matmul_peak(sizes: tuple[int, ...] = (1024, 2048, 3072), repeats: int = 3) -> float:
    """The machine's limit for MFU: best fp32 ``a @ b`` GFLOP/s over square ``sizes`` (one warm-up
    each, then the fastest of ``repeats``)."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        for _ in range(repeats):
            t = time.perf_counter()
            a @ b
            best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return round(best, 1)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_train_step(model: torch.nn.Module, batch: dict[str, Any], steps: int, lr: float = 1e-4) -> dict[str, Any]:
    """Median wall time of ``steps`` pretraining steps (forward, backward, AdamW) after one warm-up,
    the parameter count, the process's peak RSS and how much this call added to it."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    rss0 = peak_rss_mb()
    times = []
    for _ in range(steps + 1):
        t = time.perf_counter()
        out = model(batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    step = float(np.median(times[1:]))
    return {"params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2), "step_s": round(step, 3),
            "peak_rss_MB": round(peak_rss_mb(), 1), "rss_growth_MB": round(peak_rss_mb() - rss0, 1)}
