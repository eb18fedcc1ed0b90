"""medmae benchmark (issue 9: quality, speed). Prints tables; writes JSON with --json.

Data: the package's bundled case (TCGA-DU-7294: T1, T1c, T2, FLAIR at 2 mm, a 2x2x2 block mean of
the suite's reference copy), preprocessed as in training (RAS, 2 mm, brain crop, per-modality
z-score over brain voxels; 65 x 81 x 66 voxels). The volume is split along the anterior-posterior
axis: the posterior 60 % pretrains, the anterior 40 % is held out (it holds most of the FLAIR
lesion, so the held-out part is harder than the training part).

1. Pretrain medmae_tiny (32^3 crops, 8^3 patches, 75 % group-budget masking) on the CPU for at
   most --minutes on random crops of the training part only.
2. On the held-out part alone: synthesise t1ce from t1, t2 and flair (sliding windows, every t1ce
   token masked) and report PSNR and SSIM over the brain voxels (z-score units; PSNR range = range
   of the true t1ce there) against two non-learned baselines fitted on the training part's brain
   voxels: (a) the available modality most correlated with t1ce, rescaled by least squares
   (a * x + b); (b) a per-voxel least-squares mix of all three (w . x + b). A last row gives the
   ceiling of the model's linear output head (:func:`head_ceiling`): the true t1ce as that head
   could best express it, an estimate of the most any network behind that head can reach.
3. A probe, pretrained against randomly initialised: held-out 32^3 crops, the encoder sees only
   t1 and t2; the label says whether the crop holds more FLAIR-hyperintense voxels (FLAIR z > 2,
   a lesion) than the median crop. Logistic regression and kNN, 5-fold cross-validation.
4. Throughput: preprocessing of the full-size 1 mm reference case (240 x 240 x 155 x 4, from the
   shared data when present, else the bundled case) in cases/s without cache, and from MONAI's
   CacheDataset (memory) and PersistentDataset (disk, cold and warm); training samples/s and peak
   memory (RSS of a fresh process; the idle process's RSS is given too) of medmae_tiny (32^3 crops)
   and medmae_bmmae_base (ViT-B, 128^3 crops), batch 1, on this CPU.

usage: python shared/bench/bench_medmae.py [--minutes 15] [--quick] [--threads N] [--set KEY=VALUE ...]
       [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from benchlib import backward_step, engine_allocator, time_limit
from torch.utils.data import DataLoader

from maecore.config import load_config
from maecore.models import create_model
from maecore.tasks import TrainConfig, run_pretrain
from maecore.tasks.data import collate_dict
from maecore.tasks.probe import compare_to_random
from medmae import sample_dir
from medmae.cases import Case, find_cases
from medmae.data import DataConfig, MRIDataset
from medmae.metrics import psnr, rescaled_baseline, ssim
from medmae.synthesis import synthesise_array

MODS = ["t1", "t1ce", "t2", "flair"]
HAVE, WANT = ["t1", "t2", "flair"], "t1ce"
SPLIT_AXIS, TRAIN_FRACTION = 1, 0.6  # axis 1 of the RAS volume: posterior -> anterior


def shared_case() -> Path | None:
    p = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mri" / "TCGA-DU-7294"
    return p if p.is_dir() else None


def tiny_config(max_steps: int, overrides: Sequence[str] = ()) -> dict:
    cfg = load_config("medmae", "tiny", [f"train.max_steps={max_steps}", "train.warmup_steps=50",
                                         "train.ckpt_every=1000000", "train.log_every=50", "train.batch_size=4",
                                         *overrides])
    cfg["model"]["modalities"] = MODS
    return cfg


# ---------------------------------------------------------------------- 1. pretrain
def pretrain(minutes: float, run_dir: Path, overrides: Sequence[str] = ()) -> tuple[torch.nn.Module, MRIDataset, dict]:
    cfg = tiny_config(max_steps=1_000_000, overrides=overrides)
    dc = DataConfig.from_cfg(cfg)
    cases = find_cases(sample_dir(), dc.modalities)[0]
    region = [(0.0, 1.0)] * 3
    region[SPLIT_AXIS] = (0.0, TRAIN_FRACTION)
    dc.samples_per_case = 100_000  # an endless stream of crops (the step limit is the time limit)
    train = MRIDataset(cases, dc, train=True, region=region)
    model = create_model(cfg["model"]["name"], **{k: v for k, v in cfg["model"].items() if k != "name"})
    model.meta = {"modalities": MODS, "spacing": dc.spacing, "roi_size": dc.roi_size}
    summary = run_pretrain(model, train, run_dir, TrainConfig.from_dict(cfg["train"]),
                           callbacks=[time_limit(minutes * 60)], logger=True)
    return model.eval(), train, summary


# ---------------------------------------------------------------------- 2. synthesis vs baselines
def split_volume(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cut = int(round(TRAIN_FRACTION * image.shape[1 + SPLIT_AXIS]))
    sl = [slice(None)] * 4
    sl[1 + SPLIT_AXIS] = slice(0, cut)
    train = image[tuple(sl)]
    sl[1 + SPLIT_AXIS] = slice(cut, None)
    return train, image[tuple(sl)]


def baselines(train: np.ndarray, test: np.ndarray) -> dict[str, np.ndarray]:
    w, have = MODS.index(WANT), [MODS.index(m) for m in HAVE]
    brain_tr, brain_te = np.any(train[have] != 0, 0), np.any(test[have] != 0, 0)
    name, r, rescaled = rescaled_baseline({m: train[i] for m, i in zip(HAVE, have)}, train[w], brain_tr,
                                          apply_to={m: test[i] for m, i in zip(HAVE, have)}, apply_mask=brain_te)
    y = train[w][brain_tr].astype(np.float64)
    xs = train[have][:, brain_tr].astype(np.float64)
    mix, *_ = np.linalg.lstsq(np.c_[xs.T, np.ones(len(y))], y, rcond=None)
    mixed = np.where(brain_te, np.tensordot(mix[:-1], test[have], 1) + mix[-1], 0.0)
    return {f"most-correlated modality rescaled ({name}, r={r:.3f})": rescaled,
            "least-squares mix of t1, t2, flair": mixed}


def _patches(vol: np.ndarray, patch: tuple[int, ...]) -> np.ndarray:
    """Non-overlapping patches of ``vol`` (a whole number of them per axis) as rows ``[N, prod(patch)]``."""
    g = [n // p for n, p in zip(vol.shape, patch)]
    v = vol[: g[0] * patch[0], : g[1] * patch[1], : g[2] * patch[2]]
    v = v.reshape(g[0], patch[0], g[1], patch[1], g[2], patch[2]).transpose(0, 2, 4, 1, 3, 5)
    return v.reshape(-1, int(np.prod(patch)))


def head_ceiling(train: np.ndarray, test: np.ndarray, patch: tuple[int, ...], width: int) -> np.ndarray:
    """``test`` as the best output head ``Linear(width -> prod(patch))`` could give it, behind a perfect network.

    Whatever the network before it, every patch such a head outputs is ``W h + b``: a point of one
    ``width``-dimensional affine subspace of the patch space. The subspace fitted to the training
    volume's patches at every offset (random crops see them all) is their mean plus their ``width``
    leading principal components; each patch of ``test`` (zero-padded to whole patches) is replaced
    by its projection on it. A learned head could fit the held-out part slightly better than the
    training part's components do, so this is an estimate of the ceiling, not a bound.
    """
    windows = np.lib.stride_tricks.sliding_window_view(train, patch)[::2, ::2, ::2]
    rows = windows.reshape(-1, int(np.prod(patch))).astype(np.float64)
    mean = rows.mean(0)
    basis = np.linalg.svd(rows - mean, full_matrices=False)[2][:width]
    shape = [-(-n // p) * p for n, p in zip(test.shape, patch)]
    padded = np.zeros(shape)
    padded[tuple(slice(0, n) for n in test.shape)] = test
    proj = (_patches(padded, patch) - mean) @ basis.T @ basis + mean
    g = [n // p for n, p in zip(shape, patch)]
    out = proj.reshape(*g, *patch).transpose(0, 3, 1, 4, 2, 5).reshape(shape)
    return out[tuple(slice(0, n) for n in test.shape)]


def evaluate_synthesis(model: torch.nn.Module, image: np.ndarray, roi: list[int]) -> list[dict]:
    train, test = split_volume(image)
    w, have = MODS.index(WANT), [MODS.index(m) for m in HAVE]
    brain = np.any(test[have] != 0, 0)
    truth = test[w]
    rng = float(truth[brain].max() - truth[brain].min())
    t0 = time.perf_counter()
    pred = synthesise_array(model, torch.from_numpy(test.copy()), torch.zeros(4, dtype=torch.bool), w, roi,
                            overlap=0.5).numpy()
    secs = time.perf_counter() - t0
    pred = np.where(brain, pred, 0.0)
    rows = [{"method": "medmae_tiny (ours)", "psnr": psnr(pred, truth, brain, rng),
             "ssim": ssim(pred, truth, brain, rng), "seconds": round(secs, 2)}]
    for name, vol in baselines(train, test).items():
        rows.append({"method": name, "psnr": psnr(vol, truth, brain, rng), "ssim": ssim(vol, truth, brain, rng)})
    patch, width = tuple(model.tokenizer.patch), model.heads[w].in_features
    best = np.where(brain, head_ceiling(train[w], truth, patch, width), 0.0)
    rows.append({"method": f"ceiling of our Linear({width} -> {'x'.join(map(str, patch))}) output head "
                           "(the true t1ce on its best subspace)",
                 "psnr": psnr(best, truth, brain, rng), "ssim": ssim(best, truth, brain, rng)})
    return rows


# ---------------------------------------------------------------------- 3. probe
def probe(model: torch.nn.Module, image: np.ndarray, n_crops: int, seed: int = 0) -> dict:
    _, test = split_volume(image)
    rng = np.random.default_rng(seed)
    crops, lesion = [], []
    for _ in range(n_crops):
        o = [rng.integers(0, s - 32 + 1) for s in test.shape[1:]]
        c = test[:, o[0] : o[0] + 32, o[1] : o[1] + 32, o[2] : o[2] + 32]
        crops.append(torch.from_numpy(np.ascontiguousarray(c)).float())
        lesion.append(float((c[MODS.index("flair")] > 2.0).mean()))
    y = (np.array(lesion) > np.median(lesion)).astype(int).tolist()
    samples = [{"x": c, "group_pad": torch.zeros(4, dtype=torch.bool)} for c in crops]
    loader = DataLoader(samples, batch_size=8, collate_fn=collate_dict)
    result = compare_to_random(model, loader, y, cv=5, embed_groups=["t1", "t2"], probes=("linear", "knn"))
    result["n_crops"], result["positives"] = n_crops, int(sum(y))
    return result


# ---------------------------------------------------------------------- 4. throughput
def _copies(case: Case, n: int) -> list[Case]:
    """``n`` cases naming the same files under distinct ids (distinct disk-cache entries)."""
    return [Case(f"{case.case_id}-{i}", dict(case.files), source=case.source) for i in range(n)]


def _samples_per_s(ds: MRIDataset, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        ds[i]
    return n / (time.perf_counter() - t0)


def preprocessing_throughput(repeats: int) -> dict:
    """Cases/s through read + RAS + 1 mm + brain crop + z-score + a random 128^3 crop and flips,
    without cache (every access preprocesses) and from the memory and disk caches."""
    src = shared_case()
    folder = src if src is not None else sample_dir() / "TCGA-DU-7294"
    cases = _copies(find_cases(folder, MODS)[0][0], repeats)
    base = dict(spacing=[1.0, 1.0, 1.0], roi_size=[128, 128, 128], samples_per_case=1)
    out: dict = {"case": str(folder), "repeats": repeats}
    plain = MRIDataset(cases, DataConfig(**base, cache="none"))
    out["no_cache_cases_per_s"] = _samples_per_s(plain, repeats)
    out["preprocessed_shape"] = list(plain.preprocessed(0)["image"].shape)
    t0 = time.perf_counter()
    mem = MRIDataset(cases, DataConfig(**base, cache="memory"))
    out["memory_cache_fill_cases_per_s"] = repeats / (time.perf_counter() - t0)
    out["memory_cache_cases_per_s"] = _samples_per_s(mem, repeats)
    cache_dir = Path(tempfile.mkdtemp(prefix="medmae-bench-cache-"))
    try:
        disk = MRIDataset(cases, DataConfig(**base, cache="disk", cache_dir=str(cache_dir)))
        out["disk_cache_cold_cases_per_s"] = _samples_per_s(disk, repeats)
        out["disk_cache_warm_cases_per_s"] = _samples_per_s(disk, repeats)
        out["disk_cache_mb_per_case"] = sum(f.stat().st_size for f in cache_dir.glob("*.pt")) / 1e6 / repeats
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    return out


def _vm_hwm_mb() -> float:
    """Peak resident set of this process image (VmHWM; ru_maxrss would include the parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _train_worker(name: str, roi: int, steps: int, threads: int, queue) -> None:
    """In a fresh process: batch-1 AdamW steps on real crops (cached); samples/s after one warm-up
    step; peak and idle (after imports) resident memory."""
    torch.set_num_threads(threads)
    idle = _vm_hwm_mb()
    spacing = 2.0 if roi <= 32 else 1.0
    dc = DataConfig(spacing=[spacing] * 3, roi_size=[roi] * 3, samples_per_case=steps + 1)
    ds = MRIDataset(find_cases(sample_dir(), MODS)[0], dc)
    model = create_model(name)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    free_early = engine_allocator()  # malloc and gradient order as pretrain has them on the CPU
    times = []
    for i in range(steps + 1):
        batch = collate_dict([ds[i]])
        t0 = time.perf_counter()
        out = model(batch, generator=gen)
        backward_step(out.loss, opt, free_early)
        times.append(time.perf_counter() - t0)
    peak = _vm_hwm_mb()
    queue.put({"model": name, "roi": roi, "tokens": int(out.pad.shape[1]), "steps_timed": steps,
               "samples_per_s": steps / sum(times[1:]), "step_s": float(np.mean(times[1:])),
               "peak_rss_mb": round(peak), "idle_rss_mb": round(idle),
               "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1), "threads": threads})


def training_throughput(name: str, roi: int, steps: int, threads: int) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_train_worker, args=(name, roi, steps, threads, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


# ---------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=15.0, help="pretraining time limit")
    parser.add_argument("--quick", action="store_true", help="a smoke run of every part (about 3 minutes)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: on a shared 2-core machine two threads contend)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override of the pretrained medmae_tiny (repeatable), e.g. model.decoder_dim=128")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    minutes = 0.5 if args.quick else args.minutes
    results: dict = {"minutes": minutes, "quick": args.quick, "threads": args.threads, "overrides": args.set,
                     "torch": torch.__version__}
    with tempfile.TemporaryDirectory(prefix="medmae-bench-") as tmp:
        model, train_ds, summary = pretrain(minutes, Path(tmp) / "run", args.set)
        results["pretrain"] = {k: summary[k] for k in ("steps", "wall_s", "samples_per_s", "final_loss")}
        image = train_ds.preprocessed(0)["image"].as_tensor().numpy()
        results["synthesis"] = evaluate_synthesis(model, image, train_ds.dc.roi_size)
        results["probe"] = probe(model, image, n_crops=24 if args.quick else 60)
    results["preprocessing"] = preprocessing_throughput(2 if args.quick else 4)
    steps = (2, 1) if args.quick else (20, 3)
    results["training"] = [training_throughput("medmae_tiny", 32, steps[0], args.threads),
                           training_throughput("medmae_bmmae_base", 128, steps[1], args.threads)]
    report(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=float))


def report(r: dict) -> None:
    p = r["pretrain"]
    mode = ("quick" if r["quick"] else f"{r['minutes']} min") + "".join(f", {o}" for o in r.get("overrides", []))
    print(f"\n## medmae benchmark ({mode}, {r['threads']} threads)")
    print(f"pretrain medmae_tiny: {p['steps']} steps in {p['wall_s']:.0f} s ({p['samples_per_s']} samples/s), "
          f"final masked loss {p['final_loss']:.3f}")
    print("\n| t1ce from t1, t2, flair (held-out anterior 40 %) | PSNR dB | SSIM |\n|---|---|---|")
    for row in r["synthesis"]:
        print(f"| {row['method']} | {row['psnr']:.2f} | {row['ssim']:.3f} |")
    pr = r["probe"]
    print(f"\nprobe (lesion-rich crop from t1+t2 embeddings, {pr['n_crops']} held-out crops, 5-fold):")
    for which in ("pretrained", "random_init"):
        s = pr[which]
        print(f"  {which:11s} linear acc {s['linear']['accuracy']:.3f} auroc {s['linear']['auroc']}, "
              f"knn acc {s['knn']['accuracy']:.3f}, emb_std {s['emb_std']:.3f}")
    q = r["preprocessing"]
    print(f"\npreprocessing ({q['case']}, {q['repeats']} cases -> {q['preprocessed_shape']}):\n"
          f"  no cache {q['no_cache_cases_per_s']:.2f} cases/s; memory cache: fill "
          f"{q['memory_cache_fill_cases_per_s']:.2f}, cached {q['memory_cache_cases_per_s']:.0f} cases/s;\n"
          f"  disk cache: cold {q['disk_cache_cold_cases_per_s']:.2f}, warm {q['disk_cache_warm_cases_per_s']:.2f} "
          f"cases/s ({q['disk_cache_mb_per_case']:.0f} MB/case)")
    print("\n| model | crop | tokens | params (M) | samples/s | s/step | peak RSS MB (idle) |")
    print("|---|---|---|---|---|---|---|")
    for t in r["training"]:
        print(f"| {t['model']} | {t['roi']}^3 | {t['tokens']} | {t['params_m']} | {t['samples_per_s']:.3f} | "
              f"{t['step_s']:.2f} | {t['peak_rss_mb']} ({t['idle_rss_mb']}) |")


if __name__ == "__main__":
    main()
