"""The optimizer steps against the library's, bit for bit: AdamStep vs Adam.step,
RowSparseAdam vs SparseAdam."""

import pytest
import torch

from fakenews_pl.optim import AdamStep, RowSparseAdam, TouchedRowAdam, stepper


def _parameters(seed: int) -> list[torch.nn.Parameter]:
    """Head-like parameters: two weight matrices and their biases."""
    generator = torch.Generator().manual_seed(seed)
    shapes = [(16, 12), (16,), (1, 16), (1,)]
    return [torch.nn.Parameter(torch.randn(s, generator=generator)) for s in shapes]


def test_adam_step_equals_adam_step_bit_for_bit() -> None:
    heads = [_parameters(4) for _ in range(2)]
    optimizers = [torch.optim.Adam(h, lr=1e-3, eps=1e-7, fused=True) for h in heads]
    generator = torch.Generator().manual_seed(5)
    grads = [[torch.randn(p.shape, generator=generator) for p in heads[0]] for _ in range(6)]
    fast = None
    for step_grads in grads:
        for head in heads:
            for p, g in zip(head, step_grads, strict=True):
                if p.grad is None:
                    p.grad = g.clone()
                else:
                    p.grad.copy_(g)
        optimizers[0].step()
        if fast is None:
            optimizers[1].step()  # creates the state AdamStep runs on
            fast = stepper(optimizers[1])
            assert isinstance(fast, AdamStep)
        else:
            fast()
    for a, b in zip(heads[0], heads[1], strict=True):
        assert torch.equal(a, b)
    for a, b in zip(optimizers[0].state.values(), optimizers[1].state.values(), strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_stepper_falls_back_to_step_without_state() -> None:
    head = _parameters(6)
    optimizer = torch.optim.Adam(head)
    assert stepper(optimizer) == optimizer.step
    with pytest.raises(ValueError, match="call optimizer.step"):
        AdamStep(optimizer)
    for p in head:
        p.grad = torch.zeros_like(p)
    assert stepper(optimizer) == optimizer.step  # gradients but no state yet
    optimizer.step()
    assert isinstance(stepper(optimizer), AdamStep)


@pytest.mark.parametrize("maximize", [False, True])
def test_row_sparse_adam_equals_sparse_adam_bit_for_bit(maximize: bool) -> None:
    rows, dim = 50, 6
    torch.manual_seed(7)
    weights = [torch.nn.Parameter(torch.randn(rows, dim)) for _ in range(2)]
    weights[1].data.copy_(weights[0].data)
    reference = torch.optim.SparseAdam([weights[0]], lr=1e-2, eps=1e-7, maximize=maximize)
    ours = RowSparseAdam([weights[1]], lr=1e-2, eps=1e-7, maximize=maximize)
    for _ in range(5):
        ids = torch.randint(0, 20, (30,))  # repeated rows: the gradient is uncoalesced
        grad = torch.sparse_coo_tensor(
            ids[None], torch.randn(30, dim), (rows, dim), check_invariants=True
        )
        for weight, optimizer in zip(weights, (reference, ours), strict=True):
            weight.grad = grad.clone()
            optimizer.step()
    assert torch.equal(weights[0], weights[1])
    state_ref, state_ours = reference.state[weights[0]], ours.state[weights[1]]
    assert state_ref["step"] == state_ours["step"] == 5
    assert torch.equal(state_ref["exp_avg"], state_ours["exp_avg"])
    assert torch.equal(state_ref["exp_avg_sq"], state_ours["exp_avg_sq"])
    untouched = torch.ones(rows, dtype=torch.bool)
    untouched[:20] = False
    assert torch.equal(state_ours["exp_avg"][untouched], torch.zeros(30, dim))


def test_row_sparse_adam_refuses_dense_gradients() -> None:
    weight = torch.nn.Parameter(torch.zeros(3, 2))
    weight.grad = torch.ones(3, 2)
    with pytest.raises(RuntimeError, match="dense gradients"):
        RowSparseAdam([weight]).step()


def _touch_schedule(rows: int, steps: int, seed: int) -> list[torch.Tensor]:
    """Per step, the (repeated) row ids a batch uses: few rows early, new rows first used late."""
    generator = torch.Generator().manual_seed(seed)
    schedule = []
    for step in range(steps):
        upper = min(rows, 4 + 6 * step)  # the vocabulary in use grows: rows first touched late
        ids = torch.randint(0, upper, (12,), generator=generator)
        schedule.append(torch.cat([ids, ids[:4]]))  # repeated rows within a batch
    return schedule


def _sparse_grad(table: torch.Tensor, ids: torch.Tensor, seed: int) -> torch.Tensor:
    """The sparse gradient `nn.EmbeddingBag(sparse=True)` gives for a random upstream gradient."""
    leaf = table.detach().requires_grad_()
    bag = torch.nn.functional.embedding_bag(
        ids, leaf, torch.tensor([0, 5, 9]), mode="sum", sparse=True
    )
    bag.backward(torch.randn(bag.shape, generator=torch.Generator().manual_seed(seed)))
    return leaf.grad


@pytest.mark.parametrize(
    ("rows", "dim", "fused"), [(60, 128, True), (41, 250, True), (37, 7, False)]
)
def test_touched_row_adam_equals_adam_over_the_whole_table(
    rows: int, dim: int, fused: bool
) -> None:
    torch.manual_seed(rows)
    start = torch.randn(rows, dim)
    dense = torch.nn.Parameter(start.clone())
    ours = torch.nn.Parameter(start.clone())
    reference = torch.optim.Adam([dense], lr=1e-2, eps=1e-7, fused=fused)
    optimizer = TouchedRowAdam([ours], lr=1e-2, eps=1e-7, fused=fused)
    for step, ids in enumerate(_touch_schedule(rows, 12, seed=dim)):
        grad = _sparse_grad(start, ids, seed=step)
        dense.grad = grad.to_dense()  # what the dense backward gives, bit for bit
        ours.grad = grad
        reference.step()
        optimizer.step()
        if step % 3 == 0:  # a lookup of some rows writes just those (others stay lazy)
            optimizer.sync(ours, ids)
            assert torch.equal(ours[ids], dense[ids]), step
        else:
            optimizer.sync()
            assert torch.equal(ours, dense), step
    state, reference_state = optimizer.state[ours], reference.state[dense]
    touched = state["rows"]
    assert len(touched) < rows  # some rows were never touched: never read nor written
    assert torch.equal(state["step"], reference_state["step"])
    assert torch.equal(state["exp_avg"], reference_state["exp_avg"][touched])
    assert torch.equal(state["exp_avg_sq"], reference_state["exp_avg_sq"][touched])
    untouched = torch.ones(rows, dtype=torch.bool)
    untouched[touched] = False
    assert not reference_state["exp_avg"][untouched].any()  # the premise: zero moments there
    assert torch.equal(dense[untouched], start[untouched])


def _steps(param, optimizer, start, schedule, first: int = 0) -> None:
    """One optimizer step per scheduled batch; batch k's gradient is seeded by k + `first`."""
    for step, ids in enumerate(schedule, start=first):
        param.grad = _sparse_grad(start, ids, seed=step)
        optimizer.step()


def _saved_and_reloaded(path, param, optimizer) -> dict:
    """Table and optimizer state through torch.save and a `weights_only` load, as in a
    checkpoint (`state_dict` first: it may write moved rows into the table)."""
    state = optimizer.state_dict()
    torch.save({"table": param.detach(), "optimizer": state}, path)
    return torch.load(path, weights_only=True)


def test_touched_row_adam_resumes_mid_run_exactly(tmp_path) -> None:
    rows, dim = 50, 16
    start = torch.randn(rows, dim)
    schedule = _touch_schedule(rows, 10, seed=3)
    whole = torch.nn.Parameter(start.clone())
    optimizer = TouchedRowAdam([whole], lr=1e-2, eps=1e-7)
    _steps(whole, optimizer, start, schedule)
    first = torch.nn.Parameter(start.clone())
    before = TouchedRowAdam([first], lr=1e-2, eps=1e-7)
    _steps(first, before, start, schedule[:4])
    saved = _saved_and_reloaded(tmp_path / "c.pt", first, before)
    assert saved["optimizer"]["state"][0]["rows"].dtype == torch.int64
    assert saved["optimizer"]["state"][0]["exp_avg"].shape[0] < rows  # touched rows only
    resumed = torch.nn.Parameter(saved["table"].clone())
    after = TouchedRowAdam([resumed], lr=1e-2, eps=1e-7)
    after.load_state_dict(saved["optimizer"])
    _steps(resumed, after, start, schedule[4:], first=4)
    after.sync()
    optimizer.sync()
    assert torch.equal(resumed, whole)


def test_touched_row_adam_takes_dense_gradients_too() -> None:
    start = torch.randn(30, 8)
    a, b = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    sparse, dense = TouchedRowAdam([a], lr=1e-2), TouchedRowAdam([b], lr=1e-2)
    for step, ids in enumerate(_touch_schedule(30, 6, seed=1)):
        grad = _sparse_grad(start, ids, seed=step)
        a.grad, b.grad = grad, grad.to_dense()
        sparse.step()
        dense.step()
    sparse.sync()
    dense.sync()
    assert torch.equal(a, b)


def test_row_sparse_adam_saves_touched_rows_only_and_resumes_exactly(tmp_path) -> None:
    rows, dim = 40, 6
    start = torch.randn(rows, dim)
    schedule = _touch_schedule(rows, 8, seed=9)
    whole = torch.nn.Parameter(start.clone())
    reference = torch.optim.SparseAdam([whole], lr=1e-2, eps=1e-7)
    _steps(whole, reference, start, schedule)
    first = torch.nn.Parameter(start.clone())
    before = RowSparseAdam([first], lr=1e-2, eps=1e-7)
    _steps(first, before, start, schedule[:3])
    saved = _saved_and_reloaded(tmp_path / "c.pt", first, before)
    state = saved["optimizer"]["state"][0]
    touched = torch.cat(schedule[:3]).unique()
    assert torch.equal(state["rows"], touched) and state["exp_avg"].shape == (len(touched), dim)
    resumed = torch.nn.Parameter(saved["table"].clone())
    after = RowSparseAdam([resumed], lr=1e-2, eps=1e-7)
    after.load_state_dict(saved["optimizer"])
    _steps(resumed, after, start, schedule[3:], first=3)
    assert torch.equal(resumed, whole)  # = torch's SparseAdam, never interrupted
    for key in ("exp_avg", "exp_avg_sq"):
        assert torch.equal(after.state[resumed][key], reference.state[whole][key])
