"""Generic patch tokenizer for 1D signals, 2D images and 3D volumes with channel groups.

Batch keys read by :class:`PatchTokenizer`:

- ``"x"``          ``[B, C, *S]`` float, channels of all groups concatenated in group order,
- ``"group_pad"``  optional ``[B, G]`` bool, True where a whole group (modality, lead, band group)
  is absent for that sample,
- ``"valid"``      optional ``[B, C or 1, *S]`` bool, False where a value was not measured (nodata,
  NaN gap). Non-finite values of ``x`` count as not measured too.

A token is one group at one patch position; its target is the group's channels at that patch,
flattened (channel first) and right-padded with zeros to the widest group. Tokens are ordered group
major: ``L = G * N`` with ``N`` patches per group. A token with any unmeasured value, or of an
absent group, is padding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from maecore.patching import as_patch_size, grid_coords, grid_shape, patchify, unpatchify
from maecore.tokens import Tokens


class PatchTokenizer(nn.Module):
    """Per-group linear patch projection plus a learned group embedding.

    Args:
        ndim: number of spatial dimensions (1, 2 or 3).
        group_channels: channels in each group, e.g. ``[1, 1, 1, 1]`` for four MRI modalities or
            ``[3, 1]`` for an RGB group and a NIR group.
        patch_size: int or one int per spatial dim.
        embed_dim: token width D.
        group_names: a name per group (defaults to ``g0, g1, ...``).
    """

    def __init__(
        self,
        ndim: int,
        group_channels: Sequence[int],
        patch_size: int | Sequence[int],
        embed_dim: int,
        group_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if ndim not in (1, 2, 3):
            raise ValueError(f"ndim must be 1, 2 or 3, got {ndim}")
        if not group_channels or any(int(c) < 1 for c in group_channels):
            raise ValueError(f"group_channels must be positive integers, got {list(group_channels)}")
        names = list(group_names) if group_names is not None else [f"g{i}" for i in range(len(group_channels))]
        if len(names) != len(group_channels) or len(set(names)) != len(names):
            raise ValueError(
                f"group_names must be {len(group_channels)} distinct names, got {names}"
            )
        self.ndim = ndim
        self.patch = as_patch_size(patch_size, ndim)
        self.group_channels = [int(c) for c in group_channels]
        self.group_names = names
        self.n_groups = len(names)
        self.coord_dim = ndim
        self.embed_dim = embed_dim
        vox = math.prod(self.patch)
        self.target_dim = max(self.group_channels) * vox
        self.proj = nn.ModuleList(nn.Linear(c * vox, embed_dim) for c in self.group_channels)
        self.group_embed = nn.Parameter(torch.zeros(self.n_groups, embed_dim))
        nn.init.normal_(self.group_embed, std=0.02)
        offsets = [0]
        for c in self.group_channels:
            offsets.append(offsets[-1] + c)
        self.offsets = offsets

    @property
    def in_channels(self) -> int:
        return self.offsets[-1]

    def target_valid(self) -> Tensor:
        """``[G, P]`` bool: which target entries exist for each group (narrow groups are padded)."""
        vox = math.prod(self.patch)
        cols = torch.arange(self.target_dim)
        return torch.stack([cols < c * vox for c in self.group_channels])

    def _check(self, x: Tensor) -> None:
        if x.dim() != self.ndim + 2:
            raise ValueError(
                f"expected input [B, C, {', '.join('S' * self.ndim)}] with {self.ndim} spatial dims, "
                f"got shape {list(x.shape)}"
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected {self.in_channels} channels (groups {dict(zip(self.group_names, self.group_channels))}), "
                f"got {x.shape[1]}"
            )

    def _check_masks(self, batch: dict[str, Any], x: Tensor) -> None:
        """``valid`` must be ``[B, C or 1, *S]`` and ``group_pad`` ``[B, G]``."""
        b, c, *spatial = x.shape
        valid, group_pad = batch.get("valid"), batch.get("group_pad")
        if valid is not None and (
            valid.dim() != x.dim() or valid.shape[0] != b or valid.shape[1] not in (1, c)
            or valid.shape[2:] != x.shape[2:]
        ):
            raise ValueError(
                f"valid must be [B, C or 1, *S] with B={b}, C={c}, S={tuple(spatial)}, got {list(valid.shape)}"
            )
        if group_pad is not None and tuple(group_pad.shape) != (b, self.n_groups):
            raise ValueError(
                f"group_pad must be [B, G] = [{b}, {self.n_groups}] (groups {self.group_names}), "
                f"got {list(group_pad.shape)}"
            )

    def grid(self, batch: dict[str, Any]) -> tuple[int, ...]:
        return grid_shape(batch["x"].shape[2:], self.patch)

    def _split(self, batch: dict[str, Any]) -> tuple[list[Tensor], Tensor]:
        """Per-group patches ``[B, N, C_g * vox]`` (unmeasured set to 0) and ``pad [B, G, N]``."""
        x = batch["x"]
        self._check(x)
        self._check_masks(batch, x)
        valid = torch.isfinite(x)
        if batch.get("valid") is not None:
            valid = valid & batch["valid"].to(torch.bool).expand_as(x)
        x = torch.where(valid, x, torch.zeros((), dtype=x.dtype, device=x.device))
        patches, pads = [], []
        for g in range(self.n_groups):
            sl = slice(self.offsets[g], self.offsets[g + 1])
            patches.append(patchify(x[:, sl], self.patch))
            pads.append(~patchify(valid[:, sl].to(x.dtype), self.patch).bool().all(-1))
        pad = torch.stack(pads, 1)
        if batch.get("group_pad") is not None:
            pad = pad | batch["group_pad"].to(torch.bool)[:, :, None]
        return patches, pad

    def tokens(self, batch: dict[str, Any]) -> Tokens:
        patches, pad = self._split(batch)
        b, n = pad.shape[0], pad.shape[2]
        xs = [self.proj[g](p) + self.group_embed[g] for g, p in enumerate(patches)]
        coords = grid_coords(self.grid(batch), device=pad.device)
        return Tokens(
            x=torch.cat(xs, 1),
            pos=coords.repeat(self.n_groups, 1).unsqueeze(0).expand(b, -1, -1),
            group=torch.arange(self.n_groups, device=pad.device).repeat_interleave(n).expand(b, -1),
            pad=pad.reshape(b, -1),
        )

    def targets(self, batch: dict[str, Any]) -> Tensor:
        """``[B, L, P]`` with each group's patch values, zero-padded to ``P = target_dim``."""
        patches, _ = self._split(batch)
        padded = [nn.functional.pad(p, (0, self.target_dim - p.shape[-1])) for p in patches]
        return torch.cat(padded, 1)

    def untokenize(self, pred: Tensor, batch: dict[str, Any]) -> Tensor:
        """``[B, L, P] -> [B, C, *S]``: the exact inverse of :meth:`targets` on measured values."""
        grid = self.grid(batch)
        n = math.prod(grid)
        vox = math.prod(self.patch)
        parts = []
        for g, c in enumerate(self.group_channels):
            tok = pred[:, g * n : (g + 1) * n, : c * vox]
            parts.append(unpatchify(tok, self.patch, grid, c))
        return torch.cat(parts, 1)
