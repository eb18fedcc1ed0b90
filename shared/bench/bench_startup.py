"""CLI start-up benchmark: how long ``<domain> --help``, ``info`` and ``check`` take, and which heavy
libraries each one imports.

Each row runs the command in a fresh interpreter (``python -c``, the console script's ``main``
called with the verb's arguments), --repeats times, and reports:
  wall_s     median wall time of the whole process (interpreter start, imports, the command);
  import_s   median time from before ``import <domain>.cli`` to the end of ``main()``;
  heavy      the libraries from HEAVY the process had imported by the end (top-level names).
``check`` with no path checks the package's bundled sample, so it reads real files.

``--src DIR`` runs another checkout's code (DIR/packages/*/src first on PYTHONPATH), so an older
revision can be measured on the same machine: ``git worktree add /tmp/old REV`` then
``--src /tmp/old``.

usage: python shared/bench/bench_startup.py [--repeats 3] [--verbs help,info,check]
       [--domains maecore,medmae,...] [--src DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

#: libraries that cost a quarter second or more to import here (most pull in others)
HEAVY = ("lightning", "torchmetrics", "timm", "torchvision", "transformers", "sklearn", "scipy", "monai",
         "torch_geometric", "matplotlib", "pandas", "neurokit2", "wfdb", "torchgeo", "rasterio", "nibabel",
         "trimesh")
#: the suite's console scripts (one per package)
CLIS = ("maecore", "medmae", "geomae", "cardiomae", "mae3d", "skelmae")
VERBS = {"help": ["--help"], "info": ["info"], "check": ["check"]}

_PROBE = """
import contextlib, io, json, sys, time
t0 = time.perf_counter()
module, argv = sys.argv[1], sys.argv[2:]
sys.argv = [module, *argv]
from importlib import import_module
out = io.StringIO()
rc = 0
with contextlib.redirect_stdout(out):
    try:
        rc = import_module(module).main() or 0
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 1
seconds = time.perf_counter() - t0
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(%r))
print(json.dumps({"rc": rc, "import_s": seconds, "heavy": heavy}))
"""


def cli_module(script: str) -> str | None:
    """The module whose ``main`` the installed console script ``script`` calls (None: not installed)."""
    found = [ep for ep in entry_points(group="console_scripts", name=script) if ep.attr == "main"]
    return found[0].module if found else None


def probe(module: str, args: list[str], src: Path | None = None) -> dict[str, Any]:
    """Run ``module.main()`` with ``args`` in a fresh interpreter: ``{rc, wall_s, import_s, heavy}``."""
    env = dict(os.environ)
    if src is not None:
        paths = [str(p) for p in sorted((src / "packages").glob("*/src"))]
        env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")])
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", _PROBE % (HEAVY,), module, *args],
                         capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t
    return {**last_json(res, f"{module} {' '.join(args)}"), "wall_s": wall}


def last_json(res: subprocess.CompletedProcess, what: str) -> dict[str, Any]:
    """The JSON object on the last line a child process printed; RuntimeError with its stderr if none."""
    last = res.stdout.strip().splitlines()[-1:] or [""]
    try:
        return json.loads(last[0])
    except json.JSONDecodeError as err:
        raise RuntimeError(f"{what} printed no result (exit {res.returncode}):\n{res.stderr[-2000:]}") from err


def row(domain: str, verb: str, repeats: int, src: Path | None) -> dict[str, Any]:
    runs = [probe(str(cli_module(domain)), VERBS[verb], src) for _ in range(repeats)]
    return {"domain": domain, "verb": verb, "rc": runs[-1]["rc"],
            "wall_s": round(statistics.median(r["wall_s"] for r in runs), 2),
            "import_s": round(statistics.median(r["import_s"] for r in runs), 2),
            "heavy": ", ".join(runs[-1]["heavy"]) or "-"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--verbs", default=",".join(VERBS), help=f"comma separated, of {', '.join(VERBS)}")
    ap.add_argument("--domains", default=",".join(CLIS), help="comma separated (installed ones only)")
    ap.add_argument("--src", type=Path, default=None, help="a checkout whose packages/*/src to run instead")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    verbs, domains = a.verbs.split(","), a.domains.split(",")
    bad = sorted(set(verbs) - set(VERBS)) + sorted(set(domains) - set(CLIS))
    if bad:
        ap.error(f"unknown verb(s)/domain(s) {bad}; verbs: {', '.join(VERBS)}; domains: {', '.join(CLIS)}")
    domains = [d for d in domains if cli_module(d) is not None]
    rows = [row(d, v, a.repeats, a.src) for d in domains for v in verbs]
    cols = ("domain", "verb", "rc", "wall_s", "import_s", "heavy")
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(str(r[c]) for c in cols))
    if a.json:
        machine = f"{platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}"
        a.json.write_text(json.dumps({"machine": machine, "src": str(a.src or "this checkout"),
                                      "repeats": a.repeats, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
