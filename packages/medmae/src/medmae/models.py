"""Registered medmae models (found by ``maecore.create_model`` through the ``maecore.models``
entry point).

- ``medmae_bmmae_base``: the BM-MAE size (Robinet et al. 2025): ViT-B encoder (768 wide, 12
  blocks, 12 heads, MLP 1536 = ratio 2), 16^3 patches of 128^3 crops, a 384-wide 3-block decoder
  with one output head per modality, group-budget masking at 75 %.
- ``medmae_tiny``: the same design at CPU/test size (64 wide, 2 blocks, 8^3 patches; pair it with
  32^3 crops at 2 mm as in ``configs/tiny.yaml``).

Every factory argument is JSON-serialisable (it goes to the exported ``config.json``).
"""

from __future__ import annotations

from typing import Any

from maecore.models.mae import MaskedAutoencoder
from maecore.models.registry import register_model
from medmae.modalities import DEFAULT_MODALITIES
from medmae.tokenizers import modality_tokenizer

GROUP_BUDGET = {"kind": "group_budget", "ratio": 0.75, "alpha": 1.0}

SIZES: dict[str, dict[str, Any]] = {
    # BM-MAE pretraining defaults: hidden 768, 12 layers, 12 heads, mlp_dim 1536, decoder 384 x 3, 12 heads
    "bmmae_base": dict(embed_dim=768, depth=12, num_heads=12, mlp_ratio=2.0, decoder_dim=384, decoder_depth=3,
                       decoder_heads=12, patch_size=16),
    "tiny": dict(embed_dim=64, depth=2, num_heads=4, mlp_ratio=2.0, decoder_dim=64, decoder_depth=2,
                 decoder_heads=4, patch_size=8),
}


def build_medmae(
    size: str,
    modalities: list[str] | None = None,
    patch_size: int | list[int] | None = None,
    mask: dict[str, Any] | None = None,
    **overrides: Any,
) -> MaskedAutoencoder:
    """A :class:`MaskedAutoencoder` over :func:`medmae.tokenizers.modality_tokenizer`."""
    arch = dict(SIZES[size])
    default_patch = arch.pop("patch_size")
    patch = default_patch if patch_size is None else patch_size
    arch.update({k: v for k, v in overrides.items() if v is not None})
    tokenizer = modality_tokenizer(list(modalities or DEFAULT_MODALITIES), patch, arch["embed_dim"])
    return MaskedAutoencoder(tokenizer, mask=dict(mask or GROUP_BUDGET), **arch)


def _factory(size: str):
    def factory(
        modalities: list[str] | None = None,
        patch_size: int | list[int] | None = None,
        embed_dim: int | None = None,
        depth: int | None = None,
        num_heads: int | None = None,
        mlp_ratio: float | None = None,
        decoder_dim: int | None = None,
        decoder_depth: int | None = None,
        decoder_heads: int | None = None,
        mask: dict[str, Any] | None = None,
        loss: str = "mse",
        loss_kwargs: dict[str, Any] | None = None,
        norm_pix: bool = False,
        grad_checkpointing: bool = False,
    ) -> MaskedAutoencoder:
        return build_medmae(
            size, modalities, patch_size, mask, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
            mlp_ratio=mlp_ratio, decoder_dim=decoder_dim, decoder_depth=decoder_depth, decoder_heads=decoder_heads,
            loss=loss, loss_kwargs=loss_kwargs, norm_pix=norm_pix, grad_checkpointing=grad_checkpointing,
        )

    factory.__name__ = f"medmae_{size}"
    factory.__doc__ = f"Multimodal brain-MRI MAE ({size}): per-modality 3D patch tokens, group-budget masking."
    return factory


medmae_bmmae_base = register_model("medmae_bmmae_base")(_factory("bmmae_base"))
medmae_tiny = register_model("medmae_tiny")(_factory("tiny"))
