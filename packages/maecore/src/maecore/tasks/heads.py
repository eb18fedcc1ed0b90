"""Task heads on an encoder with the MAE surface, and layer-wise learning-rate decay.

An encoder with the MAE surface gives ``encode(batch, groups) -> [B, D]`` (pooled) and
``encode_tokens(batch, groups) -> (emb [B, L, D], pad [B, L])`` (group-major tokens, ``L = G * N``).
Pooled heads (:class:`ClassificationHead`, :class:`RegressionHead`) read the first, the dense
:class:`SegmentationHead` the second. Every head knows its own loss and can describe itself as a
JSON-able dict (:meth:`config`), from which :func:`build_head` rebuilds it for an offline export.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maecore.patching import as_patch_size, unpatchify

TASKS = ("classification", "multilabel", "regression", "segmentation")
# parameters of the MAE that only the decoder uses: fine-tuning leaves them out
DECODER_PREFIXES = ("decoder", "mask_token", "heads.", "difficulty.", "head.")  # head.: SimMIM's pixel head
# parameters that embed the input before the first block: layer id 0
EMBED_PREFIXES = ("tokenizer.", "pos_embed.", "cls_token", "group_embed")


def _init_linear(fc: nn.Linear, std: float = 2e-5) -> None:
    """MAE fine-tuning starts from a near-zero head so the first steps do not wreck the encoder."""
    nn.init.trunc_normal_(fc.weight, std=std)
    nn.init.zeros_(fc.bias)


class ClassificationHead(nn.Module):
    """LayerNorm + Linear on the pooled embedding: ``emb [B, D] -> logits [B, K]``.

    ``multilabel=False``: one class per sample, ``loss`` is cross-entropy on class ids ``[B]``.
    ``multilabel=True``: independent labels, ``loss`` is BCE-with-logits on multi-hot ``[B, K]``.
    """

    kind = "classification"

    def __init__(self, dim: int, n_classes: int, multilabel: bool = False) -> None:
        super().__init__()
        _check_positive(dim=dim, n_classes=n_classes)
        if not multilabel and n_classes < 2:
            raise ValueError(f"n_classes must be >= 2 for single-label classification, got {n_classes}")
        self.dim, self.n_classes, self.multilabel = dim, n_classes, multilabel
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, n_classes)
        _init_linear(self.fc)

    def forward(self, emb: Tensor) -> Tensor:
        return self.fc(self.norm(emb))

    def loss(self, logits: Tensor, y: Tensor) -> Tensor:
        """Cross-entropy (class ids ``[B]``) or BCE-with-logits (multi-hot ``[B, K]``)."""
        if self.multilabel:
            return F.binary_cross_entropy_with_logits(logits.float(), y.float().reshape(logits.shape))
        return F.cross_entropy(logits.float(), y.long().reshape(-1))

    def config(self) -> dict[str, Any]:
        return {"type": "classification", "dim": self.dim, "n_classes": self.n_classes, "multilabel": self.multilabel}


class RegressionHead(nn.Module):
    """LayerNorm + Linear on the pooled embedding: ``emb [B, D] -> values [B, K]`` in target units.

    The linear layer predicts standardised targets ``z = (y - mean) / std``; ``forward`` returns
    ``z * std + mean``, and ``loss`` is the MSE in standardised units, so targets of any scale train
    alike. ``mean`` and ``std`` are buffers (saved with the head); set them from the training
    targets with :meth:`fit_stats` before training.
    """

    kind = "regression"

    def __init__(self, dim: int, n_targets: int) -> None:
        super().__init__()
        _check_positive(dim=dim, n_targets=n_targets)
        self.dim, self.n_targets = dim, n_targets
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, n_targets)
        _init_linear(self.fc)
        self.register_buffer("mean", torch.zeros(n_targets))
        self.register_buffer("std", torch.ones(n_targets))
        self.register_buffer("stats_fitted", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def fit_stats(self, y: Tensor) -> None:
        """Standardisation statistics from training targets ``y [N] or [N, K]`` (N >= 1)."""
        y = torch.as_tensor(y, dtype=torch.float64).reshape(len(y), -1)
        if y.shape[1] != self.n_targets or y.shape[0] < 1:
            raise ValueError(f"targets must be [N, {self.n_targets}] with N >= 1, got {list(y.shape)}")
        if not torch.isfinite(y).all():
            raise ValueError("regression targets hold NaN or inf; clean or drop those samples first")
        std = y.std(0, unbiased=False) if len(y) > 1 else torch.ones(self.n_targets, dtype=torch.float64)
        self.mean.copy_(y.mean(0))
        self.std.copy_(torch.where(std > 1e-8, std, torch.ones_like(std)))  # a constant target keeps std 1
        self.stats_fitted.fill_(True)

    def forward(self, emb: Tensor) -> Tensor:
        z = self.fc(self.norm(emb)).float()  # target units in float32, also under bf16 autocast
        return z * self.std + self.mean

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        """MSE between standardised prediction and standardised target."""
        out = out.float()
        z_pred = (out - self.mean) / self.std
        z_true = (y.float().reshape(out.shape) - self.mean) / self.std
        return F.mse_loss(z_pred, z_true)

    def config(self) -> dict[str, Any]:
        return {"type": "regression", "dim": self.dim, "n_targets": self.n_targets}


class SegmentationHead(nn.Module):
    """Dense logits from the token embeddings: ``(emb [B, L, D], pad [B, L]) -> [B, K, *S]``.

    Each token goes through LayerNorm + Linear to ``K * prod(patch)`` logits; the tokens of the
    groups at one position (group major, ``L = G * N``) are averaged over the groups present
    (padded tokens get weight 0; a position with no group present gets logits 0); the ``[B, N,
    K * prod(patch)]`` result is unpatchified to ``S = grid * patch``. ``loss`` is cross-entropy
    on a label map ``[B, *S]`` with ``ignore_index`` for unlabelled pixels/voxels.
    """

    kind = "segmentation"

    def __init__(
        self, dim: int, n_classes: int, patch: int | Sequence[int], ndim: int, ignore_index: int = -100
    ) -> None:
        super().__init__()
        _check_positive(dim=dim)
        if n_classes < 2:
            raise ValueError(f"n_classes must be >= 2 for segmentation, got {n_classes}")
        if ndim not in (1, 2, 3):
            raise ValueError(f"ndim must be 1, 2 or 3, got {ndim}")
        self.dim, self.n_classes, self.ndim, self.ignore_index = dim, n_classes, ndim, ignore_index
        self.patch = as_patch_size(patch, ndim)
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, n_classes * math.prod(self.patch))
        nn.init.trunc_normal_(self.fc.weight, std=0.02)
        nn.init.zeros_(self.fc.bias)

    def forward(self, emb: Tensor, pad: Tensor, grid: Sequence[int]) -> Tensor:
        b, l, _ = emb.shape
        grid = tuple(int(g) for g in grid)
        n = math.prod(grid)
        if len(grid) != self.ndim or l % n:
            raise ValueError(
                f"{l} tokens do not form whole {self.ndim}-D grids {grid}; expected L = n_groups * prod(grid)"
            )
        logits = self.fc(self.norm(emb)).reshape(b, l // n, n, -1)  # [B, G, N, K * P]
        w = (~pad).to(logits.dtype).reshape(b, l // n, n, 1)
        fused = (logits * w).sum(1) / w.sum(1).clamp(min=1)  # [B, N, K * P]
        return unpatchify(fused, self.patch, grid, self.n_classes)

    def loss(self, logits: Tensor, y: Tensor) -> Tensor:
        if y.shape[1:] != logits.shape[2:]:
            raise ValueError(f"label map {list(y.shape)} does not match logits {list(logits.shape)} (need [B, *S])")
        return F.cross_entropy(logits.float(), y.long(), ignore_index=self.ignore_index)

    def config(self) -> dict[str, Any]:
        return {"type": "segmentation", "dim": self.dim, "n_classes": self.n_classes, "patch": list(self.patch),
                "ndim": self.ndim, "ignore_index": self.ignore_index}


def _check_positive(**values: int) -> None:
    for name, v in values.items():
        if int(v) < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")


def make_head(
    task: str,
    dim: int,
    n_classes: int,
    patch: int | Sequence[int] | None = None,
    ndim: int | None = None,
    ignore_index: int = -100,
) -> nn.Module:
    """The head of ``task``; ``n_classes`` is the number of targets for regression."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if task == "segmentation":
        if patch is None or ndim is None:
            raise ValueError("a segmentation head needs the tokenizer's patch size and ndim (patch=, ndim=)")
        return SegmentationHead(dim, n_classes, patch, ndim, ignore_index)
    if task == "regression":
        return RegressionHead(dim, n_classes)
    return ClassificationHead(dim, n_classes, multilabel=task == "multilabel")


def build_head(config: dict[str, Any]) -> nn.Module:
    """Rebuild a head from its :meth:`config` dict (as stored in ``head.json``)."""
    kind = config.get("type")
    try:
        if kind == "classification":
            return ClassificationHead(int(config["dim"]), int(config["n_classes"]), bool(config["multilabel"]))
        if kind == "regression":
            return RegressionHead(int(config["dim"]), int(config["n_targets"]))
        if kind == "segmentation":
            return SegmentationHead(int(config["dim"]), int(config["n_classes"]), config["patch"],
                                    int(config["ndim"]), int(config.get("ignore_index", -100)))
    except KeyError as err:
        raise KeyError(f"head config of type {kind!r} lacks key {err}; got keys {sorted(config)}") from err
    raise ValueError(f"head type must be one of classification, regression, segmentation; got {kind!r}")


def embed_dim_of(model: nn.Module) -> int:
    """Width of the encoder's embeddings (``model.embed_dim``)."""
    dim = getattr(model, "embed_dim", None)
    if dim is None:
        raise ValueError(f"{type(model).__name__} has no embed_dim attribute: cannot size a head")
    return int(dim)


def predict(model: nn.Module, head: nn.Module, batch: dict[str, Any], groups: Sequence[Any] | None = None) -> Tensor:
    """Head outputs on the encoder's embeddings: ``[B, K]`` (pooled heads) or ``[B, K, *S]`` (segmentation)."""
    if isinstance(head, SegmentationHead):
        emb, pad = model.encode_tokens(batch, groups)
        return head(emb, pad, model.tokenizer.grid(batch))
    return head(model.encode(batch, groups))


# ---------------------------------------------------------------------- layer-wise LR decay
def is_decoder_param(name: str) -> bool:
    """True for MAE parameters only the decoder uses (dropped when fine-tuning)."""
    return name.startswith(DECODER_PREFIXES)


def no_weight_decay(name: str, param: nn.Parameter) -> bool:
    """1-D parameters (biases, norm scales) and embedding tables / tokens get no weight decay.

    Looks at the parameter's own name only, so ``tokenizer.proj.0.weight`` (a linear layer) decays
    while ``tokenizer.group_embed`` does not.
    """
    leaf = name.rsplit(".", 1)[-1]
    return param.ndim <= 1 or "embed" in leaf or "token" in leaf


def layer_id(name: str, n_layers: int) -> int:
    """BEiT layer id of an encoder parameter: 0 embeddings, ``i + 1`` block i, ``n_layers + 1`` the rest."""
    if name.startswith(EMBED_PREFIXES):
        return 0
    if name.startswith("encoder.blocks."):
        return int(name.split(".")[2]) + 1
    return n_layers + 1  # encoder.norm and anything after the encoder


def layer_decay_groups(
    model: nn.Module,
    base_lr: float,
    weight_decay: float,
    layer_decay: float,
    n_layers: int | None = None,
    head: nn.Module | None = None,
) -> list[dict[str, Any]]:
    """AdamW parameter groups with layer-wise learning-rate decay (BEiT / MAE fine-tuning).

    Layer id 0: tokenizer, positional and group embeddings; ``i + 1``: ``model.encoder.blocks[i]``;
    ``n_layers + 1``: the encoder's final norm and every ``head`` parameter. A group's
    ``lr = base_lr * lr_scale`` with ``lr_scale = layer_decay ** (n_layers + 1 - layer_id)``;
    1-D parameters, biases, norms and embeddings get no weight decay. Decoder parameters of the
    MAE (:data:`DECODER_PREFIXES`) and frozen parameters are left out. An encoder without
    ``encoder.blocks`` gets scale 1 everywhere, with a warning.

    Returns groups sorted by ``(layer_id, no_decay)`` with keys ``params, lr, lr_scale,
    weight_decay, layer_id``.
    """
    if not 0 < layer_decay <= 1:
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
    if base_lr <= 0:
        raise ValueError(f"base_lr must be > 0, got {base_lr}")
    blocks = getattr(getattr(model, "encoder", None), "blocks", None)
    if blocks is None:
        warnings.warn(f"{type(model).__name__} has no encoder.blocks: layer-wise LR decay disabled (scale 1)",
                      stacklevel=2)
        n_layers, by_layer = 0, False
    else:
        by_layer = True
        if n_layers is None:
            n_layers = len(blocks)
        elif n_layers < len(blocks):
            raise ValueError(f"n_layers must be >= the {len(blocks)} encoder blocks, got {n_layers}")
    named = [(n, p, layer_id(n, n_layers) if by_layer else n_layers + 1)
             for n, p in model.named_parameters() if not is_decoder_param(n)]
    if head is not None:
        named += [(f"head.{n}", p, n_layers + 1) for n, p in head.named_parameters()]
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, p, lid in named:
        if not p.requires_grad:
            continue
        plain = no_weight_decay(name, p)
        scale = layer_decay ** (n_layers + 1 - lid)
        group = groups.setdefault((lid, plain), {"params": [], "lr": base_lr * scale, "lr_scale": scale,
                                                 "weight_decay": 0.0 if plain else weight_decay, "layer_id": lid})
        group["params"].append(p)
    return [groups[k] for k in sorted(groups)]


__all__ = [
    "DECODER_PREFIXES",
    "TASKS",
    "ClassificationHead",
    "RegressionHead",
    "SegmentationHead",
    "build_head",
    "embed_dim_of",
    "is_decoder_param",
    "layer_decay_groups",
    "layer_id",
    "make_head",
    "no_weight_decay",
    "predict",
]
