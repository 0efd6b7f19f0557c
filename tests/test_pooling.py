"""`pool_bags` against TensorFlow's CPU SparseSegment{Sum,Mean,SqrtN}: bit for bit.

The tolerance is exactly 0 (np.array_equal; the only allowed difference is the sign of a zero,
see fakenews_pl/hub/pooling.py).  Row values span 1e-3..1e6 so that any other summation order
shows up, as does the crafted 1e8 / 1 / -1e8 bag.  Float64 tables (TF-Hub's v2 example
exporter writes them) are checked the same way against TF's double kernels.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fakenews_pl.hub.pooling import (
    COMBINERS,
    head_length,
    head_lengths,
    make_plan,
    pool_bags,
    pool_lists,
    pool_with_plan,
)

VOCAB, DIM = 6000, 48
# Bag lengths: the head/block edge cases, empty bags (first, middle, last), and long bags.
LENGTHS = [0, 1, 2, 7, 8, 9, 10, 11, 15, 16, 17, 18, 25, 0, 33, 300, 5000, 3, 0]
SAME_ID_BAG = 15  # index in LENGTHS of the bag made of 300 identical ids


def _table(seed: int = 0) -> np.ndarray:
    """(VOCAB, DIM) float32 rows with magnitudes 1e-3..1e6, plus rows 0..2 = 1e8, 1, -1e8."""
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((VOCAB, DIM)) * 10.0 ** rng.integers(-3, 7, (VOCAB, DIM))
    table[:3] = np.array([1e8, 1.0, -1e8])[:, None]
    return table.astype(np.float32)


def _bags(lengths: list[int], seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Random ids for bags of `lengths` -> (T,) int64 ids, (B,) int64 offsets."""
    rng = np.random.default_rng(seed)
    ids = [rng.integers(0, VOCAB, n) for n in lengths]
    if len(lengths) > SAME_ID_BAG and lengths[SAME_ID_BAG] == 300:
        ids[SAME_ID_BAG][:] = 4321
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return np.concatenate(ids).astype(np.int64), offsets.astype(np.int64)


def _crafted_bag() -> np.ndarray:
    """20 ids (head of 4, then 2 blocks of 8) whose float32 sum depends on the order."""
    ids = np.ones(20, np.int64)  # row 1 = 1.0
    ids[0], ids[4] = 0, 2  # 1e8 opens the head, -1e8 opens block 1
    return ids


def _tf_pool(tf, table, ids, offsets, combiner: str) -> np.ndarray:
    """TF's own kernel, as the Hub module calls it (sorted segment ids, num_segments = B)."""
    lengths = np.diff(offsets, append=ids.size)
    segments = np.repeat(np.arange(offsets.size), lengths).astype(np.int32)
    op = {
        "sum": tf.sparse.segment_sum,
        "mean": tf.sparse.segment_mean,
        "sqrtn": tf.sparse.segment_sqrt_n,
    }[combiner]
    with tf.device("/CPU:0"):
        return op(table, ids, segments, num_segments=offsets.size).numpy()


def _table64(seed: int = 0) -> np.ndarray:
    """(VOCAB, DIM) float64 rows with magnitudes 1e-3..1e6 and bits below float32's, plus rows
    0..2 = 1e17, 1, -1e17 (1e17 + 1 rounds to 1e17 in double)."""
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((VOCAB, DIM)) * 10.0 ** rng.integers(-3, 7, (VOCAB, DIM))
    table[:3] = np.array([1e17, 1.0, -1e17])[:, None]
    return table


def _pool(table, ids, offsets, combiner: str, index_dtype=torch.int64) -> np.ndarray:
    ids_t = torch.from_numpy(ids).to(index_dtype)
    offsets_t = torch.from_numpy(offsets).to(index_dtype)
    return pool_bags(torch.from_numpy(table), ids_t, offsets_t, combiner).numpy()


@pytest.fixture(scope="module")
def tf():
    return pytest.importorskip("tensorflow")


@pytest.mark.tf
@pytest.mark.parametrize("combiner", COMBINERS)
def test_matches_tensorflow_bitwise(tf, combiner: str) -> None:
    table = _table()
    ids, offsets = _bags(LENGTHS)
    expected = _tf_pool(tf, table, ids, offsets, combiner)
    got = _pool(table, ids, offsets, combiner)
    assert np.array_equal(got, expected), np.abs(got - expected).max(axis=1)
    assert not got[[0, 13, 18]].any()  # empty bags are zeros


@pytest.mark.tf
@pytest.mark.parametrize("combiner", COMBINERS)
def test_matches_tensorflow_every_length(tf, combiner: str) -> None:
    """Every length 1..80 (all heads, 0..9 blocks) plus a 10000-id bag, int32 indices."""
    table = _table(seed=2)
    ids, offsets = _bags(list(range(1, 81)) + [10_000], seed=3)
    expected = _tf_pool(tf, table, ids, offsets, combiner)
    got = _pool(table, ids, offsets, combiner, index_dtype=torch.int32)
    assert np.array_equal(got, expected), np.abs(got - expected).max(axis=1)


@pytest.mark.tf
def test_order_sensitive_bag(tf) -> None:
    """1e8 + 1 rounds to 1e8, so TF's order gives 8 (the last block), left to right 15."""
    table, ids = _table(), _crafted_bag()
    offsets = np.zeros(1, np.int64)
    expected = _tf_pool(tf, table, ids, offsets, "sum")
    assert expected[0, 0] == 8.0  # left-to-right summation would give 15
    assert np.array_equal(_pool(table, ids, offsets, "sum"), expected)


@pytest.mark.tf
@pytest.mark.parametrize("combiner", COMBINERS)
def test_matches_safe_embedding_lookup_sparse(tf, combiner: str) -> None:
    """The full Hub-module path: SparseTensor of ids -> safe_embedding_lookup_sparse."""
    table = _table(seed=4)
    lengths = [3, 0, 17, 300, 1, 42]
    ids, offsets = _bags(lengths, seed=5)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    cols = np.concatenate([np.arange(n) for n in lengths])
    sparse_ids = tf.sparse.SparseTensor(
        np.stack([rows, cols], axis=1), ids, dense_shape=[len(lengths), max(lengths)]
    )
    with tf.device("/CPU:0"):
        expected = tf.nn.safe_embedding_lookup_sparse(table, sparse_ids, combiner=combiner)
    assert np.array_equal(_pool(table, ids, offsets, combiner), expected.numpy())


@pytest.mark.tf
@pytest.mark.parametrize("combiner", COMBINERS)
def test_float64_matches_tensorflow_bitwise(tf, combiner: str) -> None:
    """A float64 table pools in float64, bit-equal to TF's double kernel: every length 0..40
    (heads, blocks, empty bags), bags of one repeated id (the case float32 rounding shows
    most), a 5000-id bag, and the full Hub-module path (safe_embedding_lookup_sparse)."""
    table = _table64(seed=7)
    lengths = list(range(41)) + [300, 5000, 64, 17]
    ids, offsets = _bags(lengths, seed=8)
    ends = np.cumsum(lengths)
    for bag in (-1, -2, -3, 12, 40):  # one repeated id per bag, of lengths 17, 64, 5000, 12, 40
        ids[ends[bag] - lengths[bag] : ends[bag]] = 100 + bag
    expected = _tf_pool(tf, table, ids, offsets, combiner)
    got = _pool(table, ids, offsets, combiner)
    assert got.dtype == np.float64 and expected.dtype == np.float64
    assert np.array_equal(got, expected), np.abs(got - expected).max(axis=1)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    cols = np.concatenate([np.arange(n) for n in lengths])
    sparse_ids = tf.sparse.SparseTensor(
        np.stack([rows, cols], axis=1), ids, dense_shape=[len(lengths), max(lengths)]
    )
    with tf.device("/CPU:0"):
        hub = tf.nn.safe_embedding_lookup_sparse(table, sparse_ids, combiner=combiner).numpy()
    assert np.array_equal(got, hub)
    if combiner != "sum":  # float32 scales would not do: the double kernel's m and 1 / m
        plan = make_plan(torch.from_numpy(offsets), ids.size, combiner, torch.float32)
        wrong = pool_with_plan(torch.from_numpy(table), torch.from_numpy(ids), plan)
        assert wrong.dtype == torch.float64 and not np.array_equal(wrong.numpy(), expected)


def _m(lengths: list[int], combiner: str) -> np.ndarray:
    """(B, 1) TF's double m for bags of `lengths` (1 for bags under 10)."""
    n = np.maximum(np.array(lengths, dtype=np.float64), 1)
    m = n if combiner == "mean" else np.sqrt(n)
    return np.where(n < 10, 1.0, m)[:, None]


@pytest.mark.parametrize("combiner", ["mean", "sqrtn"])
def test_float64_scales_are_computed_in_double(combiner: str) -> None:
    """n < 10 multiplies by 1.0 / m, n >= 10 divides by m; m = double(n) or sqrt(double(n))."""
    lengths = list(range(1, 2000))
    n = torch.tensor(lengths)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), n.cumsum(0)[:-1]])
    plan = make_plan(offsets, int(n.sum()), combiner, torch.float64)
    m = np.array([k if combiner == "mean" else math.sqrt(k) for k in lengths])
    short = np.array(lengths) < 10
    assert plan.head_scale.dtype == plan.final_div.dtype == torch.float64
    assert np.array_equal(plan.head_scale.squeeze(1).numpy(), np.where(short, 1.0 / m, 1.0))
    assert np.array_equal(plan.final_div.squeeze(1).numpy(), _m(lengths, combiner)[:, 0])
    assert np.array_equal(plan.grad_scale.squeeze(1).numpy(), 1.0 / m)


def _reference(weight: torch.Tensor, ids, offsets, combiner: str) -> torch.Tensor:
    """What HubEmbedding.forward computed before: EmbeddingBag, then / sqrt(n) for sqrtn."""
    mode = "mean" if combiner == "mean" else "sum"
    pooled = F.embedding_bag(ids, weight, offsets, mode=mode)
    if combiner == "sqrtn":
        counts = torch.diff(offsets, append=offsets.new_tensor([ids.numel()]))
        pooled = pooled / counts.clamp(min=1).to(pooled.dtype).sqrt().unsqueeze(1)
    return pooled


@pytest.mark.parametrize("combiner", COMBINERS)
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradient_matches_embedding_bag(combiner: str, sparse: bool, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    ids, offsets = (torch.from_numpy(a) for a in _bags(LENGTHS[:-5] + [40, 0, 3], seed=6))
    ids = ids % 500  # repeated ids, so gradient rows accumulate
    weight = torch.randn(500, 16, dtype=torch.float64).to(dtype)
    upstream = torch.randn(offsets.numel(), 16, dtype=torch.float64).to(dtype)

    ours = weight.clone().requires_grad_(True)
    (pool_bags(ours, ids, offsets, combiner, sparse=sparse) * upstream).sum().backward()
    ref = weight.clone().requires_grad_(True)
    (_reference(ref, ids, offsets, combiner) * upstream).sum().backward()

    assert ours.grad is not None and ours.grad.is_sparse == sparse and ours.grad.dtype == dtype
    grad = ours.grad.to_dense() if sparse else ours.grad
    tolerance = 1e-6 if dtype == torch.float32 else 1e-13
    torch.testing.assert_close(grad, ref.grad, rtol=tolerance, atol=tolerance)
    # The forward agrees with the old path to float32 rounding (not bitwise: other order).
    torch.testing.assert_close(
        pool_bags(weight, ids, offsets, combiner), _reference(weight, ids, offsets, combiner)
    )


def test_short_bags_need_no_second_level() -> None:
    """Bags under 10 ids are one head each: one embedding_bag call, ids untouched."""
    plan = make_plan(torch.tensor([0, 3, 3, 12]), 14, "sqrtn", torch.float32)
    assert plan.bag_offsets is None and plan.sub_owner is None
    assert plan.sub_offsets.tolist() == [0, 3, 3, 12]


def test_sub_bags_follow_tf_blocks() -> None:
    """Lengths 10, 17, 9, 25 -> heads 2, 9, 9, 9 then blocks of 8."""
    plan = make_plan(torch.tensor([0, 10, 27, 36]), 61, "sum", torch.float32)
    assert plan.sub_offsets.tolist() == [0, 2, 10, 19, 27, 36, 45, 53]
    assert plan.bag_offsets.tolist() == [0, 2, 4, 5]
    assert plan.head_scale is None and plan.final_div is None


def test_head_lengths() -> None:
    n = np.arange(200)
    expected = [k if k < 10 else {0: 8, 1: 9}.get(k & 7, k & 7) for k in n.tolist()]
    assert head_lengths(n).tolist() == expected
    assert [head_length(k) for k in n.tolist()] == expected
    assert ((n - head_lengths(n)) % 8 == 0).all()


@pytest.mark.parametrize("combiner", ["mean", "sqrtn"])
def test_scale_rounding(combiner: str) -> None:
    """n < 10 multiplies by 1.0f / m, n >= 10 divides by m; m = float(sqrt(double(n)))."""
    n = torch.arange(1, 2000)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), n.cumsum(0)[:-1]])
    plan = make_plan(offsets, int(n.sum()), combiner, torch.float32)
    m = [np.float32(k if combiner == "mean" else math.sqrt(k)) for k in n.tolist()]
    short = n.numpy() < 10
    head = np.where(short, [np.float32(1) / x for x in m], 1)
    final = np.where(short, 1, m)
    assert np.array_equal(plan.head_scale.squeeze(1).numpy(), head.astype(np.float32))
    assert np.array_equal(plan.final_div.squeeze(1).numpy(), final.astype(np.float32))


def test_edge_cases() -> None:
    weight = torch.randn(10, 4)
    no_ids = torch.zeros(0, dtype=torch.long)
    assert pool_bags(weight, no_ids, no_ids).shape == (0, 4)  # no bags
    all_empty = pool_bags(weight, no_ids, torch.zeros(3, dtype=torch.long))
    assert all_empty.shape == (3, 4) and not all_empty.any()
    one = torch.zeros(1, dtype=torch.long)
    with pytest.raises(ValueError, match="combiner"):
        pool_bags(weight, one, one, "max")


def _bits(t: torch.Tensor) -> np.ndarray:
    return t.numpy().view(f"u{t.element_size()}")


@pytest.mark.parametrize("combiner", COMBINERS)
@pytest.mark.parametrize("table", [_table, _table64], ids=["float32", "float64"])
def test_pool_lists_equals_pool_bags_bit_for_bit(combiner: str, table) -> None:
    """The lean path's pooling against `pool_bags`: one bag of every length to 300 (each head
    length and block count), the order-sensitive bag, and a few bags at once, short, long,
    mixed and empty."""
    weight = torch.from_numpy(table())

    def check(ids: np.ndarray, offsets: np.ndarray) -> None:
        expected = pool_bags(weight, torch.from_numpy(ids), torch.from_numpy(offsets), combiner)
        got = pool_lists(weight, ids.tolist(), offsets.tolist(), combiner)
        assert got.dtype == expected.dtype and got.shape == expected.shape
        assert np.array_equal(_bits(got), _bits(expected)), (combiner, offsets.tolist())

    for n in range(301):
        check(*_bags([n], seed=n))
    check(_crafted_bag(), np.zeros(1, np.int64))
    for lengths in ([1, 2, 9], [10, 300], [3, 12], [0], [0, 0, 3], LENGTHS[:16], LENGTHS[-8:]):
        check(*_bags(lengths, seed=len(lengths)))
