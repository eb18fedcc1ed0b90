"""Rebuild ``src/cardiomae/sample/`` from the suite's reference copies in ``shared/data/cardiac``.

Byte-for-byte copies where a file is small enough; crops written with ``wfdb.wrsamp`` from the
*digital* samples (format, gain, baseline, units and names kept, so values are exact) otherwise.

usage: python packages/cardiomae/tools/make_sample.py [--src /path/to/shared/data/cardiac]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import wfdb

HERE = Path(__file__).resolve().parents[1]
OUT = HERE / "src" / "cardiomae" / "sample"
COPY = {  # record -> files copied unchanged
    "s0010_re": ["s0010_re.hea", "s0010_re.dat", "s0010_re.xyz"],
    "a103l": ["a103l.hea", "a103l.mat"],
    "v102s": ["v102s.hea", "v102s_1.hea", "v102s_2.hea", "v102s_3.hea", "v102s.dat"],
}
CROP_100 = (19 * 60 * 360, 27 * 60 * 360)  # minutes 19-27 of MIT-BIH 100: 15 A beats and its one V beat
CROP_037 = (0, 3 * 60 * 125)  # first 3 minutes of 03700181


def crop(src: Path, name: str, start: int, stop: int, note: str) -> None:
    rec = wfdb.rdrecord(str(src / name), sampfrom=start, sampto=stop, physical=False, smooth_frames=False)
    wfdb.wrsamp(
        name, fs=rec.fs, units=rec.units, sig_name=rec.sig_name, e_d_signal=rec.e_d_signal,
        samps_per_frame=rec.samps_per_frame, fmt=rec.fmt, adc_gain=rec.adc_gain, baseline=rec.baseline,
        comments=[*rec.comments, note], write_dir=str(OUT),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--src", type=Path, default=HERE.parents[1] / "shared" / "data" / "cardiac")
    src = parser.parse_args().src
    if not src.is_dir():
        src = HERE.parents[2] / "shared" / "data" / "cardiac"
    OUT.mkdir(parents=True, exist_ok=True)
    for files in COPY.values():
        for f in files:
            shutil.copyfile(src / f, OUT / f)
    a, b = CROP_100
    crop(src, "100", a, b, f"cardiomae sample: samples {a}-{b} (minutes 19-27) of MIT-BIH 100")
    ann = wfdb.rdann(str(src / "100"), "atr", sampfrom=a, sampto=b - 1)
    keep = (ann.sample >= a) & (ann.sample < b)
    wfdb.wrann("100", "atr", ann.sample[keep] - a, symbol=list(np.asarray(ann.symbol)[keep]),
               aux_note=list(np.asarray(ann.aux_note)[keep]), fs=360, write_dir=str(OUT))
    a, b = CROP_037
    crop(src, "03700181", a, b, f"cardiomae sample: samples {a}-{b} (first 3 minutes) of 03700181")
    total = sum(f.stat().st_size for f in OUT.iterdir() if f.is_file())
    print(f"wrote {OUT} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
