"""The medmae tokenizer: one 3D patch projection per modality plus a learned modality embedding.

This is the core's :class:`maecore.tokenizers.PatchTokenizer` with one group of one channel per
modality (BM-MAE's per-modality tokenizers): ``x [B, G, X, Y, Z]`` -> ``G * N`` tokens, group
major. A modality absent from a case is marked in ``batch["group_pad"] [B, G]`` and all of its
tokens become padding: never encoded, never scored.
"""

from __future__ import annotations

from collections.abc import Sequence

from maecore.tokenizers import PatchTokenizer
from medmae.modalities import DEFAULT_MODALITIES


def modality_tokenizer(
    modalities: Sequence[str] = DEFAULT_MODALITIES,
    patch_size: int | Sequence[int] = 16,
    embed_dim: int = 768,
) -> PatchTokenizer:
    """``PatchTokenizer(ndim=3, group_channels=[1] * G, ...)`` with the modalities as group names."""
    names = [str(m).lower() for m in modalities]
    return PatchTokenizer(3, [1] * len(names), patch_size, embed_dim, names)
