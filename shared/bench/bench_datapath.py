"""Data-path benchmark (issue 8: "data never starves training"). Prints tables; writes JSON with --json.

Targets: each domain's end-to-end pretraining at its tiny config delivers at least 0.9 of the
model-only step throughput; the MRI memory cache makes the second epoch at least 10x faster.

Rows, each in its own process (a crash is reported in its row; the other rows still run):
1. One row per domain (maecore demo, medmae, geomae, cardiomae, mae3d, skelmae) at ``--config tiny``
   (the package's configs/tiny.yaml over default.yaml, as the CLI merges them), on the package's
   bundled sample, the dataset and model built as ``<domain> pretrain`` builds them:
   - model_sps: the model alone: the engine loader's first batches (same seed and order) held in
     memory, forward, backward, the engine's AdamW (same model, batch size, threads); samples/s
     over --steps after --warmup;
   - loader0_sps, loaderW_sps: the engine's training loader alone (``make_loader``, no model) with
     0 and with --workers workers; samples/s over the batches after the warm-up ones;
   - e2e_sps: ``run_pretrain`` (Lightning, train.num_workers=--workers, metrics CSV as the CLI
     writes it, every 10 steps as the default configs log, not every 2-5 as the test-sized tiny
     ones) for warm-up + --steps optimizer steps; samples/s from the wall time between the end
     of step W and the end of step W+N (process start, data and model building, worker start and
     the first W steps are excluded).
     Checkpoints: train.ckpt_every is set past the last step, so no checkpoint is written inside
     the timed window (only the engine's final one, after it);
   - e2e_wait_ms / e2e_step_ms: per step, the mean time the engine waited for its batch (end of a
     step to start of the next: the loader plus Lightning's own work between steps) and spent inside
     the step (includes clipping, the LR schedule, logging and the engine's periodic ``encode`` for
     train/emb_std);
   - e2e0_sps: the same end-to-end run with 0 workers, as the shipped configs read (reader,
     preprocessing and cache in the training process: what the data path costs without the
     competition of worker processes for the cores);
   - engine_mem_sps: the same ``run_pretrain`` on 8 batches' worth of samples (a seeded random
     subset) held in a list, 0 workers: the engine's cost without the data path
     (engine_ratio = engine_mem_sps / model_sps);
   - engine_fixed_ms: the engine's fixed cost of a step, whatever the model: the median time from
     one step's end to the next of the same ``run_pretrain`` (same config, the same samples in
     memory, 0 workers) around a model of 4 parameters (Lightning's loop and hooks, the gradient
     norm and clipping, the LR schedule, fetching and collating the batch);
   - ratio_bound = model step / (model step + engine_fixed_ms): the best ratio the engine allows
     this model at this batch size, however fast the data path;
   - ratio = e2e_sps / model_sps (target >= 0.9), ratio0 = e2e0_sps / model_sps. ratio well below
     engine_ratio: the data path limits (ratio0 near engine_ratio: the workers' share of the cores
     does); both low: the engine's own per-step work does (ratio_bound says how much of it is fixed).
   The model alone, the engine alone and both end-to-end runs are made in turn, --rounds times.
   model_sps, engine_mem_sps, e2e_sps and e2e0_sps are each the fastest of their runs (all of them
   in the JSON: model_sps_runs, engine_sps_runs, e2e_sps_runs, e2e0_sps_runs); engine_ratio, ratio
   and ratio0 are each the median of the rounds' own ratios (each round's ratios in
   engine_ratio_rounds, ratio_rounds, ratio0_rounds), so a drift of the machine between rounds
   stays out of them.
2. medmae cache (the loader alone, 0 workers, batches of train.batch_size): epoch 1 (building the
   dataset, which fills a memory cache, then one pass) and epoch 2 (the next pass) over the bundled
   case at the tiny config, with data.cache = memory, none and disk; without --quick also the 1 mm
   reference case (../shared/data/mri, 240 x 240 x 155 x 4) at the default data settings (1 mm,
   128^3 crops, 8 per case). speedup = epoch 1 time / epoch 2 time (target >= 10 for the memory cache);
   vs_no_cache = epoch 1 time without a cache / epoch 2 time with this one.

Wall time on the shared 2-core CPU here, 1 thread: default about 5.5 minutes, --quick about 2 minutes
(a 12 s process start per row is most of --quick).

usage: python shared/bench/bench_datapath.py [--quick] [--steps 80] [--warmup 5] [--rounds 3]
       [--workers 2] [--threads N] [--domains maecore,medmae,...] [--set KEY=VALUE] [--no-cache-rows] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from benchlib import CPU, backward_step, engine_allocator, paired_ratio
from lightning.pytorch.callbacks import Callback
from report import markdown_table

# the CLI's Domain of each package (``<package>.cli`` module : class)
DOMAINS = {
    "maecore": "maecore.cli.demo:ImageDomain",
    "medmae": "medmae.cli:MedDomain",
    "geomae": "geomae.cli:GeoDomain",
    "cardiomae": "cardiomae.cli:CardioDomain",
    "mae3d": "mae3d.cli:Mae3dDomain",
    "skelmae": "skelmae.cli:SkelmaeDomain",
}
REFERENCE_MRI = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mri"
CACHES = ("memory", "none", "disk")
LOG_EVERY = 10  # the default configs' train.log_every (the tiny ones log every 2-5 steps for the tests)


def _domain(name: str) -> Any:
    module, cls = DOMAINS[name].split(":")
    return getattr(importlib.import_module(module), cls)()


def _sps(arrivals: list[float], start: int, batch: int) -> float:
    """Samples/s between arrival ``start - 1`` and the last one (``arrivals[i]``: end of batch i)."""
    n = len(arrivals) - start
    return round(n * batch / (arrivals[-1] - arrivals[start - 1]), 2)


class StepClock(Callback):
    """Wall-clock time at the start and end of every training batch (after its optimizer step)."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.ends: list[float] = []

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self.starts.append(time.perf_counter())

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.ends.append(time.perf_counter())


# ---------------------------------------------------------------------- 1. one domain
def build(name: str, steps: int, workers: int, extra: list[str]) -> tuple[Any, dict, Any]:
    """The domain, its tiny config (max_steps = ``steps``, no checkpoint inside, then ``extra``
    overrides) and its dataset."""
    from maecore.config import load_config

    domain = _domain(name)
    sets = [f"train.max_steps={steps}", f"train.ckpt_every={steps + 1}", f"train.num_workers={workers}",
            "train.progress=false", "train.accelerator=cpu", f"train.log_every={LOG_EVERY}", *extra]
    cfg = load_config(domain.package, "tiny", sets)
    dataset = domain.pretrain_dataset(cfg, None, False)  # may fill model settings from the data (skelmae)
    return domain, cfg, dataset


def new_model(cfg: dict) -> torch.nn.Module:
    from maecore.config import model_kwargs
    from maecore.models import create_model

    torch.manual_seed(int(cfg["train"]["seed"]))
    name, kwargs = model_kwargs(cfg)
    return create_model(name, **kwargs)


def model_only(cfg: dict, tc: Any, batches: list[dict], warmup: int, steps: int) -> dict:
    """Forward, backward and AdamW over ``batches`` held in memory (the engine loader's first
    ``warmup + steps``: batches differ in cost, e.g. 2 or 12 ECG leads present); samples/s after
    ``warmup`` steps."""
    from maecore.tasks.base import adamw, default_param_groups

    model = new_model(cfg).train()  # the engine's optimizer (fused AdamW, no decay on norms and biases)
    opt = adamw(default_param_groups(model, tc.weight_decay), lr=tc.lr, betas=tc.betas)
    gen = torch.Generator().manual_seed(tc.seed)
    free_early = engine_allocator(CPU)  # the engine's malloc setting and gradient order on the CPU
    ends = [time.perf_counter()]
    for i in range(warmup + steps):
        out = model(batches[i % len(batches)], generator=gen)
        backward_step(out.loss, opt, free_early)
        ends.append(time.perf_counter())
    return {"params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
            "model_sps": _sps(ends, warmup + 1, tc.batch_size)}


def loader_alone(dataset: Any, tc: Any, workers: int, warmup: int, steps: int) -> float:
    """Samples/s of the engine's training loader with ``workers`` workers, no model."""
    from maecore.tasks.data import make_loader

    loader = make_loader(dataset, replace(tc, num_workers=workers), n_batches=warmup + steps)
    arrivals = [time.perf_counter()]
    for _ in loader:
        arrivals.append(time.perf_counter())
    del loader  # stops its workers
    return _sps(arrivals, warmup + 1, tc.batch_size)


def end_to_end(domain: Any, cfg: dict, dataset: Any, tc: Any, warmup: int, meta: dict) -> dict:
    """``run_pretrain`` as the CLI calls it; steady-state samples/s over the steps after ``warmup``,
    and per step the mean wait for the batch (end of a step to start of the next) and time inside."""
    from maecore.tasks import run_pretrain

    model = new_model(cfg)
    model.meta = meta
    clock = StepClock()
    run_dir = Path(tempfile.mkdtemp(prefix=f"datapath-{domain.name}-"))
    try:
        run_pretrain(model, dataset, run_dir, tc, callbacks=[clock], logger=True)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    starts, ends = clock.starts[warmup:], clock.ends[warmup:]
    waits = [s - e for s, e in zip(starts, clock.ends[warmup - 1 :])]
    inside = [e - s for s, e in zip(starts, ends)]
    return {"sps": _sps(clock.ends, warmup, tc.batch_size), "wait_ms": round(1e3 * float(np.mean(waits)), 1),
            "step_ms": round(1e3 * float(np.mean(inside)), 1)}


@dataclass
class _NullOut:
    loss: torch.Tensor


class NullModel(torch.nn.Module):
    """4 parameters and one multiply: what the engine costs a step when the model costs nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(4))

    def forward(self, batch: dict[str, Any], generator: torch.Generator | None = None) -> _NullOut:
        x = next(v for v in batch.values() if isinstance(v, torch.Tensor) and v.is_floating_point())
        return _NullOut((self.w * x.float().nan_to_num().mean()).sum())  # nodata pixels are NaN

    def encode(self, batch: dict[str, Any]) -> torch.Tensor:
        n = next(int(v.shape[0]) for v in batch.values() if isinstance(v, torch.Tensor))
        return self.w.detach().expand(n, 4)


def engine_fixed_ms(held: list, tc: Any, warmup: int) -> float:
    """Median step-to-step time (ms) of ``run_pretrain`` around :class:`NullModel` on ``held``."""
    from maecore.tasks import run_pretrain

    clock = StepClock()
    run_dir = Path(tempfile.mkdtemp(prefix="datapath-null-"))
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")  # "NullModel has no save_pretrained: no export written"
            run_pretrain(NullModel(), held, run_dir, replace(tc, num_workers=0), callbacks=[clock], logger=True)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return round(1e3 * float(np.median(np.diff(clock.ends[warmup:]))), 3)


def domain_row(name: str, a: argparse.Namespace) -> dict:
    from maecore.tasks import TrainConfig
    from maecore.tasks.data import make_loader

    domain, cfg, dataset = build(name, a.warmup + a.steps, a.workers, a.set)
    tc = TrainConfig.from_dict(cfg["train"])
    # the batches the engine trains on first, in memory (same seed, same order)
    batches = list(make_loader(dataset, replace(tc, num_workers=0), n_batches=a.warmup + a.steps))
    meta = {"domain": domain.name, **domain.model_meta(cfg, dataset)}
    row: dict[str, Any] = {"domain": name, "model": cfg["model"]["name"], "batch": tc.batch_size,
                           "items": len(dataset)}
    row["loader0_sps"] = loader_alone(dataset, tc, 0, a.warmup, a.steps)
    row[f"loader{a.workers}_sps"] = loader_alone(dataset, tc, a.workers, a.warmup, a.steps)
    # the engine alone: samples in memory (a seeded random subset, as mixed as the loader's), 0 workers
    pick = random.Random(0).sample(range(len(dataset)), min(len(dataset), tc.batch_size * 8))
    held = [dataset[i] for i in pick]
    # the model alone, the engine alone and end to end, interleaved, --rounds times: on this shared
    # VM the same run varies by 10-40 % from one minute to the next; ratios are taken within a round
    models, engines, e2es, inproc, fixed = [], [], [], [], []
    for _ in range(a.rounds):
        fixed.append(engine_fixed_ms(held, tc, a.warmup))
        one = model_only(cfg, tc, batches, a.warmup, a.steps)
        row["params_M"] = one["params_M"]
        models.append(one["model_sps"])
        engines.append(end_to_end(domain, cfg, held, replace(tc, num_workers=0), a.warmup, meta))
        e2es.append(end_to_end(domain, cfg, dataset, tc, a.warmup, meta))
        inproc.append(end_to_end(domain, cfg, dataset, replace(tc, num_workers=0), a.warmup, meta))
    engine, e2e, e2e0 = (max(runs, key=lambda r: r["sps"]) for runs in (engines, e2es, inproc))
    row.update({"engine_mem_sps": engine["sps"], "engine_mem_wait_ms": engine["wait_ms"],
                "e2e_sps": e2e["sps"], "e2e_wait_ms": e2e["wait_ms"], "e2e_step_ms": e2e["step_ms"],
                "model_sps": max(models), "model_sps_runs": models, "engine_sps_runs": [r["sps"] for r in engines],
                "e2e_sps_runs": [r["sps"] for r in e2es], "e2e0_sps": e2e0["sps"],
                "e2e0_sps_runs": [r["sps"] for r in inproc]})
    # each ratio is the median of the rounds' own ratios (the two runs of a round are a minute apart)
    for key, runs in (("engine_ratio", engines), ("ratio", e2es), ("ratio0", inproc)):
        row[key], row[f"{key}_rounds"] = paired_ratio([r["sps"] for r in runs], models)
    model_ms = 1e3 * tc.batch_size / row["model_sps"]
    row.update({"engine_fixed_ms": min(fixed), "engine_fixed_ms_runs": fixed,
                "ratio_bound": round(model_ms / (model_ms + min(fixed)), 3)})
    row["target_met"] = row["ratio"] >= 0.9
    return row


# ---------------------------------------------------------------------- 2. medmae cache
def cache_row(case: str, cache: str) -> dict:
    """Epoch 1 (dataset build + one pass) and epoch 2 of the loader alone, 0 workers."""
    from maecore.config import load_config
    from maecore.tasks import TrainConfig
    from maecore.tasks.data import make_loader
    from medmae import sample_dir
    from medmae.cli import MedDomain

    cache_dir = Path(tempfile.mkdtemp(prefix="datapath-medmae-cache-"))
    sets = [f"data.cache={cache}", f"data.cache_dir={cache_dir}", "train.num_workers=0"]
    cfg = load_config("medmae", "tiny" if case == "bundled" else None, sets)
    data = sample_dir() if case == "bundled" else REFERENCE_MRI
    try:
        t0 = time.perf_counter()
        ds = MedDomain().pretrain_dataset(cfg, str(data), False)
        built = time.perf_counter()
        tc = TrainConfig.from_dict(cfg["train"])
        per_epoch = -(-len(ds) // tc.batch_size)
        arrivals = []
        for _ in make_loader(ds, tc, n_batches=2 * per_epoch):
            arrivals.append(time.perf_counter())
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    e1, e2 = arrivals[per_epoch - 1] - t0, arrivals[-1] - arrivals[per_epoch - 1]
    return {"case": case, "cache": cache, "samples_per_epoch": len(ds), "crop": cfg["data"]["roi_size"][0],
            "spacing_mm": cfg["data"]["spacing"][0], "build_s": round(built - t0, 3), "epoch1_s": round(e1, 3),
            "epoch2_s": round(e2, 3), "speedup": round(e1 / e2, 2)}


# ---------------------------------------------------------------------- driver
def run_child(a: argparse.Namespace) -> dict:
    torch.set_num_threads(a.threads)
    kind, *rest = a.row.split(":")
    return domain_row(rest[0], a) if kind == "domain" else cache_row(*rest)


def spawn(row: str, a: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--row", row, "--threads", str(a.threads), "--workers", str(a.workers),
           "--rounds", str(a.rounds),
           "--warmup", str(a.warmup), "--steps", str(a.steps), *[f"--set={v}" for v in a.set]]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    lines = res.stdout.strip().splitlines()
    if res.returncode != 0 or not lines or not lines[-1].startswith("{"):
        err = res.stderr.strip().splitlines()
        out = {"error": err[-1] if err else f"exit code {res.returncode}"}
    else:
        out = json.loads(lines[-1])
    out["process_s"] = round(time.perf_counter() - t0, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a smoke run: 2 warm-up + 8 timed steps, bundled MRI only")
    ap.add_argument("--steps", type=int, default=None, help="timed steps / batches (default 80; quick 8)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed first steps / batches (default 5; quick 2)")
    ap.add_argument("--workers", type=int, default=2, help="loader workers of the end-to-end run")
    ap.add_argument("--rounds", type=int, default=None,
                    help="interleaved model / engine / end-to-end runs per domain (default 3; quick 1)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default here)")
    ap.add_argument("--domains", default=",".join(DOMAINS), help="comma-separated subset of " + ",".join(DOMAINS))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra config override of the domain rows, as the CLI's --set (e.g. train.log_every=1000)")
    ap.add_argument("--no-cache-rows", action="store_true", help="skip the medmae cache rows")
    ap.add_argument("--row", default=None, help=argparse.SUPPRESS)  # one row in this process (internal)
    ap.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    a = ap.parse_args()
    a.steps = a.steps if a.steps is not None else (8 if a.quick else 80)
    a.warmup = a.warmup if a.warmup is not None else (2 if a.quick else 5)
    a.rounds = a.rounds if a.rounds is not None else (1 if a.quick else 3)
    if a.steps < 1 or a.warmup < 1 or a.rounds < 1:
        ap.error(f"--steps, --warmup and --rounds must be >= 1, got {a.steps}, {a.warmup} and {a.rounds}")
    a.threads = a.threads or torch.get_num_threads()
    if a.row:
        print(json.dumps(run_child(a)))
        return
    unknown = sorted(set(a.domains.split(",")) - set(DOMAINS))
    if unknown:
        ap.error(f"unknown domain(s) {unknown}; known: {', '.join(DOMAINS)}")
    rows = []
    for name in a.domains.split(","):
        rows.append({"domain": name, **spawn(f"domain:{name}", a)})
        print(json.dumps(rows[-1]), flush=True)
    caches = []
    cases = ["bundled"] + ([] if a.quick or not REFERENCE_MRI.is_dir() else ["reference"])
    for case in [] if a.no_cache_rows else cases:
        for cache in CACHES:
            caches.append({"case": case, "cache": cache, **spawn(f"cache:{case}:{cache}", a)})
            print(json.dumps(caches[-1]), flush=True)
    for r in caches:  # epoch 2 with a cache against an epoch without one
        none = next((c for c in caches if c["case"] == r["case"] and c["cache"] == "none"), {})
        if "epoch2_s" in r and "epoch1_s" in none:
            r["vs_no_cache"] = round(none["epoch1_s"] / r["epoch2_s"], 2)
    out = {"machine": f"{a.threads} threads, {a.workers} loader workers, torch {torch.__version__}, fp32 CPU",
           "quick": a.quick, "overrides": a.set, "warmup": a.warmup, "steps": a.steps, "rounds": a.rounds,
           "domains": rows,
           "medmae_cache": caches}
    report(out)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(out, indent=2))


def report(r: dict) -> None:
    w = r["machine"].split(", ")[1].split()[0]
    print(f"\n## data path ({r['machine']}; {r['warmup']} warm-up + {r['steps']} timed steps; ratio target >= 0.9)")
    print("\n".join(markdown_table(r["domains"], (
        "domain", "model", "batch", "model_sps", "loader0_sps", f"loader{w}_sps", "engine_mem_sps", "e2e_sps",
        "e2e_wait_ms", "e2e_step_ms", "e2e0_sps", "engine_fixed_ms", "engine_ratio", "ratio_bound", "ratio", "ratio0",
        "error"))))
    if r["medmae_cache"]:
        print("\n## medmae cache (speedup = epoch 1 / epoch 2, target >= 10)")
        print("\n".join(markdown_table(r["medmae_cache"], (
            "case", "cache", "spacing_mm", "crop", "samples_per_epoch", "epoch1_s", "epoch2_s", "speedup",
            "vs_no_cache", "error"))))

if __name__ == "__main__":
    main()
