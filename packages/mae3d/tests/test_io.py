"""Readers and writers on real scans and meshes, and every bad-input case with its message."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh

from mae3d.data import expand, labels_for
from mae3d.io import points_to_grid, read_grid, read_grid_or_shape, read_points, write_grid, write_ply
from maecore.errors import DataError


def test_mesh_is_sampled_normalised_and_invertible(shared_points: Path):
    path = shared_points / "ycb_google16k" / "can" / "005_tomato_soup_can.ply"
    cloud = read_points(path, 2048, seed=0)
    pts = cloud["points"]
    assert pts.shape == (2048, 3) and pts.dtype == np.float32
    assert np.linalg.norm(pts, axis=1).max() == pytest.approx(1.0, abs=1e-5)
    # back to the input frame: metres, within the mesh's bounding box
    mesh = trimesh.load(path, process=False)
    back = pts * cloud["scale"] + cloud["center"]
    assert (back >= mesh.bounds[0] - 1e-6).all() and (back <= mesh.bounds[1] + 1e-6).all()
    assert cloud["n_source"] == len(mesh.vertices)
    assert np.array_equal(read_points(path, 2048, seed=0)["points"], pts)  # seeded


@pytest.mark.parametrize("name", ["bunny.ply", "fandisk.obj", "ballA.off", "teapot.stl", "Duck.glb"])
def test_every_mesh_format_reads(shared_points: Path, name: str):
    assert read_points(shared_points / "trimesh_models" / name, 512)["points"].shape == (512, 3)


def test_point_files_round_trip(tmp_path: Path):
    pts = np.random.default_rng(0).normal(size=(300, 3)) * 0.1 + 5
    np.save(tmp_path / "a.npy", pts)
    np.savez(tmp_path / "b.npz", points=pts)
    np.savetxt(tmp_path / "c.xyz", pts)
    write_ply(tmp_path / "d.ply", pts, np.tile([10, 20, 30, 255], (300, 1)).astype(np.uint8))
    for name in ("a.npy", "b.npz", "c.xyz", "d.ply"):
        c = read_points(tmp_path / name, 300)
        assert np.allclose(c["points"] * c["scale"] + c["center"], pts, atol=1e-5), name
    back = trimesh.load(tmp_path / "d.ply")
    assert back.colors[0].tolist() == [10, 20, 30, 255]


def test_grid_write_read_and_voxelised_grid(tmp_path: Path, shared_points: Path):
    cloud = read_points(shared_points / "ycb_google16k" / "ball" / "054_softball.ply", 8192)
    grid = points_to_grid(cloud["points"], 16)
    assert grid.shape == (16, 16, 16, 4)
    alpha = grid[..., 3]
    assert 0.3 < alpha.mean() < 0.7  # a filled ball occupies about half of its bounding cube
    assert alpha[8, 8, 8] == 1.0 and alpha[0, 0, 0] == 0.0  # inside filled, corner empty
    write_grid(tmp_path / "g.npz", grid, np.array([[-1, -1, -1], [1, 1, 1.0]]))
    g = read_grid(tmp_path / "g.npz")
    assert np.array_equal(g["rgbsigma"], grid) and g["resolution"] == [16, 16, 16]
    assert read_grid_or_shape(tmp_path / "g.npz", 16)["rgbsigma"].shape == (16, 16, 16, 4)


def _obj(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_bad_inputs(tmp_path: Path, shared_points: Path):
    models = shared_points / "trimesh_models"
    with pytest.raises(DataError, match=r"empty.ply: expected a mesh with vertices, found an empty scene"):
        read_points(models / "empty.ply", 64)
    with pytest.raises(DataError, match=r"empty.obj: expected a mesh with vertices, found an empty scene"):
        read_points(models / "empty.obj", 64)
    nan = _obj(tmp_path, "nan.obj", "v nan 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    with pytest.raises(DataError, match=r"nan.obj: expected finite vertex coordinates, found 1 NaN/inf vertices"):
        read_points(nan, 16)
    past = _obj(tmp_path, "past.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 9\n")
    with pytest.raises(DataError, match=r"past.obj: expected faces that index existing vertices"):
        read_points(past, 16)
    with pytest.raises(DataError, match=r"points_ascii.ply: expected at least 64 points \(n_points\), found 5 points"):
        read_points(models / "points_ascii.ply", 64)
    with pytest.raises(DataError, match=r"cloud.vtk: expected a mesh or point file .*found extension '.vtk'"):
        (tmp_path / "cloud.vtk").write_text("x")
        read_points(tmp_path / "cloud.vtk", 16)
    np.savez(tmp_path / "rgb.npz", rgbsigma=np.zeros((4, 4, 4, 3)))
    with pytest.raises(DataError, match=r"rgb.npz: expected rgbsigma shaped \[X, Y, Z, 4\] \(RGB \+ alpha\), found shape \[4, 4, 4, 3\]"):
        read_grid(tmp_path / "rgb.npz")
    np.save(tmp_path / "flat.npy", np.zeros((10, 2)))
    with pytest.raises(DataError, match=r"flat.npy: expected points shaped \[N, 3\]"):
        read_points(tmp_path / "flat.npy", 4)
    with pytest.raises(DataError, match=r"missing.ply: expected an existing file"):
        read_points(tmp_path / "missing.ply", 4)


def test_sample_and_labels():
    files = expand(None)
    assert len(files) == 20
    labels = labels_for(files, None)
    assert sorted(set(labels)) == ["ball", "box", "can", "fruit", "tool"] and labels.count("ball") == 4


def test_labels_csv(tmp_path: Path):
    files = expand(None)[:2]
    csv = tmp_path / "labels.csv"
    csv.write_text("file,label\n" + "\n".join(f"{f},x{i}" for i, f in enumerate(files)) + "\n")
    assert labels_for(files, str(csv)) == ["x0", "x1"]
    csv.write_text("path,label\n")
    with pytest.raises(DataError, match=r"labels.csv: expected a CSV with columns 'file' and 'label'"):
        labels_for(files, str(csv))


def _write_las(path: Path, xyz: np.ndarray, scale: float = 0.001) -> Path:
    import laspy

    header = laspy.LasHeader(point_format=0, version="1.2")
    header.offsets = xyz.min(0)
    header.scales = np.array([scale] * 3)
    las = laspy.LasData(header)
    las.x, las.y, las.z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    las.write(path)
    return path


def test_las_cloud_in_a_projected_frame(tmp_path: Path):
    """A real scan placed at UTM-like coordinates (metres, large offsets, mm quantisation) reads,
    normalises, and maps back to the input frame to the file's precision; a cut file is a
    DataError naming it."""
    pytest.importorskip("laspy")
    scan = read_points(expand(None)[0], None)
    xyz = scan["points"].astype(np.float64) * scan["scale"] + scan["center"] + [500_000.0, 4_100_000.0, 250.0]
    path = _write_las(tmp_path / "scan.las", xyz)
    c = read_points(path, None)
    assert c["points"].shape == xyz.shape and np.linalg.norm(c["points"], axis=1).max() == pytest.approx(1, abs=1e-5)
    back = c["points"].astype(np.float64) * c["scale"] + c["center"]
    assert np.abs(back - xyz).max() < 2e-3  # 1 mm quantisation + float32 points at unit scale
    assert np.allclose(c["center"][:2], [500_000, 4_100_000], atol=1.0)
    cut = tmp_path / "cut.las"
    cut.write_bytes(path.read_bytes()[:150])
    with pytest.raises(DataError, match=r"cut\.las: expected a readable LAS/LAZ point cloud, found "):
        read_points(cut, 256)


def test_point_augmentation_is_seeded_scale_and_translate():
    from mae3d.data import PointClouds

    base = PointClouds.from_files(expand(None)[:2], 512)
    aug = PointClouds(base.items, augment={"scale": [0.5, 2.0], "translate": 0.1})
    torch = pytest.importorskip("torch")
    torch.manual_seed(3)
    a = aug[0]["points"]
    torch.manual_seed(3)
    assert torch.equal(aug[0]["points"], a)  # a function of the generator state (the engine seeds it per item)
    b = aug[0]["points"]
    assert not torch.equal(a, b)
    ref = base[0]["points"]
    # per-axis affine of the stored cloud: recover scale and shift per axis by least squares
    for axis in range(3):
        k, c = np.polyfit(ref[:, axis].numpy(), a[:, axis].numpy(), 1)
        assert 0.5 - 1e-4 <= k <= 2.0 + 1e-4 and abs(c) <= 0.1 + 1e-4
    assert torch.equal(base[0]["points"], ref)  # no augmentation unless asked
    with pytest.raises(ValueError, match=r"augment scale must be 0 < lo <= hi, got \(2\.0, 1\.0\)"):
        PointClouds(base.items, augment={"scale": [2.0, 1.0]})
    with pytest.raises(ValueError, match="augment translate must be >= 0"):
        PointClouds(base.items, augment={"translate": -1})
