"""Probes on frozen embeddings (scikit-learn): linear, kNN and linear SVM, and the same probe on
a randomly initialised model of the same configuration as the reference point.

Cross-validation: leave-one-group-out when ``groups`` is given (one object, subject or sequence
never sits in both train and test), else stratified k-fold with k limited by the rarest class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score
from sklearn.model_selection import LeaveOneGroupOut, StratifiedKFold, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from torch import nn
from torch.utils.data import DataLoader


@torch.no_grad()
def extract_embeddings(model: nn.Module, loader: DataLoader, groups: Sequence[str] | None = None) -> np.ndarray:
    """``[N, D]`` float32 embeddings of every batch of ``loader`` (eval mode, model's device)."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    for batch in loader:
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        out.append(model.encode(batch, groups).float().cpu().numpy())
    model.train(was)
    if not out:
        raise ValueError("the loader produced no batch: nothing to embed")
    return np.concatenate(out)


def _splits(y: np.ndarray, groups: Sequence[Any] | None, folds: int):
    if groups is not None:
        groups = np.asarray(groups)
        if len(groups) != len(y):
            raise ValueError(f"groups has {len(groups)} entries for {len(y)} samples")
        if len(np.unique(groups)) < 2:
            raise ValueError("leave-one-group-out needs at least 2 groups")
        return LeaveOneGroupOut(), groups
    counts = np.unique(y, return_counts=True)[1]
    k = min(folds, int(counts.min()))
    if k < 2:
        raise ValueError(f"every class needs at least 2 samples for cross-validation; class counts {counts.tolist()}")
    return StratifiedKFold(k, shuffle=True, random_state=0), None


def _check(x: np.ndarray, y: Sequence[Any]) -> np.ndarray:
    y = np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"{len(x)} embeddings but {len(y)} labels")
    if len(np.unique(y)) < 2:
        raise ValueError(f"a probe needs at least 2 classes, got {np.unique(y).tolist()}")
    if not np.isfinite(x).all():
        raise ValueError("embeddings hold non-finite values")
    return y


def _evaluate(clf, x: np.ndarray, y: Sequence[Any], groups, folds: int, scores: bool) -> dict[str, float]:
    y = _check(x, y)
    cv, g = _splits(y, groups, folds)
    pred = cross_val_predict(clf, x, y, cv=cv, groups=g)
    res = {"accuracy": float(accuracy_score(y, pred)), "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
           "n": int(len(y))}
    if scores:
        method = "predict_proba" if hasattr(clf, "predict_proba") else "decision_function"
        try:
            s = cross_val_predict(clf, x, y, cv=cv, groups=g, method=method)
            classes = np.unique(y)
            res["auroc"] = float(roc_auc_score(y, s[:, 1] if len(classes) == 2 else s, multi_class="ovr",
                                               average="macro", labels=classes if len(classes) > 2 else None))
        except ValueError:  # a fold missing a class: AUROC undefined
            pass
    return res


def linear_probe(x: np.ndarray, y: Sequence[Any], groups: Sequence[Any] | None = None, folds: int = 5,
                 c: float = 1.0) -> dict[str, float]:
    """Logistic regression on standardised features; cross-validated accuracy and AUROC."""
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))
    return _evaluate(clf, x, y, groups, folds, scores=True)


def knn_probe(x: np.ndarray, y: Sequence[Any], k: int = 5, groups: Sequence[Any] | None = None,
              folds: int = 5) -> dict[str, float]:
    """k-nearest-neighbour vote on cosine distance."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(k, len(x) - 1) if len(x) > 1 else 1
    clf = KNeighborsClassifier(n_neighbors=k, metric="cosine")
    return _evaluate(clf, x, y, groups, folds, scores=False)


def svm_probe(x: np.ndarray, y: Sequence[Any], groups: Sequence[Any] | None = None, folds: int = 5,
              c: float = 1.0) -> dict[str, float]:
    """Linear SVM on standardised features (the Point-MAE / I2P-MAE ModelNet40 protocol)."""
    clf = make_pipeline(StandardScaler(), LinearSVC(C=c, max_iter=20000))
    return _evaluate(clf, x, y, groups, folds, scores=True)


def random_init_like(model: nn.Module, seed: int = 0) -> nn.Module:
    """A freshly initialised model of the same registered configuration."""
    from maecore.models.registry import create_model

    torch.manual_seed(seed)
    fresh = create_model(model.model_name, **model.model_kwargs)
    fresh.meta = dict(getattr(model, "meta", {}))
    return fresh.to(next(model.parameters()).device)


def compare_to_random(model: nn.Module, loader: DataLoader, y: Sequence[Any], groups: Sequence[Any] | None = None,
                      seed: int = 0, k: int = 5, embed_groups: Sequence[str] | None = None) -> dict[str, Any]:
    """Linear and kNN probes on the model's embeddings and on a random-init model's."""
    out: dict[str, Any] = {}
    for name, m in (("pretrained", model), ("random_init", random_init_like(model, seed))):
        x = extract_embeddings(m, loader, embed_groups)
        out[name] = {"linear": linear_probe(x, y, groups), "knn": knn_probe(x, y, k, groups),
                     "emb_std": float(x.std(0).mean())}
    return out


class ProbeTask:
    """Bundles the probes for one model (scikit-learn on frozen features; no Lightning needed)."""

    def __init__(self, model: nn.Module, groups: Sequence[str] | None = None) -> None:
        self.model, self.groups = model, groups

    def embeddings(self, loader: DataLoader) -> np.ndarray:
        return extract_embeddings(self.model, loader, self.groups)

    def run(self, loader: DataLoader, y: Sequence[Any], cv_groups: Sequence[Any] | None = None) -> dict[str, Any]:
        return compare_to_random(self.model, loader, y, cv_groups, embed_groups=self.groups)
