"""The pretraining engine: learning, logging, schedule, data order, non-finite steps, safe loading."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import pickle
import platform
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from maecore.errors import ConfigError, UnsafeCheckpointError
from maecore.models import create_model, load_pretrained
from maecore.tasks import NonFiniteError, PretrainTask, TrainConfig, memory, run_pretrain
from maecore.tasks import data as data_module
from maecore.tasks.base import adamw, default_param_groups, warmup_cosine
from maecore.tasks.checkpoint import safe_torch_load
from maecore.tasks.data import (
    PACK_ALIGN,
    SeededItems,
    StepLoader,
    StepSampler,
    collate_dict,
    collate_packed,
    make_loader,
)
from maecore.tasks.pretrain import NoProfiler, build_trainer, embedding_spread, visible_embedding

sys.path.insert(0, str(Path(__file__).parent / "scripts"))
from tiny_pretrain import Smooth  # noqa: E402


def _cfg(**kw) -> TrainConfig:
    base = dict(max_steps=30, batch_size=8, lr=2e-3, warmup_steps=4, ckpt_every=10, log_every=5, progress=False,
                accelerator="cpu")
    return TrainConfig(**{**base, **kw})


def _model() -> nn.Module:
    torch.manual_seed(0)
    return create_model("mae_vit_tiny", ndim=2, group_channels=[3], patch_size=4)


def _rows(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _column(path: str | Path, key: str) -> list[tuple[int, float]]:
    return [(int(r["step"]), float(r[key])) for r in _rows(path) if r.get(key)]


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()]).clone()


# ---------------------------------------------------------------------- learning and the run folder
def test_loss_falls_and_run_folder_is_complete(tmp_path: Path, capsys):
    model = _model()
    summary = run_pretrain(model, Smooth(), tmp_path, _cfg(), val_dataset=Smooth(n=16))
    losses = [v for _, v in _column(summary["metrics_csv"], "train/loss")]
    assert len(losses) == 6 and losses[-1] < 0.7 * losses[0], losses
    with torch.no_grad():  # it learned to use the visible patches: better than predicting zeros
        out = model.eval()({"x": Smooth().x[:32]}, generator=torch.Generator().manual_seed(0))
        zeros = (out.target**2).mean(-1)[out.mask].mean()
    assert out.loss < 0.85 * zeros, (out.loss, zeros)
    stds = [v for _, v in _column(summary["metrics_csv"], "train/emb_std")]
    assert len(stds) == 6 and min(stds) > 1e-3  # no collapse
    assert summary["metrics_csv"] == str(tmp_path / "metrics.csv")
    assert summary["steps"] == summary["steps_this_run"] == 30 and summary["nonfinite_steps"] == 0
    assert summary["final_loss"] == pytest.approx(losses[-1], rel=1e-6)  # step 29 is a logged step
    assert summary["samples_per_s"] > 0 and summary["last_checkpoint"] == str(tmp_path / "checkpoints/last.ckpt")
    val = [v for _, v in _column(summary["metrics_csv"], "val/loss")]
    assert len(val) == 3 and val[-1] < val[0] and summary["val_loss"] == pytest.approx(val[-1])
    assert "pretrain done: 30 steps" in capsys.readouterr().out
    loaded = load_pretrained(summary["export_dir"]).eval()
    batch = {"x": Smooth().x[:4]}
    assert torch.equal(loaded.encode(batch), model.eval().encode(batch))


def test_trainer_profiler_hands_back_one_null_context(tmp_path: Path):
    profiler = build_trainer(_cfg(), tmp_path, logger=False).profiler
    assert isinstance(profiler, NoProfiler)
    assert profiler.profile("[Callback]LastCheckpoint.on_train_batch_end") is profiler.profile("run_training_batch")
    with profiler.profile("outer"), profiler.profile("inner"):  # Lightning nests them
        pass


def test_lr_in_metrics_follows_warmup_and_cosine(tmp_path: Path):
    cfg = _cfg(max_steps=10, warmup_steps=3, log_every=1, lr=1e-3, min_lr_ratio=0.1)
    summary = run_pretrain(_model(), Smooth(n=16), tmp_path, cfg, logger=True)
    lrs = dict(_column(summary["metrics_csv"], "train/lr"))
    assert lrs[0] == pytest.approx(1e-3 / 3) and lrs[2] == pytest.approx(1e-3)  # first step, warm-up end
    assert lrs[9] == pytest.approx(1e-3 * warmup_cosine(9, 3, 10, 0.1))
    assert all(lrs[s] > lrs[s + 1] for s in range(3, 9))


def test_warmup_cosine_schedule_values():
    assert warmup_cosine(0, 10, 100, 0.0) == pytest.approx(0.1)  # step 0 already learns
    assert warmup_cosine(9, 10, 100, 0.0) == pytest.approx(1.0)  # warm-up end
    assert warmup_cosine(10, 10, 100, 0.0) == pytest.approx(1.0)
    assert warmup_cosine(55, 10, 100, 0.0) == pytest.approx(0.5)
    assert warmup_cosine(100, 10, 100, 0.1) == pytest.approx(0.1)  # min_lr_ratio * lr at max_steps
    assert warmup_cosine(500, 10, 100, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(0, 0, 100, 0.0) == pytest.approx(1.0)  # no warm-up


def test_optimizer_lr_follows_schedule():
    task = PretrainTask(_model(), _cfg(lr=1.0, warmup_steps=2, max_steps=4, min_lr_ratio=0.0))
    conf = task.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert conf["lr_scheduler"]["interval"] == "step"
    seen = []
    for _ in range(5):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.5, 1.0, 1.0, 0.5, 0.0])
    assert set(sched.state_dict()["lr_lambdas"]) == {None}  # nothing that needs pickle in a checkpoint


def test_no_weight_decay_on_norms_biases_and_embeddings():
    model = _model()
    decay, plain = default_param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.ndim >= 2 for p in decay["params"])
    plain_names = {names[id(p)] for p in plain["params"]}
    assert "mask_token" in plain_names and "tokenizer.group_embed" in plain_names
    assert any(n.endswith("norm.weight") for n in plain_names) and any(n.endswith(".bias") for n in plain_names)
    assert plain["weight_decay"] == 0.0 and decay["weight_decay"] == 0.05
    opt = PretrainTask(model, _cfg(weight_decay=0.05)).configure_optimizers()["optimizer"]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]


def test_adamw_skips_the_graph_capture_check_only_for_cpu_parameters(monkeypatch):
    """torch's per-step CUDA-graph check (an NVML library load a step once Lightning is imported,
    on a machine without a GPU) is skipped when every parameter is on the CPU, and still run
    otherwise; torch's own AdamW calls it (this would notice a rename in torch)."""
    calls = []
    monkeypatch.setattr(torch.optim.Optimizer, "_accelerator_graph_capture_health_check",
                        lambda self: calls.append(type(self).__name__))
    p = nn.Parameter(torch.ones(3))
    p.grad = torch.ones(3)
    opt = adamw([{"params": [p]}], lr=0.1)
    opt.step()
    assert calls == [] and p.detach().lt(1).all()
    torch.optim.AdamW([p], lr=0.1).step()
    assert calls == ["AdamW"]
    adamw([{"params": [nn.Parameter(torch.ones(3, device="meta"))]}], lr=0.1)._accelerator_graph_capture_health_check()
    assert calls == ["AdamW", "AdamW"]


# ---------------------------------------------------------------------- config
def test_train_config_errors():
    with pytest.raises(ConfigError, match=r"unknown train key\(s\) \['learning_rate'\]; valid keys: .*lr"):
        TrainConfig.from_dict({"learning_rate": 1})
    with pytest.raises(ValueError, match=r"train.lr must be > 0, got 0"):
        TrainConfig(lr=0)
    with pytest.raises(ValueError, match=r"train.max_steps must be an integer, got 'ten'"):
        TrainConfig(max_steps="ten")
    with pytest.raises(ValueError, match=r"train.strategy must be one of auto, ddp, .*got 'horovod'"):
        TrainConfig(strategy="horovod")
    with pytest.raises(ValueError, match=r"train.grad_clip=1.0 clips by the gradient norm, which .* cannot do under "
                                         r"train.strategy=fsdp .*set train.grad_clip=0 or use ddp"):
        TrainConfig(strategy="fsdp")
    assert TrainConfig(strategy="fsdp", grad_clip=0.0).strategy == "fsdp"
    with pytest.raises(ValueError, match=r"train.precision must be one of .*bf16-mixed.*got 'fp8'"):
        TrainConfig(precision="fp8")
    with pytest.raises(ValueError, match=r"train.devices must be an integer or 'auto', got 'two'"):
        TrainConfig(devices="two")
    with pytest.raises(ValueError, match=r"train.betas must be two numbers in \[0, 1\), got \(0.9, 1.5\)"):
        TrainConfig(betas=(0.9, 1.5))


def test_train_config_round_trip_and_precision():
    cfg = TrainConfig.from_dict({"lr": "1e-3", "max_steps": 7, "betas": [0.9, 0.99], "devices": "2"})
    assert (cfg.lr, cfg.betas, cfg.devices) == (1e-3, (0.9, 0.99), 2)  # YAML reads 1e-3 as a string
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert TrainConfig(precision="auto").resolved_precision("cpu") == "32-true"
    assert TrainConfig(precision="16-mixed").resolved_precision("cpu") == "16-mixed"
    if not torch.cuda.is_available():
        assert TrainConfig(precision="auto").resolved_precision("cuda") == "bf16-mixed"


# ---------------------------------------------------------------------- data order
def test_step_sampler_batches_depend_on_seed_and_step_only():
    full = StepSampler(10, 4, seed=3, n_batches=6)
    batches = list(full)
    assert list(StepSampler(10, 4, seed=3, start_step=4, n_batches=6)) == batches[4:]
    assert [full.batch(k) for k in range(6)] == batches
    assert sorted(batches[0] + batches[1] + batches[2][:2]) == list(range(10))  # one pass = a permutation
    assert batches != list(StepSampler(10, 4, seed=4, n_batches=6))
    assert len(full) == 6 and full.item_seeds(1) != full.item_seeds(2)


def test_step_sampler_ranks_take_disjoint_slices_of_each_global_batch():
    ranks = [list(StepSampler(12, 3, seed=0, n_batches=4, rank=r, world_size=2)) for r in (0, 1)]
    single = list(StepSampler(12, 6, seed=0, n_batches=4))
    for k in range(4):
        assert not set(ranks[0][k]) & set(ranks[1][k])
        assert ranks[0][k] + ranks[1][k] == single[k]  # the same global batch, split
    with pytest.raises(ValueError, match=r"rank must be in \[0, world_size=2\), got 2"):
        StepSampler(12, 3, rank=2, world_size=2)
    with pytest.raises(ValueError, match=r"n_items must be >= 1 \(the dataset is empty\), got 0"):
        StepSampler(0, 3)


def test_augmentation_is_a_function_of_the_position_and_caller_rng_is_untouched():
    ds = SeededItems(Smooth(n=8, augment=True))
    torch.manual_seed(1)
    expected_next = torch.rand(3)
    torch.manual_seed(1)
    a = ds[(2, 1234)]["x"]
    assert torch.equal(torch.rand(3), expected_next)  # loading did not consume the caller's stream
    assert torch.equal(ds[(2, 1234)]["x"], a) and not torch.equal(ds[(2, 99)]["x"], a)


def test_step_loader_state_is_the_next_batch():
    loader = make_loader(Smooth(n=8), _cfg(batch_size=2), n_batches=6)
    assert isinstance(loader, StepLoader) and loader.state_dict() == {"next_batch": 0}
    it = iter(loader)
    first = [next(it)["index"] for _ in range(3)]
    assert loader.state_dict() == {"next_batch": 3}
    resumed = make_loader(Smooth(n=8), _cfg(batch_size=2), n_batches=6)
    resumed.load_state_dict({"next_batch": 2})
    assert next(iter(resumed))["index"] == first[2]


def test_collate_dict_stacks_tensors_and_keeps_metadata():
    samples = [{"x": torch.full((2, 3), float(i)), "name": f"s{i}", "pts": torch.zeros(i + 1)} for i in range(3)]
    batch = collate_dict(samples)
    assert batch["x"].shape == (3, 2, 3) and batch["x"][2, 0, 0] == 2
    assert batch["name"] == ["s0", "s1", "s2"] and [t.shape[0] for t in batch["pts"]] == [1, 2, 3]
    with pytest.raises(ValueError, match=r"sample 1 has keys \['x'\], but sample 0 has \['name', 'pts', 'x'\]"):
        collate_dict([samples[0], {"x": torch.zeros(2, 3)}])
    with pytest.raises(ValueError, match="cannot collate an empty list"):
        collate_dict([])



def _same_batch(a: dict, b: dict) -> bool:
    def same(x, y):
        if isinstance(x, torch.Tensor):
            return isinstance(y, torch.Tensor) and x.dtype == y.dtype and torch.equal(x, y)
        if isinstance(x, list):
            return isinstance(y, list) and len(x) == len(y) and all(same(u, v) for u, v in zip(x, y))
        return x == y

    return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)


def test_collate_packed_is_collate_dict_in_one_buffer():
    samples = [{"x": torch.randn(2, 3), "valid": torch.tensor([True, i > 0]), "label": torch.tensor(i),
                "pts": torch.randn(i + 1, 3).double(), "name": f"s{i}", "spacing": [1.0, 2.0]} for i in range(3)]
    packed = collate_packed(samples)
    assert _same_batch(packed.unpack(), collate_dict(samples))
    # one storage holds every tensor, each at an aligned offset; a pickle round trip rebuilds the views
    assert len({t.untyped_storage().data_ptr() for t in [packed.unpack()["x"], *packed.unpack()["pts"]]}) == 1
    assert all(offset % PACK_ALIGN == 0 for _, _, offset in packed.slots)
    assert _same_batch(pickle.loads(pickle.dumps(packed)).unpack(), collate_dict(samples))
    assert packed.inline is not None and len(pickle.dumps(packed)) > packed.buffer.numel()  # sent by value
    empty = collate_packed([{"name": "a"}, {"name": "b"}])
    assert pickle.loads(pickle.dumps(empty)).unpack() == {"name": ["a", "b"]}


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64, torch.bool, torch.bfloat16, torch.complex64])
@pytest.mark.parametrize("numel", [10, 3 * 2**20])  # under and over the 4 MiB of HUGEPAGE_MIN (most dtypes)
def test_stack_large_equals_torch_stack(dtype: torch.dtype, numel: int):
    g = torch.Generator().manual_seed(0)
    parts = [(torch.randn(numel, generator=g) * 10).to(dtype) for _ in range(2)]
    before = parts[0].clone()
    out = data_module.stack_large(parts)
    assert out.dtype == dtype and out.shape == (2, numel) and torch.equal(out, torch.stack(parts))
    out.zero_()  # writable, and a copy: the samples keep their values
    assert torch.equal(parts[0], before)


@pytest.mark.parametrize("inline_max", [data_module.INLINE_MAX, 0])
def test_loader_workers_hand_over_the_same_batches_as_the_main_process(monkeypatch, inline_max: int):
    """Whichever way a worker sends a batch (by value, or in shared memory past ``INLINE_MAX``)."""
    monkeypatch.setattr(data_module, "INLINE_MAX", inline_max)  # forked workers inherit it
    ds = Smooth(n=12, augment=True)
    main = list(make_loader(ds, _cfg(batch_size=4), n_batches=5))
    workers = list(make_loader(ds, _cfg(batch_size=4, num_workers=2), n_batches=5))
    assert all(_same_batch(a, b) for a, b in zip(main, workers, strict=True))
    assert isinstance(workers[0]["x"], torch.Tensor) and workers[0]["x"].shape == (4, 3, 16, 16)
    assert workers[0]["x"].is_shared() == (inline_max == 0)  # the path the worker took


# ---------------------------------------------------------------------- resume in process
class StopAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def test_stopped_and_resumed_in_process_equals_uninterrupted(tmp_path: Path):
    cfg = _cfg(max_steps=8, batch_size=4, accumulate=2, ckpt_every=3, log_every=2)
    whole = _model()
    run_pretrain(whole, Smooth(n=16, augment=True), tmp_path / "whole", cfg)
    part = _model()
    first = run_pretrain(part, Smooth(n=16, augment=True), tmp_path / "part", cfg, callbacks=[StopAt(5)])
    assert first["steps"] == 5  # the end-of-training checkpoint holds step 5 (not a multiple of 3)
    resumed = _model()
    summary = run_pretrain(resumed, Smooth(n=16, augment=True), tmp_path / "part", cfg, resume="auto")
    assert summary["steps"] == 8 and summary["steps_this_run"] == 3
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()))
    with pytest.warns(UserWarning, match=r"resuming with changed train settings \['lr'\]"):
        run_pretrain(_model(), Smooth(n=16), tmp_path / "part", dataclasses.replace(cfg, lr=1e-2), resume="auto")


# ---------------------------------------------------------------------- non-finite steps
class NaNAt(nn.Module):
    """A model whose loss is NaN on the listed forward calls (one call per micro-batch)."""

    def __init__(self, model: nn.Module, bad: set[int] | None = None, from_call: int | None = None) -> None:
        super().__init__()
        self.model, self.bad, self.from_call, self.calls = model, bad or set(), from_call, 0

    def forward(self, batch, generator=None):
        out = self.model(batch, generator=generator)
        i, self.calls = self.calls, self.calls + 1
        if i in self.bad or (self.from_call is not None and i >= self.from_call):
            out = dataclasses.replace(out, loss=out.loss * math.nan)
        return out

    def encode(self, batch):
        return self.model.encode(batch)

    def save_pretrained(self, directory):
        return self.model.save_pretrained(directory)


class Snapshots(Callback):
    def __init__(self, model: nn.Module) -> None:
        self.model, self.after = model, [_flat(model)]

    def on_train_batch_end(self, *args) -> None:
        self.after.append(_flat(self.model))


def test_nonfinite_steps_are_skipped_and_counted(tmp_path: Path):
    model = NaNAt(_model(), bad={2, 5})
    snaps = Snapshots(model)
    summary = run_pretrain(model, Smooth(n=16), tmp_path, _cfg(max_steps=8, batch_size=4, log_every=1),
                           callbacks=[snaps])
    assert summary["nonfinite_steps"] == 2 and summary["steps"] == 8
    moved = [not torch.equal(a, b) for a, b in zip(snaps.after, snaps.after[1:])]
    assert moved == [True, True, False, True, True, False, True, True]  # no update on steps 2 and 5
    assert torch.isfinite(snaps.after[-1]).all()
    counts = dict(_column(summary["metrics_csv"], "train/nonfinite_steps"))
    assert counts == {2: 1, 3: 1, 4: 1, 5: 2, 6: 2, 7: 2}  # a running count, first written at step 2
    losses = dict(_column(summary["metrics_csv"], "train/loss"))
    assert [s for s, v in losses.items() if math.isnan(v)] == [2, 5]  # the skipped steps' losses, as they were


def test_too_many_nonfinite_steps_stop_the_run_and_keep_the_checkpoint(tmp_path: Path):
    model = NaNAt(_model(), from_call=4)  # steps 4, 5, 6, ... are non-finite
    cfg = _cfg(max_steps=12, batch_size=4, ckpt_every=2, max_nonfinite=2)
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    with pytest.raises(NonFiniteError, match=rf"3 non-finite steps, more than train.max_nonfinite=2; stopped at "
                                             rf"step 6; last good checkpoint is {re.escape(str(ckpt))} \(step 6\)"):
        run_pretrain(model, Smooth(n=16), tmp_path, cfg)
    saved = safe_torch_load(ckpt)
    assert saved["global_step"] == 6 and saved["maecore"]["nonfinite_steps"] == 2
    weights = {f"model.{k}": v for k, v in model.state_dict().items()}
    assert all(torch.equal(saved["state_dict"][k], v) for k, v in weights.items())  # the last good weights
    assert not any(ckpt.parent.glob(".last.ckpt.*"))


def test_clipping_by_the_engine_norm_matches_lightning_and_clips(tmp_path: Path, monkeypatch):
    # a clip far below the gradient norm: Adam's epsilon then sees the scale, so clipping shows in the weights
    cfg = _cfg(max_steps=6, grad_clip=1e-7, log_every=2)
    ours = _model()
    run_pretrain(ours, Smooth(n=16), tmp_path / "ours", cfg, logger=False)
    unclipped = _model()
    run_pretrain(unclipped, Smooth(n=16), tmp_path / "off", dataclasses.replace(cfg, grad_clip=0.0), logger=False)
    monkeypatch.setattr(PretrainTask, "configure_gradient_clipping", L.LightningModule.configure_gradient_clipping)
    lightning = _model()
    run_pretrain(lightning, Smooth(n=16), tmp_path / "lightning", cfg, logger=False)
    assert torch.allclose(_flat(ours), _flat(lightning), rtol=1e-5, atol=1e-7)
    assert not torch.allclose(_flat(ours), _flat(unclipped), rtol=1e-3, atol=1e-5)


def test_clipping_is_skipped_under_the_limit_and_equals_lightnings(tmp_path: Path, monkeypatch):
    """A limit above every gradient norm: no clipping pass at all, and the weights are bit for bit
    those of an unclipped run and of Lightning's clipping (which multiplies by 1.0)."""
    calls = []
    clip = torch.nn.utils.clip_grads_with_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grads_with_norm_", lambda *a, **k: calls.append(1) or clip(*a, **k))
    cfg = _cfg(max_steps=6, grad_clip=1e6, log_every=2)
    ours = _model()
    run_pretrain(ours, Smooth(n=16), tmp_path / "ours", cfg, logger=False)
    assert calls == []
    unclipped = _model()
    run_pretrain(unclipped, Smooth(n=16), tmp_path / "off", dataclasses.replace(cfg, grad_clip=0.0), logger=False)
    monkeypatch.setattr(PretrainTask, "configure_gradient_clipping", L.LightningModule.configure_gradient_clipping)
    lightning = _model()
    run_pretrain(lightning, Smooth(n=16), tmp_path / "lightning", cfg, logger=False)
    assert torch.equal(_flat(ours), _flat(unclipped)) and torch.equal(_flat(ours), _flat(lightning))


class _GradsAtBatchStart(Callback):
    """Whether any parameter holds a gradient when each micro-batch starts."""

    def __init__(self) -> None:
        self.seen: list[bool] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.append(any(p.grad is not None for p in pl_module.parameters()))


@pytest.mark.parametrize("accumulate", [1, 2])
def test_gradients_freed_after_the_step_train_the_same(tmp_path: Path, monkeypatch, accumulate):
    cfg = _cfg(max_steps=4, accumulate=accumulate, batch_size=4, log_every=2)
    monkeypatch.setattr(PretrainTask, "free_grads_after_step", lambda self: False)  # CPU, malloc as it is
    late_model, late = _model(), _GradsAtBatchStart()
    run_pretrain(late_model, Smooth(n=16), tmp_path / "late", cfg, callbacks=[late], logger=False)
    # Lightning's order: they live until Lightning zeroes them, after the next step's forward
    assert late.seen[accumulate:] == [True] * (len(late.seen) - accumulate)
    monkeypatch.setattr(PretrainTask, "free_grads_after_step", lambda self: True)  # a GPU, or malloc keeping
    early, probe = _model(), _GradsAtBatchStart()
    run_pretrain(early, Smooth(n=16), tmp_path / "early", cfg, callbacks=[probe], logger=False)
    # none left over from the last step; inside an accumulation window they build up
    assert probe.seen == [micro > 0 for _ in range(4) for micro in range(accumulate)]
    assert torch.equal(_flat(late_model), _flat(early))


@pytest.mark.parametrize("kept", [False, True])
def test_on_the_cpu_gradients_are_freed_early_only_when_malloc_keeps_freed_memory(monkeypatch, kept):
    monkeypatch.setattr(memory, "_kept", kept)
    assert PretrainTask(_model(), _cfg()).free_grads_after_step() is kept


@pytest.mark.parametrize("mode", ["keep", "system"])
def test_pretraining_on_the_cpu_sets_malloc_as_the_environment_says(tmp_path: Path, monkeypatch, mode):
    monkeypatch.setattr(memory, "_kept", False)
    monkeypatch.setenv(memory.ENV, mode)
    run_pretrain(_model(), Smooth(n=8), tmp_path / "run", _cfg(max_steps=1), logger=False)
    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert memory.freed_memory_kept() is (mode == "keep" and glibc)


def test_embedding_spread_is_zero_for_a_collapsed_encoder():
    assert embedding_spread(torch.ones(5, 3) * 0.7).item() == 0.0
    emb = torch.tensor([[0.0, 1.0], [2.0, 1.0]])
    assert embedding_spread(emb).item() == pytest.approx((math.sqrt(2.0) + 0.0) / 2)


def test_visible_embedding_pools_the_visible_slots_of_the_latent():
    latent = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]], [[5.0, 6.0], [7.0, 8.0], [0.0, 0.0]]])
    pad = torch.tensor([[False, False, True], [False, True, True]])
    out = SimpleNamespace(latent=latent, latent_pad=pad)
    assert torch.equal(visible_embedding(out), torch.tensor([[2.0, 3.0], [5.0, 6.0]]))
    assert visible_embedding(SimpleNamespace(latent=latent, latent_pad=None)) is None
    none_visible = pad.clone()
    none_visible[1] = True  # a sample without a visible token: no pooled embedding for the batch
    assert visible_embedding(SimpleNamespace(latent=latent, latent_pad=none_visible)) is None


class _NoLatentPad(nn.Module):
    """The tiny MAE with its output's ``latent_pad`` dropped, as a model that does not give it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch, generator=None):  # noqa: ANN001
        return dataclasses.replace(self.model(batch, generator=generator), latent_pad=None)

    def encode(self, batch):  # noqa: ANN001
        return self.model.encode(batch)


@pytest.mark.parametrize("pooled", [True, False])
def test_emb_std_pools_the_training_latent_and_encodes_only_without_one(tmp_path: Path, monkeypatch, pooled):
    model = _model() if pooled else _NoLatentPad(_model())
    calls = []
    encode = model.encode
    monkeypatch.setattr(model, "encode", lambda batch: calls.append(1) or encode(batch))
    summary = run_pretrain(model, Smooth(n=16), tmp_path, _cfg(max_steps=10))
    stds = [v for _, v in _column(summary["metrics_csv"], "train/emb_std")]
    assert len(stds) == 2 and min(stds) > 1e-3
    assert len(calls) == (0 if pooled else 2)  # one extra encode per log step, only without latent_pad


# ---------------------------------------------------------------------- safe loading
class _Evil:
    def __reduce__(self):
        return (open, (str(MARKER), "w"))


MARKER = Path("/nonexistent")


def test_pickle_checkpoint_is_refused_and_does_not_execute(tmp_path: Path):
    global MARKER
    MARKER = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    with open(evil, "wb") as fh:
        pickle.dump({"state_dict": _Evil()}, fh, protocol=2)
    with pytest.raises(UnsafeCheckpointError, match=r"evil.ckpt: this checkpoint needs pickle to load.*allow_unsafe=True"):
        safe_torch_load(evil)
    assert not MARKER.exists()


def test_allow_unsafe_loads_a_trusted_pickle(tmp_path: Path):
    plain = tmp_path / "plain.ckpt"
    torch.save({"step": 3, "obj": argparse.Namespace(a=1)}, plain)  # not on weights_only's allow-list
    with pytest.raises(UnsafeCheckpointError, match=r"plain.ckpt: this checkpoint needs pickle"):
        safe_torch_load(plain)
    with pytest.warns(UserWarning, match=r"only do this for trusted files"):
        assert safe_torch_load(plain, allow_unsafe=True)["obj"].a == 1


# ---------------------------------------------------------------------- torch.compile option
def test_compile_runs_the_blocks_compiled_and_matches_eager(tmp_path: Path):
    """``train.compile``: every transformer block compiled in place (state-dict names unchanged), and the
    run follows the eager one (same data, masks and optimizer; only the kernels differ)."""
    pytest.importorskip("torch._inductor")
    runs = {}
    for flag in (False, True):
        model = _model()
        summary = run_pretrain(model, Smooth(), tmp_path / str(flag), _cfg(max_steps=4, log_every=1, compile=flag),
                               logger=True)
        runs[flag] = (model, [v for _, v in _column(summary["metrics_csv"], "train/loss")])
    compiled = runs[True][0]
    blocks = [*compiled.encoder.blocks, *compiled.decoder.blocks]
    assert all(b._compiled_call_impl is not None for b in blocks)
    assert all(b._compiled_call_impl is None for b in runs[False][0].encoder.blocks)
    assert runs[True][0].state_dict().keys() == runs[False][0].state_dict().keys()
    assert runs[True][1] == pytest.approx(runs[False][1], rel=1e-3), runs


def test_compile_must_be_a_boolean():
    with pytest.raises(ValueError, match=r"train.compile must be true or false, got 'yes'"):
        _cfg(compile="yes")
