"""True- or false-colour composites of input, masked input and reconstruction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from geomae.bands import Preset
from maecore.figures import plot_reconstruction_2d


def composite_bands(preset: Preset, false_colour: bool = False) -> list[int]:
    """Model-channel indices shown as red, green, blue: the preset's true-colour bands, or for
    ``false_colour`` near-infrared, red, green (vegetation bright red) when the preset has a NIR band."""
    order = preset.model_order()
    if false_colour:
        by_wl = {b.name: b.wavelength_nm for b in preset.bands if b.wavelength_nm}
        nir = [n for n, wl in by_wl.items() if 760 <= wl <= 900]
        red = [n for n, wl in by_wl.items() if 620 <= wl <= 700]
        green = [n for n, wl in by_wl.items() if 520 <= wl <= 600]
        if nir and red and green:
            return [order.index(nir[0]), order.index(red[0]), order.index(green[0])]
    return preset.display_bands()


def plot_chips(result: dict[str, Any], preset: Preset, path: str | Path, false_colour: bool = False,
               title: str | None = None) -> Path:
    """Input / masked / reconstruction rows for up to 4 chips (``maecore.figures.reconstruct_batch``)."""
    bands = composite_bands(preset, false_colour)
    names = [preset.model_order()[i] for i in bands]
    kind = "false colour" if false_colour and bands != preset.display_bands() else "composite"
    label = f"{preset.name}: {kind} ({', '.join(dict.fromkeys(names))})"
    return plot_reconstruction_2d(result, path, rgb=bands, title=f"{title} - {label}" if title else label)
