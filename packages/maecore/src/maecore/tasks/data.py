"""Step-indexed, deterministic data loading for exact resume.

Batch ``k`` of a run (counted in micro-batches: optimizer step ``s`` with ``accumulate = a``
consumes batches ``s*a .. s*a + a-1``) is a function of ``(seed, k)`` only: its indices come from
a permutation seeded by ``(seed, pass)``, and every item is loaded with the CPU random generators
(torch, ``random``, numpy) seeded from ``(seed, its position in the stream)``, so random
augmentations are reproducible too, whatever ``num_workers`` is.

How a resumed run finds its place (checked against Lightning 2.6): Lightning saves the
``state_dict()`` of a training dataloader that has ``state_dict``/``load_state_dict`` in the
checkpoint (``loops.fit_loop.state_dict.combined_loader``) and restores it in
``_FitLoop.setup_data`` *before* it calls ``iter()`` on the loader. :class:`StepLoader` uses that:
its state is the index of the next batch. Setting the start later, in ``on_train_start``, is too
late for a plain ``DataLoader`` with workers: ``setup_data`` already called ``iter()``, which makes
the worker iterator pull its first indices. :class:`StepLoader` starts its iterator lazily (at the
first ``next``), so :meth:`maecore.tasks.base.BaseTask.on_train_start` can still correct the
position for a checkpoint written without loader state.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from maecore.tasks.config import TrainConfig

ITEM_STREAM = 1  # salts of mix_seed, so item seeds never equal step or permutation seeds
PERM_STREAM = 2


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from a tuple of integers (``blake2b``): nearby tuples give unrelated seeds."""
    data = ",".join(str(int(p)) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") >> 1


def seed_cpu_rngs(seed: int) -> None:
    """Seed torch's CPU generator, ``random`` and numpy's global generator."""
    torch.default_generator.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


class StepSampler(Sampler[list[Any]]):
    """Batch sampler whose ``k``-th batch depends on ``(seed, k)`` only.

    Global batch ``k`` is positions ``[k*G, (k+1)*G)``, ``G = batch_size * world_size``, of an endless
    stream made of permutations of ``range(n_items)``, pass ``p`` permuted with seed
    ``(seed, p)``. Rank ``r`` takes its own slice ``[k*G + r*batch_size, k*G + (r+1)*batch_size)``, so
    ranks never share a position (nor an item, while ``G <= n_items``).

    Iterates batches ``start_step .. n_batches - 1`` (endless when ``n_batches`` is None);
    ``start_step`` counts micro-batches (``global_step * accumulate`` on resume). ``len()`` is
    ``n_batches``, counted from 0, as Lightning's loop counts. With ``with_seeds`` the batches are
    lists of ``(index, item_seed)`` for :class:`SeededItems`.
    """

    def __init__(
        self,
        n_items: int,
        batch_size: int,
        seed: int = 0,
        start_step: int = 0,
        n_batches: int | None = None,
        rank: int = 0,
        world_size: int = 1,
        with_seeds: bool = False,
    ) -> None:
        if n_items < 1:
            raise ValueError(f"n_items must be >= 1 (the dataset is empty), got {n_items}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if start_step < 0 or (n_batches is not None and n_batches < 0):
            raise ValueError(f"start_step and n_batches must be >= 0, got {start_step} and {n_batches}")
        self.n_items, self.batch_size, self.n_batches = n_items, batch_size, n_batches
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.start_step, self.with_seeds = start_step, with_seeds
        self._cache: tuple[int, list[int]] | None = None

    @property
    def start_batch(self) -> int:
        """Alias of ``start_step``."""
        return self.start_step

    @start_batch.setter
    def start_batch(self, value: int) -> None:
        self.start_step = value

    def __len__(self) -> int:
        if self.n_batches is None:
            raise TypeError("an endless StepSampler (n_batches=None) has no length")
        return self.n_batches

    def positions(self, k: int) -> range:
        """Stream positions of this rank's part of global batch ``k``."""
        first = k * self.batch_size * self.world_size + self.rank * self.batch_size
        return range(first, first + self.batch_size)

    def batch(self, k: int) -> list[int]:
        """Dataset indices of this rank's part of global batch ``k``."""
        return [self._index(pos) for pos in self.positions(k)]

    def item_seeds(self, k: int) -> list[int]:
        """The seed each item of :meth:`batch` is loaded with."""
        return [mix_seed(self.seed, ITEM_STREAM, pos) for pos in self.positions(k)]

    def _index(self, pos: int) -> int:
        pass_idx, offset = divmod(pos, self.n_items)
        if self._cache is None or self._cache[0] != pass_idx:
            gen = torch.Generator().manual_seed(mix_seed(self.seed, PERM_STREAM, pass_idx))
            self._cache = (pass_idx, torch.randperm(self.n_items, generator=gen).tolist())
        return self._cache[1][offset]

    def __iter__(self) -> Iterator[list[Any]]:
        k = self.start_step
        while self.n_batches is None or k < self.n_batches:
            yield list(zip(self.batch(k), self.item_seeds(k))) if self.with_seeds else self.batch(k)
            k += 1


class SeededItems(Dataset):
    """``dataset`` indexed by ``(index, seed)``: the CPU generators are seeded for the item's load.

    In the main process (``num_workers=0``) the caller's generator states are restored afterwards,
    so loading does not disturb the training's random streams; the loader fetches a whole batch
    through :meth:`__getitems__`, so that costs one save and restore a batch (about 0.15 ms), not
    one an item. A loader worker has no other use for its generators and skips it.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: Sequence[tuple[int, int]]) -> list[Any]:
        if get_worker_info() is not None:
            return [self._load(index, seed) for index, seed in keys]
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            try:
                return [self._load(index, seed) for index, seed in keys]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)

    def _load(self, index: int, seed: int) -> Any:
        seed_cpu_rngs(seed)
        return self.dataset[index]


class StepLoader(DataLoader):
    """DataLoader over a :class:`StepSampler` that Lightning checkpoints and restores.

    ``state_dict()`` is ``{"next_batch": k}``: the sampler's ``start_step`` plus the batches this
    loader handed out since its iterator started. Lightning's fetcher does not read ahead when
    the loader has a length, so at a checkpoint that is ``global_step * accumulate``.
    """

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        sampler = self.batch_sampler
        self._next_batch = sampler.start_step  # type: ignore[union-attr]
        for batch in super().__iter__():  # the sampler is read from here on, not at iter()
            self._next_batch += 1
            yield batch.unpack() if isinstance(batch, PackedBatch) else batch

    @property
    def step_sampler(self) -> StepSampler:
        return self.batch_sampler  # type: ignore[return-value]

    def state_dict(self) -> dict[str, int]:
        return {"next_batch": int(getattr(self, "_next_batch", self.step_sampler.start_step))}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.step_sampler.start_step = int(state_dict["next_batch"])


def _collate_plan(samples: Sequence[dict[str, Any]]) -> dict[str, tuple[bool, list[Any]]]:
    """Per key: (stack?, the samples' values); see :func:`collate_dict`."""
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    keys = list(samples[0].keys())
    for i, s in enumerate(samples[1:], start=1):
        if set(s.keys()) != set(keys):
            raise ValueError(f"sample {i} has keys {sorted(s)}, but sample 0 has {sorted(keys)}")
    plan = {}
    for k in keys:
        vals = [s[k] for s in samples]
        stack = all(isinstance(v, torch.Tensor) for v in vals) and all(v.shape == vals[0].shape for v in vals)
        plan[k] = (stack, vals)
    return plan


def collate_dict(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Sample dicts -> one batch dict: tensors of one shape are stacked ``[B, ...]``; anything else
    (metadata: names, affines as lists, strings, numbers, tensors of differing shapes) stays a
    list of the samples' values, in order."""
    return {k: stack_large(vals) if stack else vals for k, (stack, vals) in _collate_plan(samples).items()}


HUGEPAGE_MIN = 4 * 2**20  # bytes: numpy asks the kernel for transparent huge pages from this size on


def stack_large(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """``torch.stack`` of CPU tensors, into memory numpy allocated when the result is 4 MiB or more.

    A fresh large allocation is new pages that fault on first touch, one per 4 KiB. numpy marks
    its large allocations for transparent huge pages (``madvise``; Linux with THP in ``madvise``
    mode, as here), torch's allocator does not unless ``THP_MEM_ALLOC_ENABLE=1`` was set at
    start: stacking a 67 MB batch of two 1 mm MRI crops took 31.6 ms into torch's memory, 9.5 ms
    into numpy's (5.8 ms into memory already touched). Other devices, dtypes numpy lacks
    (bfloat16) and small batches use ``torch.stack``.
    """
    first = tensors[0]
    nbytes = len(tensors) * first.numel() * first.element_size()
    np_dtype = _numpy_dtype(first.dtype) if nbytes >= HUGEPAGE_MIN and first.device.type == "cpu" else None
    if np_dtype is None:
        return torch.stack(list(tensors))
    return torch.stack(list(tensors), out=torch.from_numpy(np.empty((len(tensors), *first.shape), dtype=np_dtype)))


def _numpy_dtype(dtype: torch.dtype) -> Any:
    """numpy's dtype for a torch dtype, or None where numpy has none (bfloat16)."""
    try:
        return torch.empty(0, dtype=dtype).numpy().dtype
    except TypeError:
        return None


PACK_ALIGN = 64  # bytes: every tensor of a packed batch starts at a multiple (any dtype can view it)
INLINE_MAX = 2**20  # bytes: a worker sends packed batches up to this size by value (see PackedBatch)


class PackedBatch:
    """A collated batch whose tensors are views of one flat byte buffer.

    A loader worker hands a batch to the main process. torch would put each tensor storage in
    shared memory and send its file descriptor over its own socket connection to the worker
    (about 0.5 ms each here, with a thread wake-up in the worker that takes a core from training).
    Packed, a batch of any number of tensors is one buffer, sent one of two ways:

    - up to :data:`INLINE_MAX` bytes (``inline`` holds them), by value through the loader's pipe;
    - larger, as one shared-memory storage.

    Measured here with 2 workers (bench_datapath, end to end, A/B runs of the same config):
    a 260 KB ECG batch waited 1.1-1.8 ms by value against 2.4-2.7 ms in shared memory (the loader
    alone: 3600-4600 against 2500-2600 samples/s); a 2 MB MRI batch waited 3.1 ms in shared memory
    against 4.2 ms by value (105-109 against 100-102 samples/s end to end). Hence 1 MiB. (Receiving
    a 61 KB image batch with the main process idle: 1.7-1.9 ms in shared memory, 0.9-1.1 ms by value.)

    :func:`collate_packed` builds it in the worker, :meth:`unpack` gives the batch dict back
    (views, no copy); ``pin_memory`` pins the one buffer.
    """

    def __init__(self, buffer: torch.Tensor, slots: list[tuple[torch.dtype, tuple[int, ...], int]], skeleton: Any,
                 inline: bytearray | None = None):
        self.buffer, self.slots, self.skeleton, self.inline = buffer, slots, skeleton, inline

    def views(self) -> list[torch.Tensor]:
        out = []
        for dtype, shape, offset in self.slots:
            nbytes = math.prod(shape) * dtype.itemsize
            out.append(self.buffer[offset : offset + nbytes].view(dtype).view(shape))
        return out

    def unpack(self) -> dict[str, Any]:
        views = self.views()
        return {k: _fill(v, views) for k, v in self.skeleton.items()}

    def pin_memory(self) -> PackedBatch:
        """The batch in page-locked memory (DataLoader ``pin_memory=True``): one buffer to pin."""
        return PackedBatch(self.buffer.pin_memory(), self.slots, self.skeleton)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:  # the views are rebuilt, not sent
        if self.inline is not None:
            return _inline_batch, (self.inline, self.slots, self.skeleton)
        return PackedBatch, (self.buffer, self.slots, self.skeleton)


def _byte_tensor(data: bytearray) -> torch.Tensor:
    """``data`` as a uint8 tensor sharing its memory (``torch.frombuffer`` refuses an empty one)."""
    return torch.frombuffer(data, dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)


def _inline_batch(data: bytearray, slots: list[tuple[torch.dtype, tuple[int, ...], int]], skeleton: Any) -> PackedBatch:
    return PackedBatch(_byte_tensor(data), slots, skeleton, data)


class _Slot(int):
    """Index of a tensor in :attr:`PackedBatch.slots` (a placeholder in the skeleton)."""


def _fill(value: Any, views: list[torch.Tensor]) -> Any:
    if isinstance(value, _Slot):
        return views[value]
    if isinstance(value, list):
        return [views[v] if isinstance(v, _Slot) else v for v in value]
    return value


def collate_packed(samples: Sequence[dict[str, Any]]) -> PackedBatch:
    """:func:`collate_dict` into a :class:`PackedBatch`: every tensor, stacked or kept in a list,
    is written straight into one buffer: in shared memory when called in a loader worker and
    larger than :data:`INLINE_MAX`, else in a ``bytearray`` that pickles by value."""
    plan = _collate_plan(samples)
    slots: list[tuple[torch.dtype, tuple[int, ...], int]] = []
    skeleton: dict[str, Any] = {}
    sources: list[Any] = []  # per slot: a list of tensors to stack, or one tensor
    offset = 0

    def add(dtype: torch.dtype, shape: tuple[int, ...], source: Any) -> _Slot:
        nonlocal offset
        slots.append((dtype, shape, offset))
        sources.append(source)
        offset += -(-math.prod(shape) * dtype.itemsize // PACK_ALIGN) * PACK_ALIGN
        return _Slot(len(slots) - 1)

    for k, (stack, vals) in plan.items():
        if stack:
            skeleton[k] = add(vals[0].dtype, (len(vals), *vals[0].shape), vals)
        else:
            skeleton[k] = [add(v.dtype, tuple(v.shape), v) if isinstance(v, torch.Tensor) else v for v in vals]
    if get_worker_info() is not None and offset > INLINE_MAX:
        storage = torch.UntypedStorage._new_shared(offset)
        packed = PackedBatch(torch.empty(0, dtype=torch.uint8).set_(storage), slots, skeleton)
    else:
        inline = bytearray(offset)
        packed = PackedBatch(_byte_tensor(inline), slots, skeleton, inline)
    for view, source in zip(packed.views(), sources):
        if isinstance(source, list):
            torch.stack(source, out=view)
        else:
            view.copy_(source)
    return packed


def make_loader(
    dataset: Dataset,
    cfg: TrainConfig,
    n_batches: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    shuffle_seed: int | None = None,
    start_step: int = 0,
) -> StepLoader:
    """Training loader: this rank's slice of step-indexed batches of ``cfg.batch_size`` samples.

    ``n_batches`` (micro-batches, usually ``max_steps * accumulate``) bounds the run; the order
    is seeded by ``shuffle_seed`` (default ``cfg.seed``).
    """
    sampler = StepSampler(
        len(dataset),  # type: ignore[arg-type]
        cfg.batch_size,
        seed=cfg.seed if shuffle_seed is None else shuffle_seed,
        start_step=start_step,
        n_batches=n_batches,
        rank=rank,
        world_size=world_size,
        with_seeds=True,
    )
    return StepLoader(
        SeededItems(dataset),
        batch_sampler=sampler,
        collate_fn=collate_packed if cfg.num_workers > 0 else collate_dict,  # one storage per batch to send
        num_workers=cfg.num_workers,
        persistent_workers=cfg.num_workers > 0,
        pin_memory=_uses_cuda(cfg),
    )


def make_eval_loader(dataset: Dataset, cfg: TrainConfig, rank: int = 0, world_size: int = 1) -> DataLoader:
    """Evaluation loader: items ``rank, rank + world_size, ...`` in order, ``cfg.batch_size`` a batch."""
    own = list(range(rank, len(dataset), world_size))  # type: ignore[arg-type]
    batches = [own[i : i + cfg.batch_size] for i in range(0, len(own), cfg.batch_size)]
    return DataLoader(dataset, batch_sampler=batches, collate_fn=collate_dict, num_workers=cfg.num_workers,
                      pin_memory=_uses_cuda(cfg))


def _uses_cuda(cfg: TrainConfig) -> bool:
    return cfg.accelerator in ("gpu", "cuda") or (cfg.accelerator == "auto" and torch.cuda.is_available())
