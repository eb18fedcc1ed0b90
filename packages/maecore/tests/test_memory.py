"""maecore.tasks.memory: glibc keeps freed tensor memory for the next step, unless told not to."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from maecore.tasks import memory

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# a fresh interpreter: a first 16 MiB block (glibc maps one that size on its own, the kept setting
# puts it in the heap: mallinfo2's hblkhd counts mapped bytes); then three rounds of 24 tensors of
# 4 MiB filled and freed, as a training step allocates and frees its activations, and the page
# faults of the last round
REUSE = """
import ctypes, json, resource, sys, torch
from maecore.tasks.memory import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = type("mallinfo2", (ctypes.Structure,), {"_fields_": [(n, ctypes.c_size_t) for n in (
    "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]})
first = torch.ones(4 << 20)
mapped = libc.mallinfo2().hblkhd
del first
for _ in range(2):
    ts = [torch.ones(1 << 20) for _ in range(24)]
    del ts
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
ts = [torch.ones(1 << 20) for _ in range(24)]
print(json.dumps({"kept": kept, "mapped": mapped,
                  "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _probe(call: str, env_mode: str) -> dict:
    env = dict(os.environ, MAECORE_CPU_MALLOC=env_mode)
    out = subprocess.run([sys.executable, "-c", REUSE, call], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_kept_memory_is_reused_without_page_faults():
    # the kernel may reclaim idle heap pages (DAMON runs here) and fault some back: best of three
    kept = min((_probe("keep", "keep") for _ in range(3)), key=lambda r: r["faults"])
    assert kept["kept"] is True
    assert kept["mapped"] < 16 << 20  # the 16 MiB block came from the heap
    assert kept["faults"] < 2000  # 96 MiB, 24,576 pages of 4 KiB, reused and not faulted in again
    plain = _probe("none", "keep")
    assert plain["mapped"] >= 16 << 20  # glibc's default maps it, and unmaps it when it is freed


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_system_mode_leaves_malloc_alone():
    result = _probe("keep", "system")
    assert result["kept"] is False and result["mapped"] >= 16 << 20


def test_a_bad_mode_is_refused(monkeypatch):
    monkeypatch.setenv(memory.ENV, "jemalloc")
    with pytest.raises(ValueError, match=r"MAECORE_CPU_MALLOC must be one of keep, system; got 'jemalloc'"):
        memory.malloc_mode()


def test_mode_defaults_to_keep_and_ignores_case(monkeypatch):
    monkeypatch.delenv(memory.ENV, raising=False)
    assert memory.malloc_mode() == "keep"
    monkeypatch.setenv(memory.ENV, " System ")
    assert memory.malloc_mode() == "system"


def test_nothing_changes_off_glibc(monkeypatch):
    monkeypatch.setattr(memory, "_kept", False)
    monkeypatch.setattr(platform, "libc_ver", lambda: ("musl", "1.2"))
    assert memory.keep_freed_memory() is False and memory.freed_memory_kept() is False
