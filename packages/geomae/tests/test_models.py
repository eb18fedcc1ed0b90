"""Every registered geomae model: construction, a forward pass, embeddings, band subsets."""

from __future__ import annotations

import pytest
import torch

from geomae.bands import PRESETS
from geomae.tokenizers import band_group_tokenizer, position_embeddings
from maecore.models import create_model, list_models

TINY = {"geomae_mae_tiny": 32, "geomae_simmim_tiny": 32}


def test_registry_lists_geomae_models():
    assert set(list_models("geomae")) == {"geomae_mae_tiny", "geomae_mae_vitb16", "geomae_simmim_satvision",
                                          "geomae_simmim_tiny"}


@pytest.mark.parametrize("name", sorted(TINY))
def test_tiny_forward_masks_and_ignores_nodata(name: str):
    torch.manual_seed(0)
    model = create_model(name)
    x = torch.randn(2, 3, TINY[name], TINY[name])
    x[0, :, :8, :8] = float("nan")  # nodata corner: padding tokens, never scored
    out = model({"x": x, "group_pad": torch.zeros(2, 1, dtype=torch.bool)}, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss) and out.loss > 0
    assert out.pad[0].any() and not out.pad[1].any()
    assert not (out.mask & out.pad).any()
    out.loss.backward()
    emb = model.encode({"x": x})
    assert emb.shape[0] == 2 and torch.isfinite(emb).all()


def test_published_sizes():
    vitb = create_model("geomae_mae_vitb16")
    enc = sum(p.numel() for n, p in vitb.named_parameters() if n.startswith("encoder"))
    assert 80e6 < enc < 90e6 and vitb.tokenizer.group_names == ["rgb", "nir"]
    sat = create_model("geomae_simmim_satvision")
    assert sat.img_size == 128 and sat.mask_cfg == {"kind": "block", "ratio": 0.6, "block": 8}
    assert sat.tokenizer.group_channels == [6, 8] and sat.tokenizer.in_channels == 14
    assert sat.stages[0].blocks[0].window_size == (8, 8)


def test_missing_band_group_is_padding():
    model = create_model("geomae_mae_tiny", preset="naip")
    x = torch.randn(1, 4, 32, 32)
    x[:, 3] = float("nan")
    out = model({"x": x, "group_pad": torch.tensor([[False, True]])})
    n = 16
    assert out.pad[0, n:].all() and not out.pad[0, :n].any()
    e_all = model.encode({"x": x, "group_pad": torch.tensor([[False, True]])})
    e_rgb = model.encode({"x": x}, groups=["rgb"])
    torch.testing.assert_close(e_all, e_rgb)


def test_user_preset_dict_builds_a_model():
    preset = {"name": "two", "bands": [{"name": "a"}, {"name": "b"}], "groups": {"a": ["a"], "b": ["b"]}}
    model = create_model("geomae_simmim_tiny", preset=preset)
    assert model.tokenizer.group_names == ["a", "b"]


def test_position_embeddings_average_groups_and_mark_empty():
    tok = band_group_tokenizer(PRESETS["naip"], 8, 16)
    assert tok.group_channels == [3, 1]
    emb = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(1, 8, 3)
    pad = torch.zeros(1, 8, dtype=torch.bool)
    pad[0, 0] = pad[0, 4] = True  # position 0: no group at all
    pad[0, 5] = True  # position 1: only group 0
    grid = position_embeddings(emb, pad, 2, (2, 2))
    assert grid.shape == (1, 3, 2, 2)
    assert torch.isnan(grid[0, :, 0, 0]).all()
    torch.testing.assert_close(grid[0, :, 0, 1], emb[0, 1])
    torch.testing.assert_close(grid[0, :, 1, 0], (emb[0, 2] + emb[0, 6]) / 2)
