"""Write the bundled sample: the 14 CMU BVH files of ``shared/data/skeleton/cmu_mb2010`` cut to
30 fps and at most 240 frames by text-editing their MOTION section (HIERARCHY kept byte for byte;
frame 0, the added T-pose, dropped; every 4th frame line kept verbatim from frame 1), plus
``labels.csv`` and ``PROVENANCE.md``.

run: python packages/skelmae/scripts/make_sample.py [--src ../shared/data/skeleton]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
from pathlib import Path

STEP, MAX_FRAMES = 4, 240
ACK = (
    "The data used in this project was obtained from mocap.cs.cmu.edu. The database was created with "
    "funding from NSF EIA-0196217."
)


def main() -> None:
    here = Path(__file__).resolve().parents[1] / "src" / "skelmae" / "sample"
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[3].parent / "shared/data/skeleton")
    a = ap.parse_args()
    with open(a.src / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    lines_md = [
        "# Bundled sample: provenance",
        "",
        ACK,
        "",
        "CMU Graphics Lab Motion Capture Database (mocap.cs.cmu.edu), MotionBuilder-friendly BVH "
        "conversion (2010), copied from chrystianosaraujo/motion-viewer commit 6d7ca60 via "
        "`shared/data/skeleton/cmu_mb2010`. Terms: free for research and for inclusion in products, "
        "not for resale as data. 31 joints, Y-up, CMU units (x 0.0564 = metres).",
        "",
        "| file | label | provenance |",
        "|---|---|---|",
    ]
    out_rows = []
    for row in rows:
        src = a.src / row["file"]
        text = src.read_text()
        head, motion = text.split("MOTION", 1)
        body = motion.strip().splitlines()
        frames = [ln for ln in body[2:] if ln.strip()]
        kept = frames[1::STEP][:MAX_FRAMES]
        dst = here / row["file"]
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(
            head + "MOTION\nFrames: " + str(len(kept)) + "\nFrame Time: 0.0333333\n" + "\n".join(kept) + "\n"
        )
        sha = hashlib.sha256(src.read_bytes()).hexdigest()[:16]
        lines_md.append(
            f'| `{row["file"]}` | {row["label"]} | CMU trial {row["trial"]} ("{row["cmu_description"]}"): '
            f"frames 1, 5, 9, ... of {row['frames']} at 120 fps (T-pose frame 0 dropped), first "
            f"{len(kept)} kept = 30 fps, {len(kept) / 30:.1f} s; frame lines verbatim; source sha256 {sha}... |"
        )
        out_rows.append((row["file"], row["label"], row["trial"]))
    with open(here / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "label", "trial"])
        w.writerows(out_rows)
    lines_md.append(
        "| `labels.csv` | - | `file,label,trial` from `shared/data/skeleton/labels.csv` (CMU's descriptions) |"
    )
    (here / "PROVENANCE.md").write_text("\n".join(lines_md) + "\n")


if __name__ == "__main__":
    main()
