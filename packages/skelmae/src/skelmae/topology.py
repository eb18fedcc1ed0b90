"""Skeleton topologies: joint names, bone edges, body parts and the root, as torch-geometric graphs.

A :class:`Topology` is checked when it is built: every edge and body-part entry must name a joint
that exists (a :class:`~maecore.errors.DataError` naming the topology's source otherwise). Presets
(:data:`PRESETS`): ``ntu25`` (Kinect v2, NTU RGB+D), ``coco17`` (COCO keypoints), ``openpose18``
(OpenPose COCO-18) and ``cmu31`` (CMU mocap, MotionBuilder BVH). A BVH file brings its own
topology from its hierarchy (:func:`from_parents`); body parts are then inferred from joint names.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from maecore.errors import DataError

PART_NAMES = ("torso", "left_arm", "right_arm", "left_leg", "right_leg")


@dataclass(frozen=True)
class Topology:
    """``joint_names`` in data order; ``edges`` as (joint, joint) name pairs; ``parts`` maps a body
    part to its joints (every joint in exactly one part); ``root``: joints whose mean is the body
    centre; ``source``: where it came from (a preset name or a file), named in errors."""

    name: str
    joint_names: tuple[str, ...]
    edges: tuple[tuple[str, str], ...]
    parts: dict[str, tuple[str, ...]] = field(default_factory=dict)
    root: tuple[str, ...] = ()
    source: str | None = None

    def __post_init__(self) -> None:
        where = self.source or f"topology {self.name!r}"
        known = set(self.joint_names)
        if len(known) != len(self.joint_names):
            dup = sorted({j for j in self.joint_names if self.joint_names.count(j) > 1})
            raise DataError(where, "distinct joint names", f"duplicates {dup}")
        unknown = sorted({j for e in self.edges for j in e if j not in known})
        if unknown:
            raise DataError(where, f"edges between its {len(known)} joints", f"edges naming unknown joints {unknown}")
        for part, joints in self.parts.items():
            bad = sorted(set(joints) - known)
            if bad:
                raise DataError(where, f"body part {part!r} made of its joints", f"unknown joints {bad}")
        if self.parts:
            counted = [j for js in self.parts.values() for j in js]
            missing = sorted(known - set(counted))
            if missing or len(counted) != len(known):
                raise DataError(
                    where,
                    "every joint in exactly one body part",
                    f"joints without a part {missing}" if missing else "a joint in two parts",
                )
        bad_root = sorted(set(self.root) - known)
        if bad_root:
            raise DataError(where, "root joints among its joints", f"unknown joints {bad_root}")

    @property
    def n_joints(self) -> int:
        return len(self.joint_names)

    def index(self, name: str) -> int:
        return self.joint_names.index(name)

    def edge_array(self) -> np.ndarray:
        """``[E, 2]`` int64 joint indices, one row per bone."""
        return np.array([[self.index(a), self.index(b)] for a, b in self.edges], dtype=np.int64).reshape(-1, 2)

    def edge_index(self) -> Tensor:
        """torch-geometric ``edge_index [2, 2E]``: every bone in both directions."""
        e = torch.from_numpy(self.edge_array())
        return torch.cat([e, e.flip(1)]).t().contiguous()

    def part_ids(self) -> np.ndarray:
        """``[V]`` int64: the index (into :attr:`part_names`) of each joint's body part."""
        names = self.part_names
        out = np.zeros(self.n_joints, dtype=np.int64)
        for p, joints in self.parts.items():
            for j in joints:
                out[self.index(j)] = names.index(p)
        return out

    @property
    def part_names(self) -> list[str]:
        return list(self.parts) or ["body"]

    def root_ids(self) -> list[int]:
        return [self.index(j) for j in self.root] or [0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "joint_names": list(self.joint_names),
            "edges": [list(e) for e in self.edges],
            "parts": {k: list(v) for k, v in self.parts.items()},
            "root": list(self.root),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str | os.PathLike[str] | None = None) -> Topology:
        try:
            return cls(
                name=str(d["name"]),
                joint_names=tuple(d["joint_names"]),
                edges=tuple((str(a), str(b)) for a, b in d["edges"]),
                parts={k: tuple(v) for k, v in d.get("parts", {}).items()},
                root=tuple(d.get("root", ())),
                source=None if source is None else os.fspath(source),
            )
        except (KeyError, TypeError, ValueError) as err:
            if isinstance(err, DataError):
                raise
            raise DataError(source, "a topology with name, joint_names and [a, b] edges", repr(err)) from err


def infer_part(name: str) -> str:
    """Body part of a joint from its name (``LeftForeArm``, ``l_knee``, ``RThumb``, ``HipLeft``)."""
    low = name.lower()
    side = ""
    if (
        "left" in low
        or low.startswith(("l_", "l.", "lhip", "lthumb", "lshoulder"))
        or (low[:1] == "l" and name[1:2].isupper())
    ):
        side = "left"
    elif (
        "right" in low
        or low.startswith(("r_", "r.", "rhip", "rthumb", "rshoulder"))
        or (low[:1] == "r" and name[1:2].isupper())
    ):
        side = "right"
    legs = ("leg", "knee", "ankle", "foot", "toe", "hip", "thigh", "shin", "heel")
    arms = ("arm", "elbow", "wrist", "hand", "finger", "thumb", "shoulder", "index", "clavicle")
    if side and any(k in low for k in legs):
        return f"{side}_leg"
    if side and any(k in low for k in arms):
        return f"{side}_arm"
    return "torso"


def from_parents(name: str, joint_names: Sequence[str], parents: Sequence[int], source: str | None = None) -> Topology:
    """A topology from a kinematic tree (``parents[j] = -1`` for the root): bones child-parent,
    parts inferred from names (:func:`infer_part`), root = the tree's root."""
    names = tuple(joint_names)
    edges = tuple((names[p], names[j]) for j, p in enumerate(parents) if p >= 0)
    parts: dict[str, list[str]] = {}
    for j in names:
        parts.setdefault(infer_part(j), []).append(j)
    order = [p for p in PART_NAMES if p in parts]
    roots = tuple(names[j] for j, p in enumerate(parents) if p < 0)[:1]
    return Topology(name, names, edges, {p: tuple(parts[p]) for p in order}, roots, source)


# ---------------------------------------------------------------------------- presets
def _preset(
    name: str, joints: str, edges: Sequence[tuple[int, int]], parts: dict[str, Sequence[int]], root: Sequence[int]
) -> Topology:
    names = tuple(joints.split())
    return Topology(
        name,
        names,
        tuple((names[a], names[b]) for a, b in edges),
        {p: tuple(names[i] for i in ids) for p, ids in parts.items()},
        tuple(names[i] for i in root),
        source=f"preset {name!r}",
    )


NTU25 = _preset(
    "ntu25",
    "SpineBase SpineMid Neck Head ShoulderLeft ElbowLeft WristLeft HandLeft ShoulderRight ElbowRight WristRight "
    "HandRight HipLeft KneeLeft AnkleLeft FootLeft HipRight KneeRight AnkleRight FootRight SpineShoulder "
    "HandTipLeft ThumbLeft HandTipRight ThumbRight",
    [
        (0, 1),
        (1, 20),
        (20, 2),
        (2, 3),
        (20, 4),
        (4, 5),
        (5, 6),
        (6, 7),
        (7, 21),
        (7, 22),
        (20, 8),
        (8, 9),
        (9, 10),
        (10, 11),
        (11, 23),
        (11, 24),
        (0, 12),
        (12, 13),
        (13, 14),
        (14, 15),
        (0, 16),
        (16, 17),
        (17, 18),
        (18, 19),
    ],
    {
        "torso": [0, 1, 2, 3, 20],
        "left_arm": [4, 5, 6, 7, 21, 22],
        "right_arm": [8, 9, 10, 11, 23, 24],
        "left_leg": [12, 13, 14, 15],
        "right_leg": [16, 17, 18, 19],
    },
    [0],
)
COCO17 = _preset(
    "coco17",
    "nose left_eye right_eye left_ear right_ear left_shoulder right_shoulder left_elbow right_elbow left_wrist "
    "right_wrist left_hip right_hip left_knee right_knee left_ankle right_ankle",
    [
        (0, 1),
        (0, 2),
        (1, 3),
        (2, 4),
        (3, 5),
        (4, 6),
        (5, 6),
        (5, 7),
        (7, 9),
        (6, 8),
        (8, 10),
        (5, 11),
        (6, 12),
        (11, 12),
        (11, 13),
        (13, 15),
        (12, 14),
        (14, 16),
    ],
    {
        "torso": [0, 1, 2, 3, 4],
        "left_arm": [5, 7, 9],
        "right_arm": [6, 8, 10],
        "left_leg": [11, 13, 15],
        "right_leg": [12, 14, 16],
    },
    [11, 12],
)
OPENPOSE18 = _preset(
    "openpose18",
    "Nose Neck RShoulder RElbow RWrist LShoulder LElbow LWrist RHip RKnee RAnkle LHip LKnee LAnkle REye LEye REar LEar",
    [
        (1, 0),
        (1, 2),
        (2, 3),
        (3, 4),
        (1, 5),
        (5, 6),
        (6, 7),
        (1, 8),
        (8, 9),
        (9, 10),
        (1, 11),
        (11, 12),
        (12, 13),
        (0, 14),
        (14, 16),
        (0, 15),
        (15, 17),
    ],
    {
        "torso": [0, 1, 14, 15, 16, 17],
        "left_arm": [5, 6, 7],
        "right_arm": [2, 3, 4],
        "left_leg": [11, 12, 13],
        "right_leg": [8, 9, 10],
    },
    [8, 11],
)
_CMU_NAMES = (
    "Hips LHipJoint LeftUpLeg LeftLeg LeftFoot LeftToeBase RHipJoint RightUpLeg RightLeg RightFoot RightToeBase "
    "LowerBack Spine Spine1 Neck Neck1 Head LeftShoulder LeftArm LeftForeArm LeftHand LeftFingerBase "
    "LeftHandIndex1 LThumb RightShoulder RightArm RightForeArm RightHand RightFingerBase RightHandIndex1 RThumb"
)
CMU_PARENTS = (
    -1,
    0,
    1,
    2,
    3,
    4,
    0,
    6,
    7,
    8,
    9,
    0,
    11,
    12,
    13,
    14,
    15,
    13,
    17,
    18,
    19,
    20,
    21,
    20,
    13,
    24,
    25,
    26,
    27,
    28,
    27,
)
CMU31 = from_parents("cmu31", _CMU_NAMES.split(), CMU_PARENTS, source="preset 'cmu31'")

PRESETS: dict[str, Topology] = {t.name: t for t in (NTU25, COCO17, OPENPOSE18, CMU31)}


def get_topology(name: str | Topology) -> Topology:
    """A preset by name (``ntu25``, ``coco17``, ``openpose18``, ``cmu31``) or a topology as is."""
    if isinstance(name, Topology):
        return name
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in PRESETS:
        raise ValueError(f"unknown topology {name!r}; presets: {', '.join(PRESETS)}")
    return PRESETS[key]


def match_preset(joint_names: Sequence[str]) -> Topology | None:
    """The preset with exactly these joint names in this order, if any."""
    return next((t for t in PRESETS.values() if t.joint_names == tuple(joint_names)), None)
