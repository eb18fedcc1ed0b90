"""Scaling curves (performance issue): step time and peak memory as the token count grows.

Curves, one fresh process per point (so peak RSS belongs to that point alone):
  mask     ViT-B/16 MAE, 224 px, batch --batch, mask ratio 0.5 .. 0.9 (visible tokens 98 .. 20)
  image    ViT-B/16 MAE, 75 % masking, image 224 .. 448 px (196 .. 784 tokens)
  volume   3D ViT-B MAE, patch 16, batch 1, volume 64^3 .. 128^3 (64 .. 512 tokens)
  points   mae3d_pointmae (64 groups x 32), batch 8, 1k .. 32k input points (needs mae3d)
For each curve the growth exponent b of step_s ~ a * size^b is fitted by least squares in log-log,
with size = encoder tokens (mask), tokens (image, volume) or points. Results: JSON and a markdown
table under shared/bench/results/ (or --out), with the machine description.

usage: python shared/bench/bench_scaling.py [--curves mask,image,volume,points] [--steps 2] [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

CURVES = {
    "mask": [0.5, 0.6, 0.75, 0.85, 0.9],
    "image": [224, 288, 352, 448],
    "volume": [64, 96, 128],
    "points": [1024, 4096, 8192, 16384, 32768],
}
QUICK = {"mask": [0.5, 0.75, 0.9], "image": [224, 320], "volume": [64, 96], "points": [1024, 8192]}


def point(curve: str, value: float, batch: int, steps: int) -> dict:
    from bench_core import ours

    if curve == "mask":
        r = ours(batch, steps, False, 2, 224, mask_ratio=value)
        size = round((224 // 16) ** 2 * (1 - value))
    elif curve == "image":
        r = ours(batch, steps, False, 2, int(value))
        size = (int(value) // 16) ** 2
    elif curve == "volume":
        r = ours(1, steps, False, 3, int(value))
        size = (int(value) // 16) ** 3
    else:
        from bench_mae3d import train_throughput

        t = train_throughput("mae3d_pointmae", int(value), 8, steps)
        r, size = {"step_s": t["step_s"], "params_M": t["params_M"]}, int(value)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"curve": curve, "value": value, "size": size, "step_s": round(r["step_s"], 4),
            "params_M": r["params_M"], "peak_rss_MB": round(peak, 1)}


def fit_exponent(sizes: list[float], ys: list[float]) -> float | None:
    if len(sizes) < 2:
        return None
    b, _ = np.polyfit(np.log(sizes), np.log(ys), 1)
    return round(float(b), 3)


def markdown(out: dict) -> str:
    lines = [f"# Scaling curves\n\nMachine: {out['machine']}\n",
             "| curve | value | size | step s | peak RSS MB |", "|---|---|---|---|---|"]
    for r in out["points"]:
        if "error" in r:
            lines.append(f"| {r['curve']} | {r['value']} | error: {r['error']} | | |")
        else:
            lines.append(f"| {r['curve']} | {r['value']} | {r['size']} | {r['step_s']} | {r['peak_rss_MB']} |")
    lines += ["", "| curve | size measure | time exponent | memory exponent (RSS above the smallest point) |",
              "|---|---|---|---|"]
    for c, f in out["fits"].items():
        lines.append(f"| {c} | {f['size']} | {f['time_exponent']} | {f['memory_exponent']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--curves", default="mask,image,volume,points")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="two or three points per curve")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--point", nargs=2, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.point:
        print(json.dumps(point(a.point[0], float(a.point[1]), a.batch, a.steps)))
        return
    grid = QUICK if a.quick else CURVES
    rows = []
    for curve in a.curves.split(","):
        for value in grid[curve]:
            cmd = [sys.executable, __file__, "--point", curve, str(value), "--batch", str(a.batch),
                   "--steps", str(a.steps)]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                tail = res.stderr.strip().splitlines()
                rows.append({"curve": curve, "value": value, "error": tail[-1] if tail else "failed"})
            else:
                rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    fits = {}
    measure = {"mask": "visible tokens", "image": "tokens", "volume": "tokens", "points": "input points"}
    for curve in a.curves.split(","):
        ok = [r for r in rows if r["curve"] == curve and "error" not in r]
        if len(ok) < 2:
            continue
        base = min(r["peak_rss_MB"] for r in ok)
        grow = [(r["size"], r["peak_rss_MB"] - base) for r in ok if r["peak_rss_MB"] - base > 1]
        fits[curve] = {"size": measure[curve], "time_exponent": fit_exponent([r["size"] for r in ok],
                                                                             [r["step_s"] for r in ok]),
                       "memory_exponent": fit_exponent([g[0] for g in grow], [g[1] for g in grow])}
    out = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
                      f"torch {torch.__version__}, fp32 CPU, batch {a.batch} (volume 1, points 8)",
           "points": rows, "fits": fits}
    print(markdown(out))
    a.out.mkdir(parents=True, exist_ok=True)
    stem = "scaling_quick" if a.quick else "scaling"
    (a.out / f"{stem}.json").write_text(json.dumps(out, indent=1))
    (a.out / f"{stem}.md").write_text(markdown(out))


if __name__ == "__main__":
    main()
