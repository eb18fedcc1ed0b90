"""Fine-tuning: heads, layer-wise LR decay, FinetuneTask on toy tasks, the fine-tuned export."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.utils.data import Dataset

from maecore.errors import DataError
from maecore.models import create_model
from maecore.tasks import TrainConfig
from maecore.tasks.data import collate_dict
from maecore.tasks.finetune import FinetuneTask, collect_targets, load_finetuned, run_finetune, save_finetuned
from maecore.tasks.heads import (
    ClassificationHead,
    RegressionHead,
    SegmentationHead,
    build_head,
    layer_decay_groups,
    make_head,
)


class Stripes(Dataset):
    """Class 0: horizontal stripes, class 1: vertical stripes (random phase, noise).

    Also carries a multi-label target (is-horizontal, is-vertical, top brighter than bottom) and a
    regression target (a brightness offset in arbitrary units: 100 * offset + 50).
    """

    def __init__(self, n: int = 64, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.y = torch.arange(n) % 2
        phase = torch.rand(n, generator=g) * 6.28
        wave = torch.sin(torch.arange(16.0)[None] * 1.2 + phase[:, None])[:, :, None].expand(n, 16, 16)
        img = torch.where(self.y[:, None, None] == 0, wave, wave.transpose(1, 2))
        self.offset = torch.rand(n, generator=g) * 2 - 1
        self.x = img[:, None].repeat(1, 3, 1, 1) + 0.3 * torch.randn(n, 3, 16, 16, generator=g)
        top_brighter = self.x[:, 0, :8].mean((1, 2)) > self.x[:, 0, 8:].mean((1, 2))
        self.multi = torch.stack([self.y == 0, self.y == 1, top_brighter], 1).float()
        self.reg = 100 * self.offset + 50

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "label": self.y[i], "multi": self.multi[i],
                "reg": self.reg[i], "x_reg": self.x[i] + self.offset[i]}


class Regress(Stripes):
    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i] + self.offset[i], "reg": self.reg[i]}


class Blocks(Dataset):
    """Segmentation: each 4 x 4 block is bright (class 1) or dark (class 0); a border is unlabelled."""

    def __init__(self, n: int = 64, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        blocks = torch.rand(n, 4, 4, generator=g) > 0.5
        self.mask = blocks.repeat_interleave(4, 1).repeat_interleave(4, 2).long()
        self.x = (self.mask[:, None].float() * 2 - 1).repeat(1, 3, 1, 1) + 0.3 * torch.randn(n, 3, 16, 16, generator=g)
        self.mask[:, 0, :] = -100

    def __len__(self) -> int:
        return len(self.mask)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "mask": self.mask[i]}


def tiny(ndim: int = 2, **kw) -> nn.Module:
    torch.manual_seed(0)
    kw = {"group_channels": [3], "patch_size": 4, **kw}
    return create_model("mae_vit_tiny", ndim=ndim, **kw)


def cfg(**kw) -> TrainConfig:
    base = dict(max_steps=20, batch_size=16, lr=3e-3, warmup_steps=2, progress=False, accelerator="cpu",
                log_every=5, ckpt_every=100)
    return TrainConfig(**{**base, **kw})


def batch_of(ds: Dataset, n: int) -> dict:
    return collate_dict([ds[i] for i in range(n)])


def csv_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


# ---------------------------------------------------------------------- heads
@pytest.mark.parametrize(("ndim", "size", "patch"), [(1, (32,), 4), (2, (16, 12), 4), (3, (8, 8, 4), 2)])
def test_heads_output_shapes_on_real_encoders(ndim, size, patch):
    model = tiny(ndim, group_channels=[1, 2], patch_size=patch)
    batch = {"x": torch.randn(2, 3, *size)}
    emb = model.encode(batch)
    assert ClassificationHead(64, 5)(emb).shape == (2, 5)
    assert RegressionHead(64, 3)(emb).shape == (2, 3)
    emb_t, pad = model.encode_tokens(batch)
    seg = SegmentationHead(64, 4, patch, ndim)
    out = seg(emb_t, pad, model.tokenizer.grid(batch))
    assert out.shape == (2, 4, *size) and torch.isfinite(out).all()


def test_segmentation_head_averages_present_groups_only():
    head = SegmentationHead(8, 3, (2, 2), 2)
    grid, n = (3, 2), 6
    emb = torch.randn(2, 3 * n, 8)  # 3 groups, group major
    none = torch.zeros(2, 3 * n, dtype=torch.bool)
    full = head(emb, none, grid)
    per_group = [head(emb[:, g * n:(g + 1) * n], none[:, :n], grid) for g in range(3)]
    torch.testing.assert_close(full, sum(per_group) / 3)
    pad = none.clone()
    pad[0, n:] = True  # sample 0: only group 0 present
    pad[1, :n] = True  # sample 1: group 0 absent
    changed = emb.clone()
    changed[pad] += 100.0  # what a padded token holds must not matter
    out = head(changed, pad, grid)
    torch.testing.assert_close(out, head(emb, pad, grid))
    torch.testing.assert_close(out[0], per_group[0][0])
    torch.testing.assert_close(out[1], (per_group[1][1] + per_group[2][1]) / 2)
    all_absent = torch.ones_like(pad)
    assert torch.equal(head(emb, all_absent, grid), torch.zeros(2, 3, 6, 4))


def test_regression_head_standardises_targets_with_stored_stats():
    head = RegressionHead(4, 2)
    y = torch.tensor([[10.0, -1.0], [20.0, -1.0], [30.0, -1.0]])
    head.fit_stats(y)
    torch.testing.assert_close(head.mean, torch.tensor([20.0, -1.0]))
    torch.testing.assert_close(head.std, torch.tensor([math.sqrt(200 / 3), 1.0]))  # a constant target keeps std 1
    assert bool(head.stats_fitted)
    assert set(head.state_dict()) >= {"mean", "std", "stats_fitted"}
    emb = torch.randn(3, 4)
    out = head(emb)
    z = head.fc(head.norm(emb))
    torch.testing.assert_close(out, z * head.std + head.mean)
    torch.testing.assert_close(head.loss(out, y), ((z - (y - head.mean) / head.std) ** 2).mean())


def test_classification_losses():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    single, multi = ClassificationHead(4, 2), ClassificationHead(4, 2, multilabel=True)
    torch.testing.assert_close(single.loss(logits, torch.tensor([0, 1])), torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1])))
    target = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    torch.testing.assert_close(multi.loss(logits, target), torch.nn.functional.binary_cross_entropy_with_logits(logits, target))


@pytest.mark.parametrize(
    "head", [ClassificationHead(8, 3), ClassificationHead(8, 4, multilabel=True), RegressionHead(8, 2),
             SegmentationHead(8, 3, (2, 4), 2, ignore_index=255)],
)
def test_build_head_rebuilds_from_config(head):
    twin = build_head(json.loads(json.dumps(head.config())))
    assert type(twin) is type(head) and twin.config() == head.config()
    assert {k: v.shape for k, v in twin.state_dict().items()} == {k: v.shape for k, v in head.state_dict().items()}


# ---------------------------------------------------------------------- layer-wise LR decay
def test_layer_decay_scales_are_exact():
    model = tiny()  # 2 encoder blocks: layer ids 0 (embeddings), 1, 2 (blocks), 3 (final norm + head)
    head = make_head("classification", 64, 2)
    groups = layer_decay_groups(model, 1e-3, 0.05, 0.5, head=head)
    names = {id(p): n for n, p in model.named_parameters()} | {id(p): f"head.{n}" for n, p in head.named_parameters()}
    by_name = {names[id(p)]: g for g in groups for p in g["params"]}
    expected = {"tokenizer.proj.0.weight": 0.125, "tokenizer.group_embed": 0.125, "encoder.blocks.0.attn.qkv.weight": 0.25,
                "encoder.blocks.1.mlp.0.bias": 0.5, "encoder.norm.weight": 1.0, "head.fc.weight": 1.0}
    for name, scale in expected.items():
        assert by_name[name]["lr_scale"] == scale and by_name[name]["lr"] == pytest.approx(1e-3 * scale), name
    assert {g["layer_id"]: g["lr_scale"] for g in groups} == {0: 0.125, 1: 0.25, 2: 0.5, 3: 1.0}
    # weight decay only on matrices of layers; not on biases, norms, embeddings
    assert by_name["tokenizer.proj.0.weight"]["weight_decay"] == 0.05
    assert by_name["encoder.blocks.0.attn.qkv.weight"]["weight_decay"] == 0.05
    for name in ("tokenizer.group_embed", "encoder.blocks.1.mlp.0.bias", "encoder.norm.weight", "head.fc.bias"):
        assert by_name[name]["weight_decay"] == 0.0, name
    # the decoder is dropped; every encoder parameter and every head parameter is in exactly one group
    assert not any(n.startswith(("decoder", "mask_token", "heads.")) for n in by_name)
    encoder = [n for n in names.values() if n.startswith(("tokenizer.", "encoder.", "head."))]
    assert sorted(by_name) == sorted(encoder)
    assert sum(len(g["params"]) for g in groups) == len(encoder)


def test_layer_decay_with_more_layers_and_without_blocks():
    model = tiny()
    groups = layer_decay_groups(model, 1.0, 0.0, 0.9, n_layers=4)  # e.g. matching a deeper reference schedule
    assert {g["layer_id"]: g["lr_scale"] for g in groups} == pytest.approx({0: 0.9**5, 1: 0.9**4, 2: 0.9**3, 5: 1.0})
    plain = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    with pytest.warns(UserWarning, match=r"Sequential has no encoder.blocks: layer-wise LR decay disabled"):
        groups = layer_decay_groups(plain, 1e-3, 0.05, 0.5)
    assert [(g["lr_scale"], g["weight_decay"], len(g["params"])) for g in groups] == [(1.0, 0.05, 1), (1.0, 0.0, 3)]


def test_finetune_task_optimizer_uses_layer_decay():
    task = FinetuneTask(tiny(), cfg(lr=2e-3, weight_decay=0.1), "classification", 2, layer_decay=0.5)
    opt = task.configure_optimizers()["optimizer"]
    assert sorted({round(g["initial_lr"], 12) for g in opt.param_groups}) == [2.5e-4, 5e-4, 1e-3, 2e-3]  # before warm-up
    trainable = {id(p) for n, p in task.named_parameters() if p.requires_grad}
    assert {id(p) for g in opt.param_groups for p in g["params"]} == trainable
    assert not any(p.requires_grad for n, p in task.model.named_parameters() if n.startswith("decoder"))


def test_layer_decay_errors():
    model = tiny()
    with pytest.raises(ValueError, match=r"layer_decay must be in \(0, 1\], got 1.5"):
        layer_decay_groups(model, 1e-3, 0.05, 1.5)
    with pytest.raises(ValueError, match=r"layer_decay must be in \(0, 1\], got 0"):
        layer_decay_groups(model, 1e-3, 0.05, 0)
    with pytest.raises(ValueError, match=r"base_lr must be > 0, got 0"):
        layer_decay_groups(model, 0, 0.05, 0.5)
    with pytest.raises(ValueError, match=r"n_layers must be >= the 2 encoder blocks, got 1"):
        layer_decay_groups(model, 1e-3, 0.05, 0.5, n_layers=1)


# ---------------------------------------------------------------------- fine-tuning runs
def test_classification_learns_and_exports(tmp_path: Path):
    train, val = Stripes(64), Stripes(32, seed=1)
    summary = run_finetune(tiny(), train, val, tmp_path, cfg(max_steps=25), "classification", 2,
                           class_names=["horizontal", "vertical"])
    assert summary["steps"] == 25 and summary["val/acc"] >= 0.9 and summary["val/f1"] >= 0.9, summary
    rows = csv_rows(tmp_path)
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert losses[-1] < 0.5 * losses[0]
    ft = load_finetuned(summary["export_dir"])
    assert ft.class_names == ["horizontal", "vertical"] and not ft.training
    b = batch_of(train, 64)
    train_acc = (ft.predict(b) == b["label"]).float().mean()
    assert train_acc >= 0.95


def test_export_round_trip_gives_identical_outputs(tmp_path: Path):
    task = FinetuneTask(tiny(), cfg(), "classification", 2).eval()
    with torch.no_grad():
        task.head.fc.weight.normal_()  # a head that is not the near-zero init
    b = batch_of(Stripes(8), 8)
    task.export(tmp_path / "export")
    loaded = load_finetuned(tmp_path / "export")
    with torch.no_grad():
        assert torch.equal(task(b), loaded(b))
    info = json.loads((tmp_path / "export" / "head.json").read_text())
    assert info["task"] == "classification" and info["head"] == task.head.config() and info["label_key"] == "label"
    assert {p.name for p in (tmp_path / "export").iterdir()} == {"model.safetensors", "config.json", "head.safetensors", "head.json"}


def test_multilabel_reports_auroc(tmp_path: Path):
    summary = run_finetune(tiny(), Stripes(64), Stripes(32, seed=1), tmp_path, cfg(), "multilabel", 3, label_key="multi")
    assert 0.6 < summary["val/auroc"] <= 1.0 and 0.0 <= summary["val/f1"] <= 1.0, summary
    assert "val/auroc" in csv_rows(tmp_path)[-1]


def test_regression_loss_falls_and_outputs_are_in_target_units(tmp_path: Path):
    train = Regress(64)
    summary = run_finetune(tiny(), train, Regress(32, seed=1), tmp_path, cfg(max_steps=30), "regression", 1,
                           label_key="reg")
    losses = [float(r["train/loss"]) for r in csv_rows(tmp_path) if r.get("train/loss")]
    assert losses[-1] < 0.5 * losses[0], losses
    assert summary["val/r2"] > 0.5 and summary["val/rmse"] < 0.7 * float(train.reg.std()), summary
    ft = load_finetuned(summary["export_dir"])
    torch.testing.assert_close(ft.head.mean, train.reg.double().mean().float().reshape(1))
    pred = ft.predict(batch_of(train, 64))[:, 0]
    assert (pred - train.reg).abs().mean() < 0.5 * (train.reg - train.reg.mean()).abs().mean()


def test_segmentation_reports_miou_and_ignores_unlabelled(tmp_path: Path):
    summary = run_finetune(tiny(), Blocks(64), Blocks(32, seed=1), tmp_path, cfg(), "segmentation", 2)
    assert summary["val/miou"] > 0.9 and summary["val/pixel_acc"] > 0.95, summary
    ft = load_finetuned(summary["export_dir"])
    b = batch_of(Blocks(8, seed=2), 8)
    pred = ft.predict(b)
    assert pred.shape == (8, 16, 16)
    labelled = b["mask"] != -100
    assert (pred[labelled] == b["mask"][labelled]).float().mean() > 0.95


def test_freeze_encoder_trains_only_the_head(tmp_path: Path):
    model = tiny()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    summary = run_finetune(model, Stripes(32), None, tmp_path, cfg(max_steps=5), "classification", 2,
                           freeze_encoder=True, logger=False)
    assert summary["steps"] == 5 and not any(k.startswith("val/") for k in summary)
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())
    head = load_finetuned(summary["export_dir"]).head
    assert head.fc.weight.abs().max() > 1e-3  # moved away from its near-zero init


class CountSteps(Callback):
    def __init__(self) -> None:
        self.batches = 0

    def on_train_batch_end(self, *args) -> None:
        self.batches += 1


def test_resume_continues_from_the_checkpoint(tmp_path: Path):
    run_finetune(tiny(), Stripes(32), None, tmp_path, cfg(max_steps=6, ckpt_every=3), "classification", 2)
    counter = CountSteps()
    summary = run_finetune(tiny(), Stripes(32), None, tmp_path, cfg(max_steps=10, ckpt_every=3), "classification", 2,
                           resume="auto", callbacks=[counter])
    assert summary["steps"] == 10 and counter.batches == 4  # steps 6..9 only
    assert [int(r["step"]) for r in csv_rows(tmp_path)] == [4, 9]  # the first run's rows are kept


# ---------------------------------------------------------------------- errors
def test_head_errors():
    with pytest.raises(ValueError, match=r"task must be one of \('classification', 'multilabel', 'regression', 'segmentation'\), got 'detection'"):
        make_head("detection", 8, 2)
    with pytest.raises(ValueError, match=r"n_classes must be >= 2 for single-label classification, got 1"):
        make_head("classification", 8, 1)
    with pytest.raises(ValueError, match=r"n_classes must be >= 1, got 0"):
        make_head("multilabel", 8, 0)
    with pytest.raises(ValueError, match=r"n_targets must be >= 1, got 0"):
        make_head("regression", 8, 0)
    with pytest.raises(ValueError, match=r"a segmentation head needs the tokenizer's patch size and ndim"):
        make_head("segmentation", 8, 2)
    with pytest.raises(ValueError, match=r"n_classes must be >= 2 for segmentation, got 1"):
        SegmentationHead(8, 1, 4, 2)
    with pytest.raises(ValueError, match=r"ndim must be 1, 2 or 3, got 4"):
        SegmentationHead(8, 2, 4, 4)
    with pytest.raises(ValueError, match=r"patch size must be 2 positive integers, got \(4, 4, 4\)"):
        SegmentationHead(8, 2, (4, 4, 4), 2)
    head = SegmentationHead(8, 2, 4, 2)
    with pytest.raises(ValueError, match=r"10 tokens do not form whole 2-D grids \(2, 2\)"):
        head(torch.randn(1, 10, 8), torch.zeros(1, 10, dtype=torch.bool), (2, 2))
    with pytest.raises(ValueError, match=r"label map \[1, 4, 4\] does not match logits \[1, 2, 8, 8\]"):
        head.loss(torch.randn(1, 2, 8, 8), torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"targets must be \[N, 2\] with N >= 1, got \[3, 1\]"):
        RegressionHead(8, 2).fit_stats(torch.zeros(3))
    with pytest.raises(ValueError, match=r"regression targets hold NaN or inf"):
        RegressionHead(8, 1).fit_stats(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match=r"head type must be one of classification, regression, segmentation; got 'mlp'"):
        build_head({"type": "mlp"})
    with pytest.raises(KeyError, match=r"head config of type 'regression' lacks key 'n_targets'"):
        build_head({"type": "regression", "dim": 8})


def test_task_errors():
    with pytest.raises(ValueError, match=r"task must be one of .*, got 'ranking'"):
        FinetuneTask(tiny(), cfg(), "ranking", 2)
    with pytest.raises(ValueError, match=r"layer_decay must be in \(0, 1\], got 2"):
        FinetuneTask(tiny(), cfg(), "classification", 2, layer_decay=2)
    with pytest.raises(ValueError, match=r"Linear lacks 'encode': fine-tuning needs the MAE model surface"):
        FinetuneTask(nn.Linear(2, 2), cfg(), "classification", 2)
    task = FinetuneTask(tiny(), cfg(), "segmentation", 2)
    assert task.label_key == "mask"
    with pytest.raises(KeyError, match=r"batch has no label key 'mask'; keys: \['label', 'x'\]"):
        task.training_step({"x": torch.randn(2, 3, 16, 16), "label": torch.zeros(2)}, 0)
    with pytest.raises(ValueError, match=r"FinetuneTask needs a train_dataset to build its dataloader"):
        task.train_dataloader()
    with pytest.raises(KeyError, match=r"samples have no label key 'target'; keys: \['label', 'multi', 'reg', 'x', 'x_reg'\]"):
        collect_targets(Stripes(4), "target")
    with pytest.raises(ValueError, match=r"info\['task'\] must be one of .*, got None"):
        save_finetuned(tiny(), ClassificationHead(64, 2), "unused", {})


def test_load_finetuned_errors(tmp_path: Path):
    with pytest.raises(DataError, match=r"expected a fine-tuned export with head.json and head.safetensors, found no head.json, head.safetensors"):
        load_finetuned(tmp_path)
    task = FinetuneTask(tiny(), cfg(), "classification", 2)
    export = task.export(tmp_path / "export")
    info = json.loads((export / "head.json").read_text())
    (export / "head.json").write_text("{not json")
    with pytest.raises(DataError, match=r"head.json: expected valid JSON, found a parse error"):
        load_finetuned(export)
    (export / "head.json").write_text(json.dumps({**info, "task": "ranking"}))
    with pytest.raises(DataError, match=r"expected keys 'task' \(one of .*\) and 'head', found keys"):
        load_finetuned(export)
    (export / "head.json").write_text(json.dumps({**info, "head": {**info["head"], "dim": 32}}))
    with pytest.raises(DataError, match=r"expected a head of width 64 \(the backbone's\), found width 32"):
        load_finetuned(export)
    (export / "head.json").write_text(json.dumps({**info, "head": {**info["head"], "n_classes": 5}}))
    with pytest.raises(DataError, match=r"head.safetensors: expected the weights of the head described in head.json"):
        load_finetuned(export)
    (export / "head.json").write_text(json.dumps({**info, "head": {"type": "mlp"}}))
    with pytest.raises(DataError, match=r"expected a valid head description, found head type must be one of"):
        load_finetuned(export)
