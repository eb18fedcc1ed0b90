"""Each domain package installs alone: it depends on maecore by name and on no sibling domain."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = sorted(p.name for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").is_file())
DOMAINS = [p for p in PACKAGES if p != "maecore"]


def _deps(package: str) -> list[str]:
    meta = tomllib.loads((ROOT / "packages" / package / "pyproject.toml").read_text())["project"]
    return [d.split(";")[0].strip() for d in meta.get("dependencies", [])]


def test_one_version_for_every_package():
    versions = {
        p: tomllib.loads((ROOT / "packages" / p / "pyproject.toml").read_text())["project"]["version"]
        for p in PACKAGES
    }
    assert len(set(versions.values())) == 1, versions


@pytest.mark.parametrize("package", DOMAINS)
def test_domain_depends_on_core_by_name_and_no_sibling(package: str):
    deps = _deps(package)
    names = {d.split("=")[0].split(">")[0].split("<")[0].split("[")[0].strip() for d in deps}
    assert "maecore" in names
    assert not names & (set(DOMAINS) - {package}), f"{package} depends on a sibling: {deps}"
    version = tomllib.loads((ROOT / "packages" / "maecore" / "pyproject.toml").read_text())["project"]["version"]
    assert f"maecore=={version}" in deps


@pytest.mark.parametrize("package", PACKAGES)
def test_import_pulls_in_no_sibling_domain(package: str):
    code = (
        f"import sys, {package}, {package}.cli\n"
        f"others = {sorted(set(DOMAINS) - {package})!r}\n"
        "loaded = [m for m in others if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
