"""Error types shared by every package of the suite."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


class MAEError(Exception):
    """Base class for the suite's own errors."""


class DataError(MAEError, ValueError):
    """A file or sample is not what was expected. The message names the file.

    ``DataError(path, expected, found)`` formats as
    ``"<path>: expected <expected>, found <found>"`` so every reader reports the same way.
    """

    def __init__(self, path: str | os.PathLike[str] | None, expected: str, found: str) -> None:
        self.path = None if path is None else os.fspath(path)
        self.expected = expected
        self.found = found
        where = f"{self.path}: " if self.path else ""
        super().__init__(f"{where}expected {expected}, found {found}")

    def __reduce__(self):  # keep picklable across DataLoader workers
        return (type(self), (self.path, self.expected, self.found))


class ConfigError(MAEError, KeyError):
    """A configuration key or value is wrong; the message lists what is allowed."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


class UnsafeCheckpointError(MAEError):
    """A checkpoint would need pickle to load and the user did not allow unsafe loading."""


def missing_extra(module: str, package: str, extra: str) -> ImportError:
    """The error raised when an optional dependency is absent."""
    return ImportError(
        f"{module} is needed for this and is not installed; install it with "
        f"`pip install '{package}[{extra}]'`"
    )


def read_all(items: Iterable[T], read: Callable[[T], R], skip_bad: bool = False, noun: str = "file",
             where: str | os.PathLike[str] | None = None, found_bad: Iterable[DataError] = ()) -> list[R]:
    """``read(item)`` for every item, the way every domain loads a dataset: each DataError is kept;
    unless ``skip_bad`` one DataError then lists them all (so one bad file is reported, never
    silently dropped), else each is printed as ``skipped bad <noun>: ...`` and left out.
    ``found_bad``: DataErrors met before reading (e.g. while discovering cases). An empty result
    is an error either way."""
    good: list[R] = []
    bad = list(found_bad)
    for item in items:
        try:
            good.append(read(item))
        except DataError as err:
            bad.append(err)
    if bad and not skip_bad:
        raise DataError(where, f"only readable {noun}s (--skip-bad skips the bad ones and lists them)",
                        f"{len(bad)} bad {noun}(s): " + "; ".join(str(e) for e in bad))
    for err in bad:
        print(f"skipped bad {noun}: {err}")
    if not good:
        raise DataError(where, f"at least one good {noun}", f"none left after skipping {len(bad)} bad {noun}(s)")
    return good
