"""Core model-step benchmark against peers, one process per row (issue: performance suite).

Rows (pretraining step = forward, backward, AdamW step; median of --steps after one warm-up):
  matmul       torch.matmul peak GFLOP/s at the run's dtype (square 1024..3072; 4096..8192 on a GPU)
  ours_vitb    maecore mae_vit_base, ViT-B/16, 224 px, 75 % masking, decoder 512 x 8
  ours_vitb_ckpt     the same with activation checkpointing (encoder and decoder blocks)
  ours_vitb_flash    the same with SDPA held to its flash kernel (fails if flash cannot run; as fast
                     as ours_vitb when the default already picks flash)
  ours_vitb_compile  the same with the transformer blocks through torch.compile, as ``train.compile``
                     does (compile time excluded: it falls in the warm-up step)
  ours_vitb_encoder  the ViT-B encoder alone (12 blocks, 768 wide) on all 196 tokens of a 224 px image,
                     as fine-tuning runs it: the step the issue's "encoder at 0.85 of the matmul peak" names
  ours_vitb_encoder_visible  the same encoder on MAE's 49 visible tokens (25 %): smaller matrix products
  hf_vitmae    Hugging Face ViTMAEForPreTraining at the identical config (if transformers imports)
  ours_3d      maecore mae_vit_base on 3D volumes (patch 16, 75 %), decoder 384 x 4 as MONAI's default
  monai_3d     MONAI MaskedAutoEncoderViT at the identical config
A row name may end in ``@N`` to run it at batch N (e.g. ``ours_vitb_ckpt@64``).

Device: a CUDA GPU when one is present (bf16 autocast, weights and AdamW in fp32, as ``pretrain``'s
``bf16-mixed``), else the CPU in fp32; ``--device`` and ``--precision`` override (benchlib.Device).
The matmul peak is measured at the same dtype. Peak memory: RSS on the CPU; on a GPU the CUDA
allocator's peak (``peak_alloc_MB``, which the memory ratios then use; RSS beside it).
On a CPU with native bf16 (avx512_bf16 or amx_bf16), ``nox -s bench`` also runs ``--device cpu
--precision bf16`` into results/bench_core_bf16.json. MONAI's MaskedAutoEncoderViT (1.6.1) fails under
bf16 autocast (its decoder's index_put mixes fp32 mask tokens with bf16 activations): that row then
says so, and shared/bench/gpu_check.sh compares the 3D pair in fp32 as well.

Optimizers: our rows use the engine's optimizer (``maecore.tasks.base.adamw``: AdamW, fused kernel, no
decay on norms and biases), exactly what ``pretrain`` runs. A peer row uses ``torch.optim.AdamW(params)`` as
its own examples do (the per-parameter loop on the CPU); its ``_fused`` twin gives the peer the same fused
AdamW, so ``speed_vs_<peer>_fused`` compares the models alone.
Each row prints parameters, samples/s, tokens/s, peak memory, and MFU = model FLOPs/s over the measured
matmul peak, with model FLOPs = 6 x (encoder params x visible tokens + decoder params x all tokens)
(the encoder rows: 6 x encoder params x tokens). Every row, ours and the peers', runs in a process set up
as the engine sets its training process (``benchlib.engine_allocator``: on the CPU glibc's malloc keeps
freed memory) and frees the gradients where the engine then does, right after the optimizer step
(``benchlib.backward_step``); ``MAECORE_CPU_MALLOC=system`` runs them all with malloc as it is and the
gradients freed after the forward pass, where Lightning frees them.
Checkpointing rows are compared with the plain row at the same batch: ``time_vs_no_ckpt`` and
``memory_vs_no_ckpt`` (peak memory of the whole process, weights and AdamW state included); flash and
compile rows likewise (``time_vs_default``, ``memory_vs_default``).
``--rounds N`` runs the whole row list N times in turn (a fresh process per row each time): a row
reports its median run, and each ratio is the median of the N ratios of runs made one after the
other (``speed_vs_<peer>_rounds``, ``time_vs_<x>_rounds`` list them). Step times here drift by 10-40 %
from one minute to the next; paired rounds keep that drift out of the ours/peer ratios.
``nox -s bench`` runs the peer pairs and the encoder this way (results/bench_core_peers.json).

usage: python shared/bench/bench_core.py [--batch 8] [--steps 3] [--vol 96] [--rows a,b@64] [--rounds 1]
                                         [--device auto|cpu|cuda] [--precision auto|fp32|bf16] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from benchlib import (
    Device,
    add_device_args,
    backward_step,
    engine_allocator,
    matmul_peak,
    paired_ratio,
    peak_memory_key,
)

VARIANTS = ("_ckpt", "_flash", "_compile")  # row suffixes compared with the plain row


def _time_steps(step, steps: int, dev: Device) -> float:
    """Median wall time of ``steps`` calls of ``step`` after one warm-up (synchronised on a GPU)."""
    step()
    dev.sync()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        dev.sync()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def _count(module: torch.nn.Module, prefixes: tuple[str, ...]) -> int:
    return sum(p.numel() for n, p in module.named_parameters() if n.startswith(prefixes))


def _sdpa_context(variant: str) -> contextlib.AbstractContextManager:
    if variant != "flash":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION])


def ours(batch: int, steps: int, variant: str, ndim: int, size: int, dev: Device, mask_ratio: float = 0.75) -> dict:
    """maecore's ViT-B MAE; ``variant``: "" (as shipped), "ckpt", "flash" or "compile"."""
    from maecore.models import create_model
    from maecore.models.transformer import Block
    from maecore.tasks.base import adamw, default_param_groups

    torch.manual_seed(0)
    dec = {} if ndim == 2 else dict(decoder_dim=384, decoder_depth=4, decoder_heads=12)
    model = create_model("mae_vit_base", ndim=ndim, group_channels=[3 if ndim == 2 else 1], patch_size=16,
                         grad_checkpointing=variant == "ckpt", mask={"kind": "random", "ratio": mask_ratio}, **dec)
    model.to(dev.type)
    if variant == "compile":
        for m in model.modules():  # what train.compile hands to torch.compile
            if isinstance(m, Block):
                m.compile()
    x = torch.randn(batch, 3 if ndim == 2 else 1, *([size] * ndim), device=dev.type)
    opt = adamw(default_param_groups(model, 0.05), lr=1e-4)
    free_early = engine_allocator(dev)

    def step() -> None:
        with dev.autocast(), _sdpa_context(variant):
            out = model({"x": x})
        backward_step(out.loss, opt, free_early)

    dt = _time_steps(step, steps, dev)
    n_tok = (size // 16) ** ndim
    enc = _count(model, ("tokenizer.", "encoder.", "pos_embed."))
    dec_p = sum(p.numel() for p in model.parameters()) - enc
    flops = 6 * batch * (enc * n_tok * (1 - mask_ratio) + dec_p * n_tok)
    return {"params_M": round((enc + dec_p) / 1e6, 2), "step_s": dt, "flops": flops, "tokens": batch * n_tok}


def encoder_only(batch: int, steps: int, n_tok: int, dev: Device) -> dict:
    """maecore's ViT-B encoder alone on ``n_tok`` tokens a sample: forward, a squared-output loss,
    backward, the engine's AdamW over the encoder's parameters. FLOPs = 6 x params x tokens."""
    from maecore.models import create_model
    from maecore.tasks.base import adamw, default_param_groups

    torch.manual_seed(0)
    enc = create_model("mae_vit_base", ndim=2, group_channels=[3], patch_size=16).encoder.to(dev.type)
    x = torch.randn(batch, n_tok, 768, device=dev.type)
    pad = torch.zeros(batch, n_tok, dtype=torch.bool, device=dev.type)
    opt = adamw(default_param_groups(enc, 0.05), lr=1e-4)
    free_early = engine_allocator(dev)

    def step() -> None:
        with dev.autocast():
            loss = enc(x, pad).float().pow(2).mean()
        backward_step(loss, opt, free_early)

    dt = _time_steps(step, steps, dev)
    params = sum(p.numel() for p in enc.parameters())
    return {"params_M": round(params / 1e6, 2), "step_s": dt, "flops": 6 * params * batch * n_tok,
            "tokens": batch * n_tok}


def peer_adamw(model: torch.nn.Module, fused: bool) -> torch.optim.AdamW:
    return torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True if fused else None)


def hf_vitmae(batch: int, steps: int, fused: bool, dev: Device) -> dict:
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    torch.manual_seed(0)
    cfg = ViTMAEConfig(image_size=224, patch_size=16, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                       intermediate_size=3072, decoder_hidden_size=512, decoder_num_hidden_layers=8,
                       decoder_num_attention_heads=16, decoder_intermediate_size=2048, mask_ratio=0.75,
                       attn_implementation="sdpa")
    model = ViTMAEForPreTraining(cfg).to(dev.type)
    x = torch.randn(batch, 3, 224, 224, device=dev.type)
    opt = peer_adamw(model, fused)
    free_early = engine_allocator(dev)

    def step() -> None:
        with dev.autocast():
            out = model(pixel_values=x)
        backward_step(out.loss, opt, free_early)

    dt = _time_steps(step, steps, dev)
    enc = _count(model, ("vit.",))
    dec_p = sum(p.numel() for p in model.parameters()) - enc
    return {"params_M": round((enc + dec_p) / 1e6, 2), "step_s": dt, "flops": 6 * batch * (enc * 49 + dec_p * 196),
            "tokens": batch * 196}


def monai_3d(batch: int, steps: int, size: int, fused: bool, dev: Device) -> dict:
    from monai.networks.nets import MaskedAutoEncoderViT

    torch.manual_seed(0)
    model = MaskedAutoEncoderViT(in_channels=1, img_size=size, patch_size=16, hidden_size=768, mlp_dim=3072,
                                 num_layers=12, num_heads=12, masking_ratio=0.75, decoder_hidden_size=384,
                                 decoder_mlp_dim=1536, decoder_num_layers=4, decoder_num_heads=12,
                                 qkv_bias=True).to(dev.type)
    x = torch.randn(batch, 1, size, size, size, device=dev.type)
    opt = peer_adamw(model, fused)
    free_early = engine_allocator(dev)

    def step() -> None:
        with dev.autocast():
            pred, mask = model(x)
            target = x.reshape(batch, 1, size // 16, 16, size // 16, 16, size // 16, 16)
            target = target.permute(0, 2, 4, 6, 3, 5, 7, 1).reshape(batch, -1, 16**3)
            loss = (((pred.float() - target) ** 2).mean(-1) * mask).sum() / mask.sum()
        backward_step(loss, opt, free_early)

    dt = _time_steps(step, steps, dev)
    n_tok = (size // 16) ** 3
    enc = _count(model, ("patch_embedding.", "blocks.", "norm."))
    dec_p = sum(p.numel() for p in model.parameters()) - enc
    flops = 6 * batch * (enc * n_tok * 0.25 + dec_p * n_tok)
    return {"params_M": round((enc + dec_p) / 1e6, 2), "step_s": dt, "flops": flops, "tokens": batch * n_tok}


def run_row(row: str, a: argparse.Namespace) -> dict:
    dev = Device.pick(a.device, a.precision)
    if row == "matmul":
        sizes = (4096, 8192) if dev.type == "cuda" else (1024, 2048, 3072)
        return {"row": "matmul", "gflops": matmul_peak(sizes, device=dev), "sizes": list(sizes)}
    name, _, b = row.partition("@")
    bs = int(b) if b else (1 if "3d" in name else a.batch)
    fns = {
        **{f"ours_vitb{v}": (lambda v=v: ours(bs, a.steps, v.lstrip("_"), 2, 224, dev)) for v in ("", *VARIANTS)},
        "ours_vitb_encoder": lambda: encoder_only(bs, a.steps, 196, dev),
        "ours_vitb_encoder_visible": lambda: encoder_only(bs, a.steps, 49, dev),
        "hf_vitmae": lambda: hf_vitmae(bs, a.steps, False, dev),
        "hf_vitmae_fused": lambda: hf_vitmae(bs, a.steps, True, dev),
        **{f"ours_3d{v}": (lambda v=v: ours(bs, a.steps, v.lstrip("_"), 3, a.vol, dev)) for v in ("", *VARIANTS)},
        "monai_3d": lambda: monai_3d(bs, a.steps, a.vol, False, dev),
        "monai_3d_fused": lambda: monai_3d(bs, a.steps, a.vol, True, dev),
    }
    if name not in fns:
        raise SystemExit(f"unknown row {name!r}; known: matmul, {', '.join(fns)}")
    r = fns[name]()
    return {"row": row, "batch": bs, "params_M": r["params_M"], "step_s": round(r["step_s"], 4),
            "samples_per_s": round(bs / r["step_s"], 3), "tokens_per_s": round(r["tokens"] / r["step_s"], 1),
            "model_gflops_per_s": round(r["flops"] / r["step_s"] / 1e9, 1), **dev.memory()}


ROWS = ("matmul", "ours_vitb", "ours_vitb_ckpt", "ours_vitb_flash", "ours_vitb_compile", "ours_vitb_encoder",
        "ours_vitb_encoder_visible", "hf_vitmae", "hf_vitmae_fused", "ours_3d", "monai_3d", "monai_3d_fused",
        "ours_vitb@32", "ours_vitb_ckpt@32", "ours_vitb@64", "ours_vitb_ckpt@64")


def merge_rounds(runs: list[dict]) -> dict:
    """One row from its ``--rounds`` runs: the run with the median step time (the median matmul
    peak), so every number in the row comes from one run, plus ``step_s_rounds`` (``gflops_rounds``)
    in run order. A failed run makes the row that run's error."""
    failed = [r for r in runs if "error" in r]
    if failed:
        return {**failed[0], "failed_rounds": len(failed)} if len(runs) > 1 else failed[0]
    if len(runs) == 1:
        return runs[0]
    key = "gflops" if "gflops" in runs[0] else "step_s"
    ranked = sorted(runs, key=lambda r: r[key])
    return {**ranked[(len(ranked) - 1) // 2], f"{key}_rounds": [r[key] for r in runs]}


def _ratio(a: dict, b: dict, key: str, invert: bool = False) -> tuple[float, list[float] | None]:
    """``a[key] / b[key]`` (``b / a`` with ``invert``); with ``--rounds``, the median of the ratios
    of the runs made one after the other (round i of ``a`` with round i of ``b``), and those ratios."""
    ra, rb = a.get(f"{key}_rounds"), b.get(f"{key}_rounds")
    if not ra or not rb or len(ra) != len(rb):
        return round(b[key] / a[key] if invert else a[key] / b[key], 3), None
    return paired_ratio(rb, ra) if invert else paired_ratio(ra, rb)


def compare(results: list[dict]) -> None:
    """Add MFU, ours-vs-peer ratios at the same batch and variant-vs-plain ratios to each row
    (paired per round when the rows carry ``step_s_rounds``, see :func:`_ratio`)."""
    peak = next((r["gflops"] for r in results if r["row"] == "matmul"), None)
    by = {r["row"]: r for r in results}
    for r in results:
        if peak and "model_gflops_per_s" in r:
            r["mfu_vs_matmul"] = round(r["model_gflops_per_s"] / peak, 3)
    for r in results:
        if "samples_per_s" not in r:
            continue
        name, _, b = r["row"].partition("@")
        mem = peak_memory_key(r)
        for peer in (("hf_vitmae", "hf_vitmae_fused") if name == "ours_vitb" else
                     ("monai_3d", "monai_3d_fused") if name == "ours_3d" else ()):
            p = by.get(peer + ("@" + b if b else ""), {})
            if "samples_per_s" in p:
                r[f"speed_vs_{peer}"], pairs = _ratio(r, p, "step_s", invert=True)
                if pairs:
                    r[f"speed_vs_{peer}_rounds"] = pairs
                r[f"memory_vs_{peer}"] = round(r[mem] / p[mem], 3)
        for v in VARIANTS:
            plain = by.get(r["row"].replace(v, ""), {}) if v in name else {}
            if "step_s" in plain:
                label = "no_ckpt" if v == "_ckpt" else "default"
                r[f"time_vs_{label}"], pairs = _ratio(r, plain, "step_s")
                if pairs:
                    r[f"time_vs_{label}_rounds"] = pairs
                r[f"memory_vs_{label}"] = round(r[mem] / plain[mem], 3)


def run_row_process(row: str, a: argparse.Namespace, dev: Device) -> dict:
    """One row in a fresh process: its result, or ``{"row", "error"}`` with the last line of its stderr."""
    cmd = [sys.executable, __file__, "--row", row, "--batch", str(a.batch), "--steps", str(a.steps),
           "--vol", str(a.vol), "--device", dev.type, "--precision", dev.precision]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        return {"row": row, "error": res.stderr.strip().splitlines()[-1] if res.stderr else "failed"}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--row", default=None, help="run one row in this process (used internally)")
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--vol", type=int, default=96)
    ap.add_argument("--rounds", type=int, default=1,
                    help="run the row list this many times in turn; each row reports its median run")
    add_device_args(ap)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    if a.row:
        print(json.dumps(run_row(a.row, a)))
        return
    dev = Device.pick(a.device, a.precision)
    rows = a.rows.split(",")
    runs: dict[str, list[dict]] = {row: [] for row in rows}
    for _ in range(a.rounds):  # in turn, so a slow minute on this shared machine hits every row alike
        for row in rows:
            runs[row].append(run_row_process(row, a, dev))
            print(json.dumps(runs[row][-1]), flush=True)
    results = [merge_rounds(runs[row]) for row in rows]
    compare(results)
    out = {"machine": dev.describe(), "device": dev.type, "precision": dev.precision, "rounds": a.rounds,
           "rows": results}
    print(json.dumps(out, indent=2))
    if a.json:
        a.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
