"""Execute a notebook top to bottom (nbclient) and fail on the first cell error.

Usage: python shared/tools/run_notebook.py examples/NAME.ipynb [--timeout 600]
The executed copy is written beside the source as NAME.executed.ipynb (git-ignored).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = parser.parse_args(argv)
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(args.notebook, as_version=4)
    client = NotebookClient(nb, timeout=args.timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(args.notebook.parent)}})
    client.execute()
    out = args.notebook.with_suffix(".executed.ipynb")
    nbformat.write(nb, out)
    print(f"executed {args.notebook} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
