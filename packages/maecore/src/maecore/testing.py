"""Helpers for the suite's tests (no test framework needed to import this)."""

from __future__ import annotations

from collections.abc import Sequence


def damage(data: bytes, cut: float, flips: Sequence[tuple], prefix: int | None = None) -> bytes:
    """A damaged copy of a real file for reader fuzz tests: the first ``cut`` fraction of ``data``
    (``cut >= 0.999`` keeps it whole), then each flip ``(where, value)`` sets the byte at fraction
    ``where`` of the result to ``value``; a flip ``(where, value, True)`` aims inside the first
    ``prefix`` bytes (a header) instead."""
    blob = bytearray(data[: int(len(data) * cut)] if cut < 0.999 else data)
    for flip in flips:
        where, value = flip[0], flip[1]
        if blob:
            span = min(len(blob), prefix) if prefix and len(flip) > 2 and flip[2] else len(blob)
            blob[int(where * (span - 1))] = value
    return bytes(blob)
