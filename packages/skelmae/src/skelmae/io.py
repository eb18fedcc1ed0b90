"""Readers of skeleton motion (BVH, NTU RGB+D ``.skeleton``, pyskl ``.pkl``, NumPy) and a BVH writer.

Every reader returns a *motion* dict::

    {"positions": float64 [T, V, C]  joint coordinates in the file's units (NaN where missing),
     "valid": bool [T, V]            measured joints (finite, non-zero confidence),
     "fps": float, "topology": Topology, "units": str, "path": str, "name": str}

plus reader-specific keys (``label`` for pyskl annotations). Bad files raise
:class:`~maecore.errors.DataError` naming the file, what was expected and what was found.
"""

from __future__ import annotations

import io as _io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from maecore.atomic import atomic_path
from maecore.errors import DataError
from skelmae.topology import PRESETS, Topology, from_parents, get_topology, match_preset

EXTS = (".bvh", ".skeleton", ".npy", ".npz", ".pkl")
NTU_MAX_BODIES = 6  # Kinect v2 tracks at most six people


def _motion(
    path: Path, positions: np.ndarray, valid: np.ndarray, fps: float, topo: Topology, units: str, **extra: Any
) -> dict[str, Any]:
    if positions.shape[0] == 0:
        raise DataError(path, "a sequence with at least one frame", "0 frames (a zero-length sequence)")
    if not valid.any():
        raise DataError(path, "at least one measured joint", f"{positions.shape[0]} frames with every joint missing")
    if not (np.isfinite(fps) and fps > 0):
        raise DataError(path, "a positive frame rate", f"{fps}")
    positions = np.where(valid[..., None], positions, np.nan)
    return {
        "positions": positions,
        "valid": valid,
        "fps": float(fps),
        "topology": topo,
        "units": units,
        "path": str(path),
        "name": path.stem,
        **extra,
    }


# ---------------------------------------------------------------------------- BVH
def _rotation(axis: str, deg: np.ndarray) -> np.ndarray:
    """``[T] degrees -> [T, 3, 3]`` rotation about one axis."""
    r = np.deg2rad(deg)
    c, s = np.cos(r), np.sin(r)
    one, zero = np.ones_like(r), np.zeros_like(r)
    rows = {
        "X": [[one, zero, zero], [zero, c, -s], [zero, s, c]],
        "Y": [[c, zero, s], [zero, one, zero], [-s, zero, c]],
        "Z": [[c, -s, zero], [s, c, zero], [zero, zero, one]],
    }[axis]
    return np.stack([np.stack(row, -1) for row in rows], -2)


class _Tokens:
    """Whitespace tokens of the HIERARCHY text, with the line each came from (for errors)."""

    def __init__(self, path: Path, lines: list[str]) -> None:
        self.path = path
        self.items = [(tok, i + 1) for i, ln in enumerate(lines) for tok in ln.split()]
        self.pos = 0

    def next(self, expected: str) -> str:
        if self.pos >= len(self.items):
            raise DataError(self.path, expected, "the end of the HIERARCHY section")
        tok = self.items[self.pos][0]
        self.pos += 1
        return tok

    def expect(self, word: str) -> None:
        tok = self.next(repr(word))
        if tok != word:
            raise DataError(self.path, repr(word), f"{tok!r} on line {self.items[self.pos - 1][1]}")

    def number(self, what: str) -> float:
        tok = self.next(what)
        try:
            value = float(tok)
        except ValueError:
            raise DataError(self.path, what, f"{tok!r} on line {self.items[self.pos - 1][1]}") from None
        if not np.isfinite(value):
            raise DataError(self.path, f"finite {what}", f"{tok!r} on line {self.items[self.pos - 1][1]}")
        return value


CHANNELS = ("Xposition", "Yposition", "Zposition", "Xrotation", "Yrotation", "Zrotation")


def _parse_joint(tok: _Tokens, parent: int, out: dict[str, list]) -> None:
    """``NAME { OFFSET x y z CHANNELS n ... (JOINT ... | End Site {...})* }`` after ROOT/JOINT."""
    name = tok.next("a joint name")
    j = len(out["names"])
    out["names"].append(name)
    out["parents"].append(parent)
    tok.expect("{")
    tok.expect("OFFSET")
    out["offsets"].append([tok.number("an OFFSET value") for _ in range(3)])
    tok.expect("CHANNELS")
    n = tok.number("a channel count")
    if n not in (0, 3, 6):
        raise DataError(tok.path, f"0, 3 or 6 channels for joint {name!r}", f"{n:g}")
    chans = [tok.next("a channel name") for _ in range(int(n))]
    bad = [c for c in chans if c not in CHANNELS]
    if bad:
        raise DataError(tok.path, f"channels among {CHANNELS}", f"{bad} for joint {name!r}")
    out["channels"].append(chans)
    while True:
        word = tok.next("JOINT, End Site or '}'")
        if word == "}":
            return
        if word == "JOINT":
            _parse_joint(tok, j, out)
        elif word == "End":
            tok.expect("Site")
            tok.expect("{")
            tok.expect("OFFSET")
            out["end_sites"][j] = [tok.number("an End Site OFFSET value") for _ in range(3)]
            tok.expect("}")
        else:
            raise DataError(tok.path, f"JOINT, End Site or '}}' inside joint {name!r}", repr(word))


def parse_bvh(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The raw content of a BVH file: ``names``, ``parents`` (-1 for the root), ``offsets [V, 3]``,
    ``channels`` (names per joint), ``end_sites {joint: offset}``, ``values [T, n_channels]``
    (degrees and file units) and ``frame_time`` (seconds)."""
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8", errors="strict")
    except FileNotFoundError:
        raise DataError(p, "an existing BVH file", "nothing at that path") from None
    except UnicodeDecodeError as err:
        raise DataError(p, "a BVH text file", f"undecodable bytes ({err.reason} at byte {err.start})") from None
    lines = text.splitlines()
    cut = next((i for i, ln in enumerate(lines) if ln.strip() == "MOTION"), None)
    if cut is None:
        raise DataError(p, "a MOTION section after the HIERARCHY", "no line 'MOTION'")
    tok = _Tokens(p, lines[:cut])
    tok.expect("HIERARCHY")
    tok.expect("ROOT")
    out: dict[str, Any] = {"names": [], "parents": [], "offsets": [], "channels": [], "end_sites": {}}
    try:
        _parse_joint(tok, -1, out)
    except RecursionError:
        raise DataError(p, "a joint hierarchy of reasonable depth", "joints nested too deeply to read") from None
    if tok.pos != len(tok.items):
        raise DataError(p, "one ROOT hierarchy", f"{tok.items[tok.pos][0]!r} on line {tok.items[tok.pos][1]} after it")
    out["offsets"] = np.array(out["offsets"], dtype=np.float64)
    out["values"], out["frame_time"] = _parse_motion(
        p, lines, cut, sum(len(c) for c in out["channels"]), len(out["names"])
    )
    return out


def _header(p: Path, lines: list[str], i: int, key: str) -> str:
    if i >= len(lines) or not lines[i].strip().startswith(key):
        found = repr(lines[i].strip()[:40]) if i < len(lines) else "the end of the file"
        raise DataError(p, f"'{key} ...' on line {i + 1}", found)
    return lines[i].strip()[len(key) :].strip()


def _parse_motion(p: Path, lines: list[str], cut: int, n_chan: int, n_joints: int) -> tuple[np.ndarray, float]:
    frames_txt, time_txt = _header(p, lines, cut + 1, "Frames:"), _header(p, lines, cut + 2, "Frame Time:")
    try:
        n_frames, frame_time = int(frames_txt), float(time_txt)
    except ValueError:
        raise DataError(
            p,
            "an integer frame count and a number of seconds per frame",
            f"Frames: {frames_txt!r}, Frame Time: {time_txt!r}",
        ) from None
    if n_frames <= 0:
        raise DataError(p, "a sequence with at least one frame", f"Frames: {n_frames} (a zero-length sequence)")
    if not (np.isfinite(frame_time) and frame_time > 0):
        raise DataError(p, "a positive Frame Time", time_txt)
    rows = [(i + 1, ln) for i, ln in enumerate(lines[cut + 3 :], start=cut + 3) if ln.strip()]
    if len(rows) != n_frames:
        raise DataError(p, f"{n_frames} frame lines (the Frames: header)", f"{len(rows)} frame lines")
    for lineno, ln in rows:
        if len(ln.split()) != n_chan:
            raise DataError(
                p,
                f"{n_chan} values per frame line (the channels of {n_joints} joints)",
                f"{len(ln.split())} values on line {lineno}",
            )
    try:
        values = np.array(" ".join(ln for _, ln in rows).split(), dtype=np.float64).reshape(n_frames, n_chan)
    except ValueError as err:
        raise DataError(p, "numbers on every frame line", str(err)) from None
    if not np.isfinite(values).all():
        t = int(np.argwhere(~np.isfinite(values))[0, 0])
        raise DataError(
            p,
            "finite channel values (BVH has no missing joints; NaN joints are not data)",
            f"NaN/inf on line {rows[t][0]} (frame {t})",
        )
    return values, frame_time


def forward_kinematics(bvh: dict[str, Any]) -> np.ndarray:
    """Joint positions ``[T, V, 3]`` in file units. Each joint's local transform is a translation by
    ``OFFSET`` (plus its position channels, Biovision convention) then its rotation channels
    composed in the order listed (``Zrotation Yrotation Xrotation`` -> ``Rz @ Ry @ Rx``)."""
    values, offsets = bvh["values"], bvh["offsets"]
    t, v = values.shape[0], len(bvh["names"])
    pos = np.zeros((t, v, 3))
    rot = np.zeros((t, v, 3, 3))
    col = 0
    for j, chans in enumerate(bvh["channels"]):
        trans = np.broadcast_to(offsets[j], (t, 3)).copy()
        local = np.broadcast_to(np.eye(3), (t, 3, 3)).copy()
        for c in chans:
            if c.endswith("position"):
                trans[:, "XYZ".index(c[0])] += values[:, col]
            else:
                local = local @ _rotation(c[0], values[:, col])
            col += 1
        parent = bvh["parents"][j]
        if parent < 0:
            pos[:, j], rot[:, j] = trans, local
        else:
            pos[:, j] = pos[:, parent] + np.einsum("tij,tj->ti", rot[:, parent], trans)
            rot[:, j] = rot[:, parent] @ local
    return pos


def bvh_topology(bvh: dict[str, Any], source: str | None = None) -> Topology:
    """The hierarchy as a graph: the ``cmu31`` preset when the joints match it, else inferred parts."""
    preset = match_preset(bvh["names"])
    if preset is not None and tuple(preset.edge_array()[:, 1]) == tuple(
        j for j, p in enumerate(bvh["parents"]) if p >= 0
    ):
        return preset
    return from_parents(Path(source).stem if source else "bvh", bvh["names"], bvh["parents"], source)


def read_bvh(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Motion from a BVH file: forward kinematics of every frame; the hierarchy gives the graph."""
    p = Path(path)
    bvh = parse_bvh(p)
    pos = forward_kinematics(bvh)
    valid = np.isfinite(pos).all(-1)
    return _motion(
        p, pos, valid, round(1.0 / bvh["frame_time"], 2), bvh_topology(bvh, str(p)), "BVH file units", bvh=bvh
    )


def write_bvh(path: str | os.PathLike[str], bvh: dict[str, Any], precision: int = 6) -> Path:
    """Write :func:`parse_bvh`'s dict back as a BVH file (atomically)."""
    names, parents, chans = bvh["names"], bvh["parents"], bvh["channels"]
    children: dict[int, list[int]] = {}
    for j, par in enumerate(parents):
        children.setdefault(par, []).append(j)
    out = ["HIERARCHY"]

    def emit(j: int, depth: int) -> None:
        ind = "\t" * depth
        out.append(f"{ind}{'ROOT' if parents[j] < 0 else 'JOINT'} {names[j]}")
        out.append(f"{ind}{{")
        out.append(f"{ind}\tOFFSET " + " ".join(f"{x:.{precision}f}" for x in bvh["offsets"][j]))
        out.append(f"{ind}\tCHANNELS {len(chans[j])} " + " ".join(chans[j]))
        for c in children.get(j, []):
            emit(c, depth + 1)
        if j in bvh["end_sites"]:
            out.extend(
                [
                    f"{ind}\tEnd Site",
                    f"{ind}\t{{",
                    f"{ind}\t\tOFFSET " + " ".join(f"{x:.{precision}f}" for x in bvh["end_sites"][j]),
                    f"{ind}\t}}",
                ]
            )
        out.append(f"{ind}}}")

    emit(children[-1][0], 0)
    out += ["MOTION", f"Frames: {len(bvh['values'])}", f"Frame Time: {bvh['frame_time']:.7f}"]
    out += [" ".join(f"{x:.{precision}f}" for x in row) for row in bvh["values"]]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(out) + "\n")
    return Path(path)


# ---------------------------------------------------------------------------- NTU RGB+D
def _ntu_int(p: Path, lines: list[str], i: int, what: str) -> int:
    if i >= len(lines):
        raise DataError(p, what, "the end of the file")
    parts = lines[i].split()
    if len(parts) != 1 or not parts[0].lstrip("-").isdigit():
        raise DataError(p, what, f"{lines[i].strip()[:60]!r} on line {i + 1}")
    return int(parts[0])


def read_ntu(path: str | os.PathLike[str], fps: float = 30.0) -> dict[str, Any]:
    """NTU RGB+D ``.skeleton`` text (Kinect v2, 25 joints, metres, 30 fps). Several tracked bodies:
    the one that moves most (summed joint variance) is kept; frames without it are missing."""
    p = Path(path)
    try:
        lines = p.read_text(errors="strict").splitlines()
    except (FileNotFoundError, UnicodeDecodeError) as err:
        raise DataError(p, "a readable NTU .skeleton text file", type(err).__name__) from None
    n_frames = _ntu_int(p, lines, 0, "a frame count on line 1")
    if n_frames <= 0:
        raise DataError(p, "a sequence with at least one frame", f"frame count {n_frames} (a zero-length sequence)")
    bodies: dict[str, np.ndarray] = {}
    i = 1
    for t in range(n_frames):
        n_bodies = _ntu_int(p, lines, i, f"a body count for frame {t}")
        if not 0 <= n_bodies <= NTU_MAX_BODIES:
            raise DataError(p, f"a body count of 0..{NTU_MAX_BODIES} for frame {t}", f"{n_bodies} on line {i + 1}")
        i += 1
        for b in range(n_bodies):
            info = lines[i].split() if i < len(lines) else []
            if len(info) != 10:
                raise DataError(
                    p,
                    f"a 10-value body line for body {b + 1} of {n_bodies} in frame {t} (is the body count right?)",
                    f"{len(info)} values on line {i + 1}",
                )
            n_joints = _ntu_int(p, lines, i + 1, f"a joint count for body {b + 1} of frame {t}")
            if n_joints != 25:
                raise DataError(p, "25 joints per body (Kinect v2)", f"{n_joints} on line {i + 2}")
            block = [ln.split() for ln in lines[i + 2 : i + 27]]
            if len(block) != 25 or any(len(r) != 12 for r in block):
                raise DataError(
                    p,
                    f"25 joint lines of 12 values after line {i + 2}",
                    f"rows of {sorted({len(r) for r in block})} values",
                )
            try:
                xyz = np.array([r[:3] for r in block], dtype=np.float64)
            except ValueError as err:
                raise DataError(p, "numeric joint coordinates", str(err)) from None
            track = bodies.setdefault(info[0], np.full((n_frames, 25, 3), np.nan))
            track[t] = xyz
            i += 27
    if i < len(lines) and any(ln.strip() for ln in lines[i:]):
        raise DataError(p, f"{n_frames} frames (the frame count)", f"more lines after line {i}")
    if not bodies:
        raise DataError(p, "at least one tracked body", f"{n_frames} frames without a body")
    main = max(bodies.values(), key=lambda a: float(np.nansum(np.nanvar(a, axis=0))) if np.isfinite(a).any() else -1)
    valid = np.isfinite(main).all(-1) & (np.abs(np.nan_to_num(main)).sum(-1) > 0)
    return _motion(p, main, valid, fps, PRESETS["ntu25"], "metres", n_bodies=len(bodies))


# ---------------------------------------------------------------------------- pyskl .pkl
class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and NumPy arrays; any other class is refused."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing {module}.{name} (only NumPy arrays are allowed)")
        return super().find_class(module, name)


def load_pickle(path: str | os.PathLike[str], allow_unsafe: bool = False) -> Any:
    """A pickle restricted to containers and NumPy arrays; ``allow_unsafe`` lifts the restriction
    (pickle runs code from the file: only for files you trust)."""
    p = Path(path)
    data = p.read_bytes()
    try:
        if allow_unsafe:
            return pickle.loads(data)  # noqa: S301 (explicitly allowed by the caller)
        return _NumpyOnlyUnpickler(_io.BytesIO(data)).load()
    except pickle.UnpicklingError as err:
        raise DataError(
            p, "a pickle of dicts, lists and NumPy arrays (pass allow_unsafe=True only for files you trust)", str(err)
        ) from None
    except Exception as err:
        raise DataError(p, "a readable pickle", f"{type(err).__name__}: {err}") from None


def read_pyskl(
    path: str | os.PathLike[str], topology: str | Topology | None = None, fps: float = 30.0, allow_unsafe: bool = False
) -> list[dict[str, Any]]:
    """pyskl annotations: ``{"annotations": [{"frame_dir", "label", "keypoint" [M, T, V, C],
    "keypoint_score" [M, T, V] (2D)}, ...]}`` (or the list itself). One motion per annotation, of its
    first person; zero-score joints are missing. Topology: ``ntu25``/``coco17``/``openpose18`` by V."""
    p = Path(path)
    data = load_pickle(p, allow_unsafe)
    anns = data.get("annotations") if isinstance(data, dict) else data
    if not isinstance(anns, list) or not anns:
        raise DataError(p, "a pyskl dict with a non-empty 'annotations' list", type(data).__name__)
    out = []
    for k, ann in enumerate(anns):
        if not isinstance(ann, dict) or "keypoint" not in ann:
            raise DataError(p, f"annotation {k} with a 'keypoint' array", type(ann).__name__)
        kp = np.asarray(ann["keypoint"], dtype=np.float64)
        if kp.ndim != 4 or kp.shape[0] < 1:
            raise DataError(p, f"annotation {k}: keypoint [M, T, V, C]", f"shape {list(kp.shape)}")
        pos = kp[0]
        valid = np.isfinite(pos).all(-1)
        if "keypoint_score" in ann:
            valid &= np.asarray(ann["keypoint_score"])[0] > 0
        topo = (
            get_topology(topology)
            if topology
            else {25: PRESETS["ntu25"], 17: PRESETS["coco17"], 18: PRESETS["openpose18"]}.get(pos.shape[1])
        )
        if topo is None or topo.n_joints != pos.shape[1]:
            raise DataError(
                p, f"annotation {k}: joints of a known topology (or pass topology=)", f"{pos.shape[1]} joints"
            )
        name = str(ann.get("frame_dir", f"{p.stem}_{k}"))
        out.append(_motion(p, pos, valid, fps, topo, "as stored", label=ann.get("label"), name=name))
    return out


# ---------------------------------------------------------------------------- NumPy
def read_array(
    path: str | os.PathLike[str], topology: str | Topology | None = None, fps: float = 30.0
) -> dict[str, Any]:
    """``.npy`` ``[T, V, C]`` with a named topology, or ``.npz`` with ``positions [T, V, C]`` and
    optional ``joint_names``, ``edges [E, 2]``, ``fps``, ``topology``, ``confidence [T, V]``.
    NaN joints and zero-confidence joints are missing (padding), not errors."""
    p = Path(path)
    conf = None
    try:
        if p.suffix.lower() == ".npz":
            with np.load(p, allow_pickle=False) as z:
                if "positions" not in z.files:
                    raise DataError(p, "a 'positions' array [T, V, C]", f"keys {z.files}")
                arr = z["positions"]
                fps = float(z["fps"]) if "fps" in z.files else fps
                conf = z["confidence"] if "confidence" in z.files else None
                if "joint_names" in z.files:
                    names = [str(n) for n in z["joint_names"]]
                    edges = z["edges"] if "edges" in z.files else np.zeros((0, 2), int)
                    topology = (
                        Topology(p.stem, tuple(names), tuple((names[a], names[b]) for a, b in edges), source=str(p))
                        if all(0 <= e < len(names) for e in edges.ravel())
                        else None
                    )
                    if topology is None:
                        raise DataError(p, f"edges between its {len(names)} joints", "edges naming unknown joints")
                elif "topology" in z.files and topology is None:
                    topology = str(z["topology"])
        else:
            arr = np.load(p, allow_pickle=False)
    except DataError:
        raise
    except Exception as err:
        raise DataError(p, "a readable .npy/.npz array", f"{type(err).__name__}: {err}") from None
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim != 3:
        raise DataError(p, "positions shaped [T, V, C]", f"shape {list(arr.shape)}")
    if topology is None:
        raise DataError(p, "a named topology (data.topology or a 'topology' entry)", "none")
    topo = topology if isinstance(topology, Topology) else get_topology(topology)
    if arr.shape[1] != topo.n_joints:
        raise DataError(p, f"{topo.n_joints} joints of topology {topo.name!r}", f"{arr.shape[1]} joints")
    valid = np.isfinite(arr).all(-1)
    if conf is not None:
        valid &= np.asarray(conf) > 0
    return _motion(p, arr, valid, fps, topo, "as stored")


def read_sequences(
    path: str | os.PathLike[str], topology: str | None = None, fps: float | None = None, allow_unsafe: bool = False
) -> list[dict[str, Any]]:
    """Every motion in one file, by extension (a pyskl ``.pkl`` holds many)."""
    p = Path(path)
    ext = p.suffix.lower()
    if ext not in EXTS:
        raise DataError(p, f"a skeleton file ({', '.join(EXTS)})", f"extension {p.suffix!r}")
    if not p.is_file():
        raise DataError(p, "an existing file", "nothing at that path")
    if ext == ".bvh":
        return [read_bvh(p)]
    if ext == ".skeleton":
        return [read_ntu(p, fps or 30.0)]
    if ext == ".pkl":
        return read_pyskl(p, topology, fps or 30.0, allow_unsafe)
    return [read_array(p, topology, fps or 30.0)]
