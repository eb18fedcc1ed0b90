"""Fine-tuning a pretrained encoder with a task head (classification, multi-label, regression,
segmentation), layer-wise learning-rate decay, and an offline-loadable fine-tuned export."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch.nn.functional as F
import torchmetrics as tm
from safetensors.torch import load_model, save_model
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from maecore.atomic import atomic_path, atomic_write_text
from maecore.errors import DataError
from maecore.models.pretrained import load_pretrained
from maecore.tasks.base import BaseTask
from maecore.tasks.config import TrainConfig
from maecore.tasks.data import collate_dict, make_loader
from maecore.tasks.heads import TASKS, embed_dim_of, layer_decay_groups, make_head, predict
from maecore.tasks.pretrain import build_trainer


class FinetuneTask(BaseTask):
    """Pretrained encoder + head. ``freeze_encoder`` trains the head only (a linear probe by SGD).

    Batches carry the target under ``label_key``: class ids ``[B]`` (classification), multi-hot
    ``[B, K]`` (multilabel), values ``[B, K]`` (regression) or a label map ``[B, *S]`` with
    ``ignore_index`` for unlabelled pixels/voxels (segmentation).
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        task: str,
        n_classes: int,
        layer_decay: float = 0.75,
        freeze_encoder: bool = False,
        label_key: str = "label",
        ignore_index: int = -100,
        train_dataset: Dataset | None = None,
        val_dataset: Dataset | None = None,
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        self.task, self.n_classes = task, n_classes
        self.layer_decay, self.freeze_encoder = layer_decay, freeze_encoder
        self.label_key, self.ignore_index = label_key, ignore_index
        self.__dict__["_pending_model"] = model
        super().__init__(cfg)
        self.train_dataset, self.val_dataset = train_dataset, val_dataset

    def configure_models(self) -> None:
        self.model = self.__dict__.pop("_pending_model")
        patch = tuple(getattr(self.model.tokenizer, "patch", ())) or None
        self.head = make_head(self.task, embed_dim_of(self.model), self.n_classes, patch)
        if self.freeze_encoder:
            for p in self.model.parameters():
                p.requires_grad_(False)

    def configure_metrics(self) -> None:
        k = self.n_classes
        if self.task == "classification":
            m = {"acc": tm.Accuracy("multiclass", num_classes=k),
                 "f1": tm.F1Score("multiclass", num_classes=k, average="macro")}
        elif self.task == "multilabel":
            m = {"auroc": tm.AUROC("multilabel", num_labels=k, average="macro"),
                 "f1": tm.F1Score("multilabel", num_labels=k, average="macro")}
        elif self.task == "regression":
            m = {"mae": tm.MeanAbsoluteError(), "rmse": tm.MeanSquaredError(squared=False)}
        else:
            m = {"miou": tm.JaccardIndex("multiclass", num_classes=k, ignore_index=self.ignore_index, average="macro")}
        self.train_metrics = tm.MetricCollection(m, prefix="train/")
        self.val_metrics = self.train_metrics.clone(prefix="val/")

    def param_groups(self) -> list[dict[str, Any]]:
        return layer_decay_groups(self.model, self.head, self.cfg.weight_decay, self.layer_decay)

    def forward(self, batch: dict[str, Any]) -> Tensor:
        return predict(self.model, self.head, self.task, batch)

    def _loss(self, out: Tensor, y: Tensor) -> Tensor:
        if self.task == "classification":
            return F.cross_entropy(out, y.long())
        if self.task == "multilabel":
            return F.binary_cross_entropy_with_logits(out, y.float())
        if self.task == "regression":
            return F.mse_loss(out, y.float().reshape(out.shape))
        return F.cross_entropy(out, y.long(), ignore_index=self.ignore_index)

    def _metric_args(self, out: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        if self.task == "multilabel":
            return out.sigmoid(), y.long()
        if self.task == "regression":
            return out.reshape(-1), y.float().reshape(-1)
        return out, y.long()

    def _step(self, batch: dict[str, Any], metrics: tm.MetricCollection, stage: str) -> Tensor:
        if self.label_key not in batch:
            raise KeyError(f"batch has no {self.label_key!r}; keys: {sorted(batch)}")
        y = batch[self.label_key]
        out = self(batch)
        loss = self._loss(out, y)
        bs = int(y.shape[0])
        metrics.update(*self._metric_args(out.detach().float(), y))
        self.log(f"{stage}/loss", loss.detach(), prog_bar=True, batch_size=bs, on_step=stage == "train",
                 on_epoch=stage == "val")
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._step(batch, self.train_metrics, "train")

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if (self.global_step + 1) % self.cfg.log_every == 0:
            self.log_dict(self.train_metrics.compute())
            self.train_metrics.reset()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, self.val_metrics, "val")

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.val_metrics.compute())
        self.val_metrics.reset()

    def train_dataloader(self) -> DataLoader:
        return make_loader(self.train_dataset, self.cfg, self.cfg.max_steps * self.cfg.accumulate,
                           self.global_rank, self.trainer.world_size)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_dataset is None:
            return []
        return DataLoader(self.val_dataset, batch_size=self.cfg.batch_size, collate_fn=collate_dict)


HEAD_WEIGHTS, HEAD_CONFIG = "head.safetensors", "head.json"


def save_finetuned(task: FinetuneTask, directory: str | Path, class_names: list[str] | None = None) -> Path:
    """Backbone as ``model.safetensors`` + ``config.json``, head as ``head.safetensors`` + ``head.json``."""
    out = Path(directory)
    task.model.save_pretrained(out)
    with atomic_path(out / HEAD_WEIGHTS) as tmp:
        save_model(task.head, str(tmp))
    info = {"task": task.task, "n_classes": task.n_classes, "label_key": task.label_key,
            "ignore_index": task.ignore_index, "class_names": class_names}
    atomic_write_text(out / HEAD_CONFIG, json.dumps(info, indent=2))
    return out


class FinetunedModel(nn.Module):
    """A loaded fine-tuned model: ``model(batch)`` returns the head's outputs."""

    def __init__(self, backbone: nn.Module, head: nn.Module, info: dict[str, Any]) -> None:
        super().__init__()
        self.backbone, self.head, self.info = backbone, head, info

    def forward(self, batch: dict[str, Any]) -> Tensor:
        return predict(self.backbone, self.head, self.info["task"], batch)


def load_finetuned(directory: str | Path, map_location: str = "cpu") -> FinetunedModel:
    d = Path(directory)
    if not (d / HEAD_CONFIG).is_file() or not (d / HEAD_WEIGHTS).is_file():
        raise DataError(d, f"a fine-tuned export with {HEAD_CONFIG} and {HEAD_WEIGHTS}", "no head files")
    backbone = load_pretrained(d, map_location)
    info = json.loads((d / HEAD_CONFIG).read_text())
    patch = tuple(getattr(backbone.tokenizer, "patch", ())) or None
    head = make_head(info["task"], embed_dim_of(backbone), int(info["n_classes"]), patch)
    load_model(head, str(d / HEAD_WEIGHTS), device=map_location)
    return FinetunedModel(backbone, head, info).eval()


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
    label_key: str = "label",
    ignore_index: int = -100,
    class_names: list[str] | None = None,
    logger: bool = True,
) -> dict[str, Any]:
    """Fine-tune and export to ``RUN/export``; returns the final validation metrics and timing."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    ft = FinetuneTask(model, cfg, task, n_classes, layer_decay, freeze_encoder, label_key, ignore_index,
                      train_dataset, None)
    trainer = build_trainer(cfg, run_dir, logger=logger)
    t0 = time.perf_counter()
    trainer.fit(ft)
    metrics = {}
    if val_dataset is not None:  # one validation pass on the final weights
        loader = DataLoader(val_dataset, batch_size=cfg.batch_size, collate_fn=collate_dict)
        metrics = {k: float(v) for k, v in trainer.validate(ft, dataloaders=loader, verbose=False)[0].items()}
    export = save_finetuned(ft, run_dir / "export", class_names) if trainer.is_global_zero else run_dir / "export"
    summary = {"task": task, "steps": trainer.global_step, "wall_s": round(time.perf_counter() - t0, 3),
               "export_dir": str(export), **metrics}
    return summary


__all__ = ["FinetuneTask", "FinetunedModel", "load_finetuned", "run_finetune", "save_finetuned"]
