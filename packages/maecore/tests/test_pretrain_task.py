"""The pretraining engine: learning, logging, schedule, non-finite steps, safe checkpoint loading."""

from __future__ import annotations

import argparse
import csv
import pickle
import sys
from pathlib import Path

import pytest
import torch

from maecore.errors import ConfigError, UnsafeCheckpointError
from maecore.models import create_model, load_pretrained
from maecore.tasks import NonFiniteError, PretrainTask, TrainConfig, run_pretrain
from maecore.tasks.base import default_param_groups, warmup_cosine
from maecore.tasks.checkpoint import safe_torch_load

sys.path.insert(0, str(Path(__file__).parent / "scripts"))
from tiny_pretrain import Smooth  # noqa: E402


def _cfg(**kw) -> TrainConfig:
    base = dict(max_steps=40, batch_size=8, lr=2e-3, warmup_steps=4, ckpt_every=20, log_every=5, progress=False,
                accelerator="cpu")
    return TrainConfig(**{**base, **kw})


def _model():
    torch.manual_seed(0)
    return create_model("mae_vit_tiny", ndim=2, group_channels=[3], patch_size=4)


def _rows(path: str) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_loss_falls_and_run_folder_is_complete(tmp_path: Path):
    model = _model()
    summary = run_pretrain(model, Smooth(), tmp_path, _cfg())
    rows = [r for r in _rows(summary["metrics_csv"]) if r.get("train/loss")]
    losses = [float(r["train/loss"]) for r in rows]
    assert losses[-1] < 0.75 * losses[0], losses
    stds = [float(r["train/emb_std"]) for r in _rows(summary["metrics_csv"]) if r.get("train/emb_std")]
    assert stds and min(stds) > 1e-3  # no collapse
    assert summary["steps"] == 40 and summary["nonfinite_steps"] == 0
    loaded = load_pretrained(summary["export_dir"]).eval()
    batch = {"x": Smooth().x[:4]}
    assert torch.equal(loaded.encode(batch), model.eval().encode(batch))


def test_warmup_cosine_schedule_values():
    assert warmup_cosine(0, 10, 100, 0.0) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 100, 0.0) == pytest.approx(1.0)
    assert warmup_cosine(10, 10, 100, 0.0) == pytest.approx(1.0)
    assert warmup_cosine(55, 10, 100, 0.0) == pytest.approx(0.5)
    assert warmup_cosine(100, 10, 100, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(500, 10, 100, 0.1) == pytest.approx(0.1)


def test_optimizer_lr_follows_schedule():
    task = PretrainTask(_model(), _cfg(lr=1.0, warmup_steps=2, max_steps=4, min_lr_ratio=0.0))
    conf = task.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    seen = []
    for _ in range(4):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.5, 1.0, 1.0, 0.5])


def test_no_weight_decay_on_norms_biases_and_embeddings():
    model = _model()
    decay, plain = default_param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.ndim >= 2 for p in decay["params"])
    plain_names = {names[id(p)] for p in plain["params"]}
    assert "mask_token" in plain_names and "tokenizer.group_embed" in plain_names
    assert any(n.endswith("norm.weight") for n in plain_names) and any(n.endswith(".bias") for n in plain_names)
    assert plain["weight_decay"] == 0.0 and decay["weight_decay"] == 0.05


def test_train_config_errors():
    with pytest.raises(ConfigError, match=r"unknown train key\(s\) \['learning_rate'\]; valid keys: .*lr"):
        TrainConfig.from_dict({"learning_rate": 1})
    with pytest.raises(ValueError, match=r"train.lr must be > 0, got 0"):
        TrainConfig(lr=0)
    with pytest.raises(ValueError, match=r"train.strategy must be one of .*got 'horovod'"):
        TrainConfig(strategy="horovod")
    with pytest.raises(ValueError, match=r"train.devices must be an integer or 'auto', got 'two'"):
        TrainConfig(devices="two")
    assert TrainConfig(precision="auto").resolved_precision("cpu") == "32-true"
    assert TrainConfig(precision="auto").resolved_precision("cuda") == "bf16-mixed"


class Poisoned(Smooth):
    """Samples of the listed indices hold finite but huge values: their loss overflows to inf.

    (Non-finite inputs would not do: the tokenizer turns them into padding, by design.)"""

    def __init__(self, bad: set[int]) -> None:
        super().__init__(n=16)
        self.bad = bad

    def __getitem__(self, i: int) -> dict:
        item = super().__getitem__(i)
        if i in self.bad:
            item["x"] = torch.full_like(item["x"], 3e38)
        return item


def test_nonfinite_steps_are_skipped_and_counted(tmp_path: Path):
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # every sample is poisoned except a few: most steps are skipped, the run still completes
    summary = run_pretrain(model, Poisoned(bad={0}), tmp_path, _cfg(max_steps=8, batch_size=2, max_nonfinite=100))
    assert summary["nonfinite_steps"] >= 1
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_too_many_nonfinite_steps_stop_the_run_and_keep_the_checkpoint(tmp_path: Path):
    model = _model()
    bad = set(range(16))
    with pytest.raises(NonFiniteError, match=r"non-finite steps, more than train.max_nonfinite=2"):
        run_pretrain(model, Poisoned(bad=bad), tmp_path, _cfg(max_steps=8, batch_size=2, max_nonfinite=2))


class _Evil:
    def __reduce__(self):
        return (open, (str(MARKER), "w"))


MARKER = Path("/nonexistent")


def test_pickle_checkpoint_is_refused_and_does_not_execute(tmp_path: Path):
    global MARKER
    MARKER = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    with open(evil, "wb") as fh:
        pickle.dump({"state_dict": _Evil()}, fh)
    with pytest.raises(UnsafeCheckpointError, match=r"evil.ckpt: this checkpoint needs pickle to load"):
        safe_torch_load(evil)
    assert not MARKER.exists()


def test_allow_unsafe_loads_a_trusted_pickle(tmp_path: Path):
    plain = tmp_path / "plain.ckpt"
    torch.save({"step": 3, "obj": argparse.Namespace(a=1)}, plain)  # not on weights_only's allow-list
    with pytest.raises(UnsafeCheckpointError):
        safe_torch_load(plain)
    with pytest.warns(UserWarning, match=r"only do this for trusted files"):
        assert safe_torch_load(plain, allow_unsafe=True)["obj"].a == 1
