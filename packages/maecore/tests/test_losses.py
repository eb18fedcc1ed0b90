"""Masked reconstruction losses against hand computations and loop references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from maecore.losses import (
    LOSSES,
    get_loss,
    grid_alpha_mse,
    masked_chamfer,
    masked_l1,
    masked_mse,
    normalize_targets,
)


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _inputs(b: int = 2, l: int = 5, p: int = 12, seed: int = 0):
    """pred, target, fractional weights (some 0) and elem_valid with a narrow group (last 3 columns absent)."""
    pred, target = _rand(b, l, p, seed=seed), _rand(b, l, p, seed=seed + 1)
    weight = torch.tensor([[1.0, 0.0, 2.0, 0.5, 0.0], [0.0, 1.0, 1.0, 0.0, 3.0]])[:b, :l]
    elem_valid = torch.ones(b, l, p, dtype=torch.bool)
    elem_valid[:, 1::2, -3:] = False
    return pred, target, weight, elem_valid


def _loop_reference(pred, target, weight, elem_valid, err, norm_pix=False, eps=1e-6) -> float:
    """Plain-python per-token loop over the valid entries, then the weighted mean."""
    num = den = 0.0
    for b in range(pred.shape[0]):
        for l in range(pred.shape[1]):
            w = float(weight[b, l])
            if w == 0:
                continue
            v = elem_valid[b, l].numpy()
            p, t = pred[b, l].double().numpy()[v], target[b, l].double().numpy()[v]
            if norm_pix:
                t = (t - t.mean()) / math.sqrt(t.var() + eps)  # numpy var: population (ddof=0)
            num += w * float(np.mean(err(p - t)))
            den += w
    return num / den


# ----------------------------------------------------------------------------- MSE / L1
@pytest.mark.parametrize(("loss", "err"), [(masked_mse, np.square), (masked_l1, np.abs)])
@pytest.mark.parametrize("norm_pix", [False, True])
def test_elementwise_losses_match_loop_reference(loss, err, norm_pix):
    pred, target, weight, elem_valid = _inputs()
    got = loss(pred, target, weight, elem_valid, norm_pix=norm_pix)
    assert got.item() == pytest.approx(_loop_reference(pred, target, weight, elem_valid, err, norm_pix), rel=1e-5)
    all_valid = torch.ones_like(elem_valid)
    assert torch.allclose(loss(pred, target, weight, None, norm_pix=norm_pix), loss(pred, target, weight, all_valid, norm_pix=norm_pix))


def test_mse_weighted_mean_by_hand():
    pred = torch.zeros(1, 2, 2)
    target = torch.tensor([[[1.0, 1.0], [2.0, 0.0]]])  # per-token MSE 1 and 2
    assert masked_mse(pred, target, torch.tensor([[1.0, 3.0]])).item() == pytest.approx((1 * 1 + 3 * 2) / 4)
    assert masked_mse(pred, target, torch.tensor([[True, False]])).item() == 1.0
    assert masked_l1(pred, target, torch.tensor([[0.0, 1.0]])).item() == 1.0  # |2| + |0| over 2


def test_norm_pix_by_hand():
    # valid entries [1, 2, 3]: mean 2, population variance 2/3; the 4th entry is padding
    target = torch.tensor([[[1.0, 2.0, 3.0, 100.0]]])
    pred = torch.tensor([[[1.0, 1.0, 1.0, -7.0]]])
    valid = torch.tensor([[[True, True, True, False]]])
    z = torch.tensor([-1.0, 0.0, 1.0]) / math.sqrt(2 / 3 + 1e-6)
    assert torch.allclose(normalize_targets(target, valid), torch.cat([z, torch.zeros(1)]).view(1, 1, 4))
    # mean (1 - z)^2 = 1 + mean z^2 = 1 + var / (var + eps)
    expected = 1 + (2 / 3) / (2 / 3 + 1e-6)
    assert masked_mse(pred, target, torch.ones(1, 1), valid, norm_pix=True).item() == pytest.approx(expected, rel=1e-6)


# ----------------------------------------------------------------------------- every loss
def _call(name: str, pred, target, weight, elem_valid):
    kwargs = {"chamfer": {"point_dim": 3}, "grid_alpha_mse": {"channels": 4}}.get(name, {})
    return LOSSES[name](pred, target, weight, elem_valid, **kwargs)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_nothing_scored_is_exactly_zero_with_a_gradient_path(name):
    pred, target, _, elem_valid = _inputs()
    pred[0, 0, 0] = float("nan")  # e.g. an all-padding attention row: must not leak into the loss
    pred.requires_grad_(True)
    for weight in (torch.zeros(2, 5), torch.zeros(2, 5, dtype=torch.bool)):
        loss = _call(name, pred, target, weight, elem_valid)
        assert loss.item() == 0.0 and loss.requires_grad
        (grad,) = torch.autograd.grad(loss, pred)
        assert torch.equal(grad, torch.zeros_like(pred))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_invalid_entries_and_unscored_tokens_do_not_change_loss_or_gradient(name):
    pred, target, weight, elem_valid = _inputs()
    junk = ~elem_valid | (weight == 0).unsqueeze(-1)
    pred2 = torch.where(junk, torch.full_like(pred, float("nan")), pred)
    target2 = torch.where(junk, torch.full_like(target, 1e6), target)
    p1, p2 = pred.clone().requires_grad_(True), pred2.clone().requires_grad_(True)
    l1, l2 = _call(name, p1, target, weight, elem_valid), _call(name, p2, target2, weight, elem_valid)
    assert torch.isfinite(l1) and l1.item() > 0
    assert torch.equal(l1, l2)
    (g1,), (g2,) = torch.autograd.grad(l1, p1), torch.autograd.grad(l2, p2)
    assert torch.equal(g1, g2) and torch.equal(g1[junk], torch.zeros(int(junk.sum())))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradcheck(name):
    pred, target, weight, elem_valid = (t.double() if t.is_floating_point() else t for t in _inputs(p=12, seed=3))
    pred.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: _call(name, x, target, weight, elem_valid), (pred,))


def test_bool_weight_equals_float_weight():
    pred, target, weight, elem_valid = _inputs()
    for loss in LOSSES.values():
        kw = {"channels": 4} if loss is grid_alpha_mse else {}
        assert torch.equal(loss(pred, target, weight > 0, elem_valid, **kw), loss(pred, target, (weight > 0).float(), elem_valid, **kw))


# ----------------------------------------------------------------------------- Chamfer
def _chamfer_reference(p: np.ndarray, t: np.ndarray) -> float:
    d = ((p[:, None] - t[None]) ** 2).sum(-1)
    return d.min(1).mean() + d.min(0).mean()


def test_masked_chamfer_matches_loop_reference():
    pred, target, weight, elem_valid = _inputs(p=12)  # 4 points per token; odd tokens lack their last point
    got = masked_chamfer(pred, target, weight, elem_valid)
    num = den = 0.0
    for b in range(2):
        for l in range(5):
            if weight[b, l] == 0:
                continue
            k = 3 if l % 2 else 4
            p = pred[b, l].double().numpy().reshape(4, 3)[:k]
            t = target[b, l].double().numpy().reshape(4, 3)[:k]
            num += float(weight[b, l]) * _chamfer_reference(p, t)
            den += float(weight[b, l])
    assert got.item() == pytest.approx(num / den, rel=1e-5)


def test_masked_chamfer_is_permutation_invariant_and_zero_on_a_perfect_match():
    pred, target, weight, _ = _inputs(p=12)
    perm = torch.tensor([2, 0, 3, 1])
    shuffled = target.view(2, 5, 4, 3)[:, :, perm].reshape(2, 5, 12)
    assert masked_chamfer(shuffled, target, weight).item() == 0.0
    assert masked_chamfer(pred, shuffled, weight).item() == pytest.approx(masked_chamfer(pred, target, weight).item(), rel=1e-6)
    assert masked_chamfer(pred, target, weight, point_dim=2).item() != masked_chamfer(pred, target, weight).item()


def test_masked_chamfer_non_finite_scored_prediction_gives_nan_not_an_error():
    pred, target, weight, _ = _inputs(p=12)
    pred[0, 0, 0] = float("inf")  # token (0, 0) is scored
    assert math.isnan(masked_chamfer(pred, target, weight).item())


# ----------------------------------------------------------------------------- radiance grids
def test_grid_alpha_mse_by_hand():
    # 4 channels (RGB + alpha) x 2 voxels, channel first: [r0 r1 g0 g1 b0 b1 a0 a1]
    target = torch.tensor([[[0.2, 0.9, 0.4, 0.9, 0.6, 0.9, 0.5, 0.005]]])  # voxel 0 occupied, voxel 1 empty
    pred = torch.tensor([[[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.3, 0.105]]])
    rgb = (0.2**2 + 0.4**2 + 0.6**2) / 3  # voxel 1's colour does not count
    alpha = (0.2**2 + 0.1**2) / 2
    assert grid_alpha_mse(pred, target, torch.ones(1, 1)).item() == pytest.approx(rgb + alpha, rel=1e-6)
    # threshold above both alphas: colour term vanishes (empty token), alpha term unchanged
    assert grid_alpha_mse(pred, target, torch.ones(1, 1), alpha_threshold=0.6).item() == pytest.approx(alpha, rel=1e-6)
    # elem_valid drops voxel 1 entirely (all its channels)
    valid = torch.tensor([[[True, False] * 4]])
    assert grid_alpha_mse(pred, target, torch.ones(1, 1), valid).item() == pytest.approx(rgb + 0.2**2, rel=1e-6)


# ----------------------------------------------------------------------------- registry and errors
def test_get_loss_returns_registered_functions():
    assert get_loss("mse") is masked_mse and get_loss("l1") is masked_l1
    assert get_loss("chamfer") is masked_chamfer and get_loss("grid_alpha_mse") is grid_alpha_mse
    with pytest.raises(KeyError, match=r"unknown loss 'huber'; known losses: chamfer, grid_alpha_mse, l1, mse"):
        get_loss("huber")


_P, _T, _W = torch.zeros(2, 3, 12), torch.zeros(2, 3, 12), torch.ones(2, 3)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: masked_mse(_P[0], _T[0], _W), r"pred must be \[B, L, P\], got shape \[3, 12\]"),
        (lambda: masked_mse(_P, _T[:, :2], _W), r"target must have pred's shape \[2, 3, 12\], got \[2, 2, 12\]"),
        (lambda: masked_l1(_P, _T, _W[:, :2]), r"weight must be \[B, L\] = \[2, 3\], got \[2, 2\]"),
        (lambda: masked_mse(_P, _T, _W, torch.ones(2, 3, 12)), r"elem_valid must be None or a bool tensor of shape \[2, 3, 12\], got torch.float32"),
        (lambda: masked_mse(_P, _T, _W, torch.ones(2, 3, 6, dtype=torch.bool)), r"elem_valid .* got torch.bool \[2, 3, 6\]"),
        (lambda: masked_mse(_P, _T, _W, eps=0.0), r"eps must be > 0, got 0.0"),
        (lambda: masked_chamfer(_P, _T, _W, point_dim=5), r"point_dim must be an int >= 1 dividing the token width P = 12, got 5"),
        (lambda: masked_chamfer(_P, _T, _W, point_dim=0), r"point_dim must be an int >= 1 .* got 0"),
        (lambda: masked_chamfer(_P, _T[..., :9], _W), r"target must have pred's shape"),
        (lambda: grid_alpha_mse(_P, _T, _W, channels=5), r"channels must be an int >= 2 dividing the token width P = 12, got 5"),
        (lambda: grid_alpha_mse(_P, _T, _W, channels=1), r"channels must be an int >= 2 .* got 1"),
        (lambda: grid_alpha_mse(_P, _T, _W, alpha_threshold=float("nan")), r"alpha_threshold must be a real number, got nan"),
    ],
)
def test_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()
