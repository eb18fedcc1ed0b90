"""Point-cloud operations in pure torch, with pytorch3d as an optional backend.

Farthest point sampling, k nearest neighbours, ball query and Chamfer distance on batched clouds
``[B, N, D]``. The torch path runs on any device and bounds memory by processing queries in chunks
(a 32k x 32k Chamfer needs ``chunk * M * 4`` bytes at a time). pytorch3d is used only when asked
for (``backend="pytorch3d"``) or when ``backend="auto"`` and it imports; it has no wheel on PyPI.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

from maecore.errors import missing_extra

DEFAULT_CHUNK = 2048


@lru_cache(maxsize=1)
def _has_pytorch3d() -> bool:
    try:
        import pytorch3d.ops  # noqa: F401
    except ImportError:
        return False
    return True


def backend() -> str:
    """``"pytorch3d"`` when it imports, else ``"torch"``."""
    return "pytorch3d" if _has_pytorch3d() else "torch"


def _pick(requested: str) -> str:
    if requested not in ("auto", "torch", "pytorch3d"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'pytorch3d', got {requested!r}")
    if requested == "pytorch3d" and not _has_pytorch3d():
        raise missing_extra("pytorch3d (built from source; it has no PyPI wheel)", "mae3d", "pytorch3d")
    return backend() if requested == "auto" else requested


def _check_cloud(name: str, x: Tensor) -> None:
    if x.dim() != 3:
        raise ValueError(f"{name} must be [B, N, D], got shape {list(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} holds non-finite coordinates")


def _sqdist(a: Tensor, b: Tensor) -> Tensor:
    """Squared distances ``[B, S, D] x [B, N, D] -> [B, S, N]`` (expanded form, clamped at 0)."""
    d = (a * a).sum(-1, keepdim=True) - 2 * a @ b.transpose(1, 2) + (b * b).sum(-1).unsqueeze(1)
    return d.clamp_(min=0)


def gather_points(points: Tensor, idx: Tensor) -> Tensor:
    """``points [B, N, C]``, ``idx [B, ...]`` -> ``[B, ..., C]``."""
    b = points.shape[0]
    flat = idx.reshape(b, -1)
    out = torch.gather(points, 1, flat[..., None].expand(-1, -1, points.shape[-1]))
    return out.reshape(*idx.shape, points.shape[-1])


def farthest_point_sample(
    points: Tensor, n_samples: int, start: str = "first", generator: torch.Generator | None = None,
    backend: str = "auto",
) -> Tensor:
    """Iterative FPS: ``[B, N, D] -> idx [B, n_samples]``; each pick is the point farthest from
    all previous picks. ``start="first"`` begins at index 0, ``"random"`` at a random point."""
    _check_cloud("points", points)
    b, n, _ = points.shape
    if not 1 <= n_samples <= n:
        raise ValueError(f"n_samples must be in [1, {n}] for clouds of {n} points, got {n_samples}")
    if start not in ("first", "random"):
        raise ValueError(f"start must be 'first' or 'random', got {start!r}")
    first = (torch.randint(0, n, (b,), generator=generator, device=points.device) if start == "random"
             else torch.zeros(b, dtype=torch.long, device=points.device))
    if _pick(backend) == "pytorch3d":
        from pytorch3d.ops import sample_farthest_points

        return sample_farthest_points(points, K=n_samples, random_start_point=start == "random")[1]
    idx = torch.empty(b, n_samples, dtype=torch.long, device=points.device)
    idx[:, 0] = first
    rows = torch.arange(b, device=points.device)
    nearest = torch.full((b, n), float("inf"), device=points.device, dtype=points.dtype)
    last = points[rows, first]
    for i in range(1, n_samples):
        nearest = torch.minimum(nearest, ((points - last[:, None]) ** 2).sum(-1))
        nxt = nearest.argmax(1)
        idx[:, i] = nxt
        last = points[rows, nxt]
    return idx


def knn(
    query: Tensor, points: Tensor, k: int, chunk: int = DEFAULT_CHUNK, backend: str = "auto"
) -> tuple[Tensor, Tensor]:
    """k nearest neighbours: ``(dist2 [B, S, k], idx [B, S, k])`` sorted by distance."""
    _check_cloud("query", query)
    _check_cloud("points", points)
    n = points.shape[1]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}] for clouds of {n} points, got {k}")
    if _pick(backend) == "pytorch3d":
        from pytorch3d.ops import knn_points

        res = knn_points(query, points, K=k, return_sorted=True)
        return res.dists, res.idx
    dists, idxs = [], []
    for s in range(0, query.shape[1], chunk):
        d = _sqdist(query[:, s : s + chunk], points)
        v, i = torch.topk(d, k, dim=-1, largest=False, sorted=True)
        dists.append(v)
        idxs.append(i)
    return torch.cat(dists, 1), torch.cat(idxs, 1)


def ball_query(query: Tensor, points: Tensor, radius: float, k: int, backend: str = "auto") -> Tensor:
    """PointNet++ / pytorch3d convention: the first ``k`` points (in index order) within ``radius``
    of each query, ``[B, S, k]``; slots beyond the neighbours found repeat the first one found;
    a query with no neighbour in range gets -1 in every slot."""
    _check_cloud("query", query)
    _check_cloud("points", points)
    if radius <= 0 or k < 1:
        raise ValueError(f"radius must be > 0 and k >= 1, got radius={radius}, k={k}")
    if _pick(backend) == "pytorch3d":
        from pytorch3d.ops import ball_query as p3d_ball_query

        idx = p3d_ball_query(query, points, K=k, radius=radius, return_nn=False)[1]
        first = idx[..., :1]
        return torch.where((idx < 0) & (first >= 0), first.expand_as(idx), idx)
    n = points.shape[1]
    out = []
    for s in range(0, query.shape[1], DEFAULT_CHUNK):
        inside = _sqdist(query[:, s : s + DEFAULT_CHUNK], points) <= radius * radius  # [B, s, N]
        order = torch.where(inside, torch.arange(n, device=points.device), n)
        first_k = order.topk(min(k, n), dim=-1, largest=False, sorted=True).values  # smallest indices
        if first_k.shape[-1] < k:
            first_k = torch.cat([first_k, first_k.new_full((*first_k.shape[:-1], k - n), n)], -1)
        found = first_k[..., :1]
        first_k = torch.where(first_k == n, found.expand_as(first_k), first_k)
        out.append(torch.where(found == n, torch.full_like(first_k, -1), first_k))
    return torch.cat(out, 1)


def chamfer_distance(a: Tensor, b: Tensor, chunk: int = DEFAULT_CHUNK, backend: str = "auto") -> tuple[Tensor, Tensor]:
    """Squared nearest-neighbour distances both ways: ``(d_ab [B, N], d_ba [B, M])``.

    Chunks over both clouds keep peak memory at ``B * chunk * chunk`` floats per step.
    """
    _check_cloud("a", a)
    _check_cloud("b", b)
    if a.shape[0] != b.shape[0] or a.shape[2] != b.shape[2]:
        raise ValueError(f"clouds must share batch and point dims, got {list(a.shape)} and {list(b.shape)}")
    if _pick(backend) == "pytorch3d":
        from pytorch3d.ops import knn_points

        return knn_points(a, b, K=1).dists[..., 0], knn_points(b, a, K=1).dists[..., 0]
    # per chunk pair keep only row and column minima (no in-place updates, so autograd works)
    ni, nj = range(0, a.shape[1], chunk), range(0, b.shape[1], chunk)
    row: list[list[Tensor]] = [[] for _ in ni]
    col: list[list[Tensor]] = [[] for _ in nj]
    for ii, i in enumerate(ni):
        for jj, j in enumerate(nj):
            d = _sqdist(a[:, i : i + chunk], b[:, j : j + chunk])
            row[ii].append(d.min(2).values)
            col[jj].append(d.min(1).values)
    d_ab = torch.cat([torch.stack(r).min(0).values for r in row], 1)
    d_ba = torch.cat([torch.stack(c).min(0).values for c in col], 1)
    return d_ab, d_ba


def chamfer_l2(a: Tensor, b: Tensor, chunk: int = DEFAULT_CHUNK, backend: str = "auto") -> Tensor:
    """Chamfer-L2 per cloud pair ``[B]``: mean squared NN distance a->b plus b->a."""
    d_ab, d_ba = chamfer_distance(a, b, chunk, backend)
    return d_ab.mean(1) + d_ba.mean(1)
