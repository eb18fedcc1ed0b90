"""Catalogue of MRI modality names: BraTS 2021 and 2023 names and the aliases found in file names.

Canonical names are the BraTS 2021 ones (``t1 t1ce t2 flair``); BraTS 2023 names (``t1n t1c t2w
t2f``) and common aliases map onto them. A user map (``data.modality_map`` in the config) adds or
overrides aliases, e.g. ``{pd: pd}`` together with ``data.modalities: [t1, t2, pd]``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

BRATS_2021 = ("t1", "t1ce", "t2", "flair")
BRATS_2023 = ("t1n", "t1c", "t2w", "t2f")
DEFAULT_MODALITIES = BRATS_2021

ALIASES: dict[str, str] = {
    # T1 (native, pre-contrast)
    "t1": "t1", "t1n": "t1", "t1w": "t1", "t1native": "t1", "t1pre": "t1",
    # T1 post-contrast (gadolinium)
    "t1ce": "t1ce", "t1c": "t1ce", "t1gd": "t1ce", "t1post": "t1ce", "t1wce": "t1ce", "t1contrast": "t1ce",
    # T2
    "t2": "t2", "t2w": "t2",
    # FLAIR (T2-weighted fluid-attenuated inversion recovery)
    "flair": "flair", "fla": "flair", "t2f": "flair", "t2flair": "flair", "t2fla": "flair",
}
# tokens naming a label volume (tumour segmentation), not an image modality
LABEL_ALIASES = ("seg", "label", "labels", "mask", "segmentation", "gt")
NIFTI_SUFFIXES = (".nii.gz", ".nii")


def strip_nifti(name: str) -> str:
    """``"a_t1.nii.gz" -> "a_t1"``; other names are returned unchanged."""
    low = name.lower()
    for suf in NIFTI_SUFFIXES:
        if low.endswith(suf):
            return name[: -len(suf)]
    return name


def is_nifti(path: str | Path) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def alias_table(user_map: Mapping[str, str] | None = None) -> dict[str, str]:
    """Built-in aliases updated by the user's map (keys compared lower case, separators removed)."""
    table = dict(ALIASES)
    for k, v in (user_map or {}).items():
        table[_squash(str(k))] = str(v).lower()
    return table


def _squash(token: str) -> str:
    return re.sub(r"[\s_\-.]+", "", token.lower())


def modality_from_name(
    name: str, modalities: Sequence[str] = DEFAULT_MODALITIES, user_map: Mapping[str, str] | None = None
) -> str | None:
    """The modality named in a file name or column header, ``"seg"`` for a label volume, else None.

    Tokens are split at ``_ - .`` and spaces and read from the end (``BraTS-GLI-00000-000-t2f``
    -> ``t2f`` -> ``flair``); a pair of neighbouring tokens is tried before a single one
    (``t1_ce`` -> ``t1ce``). Only names in ``modalities`` (or ``"seg"``) are returned.
    """
    table = alias_table(user_map)
    tokens = [t for t in re.split(r"[\s_\-.]+", strip_nifti(name).lower()) if t]
    wanted = {m.lower() for m in modalities}
    for i in range(len(tokens) - 1, -1, -1):
        candidates = ([tokens[i - 1] + tokens[i]] if i > 0 else []) + [tokens[i]]
        for cand in candidates:
            if cand in table and table[cand] in wanted:
                return table[cand]
            if cand in wanted:
                return cand
            if cand in LABEL_ALIASES:
                return "seg"
    return None


def known_names(modalities: Sequence[str] = DEFAULT_MODALITIES, user_map: Mapping[str, str] | None = None) -> str:
    """A readable list of the names recognised for ``modalities`` (for error messages)."""
    table = alias_table(user_map)
    parts = []
    for m in modalities:
        names = sorted({m, *(k for k, v in table.items() if v == m)})
        parts.append(f"{m} ({'/'.join(names)})")
    return ", ".join(parts)
