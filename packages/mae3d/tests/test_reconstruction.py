"""Masked reconstruction beside the nearest-visible-patch baseline, on the bundled YCB clouds."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from mae3d.cli import main
from mae3d.data import PointClouds, expand
from mae3d.reconstruction import (
    BASELINE_METHOD,
    masked_chamfer_l2,
    nearest_visible_fill,
    reconstruct_clouds,
    reconstruct_points_file,
)
from maecore.masking import random_masking
from maecore.models import create_model


@pytest.fixture(scope="module")
def clouds() -> torch.Tensor:
    ds = PointClouds.from_files(expand(None)[:4], 512)
    return torch.stack([ds[i]["points"] for i in range(len(ds))])


@pytest.fixture(scope="module")
def grouped(clouds) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(centres [4, 16, 3], patches [4, 16, 16, 3], hidden [4, 16])``, 60 % of patches masked."""
    centres, patches = create_model("mae3d_pointmae_tiny").tokenizer.group({"points": clouds})
    pad = torch.zeros(patches.shape[:2], dtype=torch.bool)
    hidden = random_masking(pad, 0.6, torch.Generator().manual_seed(0)).mask
    return centres, patches, hidden


def test_fill_is_an_exact_copy_of_the_nearest_visible_patch(clouds, grouped):
    centres, patches, hidden = grouped
    filled = nearest_visible_fill(centres, patches, hidden)
    assert filled.shape == patches.shape
    assert torch.equal(filled[~hidden], patches[~hidden])  # visible patches untouched
    for b, g in hidden.nonzero().tolist():
        vis = (~hidden[b]).nonzero().flatten()
        source = [j for j in vis.tolist() if torch.equal(filled[b, g], patches[b, j])]
        assert source, f"masked patch {g} of cloud {b} is not a copy of a visible patch"
        # the copied patch is the visible one whose centre is nearest (float64, independent of cdist)
        d = (centres[b, vis].double() - centres[b, g].double()).pow(2).sum(-1)
        nearest = d.min().item()
        assert any(d[vis.tolist().index(j)].item() <= nearest + 1e-9 for j in source)
        # and its points, back at the source's centre, are points of the input cloud
        back = filled[b, g] + centres[b, source[0]]
        assert (back[:, None] - clouds[b]).norm(dim=-1).min(-1).values.max() < 1e-6  # float32 round-off


def test_masked_chamfer_scores_only_masked_patches(grouped):
    centres, patches, hidden = grouped
    assert torch.equal(masked_chamfer_l2(patches, patches, hidden), torch.zeros(4))  # a perfect prediction
    baseline = nearest_visible_fill(centres, patches, hidden)
    score = masked_chamfer_l2(baseline, patches, hidden)
    assert score.shape == (4,) and (score > 0).all()
    noisy = baseline.clone()
    noisy[~hidden] += 1.0  # visible patches are never scored
    assert torch.equal(masked_chamfer_l2(noisy, patches, hidden), score)
    # independently, in float64: per masked patch, the mean squared nearest distance both ways
    for b in range(len(patches)):
        each = []
        for g in hidden[b].nonzero().flatten().tolist():
            d = torch.cdist(baseline[b, g].double(), patches[b, g].double()).pow(2)
            each.append(d.min(1).values.mean().item() + d.min(0).values.mean().item())
        assert score[b].item() == pytest.approx(np.mean(each), rel=1e-4)


def test_reconstruct_clouds_scores_the_model_like_its_loss(clouds):
    torch.manual_seed(0)
    model = create_model("mae3d_pointmae_tiny").train()
    r = reconstruct_clouds(model, {"points": clouds[:1]}, seed=3)
    assert model.training  # left as it was found
    assert r["pred"].shape == r["patches"].shape == r["baseline"].shape == (1, 16, 16, 3)
    assert r["hidden"].sum().item() == round(16 * 0.6)
    assert torch.equal(r["baseline"], nearest_visible_fill(r["centres"], r["patches"], r["hidden"]))
    ours, base = r["masked_chamfer"].item(), r["baseline_masked_chamfer"].item()
    assert math.isfinite(ours) and math.isfinite(base) and ours > 0 and base > 0
    # the same masked patches and the same Chamfer as the loss the model trains with
    with torch.no_grad():
        out = model.eval()({"points": clouds[:1]}, generator=torch.Generator().manual_seed(3))
    assert torch.equal(out.mask, r["hidden"])
    assert ours == pytest.approx(out.loss.item(), rel=1e-5)


def test_reconstruct_points_file_reports_both_scores(tmp_path: Path):
    model = create_model("mae3d_pointmae_tiny").eval()
    model.meta = {"kind": "points", "n_points": 512}
    out = tmp_path / "rec.ply"
    summary = reconstruct_points_file(model, expand(None)[0], out, seed=1, plot=tmp_path / "rec.png")
    assert summary["masked_patches"] == 10 and summary["predicted_points"] == 10 * 16
    assert summary["visible_points"] == 6 * 16 and len(trimesh.load(out).vertices) == 16 * 16
    assert math.isfinite(summary["masked_chamfer"]) and math.isfinite(summary["baseline_masked_chamfer"])
    assert summary["baseline_masked_chamfer"] > 0 and summary["baseline_method"] == BASELINE_METHOD
    assert "unit-sphere frame" in summary["chamfer"] and Path(summary["plot"]).stat().st_size > 5000


def test_fill_and_score_errors(grouped):
    centres, patches, hidden = grouped
    every = hidden.clone()
    every[1] = True
    with pytest.raises(ValueError, match=r"cloud 1 has no visible patch to copy"):
        nearest_visible_fill(centres, patches, every)
    with pytest.raises(ValueError, match=r"patches must be \[B, G, k, 3\], got \[4, 16, 16, 2\]"):
        nearest_visible_fill(centres, patches[..., :2], hidden)
    with pytest.raises(ValueError, match=r"centres must be \[B, G, 3\] = \[4, 16, 3\], got \[4, 15, 3\]"):
        nearest_visible_fill(centres[:, :15], patches, hidden)
    with pytest.raises(ValueError, match=r"hidden must be a bool mask \[B, G\] = \[4, 16\], got torch.float32"):
        nearest_visible_fill(centres, patches, hidden.float())
    none = hidden.clone()
    none[2] = False
    with pytest.raises(ValueError, match=r"cloud 2 has no masked patch to score \(a mask ratio of 0 hides none\)"):
        masked_chamfer_l2(patches, patches, none)
    with pytest.raises(ValueError, match=r"pred and target must have the same shape, got \[4, 16, 8, 3\]"):
        masked_chamfer_l2(patches[:, :, :8], patches, hidden)
    with pytest.raises(ValueError, match=r"target must be \[B, G, k, 3\], got \[4, 16, 48\]"):
        masked_chamfer_l2(patches.flatten(2), patches.flatten(2), hidden)


def test_cli_reconstruct_refuses_a_model_that_masks_nothing(tmp_path: Path, capsys):
    model = create_model("mae3d_pointmae_tiny", mask_ratio=0.0)
    model.meta = {"kind": "points", "n_points": 512}
    model.save_pretrained(tmp_path / "export")
    args = ["reconstruct", "--model", str(tmp_path / "export"), "--input", str(expand(None)[0]),
            "--out", str(tmp_path / "rec.ply")]
    assert main(args) == 2
    assert "mae3d reconstruct: error: cloud 0 has no masked patch to score" in capsys.readouterr().err
