"""Point-MAE and grid MAE models: tokens, loss on masked patches, learning, baseline, export."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mae3d.data import PointClouds, expand
from mae3d.reconstruction import reconstruct_clouds
from maecore.models import create_model, load_pretrained


@pytest.fixture(scope="module")
def clouds() -> torch.Tensor:
    ds = PointClouds.from_files(expand(None), 512)
    return torch.stack([ds[i]["points"] for i in range(len(ds))])


def test_point_tokens_are_local_patches(clouds):
    model = create_model("mae3d_pointmae_tiny")
    batch = {"points": clouds[:2]}
    centres, patches = model.tokenizer.group(batch)
    assert centres.shape == (2, 16, 3) and patches.shape == (2, 16, 16, 3)
    # every patch point is one of the cloud's points, and close to its centre
    back = (patches + centres[:, :, None]).reshape(2, -1, 3)
    d = torch.cdist(back, clouds[:2]).min(-1).values
    assert d.max() < 1e-3  # cdist round-off
    assert patches.norm(dim=-1).max() < 1.0
    tokens = model.tokenizer.tokens(batch)
    assert tokens.x.shape == (2, 16, 64) and torch.equal(tokens.pos, centres)
    pred = model.tokenizer.targets(batch)
    assert torch.allclose(model.tokenizer.untokenize(pred, batch), patches + centres[:, :, None])


def test_pointmae_learns_and_beats_nearest_visible_patch_baseline(clouds):
    torch.manual_seed(0)
    model = create_model("mae3d_pointmae_tiny")
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    first = None
    for step in range(80):
        batch = {"points": clouds[torch.randint(0, 20, (8,), generator=g)]}
        out = model(batch, generator=torch.Generator().manual_seed(step))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        first = first if first is not None else out.loss.item()
    assert out.loss.item() < 0.7 * first
    # the baseline: each masked patch filled with the nearest visible patch's relative points
    r = reconstruct_clouds(model, {"points": clouds}, seed=123)
    assert r["masked_chamfer"].mean() < r["baseline_masked_chamfer"].mean()


def test_grid_model_forward_and_alpha_loss():
    model = create_model("mae3d_nerfmae_tiny")
    x = torch.zeros(2, 4, 16, 16, 16)
    x[:, :, 4:12, 4:12, 4:12] = 0.5
    out = model({"x": x}, generator=torch.Generator().manual_seed(0))
    assert out.pred.shape == (2, 64, 4 * 64) and torch.isfinite(out.loss)
    assert out.mask.float().mean() == pytest.approx(0.75)


def test_export_round_trip(tmp_path: Path, clouds):
    model = create_model("mae3d_pointmae_tiny").eval()
    model.save_pretrained(tmp_path)
    loaded = load_pretrained(tmp_path).eval()
    batch = {"points": clouds[:3]}
    assert torch.equal(loaded.encode(dict(batch)), model.encode(dict(batch)))


def test_model_errors(clouds):
    with pytest.raises(ValueError, match=r"clouds of 8 points are too small for 16 patches of 16 points"):
        create_model("mae3d_pointmae_tiny")({"points": clouds[:1, :8]})
    with pytest.raises(ValueError, match=r"grid resolution 18 must be a multiple of patch_size 4"):
        create_model("mae3d_nerfmae_tiny", resolution=18)
