"""Registered geomae models: MAE + ViT (FireRisk) and SimMIM + SwinV2 (SatVision-TOA).

Every factory takes ``preset`` (a built-in preset name or a preset dict, see :mod:`geomae.bands`):
its band groups become the token groups, so the same architecture serves any sensor.

- FireRisk (Shen et al. 2023) found MAE with a ViT-B/16 encoder the best of its pretrained models
  (65.29 % accuracy on 7 fire-risk classes of 270 x 270 NAIP chips, resized to 224).
- SatVision-TOA (Spradlin et al. 2024): SimMIM with a SwinV2 encoder on 128 x 128 chips of 14 MODIS
  L1B TOA bands, patch 4, window 8, 60 % of 32-pixel blocks masked, L1 loss on masked pixels.
  The core's ``simmim_swinv2_satvision`` is that recipe at SwinV2-Base size; here it gets the
  MODIS band groups of the ``modis_satvision`` preset.
"""

from __future__ import annotations

from typing import Any

from geomae.bands import get_preset
from geomae.tokenizers import band_group_tokenizer
from maecore.models.mae import MaskedAutoencoder
from maecore.models.registry import register_model
from maecore.models.simmim import SimMIM, simmim_swin_tiny, simmim_swinv2_satvision
from maecore.models.sizes import vit_size


def _mae(preset: Any, size: str, patch_size: int, mask_ratio: float, norm_pix: bool) -> MaskedAutoencoder:
    p = get_preset(preset)
    arch = vit_size(size)
    tok = band_group_tokenizer(p, patch_size, arch["embed_dim"])
    return MaskedAutoencoder(tok, **arch, mask={"kind": "random", "ratio": mask_ratio}, loss="mse",
                             norm_pix=norm_pix)


@register_model("geomae_mae_vitb16")
def geomae_mae_vitb16(preset: Any = "naip", patch_size: int = 16, mask_ratio: float = 0.75,
                      norm_pix: bool = False) -> MaskedAutoencoder:
    """FireRisk's MAE ViT-B/16 (86 M encoder parameters) over band-group tokens (NAIP: RGB + NIR)."""
    return _mae(preset, "base", patch_size, mask_ratio, norm_pix)


@register_model("geomae_mae_tiny")
def geomae_mae_tiny(preset: Any = "landsat7_rgb", patch_size: int = 8, mask_ratio: float = 0.75,
                    norm_pix: bool = False) -> MaskedAutoencoder:
    """A CPU/test size: the core's tiny ViT, 8-pixel patches."""
    return _mae(preset, "tiny", patch_size, mask_ratio, norm_pix)


@register_model("geomae_simmim_satvision")
def geomae_simmim_satvision(preset: Any = "modis_satvision", img_size: int = 128, patch_size: int = 4,
                            window_size: int = 8, mask_ratio: float = 0.6, mask_patch: int = 32,
                            grad_checkpointing: bool = False) -> SimMIM:
    """SatVision-TOA's SimMIM-SwinV2 recipe (SwinV2-Base size) with the preset's band groups."""
    p = get_preset(preset)
    return simmim_swinv2_satvision(group_channels=p.group_channels, group_names=p.group_names, img_size=img_size,
                                   patch_size=patch_size, window_size=window_size, mask_ratio=mask_ratio,
                                   mask_patch=mask_patch, loss="l1", grad_checkpointing=grad_checkpointing)


@register_model("geomae_simmim_tiny")
def geomae_simmim_tiny(preset: Any = "landsat7_rgb", img_size: int = 32, patch_size: int = 4,
                       window_size: int = 4, mask_ratio: float = 0.6, mask_patch: int = 8) -> SimMIM:
    """A CPU/test-sized SimMIM-SwinV2 (two stages, 32-pixel chips)."""
    p = get_preset(preset)
    return simmim_swin_tiny(group_channels=p.group_channels, group_names=p.group_names, img_size=img_size,
                            patch_size=patch_size, window_size=window_size, mask_ratio=mask_ratio,
                            mask_patch=mask_patch, loss="l1")


def input_size(model: Any) -> int | None:
    """The fixed chip side a model takes (SimMIM), or None when any multiple of the patch works."""
    return int(model.img_size) if isinstance(model, SimMIM) else None


def patch_size(model: Any) -> int:
    return int(model.tokenizer.patch[0])
