"""Intra-op threads around small work: one helper for training, evaluation and serving.

`torch.get_num_threads()` is this thread's OpenMP team size (`OMP_NUM_THREADS`, else the
cores). MKL splits even a 32-row matrix product across its threads; on a shared machine one of
them waits for a core in each product (beside a busy process on 2 cores: 0.2-0.8 ms per
product instead of 25-55 us; docs/benchmarks.md, "Shared machine"). So the small ops of a
training minibatch, an evaluation batch and a served request run on a count of their own:
`model.step_threads` in training and evaluation, `threads` in serve.py and `Classifier`.
A set or get costs ~0.1 us, so switching around each block is free.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def intra_op(threads: int | None) -> Iterator[int]:
    """Run the block on `threads` intra-op threads (`torch.set_num_threads`; None: leave the
    count as it is) and restore the count after; yields the count found on entry."""
    previous = torch.get_num_threads()
    if threads is not None and threads != previous:
        torch.set_num_threads(threads)
    try:
        yield previous
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
