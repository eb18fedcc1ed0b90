"""cardiomae quick start: pretrain the tiny per-lead MAE on the bundled PhysioNet sample, then
synthesise a 12-lead ECG from lead II alone (PTB record s0010_re), write it as a WFDB record with an
ECG-paper figure, and embed every record.

run: python examples/cardiomae_quickstart.py [--out DIR] [--steps N]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from cardiomae.data import load_prepared, sample_dir, split_windows
from cardiomae.figures import plot_synthesis
from cardiomae.io import expand, read_recording, write_wfdb
from cardiomae.leads import STANDARD_LEADS
from cardiomae.preprocess import PrepConfig
from cardiomae.tasks import embed_prepared, export_meta, model_prep, synthesize, to_input_rate
from maecore.models import create_model
from maecore.tasks import TrainConfig, run_pretrain


def pretrain(out: Path, steps: int) -> tuple[torch.nn.Module, list, PrepConfig]:
    """The tiny model on the first 80 % of every bundled record (10 s windows at 250 Hz)."""
    prep = PrepConfig()
    records = load_prepared(expand(sample_dir()), prep)
    train, _, norm = split_windows(records, prep, holdout_fraction=0.2)
    torch.manual_seed(0)
    model = create_model("cardiomae_tiny")
    model.meta = export_meta(prep, norm, records)
    cfg = TrainConfig(max_steps=steps, batch_size=16, lr=1e-3, warmup_steps=10, progress=False, accelerator="cpu",
                      ckpt_every=steps, log_every=10)
    run_pretrain(model, train, out / "run", cfg)
    return model.eval(), records, prep


def single_lead_to_twelve(model: torch.nn.Module, out: Path) -> dict:
    """Lead II of s0010_re in, the other eleven standard leads out (WFDB + PNG); scores vs the real leads."""
    rec = read_recording(sample_dir() / "s0010_re")
    want = [lead for lead in STANDARD_LEADS if lead != "II"]
    syn = synthesize(model, rec, ["II"], want)
    signals, spf = to_input_rate(syn, rec)
    ii = rec.index("II")
    write_wfdb(out / "s0010_re_from_II", [rec.signals[ii], *signals], rec.record_fs, ["II", *want],
               ["mV"] * 12, [1] * 12, ["cardiomae quickstart: 11 leads synthesised from lead II"])
    plot_synthesis(syn, out / "s0010_re_from_II.png")
    return syn.metrics()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="cardiomae_quickstart_")))
    ap.add_argument("--steps", type=int, default=200)
    a = ap.parse_args()
    model, records, prep = pretrain(a.out, a.steps)
    metrics = single_lead_to_twelve(model, a.out)
    for lead, m in metrics.items():
        print(f"{lead:>4}: Pearson r {m['pearson_r']:+.2f}, RMSE {m['rmse_mv']:.3f} mV")
    _, norm = model_prep(model)
    emb = embed_prepared(model, records, norm, prep)
    np.savez(a.out / "embeddings.npz", **emb, records=np.array([r.path for r in records]))
    print(f"{len(emb['window_embeddings'])} window embeddings of {len(records)} records; outputs in {a.out}")


if __name__ == "__main__":
    main()
