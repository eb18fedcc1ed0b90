"""What the benchmark scripts share (they import it as a sibling module: `python shared/bench/X.py`
puts this folder first on sys.path)."""

from __future__ import annotations

import contextlib
import resource
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Timer


def time_limit(seconds: float) -> Timer:
    """Lightning's Timer, checked after every step: a pretraining run stops after ``seconds``."""
    return Timer(duration=timedelta(seconds=seconds), interval="step")


DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")


def add_device_args(ap: Any, precision: bool = True) -> None:
    """``--device`` (and ``--precision``) on a benchmark's argparse parser, as :meth:`Device.pick` takes them."""
    ap.add_argument("--device", default="auto", choices=DEVICES, help="auto: a CUDA GPU when present, else the CPU")
    if precision:
        ap.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="auto: bf16 autocast on a GPU, fp32 on the CPU")


@dataclass(frozen=True)
class Device:
    """Where a benchmark row runs and at what precision, as ``pretrain`` would run there:
    ``cuda`` with bf16 autocast when a GPU is present, else the CPU in fp32.

    ``Device.pick("auto", "auto")`` makes that choice; ``--device cpu`` or ``--precision fp32|bf16``
    override it. Peak memory is the process's RSS on the CPU and the CUDA allocator's peak on a GPU
    (``peak_alloc_MB``; RSS is reported beside it).
    """

    type: str  # "cpu" or "cuda"
    precision: str  # "fp32" or "bf16"

    @classmethod
    def pick(cls, device: str = "auto", precision: str = "auto") -> Device:
        if device not in DEVICES:
            raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be auto, fp32 or bf16, got {precision!r}")
        kind = device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        if kind == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("--device cuda: torch sees no CUDA device here")
        prec = precision if precision != "auto" else ("bf16" if kind == "cuda" else "fp32")
        return cls(kind, prec)

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.precision == "bf16" else torch.float32

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast (weights and optimizer stay fp32, as ``bf16-mixed``), or nothing in fp32."""
        if self.precision == "bf16":
            return torch.autocast(self.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def sync(self) -> None:
        """Wait for the device's queued work (a GPU runs asynchronously; timings need this)."""
        if self.type == "cuda":
            torch.cuda.synchronize()

    def memory(self) -> dict[str, float]:
        """Peak memory so far: RSS (always) and, on a GPU, the allocator's peak."""
        out = {"peak_rss_MB": round(peak_rss_mb(), 1)}
        if self.type == "cuda":
            out["peak_alloc_MB"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        return out

    def describe(self) -> str:
        prec = "bf16 autocast" if self.precision == "bf16" else "fp32"
        if self.type == "cuda":
            return f"{torch.cuda.get_device_name()}, {prec}, torch {torch.__version__}"
        return f"{torch.get_num_threads()} threads, {prec} CPU, torch {torch.__version__}"


CPU = Device("cpu", "fp32")


def peak_memory_key(row: dict[str, Any]) -> str:
    """The peak-memory column a row is compared by: the GPU allocator's peak where there is one."""
    return "peak_alloc_MB" if "peak_alloc_MB" in row else "peak_rss_MB"


def matmul_peak(sizes: tuple[int, ...] = (1024, 2048, 3072), repeats: int = 3, device: Device = CPU) -> float:
    """The machine's limit for MFU: the best ``a @ b`` GFLOP/s over square ``sizes`` at the device's
    dtype (one warm-up each, then the fastest of ``repeats``; on a GPU each timing is the mean of 10
    products between synchronisations)."""
    inner = 10 if device.type == "cuda" else 1
    best = 0.0
    for n in sizes:
        a, b = (torch.randn(n, n, device=device.type, dtype=device.dtype) for _ in range(2))
        a @ b
        device.sync()
        for _ in range(repeats):
            t = time.perf_counter()
            for _ in range(inner):
                a @ b
            device.sync()
            best = max(best, 2 * n**3 * inner / (time.perf_counter() - t) / 1e9)
    return round(best, 1)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def paired_ratio(xs: list[float], ys: list[float]) -> tuple[float, list[float]]:
    """Median of ``x_i / y_i`` over runs made one after the other (round i of one arm with round i of
    the other), and those ratios sorted. On this shared machine a run drifts 10-40 % from one minute
    to the next; pairing keeps the drift out of a ratio that two medians would let in."""
    if not xs or len(xs) != len(ys):
        raise ValueError(f"paired_ratio needs two equally long, non-empty lists; got {len(xs)} and {len(ys)}")
    pairs = sorted(round(x / y, 3) for x, y in zip(xs, ys))
    n = len(pairs)
    return round((pairs[(n - 1) // 2] + pairs[n // 2]) / 2, 3), pairs


def engine_allocator(device: Device = CPU) -> bool:
    """Set this process up as the engine sets a training process, and return whether the engine
    frees the gradients right after the optimizer step here: on a GPU always; on the CPU when glibc's
    malloc keeps freed memory (:func:`maecore.tasks.memory.keep_freed_memory`, which this calls;
    ``MAECORE_CPU_MALLOC=system`` leaves malloc alone and keeps Lightning's order)."""
    if device.type != "cpu":
        return True
    from maecore.tasks.memory import keep_freed_memory

    return keep_freed_memory()


def backward_step(loss: torch.Tensor, opt: torch.optim.Optimizer, free_early: bool) -> None:
    """Backward and optimizer step in the engine's gradient order: the gradients are freed right after
    the step when ``free_early`` (:func:`engine_allocator`), else just before the backward, after the
    forward pass (where Lightning frees them)."""
    if not free_early:
        opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if free_early:
        opt.zero_grad(set_to_none=True)


def time_train_step(model: torch.nn.Module, batch: dict[str, Any], steps: int, lr: float = 1e-4,
                    device: Device = CPU) -> dict[str, Any]:
    """Median wall time of ``steps`` pretraining steps (forward, backward, AdamW) after one warm-up
    on ``device``, the parameter count, the peak memory (``Device.memory``) and how much this call
    added to the process's peak RSS."""
    model.to(device.type)
    batch = {k: v.to(device.type) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    free_early = engine_allocator(device)
    rss0 = peak_rss_mb()
    times = []
    for _ in range(steps + 1):
        t = time.perf_counter()
        with device.autocast():
            out = model(batch)
        backward_step(out.loss, opt, free_early)
        device.sync()
        times.append(time.perf_counter() - t)
    step = float(np.median(times[1:]))
    return {"params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2), "step_s": round(step, 6),
            **device.memory(), "rss_growth_MB": round(peak_rss_mb() - rss0, 1)}
