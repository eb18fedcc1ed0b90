"""cardiomae benchmark (issue: cardiomae quality, speed). Prints tables; writes JSON with --json.

Data: the suite's reference records (shared/data/cardiac: 100, s0010_re, a103l, v102s, 03700181) when
present, else the package's bundled crops. Each record is split in time: the first 75 % pretrains, the
last 25 % is held out.

1. Pretrain on the CPU for --minutes on the first parts of all records.
2. On the held-out parts, lead synthesis as Pearson r and RMSE (mV) against the cleaned truth:
   V5 from MLII (record 100) and V1-V6 from the six limb leads (s0010_re); ours against a
   least-squares linear mix of the given leads (with intercept) fitted on the training part
   (cardiomae.tasks.linear_mix_recording).
3. Beat type (N vs S/V ectopic) from record 100's annotations: a logistic-regression probe on
   frozen embeddings of 2 s beat windows, fitted on the beats of the training part and scored on
   the held-out beats (AUROC, balanced accuracy), pretrained against randomly initialised.
4. Throughput: records/s and windows/s through reading and preprocessing; training samples/s and
   peak memory (RSS of a fresh process) for cardiomae_tiny and cardiomae_csfm_tiny.

usage: python shared/bench/bench_cardiomae.py [--minutes 15] [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from benchlib import time_limit, time_train_step
from torch.utils.data import DataLoader

from cardiomae.data import Beats, Labelled, Windows, load_prepared, sample_dir
from cardiomae.io import Recording, read_recording
from cardiomae.labels import annotated_beats
from cardiomae.preprocess import LeadNorm, PrepConfig, prepare
from cardiomae.tasks import linear_mix_recording, pearson_rmse, synthesize
from maecore.config import load_config
from maecore.models import create_model
from maecore.tasks import TrainConfig, run_pretrain
from maecore.tasks.data import collate_dict
from maecore.tasks.probe import compare_to_random

RECORDS = ("100", "s0010_re", "a103l", "v102s", "03700181")
HOLDOUT = 0.25
TASKS = {"100": (["MLII"], ["V5"]), "s0010_re": (["I", "II", "III", "aVR", "aVL", "aVF"],
                                                ["V1", "V2", "V3", "V4", "V5", "V6"])}


def data_dir() -> Path:
    shared = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cardiac"
    return shared if (shared / "100.hea").is_file() else sample_dir()


def crop(rec: Recording, t0: float, t1: float) -> Recording:
    """The part of a recording between ``t0`` and ``t1`` seconds (each channel at its own rate)."""
    sig = [s[int(round(t0 * f)): int(round(t1 * f))] for s, f in zip(rec.signals, rec.fs)]
    return Recording(rec.path, sig, rec.fs, rec.names, rec.units, rec.comments)


def synthesis_scores(model, recs: dict[str, Recording]) -> dict:
    prep = PrepConfig.from_meta(model.meta)
    out = {}
    for name, (have, want) in TASKS.items():
        rec = recs[name]
        cut = rec.duration_s * (1 - HOLDOUT)
        train, test = crop(rec, 0, cut), crop(rec, cut, rec.duration_s)
        syn = synthesize(model, test, have, want)
        base = linear_mix_recording(prep, train, have, want, apply=test)
        rows = {}
        for k, lead in enumerate(want):
            truth = syn.truth[lead]
            rows[lead] = {"ours": pearson_rmse(syn.signals[k], truth), "linear_mix": pearson_rmse(base[k], truth)}
        mean = {w: {m: float(np.mean([rows[lead][w][m] for lead in want])) for m in ("pearson_r", "rmse_mv")}
                for w in ("ours", "linear_mix")}
        out[f"{name}: {','.join(want)} from {','.join(have)}"] = {"mean": mean, "per_lead": rows,
                                                                    "heldout_s": round(test.duration_s, 1)}
    return out


def beat_probe(model, prep: PrepConfig, norm: LeadNorm, path: Path) -> dict:
    rec = prepare(read_recording(path), prep)
    beats = [b for b in annotated_beats([rec]) if b[2] in ("N", "S", "V")]
    y = np.array([0 if c == "N" else 1 for _, _, c in beats])
    cut = rec.x.shape[1] * (1 - HOLDOUT)
    tr = np.array([k for k, b in enumerate(beats) if b[1] < cut])
    te = np.array([k for k, b in enumerate(beats) if b[1] >= cut])
    ds = Labelled(Beats([rec], prep, norm, beats, 2.0), list(y))
    loader = DataLoader(ds, batch_size=64, collate_fn=collate_dict)
    res = compare_to_random(model, loader, list(y), probes=("linear",), cv=[(tr, te)])
    counts = {"train": [int((y[tr] == 0).sum()), int(y[tr].sum())], "heldout": [int((y[te] == 0).sum()),
                                                                               int(y[te].sum())]}
    return {"beats_N_SV": counts, **{w: {k: res[w]["linear"][k] for k in ("auroc", "balanced_accuracy")} |
                                     {"emb_std": res[w]["emb_std"]} for w in res}}


def preprocessing_throughput(paths: list[Path], prep: PrepConfig, repeats: int) -> dict:
    t = time.perf_counter()
    n_windows = 0
    for _ in range(repeats):
        recs = load_prepared(paths, prep)
        n_windows += len(Windows(recs, prep, LeadNorm.fit(recs, prep), stride=prep.window))
    wall = time.perf_counter() - t
    minutes = sum(r.duration_s for r in recs) / 60
    return {"records_per_s": round(len(paths) * repeats / wall, 2), "windows_per_s": round(n_windows / wall, 1),
            "signal_minutes_per_s": round(minutes * repeats / wall, 1), "records": len(paths)}


def _train_speed(name: str, batch: int, steps: int, queue) -> None:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = create_model(name)
    g = len(model.tokenizer.group_names)
    valid = torch.ones(batch, g, 2500, dtype=torch.bool)
    valid[:, 3:6] = False  # a typical mix: some leads absent
    b = {"x": torch.randn(batch, g, 2500), "valid": valid, "group_pad": ~valid.any(-1)}
    r = time_train_step(model, b, steps)
    queue.put({"model": name, "batch": batch, "window": "10 s x 13 lead slots (10 present)", **r,
               "samples_per_s": round(batch / r["step_s"], 2)})


def train_speed(name: str, batch: int, steps: int) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_train_speed, args=(name, batch, steps, q))
    p.start()
    out = q.get()
    p.join()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--quick", action="store_true", help="a few-minute smoke run")
    ap.add_argument("--model", default="cardiomae_tiny")
    ap.add_argument("--set", action="append", default=[], help="config override, e.g. model.mask_ratio=0.5")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--no-speed", action="store_true", help="skip the throughput tables")
    a = ap.parse_args()
    torch.set_num_threads(2)
    minutes = 0.5 if a.quick else a.minutes
    cfg = load_config("cardiomae", None, [f"model.name={a.model}", *a.set])
    prep = PrepConfig.from_config(cfg)
    folder = data_dir()
    paths = [folder / r for r in RECORDS]
    raw = {p.name: read_recording(p) for p in paths}
    records = load_prepared(paths, prep)
    spans = [(0, int(r.x.shape[1] * (1 - HOLDOUT))) for r in records]
    norm = LeadNorm.fit(records, prep, spans)
    ds = Windows(records, prep, norm, spans)
    results: dict = {"machine": f"{torch.get_num_threads()} CPU threads, torch {torch.__version__}",
                     "data": str(folder), "model": a.model, "train_windows": len(ds),
                     "overrides": a.set}

    model = create_model(cfg["model"]["name"], **{k: v for k, v in cfg["model"].items() if k != "name"})
    model.meta = {"prep": prep.to_dict(), "norm": norm.to_dict()}
    tc = TrainConfig.from_dict({**cfg["train"], "max_steps": 10**6, "progress": False, "ckpt_every": 10**6,
                                "accelerator": "cpu", "log_every": 50})
    with tempfile.TemporaryDirectory() as run:
        summary = run_pretrain(model, ds, run, tc, callbacks=[time_limit(minutes * 60)], logger=False)
    results["pretrain"] = {k: summary[k] for k in ("steps", "wall_s", "samples_per_s", "final_loss")}
    model.eval()
    results["synthesis_heldout"] = synthesis_scores(model, raw)
    results["beat_probe_100"] = beat_probe(model, prep, norm, folder / "100")
    if not a.no_speed:
        results["preprocessing"] = preprocessing_throughput(paths, prep, 1 if a.quick else 3)
        results["train_step"] = [train_speed("cardiomae_tiny", 16, 2 if a.quick else 5)]
        results["train_step"].append(train_speed("cardiomae_csfm_tiny", 8 if a.quick else 16, 1 if a.quick else 3))
    print(json.dumps(results, indent=2))
    if a.json:
        a.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
