"""Readers, writer and preprocessing on the real CMU sample, and every bad-input case."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from maecore.errors import DataError
from skelmae.data import (
    SkeletonClips,
    body_size,
    clip_of,
    expand,
    labels_for,
    load_sequences,
    prepare_motion,
    resample,
    sample_labels,
    unnormalise,
    view_rotation,
    windows,
)
from skelmae.io import forward_kinematics, parse_bvh, read_array, read_bvh, read_ntu, read_pyskl, write_bvh
from skelmae.topology import PRESETS, Topology, get_topology

WALK = expand(None)[1]  # 02_01.bvh


def test_bvh_forward_kinematics_keeps_bone_lengths_and_gives_cmu31():
    m = read_bvh(WALK)
    bvh = m["bvh"]
    assert m["positions"].shape == (86, 31, 3) and m["fps"] == 30.0 and m["valid"].all()
    assert m["topology"] is PRESETS["cmu31"]
    e = m["topology"].edge_array()
    lengths = np.linalg.norm(m["positions"][:, e[:, 0]] - m["positions"][:, e[:, 1]], axis=-1)
    assert np.allclose(lengths, np.linalg.norm(bvh["offsets"][e[:, 1]], axis=1), atol=1e-9)
    # a walking person: head above hips above toes, about 1.6 m (CMU units x 0.0564) head to toe
    p = m["positions"]
    names = m["topology"].joint_names
    head, hips, toe = (p[:, names.index(j), 1] for j in ("Head", "Hips", "LeftToeBase"))
    assert (head > hips).all() and (hips > toe).all()
    assert 1.3 < np.median(head - toe) * 0.0564 < 1.8
    # the root moves forward several units (walking), but the body keeps its size
    assert np.linalg.norm(p[-1, 0] - p[0, 0]) * 0.0564 > 1.0


def test_bvh_write_read_round_trip(tmp_path: Path):
    bvh = parse_bvh(WALK)
    out = write_bvh(tmp_path / "w.bvh", bvh)
    back = parse_bvh(out)
    assert back["names"] == bvh["names"] and back["parents"] == bvh["parents"]
    assert back["channels"] == bvh["channels"] and back["end_sites"].keys() == bvh["end_sites"].keys()
    assert np.allclose(back["values"], bvh["values"], atol=1e-6)
    assert np.allclose(forward_kinematics(back), forward_kinematics(bvh), atol=1e-4)


def test_bvh_rotation_order_is_applied_per_joint(tmp_path: Path):
    text = (
        "HIERARCHY\nROOT A\n{\n OFFSET 0 0 0\n CHANNELS 6 Xposition Yposition Zposition Zrotation Yrotation Xrotation\n"
        " JOINT B\n {\n  OFFSET 1 0 0\n  CHANNELS 3 Xrotation Yrotation Zrotation\n  End Site\n  {\n   OFFSET 0 1 0\n  }\n }\n}\n"
        "MOTION\nFrames: 2\nFrame Time: 0.5\n1 2 3 90 0 0 0 0 0\n0 0 0 0 90 0 0 0 0\n"
    )
    (tmp_path / "r.bvh").write_text(text)
    m = read_bvh(tmp_path / "r.bvh")
    assert m["fps"] == 2.0 and m["topology"].joint_names == ("A", "B")
    assert np.allclose(m["positions"][0, 1], [1, 3, 3])  # Rz(90) turns B's +x offset to +y
    assert np.allclose(m["positions"][1, 1], [0, 0, -1])  # Ry(90) turns +x to -z
    assert m["topology"].parts == {"torso": ("A", "B")}


def test_ntu_reader_keeps_the_moving_body_and_missing_frames(tmp_path: Path, write_ntu):
    rng = np.random.default_rng(0)
    still = rng.normal(size=(25, 3))
    moving = [rng.normal(size=(25, 3)) * (1 + t) for t in range(4)]
    path = write_ntu(
        tmp_path / "S001C001P001R001A001.skeleton", [[still, moving[0]], [still, moving[1]], [], [still, moving[3]]]
    )
    m = read_ntu(path)
    assert m["topology"].name == "ntu25" and m["n_bodies"] == 2 and m["fps"] == 30.0
    assert np.allclose(m["positions"][3], moving[3], atol=1e-6)
    assert not m["valid"][2].any() and m["valid"][[0, 1, 3]].all()


def test_pyskl_pickle_is_restricted_to_numpy(tmp_path: Path):
    kp = np.random.default_rng(0).normal(size=(2, 10, 17, 2)).astype(np.float32)
    score = np.ones((2, 10, 17), np.float32)
    score[0, 3, 5] = 0
    ann = {
        "split": {"xsub_train": ["a"]},
        "annotations": [{"frame_dir": "a", "label": 3, "keypoint": kp, "keypoint_score": score, "total_frames": 10}],
    }
    (tmp_path / "ok.pkl").write_bytes(pickle.dumps(ann))
    (m,) = read_pyskl(tmp_path / "ok.pkl")
    assert m["topology"].name == "coco17" and m["positions"].shape == (10, 17, 2) and m["label"] == 3
    assert not m["valid"][3, 5] and m["valid"].sum() == 10 * 17 - 1 and np.isnan(m["positions"][3, 5]).all()
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"annotations": [Path("x")]}))
    with pytest.raises(
        DataError, match=r"evil.pkl: expected a pickle of dicts, lists and NumPy arrays .*refusing pathlib"
    ):
        read_pyskl(tmp_path / "evil.pkl")
    with pytest.raises(DataError, match=r"evil.pkl: expected annotation 0 with a 'keypoint' array, found PosixPath"):
        read_pyskl(tmp_path / "evil.pkl", allow_unsafe=True)


def test_numpy_reader_nan_joints_are_padding(tmp_path: Path):
    arr = np.random.default_rng(0).normal(size=(12, 25, 3))
    arr[4, 7] = np.nan
    np.save(tmp_path / "a.npy", arr)
    m = read_array(tmp_path / "a.npy", "ntu25")
    assert not m["valid"][4, 7] and m["valid"].sum() == 12 * 25 - 1
    seq = prepare_motion(m, 30.0)
    clip = clip_of(seq, 0, 16)
    assert clip["x"].shape == (16, 25, 3) and not clip["valid"][4, 7] and not clip["valid"][12:].any()
    assert torch.isfinite(clip["x"]).all() and (clip["x"][12:] == 0).all()  # padding frames, not repeats
    np.savez(tmp_path / "b.npz", positions=arr[:, :3], joint_names=np.array(["a", "b", "c"]), edges=np.array([[0, 1]]))
    assert read_array(tmp_path / "b.npz")["topology"].edge_array().tolist() == [[0, 1]]


def test_resample_normalise_and_invert():
    m = read_bvh(WALK)
    pos, valid = resample(m["positions"], m["valid"], 30.0, 15.0)
    assert len(pos) == 43 and np.allclose(pos[1], m["positions"][2])  # every other frame
    p2, _ = resample(m["positions"], m["valid"], 30.0, 45.0)
    assert np.allclose(p2[1], (m["positions"][0] + 2 * m["positions"][1]) / 3)
    seq = prepare_motion(m, 30.0, view_normalise=True)
    clip = clip_of(seq, 10, 32)
    back = unnormalise(clip["x"].numpy(), clip["origin"].numpy(), float(clip["scale"]), clip["rotation"].numpy())
    assert np.allclose(back, m["positions"][10:42], atol=1e-4)
    assert abs(np.linalg.det(seq["rotation"]) - 1) < 1e-9
    assert 0.3 < float(clip["x"].abs().max()) < 5  # body-size units
    assert body_size(m["positions"] * 2, m["valid"]) == pytest.approx(2 * body_size(m["positions"], m["valid"]))
    r = view_rotation(m["positions"], m["valid"], m["topology"])
    assert np.allclose(r[1], [0, 1, 0])  # about the up axis only


def test_windows_and_dataset_labels():
    assert windows(100, 32, 16) == [0, 16, 32, 48, 64, 68] and windows(10, 32, 16) == [0]
    seqs = load_sequences(expand(None), {"fps": 30})
    names = labels_for(seqs, str(sample_labels()))
    assert sorted(set(names)) == ["dance", "dribble", "jump", "run", "walk"] and names.count("run") == 4
    ds = SkeletonClips(seqs, 32, 32, labels=[0] * len(seqs))
    assert len(set(ds.groups)) == 14 and len(ds) > 14
    item = ds[0]
    assert item["x"].shape == (32, 31, 3) and item["label"] == 0


def test_topology_presets_and_edge_index():
    for name, n, n_edges in (("ntu25", 25, 24), ("coco17", 17, 18), ("openpose18", 18, 17), ("cmu31", 31, 30)):
        t = get_topology(name)
        ei = t.edge_index()
        assert t.n_joints == n and ei.shape == (2, 2 * n_edges) and int(ei.max()) == n - 1
        assert torch.equal(ei[:, :n_edges], ei[:, n_edges:].flip(0))  # both directions
        assert len(t.part_ids()) == n and set(t.part_names) == {
            "torso",
            "left_arm",
            "right_arm",
            "left_leg",
            "right_leg",
        }
    assert get_topology("NTU-25") is PRESETS["ntu25"]
    with pytest.raises(ValueError, match=r"unknown topology 'h36m'; presets: ntu25, coco17, openpose18, cmu31"):
        get_topology("h36m")


# ---------------------------------------------------------------------------- bad inputs
def _bvh_text() -> str:
    return WALK.read_text()


def test_bad_bvh_inputs(tmp_path: Path):
    text = _bvh_text()
    head = text.split("MOTION")[0]
    (tmp_path / "nomotion.bvh").write_text(head)
    with pytest.raises(
        DataError, match=r"nomotion.bvh: expected a MOTION section after the HIERARCHY, found no line 'MOTION'"
    ):
        read_bvh(tmp_path / "nomotion.bvh")
    lines = text.splitlines()
    cut = lines.index("MOTION")
    lines[cut + 5] = " ".join(lines[cut + 5].split()[:-1])
    (tmp_path / "short.bvh").write_text("\n".join(lines))
    with pytest.raises(
        DataError,
        match=rf"short.bvh: expected 96 values per frame line \(the channels of 31 joints\), "
        rf"found 95 values on line {cut + 6}",
    ):
        read_bvh(tmp_path / "short.bvh")
    lines = text.splitlines()
    lines[cut + 4] = lines[cut + 4].replace(lines[cut + 4].split()[10], "nan", 1)
    (tmp_path / "nan.bvh").write_text("\n".join(lines))
    with pytest.raises(
        DataError, match=r"nan.bvh: expected finite channel values .*found NaN/inf on line \d+ \(frame 1\)"
    ):
        read_bvh(tmp_path / "nan.bvh")
    (tmp_path / "empty.bvh").write_text(head + "MOTION\nFrames: 0\nFrame Time: 0.0333333\n")
    with pytest.raises(
        DataError,
        match=r"empty.bvh: expected a sequence with at least one frame, found Frames: 0 \(a zero-length sequence\)",
    ):
        read_bvh(tmp_path / "empty.bvh")
    (tmp_path / "few.bvh").write_text("\n".join(text.splitlines()[: cut + 10]))
    with pytest.raises(
        DataError, match=r"few.bvh: expected 86 frame lines \(the Frames: header\), found 7 frame lines"
    ):
        read_bvh(tmp_path / "few.bvh")
    (tmp_path / "chan.bvh").write_text(
        text.replace("CHANNELS 3 Zrotation Yrotation Xrotation", "CHANNELS 3 Zrotation Yrotation Wrotation", 1)
    )
    with pytest.raises(
        DataError, match=r"chan.bvh: expected channels among .*found \['Wrotation'\] for joint 'LHipJoint'"
    ):
        read_bvh(tmp_path / "chan.bvh")


def test_bad_ntu_inputs(tmp_path: Path, write_ntu):
    body = np.zeros((25, 3)) + 0.5
    path = write_ntu(tmp_path / "wrong.skeleton", [[body], [body], [body]], body_counts=[1, 2, 1])
    with pytest.raises(
        DataError,
        match=r"wrong.skeleton: expected a 10-value body line for body 2 of 2 in frame 1 "
        r"\(is the body count right\?\), found 1 values on line 58",
    ):
        read_ntu(path)
    path = write_ntu(tmp_path / "many.skeleton", [[body]], body_counts=[9])
    with pytest.raises(DataError, match=r"many.skeleton: expected a body count of 0..6 for frame 0, found 9 on line 2"):
        read_ntu(path)
    (tmp_path / "zero.skeleton").write_text("0\n")
    with pytest.raises(
        DataError, match=r"zero.skeleton: expected a sequence with at least one frame, found frame count 0"
    ):
        read_ntu(tmp_path / "zero.skeleton")


def test_bad_arrays_and_topologies(tmp_path: Path):
    np.save(tmp_path / "allnan.npy", np.full((5, 25, 3), np.nan))
    with pytest.raises(
        DataError, match=r"allnan.npy: expected at least one measured joint, found 5 frames with every joint missing"
    ):
        read_array(tmp_path / "allnan.npy", "ntu25")
    np.save(tmp_path / "zero.npy", np.zeros((0, 25, 3)))
    with pytest.raises(DataError, match=r"zero.npy: expected a sequence with at least one frame, found 0 frames"):
        read_array(tmp_path / "zero.npy", "ntu25")
    np.save(tmp_path / "v.npy", np.zeros((5, 17, 3)))
    with pytest.raises(DataError, match=r"v.npy: expected 25 joints of topology 'ntu25', found 17 joints"):
        read_array(tmp_path / "v.npy", "ntu25")
    with pytest.raises(
        DataError, match=r"my.json: expected edges between its 2 joints, found edges naming unknown joints \['knee'\]"
    ):
        Topology("mine", ("hip", "ankle"), (("hip", "knee"),), source="my.json")
    with pytest.raises(
        DataError,
        match=r"topology 'x': expected every joint in exactly one body part, found joints without a part \['b'\]",
    ):
        Topology("x", ("a", "b"), (("a", "b"),), parts={"torso": ("a",)})
    np.savez(
        tmp_path / "e.npz", positions=np.zeros((3, 2, 3)), joint_names=np.array(["a", "b"]), edges=np.array([[0, 5]])
    )
    with pytest.raises(
        DataError, match=r"e.npz: expected edges between its 2 joints, found edges naming unknown joints"
    ):
        read_array(tmp_path / "e.npz")
    (tmp_path / "motion.c3d").write_text("x")
    with pytest.raises(DataError, match=r"found 1 bad file\(s\): \S*motion.c3d: expected a skeleton file"):
        load_sequences([WALK, tmp_path / "motion.c3d"], {"fps": 30})
    assert len(load_sequences([WALK, tmp_path / "motion.c3d"], {"fps": 30}, skip_bad=True)) == 1


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pyskl_pickle_that_would_run_code_is_refused_without_running_it(tmp_path: Path):
    marker = tmp_path / "ran"
    (tmp_path / "trap.pkl").write_bytes(pickle.dumps({"annotations": [_RunsCode(marker)]}))
    with pytest.raises(DataError, match=r"trap\.pkl: expected a pickle of dicts, lists and NumPy arrays .*refusing "):
        read_pyskl(tmp_path / "trap.pkl")
    assert not marker.exists()
