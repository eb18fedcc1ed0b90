"""CLI start-up stays light: ``<domain> --help`` imports none of the heavy libraries.

Lightning, timm, MONAI, torch_geometric, scikit-learn and scipy load inside the verbs that use
them; together they made ``--help`` take 5-6 s here instead of about 1.5 s. Times are measured by
``shared/bench/bench_startup.py``; this only checks what gets imported.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "shared" / "bench"))
import bench_startup  # noqa: E402


@pytest.mark.parametrize("domain", bench_startup.CLIS)
def test_help_imports_no_heavy_library(domain: str):
    module = bench_startup.cli_module(domain)
    if module is None:
        pytest.skip(f"{domain} is not installed")
    out = bench_startup.probe(module, ["--help"])
    assert out["rc"] == 0
    assert out["heavy"] == [], f"{domain} --help imported {out['heavy']}"


def test_cli_module_follows_the_console_script():
    assert bench_startup.cli_module("maecore") == "maecore.cli.demo"  # maecore is always installed here
    assert bench_startup.cli_module("no_such_script") is None


def test_probe_reports_a_failing_command():
    with pytest.raises(RuntimeError, match=r"no_such_module --help printed no result \(exit 1\)"):
        bench_startup.probe("no_such_module", ["--help"])


def test_tasks_exports_load_on_first_use():
    import maecore.tasks as tasks

    assert tasks.TrainConfig.__module__ == "maecore.tasks.config"
    assert "run_pretrain" in dir(tasks)
    assert sorted(tasks.__all__) == sorted(tasks._EXPORTS)
    with pytest.raises(AttributeError, match="module 'maecore.tasks' has no attribute 'NoSuchThing'"):
        tasks.NoSuchThing  # noqa: B018
