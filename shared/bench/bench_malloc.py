"""CPU allocator benchmark: training with glibc's malloc as it is against malloc keeping freed memory.

On the CPU the engine raises glibc's mmap and trim thresholds (``maecore.tasks.memory``), so the
memory a step frees is reused by the next one instead of going back to the system, and then frees
the gradients right after the optimizer step. ``MAECORE_CPU_MALLOC=system`` turns both off. Each
row runs the same training twice per round, once each way, in fresh processes, alternating which
goes first, and reports the median over --rounds:

- ``<domain>`` rows: ``<domain> pretrain --config tiny --max-steps N`` on the bundled sample (as a
  user runs it: its workers, logging, checkpoints, validation and figures), samples/s from the
  run's ``summary.json`` (from the first step to the last);
- ``vitb2d`` (batch 8, 224 px) and ``vitb3d`` (batch 1, 96^3): ``run_pretrain`` around the ViT-B/16
  MAE on random tensors held in memory, 0 workers; the median step-to-step time after the first.

Peak RSS and the minor page faults are the training process's own (workers excluded); faults are
per step for the ViT-B rows and per run for the domain rows. speedup = the median over rounds of
keep samples/s over system samples/s in the same round (``speedup_rounds`` lists them;
``benchlib.paired_ratio``); rss_ratio = keep peak RSS over system peak RSS (medians).

usage: python shared/bench/bench_malloc.py [--rounds 5] [--steps 300] [--rows maecore,...,vitb3d]
       [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench_startup import CLIS, cli_module, last_json
from benchlib import paired_ratio

VITB = ("vitb2d", "vitb3d")
MODES = ("system", "keep")

_CLI_RUN = """
import json, resource, sys
from importlib import import_module
module, out = sys.argv[1], sys.argv[2]
sys.argv = [module, "pretrain", *sys.argv[3:], "--out", out]
try:
    rc = import_module(module).main() or 0
except SystemExit as e:
    rc = e.code if isinstance(e.code, int) else 1
from maecore.tasks.memory import freed_memory_kept
use = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"rc": rc, "kept": freed_memory_kept(), "rss_mb": use.ru_maxrss / 1024, "faults": use.ru_minflt}))
"""

_VITB_RUN = """
import json, resource, statistics, sys, tempfile, time
import torch
from lightning.pytorch.callbacks import Callback
from maecore.models import create_model
from maecore.tasks import TrainConfig, run_pretrain
from maecore.tasks.memory import freed_memory_kept
ndim, steps = int(sys.argv[1]), int(sys.argv[2])
batch, side = (8, 224) if ndim == 2 else (1, 96)
torch.manual_seed(0)
dec = {} if ndim == 2 else dict(decoder_dim=384, decoder_depth=4, decoder_heads=12)
model = create_model("mae_vit_base", ndim=ndim, group_channels=[3 if ndim == 2 else 1], patch_size=16,
                     mask={"kind": "random", "ratio": 0.75}, **dec)
data = [{"x": torch.randn(3 if ndim == 2 else 1, *([side] * ndim))} for _ in range(batch * 4)]
class Clock(Callback):
    def __init__(self):
        self.t, self.f = [], []
    def on_train_batch_start(self, *args):
        self.t.append(time.perf_counter())
        self.f.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
clock = Clock()
cfg = TrainConfig(max_steps=steps, batch_size=batch, warmup_steps=1, ckpt_every=10**6, progress=False,
                  accelerator="cpu")
with tempfile.TemporaryDirectory() as tmp:
    run_pretrain(model, data, tmp, cfg, callbacks=[clock], logger=False)
dt = [b - a for a, b in zip(clock.t[1:], clock.t[2:])]
df = [b - a for a, b in zip(clock.f[1:], clock.f[2:])]
print(json.dumps({"rc": 0, "kept": freed_memory_kept(), "samples_per_s": batch / statistics.median(dt),
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "faults": statistics.median(df)}))
"""


def run_once(name: str, mode: str, steps: int) -> dict[str, Any]:
    """One training run of row ``name`` with ``MAECORE_CPU_MALLOC=mode`` in a fresh interpreter."""
    env = dict(os.environ, MAECORE_CPU_MALLOC=mode)
    with tempfile.TemporaryDirectory() as tmp:
        if name in VITB:
            args = [_VITB_RUN, "2" if name == "vitb2d" else "3", str(steps)]
        else:
            args = [_CLI_RUN, str(cli_module(name)), str(Path(tmp) / "run"), "--config", "tiny",
                    "--max-steps", str(steps), "--set", "train.progress=false"]
        res = subprocess.run([sys.executable, "-c", *args], capture_output=True, text=True, env=env, check=False)
        out = last_json(res, f"{name} ({mode})")
        if out["rc"] != 0:
            raise RuntimeError(f"{name} ({mode}) exited {out['rc']}:\n{res.stderr[-2000:]}")
        if name not in VITB:
            out["samples_per_s"] = json.loads((Path(tmp) / "run" / "summary.json").read_text())["samples_per_s"]
    return out


def row(name: str, rounds: int, steps: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    for r in range(rounds):
        for mode in MODES if r % 2 == 0 else MODES[::-1]:
            runs[mode].append(run_once(name, mode, steps))
    out: dict[str, Any] = {"row": name, "steps": steps}
    for mode in MODES:
        out[f"{mode}_sps"] = round(statistics.median(x["samples_per_s"] for x in runs[mode]), 2)
        out[f"{mode}_rss_mb"] = round(statistics.median(x["rss_mb"] for x in runs[mode]))
        out[f"{mode}_faults"] = round(statistics.median(x["faults"] for x in runs[mode]))
        out[f"{mode}_sps_runs"] = [round(x["samples_per_s"], 2) for x in runs[mode]]
    out["kept"] = runs["keep"][0]["kept"]
    out["speedup"], out["speedup_rounds"] = paired_ratio(out["keep_sps_runs"], out["system_sps_runs"])
    out["rss_ratio"] = round(out["keep_rss_mb"] / out["system_rss_mb"], 3)
    return out


COLS = ("row", "kept", "system_sps", "keep_sps", "speedup", "system_rss_mb", "keep_rss_mb", "rss_ratio",
        "system_faults", "keep_faults")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=300, help="optimizer steps of a domain row (ViT-B rows: 6)")
    ap.add_argument("--rows", default=",".join((*CLIS, *VITB)), help="comma separated")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    names = a.rows.split(",")
    bad = sorted(set(names) - {*CLIS, *VITB})
    if bad:
        ap.error(f"unknown row(s) {bad}; rows: {', '.join((*CLIS, *VITB))}")
    names = [n for n in names if n in VITB or cli_module(n) is not None]
    print(" | ".join(COLS), flush=True)
    rows = []
    for n in names:
        rows.append(row(n, a.rounds, 6 if n in VITB else a.steps))
        print(" | ".join(str(rows[-1][c]) for c in COLS), flush=True)
    if a.json:
        machine = f"{platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}, " \
                  f"{' '.join(platform.libc_ver())}"
        a.json.write_text(json.dumps({"machine": machine, "rounds": a.rounds, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
