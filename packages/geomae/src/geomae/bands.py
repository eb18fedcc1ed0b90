"""Band presets: band names, centre wavelengths (nm), ground sampling distance (m), band groups.

A preset says what the bands of a raster are, in file order, and how they are grouped into
tokens (each group gets its own patch projection and group embedding; a missing group is padding).
Built-in presets follow the sensors' published band tables; a user preset is a YAML file::

    name: my_drone
    bands:                       # in file order
      - {name: red, wavelength_nm: 660, gsd_m: 0.05}
      - {name: green, wavelength_nm: 560, gsd_m: 0.05}
      - {name: blue, wavelength_nm: 480, gsd_m: 0.05}
      - {name: rededge, wavelength_nm: 717, gsd_m: 0.05}
    groups: {visible: [red, green, blue], rededge: [rededge]}
    rgb: [red, green, blue]      # bands of the true-colour figure (optional)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maecore.errors import DataError


@dataclass(frozen=True)
class Band:
    name: str
    wavelength_nm: float | None
    gsd_m: float | None


@dataclass(frozen=True)
class Preset:
    """Bands in file order, their token groups (group name -> band names) and display bands."""

    name: str
    bands: tuple[Band, ...]
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    rgb: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        names = self.band_names
        if not names or len(set(names)) != len(names):
            raise ValueError(f"preset {self.name!r}: band names must be non-empty and distinct, got {names}")
        groups = self.groups or {"all": tuple(names)}
        object.__setattr__(self, "groups", {g: tuple(b) for g, b in groups.items()})
        grouped = [b for bs in self.groups.values() for b in bs]
        if sorted(grouped) != sorted(names):
            raise ValueError(
                f"preset {self.name!r}: every band must be in exactly one group; bands {names}, groups {self.groups}"
            )
        for b in self.rgb:
            if b not in names:
                raise ValueError(f"preset {self.name!r}: rgb band {b!r} is not one of {names}")

    @property
    def band_names(self) -> list[str]:
        return [b.name for b in self.bands]

    @property
    def group_names(self) -> list[str]:
        return list(self.groups)

    @property
    def group_channels(self) -> list[int]:
        return [len(b) for b in self.groups.values()]

    def model_order(self) -> list[str]:
        """Band names in model channel order: group by group (what :class:`PatchTokenizer` expects)."""
        return [b for bs in self.groups.values() for b in bs]

    def display_bands(self) -> list[int]:
        """Indices (model order) of the figure's red, green and blue channels."""
        order = self.model_order()
        chosen = list(self.rgb) or order[:3]
        return [order.index(b) for b in chosen] if len(chosen) >= 3 else [0, 0, 0]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description,
                "bands": [{"name": b.name, "wavelength_nm": b.wavelength_nm, "gsd_m": b.gsd_m} for b in self.bands],
                "groups": {g: list(b) for g, b in self.groups.items()}, "rgb": list(self.rgb)}

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str | os.PathLike[str] | None = None) -> Preset:
        where = source or "preset"
        if not isinstance(d, dict) or "bands" not in d or not isinstance(d["bands"], list):
            found = f"keys {sorted(d)}" if isinstance(d, dict) else type(d).__name__
            raise DataError(where, "a preset mapping with a 'bands' list (name, wavelength_nm, gsd_m)", found)
        unknown = sorted(set(d) - {"name", "description", "bands", "groups", "rgb"})
        if unknown:
            raise DataError(where, "preset keys name, description, bands, groups, rgb", f"unknown key(s) {unknown}")
        bands = []
        for i, b in enumerate(d["bands"]):
            if isinstance(b, str):
                b = {"name": b}
            if not isinstance(b, dict) or "name" not in b:
                raise DataError(where, f"band {i} as a mapping with a 'name'", repr(b))
            try:
                wl = None if b.get("wavelength_nm") is None else float(b["wavelength_nm"])
                gsd = None if b.get("gsd_m") is None else float(b["gsd_m"])
            except (TypeError, ValueError) as err:
                raise DataError(where, f"numeric wavelength_nm and gsd_m for band {b['name']!r}", str(err)) from err
            bands.append(Band(str(b["name"]), wl, gsd))
        groups = d.get("groups") or {}
        if not isinstance(groups, dict):
            raise DataError(where, "groups as a mapping group -> list of band names", type(groups).__name__)
        try:
            return cls(str(d.get("name", Path(str(where)).stem)), tuple(bands),
                       {str(g): tuple(map(str, bs)) for g, bs in groups.items()}, tuple(d.get("rgb") or ()),
                       str(d.get("description", "")))
        except ValueError as err:
            raise DataError(where, "a consistent preset", str(err)) from err


def _p(name: str, rows: list[tuple[str, float | None, float | None]], groups: dict[str, list[str]],
       rgb: list[str], description: str) -> Preset:
    return Preset(name, tuple(Band(*r) for r in rows), {g: tuple(b) for g, b in groups.items()}, tuple(rgb),
                  description)


_S2 = [  # Sentinel-2A MSI centre wavelengths (ESA spectral response functions) and GSD
    ("B01", 442.7, 60.0), ("B02", 492.4, 10.0), ("B03", 559.8, 10.0), ("B04", 664.6, 10.0),
    ("B05", 704.1, 20.0), ("B06", 740.5, 20.0), ("B07", 782.8, 20.0), ("B08", 832.8, 10.0),
    ("B8A", 864.7, 20.0), ("B09", 945.1, 60.0), ("B10", 1373.5, 60.0), ("B11", 1613.7, 20.0),
    ("B12", 2202.4, 20.0),
]
_S2_GROUPS = {"rgbn": ["B02", "B03", "B04", "B08"], "rededge": ["B05", "B06", "B07", "B8A"],
              "swir": ["B11", "B12"], "atmosphere": ["B01", "B09", "B10"]}

# MODIS L1B bands in SatVision-TOA's order (1, 2, 3, 26, 6, 20, 7, 27, 28, 29, 31, 32, 33, 34),
# centre wavelengths from the MODIS specification, resampled to 1 km
_MODIS = [
    ("b01", 645.0), ("b02", 858.5), ("b03", 469.0), ("b26", 1375.0), ("b06", 1640.0), ("b20", 3750.0),
    ("b07", 2130.0), ("b27", 6715.0), ("b28", 7325.0), ("b29", 8550.0), ("b31", 11030.0), ("b32", 12020.0),
    ("b33", 13335.0), ("b34", 13635.0),
]

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        _p("naip", [("red", 635.0, 0.6), ("green", 555.0, 0.6), ("blue", 465.0, 0.6), ("nir", 845.0, 0.6)],
           {"rgb": ["red", "green", "blue"], "nir": ["nir"]}, ["red", "green", "blue"],
           "USDA NAIP aerial imagery, R G B NIR, 0.6 m (FireRisk chips are NAIP)"),
        _p("sentinel2_l1c", _S2, _S2_GROUPS, ["B04", "B03", "B02"], "Sentinel-2 MSI Level-1C TOA, 13 bands"),
        _p("sentinel2_l2a", [r for r in _S2 if r[0] != "B10"],
           {**_S2_GROUPS, "atmosphere": ["B01", "B09"]}, ["B04", "B03", "B02"],
           "Sentinel-2 MSI Level-2A surface reflectance, 12 bands (no cirrus B10)"),
        _p("landsat89", [("B1", 443.0, 30.0), ("B2", 482.0, 30.0), ("B3", 561.5, 30.0), ("B4", 654.5, 30.0),
                         ("B5", 865.0, 30.0), ("B6", 1608.5, 30.0), ("B7", 2200.5, 30.0)],
           {"visible": ["B1", "B2", "B3", "B4"], "nir": ["B5"], "swir": ["B6", "B7"]}, ["B4", "B3", "B2"],
           "Landsat 8/9 OLI reflective bands 1-7, 30 m"),
        _p("modis_satvision", [(n, w, 1000.0) for n, w in _MODIS],
           {"reflective": ["b01", "b02", "b03", "b26", "b06", "b07"],
            "emissive": ["b20", "b27", "b28", "b29", "b31", "b32", "b33", "b34"]}, ["b01", "b02", "b03"],
           "MODIS L1B TOA, the 14 bands of SatVision-TOA (1 km chips)"),
        _p("landsat7_rgb", [("red", 660.0, 300.0), ("green", 560.0, 300.0), ("blue", 485.0, 300.0)],
           {"rgb": ["red", "green", "blue"]}, ["red", "green", "blue"],
           "Landsat 7 ETM+ bands 3, 2, 1 (the bundled sample, resampled to 300 m)"),
        _p("hillshade", [("shade", None, None)], {"shade": ["shade"]}, [], "one grey band (e.g. SRTM hillshade)"),
    ]
}


def load_preset_file(path: str | os.PathLike[str]) -> Preset:
    """A user preset from YAML (``yaml.safe_load``); errors name the file."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise DataError(p, "a preset YAML file", "nothing at that path")
    try:
        data = yaml.safe_load(p.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise DataError(p, "valid YAML", f"a parse error ({err})") from err
    return Preset.from_dict(data, p)


def generic_preset(n_bands: int) -> Preset:
    """``b1 .. bN`` in one group, for rasters with no preset."""
    names = [f"b{i + 1}" for i in range(n_bands)]
    return Preset(f"generic{n_bands}", tuple(Band(n, None, None) for n in names), {"all": tuple(names)},
                  tuple(names[:3]) if n_bands >= 3 else ())


def get_preset(name_or_path: str | dict[str, Any] | Preset | None, n_bands: int | None = None) -> Preset:
    """A built-in preset by name, a YAML file, a preset dict (as stored in an export), or the
    generic one for ``n_bands`` when ``None``."""
    if isinstance(name_or_path, Preset):
        return name_or_path
    if isinstance(name_or_path, dict):
        return Preset.from_dict(name_or_path)
    if name_or_path is None:
        if n_bands is None:
            raise ValueError("get_preset(None) needs n_bands")
        return generic_preset(n_bands)
    if name_or_path in PRESETS:
        return PRESETS[name_or_path]
    if str(name_or_path).endswith((".yaml", ".yml")) or Path(name_or_path).exists():
        return load_preset_file(name_or_path)
    raise DataError(None, f"a preset name ({', '.join(PRESETS)}) or a preset YAML file", repr(name_or_path))
