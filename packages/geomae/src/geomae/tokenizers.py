"""Band-group tokens: the core :class:`~maecore.tokenizers.PatchTokenizer` with one group per
band group of the preset (each group its own patch projection and group embedding), and the map
from group-major token embeddings back to one embedding per patch position (a raster pixel)."""

from __future__ import annotations

from torch import Tensor

from geomae.bands import Preset
from maecore.tokenizers import PatchTokenizer


def band_group_tokenizer(preset: Preset, patch_size: int, embed_dim: int) -> PatchTokenizer:
    """2D patch tokens of ``patch_size`` pixels; channel order = ``preset.model_order()``."""
    return PatchTokenizer(2, preset.group_channels, patch_size, embed_dim, preset.group_names)


def position_embeddings(emb: Tensor, pad: Tensor, n_groups: int, grid: tuple[int, int]) -> Tensor:
    """``emb [B, G*N, D]``, ``pad [B, G*N]`` -> ``[B, D, gh, gw]``: the mean over the groups present
    at each patch position; NaN where no group is (nodata everywhere in that patch)."""
    b, l, d = emb.shape
    n = l // n_groups
    w = (~pad).to(emb.dtype).reshape(b, n_groups, n, 1)
    summed = (emb.reshape(b, n_groups, n, d) * w).sum(1)
    count = w.sum(1)
    out = summed / count.clamp(min=1)
    out = out.masked_fill(count == 0, float("nan"))
    return out.transpose(1, 2).reshape(b, d, *grid)


__all__ = ["band_group_tokenizer", "position_embeddings"]
