from __future__ import annotations

import pytest
import torch

import maecore.models as mm
from maecore.errors import ConfigError
from medmae.models import SIZES


@pytest.mark.parametrize("name", ["medmae_tiny", "medmae_bmmae_base"])
def test_registered_models_forward(name):
    """Every registered model: forward on a small volume, finite loss, group-budget masking at 75 %."""
    model = mm.create_model(name)
    patch = model.tokenizer.patch[0]
    x = torch.randn(1, 4, 2 * patch, 2 * patch, 2 * patch)
    out = model({"x": x, "group_pad": torch.tensor([[False, False, True, False]])},
                generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss)
    assert out.pred.shape == (1, 4 * 8, patch**3)
    assert model.tokenizer.group_names == ["t1", "t1ce", "t2", "flair"]
    assert model.mask_cfg == {"kind": "group_budget", "ratio": 0.75, "alpha": 1.0}
    real = ~out.pad
    assert int((~out.mask & real).sum()) == round(0.25 * int(real.sum()))
    assert bool(out.pad[0, 16:24].all())  # t2 absent: its 8 tokens are padding


def test_bmmae_base_matches_the_paper_size():
    model = mm.create_model("medmae_bmmae_base")
    assert model.embed_dim == 768 and len(model.encoder.blocks) == 12
    assert model.tokenizer.patch == (16, 16, 16)
    assert model.encoder.blocks[0].mlp[0].out_features == 1536
    assert model.decoder_embed.out_features == 384 and len(model.decoder.blocks) == 3
    n_encoder = sum(p.numel() for p in model.encoder.parameters())
    assert 55e6 < n_encoder < 60e6  # 12 blocks of width 768 with MLP ratio 2


def test_tiny_overrides_and_export_round_trip(tmp_path):
    model = mm.create_model("medmae_tiny", modalities=["t1", "t2", "pd"], patch_size=4, depth=1)
    assert model.tokenizer.group_names == ["t1", "t2", "pd"] and model.tokenizer.patch == (4, 4, 4)
    model.meta = {"spacing": [2.0, 2.0, 2.0]}
    model.save_pretrained(tmp_path)
    back = mm.load_pretrained(tmp_path)
    assert back.meta == {"spacing": [2.0, 2.0, 2.0]}
    x = {"x": torch.randn(2, 3, 8, 8, 8)}
    torch.testing.assert_close(back.encode(x), model.encode(x))
    assert SIZES["tiny"]["embed_dim"] == model.embed_dim


def test_unknown_argument_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="valid arguments: .*modalities"):
        mm.create_model("medmae_tiny", channels=4)
