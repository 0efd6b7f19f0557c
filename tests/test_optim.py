"""The optimizer steps against the library's, bit for bit: AdamStep vs Adam.step,
RowSparseAdam vs SparseAdam."""

import pytest
import torch

from fakenews_pl.optim import AdamStep, RowSparseAdam, stepper


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
