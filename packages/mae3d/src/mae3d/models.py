"""Registered mae3d models: Point-MAE (points) and a NeRF-MAE-style radiance-grid MAE.

Point-MAE (Pang et al. 2022): 64 FPS patches of 32 points, 12 x 384 encoder, 4-block decoder,
60 % random masking, Chamfer-L2 on the masked patches. NeRF-MAE (Irshad et al. 2024) masks 75 % of
3D patches of RGB + density grids and scores RGB where alpha > 0.01 plus alpha; its encoder is a
Swin3D; ours is the core's ViT over 3D patches (the same tokenizer medmae uses).
"""

from __future__ import annotations

from typing import Any

from mae3d.tokenizers import PointPatchTokenizer
from maecore.models.mae import MaskedAutoencoder
from maecore.models.registry import register_model
from maecore.models.sizes import vit_size
from maecore.tokenizers import PatchTokenizer


def _pointmae(num_patches: int, group_size: int, arch: dict[str, Any], mask_ratio: float) -> MaskedAutoencoder:
    tok = PointPatchTokenizer(num_patches, group_size, arch["embed_dim"])
    return MaskedAutoencoder(tok, **arch, mask={"kind": "random", "ratio": mask_ratio}, loss="chamfer",
                             loss_kwargs={"point_dim": 3}, pos_embed="mlp")


@register_model("mae3d_pointmae")
def mae3d_pointmae(num_patches: int = 64, group_size: int = 32, mask_ratio: float = 0.6) -> MaskedAutoencoder:
    """Point-MAE at its published size: 22 M encoder parameters (the fine-tuning model), 29 M with
    the pretraining decoder."""
    arch = dict(embed_dim=384, depth=12, num_heads=6, decoder_dim=384, decoder_depth=4, decoder_heads=6)
    return _pointmae(num_patches, group_size, arch, mask_ratio)


@register_model("mae3d_pointmae_tiny")
def mae3d_pointmae_tiny(num_patches: int = 16, group_size: int = 16, mask_ratio: float = 0.6) -> MaskedAutoencoder:
    """A CPU/test size: 16 patches of 16 points, the core's tiny ViT."""
    return _pointmae(num_patches, group_size, vit_size("tiny"), mask_ratio)


def _grid(resolution: int, patch_size: int, size: str, mask_ratio: float) -> MaskedAutoencoder:
    arch = vit_size(size)
    if resolution % patch_size:
        raise ValueError(f"grid resolution {resolution} must be a multiple of patch_size {patch_size}")
    tok = PatchTokenizer(3, [4], patch_size, arch["embed_dim"], ["rgba"])
    return MaskedAutoencoder(tok, **arch, mask={"kind": "random", "ratio": mask_ratio}, loss="grid_alpha_mse",
                             loss_kwargs={"channels": 4, "alpha_threshold": 0.01})


@register_model("mae3d_nerfmae")
def mae3d_nerfmae(resolution: int = 96, patch_size: int = 8, mask_ratio: float = 0.75) -> MaskedAutoencoder:
    """NeRF-MAE-style grid MAE: 96^3 RGB + alpha grids, 8^3 patches, ViT-S encoder, 75 % masking."""
    return _grid(resolution, patch_size, "small", mask_ratio)


@register_model("mae3d_nerfmae_tiny")
def mae3d_nerfmae_tiny(resolution: int = 16, patch_size: int = 4, mask_ratio: float = 0.75) -> MaskedAutoencoder:
    """A CPU/test size: 16^3 grids, 4^3 patches, the core's tiny ViT."""
    return _grid(resolution, patch_size, "tiny", mask_ratio)
