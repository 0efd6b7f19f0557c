"""The optimizer steps against the library's, bit for bit: AdamStep vs Adam.step,
RowSparseAdam vs SparseAdam, KerasAdam vs tf.keras's update written out in NumPy (and against
TensorFlow itself in tests/test_lockstep.py)."""

import math

import numpy as np
import pytest
import torch

from fakenews_pl.nn.optim import (
    AdamStep,
    KerasAdam,
    RowSparseAdam,
    TouchedRowAdam,
    ieee_sqrt,
    keras_alpha,
    stepper,
)

# The equalities below also hold on a CUDA GPU, where one is present (benchmarks/gpu_check.sh).
DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
    ),
]


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


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("maximize", [False, True])
def test_row_sparse_adam_equals_sparse_adam_bit_for_bit(maximize: bool, device: str) -> None:
    rows, dim = 50, 6
    torch.manual_seed(7)
    weights = [torch.nn.Parameter(torch.randn(rows, dim, device=device)) for _ in range(2)]
    weights[1].data.copy_(weights[0].data)
    reference = torch.optim.SparseAdam([weights[0]], lr=1e-2, eps=1e-7, maximize=maximize)
    ours = RowSparseAdam([weights[1]], lr=1e-2, eps=1e-7, maximize=maximize)
    for _ in range(5):
        ids = torch.randint(0, 20, (30,))  # repeated rows: the gradient is uncoalesced
        grad = torch.sparse_coo_tensor(
            ids[None], torch.randn(30, dim), (rows, dim), check_invariants=True
        ).to(device)
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
    assert torch.equal(state_ours["exp_avg"][untouched], torch.zeros(30, dim, device=device))


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


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    ("rows", "dim", "fused"), [(60, 128, True), (41, 250, True), (37, 7, False)]
)
def test_touched_row_adam_equals_adam_over_the_whole_table(
    rows: int, dim: int, fused: bool, device: str
) -> None:
    torch.manual_seed(rows)
    start = torch.randn(rows, dim)
    dense = torch.nn.Parameter(start.clone().to(device))
    ours = torch.nn.Parameter(start.clone().to(device))
    reference = torch.optim.Adam([dense], lr=1e-2, eps=1e-7, fused=fused)
    optimizer = TouchedRowAdam([ours], lr=1e-2, eps=1e-7, fused=fused)
    for step, ids in enumerate(_touch_schedule(rows, 12, seed=dim)):
        grad = _sparse_grad(start, ids, seed=step).to(device)
        ids = ids.to(device)
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
    assert torch.equal(dense[untouched].cpu(), start[untouched.cpu()])


def _steps(param, optimizer, start, schedule, first: int = 0, dense: bool = False) -> None:
    """One optimizer step per scheduled batch; batch k's gradient is seeded by k + `first`."""
    for step, ids in enumerate(schedule, start=first):
        grad = _sparse_grad(start, ids, seed=step)
        param.grad = grad.to_dense() if dense else grad
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


# ---------------------------------------------------------------- tf.keras's Adam (keras_adam)

F32 = np.float32


def _keras_numpy_step(var, grad, m, v, step, rows=None, lr=1e-4, eps=1e-7) -> None:
    """tf_keras 2.x `Adam.update_step` written out in float32 NumPy (its sqrt is IEEE's), in
    place: the dense branch, or with `rows` the `tf.IndexedSlices` branch (`grad` holds the
    rows' values)."""
    alpha = F32(keras_alpha(lr, 0.9, 0.999, step))
    if rows is None:
        m += (grad - m) * F32(1 - 0.9)
        v += (np.square(grad) - v) * F32(1 - 0.999)
    else:
        m += -m * F32(1 - 0.9)
        m[rows] += grad * F32(1 - 0.9)  # rows are unique
        v += -v * F32(1 - 0.999)
        v[rows] += np.square(grad) * F32(1 - 0.999)
    var -= (m * alpha) / (np.sqrt(v) + F32(eps))


def _spread_grads(shape, steps: int, seed: int) -> list[np.ndarray]:
    """Gradients from 1e-9 to 1e-2: where epsilon's placement matters and where it does not."""
    rng = np.random.default_rng(seed)
    return [
        (rng.normal(size=shape) * 10.0 ** rng.uniform(-9, -2, size=shape)).astype(F32)
        for _ in range(steps)
    ]


def test_keras_alpha_is_kerass_float32_step_size() -> None:
    for step in (1, 2, 10, 443, 10_000):
        exact = 1e-4 * math.sqrt(1 - 0.999**step) / (1 - 0.9**step)
        # float32 betas: 1 - float32(0.999) is 1.3e-5 off 0.001 (relative), as in Keras
        assert keras_alpha(1e-4, 0.9, 0.999, step) == pytest.approx(exact, rel=1e-4)
        assert F32(keras_alpha(1e-4, 0.9, 0.999, step)) == keras_alpha(1e-4, 0.9, 0.999, step)


def test_ieee_sqrt_is_correctly_rounded() -> None:
    rng = np.random.default_rng(0)
    x = (rng.random(100_000) * 10.0 ** rng.uniform(-30, 3, 100_000)).astype(F32)
    # float64's sqrt of a float32 rounded to float32 is the correctly rounded float32 root.
    assert np.array_equal(
        ieee_sqrt(torch.from_numpy(x)).numpy(), np.sqrt(x.astype(np.float64)).astype(F32)
    )


def test_keras_adam_equals_kerass_update_bit_for_bit() -> None:
    shapes = [(16, 12), (16,), (1, 16), (1,)]
    start = [
        np.random.default_rng(i).normal(size=s).astype(F32) * 0.1 for i, s in enumerate(shapes)
    ]
    params = [torch.nn.Parameter(torch.from_numpy(w.copy())) for w in start]
    optimizer = KerasAdam(params, lr=1e-4, eps=1e-7)
    reference = [(w.copy(), np.zeros_like(w), np.zeros_like(w)) for w in start]
    grads = [_spread_grads(s, 40, seed=i) for i, s in enumerate(shapes)]
    fast = None
    for step in range(40):
        for p, g in zip(params, grads, strict=True):
            p.grad = torch.from_numpy(g[step])
        if fast is None:
            optimizer.step()
            fast = stepper(optimizer)
            assert fast == optimizer.update
        else:
            fast()
        for (var, m, v), g in zip(reference, grads, strict=True):
            _keras_numpy_step(var, g[step], m, v, step + 1)
    for p, (var, m, v) in zip(params, reference, strict=True):
        assert np.array_equal(p.detach().numpy(), var)
        state = optimizer.state[p]
        assert np.array_equal(state["exp_avg"].numpy(), m)
        assert np.array_equal(state["exp_avg_sq"].numpy(), v)
        assert state["step"] == 40


def test_keras_adam_is_not_torchs_adam() -> None:
    """Keras adds epsilon to sqrt(v), torch to sqrt(v / (1 - beta2^t)): at the first step a
    gradient of 1e-6 moves a weight by lr * 1e-6 / (1e-6 + 1e-7 / sqrt(0.001)) = 0.24 lr in
    Keras and by lr * 1e-6 / (1e-6 + 1e-7) = 0.91 lr in torch."""
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    a.grad = b.grad = torch.full((1,), 1e-6)
    KerasAdam([a], lr=1e-4, eps=1e-7).step()
    torch.optim.Adam([b], lr=1e-4, eps=1e-7).step()
    assert -a.item() == pytest.approx(1e-4 * 1e-6 / (1e-6 + 1e-7 / math.sqrt(1e-3)), rel=1e-5)
    assert -b.item() == pytest.approx(1e-4 * 1e-6 / (1e-6 + 1e-7), rel=1e-5)


def test_keras_adam_takes_a_tables_row_gradients_as_keras_does() -> None:
    rows, dim = 40, 6
    start = np.random.default_rng(1).normal(size=(rows, dim)).astype(F32)
    table = torch.nn.Parameter(torch.from_numpy(start.copy()))
    optimizer = KerasAdam([table], lr=1e-4, eps=1e-7, row_gradients=True)
    var, m, v = start.copy(), np.zeros_like(start), np.zeros_like(start)
    for step, ids in enumerate(_touch_schedule(rows, 12, seed=2)):
        grad = _sparse_grad(torch.from_numpy(start), ids, seed=step).coalesce()
        table.grad = grad.to_dense()
        optimizer.step()
        touched = grad._indices()[0].numpy()
        _keras_numpy_step(var, grad._values().numpy(), m, v, step + 1, rows=touched)
    assert np.array_equal(table.detach().numpy(), var)
    assert np.array_equal(optimizer.state[table]["exp_avg"].numpy(), m)


@pytest.mark.parametrize(("rows", "dim"), [(60, 128), (37, 7)])
def test_touched_row_keras_adam_equals_keras_adam_over_the_whole_table(rows, dim) -> None:
    torch.manual_seed(rows)
    start = torch.randn(rows, dim)
    dense, ours = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    reference = KerasAdam([dense], lr=1e-2, eps=1e-7, row_gradients=True)
    optimizer = TouchedRowAdam([ours], lr=1e-2, eps=1e-7, arithmetic="keras")
    for step, ids in enumerate(_touch_schedule(rows, 12, seed=dim)):
        grad = _sparse_grad(start, ids, seed=step)
        dense.grad, ours.grad = grad.to_dense(), grad
        reference.step()
        optimizer.step()
        optimizer.sync()
        assert torch.equal(ours, dense), step
    state, reference_state = optimizer.state[ours], reference.state[dense]
    touched = state["rows"]
    assert len(touched) < rows and int(state["step"]) == int(reference_state["step"]) == 12
    assert torch.equal(state["exp_avg_sq"], reference_state["exp_avg_sq"][touched])
    untouched = torch.ones(rows, dtype=torch.bool)
    untouched[touched] = False
    assert torch.equal(dense[untouched], start[untouched])  # Keras never moves them either
    with pytest.raises(ValueError, match="arithmetic"):
        TouchedRowAdam([ours], arithmetic="tf")


@pytest.mark.parametrize("touched", [False, True])
def test_keras_adam_resumes_mid_run_exactly(touched: bool, tmp_path) -> None:
    rows, dim = 50, 16
    start = torch.randn(rows, dim)
    schedule = _touch_schedule(rows, 10, seed=3)

    def make(param):
        if touched:
            return TouchedRowAdam([param], lr=1e-2, eps=1e-7, arithmetic="keras")
        return KerasAdam([param], lr=1e-2, eps=1e-7, row_gradients=True)

    whole = torch.nn.Parameter(start.clone())
    optimizer = make(whole)
    _steps(whole, optimizer, start, [ids for ids in schedule], dense=not touched)
    first = torch.nn.Parameter(start.clone())
    before = make(first)
    _steps(first, before, start, schedule[:4], dense=not touched)
    saved = _saved_and_reloaded(tmp_path / "c.pt", first, before)
    resumed = torch.nn.Parameter(saved["table"].clone())
    after = make(resumed)
    after.load_state_dict(saved["optimizer"])
    _steps(resumed, after, start, schedule[4:], first=4, dense=not touched)
    for o in (after, optimizer):
        if touched:
            o.sync()
    assert torch.equal(resumed, whole)
