"""Point-cloud operations in pure torch, with pytorch3d as an optional backend.

Farthest point sampling, k nearest neighbours, ball query and Chamfer distance on batched clouds
``[B, N, D]``. The torch path runs on any device without custom kernels and bounds memory by
working in tiles of at most ``chunk`` pairwise distances (by default 16 MB of float32 on CPU,
128 MB on GPUs), so a 32k x 32k Chamfer never holds the full ``N x M`` matrix. 16-bit inputs are
searched in float32.

How the torch path finds neighbours (no autograd): both clouds are centred on their common mean
(squared distances are translation invariant, and centring removes most of the float32
cancellation of the expanded form), then each tile holds ``|p|^2 - 2 q.p`` for a block of queries
against a block of points, built with ``addcmul`` into one reused buffer (fresh large tensors
cost a page fault per 4 kB on CPU). The point axis is padded to a multiple of 64 with
``|p|^2 = inf`` so the arg-min can run lane-wise (vectorised) before the exact index is read.
Returned distances are then recomputed exactly, ``|q - p[idx]|^2``, which is also what makes
Chamfer differentiable with respect to both clouds at O(N) memory.

``backend="auto"`` uses pytorch3d for CUDA tensors when ``import pytorch3d.ops`` works, and the
torch path otherwise: on the CPU ours measured as fast or faster (``shared/bench/bench_pointops.py``,
pytorch3d 0.7.9 built here, batch 8, one thread: Chamfer 0.28x / 0.30x / 0.15x pytorch3d's time at
1k / 8k / 32k points, FPS 1.15x / 0.65x / 0.31x, kNN 1.04x / 1.19x / 0.97x). ``backend="pytorch3d"``
forces it. pytorch3d has no wheel on PyPI and must be built from source.
"""

from __future__ import annotations

import math
import numbers
from contextlib import AbstractContextManager, nullcontext
from functools import lru_cache

import torch
from torch import Tensor

BACKENDS = ("auto", "torch", "pytorch3d")
DEFAULT_CHUNK = 1 << 22  # pairwise distances per tile on CPU: 16 MB in float32, stays in cache
DEFAULT_CHUNK_ACCEL = 1 << 25  # on GPUs: 128 MB tiles, fewer kernel launches
_LANES = 64  # point tiles are a multiple of this many points
_FPS_STARTS = ("first", "random")
_HALF = (torch.float16, torch.bfloat16)


# --------------------------------------------------------------------------- backend selection
@lru_cache(maxsize=1)
def _has_pytorch3d() -> bool:
    try:
        import pytorch3d.ops  # noqa: F401
    except ImportError:
        return False
    return True


def backend() -> str:
    """``"pytorch3d"`` when ``import pytorch3d.ops`` works (then ``"auto"`` uses it for CUDA
    tensors), else ``"torch"``."""
    return "pytorch3d" if _has_pytorch3d() else "torch"


def _pick(requested: str) -> str:
    if requested not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {requested!r}")
    if requested == "pytorch3d" and not _has_pytorch3d():
        raise ImportError(
            "backend='pytorch3d' needs pytorch3d, which is not installed. It has no wheel on PyPI: build it "
            "from source (see pytorch3d's INSTALL.md), then `pip install 'mae3d[pytorch3d]'`; "
            "or use backend='torch'"
        )
    return backend() if requested == "auto" else requested


def _use_pytorch3d(backend: str, *clouds: Tensor) -> bool:
    """Whether this call goes to pytorch3d: always when asked by name; under ``"auto"`` only for
    CUDA tensors (see the module notes) that are not float64. Its CPU kernels take float32 only
    (float64 raises "expected scalar type Float but found Double"), so an explicit ``"pytorch3d"``
    casts CPU float64 to float32 and back (see :func:`_f32`)."""
    chosen = _pick(backend)
    if chosen != "pytorch3d":
        return False
    if backend == "pytorch3d":
        return True
    return all(c.device.type == "cuda" and c.dtype != torch.float64 for c in clouds)


def _f32(x: Tensor) -> Tensor:
    """pytorch3d's kernels take float32: 16-bit floats, and float64 on the CPU, are cast."""
    return x.float() if x.dtype in _HALF or (x.dtype == torch.float64 and x.device.type == "cpu") else x


# --------------------------------------------------------------------------- validation
def _check_cloud(name: str, x: Tensor) -> None:
    if not isinstance(x, Tensor) or x.dim() != 3:
        shape = list(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a [B, N, D] tensor, got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.shape[1] == 0:
        raise ValueError(f"{name} must hold at least one point per cloud, got shape {list(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} holds non-finite coordinates (NaN or inf); only finite points are allowed")


def _check_pair(qname: str, q: Tensor, pname: str, p: Tensor) -> None:
    _check_cloud(qname, q)
    _check_cloud(pname, p)
    if q.shape[0] != p.shape[0] or q.shape[2] != p.shape[2]:
        raise ValueError(
            f"{qname} and {pname} must share batch size and point dimension, "
            f"got {list(q.shape)} and {list(p.shape)}"
        )


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_count(name: str, value: int, n: int) -> int:
    if not _is_int(value) or not 1 <= value <= n:
        raise ValueError(f"{name} must be an int in [1, {n}] for clouds of {n} points, got {value!r}")
    return int(value)


def _check_valid(name: str, valid: Tensor | None, cloud: Tensor) -> Tensor | None:
    if valid is not None and (valid.dtype != torch.bool or valid.shape != cloud.shape[:2]):
        raise ValueError(
            f"{name} must be None or a bool tensor of shape {list(cloud.shape[:2])}, "
            f"got {valid.dtype} {list(valid.shape)}"
        )
    return valid


def _check_chunk(chunk: int | None, device: torch.device) -> int:
    if chunk is None:
        return DEFAULT_CHUNK if device.type == "cpu" else DEFAULT_CHUNK_ACCEL
    if not _is_int(chunk) or chunk < 1:
        raise ValueError(f"chunk must be a positive int (pairwise distances per tile) or None, got {chunk!r}")
    return int(chunk)


# --------------------------------------------------------------------------- tiled search (torch)
def _tiles(b: int, s: int, n_pad: int, chunk: int) -> tuple[int, int]:
    """Tile shape ``(queries, points)`` with ``b * queries * points <= max(chunk, b * 64)``."""
    cp = min(n_pad, 2048, max(_LANES, chunk // b // _LANES * _LANES))
    return max(1, min(s, chunk // (b * cp))), cp


def _prepare(query: Tensor, points: Tensor, points_valid: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """Centred ``-2 q [B, S, D]``, centred points ``[B, D, N_pad]`` and ``|p|^2 [B, 1, N_pad]``
    (``inf`` in the padding and at invalid points, so those are never the nearest)."""
    n = points.shape[1]
    if query.dtype in _HALF:  # search in float32
        query, points = query.float(), points.float()
    centre = torch.cat([query, points], 1).mean(1, keepdim=True)
    q, p = query - centre, points - centre
    n_pad = math.ceil(n / _LANES) * _LANES
    sq = torch.full((p.shape[0], 1, n_pad), float("inf"), dtype=p.dtype, device=p.device)
    sq[:, 0, :n] = (p * p).sum(-1)
    if points_valid is not None:
        sq[:, 0, :n].masked_fill_(~points_valid, float("inf"))
    p_t = torch.zeros(p.shape[0], p.shape[2], n_pad, dtype=p.dtype, device=p.device)
    p_t[:, :, :n] = p.transpose(1, 2)
    return -2 * q, p_t, sq


def _scores(q2: Tensor, p_t: Tensor, sq: Tensor, out: Tensor) -> Tensor:
    """``|p|^2 - 2 q.p`` for a tile into ``out`` ``[B, s, n]`` (``|q|^2`` omitted: constant per row)."""
    if q2.shape[-1] > 8:  # wide features: one batched matmul beats a pass per coordinate
        return torch.baddbmm(sq, q2, p_t, out=out)
    torch.addcmul(sq, q2[..., :1], p_t[:, :1], out=out)
    for c in range(1, q2.shape[-1]):
        out.addcmul_(q2[..., c : c + 1], p_t[:, c : c + 1])
    return out


def _argmin_lanes(d: Tensor) -> tuple[Tensor, Tensor]:
    """``d [B, s, n]`` (``n`` a multiple of 64) -> ``(min [B, s], argmin [B, s])``. The minimum over
    each of the 64 lanes vectorises; only the winning lane is then searched for its block."""
    b, s, n = d.shape
    blocks = d.view(b, s, n // _LANES, _LANES)
    val, lane = blocks.amin(2).min(2)
    column = blocks.gather(3, lane[:, :, None, None].expand(b, s, n // _LANES, 1)).squeeze(3)
    return val, column.argmin(2) * _LANES + lane


def _no_autocast(device: torch.device) -> AbstractContextManager:
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return nullcontext()


@torch.no_grad()
def _nearest_idx(query: Tensor, points: Tensor, k: int, chunk: int, points_valid: Tensor | None = None) -> Tensor:
    """Indices ``[B, S, k]`` of the ``k`` nearest (valid) points (unordered when ``k > 1``)."""
    with _no_autocast(query.device):  # a half-precision baddbmm would pick wrong neighbours
        q2, p_t, sq = _prepare(query, points, points_valid)
        b, s, n_pad = q2.shape[0], q2.shape[1], p_t.shape[2]
        cq, cp = _tiles(b, s, n_pad, chunk)
        buf = torch.empty(b * cq * cp, dtype=q2.dtype, device=q2.device)
        out = [_nearest_in_rows(q2[:, i : i + cq], p_t, sq, k, cp, buf) for i in range(0, s, cq)]
    return torch.cat(out, 1).clamp_(max=points.shape[1] - 1)  # never a padding index


def _nearest_in_rows(qi: Tensor, p_t: Tensor, sq: Tensor, k: int, cp: int, buf: Tensor) -> Tensor:
    """One block of queries against every point tile, keeping the best ``k`` so far."""
    b, n_pad = qi.shape[0], p_t.shape[2]
    best_v = best_i = None
    for j in range(0, n_pad, cp):
        w = min(cp, n_pad - j)
        d = _scores(qi, p_t[:, :, j : j + w], sq[:, :, j : j + w], buf[: b * qi.shape[1] * w].view(b, -1, w))
        if k == 1:
            v, ix = (t.unsqueeze(2) for t in _argmin_lanes(d))
        else:
            v, ix = d.topk(min(k, w), 2, largest=False, sorted=False)
        ix = ix + j
        if best_v is None:
            best_v, best_i = v, ix
        elif k == 1:
            better = v < best_v
            best_v, best_i = torch.where(better, v, best_v), torch.where(better, ix, best_i)
        else:
            cand = torch.cat([best_v, v], 2)
            best_v, pos = cand.topk(min(k, cand.shape[2]), 2, largest=False, sorted=False)
            best_i = torch.cat([best_i, ix], 2).gather(2, pos)
    return best_i


def _exact_sqdist(query: Tensor, points: Tensor, idx: Tensor) -> Tensor:
    """``|q - p[idx]|^2`` ``[B, S, k]``, differentiable with respect to both clouds; float32 for
    16-bit inputs (callers cast back after any sorting)."""
    if query.dtype in _HALF:
        query, points = query.float(), points.float()
    return ((query.unsqueeze(2) - _gather(points, idx)) ** 2).sum(-1)


def _gather(points: Tensor, idx: Tensor) -> Tensor:
    b, c = points.shape[0], points.shape[-1]
    flat = idx.reshape(b, -1)
    return torch.gather(points, 1, flat[..., None].expand(-1, -1, c)).reshape(*idx.shape, c)


# --------------------------------------------------------------------------- public ops
def gather_points(points: Tensor, idx: Tensor) -> Tensor:
    """Select points by index per cloud: ``points [B, N, C]``, ``idx [B, ...]`` (int64, values in
    ``[0, N)``) -> ``[B, ..., C]``. Differentiable with respect to ``points``."""
    if points.dim() != 3:
        raise ValueError(f"points must be a [B, N, C] tensor, got shape {list(points.shape)}")
    if idx.dim() < 1 or idx.shape[0] != points.shape[0] or idx.dtype != torch.long:
        raise ValueError(
            f"idx must be an int64 tensor [B, ...] with B = {points.shape[0]}, "
            f"got shape {list(idx.shape)} and dtype {idx.dtype}"
        )
    b, n, c = points.shape
    flat = idx.reshape(b, -1)
    if flat.numel() and (bool((flat < 0).any()) or bool((flat >= n).any())):
        raise ValueError(
            f"idx values must be in [0, {n}), got range [{int(flat.min())}, {int(flat.max())}] "
            "(-1 from ball_query marks 'no neighbour' and cannot be gathered)"
        )
    return _gather(points, idx)


def knn(
    query: Tensor, points: Tensor, k: int, chunk: int | None = None, backend: str = "auto"
) -> tuple[Tensor, Tensor]:
    """k nearest neighbours: ``query [B, S, D]``, ``points [B, N, D]`` ->
    ``(dist2 [B, S, k], idx [B, S, k])``, squared Euclidean distances sorted ascending.

    ``chunk`` bounds the pairwise distances held at once (None: 2**22 on CPU, 2**25 on GPUs). ``dist2`` is exact
    (``|q - p[idx]|^2``) and differentiable; ties are broken arbitrarily.
    """
    _check_pair("query", query, "points", points)
    k = _check_count("k", k, points.shape[1])
    chunk = _check_chunk(chunk, query.device)
    if _use_pytorch3d(backend, query, points):
        from pytorch3d.ops import knn_points

        res = knn_points(_f32(query), _f32(points), K=k, return_nn=False, return_sorted=True)
        return res.dists.to(query.dtype), res.idx
    idx = _nearest_idx(query, points, k, chunk)
    dist2 = _exact_sqdist(query, points, idx)
    if k > 1:
        dist2, order = dist2.sort(dim=-1, stable=True)
        idx = idx.gather(2, order)
    return dist2.to(query.dtype), idx


def chamfer_distance(
    a: Tensor,
    b: Tensor,
    chunk: int | None = None,
    backend: str = "auto",
    a_valid: Tensor | None = None,
    b_valid: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Squared nearest-neighbour distances both ways: ``a [B, N, D]``, ``b [B, M, D]`` ->
    ``(d_ab [B, N], d_ba [B, M])`` with ``d_ab[i] = min_j |a_i - b_j|^2``.

    ``a_valid [B, N]`` / ``b_valid [B, M]`` (bool, optional) leave points out: an invalid point is
    never anyone's nearest neighbour and its own distance is returned as 0 (masks always use the
    torch path). Differentiable with respect to both clouds (the gradient of each minimum flows
    through the nearest point, as in pytorch3d). Peak memory: ``chunk`` distances plus O(N + M).
    """
    _check_pair("a", a, "b", b)
    chunk = _check_chunk(chunk, a.device)
    a_valid = _check_valid("a_valid", a_valid, a)
    b_valid = _check_valid("b_valid", b_valid, b)
    if a_valid is not None or b_valid is not None:
        a_any = a_valid.any(1) if a_valid is not None else torch.ones_like(a[:, 0, 0], dtype=torch.bool)
        b_any = b_valid.any(1) if b_valid is not None else torch.ones_like(b[:, 0, 0], dtype=torch.bool)
        if bool((a_any != b_any).any()):
            raise ValueError("a cloud with valid points in one of a, b has none in the other; Chamfer is undefined")
    elif _use_pytorch3d(backend, a, b):
        from pytorch3d.ops import knn_points

        a32, b32 = _f32(a), _f32(b)
        d_ab, d_ba = knn_points(a32, b32, K=1).dists[..., 0], knn_points(b32, a32, K=1).dists[..., 0]
        return d_ab.to(a.dtype), d_ba.to(b.dtype)
    d_ab = _exact_sqdist(a, b, _nearest_idx(a, b, 1, chunk, b_valid))[..., 0]
    d_ba = _exact_sqdist(b, a, _nearest_idx(b, a, 1, chunk, a_valid))[..., 0]
    if a_valid is not None:
        d_ab = d_ab.masked_fill(~a_valid, 0.0)
    if b_valid is not None:
        d_ba = d_ba.masked_fill(~b_valid, 0.0)
    return d_ab.to(a.dtype), d_ba.to(b.dtype)


def chamfer_l2(a: Tensor, b: Tensor, chunk: int | None = None, backend: str = "auto") -> Tensor:
    """Chamfer-L2 per cloud pair ``[B]``: ``mean_i d_ab[i] + mean_j d_ba[j]`` (Point-MAE's loss)."""
    d_ab, d_ba = chamfer_distance(a, b, chunk, backend)
    return d_ab.mean(1) + d_ba.mean(1)


def farthest_point_sample(
    points: Tensor,
    n_samples: int,
    generator: torch.Generator | None = None,
    start: str = "first",
    backend: str = "auto",
) -> Tensor:
    """Iterative farthest point sampling: ``points [B, N, D]`` -> ``idx [B, n_samples]``.

    The first pick is index 0 (``start="first"``, PointNet++ / Point-MAE) or a point drawn from
    ``generator`` (``start="random"``); each next pick is the point whose squared distance to the
    nearest earlier pick is largest (the first such index on ties). Vectorised over the batch;
    the loop runs over samples only. Indices are distinct while the cloud has that many distinct
    points.
    """
    _check_cloud("points", points)
    b, n, _ = points.shape
    n_samples = _check_count("n_samples", n_samples, n)
    if start not in _FPS_STARTS:
        raise ValueError(f"start must be one of {_FPS_STARTS}, got {start!r}")
    dev = points.device
    if start == "random":
        gen_dev = dev if generator is None else generator.device
        first = torch.randint(0, n, (b,), generator=generator, device=gen_dev).to(dev)
    else:
        first = torch.zeros(b, dtype=torch.long, device=dev)
    if _use_pytorch3d(backend, points):
        from pytorch3d.ops import sample_farthest_points

        # roll each cloud so our start point is index 0: the generator decides, not pytorch3d's RNG
        order = (torch.arange(n, device=dev) + first[:, None]) % n
        idx = sample_farthest_points(_f32(_gather(points, order)), K=n_samples, random_start_point=False)[1]
        return order.gather(1, idx)
    return _fps_torch(points, n_samples, first)


@torch.no_grad()
def _fps_torch(points: Tensor, n_samples: int, first: Tensor) -> Tensor:
    b, n, d = points.shape
    coords = points.permute(2, 0, 1).contiguous()  # [D, B, N]: one contiguous row per coordinate
    if coords.dtype in _HALF:
        coords = coords.float()
    nearest = torch.full((b, n), float("inf"), dtype=coords.dtype, device=points.device)
    dist, diff = torch.empty_like(nearest), torch.empty_like(nearest)
    picks = [first[:, None]]
    for _ in range(1, n_samples):
        # a few microseconds per operation is the cost at 1k points: one gather for every coordinate
        # of the last pick, and the picks joined once at the end
        at = coords.gather(2, picks[-1].expand(d, b, 1))  # [D, B, 1]
        torch.sub(coords[0], at[0], out=diff)
        torch.mul(diff, diff, out=dist)
        for c in range(1, d):
            torch.sub(coords[c], at[c], out=diff)
            dist.addcmul_(diff, diff)
        torch.minimum(nearest, dist, out=nearest)
        picks.append(nearest.argmax(1, keepdim=True))
    return torch.cat(picks, 1)


def ball_query(
    query: Tensor, points: Tensor, radius: float, k: int, chunk: int | None = None, backend: str = "auto"
) -> Tensor:
    """PointNet++ / pytorch3d ball query: ``query [B, S, D]``, ``points [B, N, D]`` -> ``idx [B, S, k]``.

    For each query, the first ``k`` points in index order with ``|q - p|^2 < radius^2`` (strict, as
    in pytorch3d and PointNet++). Slots beyond the neighbours found repeat the first one found
    (PointNet++); a query with no point in range gets -1 in every slot (pytorch3d's padding value).
    Distances here are computed exactly (coordinate differences), not by the expanded form.
    """
    _check_pair("query", query, "points", points)
    if isinstance(radius, bool) or not isinstance(radius, numbers.Real) or not 0 < radius < math.inf:
        raise ValueError(f"radius must be a finite number > 0, got {radius!r}")
    if not _is_int(k) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    k = int(k)
    chunk = _check_chunk(chunk, query.device)
    if _use_pytorch3d(backend, query, points):
        from pytorch3d.ops import ball_query as p3d_ball_query

        idx = p3d_ball_query(_f32(query), _f32(points), K=k, radius=float(radius), return_nn=False).idx
    else:
        idx = _ball_query_torch(query, points, float(radius) ** 2, k, chunk)
    first = idx[..., :1]
    return torch.where(idx < 0, first.expand_as(idx), idx)  # rows with nothing found stay -1


@torch.no_grad()
def _ball_query_torch(query: Tensor, points: Tensor, r2: float, k: int, chunk: int) -> Tensor:
    """Found neighbours in slots ``0..count-1`` in index order, -1 after.

    Per tile: the in-radius mask, its hits (``nonzero``, in point order per query) ranked from
    each query's count so far, and only ranks below ``k`` written (one indexed store): scattering
    every pair was 7x slower than pytorch3d at 1k points. A query block stops early once every
    query in it has ``k`` neighbours."""
    if query.dtype in _HALF:
        query, points = query.float(), points.float()
    b, s, dim = query.shape
    n = points.shape[1]
    cq, cp = _tiles(b, s, math.ceil(n / _LANES) * _LANES, chunk)
    out = torch.full((b, s, k), -1, dtype=torch.long, device=query.device)
    # coordinates first, so each coordinate's differences broadcast over contiguous rows (a stride-3
    # view made the subtraction half of the search at 1k points), into tile buffers made once (a
    # fresh 2 MB tensor per operation spent as long in page faults as in arithmetic)
    q_t, p_t = query.transpose(1, 2).contiguous(), points.transpose(1, 2).contiguous()
    bufs = [torch.empty(b * cq * cp, dtype=dt, device=query.device) for dt in (query.dtype, query.dtype, torch.bool)]
    for i in range(0, s, cq):
        qi = q_t[:, :, i : i + cq, None]  # [B, D, cq, 1]
        found = torch.zeros(b, qi.shape[2], 1, dtype=torch.int32, device=query.device)
        for j in range(0, n, cp):
            pj = p_t[:, :, None, j : j + cp]  # [B, D, 1, cp]
            shape = (b, qi.shape[2], pj.shape[3])
            diff, d, inside = (buf[: math.prod(shape)].view(shape) for buf in bufs)
            torch.sub(qi[:, 0], pj[:, 0], out=diff)
            torch.mul(diff, diff, out=d)  # the same sum, term by term, as zeros + addcmul: the same bits
            for c in range(1, dim):
                torch.sub(qi[:, c], pj[:, c], out=diff)
                d.addcmul_(diff, diff)
            torch.lt(d, r2, out=inside)
            # hits in (batch, query, point) order, so each query's hits come in point order: the
            # rank of a hit is its position after the query's first hit (no full-size cumsum)
            bi, si, pi = inside.nonzero(as_tuple=True)
            row = bi * qi.shape[2] + si
            counts = torch.bincount(row, minlength=found.numel()).to(torch.int32)  # hits per query
            start = torch.cumsum(counts, 0) - counts
            rank = torch.arange(len(row), device=query.device) - start[row] + found.flatten()[row]
            keep = rank < k
            out[bi[keep], si[keep] + i, rank[keep]] = pi[keep] + j
            found = found + counts.view(found.shape)
            if j + cp < n and bool((found >= k).all()):
                break
    return out
