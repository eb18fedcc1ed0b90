"""Task heads on an encoder with the MAE surface, and layer-wise learning-rate decay."""

from __future__ import annotations

import math
import warnings
from typing import Any

from torch import Tensor, nn

from maecore.patching import unpatchify
from maecore.tasks.base import no_decay

TASKS = ("classification", "multilabel", "regression", "segmentation")


class ClassificationHead(nn.Module):
    """LayerNorm + Linear on the pooled embedding ``[B, D] -> [B, n_out]`` (also regression)."""

    def __init__(self, dim: int, n_out: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, n_out)
        nn.init.trunc_normal_(self.fc.weight, std=2e-5)  # MAE fine-tuning: near-zero head
        nn.init.zeros_(self.fc.bias)

    def forward(self, emb: Tensor) -> Tensor:
        return self.fc(self.norm(emb))


class SegmentationHead(nn.Module):
    """Per-token logits unpatchified to a dense map: ``(emb [B, L, D], pad) -> [B, K, *S]``.

    Tokens are group major (``L = G * N``); the group tokens at one position are averaged over
    the groups present before the per-token linear layer.
    """

    def __init__(self, dim: int, n_classes: int, patch: tuple[int, ...]) -> None:
        super().__init__()
        self.patch = tuple(patch)
        self.n_classes = n_classes
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, n_classes * math.prod(self.patch))

    def forward(self, emb: Tensor, pad: Tensor, grid: tuple[int, ...]) -> Tensor:
        b, l, d = emb.shape
        n = math.prod(grid)
        if l % n:
            raise ValueError(f"{l} tokens are not a whole number of grids {grid}")
        g = l // n
        w = (~pad).to(emb.dtype).reshape(b, g, n, 1)
        fused = (emb.reshape(b, g, n, d) * w).sum(1) / w.sum(1).clamp(min=1)
        return unpatchify(self.fc(self.norm(fused)), self.patch, grid, self.n_classes)


def encoder_layer_id(name: str, n_layers: int) -> int:
    """BEiT-style layer id: 0 for embeddings, i + 1 for encoder block i, n_layers + 1 otherwise."""
    if name.startswith(("tokenizer.", "pos_embed.")) or name in ("mask_token",):
        return 0
    if name.startswith("encoder.blocks."):
        return int(name.split(".")[2]) + 1
    return n_layers + 1


def layer_decay_groups(
    model: nn.Module, head: nn.Module, weight_decay: float, layer_decay: float
) -> list[dict[str, Any]]:
    """AdamW groups with ``lr_scale = layer_decay ** (n_layers + 1 - layer_id)``.

    The MAE decoder is left out (fine-tuning does not use it). Encoders without ``encoder.blocks``
    get a single scale of 1 with a warning.
    """
    if not 0 < layer_decay <= 1:
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
    blocks = getattr(getattr(model, "encoder", None), "blocks", None)
    if blocks is None:
        warnings.warn("encoder has no .blocks: layer-wise LR decay disabled", stacklevel=2)
        n_layers = 0
    else:
        n_layers = len(blocks)
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    skip = ("decoder", "decoder_embed", "decoder_pos", "decoder_group", "heads", "mask_token", "difficulty")
    named = [(f"model.{n}", n, p) for n, p in model.named_parameters() if not n.startswith(skip)]
    named += [(f"head.{n}", None, p) for n, p in head.named_parameters()]
    for full, inner, p in named:
        if not p.requires_grad:
            continue
        layer = encoder_layer_id(inner, n_layers) if (inner is not None and n_layers) else n_layers + 1
        plain = no_decay(full, p)
        key = (layer, plain)
        if key not in groups:
            groups[key] = {
                "params": [],
                "weight_decay": 0.0 if plain else weight_decay,
                "lr_scale": layer_decay ** (n_layers + 1 - layer),
                "layer": layer,
            }
        groups[key]["params"].append(p)
    return [groups[k] for k in sorted(groups)]


def make_head(task: str, dim: int, n_classes: int, patch: tuple[int, ...] | None = None) -> nn.Module:
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")
    if task == "segmentation":
        if patch is None:
            raise ValueError("a segmentation head needs the tokenizer's patch size")
        return SegmentationHead(dim, n_classes, patch)
    return ClassificationHead(dim, n_classes)


def embed_dim_of(model: nn.Module) -> int:
    dim = getattr(model, "embed_dim", None)
    if dim is None:
        raise ValueError(f"{type(model).__name__} has no embed_dim: cannot size a head")
    return int(dim)


def predict(model: nn.Module, head: nn.Module, task: str, batch: dict[str, Any], groups: Any = None) -> Tensor:
    """Logits (or regression outputs) of ``head`` on ``model``'s embeddings of ``batch``."""
    if task == "segmentation":
        emb, pad = model.encode_tokens(batch, groups)
        return head(emb, pad, model.tokenizer.grid(batch))
    return head(model.encode(batch, groups))


__all__ = [
    "ClassificationHead",
    "SegmentationHead",
    "TASKS",
    "embed_dim_of",
    "layer_decay_groups",
    "make_head",
    "predict",
]
