"""Release checks. `nox -s lint`, `nox -s tests` (each package installed alone in its own
environment, ~6 GB each: a release check; CI runs the whole suite in one environment),
`nox -s examples` (runs every example script and notebook), `nox -s bench` (benchmark tables)."""

from __future__ import annotations

from pathlib import Path

import nox

ROOT = Path(__file__).parent
PACKAGES = [p.name for p in sorted((ROOT / "packages").iterdir()) if (p / "pyproject.toml").is_file()]
TORCH = ["torch==2.14.1", "torchvision==0.29.1"]

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "check", "packages", "tests", "shared", "examples", "noxfile.py")


@nox.session
@nox.parametrize("package", PACKAGES)
def tests(session: nox.Session, package: str) -> None:
    """One package installed alone (plus maecore, which every domain depends on)."""
    session.install(*TORCH)
    if package != "maecore":
        session.install("-e", "packages/maecore")
    session.install("-e", f"packages/{package}[test]" if package == "maecore" else f"packages/{package}")
    session.install("pytest>=8", "hypothesis>=6")
    session.run("pytest", f"packages/{package}/tests", *session.posargs)


@nox.session
def examples(session: nox.Session) -> None:
    """Run every example script, then execute every notebook (nbclient)."""
    session.install(*TORCH)
    session.install("-r", "requirements.txt", "nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6.29")
    for script in sorted((ROOT / "examples").glob("*.py")):
        session.run("python", str(script))
    for nb in sorted((ROOT / "examples").glob("*.ipynb")):
        session.run("python", "shared/tools/run_notebook.py", str(nb))


PEER_ROWS = "matmul,ours_vitb,hf_vitmae_fused,ours_vitb_encoder,ours_3d,monai_3d_fused"
BF16_CPU_ROWS = ("matmul,ours_vitb,ours_vitb_ckpt,ours_vitb_compile,hf_vitmae,hf_vitmae_fused,ours_3d,monai_3d_fused,"
                 "ours_vitb@32,ours_vitb_ckpt@32")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmark tables (JSON + markdown under shared/bench/results/)."""
    session.install(*TORCH)
    session.install("-r", "requirements.txt", "transformers>=4.40")  # transformers: the ViTMAE peer row
    results = ROOT / "shared" / "bench" / "results"
    for script in sorted((ROOT / "shared" / "bench").glob("bench_*.py")):
        out = [] if script.stem == "bench_scaling" else ["--json", str(results / f"{script.stem}.json")]
        session.run("python", str(script), *out, *session.posargs)  # bench_scaling writes its own files
    # the peer pairs and the encoder again, 5 rounds in turn: ratios and MFU that the machine's drift does not decide
    session.run("python", "shared/bench/bench_core.py", "--rows", PEER_ROWS, "--rounds", "5",
                "--json", str(results / "bench_core_peers.json"), *session.posargs)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists() and any(flag in cpuinfo.read_text() for flag in ("avx512_bf16", "amx_bf16")):
        # a CPU with native bf16: the model-step table again at bf16 autocast (train.precision=bf16-mixed)
        session.run("python", "shared/bench/bench_core.py", "--device", "cpu", "--precision", "bf16", "--rows",
                    BF16_CPU_ROWS, "--json", str(results / "bench_core_bf16.json"), *session.posargs)
    session.run("python", "shared/bench/report.py")  # results/README.md from every JSON there
