"""glibc malloc settings for training on the CPU: freed tensor memory stays in the process.

On the CPU, torch allocates tensors with the C library's ``malloc``. glibc hands large blocks
(above its mmap threshold, 128 KiB at first and raised as blocks are freed, to 32 MiB at most)
straight back to the system when they are freed, and trims the top of its heap when enough is
free there. A training step frees and allocates the same sizes again and again (activations,
gradients, optimizer temporaries), so every step faults pages back in: 5-9k minor page faults a
step for the ViT-B/16 MAE at batch 8 here, and 88k for the 3D ViT-B at batch 1 once the gradients
are freed right after the optimizer step (:meth:`maecore.tasks.base.BaseTask.optimizer_step`),
which then cost 15 % of its step time.

:func:`keep_freed_memory` fixes the mmap threshold at 32 MiB and raises the trim threshold to
1 GiB, so blocks up to 32 MiB stay in the heap and are reused. A process's resident memory then
stays near its peak (with up to 1 GiB of free heap top) instead of dropping between steps, as
with PyTorch's CUDA caching allocator, and the engine can free the gradients early on the CPU
too. Larger blocks are still mapped and unmapped: kept in the heap, they fragmented it (ViT-B/16
with activation checkpointing at batch 64 peaked 12 % higher with a 1 GiB mmap threshold, 2 %
lower with 32 MiB). Measured on 2 cores (``shared/bench/bench_malloc.py``): the ViT-B/16 MAE at
batch 8 peaks 13 % lower (3.03 against 3.46 GB) at the same step time; the tiny configs'
``pretrain`` ran at 0.84-1.14x the samples/s (median of paired rounds; this machine's run-to-run
noise is 10-25 %) with up to 7x fewer page faults; 5,000 steps of a tiny model grow the resident
memory by 4 MB (``soak.py``). Loader workers, forked after the engine sets it, inherit the
setting: medmae's two workers on the bundled MRI peaked at the same RSS either way (755 against
744 MB).

The settings are process-wide and cannot be undone: ``M_MMAP_THRESHOLD`` also switches off
glibc's dynamic threshold. Set ``MAECORE_CPU_MALLOC=system`` in the environment to leave malloc
as it is (the engine then frees the gradients where Lightning does).
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

log = logging.getLogger(__name__)

ENV = "MAECORE_CPU_MALLOC"
MODES = ("keep", "system")
MMAP_BYTES = 32 << 20  # glibc's own ceiling for its dynamic mmap threshold on 64-bit
TRIM_BYTES = 1 << 30
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # <malloc.h>
_kept = False


def malloc_mode() -> str:
    """``MAECORE_CPU_MALLOC`` (``keep``, the default, or ``system``); anything else raises."""
    mode = os.environ.get(ENV, "keep").strip().lower() or "keep"
    if mode not in MODES:
        raise ValueError(f"{ENV} must be one of {', '.join(MODES)}; got {os.environ[ENV]!r}")
    return mode


def keep_freed_memory(mmap_bytes: int = MMAP_BYTES, trim_bytes: int = TRIM_BYTES) -> bool:
    """Fix glibc's mmap threshold at ``mmap_bytes`` and raise its trim threshold to ``trim_bytes``;
    True when they are set (now or before).

    False, and nothing changed, when ``MAECORE_CPU_MALLOC=system``, when the C library is not
    glibc (musl, macOS, Windows), or when glibc refuses a value.
    """
    global _kept
    if _kept:
        return True
    if malloc_mode() == "system" or not _glibc():
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    # the mmap threshold first: setting the trim threshold alone also freezes the dynamic mmap
    # threshold at its current value, and every larger block is then mapped and unmapped each step
    if libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(mmap_bytes)) != 1:
        log.info("glibc refused M_MMAP_THRESHOLD=%d; malloc left as it is", mmap_bytes)
        return False
    if libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(trim_bytes)) != 1:
        log.info("glibc refused M_TRIM_THRESHOLD=%d", trim_bytes)
        return False
    _kept = True
    log.debug("glibc malloc: mmap threshold %d, trim threshold %d bytes", mmap_bytes, trim_bytes)
    return True


def describe() -> str:
    """One line for ``<domain> info``: what training on the CPU does with malloc here."""
    if malloc_mode() == "system":
        return f"as it is ({ENV}=system)"
    if not _glibc():
        return "as it is (not glibc)"
    return f"keeps freed memory when training on the CPU (glibc {platform.libc_ver()[1]}; {ENV}=system turns it off)"


def _glibc() -> bool:
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def freed_memory_kept() -> bool:
    """Whether :func:`keep_freed_memory` changed malloc in this process."""
    return _kept
