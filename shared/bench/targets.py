"""Issue 8's targets beside the latest measurements: one row per target, read from results/*.json.

``report.py`` puts this table at the top of results/README.md; ``python shared/bench/targets.py``
prints it. Every number comes from a result file (named in the row); a target whose file is missing
or lacks the rows says "not measured". Verdicts: ``met``, ``NOT met``, ``not measured``, and ``-``
for rows that are measurements without a pass mark (the scaling exponents).

Where bench_core_peers.json exists (``bench_core.py --rounds 5``: the peer pairs run in turn, each
ratio the median of five paired runs) the peer and encoder rows use it; otherwise bench_core.json.
The strict peer comparison is against the ``_fused`` twin: the peer with the same fused AdamW, so the
models alone are compared; the peer as its own examples run it is shown beside it.

usage: python shared/bench/targets.py [--results shared/bench/results]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
Results = dict[str, Any]  # result-file stem -> its parsed JSON
Verdict = tuple[str, bool | None, str]  # measured text, met (None: no pass mark), source file(s)


class NotMeasured(LookupError):
    """The result file or the rows a target needs are not there."""


def load_results(folder: Path) -> Results:
    return {f.stem: json.loads(f.read_text()) for f in sorted(folder.glob("*.json"))}


def _need(res: Results, stem: str) -> Any:
    if stem not in res:
        raise NotMeasured(f"{stem}.json missing")
    return res[stem]


def _core_rows(res: Results, *names: str) -> tuple[dict[str, dict], str]:
    """bench_core rows by name, from the paired-rounds file when it has every name."""
    for stem in ("bench_core_peers", "bench_core"):
        rows = {r["row"]: r for r in res.get(stem, {}).get("rows", []) if "error" not in r}
        if all(n in rows for n in names):
            return rows, stem
    raise NotMeasured(f"bench_core rows {', '.join(names)} missing")


def _rounds(r: dict, key: str) -> str:
    pairs = r.get(f"{key}_rounds")
    return f" (rounds {min(pairs):.2f}-{max(pairs):.2f})" if pairs else ""


def peers(ours: str, peer: str) -> Callable[[Results], Verdict]:
    """ours/peer samples/s >= 1.0 and peak memory <= 1.0 against the fused-AdamW twin."""

    def check(res: Results) -> Verdict:
        rows, stem = _core_rows(res, ours, f"{peer}_fused")
        r = rows[ours]
        parts, met = [], True
        for p in (f"{peer}_fused", peer):
            if f"speed_vs_{p}" not in r:
                continue
            speed, mem = r[f"speed_vs_{p}"], r[f"memory_vs_{p}"]
            parts.append(f"vs {p}: {speed:.2f}x speed{_rounds(r, f'speed_vs_{p}')}, {mem:.2f}x memory")
            if p.endswith("_fused"):
                met = speed >= 1.0 and mem <= 1.0
        return "; ".join(parts), met, stem

    return check


def encoder_mfu(res: Results) -> Verdict:
    rows, stem = _core_rows(res, "ours_vitb_encoder")
    enc = rows["ours_vitb_encoder"]["mfu_vs_matmul"]
    full = rows.get("ours_vitb", {}).get("mfu_vs_matmul")
    text = f"encoder {enc:.2f} of the matmul peak" + (f"; whole MAE step {full:.2f}" if full is not None else "")
    return text, enc >= 0.85, stem


def checkpointing(res: Results) -> Verdict:
    rows = [r for r in _need(res, "bench_core")["rows"] if "_ckpt" in r["row"] and "time_vs_no_ckpt" in r]
    if not rows:
        raise NotMeasured("bench_core has no checkpointing row with its plain twin")
    parts = [f"b{r['batch']}: {100 * (r['memory_vs_no_ckpt'] - 1):+.0f} % memory at {r['time_vs_no_ckpt']:.2f}x time"
             for r in rows]
    ok = [r["batch"] for r in rows if r["memory_vs_no_ckpt"] <= 0.6 and r["time_vs_no_ckpt"] <= 1.35]
    where = f" (met at batch {', '.join(map(str, ok))})" if ok else ""
    return "; ".join(parts) + where, bool(ok), "bench_core"


def data_path(res: Results) -> Verdict:
    rows = [r for r in _need(res, "bench_datapath").get("domains", []) if "ratio" in r]
    if not rows:
        raise NotMeasured("bench_datapath has no domain rows")
    parts = [f"{r['domain']} {r['ratio']:.2f} ("
             + (f"0 workers {r['ratio0']:.2f}, " if "ratio0" in r else "") + f"engine bound {r['ratio_bound']:.2f})"
             for r in rows]
    return "; ".join(parts), all(r["ratio"] >= 0.9 for r in rows), "bench_datapath"


def mri_cache(res: Results) -> Verdict:
    rows = [r for r in _need(res, "bench_datapath").get("medmae_cache", []) if r.get("cache") == "memory"]
    if not rows:
        raise NotMeasured("bench_datapath has no medmae memory-cache row")
    parts = [f"{r['case']}: {r['speedup']:.1f}x" for r in rows]
    return "; ".join(parts), all(r["speedup"] >= 10 for r in rows), "bench_datapath"


def point_ops(res: Results) -> Verdict:
    rows = _need(res, "bench_pointops").get("ratios_vs_pytorch3d", [])
    if not rows:
        raise NotMeasured("bench_pointops ran without pytorch3d")
    worst = {}
    for r in rows:
        for k, v in r.items():
            if k.endswith("_time_ours_over_pytorch3d") and v > worst.get(k, (0.0, 0))[0]:
                worst[k] = (v, r["N"])
    parts = [f"{k.split('_')[0]} {v:.2f} (N={n})" for k, (v, n) in worst.items()]
    sizes = sorted(r["N"] for r in rows)
    return (f"slowest ours/pytorch3d time over N={sizes[0]}-{sizes[-1]}: " + ", ".join(parts),
            all(v <= 1.0 for v, _ in worst.values()), "bench_pointops")


def chamfer_memory(res: Results) -> Verdict:
    rows = [r for r in _need(res, "bench_pointops").get("chamfer_memory", [])
            if r.get("backend") == "torch" and r.get("N", 0) >= 32768]
    if not rows:
        raise NotMeasured("bench_pointops has no 32k torch Chamfer row")
    top = max(rows, key=lambda r: r["rss_delta_mb"])
    return (f"peak RSS +{top['rss_delta_mb']:.0f} MB ({top['pass']}, N={top['N']})",
            top["rss_delta_mb"] < 1024, "bench_pointops")


def geo_sampler(res: Results) -> Verdict:
    rows = _need(res, "bench_geomae").get("read", [])
    by = {(r["reader"].split()[0], r["workers"]): r["chips_per_s"] for r in rows}
    pairs = [(w, sps / by["torchgeo", w]) for (name, w), sps in by.items()
             if name == "geomae" and ("torchgeo", w) in by]
    if not pairs:
        raise NotMeasured("bench_geomae has no torchgeo reader row")
    return (", ".join(f"{ratio:.1f}x torchgeo's chips/s with {w} workers" for w, ratio in sorted(pairs)),
            all(ratio >= 1.0 for _, ratio in pairs), "bench_geomae")


def scaling(res: Results) -> Verdict:
    fits = _need(res, "scaling").get("fits", {})
    if not fits:
        raise NotMeasured("scaling.json has no fitted exponents")
    parts = [f"{k}: time ~ n^{f['time_exponent']:.2f}, memory ~ n^{f['memory_exponent']:.2f}" for k, f in fits.items()]
    return "; ".join(parts), None, "scaling"


def gpu_tables(res: Results) -> Verdict:
    gpu = sorted(stem for stem, d in res.items() if isinstance(d, dict) and d.get("device") == "cuda")
    if not gpu:
        raise NotMeasured("no result file from a GPU run (shared/bench/gpu_check.sh)")
    return f"GPU result files: {', '.join(gpu)}", None, ", ".join(gpu)


TARGETS: list[tuple[str, Callable[[Results], Verdict]]] = [
    ("2D ViT-B/16 MAE step >= 1.0x Hugging Face ViTMAE samples/s, <= 1.0x memory", peers("ours_vitb", "hf_vitmae")),
    ("3D ViT-B MAE step >= 1.0x MONAI MaskedAutoEncoderViT samples/s, <= 1.0x memory", peers("ours_3d", "monai_3d")),
    ("ViT-B encoder step >= 0.85 of the measured matmul peak", encoder_mfu),
    ("activation checkpointing: peak memory -40 % or more at <= 1.35x step time", checkpointing),
    ("end-to-end pretraining (tiny config, 2 workers) >= 0.9 of model-only samples/s", data_path),
    ("MRI memory cache: second epoch >= 10x faster than the first", mri_cache),
    ("pure-torch FPS, kNN, ball query, Chamfer at least as fast as pytorch3d's CPU ops", point_ops),
    ("Chamfer of 32k x 32k points in under 1 GB", chamfer_memory),
    ("geo data path against torchgeo's sampler", geo_sampler),
    ("scaling curves: fitted growth exponents", scaling),
    ("the same tables on a GPU (bf16, flash SDPA, compile)", gpu_tables),
]


def evaluate(res: Results) -> list[dict[str, str]]:
    rows = []
    for name, check in TARGETS:
        try:
            measured, met, source = check(res)
            verdict = "-" if met is None else "met" if met else "NOT met"
        except NotMeasured as e:
            measured, verdict, source = str(e), "not measured", ""
        rows.append({"target": name, "measured": measured, "verdict": verdict, "source": source})
    return rows


def markdown(rows: list[dict[str, str]]) -> list[str]:
    out = ["| target | measured | verdict | source |", "|---|---|---|---|"]
    return out + [f"| {r['target']} | {r['measured']} | {r['verdict']} | {r['source']} |" for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", type=Path, default=HERE / "results")
    a = ap.parse_args()
    print("\n".join(markdown(evaluate(load_results(a.results)))))


if __name__ == "__main__":
    main()
