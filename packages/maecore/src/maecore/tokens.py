"""The token container every domain hands to the core, and the tokenizer protocol.

A tokenizer turns a domain batch (a dict of tensors and metadata) into :class:`Tokens`:

- ``x``     ``[B, L, D]`` embedded tokens (projection + group embedding, no positional code),
- ``pos``   ``[B, L, C]`` token coordinates (grid index per axis, time, xyz, (frame, joint));
  the model turns them into positional codes,
- ``group`` ``[B, L]`` integer id of the modality / band group / lead / body part of each token,
- ``pad``   ``[B, L]`` True where a token does not exist (missing modality, absent lead, shorter
  sequence, nodata patch). Padded tokens are never visible to the encoder and never scored.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor


@dataclass
class Tokens:
    x: Tensor
    pos: Tensor
    group: Tensor
    pad: Tensor

    def __post_init__(self) -> None:
        b, l = self.x.shape[:2]
        for name in ("pos", "group", "pad"):
            t = getattr(self, name)
            if t.shape[:2] != (b, l):
                raise ValueError(f"Tokens.{name} must start with [B, L] = [{b}, {l}], got {list(t.shape)}")
        if self.pad.dtype != torch.bool:
            raise ValueError(f"Tokens.pad must be bool, got {self.pad.dtype}")

    @property
    def shape(self) -> tuple[int, int]:
        return self.x.shape[0], self.x.shape[1]

    def select(self, ids: Tensor) -> Tokens:
        """Gather tokens ``ids [B, K]`` along L: ``[B, L, *] -> [B, K, *]``."""
        return Tokens(
            x=gather_tokens(self.x, ids),
            pos=gather_tokens(self.pos, ids),
            group=torch.gather(self.group, 1, ids),
            pad=torch.gather(self.pad, 1, ids),
        )

    def keep_groups(self, groups: list[int] | None) -> Tokens:
        """Mark every token whose group is not in ``groups`` as padding (``None`` keeps all)."""
        if groups is None:
            return self
        wanted = torch.as_tensor(groups, device=self.group.device)
        outside = ~torch.isin(self.group, wanted)
        return replace(self, pad=self.pad | outside)


def gather_tokens(x: Tensor, ids: Tensor) -> Tensor:
    """``x [B, L, *]``, ``ids [B, K]`` -> ``[B, K, *]``."""
    idx = ids.reshape(*ids.shape, *([1] * (x.dim() - 2))).expand(*ids.shape, *x.shape[2:])
    return torch.gather(x, 1, idx)


@runtime_checkable
class Tokenizer(Protocol):
    """What a domain implements so the core can pretrain on it.

    ``n_groups``: number of group ids; ``group_names``: their names (modalities, bands, leads...).
    ``coord_dim``: width of ``Tokens.pos``; ``target_dim``: P of ``targets``.
    """

    n_groups: int
    group_names: list[str]
    coord_dim: int
    target_dim: int

    def tokens(self, batch: dict[str, Any]) -> Tokens: ...

    def targets(self, batch: dict[str, Any]) -> Tensor: ...

    def untokenize(self, pred: Tensor, batch: dict[str, Any]) -> Any: ...
