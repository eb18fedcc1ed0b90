"""Fine-tuning a pretrained encoder with a task head, and the fine-tuned export.

Tasks: ``classification`` (cross-entropy; accuracy, macro F1), ``multilabel`` (BCE-with-logits;
macro AUROC as on PTB-XL, macro F1), ``regression`` (MSE on standardised targets; MAE, RMSE, R^2)
and ``segmentation`` (per-pixel/voxel cross-entropy with ``ignore_index``; mIoU). The MAE decoder
is not used and not trained; the encoder gets layer-wise learning-rate decay
(:func:`maecore.tasks.heads.layer_decay_groups`) or is frozen (``freeze_encoder``: a linear probe
trained by SGD).

Export layout (``RUN/export``), loadable offline by :func:`load_finetuned`::

    model.safetensors + config.json   the backbone, as written by its ``save_pretrained``
    head.safetensors + head.json      the head's weights (and buffers) and what rebuilds it
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from safetensors.torch import load_model, save_model
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from maecore.atomic import atomic_path, atomic_write_text
from maecore.errors import DataError
from maecore.models.pretrained import load_pretrained
from maecore.tasks.base import BaseTask
from maecore.tasks.checkpoint import find_resume_checkpoint
from maecore.tasks.config import TrainConfig
from maecore.tasks.data import StepSampler, collate_dict, make_loader
from maecore.tasks.heads import (
    TASKS,
    RegressionHead,
    build_head,
    embed_dim_of,
    is_decoder_param,
    layer_decay_groups,
    make_head,
    predict,
)
from maecore.tasks.pretrain import build_trainer

log = logging.getLogger(__name__)
HEAD_WEIGHTS, HEAD_CONFIG = "head.safetensors", "head.json"
HEAD_FORMAT_VERSION = 1


def default_label_key(task: str) -> str:
    """``"mask"`` for segmentation, ``"label"`` otherwise."""
    return "mask" if task == "segmentation" else "label"


def build_metrics(task: str, n_classes: int, ignore_index: int = -100) -> dict[str, nn.Module]:
    """torchmetrics objects of ``task`` by short name (empty when torchmetrics is missing)."""
    try:
        import torchmetrics as tm
    except ImportError:  # Lightning depends on it, so this is rare
        warnings.warn("torchmetrics is not installed: only losses are logged", stacklevel=2)
        return {}
    k = n_classes
    if task == "classification":
        return {"acc": tm.Accuracy("multiclass", num_classes=k),
                "f1": tm.F1Score("multiclass", num_classes=k, average="macro")}
    if task == "multilabel":
        return {"auroc": tm.AUROC("multilabel", num_labels=k, average="macro"),
                "f1": tm.F1Score("multilabel", num_labels=k, average="macro")}
    if task == "regression":
        return {"mae": tm.MeanAbsoluteError(), "rmse": tm.MeanSquaredError(squared=False), "r2": tm.R2Score()}
    return {"miou": tm.JaccardIndex("multiclass", num_classes=k, ignore_index=ignore_index, average="macro"),
            "pixel_acc": tm.Accuracy("multiclass", num_classes=k, ignore_index=ignore_index)}


def metric_inputs(task: str, out: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """``(preds, target)`` in the form the task's metrics take."""
    out = out.detach().float()
    if task == "multilabel":
        return out.sigmoid(), y.long().reshape(out.shape)
    if task == "regression":
        y = y.float().reshape(out.shape)
        return (out[:, 0], y[:, 0]) if out.shape[1] == 1 else (out, y)
    return out, (y.long().reshape(-1) if task == "classification" else y.long())


def collect_targets(dataset: Dataset, key: str, max_samples: int = 1024) -> Tensor:
    """Targets ``[N, ...]`` of up to ``max_samples`` evenly spaced samples of ``dataset``."""
    n = len(dataset)  # type: ignore[arg-type]
    if n < 1:
        raise ValueError("the training dataset is empty")
    idx = torch.linspace(0, n - 1, min(n, max_samples)).round().long().unique().tolist()
    first = dataset[idx[0]]
    if key not in first:
        raise KeyError(f"samples have no label key {key!r}; keys: {sorted(first)}")
    return torch.stack([torch.as_tensor(dataset[i][key]) for i in idx])


class FinetuneTask(BaseTask):
    """Pretrained encoder + task head, trained with AdamW, warm-up cosine and layer-wise LR decay.

    Batches carry the target under ``label_key`` (default ``"label"``, ``"mask"`` for
    segmentation): class ids ``[B]`` (classification), multi-hot ``[B, K]`` (multilabel), values
    ``[B]`` or ``[B, K]`` (regression), a label map ``[B, *S]`` with ``ignore_index`` where
    unlabelled (segmentation). ``n_classes`` is the number of targets for regression. ``groups``
    restricts the encoder to a subset of input groups (modalities, leads, band groups).
    Regression targets are standardised with statistics of ``train_dataset`` (up to 1024 evenly
    spaced samples, see :class:`~maecore.tasks.heads.RegressionHead`).

    The given model is trained in place; its decoder parameters (and with ``freeze_encoder`` all
    its parameters) are set to ``requires_grad=False``.
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        task: str,
        n_classes: int,
        layer_decay: float = 0.75,
        freeze_encoder: bool = False,
        label_key: str | None = None,
        ignore_index: int = -100,
        groups: Sequence[Any] | None = None,
        train_dataset: Dataset | None = None,
        val_dataset: Dataset | None = None,
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if not 0 < layer_decay <= 1:
            raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
        for attr in ("encode", "encode_tokens", "tokenizer"):
            if not hasattr(model, attr):
                raise ValueError(f"{type(model).__name__} lacks {attr!r}: fine-tuning needs the MAE model surface")
        self.task, self.n_classes, self.layer_decay = task, int(n_classes), float(layer_decay)
        self.freeze_encoder, self.ignore_index = bool(freeze_encoder), int(ignore_index)
        self.label_key = label_key or default_label_key(task)
        self.groups = list(groups) if groups is not None else None
        self.__dict__["_pending_model"] = model  # read by configure_models inside BaseTask.__init__
        super().__init__(cfg)
        self.train_dataset, self.val_dataset = train_dataset, val_dataset

    # hooks -------------------------------------------------------------------
    def configure_models(self) -> None:
        self.model = self.__dict__.pop("_pending_model")
        tok = self.model.tokenizer
        self.head = make_head(self.task, embed_dim_of(self.model), self.n_classes,
                              getattr(tok, "patch", None), getattr(tok, "ndim", None), self.ignore_index)
        for name, p in self.model.named_parameters():  # the decoder is not trained (and DDP must not wait for it)
            if self.freeze_encoder or is_decoder_param(name):
                p.requires_grad_(False)

    def configure_metrics(self) -> None:
        metrics = build_metrics(self.task, self.n_classes, self.ignore_index)
        self.train_metrics = nn.ModuleDict(metrics)
        self.val_metrics = nn.ModuleDict({k: m.clone() for k, m in metrics.items()})

    def param_groups(self) -> list[dict[str, Any]]:
        return layer_decay_groups(self.model, self.cfg.lr, self.cfg.weight_decay, self.layer_decay, head=self.head)

    def setup(self, stage: str) -> None:
        head = self.head
        if isinstance(head, RegressionHead) and not bool(head.stats_fitted) and stage == "fit":
            if self.train_dataset is None:
                log.warning("regression head: no train_dataset to standardise targets with; using mean 0, std 1")
            else:
                head.fit_stats(collect_targets(self.train_dataset, self.label_key).float())

    # steps -------------------------------------------------------------------
    def forward(self, batch: dict[str, Any]) -> Tensor:
        return predict(self.model, self.head, batch, self.groups)

    def _step(self, batch: dict[str, Any], metrics: nn.ModuleDict, stage: str) -> Tensor:
        if self.label_key not in batch:
            raise KeyError(f"batch has no label key {self.label_key!r}; keys: {sorted(batch)}")
        y = batch[self.label_key]
        out = self(batch)
        loss = self.head.loss(out, y)
        preds, target = metric_inputs(self.task, out, y)
        for m in metrics.values():
            m.update(preds, target)
        train = stage == "train"
        self.log(f"{stage}/loss", loss.detach(), prog_bar=True, batch_size=int(y.shape[0]),
                 on_step=train, on_epoch=not train, sync_dist=not train)
        return loss

    def _log_metrics(self, metrics: nn.ModuleDict, stage: str) -> None:
        values = {}
        for k, m in metrics.items():
            if not m.update_count:
                continue
            with warnings.catch_warnings():  # e.g. AUROC with a label that has no positive yet
                warnings.simplefilter("ignore")
                try:
                    values[f"{stage}/{k}"] = m.compute()
                except ValueError as err:  # e.g. R^2 of a single sample
                    log.debug("%s/%s not computed: %s", stage, k, err)
        if values:
            self.log_dict(values)
        for m in metrics.values():
            m.reset()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._step(batch, self.train_metrics, "train")

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if (batch_idx + 1) % (self.cfg.log_every * self.cfg.accumulate) == 0:
            self._log_metrics(self.train_metrics, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, self.val_metrics, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_metrics(self.val_metrics, "val")

    # data --------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        if self.train_dataset is None:
            raise ValueError("FinetuneTask needs a train_dataset to build its dataloader")
        return make_loader(self.train_dataset, self.cfg, self.cfg.max_steps * self.cfg.accumulate,
                           self.global_rank, self.trainer.world_size)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_dataset is None:
            return []
        return DataLoader(self.val_dataset, batch_size=self.cfg.batch_size, collate_fn=collate_dict,
                          num_workers=self.cfg.num_workers)

    def on_train_start(self) -> None:
        # resume: continue the step-indexed batch sequence where the checkpoint stopped
        sampler = getattr(self.trainer.train_dataloader, "batch_sampler", None)
        if isinstance(sampler, StepSampler):
            sampler.start_batch = self.global_step * self.cfg.accumulate

    def export(self, directory: str | Path, class_names: Sequence[str] | None = None) -> Path:
        """Write the fine-tuned model to ``directory`` (see :func:`save_finetuned`)."""
        info = {"task": self.task, "label_key": self.label_key, "groups": self.groups,
                "class_names": list(class_names) if class_names is not None else None}
        return save_finetuned(self.model, self.head, directory, info)


# ---------------------------------------------------------------------- export
def save_finetuned(backbone: nn.Module, head: nn.Module, directory: str | Path, info: dict[str, Any]) -> Path:
    """Backbone via its ``save_pretrained``; head as ``head.safetensors`` + ``head.json``.

    ``info`` needs ``task``; ``head.json`` gets it plus the head's config. ``head.json`` is
    written last, so a folder with it is complete.
    """
    if info.get("task") not in TASKS:
        raise ValueError(f"info['task'] must be one of {TASKS}, got {info.get('task')!r}")
    out = Path(directory)
    backbone.save_pretrained(out)
    with atomic_path(out / HEAD_WEIGHTS) as tmp:
        save_model(head, str(tmp))
    meta = {"format_version": HEAD_FORMAT_VERSION, **info, "head": head.config()}
    atomic_write_text(out / HEAD_CONFIG, json.dumps(meta, indent=2, default=str))
    return out


class FinetunedModel(nn.Module):
    """A loaded fine-tuned model: ``model(batch)`` gives the head's outputs.

    ``[B, K]`` logits (classification, multilabel), ``[B, K]`` values in target units
    (regression), ``[B, K, *S]`` logits (segmentation). :meth:`predict` turns them into class
    ids, label probabilities, values or a label map.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, info: dict[str, Any]) -> None:
        super().__init__()
        self.backbone, self.head, self.info = backbone, head, info
        self.task: str = info["task"]
        self.groups = info.get("groups")
        self.class_names = info.get("class_names")

    def forward(self, batch: dict[str, Any]) -> Tensor:
        return predict(self.backbone, self.head, batch, self.groups)

    @torch.no_grad()
    def predict(self, batch: dict[str, Any]) -> Tensor:
        out = self(batch)
        if self.task in ("classification", "segmentation"):
            return out.argmax(1)
        return out.sigmoid() if self.task == "multilabel" else out


def _read_head_config(d: Path) -> dict[str, Any]:
    if not (d / HEAD_CONFIG).is_file() or not (d / HEAD_WEIGHTS).is_file():
        missing = [f for f in (HEAD_CONFIG, HEAD_WEIGHTS) if not (d / f).is_file()]
        raise DataError(d, f"a fine-tuned export with {HEAD_CONFIG} and {HEAD_WEIGHTS}", f"no {', '.join(missing)}")
    try:
        info = json.loads((d / HEAD_CONFIG).read_text())
    except json.JSONDecodeError as err:
        raise DataError(d / HEAD_CONFIG, "valid JSON", f"a parse error ({err})") from err
    if not isinstance(info, dict) or info.get("task") not in TASKS or not isinstance(info.get("head"), dict):
        found = f"keys {sorted(info)}" if isinstance(info, dict) else type(info).__name__
        raise DataError(d / HEAD_CONFIG, f"keys 'task' (one of {TASKS}) and 'head'", found)
    return info


def load_finetuned(directory: str | Path, map_location: str = "cpu") -> FinetunedModel:
    """Rebuild backbone and head from an export folder, offline; returned in eval mode."""
    d = Path(directory)
    info = _read_head_config(d)
    backbone = load_pretrained(d, map_location)
    try:
        head = build_head(info["head"])
    except (KeyError, ValueError) as err:
        raise DataError(d / HEAD_CONFIG, "a valid head description", str(err)) from err
    if getattr(head, "dim", None) != embed_dim_of(backbone):
        raise DataError(d / HEAD_CONFIG, f"a head of width {embed_dim_of(backbone)} (the backbone's)",
                        f"width {getattr(head, 'dim', None)}")
    try:
        load_model(head, str(d / HEAD_WEIGHTS), strict=True, device=map_location)
    except Exception as err:  # shape mismatch or a corrupt file
        raise DataError(d / HEAD_WEIGHTS, f"the weights of the head described in {HEAD_CONFIG}",
                        f"{type(err).__name__}: {str(err).splitlines()[0]}") from err
    return FinetunedModel(backbone, head, info).eval()


# ---------------------------------------------------------------------- library entry point
def run_finetune(
    model: nn.Module,
    train_dataset: Dataset,
    val_dataset: Dataset | None,
    run_dir: str | Path,
    cfg: TrainConfig,
    task: str,
    n_classes: int,
    layer_decay: float = 0.75,
    freeze_encoder: bool = False,
    label_key: str | None = None,
    ignore_index: int = -100,
    groups: Sequence[Any] | None = None,
    class_names: Sequence[str] | None = None,
    resume: str | None = None,
    callbacks: Sequence[Callback] = (),
    logger: bool = True,
) -> dict[str, Any]:
    """Fine-tune ``model`` on ``train_dataset``, validate once at the end, export to ``RUN/export``.

    Metrics go to ``RUN/metrics.csv``; checkpoints to ``RUN/checkpoints`` (``resume="auto"``
    continues from the last one). Returns a summary: task, steps, wall_s, final train_loss,
    export_dir, metrics_csv and the final ``val/*`` metrics.
    """
    def make_task() -> FinetuneTask:
        return FinetuneTask(model, cfg, task, n_classes, layer_decay, freeze_encoder, label_key, ignore_index,
                            groups, train_dataset, val_dataset)

    return {"task": task, **fit_finetune(make_task, run_dir, cfg, class_names, resume, callbacks, logger)}


def fit_finetune(
    make_task: Callable[[], FinetuneTask],
    run_dir: str | Path,
    cfg: TrainConfig,
    class_names: Sequence[str] | None = None,
    resume: str | None = None,
    callbacks: Sequence[Callback] = (),
    logger: bool = True,
) -> dict[str, Any]:
    """The fine-tuning run around a task (a :class:`FinetuneTask` or a subclass with its own head):
    seed, then ``make_task()`` (so the head's initialisation is seeded), fit into ``run_dir`` with
    resume and the end-of-run validation, export on rank 0. Returns steps, wall_s, export_dir,
    metrics_csv and the final ``train/*`` and ``val/*`` metrics."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    ckpt = find_resume_checkpoint(run_dir, resume)
    ft = make_task()
    trainer = build_trainer(cfg, run_dir, callbacks, logger)
    if ft.val_dataset is None:
        trainer.limit_val_batches = 0  # no validation loop at all (not an empty one)
    t0 = time.perf_counter()
    trainer.fit(ft, ckpt_path=str(ckpt) if ckpt else None)
    wall = time.perf_counter() - t0
    final = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("val/", "train/"))}
    export = run_dir / "export"
    if trainer.is_global_zero:
        ft.export(export, class_names)
    return {"steps": trainer.global_step, "wall_s": round(wall, 3), "export_dir": str(export),
            "metrics_csv": str(run_dir / "metrics.csv"), **final}


__all__ = [
    "FinetuneTask",
    "FinetunedModel",
    "build_metrics",
    "default_label_key",
    "load_finetuned",
    "run_finetune",
    "save_finetuned",
]
