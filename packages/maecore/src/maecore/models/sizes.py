"""Catalogue of encoder/decoder sizes (architecture lives in ``mae.py``).

ViT sizes follow Dosovitskiy et al. 2021; MAE decoder defaults follow He et al. 2022
(512 wide, 8 blocks, 16 heads).
"""

from __future__ import annotations

VIT_SIZES: dict[str, dict[str, int]] = {
    # tiny CPU/test size: a few hundred thousand parameters
    "tiny": dict(embed_dim=64, depth=2, num_heads=4, decoder_dim=64, decoder_depth=2, decoder_heads=4),
    "small": dict(embed_dim=384, depth=12, num_heads=6, decoder_dim=256, decoder_depth=4, decoder_heads=8),
    "base": dict(embed_dim=768, depth=12, num_heads=12, decoder_dim=512, decoder_depth=8, decoder_heads=16),
    "large": dict(embed_dim=1024, depth=24, num_heads=16, decoder_dim=512, decoder_depth=8, decoder_heads=16),
}


def vit_size(name: str) -> dict[str, int]:
    if name not in VIT_SIZES:
        raise ValueError(f"unknown size {name!r}; known sizes: {', '.join(VIT_SIZES)}")
    return dict(VIT_SIZES[name])
