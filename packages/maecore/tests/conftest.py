"""Shared fixtures for the core tests: seeded generators, tiny batches and a tiny model."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch


@pytest.fixture
def gen() -> torch.Generator:
    """A seeded CPU generator (the same stream in every test)."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def make_gen() -> Callable[[int], torch.Generator]:
    """``make_gen(seed)``: a fresh generator for a given seed."""
    return lambda seed: torch.Generator().manual_seed(seed)


@pytest.fixture
def image_batch() -> dict[str, torch.Tensor]:
    """Three 16 x 16 images with two channel groups ``[2, 1]``; sample 1 lacks group 1.

    With ``patch_size=4``: 16 patches per group, ``L = 32`` tokens, ``P = 2 * 4 * 4 = 32``.
    """
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    group_pad = torch.zeros(3, 2, dtype=torch.bool)
    group_pad[1, 1] = True
    return {"x": x, "group_pad": group_pad}


@pytest.fixture
def make_model() -> Callable[..., torch.nn.Module]:
    """``make_model(**overrides)``: a seeded ``mae_vit_tiny`` over 2D images with groups ``[2, 1]``."""
    from maecore.models import create_model

    def build(**overrides):
        torch.manual_seed(0)
        kwargs = {"ndim": 2, "group_channels": [2, 1], "patch_size": 4, **overrides}
        return create_model("mae_vit_tiny", **kwargs)

    return build
