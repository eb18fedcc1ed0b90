"""Reading meshes and point files into normalised clouds, radiance grids, and writing PLY.

Meshes (PLY, OBJ, OFF, STL, GLB) go through trimesh and are sampled area-weighted to N points;
point files are ``.npy`` / ``.npz`` (key ``points``) / ``.xyz`` / point-cloud PLY, and LAS/LAZ
with the ``las`` extra. Clouds are centred and scaled into the unit sphere; the centre and scale
are kept so outputs go back to the input's frame (``points * scale + center``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from maecore.atomic import atomic_path
from maecore.errors import DataError, missing_extra

MESH_EXTS = (".ply", ".obj", ".off", ".stl", ".glb", ".gltf")
POINT_EXTS = (".npy", ".npz", ".xyz", ".las", ".laz")
EXTS = MESH_EXTS + POINT_EXTS


def _check_ext(p: Path) -> str:
    ext = p.suffix.lower()
    if ext not in EXTS:
        raise DataError(p, f"a mesh or point file ({', '.join(EXTS)})", f"extension {p.suffix!r}")
    if not p.is_file():
        raise DataError(p, "an existing file", "nothing at that path")
    return ext


def _load_trimesh(p: Path) -> Any:
    import trimesh

    try:
        geom = trimesh.load(p, process=False, force=None)
    except IndexError as err:
        raise DataError(p, "faces that index existing vertices", f"an out-of-range face index ({err})") from err
    except Exception as err:
        raise DataError(p, "a readable mesh or point cloud", f"{type(err).__name__}: {err}") from err
    if isinstance(geom, trimesh.Scene):
        parts = [g for g in geom.dump() if hasattr(g, "vertices") and len(g.vertices)]
        if not parts:
            raise DataError(p, "a mesh with vertices", "an empty scene")
        geom = trimesh.util.concatenate(parts) if len(parts) > 1 else parts[0]
    return geom


def _raw_points(p: Path, ext: str, n_points: int, seed: int) -> tuple[np.ndarray, int]:
    """Points from any supported file ``[M, 3]`` and the source's vertex/point count."""
    if ext == ".npy":
        arr = np.load(p, allow_pickle=False)
    elif ext == ".npz":
        with np.load(p, allow_pickle=False) as z:
            if "points" not in z.files:
                raise DataError(p, "a 'points' array in the .npz", f"keys {z.files}")
            arr = z["points"]
    elif ext == ".xyz":
        try:
            arr = np.loadtxt(p, ndmin=2)
        except ValueError as err:
            raise DataError(p, "whitespace-separated x y z rows", str(err)) from err
    elif ext in (".las", ".laz"):
        try:
            import laspy
        except ImportError as err:
            raise missing_extra("laspy", "mae3d", "las") from err
        try:
            las = laspy.read(p)
            arr = np.stack([np.asarray(las.x), np.asarray(las.y), np.asarray(las.z)], 1)
        except Exception as err:  # laspy's LaspyException, struct/EOF errors of a cut file, no LAZ backend
            hint = " (LAZ needs a backend: pip install 'laspy[lazrs]')" if "backend" in str(err).lower() else ""
            raise DataError(p, "a readable LAS/LAZ point cloud", f"{type(err).__name__}: {err}{hint}") from err
    else:
        geom = _load_trimesh(p)
        verts = np.asarray(geom.vertices, dtype=np.float64)
        if len(verts) == 0:
            raise DataError(p, "a mesh or cloud with vertices", "no vertices")
        if not np.isfinite(verts).all():
            bad = int((~np.isfinite(verts)).any(1).sum())
            raise DataError(p, "finite vertex coordinates", f"{bad} NaN/inf vertices")
        faces = np.asarray(getattr(geom, "faces", np.zeros((0, 3))))
        if len(faces):
            if faces.max() >= len(verts) or faces.min() < 0:
                raise DataError(p, f"faces indexing the {len(verts)} vertices", f"face index {int(faces.max())}")
            import trimesh

            if geom.area <= 0:
                raise DataError(p, "faces with a positive area", "a degenerate mesh (area 0)")
            pts, _ = trimesh.sample.sample_surface(geom, n_points, seed=seed)
            return np.asarray(pts, dtype=np.float64), len(verts)
        arr = verts
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 3:
        raise DataError(p, "points shaped [N, 3] (extra columns ignored)", f"shape {list(arr.shape)}")
    arr = arr[:, :3]
    if len(arr) == 0:
        raise DataError(p, "at least one point", "no points")
    if not np.isfinite(arr).all():
        raise DataError(p, "finite point coordinates", f"{int((~np.isfinite(arr)).any(1).sum())} NaN/inf points")
    return arr, len(arr)


def normalize(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Centre on the bounding-box centre and scale into the unit sphere: ``(pts, center, scale)``."""
    center = (points.max(0) + points.min(0)) / 2
    scale = float(np.linalg.norm(points - center, axis=1).max()) or 1.0
    return (points - center) / scale, center, scale


def read_points(path: str | os.PathLike[str], n_points: int | None = 2048, seed: int = 0) -> dict[str, Any]:
    """A normalised cloud of exactly ``n_points`` from a mesh or point file (``None``: every point
    of a point file, 8,192 samples of a mesh).

    Returns ``{"points": float32 [n, 3], "center": [3], "scale": float, "path": str,
    "n_source": int}``. Meshes are sampled area-weighted; clouds with more points are subsampled
    at random (seeded), clouds with fewer are an error (never padded with repeated points).
    """
    p = Path(path)
    ext = _check_ext(p)
    try:
        raw, n_source = _raw_points(p, ext, n_points or 8192, seed)
    except (DataError, ImportError):
        raise
    except Exception as err:  # any parser failure on a damaged file is reported, naming it
        raise DataError(p, f"a readable {ext} file", f"{type(err).__name__}: {err}") from err
    if n_points is None:
        n_points = len(raw)
    if len(raw) < n_points:
        raise DataError(p, f"at least {n_points} points (n_points)", f"{len(raw)} points")
    if len(raw) > n_points:
        raw = raw[np.random.default_rng(seed).choice(len(raw), n_points, replace=False)]
    pts, center, scale = normalize(raw)
    return {"points": pts.astype(np.float32), "center": center.astype(np.float64), "scale": scale,
            "path": str(p), "n_source": n_source}


def write_ply(path: str | os.PathLike[str], points: np.ndarray, colors: np.ndarray | None = None) -> Path:
    """Binary PLY point cloud (x y z float32, optional uchar RGBA per point), written atomically."""
    import trimesh

    pts = np.asarray(points, dtype=np.float32)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"points must be [N, 3], got {list(pts.shape)}")
    cloud = trimesh.PointCloud(pts, colors=colors)
    with atomic_path(path) as tmp:
        cloud.export(tmp, file_type="ply")
    return Path(path)


# ---------------------------------------------------------------------------- radiance grids
def read_grid(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``.npz`` with ``rgbsigma [X, Y, Z, 4]`` (RGB in [0, 1], then alpha / density), optional
    ``bounds [2, 3]`` (min, max corner) and ``resolution``."""
    p = Path(path)
    if p.suffix.lower() != ".npz":
        raise DataError(p, "a .npz radiance grid with 'rgbsigma' [X, Y, Z, 4]", f"extension {p.suffix!r}")
    try:
        with np.load(p, allow_pickle=False) as z:
            if "rgbsigma" not in z.files:
                raise DataError(p, "an 'rgbsigma' array", f"keys {z.files}")
            grid = z["rgbsigma"].astype(np.float32)
            bounds = z["bounds"].astype(np.float64) if "bounds" in z.files else np.array([[-1.0] * 3, [1.0] * 3])
    except DataError:
        raise
    except Exception as err:
        raise DataError(p, "a readable .npz file", f"{type(err).__name__}: {err}") from err
    if grid.ndim != 4 or grid.shape[-1] != 4:
        raise DataError(p, "rgbsigma shaped [X, Y, Z, 4] (RGB + alpha)", f"shape {list(grid.shape)}")
    if not np.isfinite(grid).all():
        raise DataError(p, "finite grid values", f"{int((~np.isfinite(grid)).sum())} NaN/inf values")
    return {"rgbsigma": grid, "bounds": bounds, "resolution": list(grid.shape[:3]), "path": str(p)}


def write_grid(path: str | os.PathLike[str], rgbsigma: np.ndarray, bounds: np.ndarray, **extra: np.ndarray) -> Path:
    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, rgbsigma=np.asarray(rgbsigma, np.float32), bounds=np.asarray(bounds), **extra)
    return Path(path)


def points_to_grid(points: np.ndarray, resolution: int = 32) -> np.ndarray:
    """A synthetic radiance grid ``[R, R, R, 4]`` from a normalised cloud (unit sphere; there is no
    real radiance-grid sample): alpha is the solid occupancy (voxels holding surface points, with
    the enclosed interior filled), RGB a smooth colour field of position, ``(xyz + 1) / 2``, inside
    the object and 0 outside."""
    from scipy import ndimage

    idx = np.clip(((points + 1) / 2 * resolution).astype(int), 0, resolution - 1)
    occ = np.zeros((resolution,) * 3, dtype=bool)
    occ[idx[:, 0], idx[:, 1], idx[:, 2]] = True
    occ = ndimage.binary_fill_holes(ndimage.binary_closing(occ, iterations=1) | occ)
    centres = (np.indices((resolution,) * 3).transpose(1, 2, 3, 0) + 0.5) / resolution * 2 - 1
    alpha = occ.astype(np.float32)
    rgb = (centres + 1) / 2 * alpha[..., None]
    return np.concatenate([rgb, alpha[..., None]], -1).astype(np.float32)


def read_grid_or_shape(path: str | os.PathLike[str], resolution: int, n_points: int | None = None) -> dict[str, Any]:
    """A grid file as is, or a mesh / point file turned into a grid with :func:`points_to_grid`."""
    p = Path(path)
    if p.suffix.lower() == ".npz":
        with np.load(p, allow_pickle=False) as z:
            is_grid = "rgbsigma" in z.files
        if is_grid:
            return read_grid(p)
    cloud = read_points(p, n_points=n_points)
    grid = points_to_grid(cloud["points"], resolution)
    bounds = np.stack([cloud["center"] - cloud["scale"], cloud["center"] + cloud["scale"]])
    return {"rgbsigma": grid, "bounds": bounds, "resolution": [resolution] * 3, "path": str(p)}
