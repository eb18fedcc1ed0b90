"""Probes on frozen embeddings, and the same probe on a randomly initialised twin as reference.

Probes use scikit-learn on features extracted once under ``no_grad`` (no Lightning): logistic
regression on standardised features (:func:`linear_probe`), a k-nearest-neighbour vote
(:func:`knn_probe`) and a linear SVM (:func:`svm_probe`, the ModelNet40 protocol of Point-MAE /
I2P-MAE). Scores are cross-validated (``cv``):

- ``"auto"``: leave-one-group-out when ``groups`` is given (one object, subject or recording
  never sits in both train and test), leave-one-out for at most :data:`LOO_MAX_SAMPLES` samples,
  else stratified 5-fold;
- ``"loo"``, ``"logo"`` or an int k (stratified k-fold, seeded);
- a scikit-learn splitter, or a list of ``(train_idx, test_idx)`` pairs (e.g. the one fixed
  train/test split of ModelNet40); then only the test indices are scored.

Every probe returns ``accuracy``, ``balanced_accuracy``, ``auroc`` (macro one-vs-rest from
out-of-fold probabilities; ``None`` where the probe has none or AUROC is undefined), ``n``,
``n_classes``, ``cv`` and ``n_splits``.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score
from sklearn.model_selection import LeaveOneGroupOut, LeaveOneOut, StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from torch import nn

LOO_MAX_SAMPLES = 50
DEFAULT_FOLDS = 5
INPUT_KEYS = ("x", "valid", "group_pad")  # batch keys that are model input, not metadata
KNN_METRICS = ("cosine", "euclidean", "manhattan")
PROBES = ("linear", "knn", "svm")
CV_CHOICES = "cv must be 'auto', 'loo', 'logo', an int >= 2, a splitter or index pairs"


# ---------------------------------------------------------------------- embeddings
def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _meta_rows(value: Any, b: int, explicit: bool) -> list[Any] | None:
    """Per-sample entries of one batch value, or None when it is not per-sample metadata."""
    if isinstance(value, torch.Tensor):
        if value.ndim == 0 or value.shape[0] != b:
            return None
        if value.ndim == 1 or (value.ndim == 2 and value.shape[1] == 1):
            return value.reshape(b).tolist()
        return list(value.cpu().numpy()) if explicit else None
    if isinstance(value, (list, tuple)) and len(value) == b:
        return list(value)
    return None


@torch.no_grad()
def extract_embeddings(
    model: nn.Module,
    loader: Iterable[dict[str, Any]],
    groups: Sequence[Any] | None = None,
    meta_keys: Sequence[str] | None = None,
) -> tuple[np.ndarray, dict[str, list[Any]]]:
    """``model.encode`` over every batch of ``loader``: ``(X [N, D] float32, meta)``.

    Runs in eval mode (restored afterwards) on the model's device, bf16 autocast on CUDA.
    ``meta`` maps batch keys to per-sample lists: by default every key other than the input
    (``x``, ``valid``, ``group_pad``) holding one scalar or one item per sample (labels, ids,
    paths); ``meta_keys`` names keys to collect whatever their shape (array rows).
    """
    if not hasattr(model, "encode"):
        raise ValueError(f"{type(model).__name__} has no encode(batch, groups): cannot extract embeddings")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    feats: list[np.ndarray] = []
    meta: dict[str, list[Any]] = {}
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    try:
        for batch in loader:
            with amp:
                emb = model.encode(_to_device(batch, device), groups)
            feats.append(emb.float().cpu().numpy())
            b = emb.shape[0]
            for key in meta_keys if meta_keys is not None else [k for k in batch if k not in INPUT_KEYS]:
                if key not in batch:
                    raise KeyError(f"meta key {key!r} not in the batch; keys: {sorted(batch)}")
                rows = _meta_rows(batch[key], b, meta_keys is not None)
                if rows is not None:
                    meta.setdefault(key, []).extend(rows)
    finally:
        model.train(was_training)
    if not feats:
        raise ValueError("the loader produced no batch: nothing to embed")
    x = np.concatenate(feats)
    return x, {k: v for k, v in meta.items() if len(v) == len(x)}


# ---------------------------------------------------------------------- cross-validation
def _check_xy(x: np.ndarray, y: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be [N, D], got shape {list(x.shape)}")
    if y.ndim != 1 or len(x) != len(y):
        raise ValueError(f"X has {len(x)} rows but y has shape {list(y.shape)}; need one label per row")
    classes = np.unique(y)
    if len(classes) < 2:
        raise ValueError(f"a probe needs at least 2 classes, got {classes.tolist()}")
    if not np.isfinite(x).all():
        raise ValueError("embeddings hold NaN or inf")
    return x, y


def _check_class_counts(y: np.ndarray, need: int, what: str) -> None:
    classes, counts = np.unique(y, return_counts=True)
    if counts.min() < need:
        few = {c: int(n) for c, n in zip(classes.tolist(), counts) if n < need}
        raise ValueError(f"{what} needs at least {need} samples per class; too few in classes {few}")


def _auto_folds(y: np.ndarray) -> int:
    """``DEFAULT_FOLDS``, fewer when the rarest class is smaller (at least 2)."""
    _check_class_counts(y, 2, "cross-validation")
    return min(DEFAULT_FOLDS, int(np.unique(y, return_counts=True)[1].min()))


def make_splits(
    y: np.ndarray, cv: Any = "auto", groups: Sequence[Any] | None = None, seed: int = 0
) -> tuple[list[tuple[np.ndarray, np.ndarray]], str]:
    """The ``(train_idx, test_idx)`` pairs of ``cv`` (see the module docstring) and its name."""
    n = len(y)
    if groups is not None:
        groups = np.asarray(groups)
        if len(groups) != n:
            raise ValueError(f"groups has {len(groups)} entries for {n} samples")
    if isinstance(cv, str):
        splits, name = _named_splits(y, cv, groups, seed)
    elif isinstance(cv, (int, np.integer)) and not isinstance(cv, bool):
        if cv < 2:
            raise ValueError(f"cv as a fold count must be >= 2, got {cv}")
        _check_class_counts(y, int(cv), f"{cv}-fold stratified cross-validation (try cv='loo')")
        folds = StratifiedKFold(int(cv), shuffle=True, random_state=seed)
        splits, name = list(folds.split(np.zeros(n), y)), f"stratified-{cv}-fold"
    elif hasattr(cv, "split"):
        splits, name = list(cv.split(np.zeros(n), y, groups)), type(cv).__name__
    else:
        try:
            splits = [(np.asarray(tr, dtype=int), np.asarray(te, dtype=int)) for tr, te in cv]
        except (TypeError, ValueError) as err:
            raise ValueError(f"{CV_CHOICES}; got {cv!r}") from err
        name = "given-splits"
    for tr, te in splits:
        if len(tr) == 0 or len(te) == 0:
            raise ValueError(f"{name}: a split has an empty train or test set")
        if len(np.unique(y[tr])) < 2:
            raise ValueError(f"{name}: a training fold holds a single class {np.unique(y[tr]).tolist()}; "
                             "use more groups or a different cv")
    return splits, name


def _named_splits(y: np.ndarray, cv: str, groups: np.ndarray | None, seed: int) -> tuple[list, str]:
    """Splits of ``cv`` in ``("auto", "loo", "logo")``."""
    n = len(y)
    if cv not in ("auto", "loo", "logo"):
        raise ValueError(f"{CV_CHOICES}; got {cv!r}")
    if cv == "auto" and groups is None and n > LOO_MAX_SAMPLES:
        return make_splits(y, _auto_folds(y), seed=seed)
    if cv == "logo" or (cv == "auto" and groups is not None):
        if groups is None:
            raise ValueError("cv='logo' (leave-one-group-out) needs groups")
        if len(np.unique(groups)) < 2:
            raise ValueError(f"leave-one-group-out needs at least 2 groups, got {np.unique(groups).tolist()}")
        return list(LeaveOneGroupOut().split(np.zeros(n), y, groups)), "leave-one-group-out"
    _check_class_counts(y, 2, "leave-one-out")
    return list(LeaveOneOut().split(np.zeros(n))), "leave-one-out"


def _auroc(y: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> float | None:
    present = np.unique(y)
    if len(present) < 2:
        return None
    try:
        if len(classes) == 2:
            return float(roc_auc_score(y == classes[1], proba[:, 1]))
        cols = np.searchsorted(classes, present)
        p = proba[:, cols] / np.clip(proba[:, cols].sum(1, keepdims=True), 1e-12, None)
        return float(roc_auc_score(y, p, multi_class="ovr", average="macro", labels=present))
    except ValueError:
        return None


def evaluate_probe(
    clf: Any, x: np.ndarray, y: Sequence[Any], cv: Any = "auto", groups: Sequence[Any] | None = None, seed: int = 0
) -> dict[str, Any]:
    """Fit a fresh clone of the scikit-learn classifier ``clf`` per split; score the test parts."""
    x, y = _check_xy(x, y)
    return _score(clf, x, y, *make_splits(y, cv, groups, seed))


def _score(clf: Any, x: np.ndarray, y: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]],
           name: str) -> dict[str, Any]:
    classes = np.unique(y)
    tested = np.concatenate([te for _, te in splits])
    pred = np.empty(len(tested), dtype=y.dtype)
    has_proba = hasattr(clf, "predict_proba")
    proba = np.zeros((len(tested), len(classes)))
    at = 0
    for tr, te in splits:
        model = clone(clf).fit(x[tr], y[tr])
        if has_proba:  # one fit gives both: the prediction is the most probable class
            p = model.predict_proba(x[te])
            proba[at:at + len(te), np.searchsorted(classes, model.classes_)] = p
            pred[at:at + len(te)] = model.classes_[p.argmax(1)]
        else:
            pred[at:at + len(te)] = model.predict(x[te])
        at += len(te)
    truth = y[tested]
    with warnings.catch_warnings():  # a class absent from the scored part: balanced accuracy warns
        warnings.simplefilter("ignore")
        balanced = float(balanced_accuracy_score(truth, pred))
    return {
        "accuracy": float(accuracy_score(truth, pred)),
        "balanced_accuracy": balanced,
        "auroc": _auroc(truth, proba, classes) if has_proba else None,
        "n": int(len(tested)),
        "n_classes": int(len(classes)),
        "cv": name,
        "n_splits": len(splits),
    }


# ---------------------------------------------------------------------- probes
def linear_probe(
    x: np.ndarray, y: Sequence[Any], cv: Any = "auto", groups: Sequence[Any] | None = None,
    C: float = 1.0, seed: int = 0,
) -> dict[str, Any]:
    """Logistic regression (L2, strength ``1/C``) on standardised features."""
    if C <= 0:
        raise ValueError(f"C must be > 0, got {C}")
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=5000))
    return evaluate_probe(clf, x, y, cv, groups, seed)


def knn_probe(
    x: np.ndarray, y: Sequence[Any], k: int = 5, metric: str = "cosine", cv: Any = "auto",
    groups: Sequence[Any] | None = None, seed: int = 0,
) -> dict[str, Any]:
    """k-nearest-neighbour majority vote; k is capped by the smallest training fold (reported as ``k``)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if metric not in KNN_METRICS:
        raise ValueError(f"metric must be one of {KNN_METRICS}, got {metric!r}")
    x_arr, y_arr = _check_xy(x, y)
    splits, name = make_splits(y_arr, cv, groups, seed)
    k_eff = min(k, min(len(tr) for tr, _ in splits))
    clf = KNeighborsClassifier(n_neighbors=k_eff, metric=metric)
    return {**_score(clf, x_arr, y_arr, splits, name), "k": k_eff}


def svm_probe(
    x: np.ndarray, y: Sequence[Any], C: float = 1.0, cv: Any = "auto", groups: Sequence[Any] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Linear SVM on standardised features (Point-MAE / I2P-MAE: pass the fixed train/test split as ``cv``)."""
    if C <= 0:
        raise ValueError(f"C must be > 0, got {C}")
    clf = make_pipeline(StandardScaler(), LinearSVC(C=C, max_iter=20000, random_state=seed))
    return evaluate_probe(clf, x, y, cv, groups, seed)


def run_probe(name: str, x: np.ndarray, y: Sequence[Any], **kwargs: Any) -> dict[str, Any]:
    """Dispatch to :func:`linear_probe`, :func:`knn_probe` or :func:`svm_probe` by name."""
    fns = {"linear": linear_probe, "knn": knn_probe, "svm": svm_probe}
    if name not in fns:
        raise ValueError(f"probe must be one of {PROBES}, got {name!r}")
    return fns[name](x, y, **kwargs)


# ---------------------------------------------------------------------- reference: random init
def random_init_like(model: nn.Module, seed: int = 0) -> nn.Module:
    """A freshly initialised model of the same registered configuration, on the same device.

    Built with ``create_model(model.model_name, **model.model_kwargs)`` under a fixed seed; the
    global RNG state is left as it was.
    """
    from maecore.models.registry import create_model

    name, kwargs = getattr(model, "model_name", None), getattr(model, "model_kwargs", None)
    if not name or kwargs is None:
        raise ValueError(f"{type(model).__name__} was not built by create_model (no model_name/model_kwargs); "
                         "pass random_init= explicitly")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = create_model(name, **kwargs)
    fresh.meta = dict(getattr(model, "meta", {}) or {})
    return fresh.to(next(model.parameters()).device)


def compare_to_random(
    pretrained: nn.Module,
    loader: Iterable[dict[str, Any]],
    y: Sequence[Any],
    groups: Sequence[Any] | None = None,
    *,
    random_init: nn.Module | None = None,
    probes: Sequence[str] = ("linear", "knn"),
    cv: Any = "auto",
    seed: int = 0,
    k: int = 5,
    C: float = 1.0,
    embed_groups: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """The same probes on ``pretrained`` and on a random-init model of the same configuration.

    ``groups`` are cross-validation groups (leave-one-group-out), ``embed_groups`` the input
    groups the encoder sees. ``loader`` must yield the samples in the order of ``y`` both
    times (no shuffling). Returns ``{"pretrained": {probe: scores, "emb_std": s},
    "random_init": {probe: scores, "emb_std": s}}``; ``emb_std`` (mean per-dimension std of the
    embeddings) near 0 means collapsed features. The random model is built with ``seed``.
    """
    for p in probes:
        if p not in PROBES:
            raise ValueError(f"probes must be drawn from {PROBES}, got {p!r}")
    random_init = random_init if random_init is not None else random_init_like(pretrained, seed)
    opts = {"linear": {"C": C}, "knn": {"k": k}, "svm": {"C": C}}
    out: dict[str, Any] = {}
    for name, model in (("pretrained", pretrained), ("random_init", random_init)):
        x, _ = extract_embeddings(model, loader, embed_groups)
        res = {p: run_probe(p, x, y, cv=cv, groups=groups, seed=seed, **opts[p]) for p in probes}
        out[name] = {**res, "emb_std": float(x.std(0).mean())}
    return out


class ProbeTask:
    """The probes of one model bundled (scikit-learn on frozen features; not a LightningModule).

    ``embed_groups`` picks the encoder's input groups; ``cv``/``seed`` are the cross-validation
    protocol of every probe (see the module docstring).
    """

    def __init__(
        self,
        model: nn.Module,
        probes: Sequence[str] = ("linear", "knn"),
        cv: Any = "auto",
        embed_groups: Sequence[Any] | None = None,
        k: int = 5,
        C: float = 1.0,
        seed: int = 0,
    ) -> None:
        bad = [p for p in probes if p not in PROBES]
        if bad or not probes:
            raise ValueError(f"probes must be a non-empty selection of {PROBES}, got {list(probes)}")
        self.model, self.probes, self.cv, self.embed_groups = model, tuple(probes), cv, embed_groups
        self.k, self.C, self.seed = k, C, seed

    def embed(self, loader: Iterable[dict[str, Any]]) -> tuple[np.ndarray, dict[str, list[Any]]]:
        return extract_embeddings(self.model, loader, self.embed_groups)

    def evaluate(self, x: np.ndarray, y: Sequence[Any], groups: Sequence[Any] | None = None) -> dict[str, Any]:
        opts = {"linear": {"C": self.C}, "knn": {"k": self.k}, "svm": {"C": self.C}}
        return {p: run_probe(p, x, y, cv=self.cv, groups=groups, seed=self.seed, **opts[p]) for p in self.probes}

    def run(self, loader: Iterable[dict[str, Any]], y: Sequence[Any], groups: Sequence[Any] | None = None,
            against_random: bool = True) -> dict[str, Any]:
        """Probe scores; with ``against_random`` also those of a random-init twin (:func:`compare_to_random`)."""
        if against_random:
            return compare_to_random(self.model, loader, y, groups, probes=self.probes, cv=self.cv, seed=self.seed,
                                     k=self.k, C=self.C, embed_groups=self.embed_groups)
        return self.evaluate(self.embed(loader)[0], y, groups)


__all__ = [
    "LOO_MAX_SAMPLES",
    "PROBES",
    "ProbeTask",
    "compare_to_random",
    "evaluate_probe",
    "extract_embeddings",
    "knn_probe",
    "linear_probe",
    "make_splits",
    "random_init_like",
    "run_probe",
    "svm_probe",
]
