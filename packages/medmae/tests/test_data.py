from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from maecore.errors import ConfigError, DataError
from maecore.tasks.data import collate_dict
from medmae.cases import find_cases
from medmae.data import DataConfig, MRIDataset, flip_axes_of, load_dataset_cases
from medmae.io import read_volume

MODS = ["t1", "t1ce", "t2", "flair"]


def small_config(**kw) -> DataConfig:
    base = dict(spacing=None, roi_size=[16, 16, 16], samples_per_case=4, cache="memory")
    return DataConfig(**{**base, **kw})


def test_preprocessing_is_ras_cropped_and_z_scored(tmp_path, case_maker):
    folder = case_maker(tmp_path / "a")  # LPS, 2 mm
    ds = MRIDataset(find_cases(folder)[0], small_config())
    d = ds.preprocessed(0)
    img = d["image"]
    assert np.allclose(np.diag(np.asarray(img.affine))[:3], [2, 2, 2])  # RAS: positive diagonal
    # manual reference: flip x and y (LPS -> RAS), crop to the non-zero box, z-score non-zero voxels
    t1 = read_volume(folder / "a_t1.nii.gz").data[::-1, ::-1, :]
    nz = np.argwhere(np.any([read_volume(folder / f"a_{m}.nii.gz").data[::-1, ::-1, :] != 0 for m in MODS], 0))
    box = tuple(slice(lo, hi + 1) for lo, hi in zip(nz.min(0), nz.max(0)))
    crop = t1[box]
    z = np.where(crop != 0, (crop - crop[crop != 0].mean()) / crop[crop != 0].std(), 0)
    got = img[0].numpy()
    assert got.shape[0] >= crop.shape[0]  # padded to the ROI where smaller
    np.testing.assert_allclose(got[: crop.shape[0], : crop.shape[1], : crop.shape[2]], z, atol=1e-4)
    for g in range(4):
        brain = img[g][img[g] != 0]
        assert abs(float(brain.mean())) < 1e-4 and abs(float(brain.std()) - 1) < 1e-2
    assert torch.allclose(d["raw_stats"][0], torch.tensor([crop[crop != 0].mean(), crop[crop != 0].std()],
                                                          dtype=torch.float64), rtol=1e-4)


def test_resampling_to_the_target_spacing(tmp_path, case_maker):
    folder = case_maker(tmp_path / "a", shape=(40, 40, 40))
    d = MRIDataset(find_cases(folder)[0], small_config(spacing=[4.0, 4.0, 4.0], roi_size=[8, 8, 8])).preprocessed(0)
    assert np.allclose(np.diag(np.asarray(d["image"].affine))[:3], [4, 4, 4])
    assert max(d["image"].shape[1:]) <= 20


def test_missing_modality_is_padding_not_an_image(tmp_path, case_maker):
    folder = case_maker(tmp_path / "c", names={"t1": "c_t1.nii.gz", "flair": "c_flair.nii.gz"})
    ds = MRIDataset(find_cases(folder)[0], small_config())
    s = ds[0]
    assert s["group_pad"].tolist() == [False, True, True, False]
    import maecore.models as mm

    model = mm.create_model("medmae_tiny", patch_size=8)
    batch = collate_dict([ds[i] for i in range(2)])
    tokens = model.tokenizer.tokens(batch)
    absent = (tokens.group == 1) | (tokens.group == 2)
    assert bool(tokens.pad[absent].all()) and not bool(tokens.pad[~absent].any())
    out = model(batch, generator=torch.Generator().manual_seed(0))
    assert not bool((out.mask & out.pad).any())  # absent tokens are never scored
    visible = ~out.mask & ~out.pad
    assert int(visible.sum()) == round(0.25 * int((~out.pad).sum()))


def test_samples_are_deterministic_per_index(tmp_path, case_maker):
    ds = MRIDataset(find_cases(case_maker(tmp_path / "a", shape=(32, 32, 32)))[0], small_config(samples_per_case=8))
    assert len(ds) == 8
    a, b = ds[3], ds[3]
    assert torch.equal(a["x"], b["x"]) and a["x"].shape == (4, 16, 16, 16)
    assert any(not torch.equal(ds[3]["x"], ds[j]["x"]) for j in (0, 1, 2))
    with pytest.raises(IndexError):
        ds[8]


def test_disk_cache_gives_the_same_samples(tmp_path, case_maker):
    cases = find_cases(case_maker(tmp_path / "a"))[0]
    mem = MRIDataset(cases, small_config())
    disk = MRIDataset(cases, small_config(cache="disk", cache_dir=str(tmp_path / "cache")))
    assert torch.equal(mem[2]["x"], disk[2]["x"])
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1
    again = MRIDataset(cases, small_config(cache="disk", cache_dir=str(tmp_path / "cache")))
    assert torch.equal(again[1]["x"], mem[1]["x"])


def test_disk_cache_needs_a_folder(tmp_path, case_maker):
    cases = find_cases(case_maker(tmp_path / "a"))[0]
    with pytest.raises(ConfigError, match="data.cache=disk needs data.cache_dir"):
        MRIDataset(cases, small_config(cache="disk"))


def test_a_bad_case_is_refused_or_skipped_and_listed(tmp_path, case_maker, nifti_writer, volume_maker, capsys):
    case_maker(tmp_path / "good")
    vol = volume_maker(modality="t2").astype(np.float32)
    vol[1, 2, 3] = np.nan
    case_maker(tmp_path / "nan", names={"t1": "nan_t1.nii.gz"})
    nifti_writer(tmp_path / "nan" / "nan_t2.nii.gz", vol)
    cases = find_cases(tmp_path)[0]
    with pytest.raises(DataError, match=r"1 bad case\(s\): .*nan_t2\.nii\.gz: expected finite voxel values, found 1 NaN"):
        MRIDataset(cases, small_config())
    ds = MRIDataset(cases, small_config(), skip_bad=True)
    assert ds.n_cases == 1 and ds[0]["case_id"] == "good"
    assert "skipped bad case" in capsys.readouterr().out


def test_load_dataset_cases_refuses_a_mismatched_case(tmp_path, case_maker, capsys):
    case_maker(tmp_path / "good")
    case_maker(tmp_path / "odd", names={"t1": "odd_t1.nii.gz"})
    case_maker(tmp_path / "odd", names={"t2": "odd_t2.nii.gz"}, shape=(24, 28, 18))
    with pytest.raises(DataError, match=r"1 bad case\(s\): .*odd_t1\.nii\.gz and .*odd_t2\.nii\.gz with shape"):
        load_dataset_cases(tmp_path, small_config())
    assert [c.case_id for c in load_dataset_cases(tmp_path, small_config(), skip_bad=True)] == ["good"]
    assert "skipped bad case" in capsys.readouterr().out


def test_region_restricts_crops(tmp_path, case_maker):
    cases = find_cases(case_maker(tmp_path / "a", shape=(40, 40, 40)))[0]
    dc = small_config(roi_size=[8, 8, 8], flip_prob=0.0)
    full = MRIDataset(cases, dc).preprocessed(0)["image"]
    part = MRIDataset(cases, dc, region=[(0, 1), (0, 1), (0.5, 1.0)])
    z0 = int(round(0.5 * full.shape[3]))
    window = full[..., z0:].as_tensor()
    for i in range(4):
        x = part[i]["x"]
        found = any(torch.equal(x, window[:, a:a + 8, b:b + 8, c:c + 8])
                    for a in range(window.shape[1] - 7) for b in range(window.shape[2] - 7)
                    for c in range(window.shape[3] - 7))
        assert found


def test_flips_follow_the_seeded_axes_on_the_same_crop(tmp_path, case_maker, nifti_writer):
    """A sample is its unflipped crop reversed along exactly the axes ``flip_axes_of`` drew for it,
    image and label volume alike, as contiguous float32 / int64 copies."""
    folder = case_maker(tmp_path / "a", shape=(30, 30, 30))
    affine = nib.load(next(folder.glob("*t1.nii.gz"))).affine
    labels = np.random.default_rng(0).integers(0, 3, (30, 30, 30)).astype(np.uint8)
    nifti_writer(folder / "a_seg.nii.gz", labels, affine)
    cases = find_cases(folder)[0]
    assert cases[0].seg is not None
    plain = MRIDataset(cases, small_config(roi_size=[8, 8, 8], flip_prob=0.0, samples_per_case=12), with_seg=True)
    dc = small_config(roi_size=[8, 8, 8], flip_prob=0.5, flip_axes=[0, 1, 2], samples_per_case=12)
    flipped = MRIDataset(cases, dc, with_seg=True)
    seen = set()
    for i in range(12):
        axes = flip_axes_of(dc, i)
        seen.add(tuple(axes))
        a, b = plain[i], flipped[i]
        assert b["x"].is_contiguous() and b["x"].dtype == torch.float32 and b["mask"].dtype == torch.int64
        dims = [1 + ax for ax in axes]
        assert torch.equal(b["x"], a["x"].flip(dims) if dims else a["x"]), (i, axes)
        assert torch.equal(b["mask"], a["mask"].flip([d - 1 for d in dims]) if dims else a["mask"]), (i, axes)
    assert len(seen) > 3 and flip_axes_of(dc, 5) == flip_axes_of(dc, 5)  # varied, and a function of i


@pytest.mark.parametrize("with_seg", [False, True])
def test_reseeded_crops_equal_monais_own_seeding(tmp_path, case_maker, nifti_writer, with_seg: bool):
    """ReseededRandom gives the crops of ``compose.set_random_state(seed=s)`` (a new RandomState per
    transform and sample), for the random crop and the labelled pos/neg crop alike."""
    from monai.data import MetaTensor

    from medmae.data import ReseededRandom, random_transforms

    folder = case_maker(tmp_path / "a", shape=(30, 30, 30))
    if with_seg:
        affine = nib.load(next(folder.glob("*t1.nii.gz"))).affine
        nifti_writer(folder / "a_seg.nii.gz", (np.arange(30**3).reshape(30, 30, 30) % 7 == 0).astype(np.uint8), affine)
    dc = small_config(roi_size=[8, 8, 8])
    d = MRIDataset(find_cases(folder)[0], dc, with_seg=with_seg).preprocessed(0)
    ours, theirs = ReseededRandom(random_transforms(dc, with_seg)), random_transforms(dc, with_seg)
    for s in (0, 1, 12345, 2**32 - 1):
        a = ours(d, seed=s)
        b = theirs.set_random_state(seed=s)(d)
        a, b = (a[0], b[0]) if with_seg else (a, b)
        assert not isinstance(a["image"], MetaTensor)  # meta tracking off for the crop
        assert torch.equal(a["image"], b["image"].as_tensor()), s
        if with_seg:
            assert torch.equal(a["seg"], b["seg"].as_tensor()), s


@pytest.mark.parametrize(("key", "value", "match"), [
    ("roi_size", [16, 16], "data.roi_size must be three positive integers"),
    ("cache", "ram", "data.cache must be one of"),
    ("modality_map", {"pd": "pd"}, "not in data.modalities"),
    ("spacing", [1, 0, 1], "data.spacing must be three positive numbers"),
])
def test_data_config_errors(key, value, match):
    with pytest.raises(ConfigError, match=match):
        DataConfig(**{key: value})
