"""What a batch is: the kinds the model takes, the datasets and samplers that build them, and
how a whole-epoch batch is cut back into minibatches.

A batch is a dict of tensors (Lightning moves dicts to the device as they are):

    TokenBatch   {"ids": (T,) int64, "offsets": (B,) int64, "labels": (B,) float32}
                 row i's tokens are ids[offsets[i]:offsets[i + 1]] (EmbeddingBag's layout)
    PooledBatch  {"pooled": (B, D) float32, "labels": (B,) float32}
                 the frozen embedding's output, computed once per run
                 (a `BatchPlan`'s `pooled`)

An epoch batch (fused training, `fakenews_pl.training.fused`) is either kind over all of an epoch's
shuffled rows plus `"minibatch": int` (the notebook's 32): `minibatches` cuts it into the
consecutive minibatches a shuffled DataLoader with that batch size would have yielded (the
same `EpochShuffle` draws the order from the run's seed and the epoch, so the same rows).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, Sampler

MINIBATCH = "minibatch"


class TokenBatch(TypedDict):
    """Token bags: (T,) ids, (B,) offsets into them, (B,) 0/1 labels."""

    ids: torch.Tensor
    offsets: torch.Tensor
    labels: torch.Tensor


class PooledBatch(TypedDict):
    """(B, D) pooled vectors of a frozen embedding and (B,) 0/1 labels."""

    pooled: torch.Tensor
    labels: torch.Tensor


Batch = TokenBatch | PooledBatch


# BatchPlan.kind: one epoch batch of minibatches (fused), minibatches of rows of similar
# length (for a sequence encoder), or plain shuffled minibatches.
PLAN_KINDS = ("epoch", "buckets", "minibatches")


@dataclass(frozen=True)
class BatchPlan:
    """How a run's training batches are made, decided once per fit
    (`fakenews_pl.training.callbacks.PlanBatches`) and handed to the data module: `kind` (see
    `PLAN_KINDS`) and, for a frozen bag model, the (N, D) `pooled` vectors of every corpus row
    that batches then carry instead of token ids."""

    kind: str = "minibatches"
    pooled: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.kind not in PLAN_KINDS:
            raise ValueError(f"BatchPlan.kind must be one of {PLAN_KINDS}, got {self.kind!r}")


def is_epoch(batch: dict[str, Any]) -> bool:
    """Whether `batch` holds a whole epoch of minibatches (see the module docstring)."""
    return MINIBATCH in batch


def gather_bags(
    ids: np.ndarray, starts: np.ndarray, lengths: np.ndarray, rows: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows' bags -> (total,) ids and (B,) offsets for EmbeddingBag, with numpy only."""
    lens = lengths[rows]
    offsets = np.zeros(len(rows), dtype=np.int64)
    np.cumsum(lens[:-1], out=offsets[1:])
    # Position of every token of the batch in the flat `ids`: its bag's start + its rank.
    positions = np.arange(lens.sum(), dtype=np.int64) + np.repeat(starts[rows] - offsets, lens)
    return torch.from_numpy(ids[positions]), torch.from_numpy(offsets)


def minibatches(batch: dict[str, Any], size: int) -> Iterator[Batch]:
    """The consecutive `size`-row minibatches of a batch (the last may be shorter)."""
    if "pooled" in batch:
        parts = zip(batch["pooled"].split(size), batch["labels"].split(size), strict=True)
        for pooled, labels in parts:
            yield {"pooled": pooled, "labels": labels}
        return
    n = len(batch["labels"])
    for start in range(0, n, size):
        yield slice_bags(batch, start, min(start + size, n))


def slice_bags(batch: TokenBatch, start: int, stop: int) -> TokenBatch:
    """Rows [start, stop) of a batch of token bags."""
    ids, offsets = batch["ids"], batch["offsets"]
    first = int(offsets[start])
    last = int(offsets[stop]) if stop < len(offsets) else len(ids)
    return {
        "ids": ids[first:last],
        "offsets": offsets[start:stop] - first,
        "labels": batch["labels"][start:stop],
    }


class TokenRows(Dataset):
    """Rows of a tokenized corpus; `__getitems__` builds a whole `TokenBatch` at once."""

    def __init__(self, corpus: Any, rows: np.ndarray, labels: torch.Tensor) -> None:
        self.corpus, self.rows, self.labels = corpus, rows, labels

    def __len__(self) -> int:
        return len(self.rows)

    def __getitems__(self, positions: list[int]) -> TokenBatch:
        rows = self.rows[np.asarray(positions, dtype=np.int64)]
        c = self.corpus
        ids, offsets = gather_bags(c.ids, c.starts, c.lengths, rows)
        return {"ids": ids, "offsets": offsets, "labels": self.labels[rows]}

    def __getitem__(self, position: int) -> TokenBatch:
        return self.__getitems__([position])


class PooledRows(Dataset):
    """Rows of precomputed (N, D) pooled vectors; one index operation per `PooledBatch`."""

    def __init__(self, pooled: torch.Tensor, rows: np.ndarray, labels: torch.Tensor) -> None:
        self.pooled, self.rows, self.labels = pooled, torch.from_numpy(rows), labels

    def __len__(self) -> int:
        return len(self.rows)

    def __getitems__(self, positions: list[int]) -> PooledBatch:
        rows = self.rows[torch.as_tensor(positions, dtype=torch.int64)]
        return {"pooled": self.pooled[rows], "labels": self.labels[rows]}

    def __getitem__(self, position: int) -> PooledBatch:
        return self.__getitems__([position])


def epoch_seed(*parts: int) -> int:
    """A 63-bit seed mixed from `parts` (run seed, epoch, chunk) by NumPy's SeedSequence."""
    return int(
        np.random.SeedSequence([p % 2**64 for p in parts]).generate_state(1, np.uint64)[0] >> 1
    )


class EpochShuffle(RandomSampler):
    """A random order that depends only on the run's seed and the epoch (Lightning calls
    `set_epoch` before each epoch): a resumed run shuffles its epochs exactly as the run it
    continues, whatever else drew random numbers before. Under DDP Lightning replaces it, as any
    RandomSampler, by a DistributedSampler (seeded by the run's seed, set_epoch'd too)."""

    def __init__(self, data_source: Dataset, seed: int | None = None) -> None:
        super().__init__(data_source)
        self.seed = torch.initial_seed() if seed is None else seed  # seed_everything's seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Shuffle for `epoch` (0-based, as Lightning counts) from the next `iter` on."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        yield from torch.randperm(len(self.data_source), generator=generator).tolist()


class LengthBuckets(BatchSampler):
    """Minibatches of rows of similar length, so a sequence encoder's padding stays small.

    Takes `sampler`'s order (an `EpochShuffle`, or Lightning's DistributedSampler under DDP:
    Lightning passes it in by this argument's name), cuts it into chunks of `chunk_batches`
    minibatches, sorts each chunk by length, cuts it into `batch_size` rows and shuffles those
    minibatches (seeded by the chunk's rows, so the order follows the sampler's seed and epoch).
    A `BatchSampler`, so that Lightning records its arguments and can swap the sampler.
    """

    def __init__(
        self,
        sampler: Sampler[int],
        batch_size: int,
        lengths: np.ndarray,
        drop_last: bool = False,
        chunk_batches: int = 50,
    ) -> None:
        super().__init__(sampler, batch_size, drop_last)
        self.lengths, self.chunk_batches = np.asarray(lengths), chunk_batches

    def __len__(self) -> int:
        rows = len(self.sampler)
        return rows // self.batch_size if self.drop_last else -(-rows // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = np.fromiter(iter(self.sampler), dtype=np.int64)
        chunk = self.batch_size * self.chunk_batches
        for start in range(0, len(order), chunk):
            rows = order[start : start + chunk]
            rows = rows[np.argsort(self.lengths[rows], kind="stable")]
            parts = [rows[i : i + self.batch_size] for i in range(0, len(rows), self.batch_size)]
            if self.drop_last and len(parts[-1]) < self.batch_size:
                parts.pop()
            rng = np.random.default_rng(epoch_seed(start, *rows[:4].tolist()))
            for i in rng.permutation(len(parts)):
                yield parts[i].tolist()


def bucket_loader(
    dataset: Dataset, batch_size: int, lengths: np.ndarray, num_workers: int = 0
) -> DataLoader:
    """Shuffled minibatches of `batch_size` rows of similar `lengths` (`LengthBuckets`)."""
    return DataLoader(
        dataset,
        batch_sampler=LengthBuckets(EpochShuffle(dataset), batch_size, lengths),
        collate_fn=_as_is,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )


class _WholeEpoch(Sampler):
    """One batch per epoch: every minibatch of `batches`, concatenated in order."""

    def __init__(self, batches: BatchSampler) -> None:
        self.batches = batches
        self.sampler = batches.sampler  # where Lightning looks for set_epoch

    def __len__(self) -> int:
        return 1

    def __iter__(self):
        yield [i for batch in self.batches for i in batch]


class _TagMinibatch:
    """collate_fn of epoch batches: tags the batch with its minibatch size."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        return {**batch, MINIBATCH: self.size}


def _as_is(batch: Batch) -> Batch:
    """collate_fn: `__getitems__` already built the batch (module level: workers pickle it)."""
    return batch


def loader(dataset: Dataset, batch_size: int, shuffle: bool, num_workers: int = 0) -> DataLoader:
    """Batches of `batch_size` rows, in dataset order unless `shuffle`."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochShuffle(dataset) if shuffle else None,
        collate_fn=_as_is,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )


def epoch_loader(dataset: Dataset, minibatch: int) -> DataLoader:
    """One epoch batch per epoch: the shuffled minibatches of `loader(..., shuffle=True)`."""
    # The same sampler as loader(shuffle=True): the same order for a seed and an epoch.
    epoch = _WholeEpoch(BatchSampler(EpochShuffle(dataset), minibatch, drop_last=False))
    return DataLoader(dataset, batch_sampler=epoch, collate_fn=_TagMinibatch(minibatch))


def length_summary(lengths: np.ndarray, max_tokens: int) -> str:
    """One line: the token-count distribution of the texts, and what `max_tokens` cuts."""
    p50, p90, p99 = np.percentile(lengths, [50, 90, 99]) if len(lengths) else (0, 0, 0)
    cut = float(np.mean(lengths > max_tokens)) if len(lengths) else 0.0
    return (
        f"tokens per text: median {p50:.0f}, p90 {p90:.0f}, p99 {p99:.0f}, max "
        f"{int(lengths.max(initial=0))}; max_tokens={max_tokens} truncates {cut:.1%} of texts"
    )
