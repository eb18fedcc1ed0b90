"""``cardiomae``: the shared verbs for ECG and PPG records (WFDB, NumPy, CSV)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from cardiomae.data import (
    ArrayOptions,
    Beats,
    Labelled,
    Windows,
    load_prepared,
    sample_dir,
    split_point,
    split_windows,
)
from cardiomae.figures import plot_masked_window, plot_synthesis
from cardiomae.io import expand, read_recording, record_stem, write_wfdb
from cardiomae.labels import annotated_beats, csv_targets, hr_targets, window_beat_sets
from cardiomae.leads import CANONICAL_LEADS, lead_type
from cardiomae.preprocess import LeadNorm, Prepared, PrepConfig, prepare
from cardiomae.tasks import embed_prepared, export_meta, model_prep, synthesize, to_input_rate
from maecore.atomic import atomic_path, atomic_write_text
from maecore.cli.app import build_cli
from maecore.cli.domain import Domain, LabelledData, Problem
from maecore.errors import DataError
from maecore.models.pretrained import read_export_config

TARGETS = ("beats", "hr", "annotations", "csv")


def _names(text: str | None) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()] if text else []


def _holdout(cfg: dict[str, Any]) -> float:
    hf = float(cfg["data"]["holdout_fraction"])
    if not 0 <= hf < 1:
        raise ValueError(f"data.holdout_fraction must be in [0, 1), got {hf}")
    return hf


class CardioDomain(Domain):
    name = "cardiomae"
    package = "cardiomae"
    description = "Masked autoencoders for ECG and PPG (after CSFM): any lead subset in, missing leads out as WFDB."

    def add_arguments(self, verb: str, parser: argparse.ArgumentParser) -> None:
        if verb in ("embed", "reconstruct"):
            parser.add_argument("--input", required=True, help="WFDB record (or .npz/.npy/.csv); embed: also a folder")
            parser.add_argument("--out", type=Path, required=True, help="embed: .npz; reconstruct: WFDB record path")
            parser.add_argument("--fs", type=float, default=None, help="sampling rate of arrays that lack one")
            parser.add_argument("--names", default=None, help="comma-separated lead names of arrays that lack them")
        if verb == "embed":
            parser.add_argument("--leads", default=None, help="encode only these lead slots, e.g. I,II (default: all)")
        if verb == "reconstruct":
            parser.add_argument("--have", required=True, help="given leads, e.g. I,II,III")
            parser.add_argument("--want", required=True, help="leads to synthesise, e.g. V1,V2,V3,V4,V5,V6")
            parser.add_argument("--plot", type=Path, default=None, help="also write an ECG-paper PNG")
        if verb in ("finetune", "probe"):
            parser.add_argument("--target", choices=TARGETS, default=None,
                                help="beats (N vs S/V around annotated R peaks; probe default), hr (heart rate "
                                     "regression; finetune default), annotations (multi-label beat classes per "
                                     "window), csv (--labels)")
            parser.add_argument("--labels", default=None, help="CSV: record[,start_s],label columns")
            parser.add_argument("--task", choices=("classification", "multilabel", "regression"), default=None,
                                help="task of a --labels CSV (inferred when omitted)")

    def resolve_args(self, verb: str, args: argparse.Namespace) -> None:
        if verb in ("finetune", "probe") and args.target is None:
            args.target = "csv" if args.labels else ("beats" if verb == "probe" else "hr")
        if getattr(args, "target", None) == "csv" and not args.labels:
            raise ValueError("--target csv needs --labels FILE.csv")

    # ------------------------------------------------------------------ data
    def _records(self, cfg: dict[str, Any], prep: PrepConfig, data: str | None, skip_bad: bool) -> list[Prepared]:
        return load_prepared(expand(data, sample_dir()), prep, ArrayOptions.from_config(cfg), skip_bad)

    def pretrain_dataset(self, cfg: dict[str, Any], data: str | None, skip_bad: bool) -> Dataset:
        """Windows from the first ``1 - holdout_fraction`` of each record; the tail is held out."""
        prep = PrepConfig.from_config(cfg)
        records = self._records(cfg, prep, data, skip_bad)
        ds, self._held, self._norm = split_windows(records, prep, _holdout(cfg))
        for r in records:
            for note in r.notes:
                print(f"note {r.path}: {note}")
        print(f"{len(records)} record(s), {len(ds)} training windows of {prep.window_s:g} s "
              f"(dropped {ds.dropped}), {len(self._held)} held-out windows")
        self._prep = prep
        return ds

    def model_meta(self, cfg: dict[str, Any], dataset: Dataset) -> dict[str, Any]:
        return {**export_meta(self._prep, self._norm, dataset.records), "n_windows": len(dataset)}  # type: ignore

    def labelled_data(self, cfg: dict[str, Any], args: argparse.Namespace) -> LabelledData:
        meta = read_export_config(args.model).get("meta", {})
        prep = PrepConfig.from_meta(meta)
        norm = LeadNorm.from_dict(meta["norm"])
        records = self._records(cfg, prep, args.data, skip_bad=False)
        hf = _holdout(cfg)
        if args.target == "beats":
            return self._beats(cfg, args, records, prep, norm, hf)
        train = Windows(records, prep, norm, [(0, split_point(r, hf)) for r in records], stride=prep.window)
        val = Windows(records, prep, norm, [(split_point(r, hf), r.x.shape[1]) for r in records],
                      stride=prep.window) if hf > 0 else None
        parts = [train] + ([val] if val is not None else [])
        if args.target == "hr":
            sets = [Labelled(d, *reversed(hr_targets(d))) for d in parts]
            return LabelledData(sets[0], sets[1] if val else None, "regression", 1, ["heart_rate_bpm"])
        if args.target == "annotations":
            beats = annotated_beats(records, cfg["data"]["annotation"])
            classes = sorted({c for _, _, c in beats})
            sets = [Labelled(d, list(window_beat_sets(d, beats, classes))) for d in parts]
            return LabelledData(sets[0], sets[1] if val else None, "multilabel", len(classes), classes)
        out = [csv_targets(d, args.labels, args.task) for d in parts]
        idx, labels, task, names = out[0]
        sets = [Labelled(d, o[1], o[0]) for d, o in zip(parts, out)]
        return LabelledData(sets[0], sets[1] if val else None, task, len(names) if task != "regression" else
                            len(labels[0]), names)

    def _beats(self, cfg: dict[str, Any], args: argparse.Namespace, records: list[Prepared], prep: PrepConfig,
               norm: LeadNorm, hf: float) -> LabelledData:
        """N (0) against S or V ectopic beats (1); fusion and paced beats are left out."""
        beats = [b for b in annotated_beats(records, cfg["data"]["annotation"]) if b[2] in ("N", "S", "V")]
        labels = [0 if c == "N" else 1 for _, _, c in beats]
        ds = Beats(records, prep, norm, beats, float(cfg["data"]["beat_window_s"]))
        n_pos = sum(labels)
        print(f"{len(beats)} annotated beats: {len(beats) - n_pos} N, {n_pos} S/V (imbalanced: read AUROC and "
              "balanced accuracy, not accuracy)")
        if args.verb == "probe":  # cross-validated over one-minute blocks so neighbouring beats stay together
            groups = [f"{records[i].path}@{int(s / prep.fs // 60)}" for i, s, _ in beats]
            return LabelledData(Labelled(ds, labels), None, "classification", 2, ["N", "S/V"], groups)
        cut = {i: split_point(r, hf) for i, r in enumerate(records)}
        tr = [k for k, (i, s, _) in enumerate(beats) if s < cut[i]]
        va = [k for k, (i, s, _) in enumerate(beats) if s >= cut[i]]
        return LabelledData(Labelled(ds, [labels[k] for k in tr], tr),
                            Labelled(ds, [labels[k] for k in va], va) if va else None, "classification", 2,
                            ["N", "S/V"])

    # ------------------------------------------------------------------ outputs
    def figure(self, model: nn.Module, dataset: Dataset, path: Path) -> Path | None:
        """A held-out window with the most leads: given (black), hidden truth (grey), model (red)."""
        source = getattr(self, "_held", None) or dataset
        counts = [int((~source[k]["group_pad"]).sum()) for k in range(len(source))]
        k = int(np.argmax(counts))
        return plot_masked_window(model, source[k], path, seed=0)

    @torch.no_grad()
    def embed(self, model: nn.Module, args: argparse.Namespace) -> dict[str, Any]:
        prep, norm = model_prep(model)
        paths = expand(args.input)
        records = load_prepared(paths, prep, ArrayOptions(args.fs, _names(args.names) or None))
        res = embed_prepared(model, records, norm, prep, _names(args.leads) or None)
        present = [",".join(lead for lead, p in zip(prep.leads, r.present) if p) for r in records]
        with atomic_path(args.out) as tmp:
            np.savez_compressed(tmp, **res, records=np.array([r.path for r in records]),
                                record_leads=np.array(present), leads=np.array(prep.leads), window_s=prep.window_s)
        return {"out": str(args.out), "window_embeddings": list(res["window_embeddings"].shape),
                "record_embeddings": list(res["record_embeddings"].shape)}

    def reconstruct(self, model: nn.Module, args: argparse.Namespace) -> dict[str, Any]:
        rec = read_recording(args.input, args.fs, _names(args.names) or None)
        out = record_stem(args.out)
        if out.resolve() == record_stem(rec.path).resolve():
            raise ValueError(f"--out {out} would overwrite the input record")
        syn = synthesize(model, rec, _names(args.have), _names(args.want))
        signals, spf = to_input_rate(syn, rec)
        given = [rec.index(h) for h in syn.have]
        names = [rec.names[i] for i in given] + syn.want
        units = [rec.units[i] for i in given] + ["mV" if lead_type(w) == "ecg" else "NU" for w in syn.want]
        note = (f"cardiomae reconstruct: {','.join(syn.want)} synthesised from {','.join(syn.have)} "
                f"by {getattr(model, 'model_name', '?')} (cleaned, {syn.fs:g} Hz model rate, resampled)")
        n_frames = len(signals[0]) // spf
        write_wfdb(out, [rec.signals[i][: n_frames * rec.samps_per_frame[i]] for i in given] + signals,
                   rec.record_fs, names, units, [rec.samps_per_frame[i] for i in given] + [spf] * len(syn.want),
                   [note, *rec.comments])
        result: dict[str, Any] = {"out": str(out), "leads": names, "fs": rec.record_fs * spf,
                                  "duration_s": n_frames / rec.record_fs, "metrics_vs_input": syn.metrics()}
        baseline = syn.baseline()  # a linear mix of the given leads fitted on this record's truth
        if baseline is not None:
            result["baseline"] = baseline
        if args.plot:
            result["plot"] = str(plot_synthesis(syn, args.plot))
        return result

    def prepare(self, cfg: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
        """Write each record cleaned at the model rate as ``.npz`` (readable by every verb) plus stats."""
        prep = PrepConfig.from_config(cfg)
        out = Path(args.out or "prepared")
        t0 = time.perf_counter()
        records = self._records(cfg, prep, args.data, skip_bad=False)
        wall = time.perf_counter() - t0
        norm = LeadNorm.fit(records, prep)
        n_windows = len(Windows(records, prep, norm, stride=prep.window))
        for r in records:
            keep = [g for g, p in enumerate(r.present) if p]
            with atomic_path(out / f"{record_stem(r.path).name}.npz") as tmp:
                np.savez_compressed(tmp, signal=r.x[keep].T, fs=r.fs, sig_name=np.array([r.leads[g] for g in keep]),
                                    units=np.array(["mV" if lead_type(r.leads[g]) == "ecg" else "NU" for g in keep]),
                                    cleaned=prep.clean)
        stats = {"records": len(records), "windows": n_windows, "seconds": round(wall, 3),
                 "records_per_s": round(len(records) / wall, 3), "windows_per_s": round(n_windows / wall, 3),
                 "norm": norm.to_dict(), "leads": prep.leads}
        atomic_write_text(out / "stats.json", json.dumps(stats, indent=2))
        return {"out": str(out), **{k: v for k, v in stats.items() if k != "norm"}}

    def check(self, paths: list[str], cfg: dict[str, Any]) -> tuple[int, list[Problem]]:
        prep = PrepConfig.from_config(cfg)
        arrays = ArrayOptions.from_config(cfg)
        files = expand(paths[0] if paths else None, sample_dir())
        problems = []
        for f in files:
            try:
                prepare(read_recording(f, arrays.fs, arrays.leads, arrays.units), prep)
            except DataError as err:  # the reason names the file at fault when it is not the record itself
                same = err.path is None or Path(err.path) == Path(f)
                problems.append(Problem(str(f), f"expected {err.expected}, found {err.found}" if same else str(err)))
        return len(files), problems

    def info(self) -> dict[str, Any]:
        import neurokit2
        import wfdb

        return {"bundled_sample": str(sample_dir()),
                "sample_records": [p.name for p in expand(sample_dir())],
                "lead_slots": list(CANONICAL_LEADS), "default_lead_map": "MLII=II, MCL1=V1",
                "wfdb": wfdb.__version__, "neurokit2": neurokit2.__version__}


main = build_cli(CardioDomain())

if __name__ == "__main__":
    raise SystemExit(main())
