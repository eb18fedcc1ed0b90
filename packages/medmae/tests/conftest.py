from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medmae import sample_case, sample_dir

# the suite's reference copy: <repo parent>/shared/data/mri (or <repo>/shared/data/mri)
_ROOT = Path(__file__).resolve().parents[3]
SHARED = next((p for p in (_ROOT.parent / "shared" / "data" / "mri", _ROOT / "shared" / "data" / "mri")
               if (p / "TCGA-DU-7294").is_dir()), _ROOT.parent / "shared" / "data" / "mri")

# mean brain intensity of each synthetic modality (distinct contrasts)
CONTRAST = {"t1": 600.0, "t1ce": 700.0, "t2": 300.0, "flair": 500.0}
LPS_2MM = np.array([[-2.0, 0, 0, 30.0], [0, -2.0, 0, 40.0], [0, 0, 2.0, -10.0], [0, 0, 0, 1]])


@pytest.fixture(autouse=True)
def _threads():
    # one intra-op thread: these tensors are small, and on a shared 2-core machine two threads
    # contend with other processes (isfinite on 131k voxels: 0.3 ms with 1 thread, 25 ms with 2)
    torch.set_num_threads(1)


@pytest.fixture
def shared_mri() -> Path:
    if not (SHARED / "TCGA-DU-7294").is_dir():
        pytest.skip(f"reference sample data not found at {SHARED}")
    return SHARED / "TCGA-DU-7294"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """``medmae pretrain --config tiny`` on the bundled sample (no --data), 8 steps; shared by the
    CLI and segmentation tests (read-only: tests write their own outputs elsewhere)."""
    from medmae.cli import main

    out = tmp_path_factory.mktemp("pretrain") / "run"
    assert main(["pretrain", "--config", "tiny", "--max-steps", "8", "--out", str(out)]) == 0
    return out


@pytest.fixture
def bundled_case() -> Path:
    return sample_case()


@pytest.fixture
def bundled_dir() -> Path:
    return sample_dir()


def synthetic_volume(shape=(24, 28, 20), modality="t1", seed=0) -> np.ndarray:
    """An int16 'brain': an ellipsoid of tissue with a modality-specific mean, a brighter blob and
    seeded noise, zero outside."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    inside = (grid**2).sum(0) < 0.8
    blob = ((grid - 0.3) ** 2).sum(0) < 0.08
    base = CONTRAST[modality] * (1 + 0.2 * grid[0]) + 150 * blob * (1 if modality != "t2" else -1)
    vol = np.where(inside, base + rng.normal(0, 20, shape), 0)
    return np.round(vol).astype(np.int16)


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray = LPS_2MM) -> Path:
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def make_case(folder: Path, names: dict[str, str] | None = None, shape=(24, 28, 20), affine=LPS_2MM, seed=0
              ) -> Path:
    """A synthetic case folder: ``names`` maps modality -> file name (BraTS 2021 names by default)."""
    names = names or {m: f"{folder.name}_{m}.nii.gz" for m in CONTRAST}
    for i, (mod, fname) in enumerate(names.items()):
        write_nifti(folder / fname, synthetic_volume(shape, mod, seed * 10 + i), affine)
    return folder


@pytest.fixture
def case_maker():
    """``case_maker(folder, names=None, shape=..., affine=..., seed=0)`` writes a synthetic case."""
    return make_case


@pytest.fixture
def nifti_writer():
    return write_nifti


@pytest.fixture
def volume_maker():
    """``volume_maker(shape=(24, 28, 20), modality="t1", seed=0)``: a synthetic int16 brain."""
    return synthetic_volume
