"""cardiomae: masked autoencoders for ECG and PPG (after CSFM).

Reads WFDB records (single- and multi-segment, ``.dat``/``.mat``) and NumPy/CSV arrays, puts each lead
in a canonical slot (12 leads + PPG), resamples to 250 Hz, cleans with neurokit2 and trains a
per-lead patch MAE that takes any subset of leads and synthesises the missing ones.
"""

__version__ = "0.1.0"

from cardiomae.io import Recording, read_recording, write_wfdb  # noqa: E402
from cardiomae.leads import CANONICAL_LEADS, canonical_lead  # noqa: E402
from cardiomae.preprocess import LeadNorm, PrepConfig, prepare  # noqa: E402

__all__ = ["CANONICAL_LEADS", "LeadNorm", "PrepConfig", "Recording", "__version__", "canonical_lead", "prepare",
           "read_recording", "write_wfdb"]
