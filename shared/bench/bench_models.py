"""Every registered model at its tiny and full config, beside the machine's limit (issue 8).

Rows, one process each (peak RSS is per process):
  matmul       torch.matmul peak GFLOP/s, fp32, square sizes 1024..3072, best of a few repeats
  <model>      every name in maecore.models.list_models() (maecore and every domain found through
               the `maecore.models` entry points, so a new registration gets a row by itself)

For each model the batch comes through its domain's real data path on the bundled sample: the
shipped config that names the model (configs/*.yaml with `model: name: <model>`; a few unnamed
models have a row in SETTINGS below; any other model: the domain's default config with model.name
overridden), the domain's `Domain.pretrain_dataset(cfg, data=None, skip_bad=False)`, the first
`batch` items collated with `collate_dict`, and the model built as `<domain> pretrain` builds it
(`create_model(name, **model_kwargs(cfg))`, `model.meta` from `Domain.model_meta`). A model the
bundled data cannot feed gets a correctly shaped synthetic batch instead (SYNTHETIC; the row's
"input" column says so and why).

Device: a CUDA GPU when one is present (bf16 autocast, as ``pretrain``'s bf16-mixed; peak memory is then
the CUDA allocator's, ``peak_alloc_MB``, with RSS beside it), else the CPU in fp32 (peak RSS); --device
and --precision override. The matmul peak is measured at the same dtype.
Measured: the pretraining step (forward, backward, the engine's AdamW step; train mode), median of
the timed steps after one warm-up step (the one the FLOPs are counted in); samples/s; tokens/s
(tokens the tokenizer makes, padding excluded) and encoder-visible (unmasked) tokens per sample;
parameters; the process's peak RSS and what the steps added to it; model FLOPs of one step counted
by torch.utils.flop_counter.FlopCounterMode around forward + backward (not the optimiser), model
GFLOP/s = FLOPs / step time and MFU = that / the matmul peak of the same run. For MaskedAutoencoder
models "flops_vs_6PT" is the counted FLOPs over 6 x (encoder params x visible tokens + other params
x all tokens).
FLOP check, mae_vit_base (ViT-B/16, 224 px, 75 % masking, batch 2, bundled Landsat chips): the
counter gave 111.2 GFLOP a step, 6 x params x tokens 111.5 GFLOP (ratio 0.997); every run prints
both ("step_gflop", "gflop_6PT"). The ratio is far from 1 by design for Point-MAE (its mini-PointNet
runs on every point, not on tokens) and SimMIM (no ratio: mask tokens enter the encoder).

Batch: the config's train.batch_size, capped at --max-batch (default 8, keeps a full model's step
under ~30 s on a 2-core CPU). Steps: 3 for tiny models, 2 for full ones ("tiny" in the name).
A row that runs past --timeout seconds says "timeout"; a row that fails says why in "error".

Wall time on a busy 2-core CPU with OMP_NUM_THREADS=1: --quick 4 to 7 min (22 processes that each
spend ~7 s importing lightning and the domains), default about 12 min (the full ViT-L row ~2 min).

usage: python shared/bench/bench_models.py [--quick] [--models a,b] [--max-batch 8]
                                           [--steps-tiny 3] [--steps-full 2] [--timeout 600]
                                           [--device auto|cpu|cuda] [--precision auto|fp32|bf16] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import json
import statistics
import subprocess
import sys
import time
from importlib import import_module
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import torch
from benchlib import Device, add_device_args, backward_step, engine_allocator, matmul_peak, peak_rss_mb
from report import markdown_table

from maecore.models.registry import model_package

# Registered models that no shipped config names (or whose config needs a change to run on the
# bundled sample): (config, --set overrides). The reason is kept in the row's "config" column.
SETTINGS: dict[str, tuple[str, list[str]]] = {
    # the ViT sizes at their published input (224 px chips of the 256 px Landsat crop, no held-out strip)
    "mae_vit_small": ("default", ["model.name=mae_vit_small", "data.chip_size=224", "data.holdout_fraction=0.0"]),
    "mae_vit_base": ("default", ["model.name=mae_vit_base", "data.chip_size=224", "data.holdout_fraction=0.0"]),
    "mae_vit_large": ("default", ["model.name=mae_vit_large", "data.chip_size=224", "data.holdout_fraction=0.0"]),
    # FireRisk's NAIP preset: the bundled Landsat RGB file feeds the rgb group, nir is padding
    "geomae_mae_vitb16": ("firerisk", ["data.bands=[red,green,blue]"]),
    # full-size NeRF-MAE grids (96^3, patch 8) voxelised from the bundled YCB clouds
    "mae3d_nerfmae": ("grid", ["model.name=mae3d_nerfmae", "data.resolution=96"]),
}

# Models the bundled samples cannot feed: (why, batch size -> batch of the shape their data path makes).
SYNTHETIC: dict[str, tuple[str, Any]] = {
    "geomae_simmim_satvision": (
        "synthetic: needs MODIS 14-band rasters; the bundled sample is Landsat RGB (no full band group)",
        lambda b: {"x": torch.randn(b, 14, 128, 128), "valid": torch.ones(b, 14, 128, 128, dtype=torch.bool),
                   "group_pad": torch.zeros(b, 2, dtype=torch.bool)}),
    "simmim_swinv2_satvision": (
        "synthetic: needs 14-band 128 px images; maecore's bundled sample is a 3-band Landsat crop",
        lambda b: {"x": torch.randn(b, 14, 128, 128)}),
}


# ---------------------------------------------------------------------- which domain, which config
def domain_of(package: str):
    """The :class:`maecore.cli.domain.Domain` behind the package's console script (``geomae = geomae.cli:main``)."""
    from maecore.cli.domain import Domain

    for ep in entry_points(group="console_scripts"):
        if ep.name != package or not ep.module.startswith(package):
            continue
        module = import_module(ep.module)
        for obj in vars(module).values():
            if (inspect.isclass(obj) and issubclass(obj, Domain) and obj is not Domain
                    and obj.__module__ == module.__name__ and obj.package == package):
                return obj()
    raise LookupError(f"no Domain subclass found behind the console script {package!r}")


def find_config(package: str, name: str) -> tuple[str, list[str]]:
    """``(config, overrides)``: SETTINGS, else the shipped config naming ``name``, else the default
    config with ``model.name`` overridden."""
    from maecore.config import read_yaml, shipped_configs

    if name in SETTINGS:
        return SETTINGS[name]
    shipped = shipped_configs(package)
    for cfg_name in sorted(shipped, key=lambda c: (c != "default", c)):
        if (read_yaml(shipped[cfg_name]).get("model") or {}).get("name") == name:
            return cfg_name, []
    return "default", [f"model.name={name}"]


# ---------------------------------------------------------------------- one row
def build(name: str, batch_cap: int) -> tuple[torch.nn.Module, dict[str, Any], dict[str, Any]]:
    """The model as ``<domain> pretrain`` builds it and a batch from the domain's data path."""
    from maecore.config import load_config, model_kwargs
    from maecore.models import create_model
    from maecore.tasks.data import collate_dict

    package = model_package(name)
    cfg_name, overrides = find_config(package, name)
    cfg = load_config(package, cfg_name, overrides)
    bs = min(int(cfg["train"]["batch_size"]), batch_cap)
    info = {"domain": package, "config": " ".join([f"{package}:{cfg_name}", *overrides]), "batch": bs}
    torch.manual_seed(0)
    if name in SYNTHETIC:
        why, make = SYNTHETIC[name]
        batch, meta = make(bs), {}
        info["input"] = why
    else:
        domain = domain_of(package)
        with contextlib.redirect_stdout(io.StringIO()):  # some data paths print a summary
            dataset = domain.pretrain_dataset(cfg, None, False)
            meta = domain.model_meta(cfg, dataset)
        batch = collate_dict([dataset[i % len(dataset)] for i in range(bs)])
        info["input"] = f"real: {package} bundled sample ({len(dataset)} items)"
    info["shape"] = " ".join(f"{k}{list(v.shape)}" for k, v in batch.items()
                             if isinstance(v, torch.Tensor) and v.is_floating_point())
    mname, kwargs = model_kwargs(cfg)
    model = create_model(mname, **kwargs)
    model.meta = {"domain": package, **meta}
    return model, batch, info


def analytic_flops(model: torch.nn.Module, out: Any) -> float | None:
    """MAE models: 6 x (encoder params x visible tokens + the other params x all tokens); else None."""
    from maecore.models import MaskedAutoencoder

    enc = sum(p.numel() for n, p in model.named_parameters() if n.startswith(("tokenizer.", "encoder.", "pos_embed.")))
    if not isinstance(model, MaskedAutoencoder) or enc == 0:  # SimMIM: mask tokens enter the encoder
        return None
    rest = sum(p.numel() for p in model.parameters()) - enc
    visible = int((~out.mask & ~out.pad).sum())
    return 6.0 * (enc * visible + rest * int((~out.pad).sum()))


def measure(name: str, batch_cap: int, steps: int, dev: Device) -> dict[str, Any]:
    from lightning.fabric.utilities.apply_func import move_data_to_device
    from torch.utils.flop_counter import FlopCounterMode

    model, batch, row = build(name, batch_cap)
    from maecore.tasks.base import adamw, default_param_groups

    model.to(dev.type).train()
    batch = move_data_to_device(batch, dev.type)
    opt = adamw(default_param_groups(model, 0.05), lr=1e-4)  # the engine's optimizer (fused AdamW)
    gen = torch.Generator(device=dev.type).manual_seed(0)
    free_early = engine_allocator(dev)
    rss0 = peak_rss_mb()
    counter = FlopCounterMode(display=False)
    with counter:  # the warm-up step (not timed) counts the FLOPs of forward + backward
        with dev.autocast():
            out = model(batch, generator=gen)
        out.loss.backward()
    opt.step()
    dev.sync()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        with dev.autocast():
            out = model(batch, generator=gen)
        backward_step(out.loss, opt, free_early)
        dev.sync()
        times.append(time.perf_counter() - t)
    step, flops, bs = statistics.median(times), counter.get_total_flops(), row["batch"]
    tokens = int((~out.pad).sum())
    row.update({
        "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2), "steps": steps,
        "step_s": round(step, 4), "samples_per_s": round(bs / step, 3),
        "tokens_per_sample": round(tokens / bs, 1),
        "visible_tokens_per_sample": round(int((~out.mask & ~out.pad).sum()) / bs, 1),
        "tokens_per_s": round(tokens / step, 1), "step_gflop": round(flops / 1e9, 3),
        "model_gflops_per_s": round(flops / step / 1e9, 2),
        "rss_growth_MB": round(peak_rss_mb() - rss0, 1), **dev.memory(),
    })
    six_pt = analytic_flops(model, out)
    if six_pt:
        row["gflop_6PT"] = round(six_pt / 1e9, 3)
        row["flops_vs_6PT"] = round(flops / six_pt, 3)
    return row


def is_tiny(name: str) -> bool:
    return "tiny" in name


# ---------------------------------------------------------------------- driver
def run_child(row: str, a: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--row", row, "--max-batch", str(a.max_batch), "--steps-tiny", str(a.steps_tiny),
           "--steps-full", str(a.steps_full), "--device", a.device, "--precision", a.precision]
    cmd += ["--quick"] if a.quick else []
    t0 = time.perf_counter()
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout)
    except subprocess.TimeoutExpired:
        return {"row": row, "error": f"timeout after {a.timeout} s"}
    wall = round(time.perf_counter() - t0, 1)
    lines = res.stdout.strip().splitlines()
    if res.returncode != 0 or not lines:
        err = res.stderr.strip().splitlines()
        return {"row": row, "error": err[-1] if err else f"exit {res.returncode}", "wall_s": wall}
    return {**json.loads(lines[-1]), "wall_s": wall}


def one_row(row: str, a: argparse.Namespace) -> dict[str, Any]:
    dev = Device.pick(a.device, a.precision)
    if row == "matmul":
        sizes = (1024, 2048) if a.quick else (4096, 8192) if dev.type == "cuda" else (1024, 2048, 3072)
        return {"row": "matmul", "domain": "", "gflops": matmul_peak(sizes, device=dev), "sizes": list(sizes)}
    try:
        steps = a.steps_tiny if is_tiny(row) else a.steps_full
        return {"row": row, **measure(row, a.max_batch, steps, dev)}
    except Exception as err:  # noqa: BLE001  (a row reports its failure; the others still run)
        return {"row": row, "domain": model_package(row), "error": f"{type(err).__name__}: {err}"[:300]}


def print_table(rows: list[dict[str, Any]]) -> None:
    cols = ("row", "batch", "params_M", "step_s", "samples_per_s", "tokens_per_s", "step_gflop", "gflop_6PT",
            "model_gflops_per_s", "mfu", "peak_rss_MB", "peak_alloc_MB", "input", "error")
    shown = [{**r, "model_gflops_per_s": r["gflops"]} if r["row"] == "matmul" else r for r in rows]
    print("\n".join(markdown_table(shown, cols)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--row", default=None, help="measure one row in this process (used internally)")
    ap.add_argument("--models", default=None, help="comma-separated subset of the registered models")
    ap.add_argument("--quick", action="store_true", help="smallest settings: batch 1, 1 step, smaller matmuls")
    ap.add_argument("--max-batch", type=int, default=8, help="cap on every config's train.batch_size")
    ap.add_argument("--steps-tiny", type=int, default=3, help="timed steps of tiny models (after a warm-up)")
    ap.add_argument("--steps-full", type=int, default=2, help="timed steps of full models (after a warm-up)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds a row may take before it says timeout")
    add_device_args(ap)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    if a.quick:
        a.max_batch, a.steps_tiny, a.steps_full = 1, 1, 1
        a.timeout = min(a.timeout, 300.0)
    if a.row:
        print(json.dumps(one_row(a.row, a)))
        return
    dev = Device.pick(a.device, a.precision)
    a.device, a.precision = dev.type, dev.precision
    from maecore.models import list_models

    known = list_models()
    names = a.models.split(",") if a.models else known
    unknown = sorted(set(names) - set(known))
    if unknown:
        ap.error(f"unknown model(s) {unknown}; registered: {', '.join(known)}")
    names = sorted(names, key=lambda n: (model_package(n), not is_tiny(n), n))
    rows = []
    for row in ["matmul", *names]:
        rows.append(run_child(row, a))
        rows[-1].setdefault("domain", model_package(row) if row != "matmul" else "")
        print(json.dumps(rows[-1]), flush=True)
    peak = rows[0].get("gflops")
    for r in rows[1:]:
        if peak and "model_gflops_per_s" in r:
            r["mfu"] = round(r["model_gflops_per_s"] / peak, 3)
    out = {"machine": dev.describe(), "device": dev.type, "precision": dev.precision, "quick": a.quick,
           "matmul_gflops": peak, "rows": rows}
    print_table(rows)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
