"""Probes on frozen embeddings: linear / kNN / SVM, cross-validation protocols, random-init reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from torch import nn
from torch.utils.data import DataLoader, Dataset

import maecore.models.registry as registry
from maecore.models import create_model
from maecore.tasks.data import collate_dict
from maecore.tasks.probe import (
    LOO_MAX_SAMPLES,
    ProbeTask,
    compare_to_random,
    evaluate_probe,
    extract_embeddings,
    knn_probe,
    linear_probe,
    make_splits,
    random_init_like,
    run_probe,
    svm_probe,
)


def blobs(n_per_class: int, n_classes: int = 3, dim: int = 8, sep: float = 6.0, seed: int = 0):
    """Gaussian blobs, one per class, ``sep`` standard deviations apart."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), n_per_class)
    return rng.normal(size=(len(y), dim)) + sep * np.eye(n_classes, dim)[y], y


class Images(Dataset):
    def __init__(self, n: int = 12) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, 16, 16, generator=g)
        self.y = torch.arange(n) % 2
        self.x[self.y == 1] += 1.5

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "label": self.y[i], "id": f"s{i}", "mask": torch.zeros(16, 16)}


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return create_model("mae_vit_tiny", ndim=2, group_channels=[3], patch_size=4)


# ---------------------------------------------------------------------- embeddings
def test_extract_embeddings_matches_encode_and_collects_meta():
    model, ds = tiny_model().train(), Images(10)
    loader = DataLoader(ds, batch_size=4, collate_fn=collate_dict)
    x, meta = extract_embeddings(model, loader)
    assert x.shape == (10, 64) and x.dtype == np.float32
    model.eval()
    with torch.no_grad():
        ref = model.encode({"x": ds.x}).numpy()
    np.testing.assert_allclose(x, ref, atol=1e-5)
    assert meta["label"] == ds.y.tolist() and meta["id"] == [f"s{i}" for i in range(10)]
    assert "mask" not in meta and "x" not in meta  # inputs and per-pixel maps are not metadata by default
    _, explicit = extract_embeddings(model, loader, meta_keys=["mask"])
    assert len(explicit["mask"]) == 10 and explicit["mask"][0].shape == (16, 16)


def test_extract_embeddings_restores_training_mode():
    model = tiny_model().train()
    extract_embeddings(model, DataLoader(Images(4), batch_size=4, collate_fn=collate_dict))
    assert model.training
    model.eval()
    extract_embeddings(model, DataLoader(Images(4), batch_size=4, collate_fn=collate_dict))
    assert not model.training


# ---------------------------------------------------------------------- probes
@pytest.mark.parametrize("n_per_class", [10, 30])  # 30 leave-one-out, 90 samples 5-fold
def test_probes_separate_blobs_and_fall_to_chance_on_shuffled_labels(n_per_class):
    x, y = blobs(n_per_class)
    expected_cv = "leave-one-out" if len(y) <= LOO_MAX_SAMPLES else "stratified-5-fold"
    res = {probe: run_probe(probe, x, y) for probe in ("linear", "knn", "svm")}
    for probe, r in res.items():
        assert r["accuracy"] >= 0.97 and r["balanced_accuracy"] >= 0.97, (probe, r)
        assert r["cv"] == expected_cv and r["n"] == len(y) and r["n_classes"] == 3
    assert res["linear"]["auroc"] > 0.99 and res["knn"]["auroc"] > 0.99
    assert res["svm"]["auroc"] is None  # no probabilities from a LinearSVC
    shuffled = np.random.default_rng(1).permutation(y)
    for probe in ("linear", "knn"):
        assert run_probe(probe, x, shuffled)["accuracy"] < 0.6  # chance is 1/3


def test_binary_auroc_and_string_labels():
    x, y = blobs(12, n_classes=2, sep=1.0)
    names = np.array(["cat", "dog"])[y]
    a, b = linear_probe(x, y), linear_probe(x, names)
    assert a["accuracy"] == b["accuracy"] and a["auroc"] == pytest.approx(b["auroc"])
    assert 0.5 < a["auroc"] <= 1.0


def test_knn_caps_k_to_the_training_fold():
    x, y = blobs(3, n_classes=2)  # 6 samples: leave-one-out folds train on 5
    res = knn_probe(x, y, k=50)
    assert res["k"] == 5 and res["n"] == 6


class GroupSpy(ClassifierMixin, BaseEstimator):
    """Records the group ids (column 0 of X) it trains and predicts on; predicts class 0."""

    log: list[tuple[set, set]] = []

    def fit(self, x, y):
        self.classes_ = np.unique(y)
        self.train_groups_ = set(x[:, 0].tolist())
        return self

    def predict(self, x):
        GroupSpy.log.append((self.train_groups_, set(x[:, 0].tolist())))
        return np.full(len(x), self.classes_[0])


def test_leave_one_group_out_never_puts_a_group_in_train_and_test():
    groups = np.repeat(np.arange(6), 4)
    y = np.tile([0, 1], 12)
    x = np.c_[groups.astype(float), np.random.default_rng(0).normal(size=(24, 3))]
    GroupSpy.log = []
    res = evaluate_probe(GroupSpy(), x, y, groups=groups)
    assert res["cv"] == "leave-one-group-out" and res["n_splits"] == 6 and res["n"] == 24
    assert len(GroupSpy.log) == 6
    for train_groups, test_groups in GroupSpy.log:
        assert len(test_groups) == 1 and not train_groups & test_groups
        assert len(train_groups) == 5


def test_leave_one_group_out_removes_the_leak_of_object_twins():
    # 10 objects, two views each with the same label; features identify the object, not the class
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(10), 2)
    y = np.repeat(np.tile([0, 1], 5), 2)
    x = rng.normal(size=(10, 16))[groups] + 0.01 * rng.normal(size=(20, 16))
    leaky = knn_probe(x, y, k=1)  # leave-one-out: the twin view sits in the training fold
    honest = knn_probe(x, y, k=1, groups=groups)
    assert leaky["accuracy"] == 1.0
    assert honest["accuracy"] <= 0.7 and honest["cv"] == "leave-one-group-out"


def test_given_split_scores_only_the_test_part():
    x, y = blobs(10, n_classes=2)
    train, test = np.arange(0, 20, 2), np.arange(1, 20, 2)
    res = svm_probe(x, y, cv=[(train, test)])
    assert res["n"] == 10 and res["n_splits"] == 1 and res["cv"] == "given-splits" and res["accuracy"] == 1.0


def test_int_cv_is_stratified_and_seeded():
    x, y = blobs(8, n_classes=2, sep=0.5)
    splits, name = make_splits(y, 4, seed=3)
    assert name == "stratified-4-fold" and len(splits) == 4
    for _, te in splits:
        assert np.bincount(y[te]).tolist() == [2, 2]
    assert linear_probe(x, y, cv=4, seed=3) == linear_probe(x, y, cv=4, seed=3)


# ---------------------------------------------------------------------- random-init reference
def test_compare_to_random_builds_the_same_config(monkeypatch):
    calls = []
    real = registry.create_model

    def spy(name, **kw):
        calls.append((name, kw))
        return real(name, **kw)

    monkeypatch.setattr(registry, "create_model", spy)
    model, ds = tiny_model(), Images(12)
    model.meta = {"bands": ["r", "g", "b"]}
    loader = DataLoader(ds, batch_size=6, collate_fn=collate_dict)
    res = compare_to_random(model, loader, ds.y.numpy(), seed=3, probes=("linear", "knn", "svm"))
    assert set(res) == {"pretrained", "random_init"}
    assert calls == [("mae_vit_tiny", {"ndim": 2, "group_channels": [3], "patch_size": 4})]
    for name in ("pretrained", "random_init"):
        assert set(res[name]) == {"linear", "knn", "svm", "emb_std"}
        assert 0.0 <= res[name]["linear"]["accuracy"] <= 1.0 and res[name]["emb_std"] > 0
    # pretrained weights and a fresh init give different embeddings
    assert res["pretrained"]["emb_std"] != res["random_init"]["emb_std"]


def test_random_init_like_is_seeded_and_leaves_the_global_rng_alone():
    model = tiny_model()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a, b, c = random_init_like(model, seed=1), random_init_like(model, seed=1), random_init_like(model, seed=2)
    assert torch.equal(torch.get_rng_state(), state)
    wa, wb, wc = (m.encoder.blocks[0].attn.qkv.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert not torch.equal(wa, model.encoder.blocks[0].attn.qkv.weight)
    assert a.model_kwargs == model.model_kwargs


def test_compare_to_random_uses_a_given_random_model(monkeypatch):
    monkeypatch.setattr(registry, "create_model", lambda *a, **k: pytest.fail("must not build a model"))
    ds = Images(8)
    loader = DataLoader(ds, batch_size=8, collate_fn=collate_dict)
    res = compare_to_random(tiny_model(), loader, ds.y.numpy(), random_init=tiny_model(), probes=("knn",))
    assert res["pretrained"] == res["random_init"]  # the same weights on both sides


def test_probe_task_bundles_the_probes():
    ds = Images(8)
    loader = DataLoader(ds, batch_size=4, collate_fn=collate_dict)
    task = ProbeTask(tiny_model(), probes=("knn", "linear"), k=3)
    x, meta = task.embed(loader)
    scores = task.evaluate(x, meta["label"])
    assert set(scores) == {"knn", "linear"} and scores["knn"]["k"] == 3
    assert task.run(loader, ds.y.numpy(), against_random=False) == scores
    assert set(task.run(loader, ds.y.numpy())) == {"pretrained", "random_init"}


# ---------------------------------------------------------------------- errors
def test_probe_input_errors():
    x, y = blobs(4, n_classes=2)
    with pytest.raises(ValueError, match=r"X has 8 rows but y has shape \[7\]; need one label per row"):
        linear_probe(x, y[:7])
    with pytest.raises(ValueError, match=r"a probe needs at least 2 classes, got \[1\]"):
        knn_probe(x, np.ones(8, dtype=int))
    with pytest.raises(ValueError, match=r"embeddings must be \[N, D\], got shape \[8\]"):
        linear_probe(x[:, 0], y)
    with pytest.raises(ValueError, match=r"embeddings hold NaN or inf"):
        linear_probe(np.where(np.eye(8, 8, dtype=bool), np.nan, x), y)
    with pytest.raises(ValueError, match=r"leave-one-out needs at least 2 samples per class; too few in classes \{1: 1\}"):
        linear_probe(x[:5], np.array([0, 0, 0, 0, 1]))
    with pytest.raises(ValueError, match=r"5-fold stratified cross-validation \(try cv='loo'\) needs at least 5 samples per class"):
        svm_probe(x, y, cv=5)


def test_cv_errors():
    x, y = blobs(4, n_classes=2)
    with pytest.raises(ValueError, match=r"cv must be 'auto', 'loo', 'logo', an int >= 2, a splitter or index pairs; got 'kfold'"):
        linear_probe(x, y, cv="kfold")
    with pytest.raises(ValueError, match=r"cv as a fold count must be >= 2, got 1"):
        linear_probe(x, y, cv=1)
    with pytest.raises(ValueError, match=r"cv must be .* got 3.5"):
        linear_probe(x, y, cv=3.5)
    with pytest.raises(ValueError, match=r"groups has 2 entries for 8 samples"):
        knn_probe(x, y, groups=[0, 1])
    with pytest.raises(ValueError, match=r"leave-one-group-out needs at least 2 groups, got \['a'\]"):
        knn_probe(x, y, groups=["a"] * 8)
    with pytest.raises(ValueError, match=r"cv='logo' \(leave-one-group-out\) needs groups"):
        knn_probe(x, y, cv="logo")
    with pytest.raises(ValueError, match=r"leave-one-group-out: a training fold holds a single class \[[01]\]"):
        knn_probe(x, y, groups=np.where(y == 0, "zeros", "ones"))
    with pytest.raises(ValueError, match=r"given-splits: a split has an empty train or test set"):
        knn_probe(x, y, cv=[(np.arange(8), np.array([], dtype=int))])


def test_probe_argument_errors():
    x, y = blobs(4, n_classes=2)
    with pytest.raises(ValueError, match=r"k must be >= 1, got 0"):
        knn_probe(x, y, k=0)
    with pytest.raises(ValueError, match=r"metric must be one of \('cosine', 'euclidean', 'manhattan'\), got 'jaccard'"):
        knn_probe(x, y, metric="jaccard")
    with pytest.raises(ValueError, match=r"C must be > 0, got 0"):
        linear_probe(x, y, C=0)
    with pytest.raises(ValueError, match=r"C must be > 0, got -1"):
        svm_probe(x, y, C=-1)
    with pytest.raises(ValueError, match=r"probe must be one of \('linear', 'knn', 'svm'\), got 'mlp'"):
        run_probe("mlp", x, y)
    with pytest.raises(ValueError, match=r"probes must be a non-empty selection of \('linear', 'knn', 'svm'\), got \[\]"):
        ProbeTask(tiny_model(), probes=())
    loader = DataLoader(Images(4), batch_size=4, collate_fn=collate_dict)
    with pytest.raises(ValueError, match=r"probes must be drawn from \('linear', 'knn', 'svm'\), got 'mlp'"):
        compare_to_random(tiny_model(), loader, [0, 1, 0, 1], probes=("mlp",))


def test_model_and_loader_errors():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"the loader produced no batch: nothing to embed"):
        extract_embeddings(model, [])
    with pytest.raises(KeyError, match=r"meta key 'subject' not in the batch; keys: \['id', 'label', 'mask', 'x'\]"):
        extract_embeddings(model, DataLoader(Images(4), batch_size=4, collate_fn=collate_dict), meta_keys=["subject"])
    with pytest.raises(ValueError, match=r"Linear has no encode\(batch, groups\): cannot extract embeddings"):
        extract_embeddings(nn.Linear(2, 2), [])
    with pytest.raises(ValueError, match=r"Linear was not built by create_model .* pass random_init= explicitly"):
        random_init_like(nn.Linear(2, 2))
