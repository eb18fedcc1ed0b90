"""Scaling curves (performance issue): step time and peak memory as the token count grows.

Curves, one fresh process per point (so peak RSS belongs to that point alone):
  mask     ViT-B/16 MAE, 224 px, batch --batch, mask ratio 0.5 .. 0.9 (visible tokens 98 .. 20)
  image    ViT-B/16 MAE, 75 % masking, image 224 .. 448 px (196 .. 784 tokens)
  volume   3D ViT-B MAE, patch 16, batch 1, volume 64^3 .. 128^3 (64 .. 512 tokens)
  points   mae3d_pointmae (64 groups x 32), batch 8, 1k .. 32k input points (needs mae3d)
For each curve the growth exponent b of step_s ~ a * size^b is fitted by least squares in log-log,
with size = encoder tokens (mask), tokens (image, volume) or points. Results: JSON and a markdown
table under shared/bench/results/ (or --out), with the machine description.

Step time is the median of --steps after a warm-up, and the fastest of --passes sweeps over the whole
grid (a shared VM drifts 10-40 % from one minute to the next: one sweep gave the same ViT-B config
5.4 s at one point and 4.1 s at another); every pass is kept in the JSON ("step_s_passes"). Device:
as bench_core (a GPU with bf16 autocast when present; peak memory is then the allocator's).

usage: python shared/bench/bench_scaling.py [--curves mask,image,volume,points] [--steps 3] [--passes 2]
                                            [--device auto|cpu|cuda] [--precision auto|fp32|bf16] [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
from benchlib import Device, add_device_args, peak_memory_key

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

CURVES = {
    "mask": [0.5, 0.6, 0.75, 0.85, 0.9],
    "image": [224, 288, 352, 448],
    "volume": [64, 96, 128],
    "points": [1024, 4096, 8192, 16384, 32768],
}
QUICK = {"mask": [0.5, 0.75, 0.9], "image": [224, 320], "volume": [64, 96], "points": [1024, 8192]}


def point(curve: str, value: float, batch: int, steps: int, dev: Device) -> dict:
    from bench_core import ours

    if curve == "mask":
        r = ours(batch, steps, "", 2, 224, dev, mask_ratio=value)
        size = round((224 // 16) ** 2 * (1 - value))
    elif curve == "image":
        r = ours(batch, steps, "", 2, int(value), dev)
        size = (int(value) // 16) ** 2
    elif curve == "volume":
        r = ours(1, steps, "", 3, int(value), dev)
        size = (int(value) // 16) ** 3
    else:
        from bench_mae3d import train_throughput

        t = train_throughput("mae3d_pointmae", int(value), 8, steps, device=dev)
        r, size = {"step_s": t["step_s"], "params_M": t["params_M"]}, int(value)
    return {"curve": curve, "value": value, "size": size, "step_s": round(r["step_s"], 4),
            "params_M": r["params_M"], **dev.memory()}


def fastest(runs: list[dict]) -> dict:
    """One grid point over its passes: the fastest run (its memory too), with every pass's step time."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[-1]
    best = min(ok, key=lambda r: r["step_s"])
    return {**best, "step_s_passes": [r["step_s"] for r in ok]}


def fit_exponent(sizes: list[float], ys: list[float]) -> float | None:
    if len(sizes) < 2:
        return None
    b, _ = np.polyfit(np.log(sizes), np.log(ys), 1)
    return round(float(b), 3)


def markdown(out: dict) -> str:
    mem = "peak alloc MB" if out.get("device") == "cuda" else "peak RSS MB"
    lines = [f"# Scaling curves\n\nMachine: {out['machine']}\n",
             f"| curve | value | size | step s (fastest pass) | step s, each pass | {mem} |",
             "|---|---|---|---|---|---|"]
    for r in out["points"]:
        if "error" in r:
            lines.append(f"| {r['curve']} | {r['value']} | error: {r['error']} | | | |")
        else:
            passes = ", ".join(str(t) for t in r.get("step_s_passes", [r["step_s"]]))
            lines.append(f"| {r['curve']} | {r['value']} | {r['size']} | {r['step_s']} | {passes} | "
                         f"{r[peak_memory_key(r)]} |")
    lines += ["", f"| curve | size measure | time exponent | memory exponent ({mem} above the smallest point) |",
              "|---|---|---|---|"]
    for c, f in out["fits"].items():
        lines.append(f"| {c} | {f['size']} | {f['time_exponent']} | {f['memory_exponent']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--curves", default="mask,image,volume,points")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--passes", type=int, default=2, help="sweeps over the grid; each point keeps its fastest")
    add_device_args(ap)
    ap.add_argument("--quick", action="store_true", help="two or three points per curve, one pass")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--point", nargs=2, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    dev = Device.pick(a.device, a.precision)
    if a.point:
        print(json.dumps(point(a.point[0], float(a.point[1]), a.batch, a.steps, dev)))
        return
    grid = QUICK if a.quick else CURVES
    keys = [(curve, value) for curve in a.curves.split(",") for value in grid[curve]]
    runs: dict[tuple, list[dict]] = {k: [] for k in keys}
    for _ in range(1 if a.quick else a.passes):
        for curve, value in keys:
            cmd = [sys.executable, __file__, "--point", curve, str(value), "--batch", str(a.batch),
                   "--steps", str(a.steps), "--device", dev.type, "--precision", dev.precision]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                tail = res.stderr.strip().splitlines()
                runs[curve, value].append({"curve": curve, "value": value, "error": tail[-1] if tail else "failed"})
            else:
                runs[curve, value].append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(json.dumps(runs[curve, value][-1]), flush=True)
    rows = [fastest(runs[k]) for k in keys]
    fits = {}
    measure = {"mask": "visible tokens", "image": "tokens", "volume": "tokens", "points": "input points"}
    for curve in a.curves.split(","):
        ok = [r for r in rows if r["curve"] == curve and "error" not in r]
        if len(ok) < 2:
            continue
        mem = peak_memory_key(ok[0])
        base = min(r[mem] for r in ok)
        grow = [(r["size"], r[mem] - base) for r in ok if r[mem] - base > 1]
        fits[curve] = {"size": measure[curve], "time_exponent": fit_exponent([r["size"] for r in ok],
                                                                             [r["step_s"] for r in ok]),
                       "memory_exponent": fit_exponent([g[0] for g in grow], [g[1] for g in grow])}
    out = {"machine": f"{platform.processor() or platform.machine()}, {dev.describe()}, batch {a.batch} "
                      f"(volume 1, points 8), fastest of {1 if a.quick else a.passes} passes",
           "device": dev.type, "precision": dev.precision, "points": rows, "fits": fits}
    print(markdown(out))
    a.out.mkdir(parents=True, exist_ok=True)
    stem = "scaling_quick" if a.quick else "scaling"
    (a.out / f"{stem}.json").write_text(json.dumps(out, indent=1))
    (a.out / f"{stem}.md").write_text(markdown(out))


if __name__ == "__main__":
    main()
