"""The batch contract: bags gathered from a corpus, minibatch slicing, epoch batches."""

import numpy as np
import pytest
import torch

from fakenews_pl.data import batches


def _bags(lengths: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, starts, lengths) of a corpus whose row i holds ids 100*i, 100*i+1, ..."""
    lengths = np.asarray(lengths, dtype=np.int64)
    ids = np.concatenate([100 * i + np.arange(n) for i, n in enumerate(lengths)]).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return ids, starts, lengths


def test_gather_bags_lays_rows_out_for_embedding_bag() -> None:
    ids, starts, lengths = _bags([2, 0, 3, 1])
    flat, offsets = batches.gather_bags(ids, starts, lengths, np.array([2, 1, 0]))
    assert flat.tolist() == [200, 201, 202, 0, 1]  # row 2, the empty row 1, row 0
    assert offsets.tolist() == [0, 3, 3]


@pytest.mark.parametrize("size", [1, 2, 3, 32])
def test_minibatches_of_token_bags_equal_the_rows_gathered_directly(size: int) -> None:
    ids, starts, lengths = _bags([2, 0, 3, 1, 4, 0, 2])
    order = np.array([4, 0, 6, 1, 3, 5, 2])
    flat, offsets = batches.gather_bags(ids, starts, lengths, order)
    labels = torch.arange(len(order), dtype=torch.float32)
    epoch = {"ids": flat, "offsets": offsets, "labels": labels, batches.MINIBATCH: size}
    assert batches.is_epoch(epoch)
    parts = list(batches.minibatches(epoch, size))
    assert len(parts) == -(-len(order) // size)
    for k, part in enumerate(parts):
        rows = order[k * size : (k + 1) * size]
        want_ids, want_offsets = batches.gather_bags(ids, starts, lengths, rows)
        assert torch.equal(part["ids"], want_ids) and torch.equal(part["offsets"], want_offsets)
        assert torch.equal(part["labels"], labels[k * size : (k + 1) * size])


def test_minibatches_of_pooled_rows() -> None:
    pooled, labels = torch.randn(5, 3), torch.arange(5.0)
    parts = list(batches.minibatches({"pooled": pooled, "labels": labels}, 2))
    assert [len(p["labels"]) for p in parts] == [2, 2, 1]
    assert torch.equal(torch.cat([p["pooled"] for p in parts]), pooled)


def test_epoch_loader_yields_the_shuffled_loaders_minibatches_as_one_batch() -> None:
    pooled, labels = torch.randn(70, 4), torch.arange(70.0)
    dataset = batches.PooledRows(pooled, np.arange(70), labels)
    torch.manual_seed(3)
    plain = list(batches.loader(dataset, 32, shuffle=True))
    torch.manual_seed(3)
    (epoch,) = list(batches.epoch_loader(dataset, 32))
    assert epoch[batches.MINIBATCH] == 32 and not batches.is_epoch(plain[0])
    for part, batch in zip(batches.minibatches(epoch, 32), plain, strict=True):
        assert torch.equal(part["pooled"], batch["pooled"])
        assert torch.equal(part["labels"], batch["labels"])
