"""Pure-torch point ops against brute-force references; pytorch3d compared where installed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maecore import pointops as P
from maecore.losses import masked_chamfer


def _cloud(b: int, n: int, seed: int = 0, d: int = 3) -> torch.Tensor:
    return torch.randn(b, n, d, generator=torch.Generator().manual_seed(seed))


def test_chamfer_matches_brute_force_and_chunking():
    a, b = _cloud(2, 300, 0), _cloud(2, 170, 1)
    full = torch.cdist(a, b) ** 2
    d_ab, d_ba = P.chamfer_distance(a, b, chunk=64)
    assert torch.allclose(d_ab, full.min(2).values, atol=1e-4)
    assert torch.allclose(d_ba, full.min(1).values, atol=1e-4)
    assert torch.allclose(P.chamfer_l2(a, b, chunk=1000), P.chamfer_l2(a, b, chunk=37), atol=1e-5)
    assert torch.allclose(P.chamfer_l2(a, b), P.chamfer_l2(b, a))
    assert torch.allclose(P.chamfer_l2(a, a), torch.zeros(2), atol=1e-5)


def test_chamfer_is_differentiable():
    a = _cloud(1, 50, 0).requires_grad_(True)
    P.chamfer_l2(a, _cloud(1, 40, 1), chunk=16).sum().backward()
    assert a.grad is not None and torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0


def test_knn_matches_sorted_brute_force():
    q, pts = _cloud(2, 20, 2), _cloud(2, 100, 3)
    dist, idx = P.knn(q, pts, 5, chunk=7)
    ref = torch.cdist(q, pts) ** 2
    ref_d, ref_i = ref.sort(-1)
    assert torch.equal(idx, ref_i[..., :5])
    assert torch.allclose(dist, ref_d[..., :5], atol=1e-4)


def _fps_reference(x: np.ndarray, n: int) -> list[int]:
    picks = [0]
    nearest = ((x - x[0]) ** 2).sum(1)
    for _ in range(n - 1):
        nxt = int(nearest.argmax())
        picks.append(nxt)
        nearest = np.minimum(nearest, ((x - x[nxt]) ** 2).sum(1))
    return picks


def test_fps_matches_greedy_reference():
    pts = _cloud(3, 200, 4)
    idx = P.farthest_point_sample(pts, 16)
    for b in range(3):
        assert idx[b].tolist() == _fps_reference(pts[b].double().numpy(), 16)
        assert len(set(idx[b].tolist())) == 16
    rnd = P.farthest_point_sample(pts, 16, start="random", generator=torch.Generator().manual_seed(0))
    assert len(set(rnd[0].tolist())) == 16


def _ball_reference(q: np.ndarray, pts: np.ndarray, r: float, k: int) -> list[list[int]]:
    out = []
    for c in q:
        inside = [i for i, p in enumerate(pts) if ((p - c) ** 2).sum() <= r * r][:k]
        out.append(inside + [inside[0]] * (k - len(inside)) if inside else [-1] * k)
    return out


def test_ball_query_matches_loop_reference():
    pts = _cloud(2, 80, 5)
    q = torch.cat([pts[:, :6], torch.full((2, 1, 3), 50.0)], 1)  # the last query has no neighbour
    idx = P.ball_query(q, pts, 0.8, 4)
    for b in range(2):
        assert idx[b].tolist() == _ball_reference(q[b].numpy(), pts[b].numpy(), 0.8, 4)


def test_masked_chamfer_loss_scores_only_weighted_tokens():
    pred, target = _cloud(2, 8 * 3, 6).reshape(2, 3, 24), _cloud(2, 8 * 3, 7).reshape(2, 3, 24)
    weight = torch.tensor([[1.0, 0, 0], [0, 1, 0]])
    loss = masked_chamfer(pred, target, weight)
    ref = torch.stack([
        P.chamfer_l2(pred[0, 0].reshape(1, 8, 3), target[0, 0].reshape(1, 8, 3)),
        P.chamfer_l2(pred[1, 1].reshape(1, 8, 3), target[1, 1].reshape(1, 8, 3)),
    ]).mean()
    assert torch.allclose(loss, ref, atol=1e-5)
    zero = masked_chamfer(pred.requires_grad_(True), target, torch.zeros(2, 3))
    assert zero.item() == 0.0
    zero.backward()
    with pytest.raises(ValueError, match=r"token width 24 is not a multiple of point_dim 5"):
        masked_chamfer(pred, target, weight, point_dim=5)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: P.knn(_cloud(1, 4), _cloud(1, 3), 5), r"k must be in \[1, 3\] for clouds of 3 points, got 5"),
        (lambda: P.farthest_point_sample(_cloud(1, 10), 11), r"n_samples must be in \[1, 10\]"),
        (lambda: P.farthest_point_sample(_cloud(1, 10), 2, start="middle"), r"start must be 'first' or 'random'"),
        (lambda: P.chamfer_distance(_cloud(1, 4)[0], _cloud(1, 4)), r"a must be \[B, N, D\], got shape \[4, 3\]"),
        (lambda: P.chamfer_distance(_cloud(1, 4), _cloud(2, 4)), r"clouds must share batch and point dims"),
        (lambda: P.knn(torch.full((1, 2, 3), float("nan")), _cloud(1, 4), 1), r"query holds non-finite coordinates"),
        (lambda: P.ball_query(_cloud(1, 2), _cloud(1, 4), 0.0, 2), r"radius must be > 0 and k >= 1"),
        (lambda: P.knn(_cloud(1, 2), _cloud(1, 4), 1, backend="cuda"), r"backend must be 'auto', 'torch' or 'pytorch3d'"),
    ],
)
def test_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.skipif(P.backend() == "pytorch3d", reason="pytorch3d is installed")
def test_missing_pytorch3d_names_the_extra():
    with pytest.raises(ImportError, match=r"pip install 'mae3d\[pytorch3d\]'"):
        P.chamfer_distance(_cloud(1, 4), _cloud(1, 4), backend="pytorch3d")


@pytest.mark.skipif(P.backend() != "pytorch3d", reason="pytorch3d is not installed (optional backend)")
def test_pytorch3d_agrees_with_torch():
    a, b = _cloud(2, 500, 0), _cloud(2, 400, 1)
    for x, y in zip(P.chamfer_distance(a, b, backend="torch"), P.chamfer_distance(a, b, backend="pytorch3d")):
        assert torch.allclose(x, y, atol=1e-4)
    assert torch.equal(P.knn(a, b, 8, backend="torch")[1], P.knn(a, b, 8, backend="pytorch3d")[1])
