"""Bag pooling that rounds exactly like TensorFlow's CPU `SparseSegment{Sum,Mean,SqrtN}`.

TF-Hub text modules pool with `tf.nn.safe_embedding_lookup_sparse(..., combiner=...)`, which
ends in `SparseSegmentSum/Mean/SqrtN(data, indices, segment_ids)`.  Its CPU kernel
(`SparseSegmentReductionOpBase::ReduceImpl` in tensorflow/core/kernels/
segment_reduction_ops_impl.h; checked bit for bit against TF 2.21 in tests/test_pooling.py)
adds the n float32 rows of a segment in this order (segments are independent; float64 below):

* n == 0: zeros.  n == 1: the row itself.
* a *head* of h rows summed left to right, ``((x0 + x1) + x2) + ...``, with h = n for n < 10,
  otherwise h = n & 7 where 0 -> 8 and 1 -> 9 (so 2 <= h <= 9);
* for n < 10 (head only) the head is multiplied by ``1.0f / m``, where m = float(n) for mean
  and float(sqrt(double(n))) for sqrtn;
* then each following block of 8 rows is summed left to right and added to the running sum:
  ``out = out + (((y0 + y1) + ...) + y7)``;
* for n >= 10 the total is divided (not multiplied by a reciprocal) by m.

So the total is a left-to-right sum of *sub-bag* sums (the head, then each 8-block), each itself
a left-to-right sum.  `F.embedding_bag(mode="sum")` sums a bag left to right starting from 0
on CPU (tested), so `pool_bags` is two nested `embedding_bag` calls: one over the sub-bags of
the ids (no (T, D) token rows are materialised), one over the rows of that result, then the
scaling.  No Python loop, no sort.  The first call gives the weight gradient (dense, or sparse
like `nn.EmbeddingBag(sparse=True)`); the rest has a one-gather custom backward.

A float64 table (the v2 exporter builds its table from Python floats) is pooled in the same
order in float64, as TF's double kernel does; its m is double(n) or sqrt(double(n)), the head
multiplied by ``1.0 / m`` and the longer bags divided by m, all in double (`make_plan` picks
the scales by the table's dtype; tests/test_pooling.py checks both dtypes against TF).

`pool_lists` pools a few bags given as Python lists (the classifier's few texts) with the same
calls on the same sub-bags, its plan made in plain Python: for one text the numpy plan costs
more than the pooling itself.

Only known difference: `embedding_bag` starts from +0.0, so a sum of -0.0 values comes out as
+0.0 where TF keeps -0.0.  Values compare equal; max abs difference is exactly 0.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

COMBINERS = ("sqrtn", "mean", "sum")

_BLOCK = 8  # TF adds the rows after the head in blocks of 8
_SHORT = 10  # bags shorter than this are a head only, scaled by 1.0f / m


class BagPlan(NamedTuple):
    """TF's split of B bags into S = B + NB sub-bags: each bag's head, then its 8-blocks.

    Sub-bags are consecutive runs of the ids, in bag order, so the ids need no reordering.
    (A NamedTuple: built for every batch, it must be cheap to make.)
    """

    sub_offsets: Tensor  # (S,) start of each sub-bag in the ids
    bag_offsets: Tensor | None  # (B,) first sub-bag of each bag; None when S == B
    sub_owner: Tensor | None  # (S,) bag of each sub-bag; None when S == B
    head_scale: Tensor | None  # (B, 1) 1.0f / m for n < 10, else 1; None for "sum"
    final_div: Tensor | None  # (B, 1) m for n >= 10, else 1; None for "sum"
    grad_scale: Tensor | None  # (B, 1) float(1.0 / m), TF's SparseSegment*Grad factor


def head_lengths(n: np.ndarray) -> np.ndarray:
    """(B,) bag lengths -> (B,) head lengths: n below 10, else n & 7 mapped 0 -> 8, 1 -> 9."""
    # ((n - 2) & 7) + 2 maps residues 2..7 to themselves, 0 to 8 and 1 to 9.
    return np.where(n < _SHORT, n, ((n - 2) & 7) + 2)


def head_length(n: int) -> int:
    """`head_lengths` of one bag length."""
    return n if n < _SHORT else ((n - 2) & 7) + 2


def _length_columns(n: np.ndarray) -> np.ndarray:
    """(N,) lengths -> (N, 2) int64 [head length, number of sub-bags = 1 + blocks]."""
    head_len = head_lengths(n)
    return np.stack([head_len, 1 + (n - head_len) // _BLOCK], axis=1)


def _scale_columns(n: np.ndarray, combiner: str, double: bool = False) -> np.ndarray:
    """(N,) lengths -> (N, 3) [head_scale, final_div, grad_scale] for "mean" or "sqrtn":
    float32, or with `double` float64 (TF's kernel for a float64 table)."""
    nd = np.maximum(n, 1).astype(np.float64)
    m64 = nd if combiner == "mean" else np.sqrt(nd)
    short = n < _SHORT
    if double:  # m = double(n) or sqrt(double(n)); 1.0 / m in double
        recip = 1.0 / m64
        return np.stack([np.where(short, recip, 1.0), np.where(short, 1.0, m64), recip], axis=1)
    # m as TF rounds it: float(n) or float(sqrt(double(n))).  Not torch's float32 sqrt, which
    # is one ulp off for some n (e.g. 267).
    m = m64.astype(np.float32)
    # 1.0f / m: a float64 division rounded once to float32 equals the float32 division.
    recip = (1.0 / m.astype(np.float64)).astype(np.float32)
    one = np.float32(1)
    grad = (1.0 / m64).astype(np.float32)
    return np.stack([np.where(short, recip, one), np.where(short, one, m), grad], axis=1)


# Per-length lookup tables, grown by doubling, so a batch costs one numpy lookup per table.
_TABLES: dict[tuple[str, bool], np.ndarray] = {}


def _table(key: str, max_len: int, double: bool = False) -> np.ndarray:
    """Table of `_length_columns` (key "lengths") or `_scale_columns` (key: the combiner; in
    float64 with `double`) for lengths 0..max_len."""
    table = _TABLES.get((key, double))
    if table is None or table.shape[0] <= max_len:
        n = np.arange(max(1024, 1 << max_len.bit_length()))
        table = _length_columns(n) if key == "lengths" else _scale_columns(n, key, double)
        _TABLES[key, double] = table
    return table


def _sub_bag_offsets(
    off: np.ndarray, head_len: np.ndarray, subs: np.ndarray, first: np.ndarray
) -> np.ndarray:
    """(B,) bag starts, head lengths, sub-bag counts, first sub-bag -> (S,) sub-bag starts."""
    # Block j >= 1 of bag b starts at off + h + 8 (j - 1) = base_b + 8 * (first_b + j).
    base = off + head_len - _BLOCK * (first + 1)  # (B,)
    starts = np.repeat(base, subs) + _BLOCK * np.arange(first[-1] + subs[-1])  # (S,)
    starts[first] = off  # heads start at the bag start
    return starts


def _to_device(x: np.ndarray, device: torch.device, dtype: torch.dtype | None = None) -> Tensor:
    """numpy -> torch, zero-copy on CPU."""
    t = torch.from_numpy(x)
    return t if device.type == "cpu" and dtype in (None, t.dtype) else t.to(device, dtype)


def make_plan(offsets: Tensor, total: int, combiner: str, dtype: torch.dtype) -> BagPlan:
    """Split B >= 1 bags given by (B,) `offsets` into `total` ids into TF's sub-bags.

    The scales are in `dtype`, the table's: computed as TF's double kernel does for float64,
    as its float kernel does otherwise. Built with a few numpy calls on the (small) offsets,
    since it runs for every batch.
    """
    device = offsets.device
    off = (offsets if device.type == "cpu" else offsets.cpu()).numpy()
    off = off.astype(np.int64, copy=False)
    n = np.append(off[1:], total) - off  # (B,) bag lengths
    max_len = int(n.max())
    head_len, subs = _table("lengths", max_len)[n].T  # (B,) each
    bag_offsets = sub_owner = None
    if subs.max() == 1:  # no bag has blocks: the bags are the sub-bags
        sub_offsets = off
    else:
        first = np.cumsum(subs) - subs  # (B,) index of each bag's head among the sub-bags
        sub_offsets = _sub_bag_offsets(off, head_len, subs, first)
        bag_offsets = _to_device(first, device)
        sub_owner = _to_device(np.repeat(np.arange(off.size), subs), device)
    scales: list[Tensor | None] = [None, None, None]
    if combiner != "sum":
        cols = _table(combiner, max_len, double=dtype == torch.float64)[n]  # (B, 3)
        scales = [_to_device(cols[:, i : i + 1], device, dtype) for i in range(3)]
    return BagPlan(_to_device(sub_offsets, device), bag_offsets, sub_owner, *scales)


def combine_sub_sums(sub_sums: Tensor, plan: BagPlan) -> Tensor:
    """(S, D) head and block sums -> (B, D) pooled vectors, in TF's order and rounding."""
    out = sub_sums
    if plan.bag_offsets is not None:
        # (B, D): each bag's sub-bag sums added left to right from 0, TF's `out += block`.
        sub_ids = torch.arange(sub_sums.shape[0], device=sub_sums.device)
        out = F.embedding_bag(sub_ids, sub_sums, plan.bag_offsets, mode="sum")
    if plan.head_scale is not None:
        # n < 10: head * (1.0f / m); n >= 10: total / m.  The other factor is an exact 1.
        out = out * plan.head_scale / plan.final_div
    return out


class _CombineSubSums(torch.autograd.Function):
    """`combine_sub_sums` whose backward is one gather: d out_b / d sub-sum = scale_b.

    (Autograd through the second `embedding_bag` and the scaling would cost several passes.)
    """

    @staticmethod
    def forward(ctx, sub_sums: Tensor, plan: BagPlan) -> Tensor:  # type: ignore[override]
        ctx.plan = plan
        return combine_sub_sums(sub_sums, plan)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        plan: BagPlan = ctx.plan
        if plan.grad_scale is not None:
            grad_out = grad_out * plan.grad_scale  # (B, D)
        if plan.sub_owner is not None:
            grad_out = grad_out.index_select(0, plan.sub_owner)  # (S, D)
        return grad_out, None


def pool_with_plan(weight: Tensor, ids: Tensor, plan: BagPlan, sparse: bool = False) -> Tensor:
    """Pool (V, D) `weight` rows at (T,) `ids` by a `BagPlan` -> (B, D)."""
    # (S, D): every head and 8-block summed left to right from 0, as TF sums them.
    sub_sums = F.embedding_bag(
        ids, weight, plan.sub_offsets.to(ids.dtype), mode="sum", sparse=sparse
    )
    if not sub_sums.requires_grad:
        return combine_sub_sums(sub_sums, plan)
    return _CombineSubSums.apply(sub_sums, plan)


def pool_bags(
    weight: Tensor,
    ids: Tensor,
    offsets: Tensor,
    combiner: str = "sqrtn",
    sparse: bool = False,
) -> Tensor:
    """Pool rows of `weight` (V, D) per bag exactly as TF's CPU SparseSegment<combiner> does.

    `ids` (T,) and `offsets` (B,) are `nn.EmbeddingBag`'s 1-D input (offsets[0] == 0,
    non-decreasing).  Returns (B, D); empty bags give zeros.  Differentiable w.r.t. `weight`;
    with `sparse=True` its gradient is a sparse COO tensor, as with `nn.EmbeddingBag`.
    """
    if combiner not in COMBINERS:
        raise ValueError(f"combiner must be one of {COMBINERS}, got {combiner!r}")
    if ids.ndim != 1 or offsets.ndim != 1:
        raise ValueError(
            f"ids and offsets must be 1-D, got {tuple(ids.shape)}, {tuple(offsets.shape)}"
        )
    if offsets.numel() == 0:
        return weight.new_zeros((0, weight.shape[1]))
    plan = make_plan(offsets, ids.numel(), combiner, weight.dtype)
    return pool_with_plan(weight, ids, plan, sparse=sparse)


def pool_lists(weight: Tensor, ids: list[int], offsets: list[int], combiner: str) -> Tensor:
    """`pool_bags` of B >= 1 bags given as lists (`HubTokenizer.encode_few`), in evaluation:
    (T,) ids, (B,) offsets -> (B, D), bit for bit `pool_bags`' result.

    The same `embedding_bag` calls on the same sub-bags and the same scale tensors; the plan is
    made in plain Python instead of `make_plan`'s numpy calls, which cost more than the pooling
    for one text (~80 us of a single text's `predict_proba`). A scale of exactly 1 is left out
    (x * 1 and x / 1 are x), so a batch of short bags is only multiplied and one of long bags
    only divided.
    """
    lengths = [end - start for start, end in zip(offsets, [*offsets[1:], len(ids)], strict=True)]
    sub_offsets, firsts = [], []
    for start, n in zip(offsets, lengths, strict=True):
        firsts.append(len(sub_offsets))
        sub_offsets.append(start)  # the head, then each 8-block
        sub_offsets.extend(range(start + head_length(n), start + n, _BLOCK))
    out = F.embedding_bag(_int64(ids), weight, _int64(sub_offsets), mode="sum")
    if len(sub_offsets) > len(offsets):  # as `combine_sub_sums`
        sub_ids = torch.arange(len(sub_offsets))
        out = F.embedding_bag(sub_ids, out, _int64(firsts), mode="sum")
    if combiner == "sum":
        return out
    scales = _table(combiner, max(lengths), double=weight.dtype == torch.float64)[lengths]
    if min(lengths) < _SHORT:
        out = out * torch.from_numpy(scales[:, 0:1]).to(weight.dtype)
    if max(lengths) >= _SHORT:
        out = out / torch.from_numpy(scales[:, 1:2]).to(weight.dtype)
    return out


def _int64(values: list[int]) -> Tensor:
    """A list as an int64 tensor, through numpy: ~1 us for a few values (`torch.tensor` ~3.5),
    a quarter of `torch.tensor`'s time for thousands."""
    return torch.from_numpy(np.fromiter(values, dtype=np.int64, count=len(values)))
