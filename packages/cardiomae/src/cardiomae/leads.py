"""Lead catalogue: canonical names, lead types and unit conversion (a table, no architecture).

Names are normalised by :func:`canonical_lead` (case, spaces, ``ECG``/``lead`` prefixes):

==========================  ==============  =====================================================
names in the wild           canonical       note
==========================  ==============  =====================================================
i ii iii, LEAD_I, ECG II    I II III        limb leads
avr avl avf, aVR, AVR       aVR aVL aVF     augmented limb leads
v1 ... v6, ECG V1           V1 ... V6       precordial leads
PLETH, PPG, pleth, SpO2     PPG             photoplethysmogram (arbitrary units)
MLII, MLI, MLIII            MLII, ...       modified limb leads (Mason-Likar torso electrodes),
                                            kept by name; fed to the model slot II etc. only
                                            through ``data.lead_map`` (default MLII -> II)
MCL1, MCL6                  MCL1, MCL6      modified chest leads, kept by name
                                            (default ``data.lead_map``: MCL1 -> V1)
vx vy vz                    VX VY VZ        Frank leads, kept by name
anything else (V, ABP ...)  unchanged       kept by name; the model ignores it unless it is one
                                            of the model's ``leads``
==========================  ==============  =====================================================

Voltages are converted to mV (``uV``, ``V``, ``nV`` and case variants); other units (``NU`` for
PPG, ``mmHg``) are kept as they are.
"""

from __future__ import annotations

import re

STANDARD_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
PPG = "PPG"
#: the model's lead slots by default (CSFM: 12 leads + PPG, one channel-type id each)
CANONICAL_LEADS = (*STANDARD_LEADS, PPG)
#: modified leads mapped to the nearest standard slot unless ``data.lead_map`` says otherwise
DEFAULT_LEAD_MAP = {"MLII": "II", "MCL1": "V1"}

_ALIASES = {
    **{name.upper(): name for name in STANDARD_LEADS},
    "PLETH": PPG, "PPG": PPG, "SPO2": PPG, "PLETHYSMOGRAM": PPG, "PULSE": PPG,
    "MLI": "MLI", "MLII": "MLII", "MLIII": "MLIII", "MCL1": "MCL1", "MCL6": "MCL6",
    "VX": "VX", "VY": "VY", "VZ": "VZ",
}
_PREFIX = re.compile(r"^(ECG|EKG|LEAD)[\s_\-:]*", re.IGNORECASE)

#: factor that turns a value in the unit into mV
VOLT_UNITS = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "v": 1e3, "nv": 1e-6}


def canonical_lead(name: str) -> str:
    """The canonical name of a lead (see the module table); unknown names come back stripped."""
    raw = str(name).strip()
    key = _PREFIX.sub("", raw).replace(" ", "").replace("_", "").replace("-", "").upper()
    if key in _ALIASES:
        return _ALIASES[key]
    whole = raw.replace(" ", "").replace("_", "").upper()
    return _ALIASES.get(whole, raw)


def lead_type(name: str) -> str:
    """``"ppg"`` for PPG, ``"ecg"`` for the standard, modified and Frank leads, else ``"other"``."""
    if name == PPG:
        return "ppg"
    if name in STANDARD_LEADS or name in ("MLI", "MLII", "MLIII", "MCL1", "MCL6", "VX", "VY", "VZ", "V"):
        return "ecg"
    return "other"


def to_mv_factor(unit: str | None) -> float | None:
    """Multiplier to mV for a voltage unit, None for any other unit. A missing unit means mV (WFDB)."""
    if unit is None or str(unit).strip() == "":
        return 1.0
    return VOLT_UNITS.get(str(unit).strip().lower())


def model_slot(name: str, lead_map: dict[str, str] | None) -> str:
    """The model slot a canonical lead feeds: ``lead_map`` first (e.g. MLII -> II), else itself."""
    mapped = (lead_map or {}).get(name)
    return canonical_lead(mapped) if mapped else name
