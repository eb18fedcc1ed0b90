"""SimMIM (Xie et al. 2022): mask tokens enter a hierarchical Swin-V2 encoder, a one-layer head
predicts raw pixels, and an L1 loss scores the masked patches only.

The encoder stages are timm's ``SwinTransformerV2Stage`` (scaled cosine attention, log-spaced
continuous position bias, post-norm), fed with the core's band-group tokens: the groups present
at each patch position are averaged into one grid token, block masking hides whole positions
(all groups), and the head predicts every group's pixels at every position.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from maecore import masking as M
from maecore.losses import get_loss
from maecore.models.mae import MAEOutput
from maecore.models.pretrained import PretrainedMixin
from maecore.models.registry import register_model
from maecore.models.transformer import init_weights
from maecore.tokenizers import PatchTokenizer


class SimMIM(nn.Module, PretrainedMixin):
    """SimMIM with a Swin-V2 encoder over a 2D :class:`PatchTokenizer`.

    Args:
        tokenizer: 2D patch tokenizer (band groups allowed).
        img_size: input height = width in pixels (fixed: the shifted-window masks depend on it).
        window_size: attention window in tokens at every stage.
        depths, num_heads: blocks and heads per stage; width doubles at each patch merging.
        mask_ratio: fraction of mask blocks hidden; ``mask_patch`` is the block side in pixels.
    """

    def __init__(
        self,
        tokenizer: PatchTokenizer,
        img_size: int,
        window_size: int,
        depths: Sequence[int],
        num_heads: Sequence[int],
        mask_ratio: float = 0.6,
        mask_patch: int = 32,
        loss: str = "l1",
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if tokenizer.ndim != 2:
            raise ValueError(f"SimMIM works on 2D images, got a tokenizer with ndim={tokenizer.ndim}")
        if len(depths) != len(num_heads) or not depths:
            raise ValueError(f"depths {list(depths)} and num_heads {list(num_heads)} must be equally long, non-empty")
        patch = tokenizer.patch[0]
        stride = 2 ** (len(depths) - 1)
        if img_size % (patch * stride) or img_size // patch // stride < 1:
            raise ValueError(
                f"img_size {img_size} must be a multiple of patch_size * 2**(stages-1) = {patch * stride}"
            )
        if mask_patch % patch or (img_size // patch) % (mask_patch // patch):
            raise ValueError(
                f"mask_patch {mask_patch} must be a multiple of patch_size {patch} and divide img_size {img_size}"
            )
        self.tokenizer = tokenizer
        self.img_size, self.stride = img_size, stride
        self.grid = (img_size // patch, img_size // patch)
        self.mask_cfg = {"kind": "block", "ratio": float(mask_ratio), "block": mask_patch // patch}
        M._check_ratio(self.mask_cfg["ratio"])
        self.loss_fn = get_loss(loss)
        dim = tokenizer.embed_dim
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        # timm (with the torchvision it imports, about 1.5 s) loads when a SimMIM model is built,
        # not whenever the model registry is imported
        from timm.models.swin_transformer_v2 import SwinTransformerV2Stage

        stages, res = [], self.grid
        for i, (depth, heads) in enumerate(zip(depths, num_heads)):
            out_dim = dim * 2 ** i
            stages.append(SwinTransformerV2Stage(
                dim=dim * 2 ** max(i - 1, 0), out_dim=out_dim, input_resolution=res, depth=depth,
                num_heads=heads, window_size=window_size, downsample=i > 0,
            ))
            if i > 0:
                res = (res[0] // 2, res[1] // 2)
            stages[-1].grad_checkpointing = grad_checkpointing
        self.stages = nn.ModuleList(stages)
        self.embed_dim = dim * 2 ** (len(depths) - 1)
        self.norm = nn.LayerNorm(self.embed_dim)
        g, p = tokenizer.n_groups, tokenizer.target_dim
        self.head = nn.Linear(self.embed_dim, stride * stride * g * p)
        self.meta: dict[str, Any] = {}
        self.apply(init_weights)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    # ------------------------------------------------------------------ tokens
    def _fuse(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor, Any]:
        """Group tokens -> one token per position: ``(x [B, N, D], pos_pad [B, N], tokens)``."""
        size = tuple(batch["x"].shape[-2:])
        if size != (self.img_size, self.img_size):
            raise ValueError(f"this SimMIM model takes {self.img_size} x {self.img_size} inputs, got {size}")
        tokens = self.tokenizer.tokens(batch)
        b, l, d = tokens.x.shape
        g, n = self.tokenizer.n_groups, l // self.tokenizer.n_groups
        w = (~tokens.pad).to(tokens.x.dtype).reshape(b, g, n, 1)
        fused = (tokens.x.reshape(b, g, n, d) * w).sum(1) / w.sum(1).clamp(min=1)
        return fused, w.sum(1).squeeze(-1) == 0, tokens

    def mask_tokens(self, pos_pad: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Block mask over positions ``[B, N]`` (True = hidden)."""
        return M.block_masking(pos_pad, self.grid, self.mask_cfg["ratio"], self.mask_cfg["block"], generator).mask

    def forward_encoder(self, x: Tensor, hide: Tensor) -> Tensor:
        """``x [B, N, D]``, ``hide [B, N]`` -> last-stage features ``[B, h, w, C]``."""
        b, _, d = x.shape
        x = torch.where(hide[..., None], self.mask_token.to(x.dtype).expand_as(x), x)
        x = x.reshape(b, *self.grid, d)
        for stage in self.stages:
            x = stage(x)
        return self.norm(x)

    def forward_decoder(self, feats: Tensor) -> Tensor:
        """``[B, h, w, C] -> pred [B, G * N, P]`` in the tokenizer's group-major order."""
        b, h, w, _ = feats.shape
        s, g, p = self.stride, self.tokenizer.n_groups, self.tokenizer.target_dim
        y = self.head(feats).reshape(b, h, w, s, s, g, p)
        y = y.permute(0, 5, 1, 3, 2, 4, 6).reshape(b, g, h * s * w * s, p)
        return y.reshape(b, g * h * s * w * s, p)

    def forward(self, batch: dict[str, Any], generator: torch.Generator | None = None) -> MAEOutput:
        fused, pos_pad, tokens = self._fuse(batch)
        hide = self.mask_tokens(pos_pad, generator)
        pred = self.forward_decoder(self.forward_encoder(fused, hide | pos_pad))
        target = self.tokenizer.targets(batch)
        mask = hide.repeat(1, self.tokenizer.n_groups) & ~tokens.pad
        valid = self.tokenizer.target_valid().to(pred.device)
        elem_valid = None if bool(valid.all()) else valid[tokens.group]
        loss = self.loss_fn(pred.float(), target.float(), mask.to(pred.dtype), elem_valid)
        return MAEOutput(loss, pred, target, mask, tokens.pad)

    # ------------------------------------------------------------------ embeddings
    def encode_tokens(self, batch: dict[str, Any], groups: list[str] | None = None) -> tuple[Tensor, Tensor]:
        """Last-stage features upsampled (nearest) to the patch grid, one copy per group token."""
        if groups is not None:
            unknown = [g for g in groups if g not in self.tokenizer.group_names]
            if unknown:
                raise ValueError(f"unknown group(s) {unknown}; this model's groups are {self.tokenizer.group_names}")
            keep = torch.tensor([n in groups for n in self.tokenizer.group_names], device=batch["x"].device)
            present = batch.get("group_pad", torch.zeros_like(keep)[None].expand(len(batch["x"]), -1))
            batch = {**batch, "group_pad": present | ~keep}
        fused, pos_pad, tokens = self._fuse(batch)
        feats = self.forward_encoder(fused, pos_pad)  # [B, h, w, C]
        up = feats.repeat_interleave(self.stride, 1).repeat_interleave(self.stride, 2)
        emb = up.reshape(up.shape[0], -1, up.shape[-1]).repeat(1, self.tokenizer.n_groups, 1)
        return emb.masked_fill(tokens.pad[..., None], 0), tokens.pad

    def encode(self, batch: dict[str, Any], groups: list[str] | None = None) -> Tensor:
        """``[B, C]``: mean of the encoded tokens of the groups present."""
        emb, pad = self.encode_tokens(batch, groups)
        w = (~pad).to(emb.dtype)[..., None]
        return (emb * w).sum(1) / w.sum(1).clamp(min=1)


def _simmim(
    group_channels: Sequence[int], group_names: Sequence[str] | None, img_size: int, patch_size: int,
    window_size: int, embed_dim: int, depths: Sequence[int], num_heads: Sequence[int], mask_ratio: float,
    mask_patch: int, loss: str, grad_checkpointing: bool,
) -> SimMIM:
    tok = PatchTokenizer(2, list(group_channels), patch_size, embed_dim, group_names)
    return SimMIM(tok, img_size, window_size, list(depths), list(num_heads), mask_ratio, mask_patch, loss,
                  grad_checkpointing)


@register_model("simmim_swin_tiny")
def simmim_swin_tiny(
    group_channels: Sequence[int] = (3,), group_names: Sequence[str] | None = None, img_size: int = 32,
    patch_size: int = 4, window_size: int = 4, embed_dim: int = 32, depths: Sequence[int] = (2, 2),
    num_heads: Sequence[int] = (2, 4), mask_ratio: float = 0.6, mask_patch: int = 8, loss: str = "l1",
    grad_checkpointing: bool = False,
) -> SimMIM:
    """A CPU/test-sized SimMIM-SwinV2 (two stages, 32 px inputs)."""
    return _simmim(group_channels, group_names, img_size, patch_size, window_size, embed_dim, depths, num_heads,
                   mask_ratio, mask_patch, loss, grad_checkpointing)


@register_model("simmim_swinv2_satvision")
def simmim_swinv2_satvision(
    group_channels: Sequence[int] = (14,), group_names: Sequence[str] | None = None, img_size: int = 128,
    patch_size: int = 4, window_size: int = 8, embed_dim: int = 128, depths: Sequence[int] = (2, 2, 18, 2),
    num_heads: Sequence[int] = (4, 8, 16, 32), mask_ratio: float = 0.6, mask_patch: int = 32, loss: str = "l1",
    grad_checkpointing: bool = False,
) -> SimMIM:
    """SatVision-TOA's recipe (Spradlin et al. 2024): 128 x 128 chips of 14 MODIS L1B TOA bands,
    patch 4, window 8, 60 % of 32-pixel blocks masked, L1 on masked pixels. SatVision-TOA's
    released model is SwinV2-Giant; this registers a SwinV2-Base-sized encoder (87 M parameters
    in the encoder stages, 102 M in all). No pretrained weights are bundled."""
    return _simmim(group_channels, group_names, img_size, patch_size, window_size, embed_dim, depths, num_heads,
                   mask_ratio, mask_patch, loss, grad_checkpointing)


__all__ = ["SimMIM", "simmim_swin_tiny", "simmim_swinv2_satvision"]
