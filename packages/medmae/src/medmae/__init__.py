"""medmae: multimodal brain-MRI masked autoencoders (after BM-MAE) on the maecore suite.

Reads BraTS-style folders of NIfTI files (or a CSV manifest) in which a case may lack modalities,
pretrains a per-modality-tokenised MAE with group-budget masking, synthesises missing
modalities back onto the input's grid, and fine-tunes the encoder for classification or, with a
UNETR-style decoder (:mod:`medmae.segmentation`), for voxel-wise segmentation.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__version__ = "0.1.0"
SAMPLE_CASE = "TCGA-DU-7294"


def sample_dir() -> Path:
    """The bundled real sample: a folder of case folders holding one case, ``TCGA-DU-7294`` (2 mm)."""
    return Path(str(resources.files("medmae").joinpath("sample")))


def sample_case() -> Path:
    """The bundled case folder (T1, T1c, T2, FLAIR at 2 mm, see ``sample/PROVENANCE.md``)."""
    return sample_dir() / SAMPLE_CASE


__all__ = ["SAMPLE_CASE", "__version__", "sample_case", "sample_dir"]
