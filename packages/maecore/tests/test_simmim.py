"""SimMIM with a Swin-V2 encoder: mask tokens inside the encoder, L1 on masked patches only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from maecore.errors import ConfigError
from maecore.models import create_model, load_pretrained


def _model(**kw):
    torch.manual_seed(0)
    return create_model("simmim_swin_tiny", **kw)


@pytest.mark.parametrize("groups", [[3], [2, 1]])
def test_forward_shapes_and_mask_fraction(groups):
    model = _model(group_channels=groups)
    out = model({"x": torch.randn(2, 3, 32, 32)}, generator=torch.Generator().manual_seed(0))
    g = len(groups)
    assert out.pred.shape == (2, g * 64, max(groups) * 16)
    assert torch.isfinite(out.loss)
    # 60 % of the 16 mask blocks (8 px = 2x2 tokens) are hidden, in every group alike
    assert torch.allclose(out.mask.float().mean(1), torch.full((2,), 10 / 16))
    per_group = out.mask.reshape(2, g, 64)
    assert (per_group == per_group[:, :1]).all()


def test_absent_group_is_never_scored():
    model = _model(group_channels=[2, 1])
    gp = torch.tensor([[False, True], [False, False]])
    out = model({"x": torch.randn(2, 3, 32, 32), "group_pad": gp}, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss)
    assert not out.mask[0, 64:].any() and out.pad[0, 64:].all()


def test_mask_tokens_enter_the_encoder():
    model = _model()
    seen = {}
    model.stages[0].register_forward_pre_hook(lambda mod, args: seen.setdefault("x", args[0]))
    model({"x": torch.randn(1, 3, 32, 32)}, generator=torch.Generator().manual_seed(0))
    assert seen["x"].shape == (1, 8, 8, 32)  # every position, masked ones as the mask token
    rows = seen["x"].reshape(64, 32)
    assert (rows == model.mask_token.reshape(1, 32)).all(1).sum() == 40


def test_loss_depends_only_on_masked_pixels():
    model = _model()
    batch = {"x": torch.randn(1, 3, 32, 32)}
    gen = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    out = model(batch, generator=gen())
    hidden = model.tokenizer.untokenize(out.mask[..., None].expand_as(out.target).float(), batch).bool()
    # change the encoder's view only at hidden pixels: those become mask tokens, so the encoder
    # input is unchanged, and the loss changes because the targets there change
    changed = {"x": batch["x"].masked_fill(hidden, 3.0)}
    out2 = model(changed, generator=gen())
    assert torch.equal(out2.mask, out.mask)
    assert torch.allclose(out2.pred, out.pred)
    assert not torch.allclose(out2.loss, out.loss)


def test_loss_falls_on_smooth_images():
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    g = torch.Generator().manual_seed(0)
    f = torch.rand(64, 3, 2, generator=g) * 0.3
    x = torch.sin(f[..., :1, None] * yy + f[..., 1:, None] * xx)
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for step in range(30):
        out = model({"x": x[torch.randint(0, 64, (16,), generator=g)]}, generator=torch.Generator().manual_seed(step))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:3]) / 3


def test_export_round_trip_and_untokenize(tmp_path: Path):
    model = _model(group_channels=[2, 1]).eval()
    batch = {"x": torch.randn(2, 3, 32, 32)}
    model.save_pretrained(tmp_path)
    loaded = load_pretrained(tmp_path).eval()
    assert torch.equal(loaded.encode(batch), model.encode(batch))
    assert model.encode(batch).shape == (2, 64)
    out = model(batch)
    assert model.tokenizer.untokenize(out.pred, batch).shape == batch["x"].shape


def test_errors():
    with pytest.raises(ValueError, match=r"img_size 36 must be a multiple of patch_size \* 2\*\*\(stages-1\) = 8"):
        _model(img_size=36)
    with pytest.raises(ValueError, match=r"mask_patch 6 must be a multiple of patch_size 4"):
        _model(mask_patch=6)
    with pytest.raises(ValueError, match=r"takes 32 x 32 inputs, got \(16, 16\)"):
        _model()({"x": torch.randn(1, 3, 16, 16)})
    with pytest.raises(ConfigError, match=r"has no argument\(s\) \['ndim'\]"):
        _model(ndim=3)
    with pytest.raises(ValueError, match=r"unknown group\(s\) \['nir'\]"):
        _model().encode({"x": torch.randn(1, 3, 32, 32)}, groups=["nir"])
