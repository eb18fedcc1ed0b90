"""Per-lead patch tokens that leave out lead slots absent from the whole batch.

Most recordings hold a few of the 13 lead slots (a Holter has MLII and V5, a wearable one lead and
PPG), so most of a ``G * N`` token sequence is padding that the decoder would still attend over.
:class:`LeadPatchTokenizer` is the core's :class:`~maecore.tokenizers.PatchTokenizer` (one group
per lead slot, 1D patches, a projection and a learned lead embedding per slot) whose token
sequence keeps only the slots that have a measured patch somewhere in the batch; ``untokenize``
puts them back in their slots, so outputs always have all ``G`` rows. A slot that is absent from
every sample of a batch would only have produced padding tokens, so the model's output on the
measured tokens is the same either way; only the cost changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from maecore.tokenizers import PatchTokenizer
from maecore.tokens import Tokens


class LeadPatchTokenizer(PatchTokenizer):
    """``x [B, G, T]`` (one channel per lead slot) -> tokens of the slots present in the batch.

    Tokens stay lead-major: ``L = G_kept * N`` with ``N = T / patch``; ``Tokens.group`` holds the
    slot ids, so lead embeddings, output heads and group-drop masking see the real leads.
    """

    def __init__(self, leads: Sequence[str], patch_size: int, embed_dim: int) -> None:
        super().__init__(1, [1] * len(leads), patch_size, embed_dim, list(leads))

    def kept_slots(self, batch: dict[str, Any]) -> Tensor:
        """``[G_kept]`` slot ids with at least one fully measured patch in some sample."""
        x = batch["x"]
        b, g, t = x.shape
        p = self.patch[0]
        valid = torch.isfinite(x)
        if batch.get("valid") is not None:
            valid = valid & batch["valid"].to(torch.bool).expand_as(x)
        full = valid[..., : t - t % p].reshape(b, g, -1, p).all(-1).any(-1)  # [B, G]
        if batch.get("group_pad") is not None:
            full = full & ~batch["group_pad"].to(torch.bool)
        kept = full.any(0).nonzero().flatten()
        return kept if kept.numel() else torch.zeros(1, dtype=torch.long, device=x.device)

    def _token_ids(self, batch: dict[str, Any], kept: Tensor) -> Tensor:
        n = self.grid(batch)[0]
        return (kept[:, None] * n + torch.arange(n, device=kept.device)).flatten()

    def tokens(self, batch: dict[str, Any]) -> Tokens:
        full = super().tokens(batch)
        ids = self._token_ids(batch, self.kept_slots(batch))
        return full.select(ids[None].expand(full.x.shape[0], -1))

    def targets(self, batch: dict[str, Any]) -> Tensor:
        ids = self._token_ids(batch, self.kept_slots(batch))
        return super().targets(batch)[:, ids]

    def untokenize(self, pred: Tensor, batch: dict[str, Any]) -> Tensor:
        """``[B, G_kept * N, P] -> [B, G, T]``; rows of slots absent from the batch are zero."""
        ids = self._token_ids(batch, self.kept_slots(batch))
        b = pred.shape[0]
        full = pred.new_zeros(b, self.n_groups * self.grid(batch)[0], pred.shape[-1])
        full[:, ids] = pred
        return super().untokenize(full, batch)
