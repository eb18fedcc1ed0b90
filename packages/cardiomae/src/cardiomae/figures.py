"""ECG-paper figures: one row per lead on the standard grid (25 mm/s, 10 mm/mV: small squares of
0.04 s x 0.1 mV, large squares of 0.2 s x 0.5 mV), the given signal in black, the hidden truth in
grey and the model's reconstruction or synthesis in red."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from cardiomae.leads import lead_type
from cardiomae.preprocess import LeadNorm
from maecore.atomic import atomic_path
from maecore.figures import reconstruct_batch
from maecore.tasks.data import collate_dict

PAPER, MINOR, MAJOR = "#fff5f5", "#f7c6c6", "#e88f8f"


def _grid(ax, t0: float, t1: float, lo: float, hi: float) -> None:
    ax.set_facecolor(PAPER)
    for step, colour, lw in ((0.04, MINOR, 0.3), (0.2, MAJOR, 0.7)):
        for x in np.arange(np.floor(t0 / step) * step, t1 + 1e-9, step):
            ax.axvline(x, color=colour, lw=lw, zorder=0)
    for step, colour, lw in ((0.1, MINOR, 0.3), (0.5, MAJOR, 0.7)):
        for y in np.arange(np.floor(lo / step) * step, hi + 1e-9, step):
            ax.axhline(y, color=colour, lw=lw, zorder=0)


def plot_ecg(
    path: str | Path,
    fs: float,
    leads: Sequence[str],
    given: np.ndarray,
    recon: np.ndarray | None = None,
    truth: np.ndarray | None = None,
    hidden: np.ndarray | None = None,
    units: Sequence[str] | None = None,
    title: str | None = None,
    t0: float = 0.0,
) -> Path:
    """Rows ``leads``; arrays ``[len(leads), T]`` in physical units with NaN where there is nothing
    to draw: ``given`` (black, what the model saw), ``truth`` (grey, what was hidden), ``recon``
    (red, drawn where ``hidden`` is True, or everywhere it is finite when ``hidden`` is None)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, t_len = given.shape
    t = t0 + np.arange(t_len) / fs
    units = list(units or ["mV"] * n)
    rows = []
    for g in range(n):
        parts = [a[g] for a in (given, recon, truth) if a is not None]
        vals = np.concatenate([p[np.isfinite(p)] for p in parts]) if parts else np.array([])
        lo, hi = (float(vals.min()), float(vals.max())) if vals.size else (-1.0, 1.0)
        pad = 0.1 * max(hi - lo, 0.5)
        rows.append((lo - pad, hi + pad))
    heights = [max(hi - lo, 1.0) for lo, hi in rows]
    width = max(6.0, min(t_len / fs, 12.0) * 1.0)
    fig, axes = plt.subplots(n, 1, figsize=(width, 0.6 * sum(heights) + 0.8), sharex=True, squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for g, ax in enumerate(axes[:, 0]):
        lo, hi = rows[g]
        if units[g] == "mV":
            _grid(ax, t[0], t[-1], lo, hi)
        if truth is not None:
            ax.plot(t, truth[g], color="0.6", lw=0.8, label="hidden truth")
        ax.plot(t, given[g], color="k", lw=0.8, label="given")
        if recon is not None:
            r = recon[g] if hidden is None else np.where(hidden[g], recon[g], np.nan)
            ax.plot(t, r, color="#d62020", lw=0.9, label="model")
        ax.set_xlim(t[0], t[-1])
        ax.set_ylim(lo, hi)
        ax.set_ylabel(f"{leads[g]}\n{units[g]}", rotation=0, ha="right", va="center", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[-1, 0].set_xlabel("time (s)   grid: 0.04 s x 0.1 mV, bold 0.2 s x 0.5 mV")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    for ax in axes[1:, 0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    top = 1 - 0.5 / fig.get_figheight()
    fig.legend(handles, labels, loc="upper right", fontsize=8, ncol=3, frameon=False, bbox_to_anchor=(1, 1))
    if title:
        fig.text(0.01, 1 - 0.1 / fig.get_figheight(), title, fontsize=9, ha="left", va="top")
    fig.tight_layout(rect=(0, 0, 1, top))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return Path(path)


def plot_masked_window(model: nn.Module, sample: dict[str, Any], path: Path, seed: int = 0) -> Path:
    """Pretraining figure: one window masked as in training (random patches and whole leads)."""
    batch = collate_dict([sample])
    result = reconstruct_batch(model, batch, seed=seed)
    mean, std = sample["mean"].numpy(), sample["std"].numpy()
    valid = sample["valid"].numpy()
    hidden = result["hidden"][0].numpy() & valid
    mv = lambda t: LeadNorm.invert(t.float().numpy(), mean, std)  # noqa: E731
    x, pred = mv(result["input"][0]), mv(result["pred"][0])
    rows = [g for g in range(x.shape[0]) if valid[g].any()]
    leads = list(model.tokenizer.group_names)
    units = [(getattr(model, "meta", {}) or {}).get("units", {}).get(leads[g], "mV") for g in rows]
    given = np.where(valid & ~hidden, x, np.nan)[rows]
    truth = np.where(hidden, x, np.nan)[rows]
    fs = float((getattr(model, "meta", {}) or {}).get("prep", {}).get("fs", 250.0))
    title = f"{Path(sample['record']).name} at {sample['start_s']:.1f} s, masked loss {float(result['loss']):.3f}"
    return plot_ecg(path, fs, [leads[g] for g in rows], given, pred[rows], truth, hidden[rows], units, title)


def plot_synthesis(syn: Any, path: Path, seconds: float = 10.0) -> Path:
    """The first ``seconds`` of a synthesis: given leads (black), synthesised (red), input truth (grey)."""
    n = min(int(seconds * syn.fs), syn.signals.shape[1])
    given_rows = [g for g, p in enumerate(syn.given.present) if p]
    leads = [syn.given.leads[g] for g in given_rows] + syn.want
    nan = np.full(n, np.nan)
    given = np.stack([syn.given.x[g, :n] for g in given_rows] + [nan] * len(syn.want))
    recon = np.stack([nan] * len(given_rows) + [s[:n] for s in syn.signals])
    truth = np.stack([nan] * len(given_rows) + [syn.truth.get(w, nan)[:n] for w in syn.want])
    units = ["mV" if lead_type(lead) == "ecg" else "NU" for lead in leads]
    title = f"{Path(syn.given.path).name}: {','.join(syn.want)} synthesised from {','.join(syn.have)}"
    return plot_ecg(path, syn.fs, leads, given, recon, truth, None, units, title)
