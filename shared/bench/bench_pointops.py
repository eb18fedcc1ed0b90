"""Point-op timings for maecore.pointops (torch path, and pytorch3d beside it when it imports).

Rows, batch 8 of random clouds (float32), for N in --sizes:
  fps_ms      farthest point sampling, 64 samples from N points
  knn_ms      64 query points against N points, k = 32
  ball_ms     ball query of the same 64 points, radius 0.3 (the clouds are unit Gaussians), at most 32
  chamfer_ms  both-way squared nearest-neighbour distances between two N-point clouds
Each time is the median of --repeats runs after one warm-up run. Then, in a fresh subprocess
each (so earlier work does not hide it), the peak memory growth of one Chamfer call at the largest N:
forward only, and forward + backward (RSS on the CPU; on a GPU the CUDA allocator's peak).
Device: a CUDA GPU when one is present, else the CPU (--device overrides); on a GPU each timing
waits for the device's queued work.

usage: python shared/bench/bench_pointops.py [--sizes 1024 8192 32768] [--batch 8] [--repeats 3]
                                             [--device auto|cpu|cuda] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
from benchlib import Device, add_device_args

from maecore import pointops as P


def _median_ms(fn, repeats: int, dev: Device) -> float:
    fn()  # warm-up
    dev.sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        dev.sync()
        times.append(time.perf_counter() - t)
    return round(statistics.median(times) * 1e3, 1)


def _clouds(batch: int, n: int, dev: Device) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(n)
    return tuple(torch.randn(batch, n, 3, generator=gen).to(dev.type) for _ in range(2))


def timing_rows(sizes: list[int], batch: int, repeats: int, dev: Device) -> list[dict]:
    rows = []
    for n in sizes:
        x, y = _clouds(batch, n, dev)
        backends = ["torch"] + (["pytorch3d"] if P.backend() == "pytorch3d" else [])
        for be in backends:
            reps = repeats if n <= 8192 or dev.type == "cuda" else 1
            rows.append({
                "N": n,
                "backend": be,
                "fps_ms": _median_ms(lambda x=x, be=be: P.farthest_point_sample(x, 64, backend=be), repeats, dev),
                "knn_ms": _median_ms(lambda x=x, be=be: P.knn(x[:, :64], x, 32, backend=be), repeats, dev),
                "ball_ms": _median_ms(lambda x=x, be=be: P.ball_query(x[:, :64], x, 0.3, 32, backend=be), repeats,
                                      dev),
                "chamfer_ms": _median_ms(lambda x=x, y=y, be=be: P.chamfer_distance(x, y, backend=be), reps, dev),
            })
    return rows


def _status_mb(key: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process from /proc, in MB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":")) / 1024


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_mb(exact: bool) -> float:
    return _status_mb("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def chamfer_peak_child(n: int, batch: int, backward: bool, backend: str, dev: Device) -> None:
    """Run in a fresh process: print the peak memory growth (MB) of one Chamfer call (RSS on the
    CPU, the CUDA allocator's peak over what was allocated before on a GPU)."""
    x, y = _clouds(batch, n, dev)
    P.chamfer_distance(x[:, :64], y[:, :64], backend=backend)  # load kernels and thread pools before the baseline
    x.requires_grad_(backward)
    dev.sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() / 2**20
    exact = _reset_peak()  # otherwise ru_maxrss: a lifetime peak that can hide growth below it
    before_rss = _status_mb("VmRSS") if exact else _peak_mb(False)
    t = time.perf_counter()
    d_ab, d_ba = P.chamfer_distance(x, y, backend=backend)
    if backward:
        (d_ab.mean() + d_ba.mean()).backward()
    dev.sync()
    seconds = time.perf_counter() - t
    out = {"rss_delta_mb": round(_peak_mb(exact) - before_rss, 1), "seconds": round(seconds, 2), "exact_peak": exact}
    if dev.type == "cuda":
        out["alloc_delta_mb"] = round(torch.cuda.max_memory_allocated() / 2**20 - before, 1)
    print(json.dumps(out))


def memory_rows(n: int, batch: int, dev: Device) -> list[dict]:
    rows = []
    for backend in ["torch"] + (["pytorch3d"] if P.backend() == "pytorch3d" else []):
        for backward in (False, True):
            cmd = [sys.executable, __file__, "--child", str(n), "--batch", str(batch), "--child-backend", backend,
                   "--device", dev.type]
            if backward:
                cmd.append("--backward")
            proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
            out = json.loads(proc.stdout.strip().splitlines()[-1])
            inputs_mb = round(2 * batch * n * 3 * 4 / 2**20, 1)
            rows.append({"N": n, "backend": backend, "pass": "forward+backward" if backward else "forward",
                         "inputs_mb": inputs_mb, **out})
    return rows


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 8192, 32768])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    add_device_args(ap, precision=False)
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--backward", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child-backend", default="torch", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    dev = Device.pick(args.device, "fp32")
    if args.child is not None:
        chamfer_peak_child(args.child, args.batch, args.backward, args.child_backend, dev)
        return {}
    info = {"torch": torch.__version__, "device": dev.describe(), "threads": torch.get_num_threads(),
            "backend_auto": P.backend(), "batch": args.batch}
    print(" ".join(f"{k}={v}" for k, v in info.items()))
    rows = timing_rows(args.sizes, args.batch, args.repeats, dev)
    print(f"{'N':>7} {'backend':>10} {'fps_ms':>9} {'knn_ms':>9} {'ball_ms':>9} {'chamfer_ms':>11}")
    for r in rows:
        ops = " ".join(f"{r[k]:>9}" for k in ("fps_ms", "knn_ms", "ball_ms"))
        print(f"{r['N']:>7} {r['backend']:>10} {ops} {r['chamfer_ms']:>11}")
    ratios = []  # ours/peer in time: below 1.0 we are faster
    for n in args.sizes:
        by = {r["backend"]: r for r in rows if r["N"] == n}
        if "pytorch3d" in by:
            ratios.append({"N": n, **{f"{op}_time_ours_over_pytorch3d": round(by["torch"][op] / by["pytorch3d"][op], 3)
                                     for op in ("fps_ms", "knn_ms", "ball_ms", "chamfer_ms")}})
    if ratios:
        print("\ntime ours / pytorch3d (below 1: ours faster):")
        for r in ratios:
            print("  " + "  ".join(f"{k}={v}" for k, v in r.items()))
    else:
        print("\npytorch3d: not installed (no peer row)")
    mem = memory_rows(max(args.sizes), args.batch, dev)
    key = "alloc_delta_mb" if dev.type == "cuda" else "rss_delta_mb"
    print(f"\nChamfer peak memory growth ({key}) at N={max(args.sizes)}, batch {args.batch} (fresh process each):")
    for r in mem:
        print(f"  {r['backend']:<10} {r['pass']:<17} +{r[key]} MB  ({r['seconds']} s; inputs {r['inputs_mb']} MB)")
    result = {"info": info, "timings": rows, "ratios_vs_pytorch3d": ratios, "chamfer_memory": mem}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
