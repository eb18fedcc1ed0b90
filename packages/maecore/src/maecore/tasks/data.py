"""Step-indexed, deterministic data loading for exact resume.

The k-th batch of a run is a function of ``(seed, k)`` only, so a run killed at step s and resumed
sees exactly the batches an uninterrupted run would have seen from step s on.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from maecore.tasks.config import TrainConfig


class StepSampler(Sampler[list[int]]):
    """Batch sampler over ``n_items`` for ``n_batches`` batches, starting at ``start_batch``.

    Global batch ``k`` takes ``batch_size * world_size`` indices from a permutation seeded by
    ``(seed, pass)``; rank ``r`` gets its own slice, so ranks never share a sample within a batch.
    Passes wrap around the data (a pass is one permutation of the dataset).
    """

    def __init__(
        self,
        n_items: int,
        batch_size: int,
        n_batches: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        start_batch: int = 0,
    ) -> None:
        if n_items < 1:
            raise ValueError(f"the dataset is empty (n_items={n_items})")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, {world_size})")
        self.n_items, self.batch_size, self.n_batches = n_items, batch_size, n_batches
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.start_batch = start_batch

    def __len__(self) -> int:
        return self.n_batches

    def batch(self, k: int) -> list[int]:
        """Indices of this rank's part of global batch ``k``."""
        g = self.batch_size * self.world_size
        first = k * g + self.rank * self.batch_size
        out = []
        for pos in range(first, first + self.batch_size):
            pass_idx, offset = divmod(pos, self.n_items)
            out.append(int(self._perm(pass_idx)[offset]))
        return out

    def _perm(self, pass_idx: int) -> torch.Tensor:
        cache = getattr(self, "_cache", None)
        if cache is None or cache[0] != pass_idx:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + pass_idx)
            self._cache = (pass_idx, torch.randperm(self.n_items, generator=gen))
        return self._cache[1]

    def __iter__(self) -> Iterator[list[int]]:
        for k in range(self.start_batch, self.n_batches):
            yield self.batch(k)


def collate_dict(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensor values of sample dicts; keep everything else as a list per key."""
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    keys = samples[0].keys()
    out: dict[str, Any] = {}
    for k in keys:
        vals = [s[k] for s in samples]
        if isinstance(vals[0], torch.Tensor) and all(v.shape == vals[0].shape for v in vals):
            out[k] = torch.stack(vals)
        else:
            out[k] = vals
    return out


def make_loader(
    dataset: Dataset,
    cfg: TrainConfig,
    n_batches: int,
    rank: int = 0,
    world_size: int = 1,
    shuffle_seed: int | None = None,
) -> DataLoader:
    sampler = StepSampler(
        len(dataset),  # type: ignore[arg-type]
        cfg.batch_size,
        n_batches,
        seed=cfg.seed if shuffle_seed is None else shuffle_seed,
        rank=rank,
        world_size=world_size,
    )
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate_dict,
        num_workers=cfg.num_workers,
        persistent_workers=cfg.num_workers > 0,
    )
