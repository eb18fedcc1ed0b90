"""Pure-torch point ops against brute-force references; pytorch3d compared where installed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maecore import pointops as P


def _cloud(b: int, n: int, seed: int = 0, d: int = 3) -> torch.Tensor:
    return torch.randn(b, n, d, generator=torch.Generator().manual_seed(seed))


def _sqdist64(q: torch.Tensor, p: torch.Tensor) -> np.ndarray:
    """Brute-force squared distances ``[B, S, N]`` in float64."""
    q64, p64 = q.double().numpy(), p.double().numpy()
    return ((q64[:, :, None, :] - p64[:, None, :, :]) ** 2).sum(-1)


# ----------------------------------------------------------------------------- Chamfer
@pytest.mark.parametrize(("n", "m", "d"), [(300, 170, 3), (65, 1, 3), (129, 200, 2), (90, 70, 10)])
def test_chamfer_matches_brute_force(n, m, d):
    a, b = _cloud(2, n, 0, d), _cloud(2, m, 1, d)
    full = _sqdist64(a, b)
    d_ab, d_ba = P.chamfer_distance(a, b)
    np.testing.assert_allclose(d_ab.numpy(), full.min(2), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d_ba.numpy(), full.min(1), rtol=1e-5, atol=1e-6)
    ref_l2 = full.min(2).mean(1) + full.min(1).mean(1)
    np.testing.assert_allclose(P.chamfer_l2(a, b).numpy(), ref_l2, rtol=1e-5)


@pytest.mark.parametrize("chunk", [1, 64, 1000, 10**9])
def test_chamfer_chunked_equals_unchunked(chunk):
    a, b = _cloud(2, 300, 2), _cloud(2, 250, 3)
    ref = P.chamfer_distance(a, b, chunk=10**9)
    got = P.chamfer_distance(a, b, chunk=chunk)
    assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])


def test_chamfer_symmetric_zero_on_identical_and_translation_invariant():
    a, b = _cloud(3, 200, 4), _cloud(3, 150, 5)
    d_ab, d_ba = P.chamfer_distance(a, b)
    e_ba, e_ab = P.chamfer_distance(b, a)
    assert torch.equal(d_ab, e_ab) and torch.equal(d_ba, e_ba)
    assert torch.equal(P.chamfer_l2(a, b), P.chamfer_l2(b, a))
    assert torch.equal(P.chamfer_l2(a, a), torch.zeros(3))
    # far from the origin (a scan in metres) the result is still right: clouds are centred first
    offset = torch.tensor([1000.0, -2000.0, 500.0])
    full = _sqdist64(a, b)
    np.testing.assert_allclose(P.chamfer_distance(a + offset, b + offset)[0].numpy(), full.min(2), rtol=2e-3, atol=1e-3)


def test_chamfer_gradient_matches_brute_force_autograd():
    a0, b0 = _cloud(2, 40, 6).double(), _cloud(2, 30, 7).double()
    a, b = a0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
    P.chamfer_l2(a, b).sum().backward()
    ra, rb = a0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
    full = ((ra[:, :, None] - rb[:, None]) ** 2).sum(-1)
    (full.min(2).values.mean(1) + full.min(1).values.mean(1)).sum().backward()
    assert torch.allclose(a.grad, ra.grad) and torch.allclose(b.grad, rb.grad)
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0


def test_chamfer_valid_masks_equal_chamfer_of_the_sub_clouds():
    a, b = _cloud(2, 50, 8), _cloud(2, 40, 9)
    a_valid = torch.arange(50) < torch.tensor([[30], [50]])
    b_valid = torch.arange(40).remainder(3).ne(0).expand(2, 40)
    d_ab, d_ba = P.chamfer_distance(a, b, a_valid=a_valid, b_valid=b_valid)
    for i in range(2):
        sub_ab, sub_ba = P.chamfer_distance(a[i : i + 1, a_valid[i]], b[i : i + 1, b_valid[i]], backend="torch")
        assert torch.equal(d_ab[i, a_valid[i]], sub_ab[0]) and torch.equal(d_ba[i, b_valid[i]], sub_ba[0])
        assert torch.equal(d_ab[i, ~a_valid[i]], torch.zeros(int((~a_valid[i]).sum())))
        assert torch.equal(d_ba[i, ~b_valid[i]], torch.zeros(int((~b_valid[i]).sum())))


# ----------------------------------------------------------------------------- kNN
@pytest.mark.parametrize(("s", "n", "k", "d", "chunk"), [(20, 100, 5, 3, None), (33, 130, 1, 3, 7), (10, 70, 70, 3, 64), (12, 80, 6, 12, 1)])
def test_knn_matches_sorted_brute_force(s, n, k, d, chunk):
    q, pts = _cloud(2, s, 10, d), _cloud(2, n, 11, d)
    dist, idx = P.knn(q, pts, k, chunk=chunk)
    full = _sqdist64(q, pts)
    ref_i = np.argsort(full, axis=-1, kind="stable")[..., :k]
    np.testing.assert_array_equal(idx.numpy(), ref_i)
    np.testing.assert_allclose(dist.numpy(), np.take_along_axis(full, ref_i, -1), rtol=1e-5, atol=1e-6)
    assert bool((dist[..., 1:] >= dist[..., :-1]).all())


def test_knn_chunked_equals_unchunked_and_is_differentiable():
    q, pts = _cloud(3, 64, 12).requires_grad_(True), _cloud(3, 500, 13)
    d_big, i_big = P.knn(q, pts, 16, chunk=10**9)
    d_small, i_small = P.knn(q, pts, 16, chunk=1)
    assert torch.equal(i_big, i_small) and torch.equal(d_big, d_small)
    d_small[..., 0].sum().backward()  # d/dq |q - p_nn|^2 = 2 (q - p_nn)
    assert torch.allclose(q.grad, 2 * (q - P.gather_points(pts, i_small[..., 0])).detach())


# ----------------------------------------------------------------------------- FPS
def _fps_reference(x: np.ndarray, n: int, first: int = 0) -> list[int]:
    picks = [first]
    nearest = ((x - x[first]) ** 2).sum(1)
    for _ in range(n - 1):
        nxt = int(nearest.argmax())
        picks.append(nxt)
        nearest = np.minimum(nearest, ((x - x[nxt]) ** 2).sum(1))
    return picks


def test_fps_matches_greedy_reference():
    pts = _cloud(3, 200, 14)
    idx = P.farthest_point_sample(pts, 16)
    for b in range(3):
        ref = _fps_reference(pts[b].double().numpy(), 16)
        assert idx[b].tolist() == ref and ref[0] == 0
        assert len(set(idx[b].tolist())) == 16
        # greedy max-min: each pick is at least as far from the earlier picks as any other point
        x = pts[b].double().numpy()
        for i in range(1, 16):
            d_min = ((x[:, None] - x[ref[:i]][None]) ** 2).sum(-1).min(1)
            assert d_min[ref[i]] == d_min.max()


def test_fps_random_start_follows_the_generator():
    pts = _cloud(4, 100, 15)
    idx = P.farthest_point_sample(pts, 10, generator=torch.Generator().manual_seed(3), start="random")
    first = torch.randint(0, 100, (4,), generator=torch.Generator().manual_seed(3))
    assert idx[:, 0].tolist() == first.tolist()
    for b in range(4):
        assert idx[b].tolist() == _fps_reference(pts[b].double().numpy(), 10, int(first[b]))
    again = P.farthest_point_sample(pts, 10, generator=torch.Generator().manual_seed(3), start="random")
    assert torch.equal(idx, again)


def test_fps_all_points_is_a_permutation():
    pts = _cloud(2, 50, 16)
    idx = P.farthest_point_sample(pts, 50)
    assert all(sorted(row) == list(range(50)) for row in idx.tolist())


# ----------------------------------------------------------------------------- ball query
def _ball_reference(q: np.ndarray, pts: np.ndarray, r: float, k: int) -> list[list[int]]:
    out = []
    for c in q:
        inside = [i for i, p in enumerate(pts) if ((p - c) ** 2).sum() < r * r][:k]
        out.append(inside + [inside[0]] * (k - len(inside)) if inside else [-1] * k)
    return out


@pytest.mark.parametrize(("radius", "k", "chunk"), [(0.8, 4, None), (1.5, 40, 1), (0.3, 3, 64)])
def test_ball_query_matches_loop_reference(radius, k, chunk):
    pts = _cloud(2, 150, 17)
    q = torch.cat([pts[:, :6], _cloud(2, 5, 18), torch.full((2, 1, 3), 50.0)], 1)  # last: no neighbour
    idx = P.ball_query(q, pts, radius, k, chunk=chunk)
    for b in range(2):
        assert idx[b].tolist() == _ball_reference(q[b].double().numpy(), pts[b].double().numpy(), radius, k)
    assert idx[:, -1].eq(-1).all()


def test_ball_query_radius_is_strict():
    pts = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.5, 0.0, 0.0]]])
    assert P.ball_query(pts[:, :1], pts, 1.0, 3).tolist() == [[[0, 2, 0]]]  # the point at exactly r is out


# ----------------------------------------------------------------------------- gather, backend
def test_gather_points_values():
    pts = torch.arange(2 * 5 * 2, dtype=torch.float32).reshape(2, 5, 2)
    idx = torch.tensor([[[4, 0], [1, 1]], [[2, 3], [0, 4]]])
    out = P.gather_points(pts, idx)
    assert out.shape == (2, 2, 2, 2)
    assert out[0, 0, 0].tolist() == [8.0, 9.0] and out[1, 1, 1].tolist() == [18.0, 19.0]


def test_backend_is_torch_without_pytorch3d():
    assert P.backend() in ("torch", "pytorch3d")
    if P.backend() == "torch":
        with pytest.raises(ImportError, match=r"pip install 'mae3d\[pytorch3d\]'.*backend='torch'"):
            P.knn(_cloud(1, 4), _cloud(1, 4), 1, backend="pytorch3d")
        with pytest.raises(ImportError, match=r"no wheel on PyPI: build it"):
            P.chamfer_distance(_cloud(1, 4), _cloud(1, 4), backend="pytorch3d")


_NAN = torch.full((1, 2, 3), float("nan"))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: P.knn(_cloud(1, 4), _cloud(1, 3), 5), r"k must be an int in \[1, 3\] for clouds of 3 points, got 5"),
        (lambda: P.knn(_cloud(1, 4), _cloud(1, 3), 0), r"k must be an int in \[1, 3\] .* got 0"),
        (lambda: P.knn(_cloud(1, 4), _cloud(1, 3), 1.5), r"k must be an int in \[1, 3\] .* got 1.5"),
        (lambda: P.knn(_NAN, _cloud(1, 4), 1), r"query holds non-finite coordinates"),
        (lambda: P.knn(_cloud(1, 2), _cloud(1, 4, d=2), 1), r"query and points must share batch size and point dimension, got \[1, 2, 3\] and \[1, 4, 2\]"),
        (lambda: P.knn(_cloud(1, 2), _cloud(1, 4), 1, chunk=0), r"chunk must be a positive int .* got 0"),
        (lambda: P.knn(_cloud(1, 2), _cloud(1, 4), 1, backend="cuda"), r"backend must be one of \('auto', 'torch', 'pytorch3d'\), got 'cuda'"),
        (lambda: P.farthest_point_sample(_cloud(1, 10), 11), r"n_samples must be an int in \[1, 10\] for clouds of 10 points, got 11"),
        (lambda: P.farthest_point_sample(_cloud(1, 10), 2, start="middle"), r"start must be one of \('first', 'random'\), got 'middle'"),
        (lambda: P.farthest_point_sample(_cloud(1, 10)[0], 2), r"points must be a \[B, N, D\] tensor, got \[10, 3\]"),
        (lambda: P.farthest_point_sample(torch.zeros(1, 4, 3, dtype=torch.long), 2), r"points must be a floating-point tensor, got dtype torch.int64"),
        (lambda: P.farthest_point_sample(torch.zeros(1, 0, 3), 1), r"points must hold at least one point per cloud, got shape \[1, 0, 3\]"),
        (lambda: P.chamfer_distance(_cloud(1, 4)[0], _cloud(1, 4)), r"a must be a \[B, N, D\] tensor, got \[4, 3\]"),
        (lambda: P.chamfer_distance(_cloud(1, 4), _cloud(2, 4)), r"a and b must share batch size and point dimension"),
        (lambda: P.chamfer_distance(_cloud(1, 4), _NAN), r"b holds non-finite coordinates"),
        (lambda: P.chamfer_distance(_cloud(1, 4), _cloud(1, 4), a_valid=torch.ones(1, 4)), r"a_valid must be None or a bool tensor of shape \[1, 4\], got torch.float32"),
        (lambda: P.chamfer_distance(_cloud(1, 4), _cloud(1, 4), b_valid=torch.zeros(1, 4, dtype=torch.bool)), r"valid points in one of a, b has none in the other"),
        (lambda: P.ball_query(_cloud(1, 2), _cloud(1, 4), 0.0, 2), r"radius must be a finite number > 0, got 0.0"),
        (lambda: P.ball_query(_cloud(1, 2), _cloud(1, 4), float("inf"), 2), r"radius must be a finite number > 0, got inf"),
        (lambda: P.ball_query(_cloud(1, 2), _cloud(1, 4), 0.5, 0), r"k must be an int >= 1, got 0"),
        (lambda: P.gather_points(_cloud(1, 4), torch.tensor([[0, 4]])), r"idx values must be in \[0, 4\), got range \[0, 4\]"),
        (lambda: P.gather_points(_cloud(1, 4), torch.tensor([[-1, 0]])), r"-1 from ball_query marks 'no neighbour'"),
        (lambda: P.gather_points(_cloud(1, 4), torch.tensor([[0.0]])), r"idx must be an int64 tensor \[B, \.\.\.\] with B = 1, got shape \[1, 1\] and dtype torch.float32"),
        (lambda: P.gather_points(_cloud(1, 4)[0], torch.tensor([[0]])), r"points must be a \[B, N, C\] tensor, got shape \[4, 3\]"),
    ],
)
def test_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.skipif(P.backend() != "pytorch3d", reason="pytorch3d is not installed (optional backend)")
def test_pytorch3d_agrees_with_torch():
    a, b = _cloud(2, 500, 0), _cloud(2, 400, 1)
    for x, y in zip(P.chamfer_distance(a, b, backend="torch"), P.chamfer_distance(a, b, backend="pytorch3d")):
        assert torch.allclose(x, y, atol=1e-5)
    d_t, i_t = P.knn(a[:, :50], b, 8, backend="torch")
    d_p, i_p = P.knn(a[:, :50], b, 8, backend="pytorch3d")
    assert torch.equal(i_t, i_p) and torch.allclose(d_t, d_p, atol=1e-5)
    for start in ("first", "random"):
        gen = [torch.Generator().manual_seed(1) for _ in range(2)]
        assert torch.equal(P.farthest_point_sample(a, 32, gen[0], start, backend="torch"),
                           P.farthest_point_sample(a, 32, gen[1], start, backend="pytorch3d"))
    assert torch.equal(P.ball_query(a[:, :40], b, 0.7, 6, backend="torch"),
                       P.ball_query(a[:, :40], b, 0.7, 6, backend="pytorch3d"))


@pytest.mark.skipif(P.backend() != "pytorch3d", reason="pytorch3d is not installed (optional backend)")
def test_pytorch3d_float64_auto_stays_exact_and_explicit_is_cast():
    """Found when pytorch3d was first built here: its CPU kernels refuse float64."""
    a, b = _cloud(2, 60, 3).double(), _cloud(2, 50, 4).double()
    auto = P.chamfer_distance(a, b)  # auto -> the exact torch path (CPU, and float64 anyway)
    ref = P.chamfer_distance(a, b, backend="torch")
    assert all(torch.equal(x, y) and x.dtype == torch.float64 for x, y in zip(auto, ref))
    explicit = P.chamfer_distance(a, b, backend="pytorch3d")  # cast to float32 and back
    assert all(torch.allclose(x, y, atol=1e-6) and x.dtype == torch.float64 for x, y in zip(explicit, ref))
    assert torch.equal(P.knn(a, b, 4, backend="pytorch3d")[1], P.knn(a, b, 4, backend="torch")[1])
    assert P.farthest_point_sample(a, 8, backend="pytorch3d").shape == (2, 8)
    f = a.float()  # auto keeps CPU tensors on the torch path (measured faster there)
    assert torch.equal(P.chamfer_distance(f, f.flip(1))[0], P.chamfer_distance(f, f.flip(1), backend="torch")[0])


def test_half_precision_inputs_search_in_float32():
    q, pts = _cloud(2, 30, 19).bfloat16(), _cloud(2, 200, 20).bfloat16()
    d16, i16 = P.knn(q, pts, 8)
    d32, i32 = P.knn(q.float(), pts.float(), 8)
    assert d16.dtype == torch.bfloat16 and torch.equal(i16, i32)
    assert torch.equal(P.farthest_point_sample(pts, 12), P.farthest_point_sample(pts.float(), 12))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the wide-feature path (batched matmul) too
        wide_q, wide_p = _cloud(1, 20, 21, d=16), _cloud(1, 90, 22, d=16)
        assert torch.equal(P.knn(wide_q, wide_p, 5)[1], torch.from_numpy(np.argsort(_sqdist64(wide_q, wide_p), -1)[..., :5]))
