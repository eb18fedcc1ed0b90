"""Registered generic MAE-ViT models over the core's patch tokenizer (1D, 2D or 3D inputs)."""

from __future__ import annotations

from typing import Any

from maecore.models.mae import MaskedAutoencoder
from maecore.models.registry import register_model
from maecore.models.sizes import vit_size
from maecore.tokenizers import PatchTokenizer


def build_patch_mae(
    size: str,
    ndim: int,
    group_channels: list[int],
    patch_size: int | list[int],
    group_names: list[str] | None,
    **overrides: Any,
) -> MaskedAutoencoder:
    arch = vit_size(size)
    arch.update({k: v for k, v in overrides.items() if k in arch})
    rest = {k: v for k, v in overrides.items() if k not in arch}
    tokenizer = PatchTokenizer(ndim, group_channels, patch_size, arch["embed_dim"], group_names)
    return MaskedAutoencoder(tokenizer, **arch, **rest)


def _factory(size: str):
    def factory(
        ndim: int = 2,
        group_channels: list[int] = (3,),  # type: ignore[assignment]
        patch_size: int | list[int] = 16,
        group_names: list[str] | None = None,
        embed_dim: int | None = None,
        depth: int | None = None,
        num_heads: int | None = None,
        decoder_dim: int | None = None,
        decoder_depth: int | None = None,
        decoder_heads: int | None = None,
        mlp_ratio: float = 4.0,
        mask: dict[str, Any] | None = None,
        loss: str = "mse",
        loss_kwargs: dict[str, Any] | None = None,
        norm_pix: bool = False,
        grad_checkpointing: bool = False,
    ) -> MaskedAutoencoder:
        arch = {
            k: v
            for k, v in dict(
                embed_dim=embed_dim, depth=depth, num_heads=num_heads, decoder_dim=decoder_dim,
                decoder_depth=decoder_depth, decoder_heads=decoder_heads,
            ).items()
            if v is not None
        }
        return build_patch_mae(
            size, ndim, list(group_channels), patch_size, group_names, **arch, mlp_ratio=mlp_ratio,
            mask=mask, loss=loss, loss_kwargs=loss_kwargs, norm_pix=norm_pix,
            grad_checkpointing=grad_checkpointing,
        )

    factory.__name__ = f"mae_vit_{size}"
    factory.__doc__ = f"MAE with a ViT-{size} encoder over 1D/2D/3D patches with channel groups."
    return factory


for _size in ("tiny", "small", "base", "large"):
    register_model(f"mae_vit_{_size}")(_factory(_size))
