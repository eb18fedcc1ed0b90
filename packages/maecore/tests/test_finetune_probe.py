"""Fine-tuning heads, layer-wise LR decay, fine-tuned export, and probes on frozen embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from maecore.errors import DataError
from maecore.models import create_model
from maecore.tasks import TrainConfig
from maecore.tasks.data import collate_dict
from maecore.tasks.finetune import FinetuneTask, load_finetuned, run_finetune
from maecore.tasks.heads import SegmentationHead, layer_decay_groups, make_head
from maecore.tasks.probe import compare_to_random, knn_probe, linear_probe


class Stripes(Dataset):
    """Class 0: horizontal stripes, class 1: vertical stripes, random phase and noise."""

    def __init__(self, n: int = 64, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.y = torch.arange(n) % 2
        phase = torch.rand(n, generator=g) * 6.28
        t = torch.arange(16.0)
        wave = torch.sin(t[None] * 1.2 + phase[:, None])  # [n, 16]
        horiz = wave[:, :, None].expand(n, 16, 16)
        x = torch.where(self.y[:, None, None] == 0, horiz, horiz.transpose(1, 2))
        self.x = (x[:, None].expand(n, 3, 16, 16) + 0.3 * torch.randn(n, 3, 16, 16, generator=g)).contiguous()

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        x = self.x[i]
        seg = (x[0] > 0).long()  # per-pixel target for the segmentation test
        multi = torch.stack([self.y[i] == 0, self.y[i] == 1, x.mean() > 0]).float()
        return {"x": x, "label": self.y[i], "seg": seg, "multi": multi, "reg": x[0, 0, :1]}


def _model():
    torch.manual_seed(0)
    return create_model("mae_vit_tiny", ndim=2, group_channels=[3], patch_size=4)


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{**dict(max_steps=30, batch_size=16, lr=3e-3, warmup_steps=3, progress=False,
                                accelerator="cpu", log_every=5, ckpt_every=100), **kw})


def test_classification_finetune_learns_and_exports(tmp_path: Path):
    summary = run_finetune(_model(), Stripes(64), Stripes(32, seed=1), tmp_path, _cfg(), "classification", 2)
    assert summary["val/acc"] > 0.9, summary
    ft = load_finetuned(summary["export_dir"])
    batch = collate_dict([Stripes(32, seed=1)[i] for i in range(8)])
    logits = ft(batch)
    assert logits.shape == (8, 2)
    assert (logits.argmax(1) == batch["label"]).float().mean() > 0.8
    assert torch.equal(ft(batch), load_finetuned(summary["export_dir"])(batch))


@pytest.mark.parametrize(
    ("task", "key", "n", "metric"),
    [("multilabel", "multi", 3, "val/auroc"), ("regression", "reg", 1, "val/rmse"), ("segmentation", "seg", 2, "val/miou")],
)
def test_other_tasks_train_and_report_their_metric(tmp_path: Path, task, key, n, metric):
    summary = run_finetune(_model(), Stripes(32), Stripes(16, seed=1), tmp_path, _cfg(max_steps=10), task, n,
                           label_key=key)
    assert np.isfinite(summary[metric])
    if task == "segmentation":
        assert summary[metric] > 0.5


def test_segmentation_head_shapes_and_group_averaging():
    for grid, patch in [((6,), (4,)), ((3, 2), (4, 4)), ((2, 2, 2), (2, 2, 2))]:
        head = SegmentationHead(8, 3, patch)
        n = int(np.prod(grid))
        emb = torch.randn(2, 2 * n, 8)
        pad = torch.zeros(2, 2 * n, dtype=torch.bool)
        out = head(emb, pad, grid)
        assert out.shape == (2, 3, *(g * p for g, p in zip(grid, patch)))
        # a padded group does not contribute: changing its embeddings leaves the output unchanged
        pad[:, n:] = True
        changed = emb.clone()
        changed[:, n:] += 10
        assert torch.allclose(head(emb, pad, grid), head(changed, pad, grid))


def test_layer_decay_scales_are_exact():
    model = _model()
    head = make_head("classification", 64, 2)
    groups = layer_decay_groups(model, head, 0.05, 0.5)
    scale = {g["layer"]: g["lr_scale"] for g in groups}
    assert scale == {0: 0.125, 1: 0.25, 2: 0.5, 3: 1.0}  # 2 blocks: embeddings, block0, block1, head
    names = {id(p): n for n, p in model.named_parameters()}
    flat = [names.get(id(p), "head") for g in groups for p in g["params"]]
    assert not any(n.startswith("decoder") for n in flat)
    with pytest.raises(ValueError, match=r"layer_decay must be in \(0, 1\], got 1.5"):
        layer_decay_groups(model, head, 0.05, 1.5)


def test_freeze_encoder_trains_only_the_head():
    task = FinetuneTask(_model(), _cfg(), "classification", 2, freeze_encoder=True)
    trainable = [n for n, p in task.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("head.") for n in trainable)


def test_head_and_task_errors(tmp_path: Path):
    with pytest.raises(ValueError, match=r"task must be one of .*got 'detection'"):
        make_head("detection", 8, 2)
    with pytest.raises(ValueError, match=r"n_classes must be >= 1, got 0"):
        make_head("classification", 8, 0)
    with pytest.raises(DataError, match=r"expected a fine-tuned export with head.json and head.safetensors"):
        load_finetuned(tmp_path)


def test_probes_separate_and_fall_to_chance_on_shuffled_labels():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 20)
    x = rng.normal(size=(60, 8)) + 4 * np.eye(3, 8)[y]
    assert linear_probe(x, y)["accuracy"] > 0.95
    assert knn_probe(x, y)["accuracy"] > 0.95
    shuffled = rng.permutation(y)
    assert linear_probe(x, shuffled)["accuracy"] < 0.6


def test_leave_one_group_out_never_mixes_a_group():
    # each "object" has its own offset; a probe that memorises objects fails when they are held out
    y = np.array([0, 0, 1, 1] * 5)
    groups = np.repeat(np.arange(5), 4)
    x = np.stack([np.r_[groups[i] * 10.0, y[i] * 0.0] for i in range(20)]) + 0.01
    res = knn_probe(x, y, k=1, groups=groups)
    assert res["n"] == 20 and res["accuracy"] <= 0.6


def test_probe_errors():
    x = np.zeros((4, 2))
    with pytest.raises(ValueError, match=r"4 embeddings but 3 labels"):
        linear_probe(x, [0, 1, 0])
    with pytest.raises(ValueError, match=r"a probe needs at least 2 classes, got \[1\]"):
        linear_probe(x, [1, 1, 1, 1])
    with pytest.raises(ValueError, match=r"every class needs at least 2 samples for cross-validation"):
        linear_probe(np.random.default_rng(0).normal(size=(4, 2)), [0, 0, 0, 1])
    with pytest.raises(ValueError, match=r"groups has 2 entries for 4 samples"):
        knn_probe(np.random.default_rng(0).normal(size=(4, 2)), [0, 1, 0, 1], groups=[0, 1])


def test_compare_to_random_builds_the_same_config():
    model = _model()
    ds = Stripes(24)
    loader = DataLoader(ds, batch_size=8, collate_fn=collate_dict)
    res = compare_to_random(model, loader, ds.y.numpy(), seed=3)
    assert set(res) == {"pretrained", "random_init"}
    assert 0 <= res["random_init"]["linear"]["accuracy"] <= 1 and res["pretrained"]["emb_std"] > 0
