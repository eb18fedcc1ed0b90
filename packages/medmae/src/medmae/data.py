"""Preprocessing (MONAI transforms), caching and the datasets the tasks train on.

The deterministic part of preprocessing runs once per case and is cached (MONAI ``CacheDataset``
in memory or ``PersistentDataset`` on disk):

    LoadCased (nibabel, modalities stacked as channels, absent ones flagged in ``group_pad``)
    -> Orientationd RAS -> Spacingd (target spacing, bilinear; nearest for labels)
    -> CropForegroundd (voxels non-zero in any present modality)
    -> NormalizeIntensityd (z-score over non-zero voxels, per modality) -> SpatialPadd (to the ROI)

The random part runs per sample, seeded by ``(seed, index)`` so the k-th sample is the same in
every run (exact resume): RandSpatialCropd (``roi_size``; RandCropByPosNegLabeld with label
volumes, half the crops centred on labelled voxels), then a flip along each of ``flip_axes`` with
``flip_prob`` (:func:`flip_axes_of`), done with the crop and the float32 cast in one copy
(:func:`flipped_copy`). Evaluation samples use a centre crop instead.

Sample dict: ``x`` float32 ``[G, *roi]`` (one channel per modality of ``modalities``; an absent
modality's channel holds zeros that are never seen: ``group_pad`` marks it, and the tokenizer turns
all of its tokens into padding), ``group_pad`` bool ``[G]``, ``case_id`` str, plus ``label``
(int64, labelled data) and ``mask`` (int64 ``[*roi]``, label volumes).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import CacheDataset, MetaTensor, PersistentDataset, get_track_meta, set_track_meta
from monai.data import Dataset as MonaiDataset
from monai.transforms import (
    CenterSpatialCropd,
    Compose,
    CropForegroundd,
    NormalizeIntensityd,
    Orientationd,
    RandCropByPosNegLabeld,
    Randomizable,
    RandSpatialCropd,
    Spacingd,
    SpatialPadd,
    Transform,
)
from monai.utils import MAX_SEED
from torch.utils.data import Dataset

from maecore.errors import ConfigError, DataError, read_all
from medmae.cases import Case, find_cases, read_case, read_label_volume
from medmae.dataconfig import CACHE_KINDS, TASKS, DataConfig  # noqa: F401  (re-exported: medmae.data.DataConfig)

log = logging.getLogger(__name__)
RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


# ---------------------------------------------------------------------- transforms
def _nonzero(x: torch.Tensor) -> torch.Tensor:
    return x != 0


class LoadCased(Transform):
    """``{"files": {modality: path}, "seg": path | None, ...}`` -> image dict (see module doc).

    ``image`` is a MetaTensor ``[G, X, Y, Z]`` with the files' affine; absent modalities are
    zero channels flagged in ``group_pad``; ``raw_stats [G, 2]`` holds each modality's mean and
    standard deviation over its non-zero voxels in file units (NaN when absent), the statistics
    stored in an exported model so a synthesised modality can be mapped back to intensities.
    """

    def __init__(self, modalities: Sequence[str]) -> None:
        self.modalities = list(modalities)

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        case = Case(item["case_id"], {m: Path(p) for m, p in item["files"].items()},
                    Path(item["seg"]) if item.get("seg") else None, source=item.get("source", ""))
        vols = read_case(case, self.modalities)
        if not vols:
            raise DataError(case.source or case.case_id, f"at least one of the modalities {self.modalities}",
                            f"only {sorted(case.files)}")
        ref = next(iter(vols.values()))
        channels, stats = [], []
        for m in self.modalities:
            v = vols.get(m)
            channels.append(v.data if v is not None else np.zeros(ref.shape, np.float32))
            brain = v.data[v.data != 0] if v is not None else np.zeros(0, np.float32)
            stats.append([float(brain.mean()), float(brain.std())] if brain.size else [float("nan")] * 2)
        affine = torch.as_tensor(ref.affine, dtype=torch.float64)
        out = dict(item)
        out["image"] = MetaTensor(torch.from_numpy(np.stack(channels)), affine=affine,
                                  meta={"filename_or_obj": ref.path})
        out["group_pad"] = torch.tensor([m not in vols for m in self.modalities])
        out["raw_stats"] = torch.tensor(stats, dtype=torch.float64)
        if case.seg is not None:
            seg = read_label_volume(case)  # same grid as the images, integer classes
            out["seg"] = MetaTensor(torch.from_numpy(seg.data[None]), affine=affine.clone())
        else:
            out.pop("seg", None)
        return out


class Compactd(Transform):
    """Copy ``keys`` into their own compact storage: a foreground crop is a view that would keep the
    whole uncropped volume alive in the memory cache and in every disk-cache file."""

    def __init__(self, keys: Sequence[str]) -> None:
        self.keys = list(keys)

    def __call__(self, d: dict[str, Any]) -> dict[str, Any]:
        out = dict(d)
        for k in self.keys:
            if k in out:
                out[k] = out[k].clone(memory_format=torch.contiguous_format)
        return out


def preprocess_transforms(dc: DataConfig, with_seg: bool = False, pad_to_roi: bool = True) -> Compose:
    """The deterministic, cached part of preprocessing (see the module docstring)."""
    keys = ["image", "seg"] if with_seg else ["image"]
    modes = ["bilinear", "nearest"] if with_seg else ["bilinear"]
    steps: list[Any] = [LoadCased(dc.modalities), Orientationd(keys, axcodes="RAS", labels=RAS_LABELS)]
    if dc.spacing is not None:
        steps.append(Spacingd(keys, pixdim=dc.spacing, mode=modes))
    steps += [
        CropForegroundd(keys, source_key="image", select_fn=_nonzero, allow_smaller=True),
        NormalizeIntensityd("image", nonzero=True, channel_wise=True),
    ]
    if pad_to_roi:
        steps.append(SpatialPadd(keys, spatial_size=dc.roi_size))
    steps.append(Compactd(keys))
    return Compose(steps)


def random_transforms(dc: DataConfig, with_seg: bool = False) -> Compose:
    """Random crop and flips. With label volumes the crop is MONAI ``RandCropByPosNegLabeld``
    (pos = neg = 1: half the crops are centred on a labelled voxel, half on background; a small
    region would otherwise be missing from most crops and the model would learn to predict none)."""
    keys = ["image", "seg"] if with_seg else ["image"]
    if with_seg:
        steps: list[Any] = [RandCropByPosNegLabeld(keys, label_key="seg", spatial_size=dc.roi_size, pos=1, neg=1,
                                                   num_samples=1, allow_smaller=True)]
    else:
        steps = [RandSpatialCropd(keys, roi_size=dc.roi_size, random_size=False)]
    return Compose(steps)


def flip_axes_of(dc: DataConfig, i: int, rs: np.random.RandomState | None = None) -> list[int]:
    """The spatial axes sample ``i`` is flipped along: each of ``flip_axes`` with ``flip_prob``, from a
    random stream of its own seeded by ``(seed, i)`` (so a resumed run repeats them). ``rs``: a
    generator to reseed instead of building one (about 100 us each)."""
    seed = (dc.seed * 1_000_003 + i + 0x9E37) % (2**32)
    if rs is None:
        rs = np.random.RandomState(seed)
    else:
        rs.seed(seed)
    return [a for a in dc.flip_axes if rs.rand() < dc.flip_prob]


class ReseededRandom:
    """MONAI random transforms reseeded per sample, with the draws of
    ``compose.set_random_state(seed=s)`` but without its cost.

    ``set_random_state(seed=s)`` builds a new ``np.random.RandomState`` (about 100 us) for the
    ``Compose``, for each random transform in it and for each transform's inner cropper: 0.3 ms
    a sample, a fifth of a small crop's loading time. Here every random transform draws from one
    shared ``RandomState``, reseeded in place (about 2 us) as ``Compose`` seeds its child: with
    ``s``, then with the first ``randint(2**32)`` drawn from that. With a single random transform
    (as in :func:`random_transforms`) the crops equal ``set_random_state``'s exactly.
    """

    def __init__(self, compose: Compose) -> None:
        self.compose, self.rs = compose, np.random.RandomState(0)
        for t in compose.transforms:
            if isinstance(t, Randomizable):
                t.set_random_state(state=self.rs)  # RandCropd passes the same state to its cropper

    def __call__(self, d: dict[str, Any], seed: int) -> Any:
        self.rs.seed(seed)
        self.rs.seed(int(self.rs.randint(MAX_SEED, dtype="uint32")))
        with without_meta():
            return self.compose(d)


@contextmanager
def without_meta() -> Iterator[None]:
    """MONAI transforms inside give plain tensors, not ``MetaTensor``s: for crops whose values are
    all a sample keeps (its affine is the case's, not the crop's). MONAI's meta bookkeeping cost
    about 190 of 290 us per crop of a small ROI. (MONAI's switch is process-wide; restored after.)"""
    before = get_track_meta()
    set_track_meta(False)
    try:
        yield
    finally:
        set_track_meta(before)


def flipped_copy(t: Any, dims: Sequence[int], dtype: Any = np.float32) -> torch.Tensor:
    """One contiguous copy of ``t`` reversed along ``dims``: numpy's reversed views cost nothing, so the
    crop, the flips and the cast are a single pass (a MONAI flip per axis, then a copy, made three
    or four passes: 55 of 66 ms per 128^3 x 4 sample from the memory cache)."""
    a = (t.as_tensor() if isinstance(t, MetaTensor) else torch.as_tensor(t)).detach().cpu().numpy()
    index = [slice(None)] * a.ndim
    for d in dims:
        index[d] = slice(None, None, -1)
    return torch.from_numpy(np.ascontiguousarray(a[tuple(index)], dtype=dtype))


def case_item(case: Case, dc: DataConfig) -> dict[str, Any]:
    """The plain, hashable description of a case handed to MONAI's datasets.

    ``prep`` and ``stamp`` make the disk cache key change with the preprocessing settings and with
    the files' size and modification time, so a stale cache entry is never reused.
    """
    stamp = []
    for p in case.all_paths():
        st = os.stat(p)
        stamp.append(f"{p}:{st.st_size}:{st.st_mtime_ns}")
    return {
        "case_id": case.case_id,
        "files": {m: str(p) for m, p in case.files.items()},
        "seg": str(case.seg) if case.seg else None,
        "source": case.source,
        "prep": f"v1 {dc.modalities} {dc.spacing} pad{dc.roi_size}",
        "stamp": ";".join(stamp),
    }


class SafePreprocess(Transform):
    """Run the deterministic transforms; a :class:`DataError` becomes an ``error`` entry instead of
    an exception, so one bad case neither aborts caching nor hides the others. (A MONAI
    ``Transform`` that is not random, so MONAI's cached datasets cache its output.)"""

    def __init__(self, transform: Compose) -> None:
        self.transform = transform

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        try:
            return run_transform(self.transform, item)
        except DataError as err:
            return {**item, "error": [err.path or "", err.expected, err.found]}


def run_transform(transform: Compose, item: dict[str, Any]) -> dict[str, Any]:
    """Apply MONAI transforms; a :class:`DataError` that MONAI wrapped in ``RuntimeError("applying
    transform ...")`` is raised as itself so the user sees which file is bad and why."""
    try:
        return transform(item)
    except RuntimeError as err:
        cause: BaseException | None = err
        while cause is not None and not isinstance(cause, DataError):
            cause = cause.__cause__
        if cause is None:
            raise
        raise cause from None


def raise_if_error(d: dict[str, Any]) -> dict[str, Any]:
    if "error" in d:
        raise DataError(*d["error"])
    return d


def cached_dataset(items: list[dict[str, Any]], transform: Compose, dc: DataConfig) -> Dataset:
    """MONAI ``CacheDataset`` (memory), ``PersistentDataset`` (disk) or plain ``Dataset`` (none)."""
    safe = SafePreprocess(transform)
    if dc.cache == "memory":
        return CacheDataset(items, safe, num_workers=0, progress=False, copy_cache=False)
    if dc.cache == "disk":
        if not dc.cache_dir:
            raise ConfigError("data.cache=disk needs data.cache_dir (a folder for the preprocessed cases)")
        Path(dc.cache_dir).mkdir(parents=True, exist_ok=True)
        return PersistentDataset(items, safe, cache_dir=dc.cache_dir, track_meta=False)
    return MonaiDataset(items, safe)


# ---------------------------------------------------------------------- datasets
class MRIDataset(Dataset):
    """Preprocessed, cached cases with per-sample crops and flips.

    Sample ``i`` is a crop of case ``i // samples_per_case``; ``train=False`` gives one centre crop
    per case. ``labels`` (one int per case) adds ``label``; ``with_seg`` adds the label volume as
    ``mask``. ``region`` restricts crops to a box of the preprocessed volume given as fractions
    ``[(lo, hi)] * 3`` per axis (a spatial train / held-out split of one volume).

    With the memory cache every case is preprocessed here; a case that fails (truncated file, NaN
    voxels...) raises :class:`DataError` listing all failures, or with ``skip_bad`` is left out
    and listed in ``skipped``. With the disk cache or none, a bad case raises when first read.
    """

    def __init__(
        self,
        cases: Sequence[Case],
        dc: DataConfig,
        train: bool = True,
        labels: Sequence[int] | None = None,
        with_seg: bool = False,
        region: Sequence[tuple[float, float]] | None = None,
        skip_bad: bool = False,
    ) -> None:
        if not cases:
            raise DataError(None, "at least one case", "an empty dataset")
        if labels is not None and len(labels) != len(cases):
            raise ValueError(f"got {len(labels)} labels for {len(cases)} cases")
        self.cases, self.dc, self.train = list(cases), dc, train
        self.labels = None if labels is None else [int(v) for v in labels]
        self.with_seg, self.region = with_seg, region
        self.base = cached_dataset([case_item(c, dc) for c in self.cases], preprocess_transforms(dc, with_seg), dc)
        self.random = ReseededRandom(random_transforms(dc, with_seg))
        self.center = CenterSpatialCropd(["image", "seg"] if with_seg else ["image"], roi_size=dc.roi_size)
        self.per_case = dc.samples_per_case if train else 1
        self.keep = list(range(len(self.cases)))  # positions in self.base of the cases in use
        self.skipped: list[DataError] = []
        if dc.cache == "memory":
            self._drop_bad(skip_bad)

    def _drop_bad(self, skip_bad: bool) -> None:
        bad = [i for i in self.keep if "error" in self.base[i]]
        errors = [DataError(*self.base[i]["error"]) for i in bad]
        if errors and not skip_bad:
            raise DataError(None, "only good cases (run `medmae check` for details, or --skip-bad to skip them)",
                            f"{len(errors)} bad case(s): " + "; ".join(str(e) for e in errors))
        for err in errors:
            print(f"skipped bad case: {err}")
        self.skipped = errors
        self.keep = [i for i in self.keep if i not in bad]
        if not self.keep:
            raise DataError(None, "at least one good case", "none left after skipping bad cases")

    @property
    def n_cases(self) -> int:
        return len(self.keep)

    def case(self, case_index: int) -> Case:
        return self.cases[self.keep[case_index]]

    def __len__(self) -> int:
        return self.n_cases * self.per_case

    def preprocessed(self, case_index: int) -> dict[str, Any]:
        """The cached, preprocessed dict of one case (``image [G, *S]``, ``group_pad``, ``raw_stats``)."""
        return raise_if_error(self.base[self.keep[case_index]])

    def _restrict(self, d: dict[str, Any]) -> dict[str, Any]:
        if self.region is None:
            return d
        shape = d["image"].shape[1:]
        sl = [slice(None)]
        for (lo, hi), s in zip(self.region, shape):
            a, b = int(round(lo * s)), int(round(hi * s))
            roi = self.dc.roi_size[len(sl) - 1]
            if b - a < roi:  # keep at least one ROI inside the region
                a, b = (max(0, b - roi), max(b, roi)) if lo > 0 else (a, min(s, a + roi))
            sl.append(slice(a, b))
        out = dict(d)
        for k in ("image", "seg"):
            if k in d:
                out[k] = d[k][tuple(sl)]
        return out

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not 0 <= i < len(self):
            raise IndexError(f"sample {i} out of range for {len(self)} samples")
        case_index = i // self.per_case
        d = self._restrict(self.preprocessed(case_index))
        if self.train:
            d = self.random(d, seed=(self.dc.seed * 1_000_003 + i) % (2**32))
            d = d[0] if isinstance(d, list) else d  # RandCropByPosNegLabeld gives a list of one crop
            return self._sample(case_index, d, flip_axes_of(self.dc, i, self.random.rs))
        with without_meta():
            return self._sample(case_index, self.center(d))

    def center_sample(self, case_index: int) -> dict[str, Any]:
        """The centre crop of a case (deterministic; for figures and evaluation)."""
        return self._sample(case_index, self.center(self._restrict(self.preprocessed(case_index))))

    def _sample(self, case_index: int, d: dict[str, Any], flip: Sequence[int] = ()) -> dict[str, Any]:
        dims = [1 + a for a in flip]  # channel first
        sample: dict[str, Any] = {
            "x": flipped_copy(d["image"], dims),
            "group_pad": torch.as_tensor(d["group_pad"], dtype=torch.bool).clone(),
            "case_id": self.case(case_index).case_id,
        }
        if self.labels is not None:
            sample["label"] = torch.tensor(self.labels[self.keep[case_index]], dtype=torch.long)
        if self.with_seg:
            sample["mask"] = flipped_copy(d["seg"], dims)[0].round().long()
        return sample

    def intensity_stats(self) -> dict[str, dict[str, float]]:
        """Per modality, the mean over cases of each case's brain mean and std in file units."""
        stats = torch.stack([torch.as_tensor(self.preprocessed(i)["raw_stats"]) for i in range(self.n_cases)])
        out = {}
        for g, m in enumerate(self.dc.modalities):
            col = stats[:, g]
            ok = torch.isfinite(col).all(1)
            if ok.any():
                out[m] = {"mean": float(col[ok, 0].mean()), "std": float(col[ok, 1].mean()), "n_cases": int(ok.sum())}
        return out


def load_dataset_cases(path: str | os.PathLike[str], dc: DataConfig, skip_bad: bool = False) -> list[Case]:
    """Cases of a dataset path, refusing bad ones unless ``skip_bad`` (then each skip is printed).

    Every case is validated (headers and grids) before training, so a bad case is named here,
    not halfway through a run.
    """
    from medmae.cases import check_case_geometry

    cases, problems = find_cases(path, dc.modalities, dc.modality_map)

    def checked(case: Case) -> Case:
        check_case_geometry(case)
        return case

    return read_all(cases, checked, skip_bad, noun="case", where=path, found_bad=problems)
