"""Missing-lead synthesis and embeddings with an exported model (what reconstruct/embed call).

Synthesis is the MAE's own task at inference: the given leads' tokens are all visible, the wanted
leads' tokens are all masked (exactly as a whole-lead drop in pretraining), and the decoder's
predictions at those positions are the synthesised leads. The non-learned synthesis it must beat
is :func:`linear_mix`: a least-squares linear mix of the given leads (what ``reconstruct`` reports
under ``baseline`` when the record also holds the wanted leads).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cardiomae.data import window_sample
from cardiomae.io import Recording
from cardiomae.leads import canonical_lead, lead_type, model_slot
from cardiomae.preprocess import LeadNorm, Prepared, PrepConfig, prepare, resample, window_starts
from maecore import masking as M
from maecore.errors import DataError
from maecore.tasks.data import collate_dict


def export_meta(prep: PrepConfig, norm: LeadNorm, records: Sequence[Prepared] = ()) -> dict[str, Any]:
    """What an exported model needs to be applied from its folder alone (``config.json`` meta)."""
    units = {lead: "mV" if lead_type(lead) == "ecg" else "NU" for lead in prep.leads}
    return {"prep": prep.to_dict(), "norm": norm.to_dict(), "units": units, "records": [r.path for r in records]}


def model_prep(model: nn.Module) -> tuple[PrepConfig, LeadNorm]:
    """The preprocessing and standardisation stored in an exported model's ``meta``."""
    meta = getattr(model, "meta", {}) or {}
    if "prep" not in meta or "norm" not in meta:
        raise DataError(None, "a cardiomae model export (config.json meta with 'prep' and 'norm')",
                        f"meta keys {sorted(meta)}")
    return PrepConfig.from_meta(meta), LeadNorm.from_dict(meta["norm"])


def subset(rec: Recording, names: Sequence[str]) -> Recording:
    """The channels of ``rec`` named ``names`` (file or canonical names), in that order."""
    idx = []
    for name in names:
        try:
            idx.append(rec.index(name))
        except KeyError as err:
            raise DataError(rec.path, f"lead {name!r} (--have)", f"leads {', '.join(rec.names)}") from err
    return Recording(rec.path, [rec.signals[i] for i in idx], [rec.fs[i] for i in idx], [rec.names[i] for i in idx],
                     [rec.units[i] for i in idx], rec.comments)


@dataclass
class Synthesis:
    """Leads ``want`` synthesised from ``have`` at the model rate ``fs``: ``signals [len(want), T]``
    in mV (PPG in standard units), plus the cleaned truth where the input had the wanted lead."""

    want: list[str]
    have: list[str]
    fs: float
    signals: np.ndarray
    truth: dict[str, np.ndarray] = field(default_factory=dict)
    given: Prepared | None = None

    def metrics(self) -> dict[str, dict[str, float]]:
        """Pearson r and RMSE (mV) per wanted lead with a truth, over samples where both are finite."""
        out = {}
        for k, lead in enumerate(self.want):
            if lead in self.truth:
                out[lead] = pearson_rmse(self.signals[k], self.truth[lead])
        return out

    def baseline(self) -> dict[str, Any] | None:
        """The non-learned synthesis to beat, scored like :meth:`metrics`: each wanted lead with a
        truth as a least-squares linear mix (with intercept) of the given leads (:func:`linear_mix`).

        Only this record holds the truth, so the mix is fitted on it and scored on the samples it
        was fitted on (where the given leads and the truth are finite): an optimistic baseline (a
        synthesis that beats it adds more than any linear mix of the given leads could). Returns
        ``{"method": str, "metrics_vs_input": {lead: pearson_rmse}}``, or None when no wanted lead
        has a truth.
        """
        leads = [lead for lead in self.want if lead in self.truth]
        if not leads or self.given is None:
            return None
        used = list(self.given.sources)  # model slots of the given leads that were usable
        x = self.given.x[[self.given.leads.index(slot) for slot in used]]
        pred = linear_mix(x, np.stack([self.truth[lead] for lead in leads]))
        method = (f"least-squares linear mix (with intercept) of {','.join(self.given.sources[s] for s in used)}, "
                  f"fitted and scored on this record's own {','.join(leads)} (optimistic: a synthesis that "
                  "beats it adds more than a linear mix of the given leads)")
        return {"method": method,
                "metrics_vs_input": {lead: pearson_rmse(pred[k], self.truth[lead]) for k, lead in enumerate(leads)}}


def linear_mix(have: np.ndarray, want: np.ndarray, apply_to: np.ndarray | None = None) -> np.ndarray:
    """The non-learned lead synthesis to beat: each wanted lead as a least-squares linear mix of the
    input leads with an intercept, ``want[k] ~ w_k @ have + b_k``.

    ``have [C, T]`` and ``want [K, T]`` are the same ``T`` samples (e.g. cleaned, model rate, mV);
    ``w_k, b_k`` are fitted over the samples where ``want[k]`` and every usable input lead are
    finite, then applied to ``apply_to [C, T']`` (default ``have`` itself, which makes the baseline
    optimistic: it is scored on what it was fitted on). Input leads with no finite sample in ``have``
    are left out. Returns ``[K, T']`` float64 in the units of ``want``: NaN where a used input lead
    of ``apply_to`` is NaN, and a whole NaN row for a wanted lead with fewer finite samples than
    coefficients.
    """
    have, want = np.asarray(have, dtype=np.float64), np.asarray(want, dtype=np.float64)
    apply_to = have if apply_to is None else np.asarray(apply_to, dtype=np.float64)
    if have.ndim != 2 or want.ndim != 2 or apply_to.ndim != 2:
        raise ValueError(f"linear_mix needs [leads, samples] arrays, got have {have.shape}, want {want.shape}, "
                         f"apply_to {apply_to.shape}")
    if have.shape[1] != want.shape[1]:
        raise ValueError(f"have and want must hold the same samples, got {have.shape[1]} and {want.shape[1]}")
    if apply_to.shape[0] != have.shape[0]:
        raise ValueError(f"apply_to must hold the {have.shape[0]} input leads of have, got {apply_to.shape[0]}")
    used = np.isfinite(have).any(1)
    if not used.any():
        raise ValueError(f"no usable input lead: none of the {have.shape[0]} lead(s) of have holds a finite sample")
    x = np.vstack([have[used], np.ones(have.shape[1])])
    x_apply = np.vstack([apply_to[used], np.ones(apply_to.shape[1])])
    x_ok = np.isfinite(x).all(0)
    out = np.full((want.shape[0], apply_to.shape[1]), np.nan)
    for k, y in enumerate(want):
        ok = x_ok & np.isfinite(y)
        if ok.sum() >= len(x):
            w, *_ = np.linalg.lstsq(x[:, ok].T, y[ok], rcond=None)
            out[k] = w @ x_apply
    return out


def pearson_rmse(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Pearson r and RMSE (units of the inputs: mV for ECG) over the ``n`` samples where both are
    finite; both NaN when fewer than 3 samples remain or either side is constant there."""
    ok = np.isfinite(pred) & np.isfinite(truth)
    p, t = pred[ok], truth[ok]
    if p.size < 3 or p.std() == 0 or t.std() == 0:
        return {"pearson_r": float("nan"), "rmse_mv": float("nan"), "n": int(p.size)}
    return {"pearson_r": float(np.corrcoef(p, t)[0, 1]), "rmse_mv": float(np.sqrt(np.mean((p - t) ** 2))),
            "n": int(p.size)}


@torch.no_grad()
def predict_leads(model: nn.Module, batch: dict[str, Any], want: Sequence[int]) -> Tensor:
    """Decoder output for every token when the ``want`` lead slots are fully masked and every
    measured token of the other slots is visible: ``-> [B, G, W]`` in standardised units."""
    tok = model.tokenizer
    b, g, w = batch["x"].shape
    want_t = torch.zeros(g, dtype=torch.bool)
    want_t[list(want)] = True
    x = batch["x"].masked_fill(want_t[None, :, None], 0.0)
    valid = batch["valid"] | want_t[None, :, None]  # wanted slots exist (masked), never seen
    full = {"x": x, "valid": valid, "group_pad": batch["group_pad"] & ~want_t[None]}
    tokens = tok.tokens(full)
    hidden = torch.isin(tokens.group, torch.nonzero(want_t).flatten())
    masking = M.finalize(hidden & ~tokens.pad, tokens.pad)
    if hasattr(model, "predict"):  # CardioMAE: decoder plus the same-time lead mix
        pred = model.predict(tokens, tok.targets(full), masking)
    else:
        pred = model.forward_decoder(model.forward_encoder(tokens, masking), tokens, masking)
    return tok.untokenize(pred, full)


def synthesize(model: nn.Module, rec: Recording, have: Sequence[str], want: Sequence[str],
               batch_size: int = 16) -> Synthesis:
    """Synthesise the model lead slots ``want`` from the recording's leads ``have``."""
    model.eval()
    prep, norm = model_prep(model)
    given_rec, _, want = _request(rec, have, want, prep)
    given = prepare(given_rec, prep)
    w, n = prep.window, given.x.shape[1]
    starts = window_starts(n, w, w)
    want_ids = [prep.leads.index(lead) for lead in want]
    acc = np.zeros((len(want), max(n, w)))
    cnt = np.zeros(max(n, w))
    for i in range(0, len(starts), batch_size):
        chunk = starts[i : i + batch_size]
        samples = []
        for s in chunk:
            raw = np.full((len(prep.leads), w), np.nan, dtype=np.float32)
            stop = min(s + w, n)
            raw[:, : stop - s] = given.x[:, s:stop]
            samples.append(window_sample(raw, norm))
        batch = collate_dict(samples)
        z = predict_leads(model, batch, want_ids).float().numpy()
        for j, s in enumerate(chunk):
            mean, std = batch["mean"][j].numpy(), batch["std"][j].numpy()
            mv = LeadNorm.invert(z[j][want_ids], mean[want_ids], std[want_ids])
            acc[:, s : s + w] += mv
            cnt[s : s + w] += 1
    signals = (acc / np.maximum(cnt, 1))[:, :n]
    truth = _truth(rec, want, prep)
    return Synthesis(want, list(given_rec.names), prep.fs, signals.astype(np.float32), truth, given)


def _request(rec: Recording, have: Sequence[str], want: Sequence[str],
             prep: PrepConfig) -> tuple[Recording, list[str], list[str]]:
    """Check a ``have -> want`` request against the model's leads: ``(the given channels of rec,
    their model slots, the canonical wanted slots)``."""
    want = [canonical_lead(w) for w in want]
    unknown = [w for w in want if w not in prep.leads]
    if unknown:
        raise DataError(None, f"--want leads among the model's leads {prep.leads}", f"{unknown}")
    given_rec = subset(rec, have)
    slots = [model_slot(lead, prep.lead_map) for lead in given_rec.leads]
    bad = [n for n, s in zip(given_rec.names, slots) if s not in prep.leads]
    if bad:
        raise DataError(rec.path, f"--have leads the model knows ({', '.join(prep.leads)}; lead_map "
                        f"{prep.lead_map})", f"{bad}")
    clash = sorted(set(slots) & set(want))
    if clash:
        raise DataError(None, "--want leads that are not among the given leads", f"{clash} in both")
    return given_rec, slots, want


def _truth(rec: Recording, want: Sequence[str], prep: PrepConfig) -> dict[str, np.ndarray]:
    """Cleaned model-rate copies of wanted leads that the input also holds (for scoring)."""
    out = {}
    for lead in want:
        idx = [i for i, c in enumerate(rec.leads) if model_slot(c, prep.lead_map) == lead]
        if not idx or lead_type(lead) != "ecg":
            continue
        one = Recording(rec.path, [rec.signals[idx[0]]], [rec.fs[idx[0]]], [rec.names[idx[0]]], [rec.units[idx[0]]])
        try:
            out[lead] = prepare(one, PrepConfig(**{**prep.to_dict(), "flat_leads": "drop"})).x[prep.leads.index(lead)]
        except DataError:
            continue
    return out


def linear_mix_recording(prep: PrepConfig, fit: Recording, have: Sequence[str], want: Sequence[str],
                         apply: Recording | None = None) -> np.ndarray:
    """:func:`linear_mix` on recordings: the wanted ECG leads as a least-squares linear mix (with
    intercept) of the ``have`` leads, both cleaned at the model rate exactly as :func:`synthesize`
    prepares them (``prep``, e.g. ``PrepConfig.from_meta(model.meta)``). Fitted on ``fit``, which
    must hold the wanted leads, and applied to ``apply`` (default ``fit``, then optimistic: fit on
    a training part and apply to a held-out part for an honest baseline).
    Returns ``[len(want), T]`` in mV at ``prep.fs`` over ``apply``'s duration."""
    given, slots, want = _request(fit, have, want, prep)
    truth = _truth(fit, want, prep)
    missing = [lead for lead in want if lead not in truth]
    if missing:
        raise DataError(fit.path, f"the wanted ECG lead(s) {', '.join(missing)} in the recording the mix is "
                        "fitted on", f"leads {', '.join(fit.leads)}")
    rows = [prep.leads.index(slot) for slot in slots]
    x = prepare(given, prep).x[rows]
    x_apply = x if apply is None else prepare(_request(apply, have, want, prep)[0], prep).x[rows]
    return linear_mix(x, np.stack([truth[lead] for lead in want]), x_apply)


def to_input_rate(syn: Synthesis, rec: Recording) -> tuple[list[np.ndarray], int]:
    """Synthesised leads resampled to the input's rate: the highest per-signal rate of the given
    leads, as ``record_fs * samples per frame``. Returns ``(signals, samples per frame)``."""
    given = [rec.index(h) for h in syn.have]
    spf = max(rec.samps_per_frame[i] for i in given)
    fs_out = rec.record_fs * spf
    n_frames = min(len(rec.signals[i]) // rec.samps_per_frame[i] for i in range(len(rec.signals)))
    out = []
    for row in syn.signals:
        y = resample(row.astype(np.float64), syn.fs, fs_out)
        y = np.pad(y, (0, max(0, n_frames * spf - len(y))), constant_values=np.nan)[: n_frames * spf]
        out.append(y)
    return out, spf


@torch.no_grad()
def embed_prepared(model: nn.Module, records: list[Prepared], norm: LeadNorm, prep: PrepConfig,
                   leads: Sequence[str] | None = None, batch_size: int = 16) -> dict[str, np.ndarray]:
    """Embeddings per window (non-overlapping windows, the last aligned to the end) and per record
    (the mean of its windows). ``leads`` restricts the encoder to those lead slots."""
    model.eval()
    groups = [canonical_lead(lead) for lead in leads] if leads else None
    w = prep.window
    items = [(i, s) for i, r in enumerate(records) for s in window_starts(r.x.shape[1], w, w)]
    embs = []
    for k in range(0, len(items), batch_size):
        samples = []
        for i, s in items[k : k + batch_size]:
            raw = np.full((len(prep.leads), w), np.nan, dtype=np.float32)
            stop = min(s + w, records[i].x.shape[1])
            raw[:, : stop - s] = records[i].x[:, s:stop]
            samples.append(window_sample(raw, norm))
        embs.append(model.encode(collate_dict(samples), groups).float().numpy())
    emb = np.concatenate(embs)
    rec_idx = np.array([i for i, _ in items])
    per_record = np.stack([emb[rec_idx == i].mean(0) for i in range(len(records))])
    return {"window_embeddings": emb, "window_record": rec_idx,
            "window_start_s": np.array([s / prep.fs for _, s in items]), "record_embeddings": per_record}
