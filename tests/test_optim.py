"""The hand-stepped training path against the library path it replaces, bit for bit:
HeadStep vs autograd, AdamStep vs Adam.step, RowSparseAdam vs SparseAdam; DropoutMasks."""

import pytest
import torch
import torch.nn.functional as F

from fakenews_pl.head import DenseHead, DropoutMasks
from fakenews_pl.optim import AdamStep, RowSparseAdam, stepper


def _head_and_batch(seed: int, rows: int = 20, dim: int = 12):
    torch.manual_seed(seed)
    head = DenseHead(dim, (16, 8), (0.3, 0.2))
    for layer in head.linears:  # non-zero biases exercise the bias gradients
        torch.nn.init.uniform_(layer.bias, -0.5, 0.5)
    x = torch.randn(rows, dim)
    labels = (torch.rand(rows) > 0.5).float()
    return head, x, labels


@pytest.mark.parametrize("rows", [32, 20, 1])
def test_head_step_equals_autograd_bit_for_bit(rows: int) -> None:
    head, x, labels = _head_and_batch(0, rows)
    head.train()
    x_auto = x.clone().requires_grad_()
    head.masks.reset()
    torch.manual_seed(1)
    loss = F.binary_cross_entropy_with_logits(head(x_auto), labels)
    loss.backward()
    expected = {name: p.grad.clone() for name, p in head.named_parameters()}
    auto_logits = head(x).detach()  # (a second draw of masks: only its shape matters)
    head.zero_grad()

    head.masks.reset()
    torch.manual_seed(1)
    logits, grad_x = head.stepper()(x, labels, input_grad=True)
    assert logits.shape == auto_logits.shape
    assert torch.equal(grad_x, x_auto.grad)
    for name, p in head.named_parameters():
        assert torch.equal(p.grad, expected[name]), name
    # A second step writes the gradients in place, into the same tensors.
    before = {name: p.grad for name, p in head.named_parameters()}
    head.stepper()(x, labels)
    assert all(p.grad is before[name] for name, p in head.named_parameters())


def test_head_step_logits_are_the_forward_logits() -> None:
    head, x, labels = _head_and_batch(2)
    head.masks.reset()
    torch.manual_seed(3)
    with torch.no_grad():
        forward = head(x)
    head.masks.reset()
    torch.manual_seed(3)
    logits, grad_x = head.stepper()(x, labels)
    assert torch.equal(logits, forward) and grad_x is None


def test_adam_step_equals_adam_step_bit_for_bit() -> None:
    heads = [_head_and_batch(4)[0] for _ in range(2)]
    optimizers = [torch.optim.Adam(h.parameters(), lr=1e-3, eps=1e-7, fused=True) for h in heads]
    generator = torch.Generator().manual_seed(5)
    grads = [
        [torch.randn(p.shape, generator=generator) for p in heads[0].parameters()] for _ in range(6)
    ]
    fast = None
    for step_grads in grads:
        for head in heads:
            for p, g in zip(head.parameters(), step_grads, strict=True):
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
    for a, b in zip(heads[0].parameters(), heads[1].parameters(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(optimizers[0].state.values(), optimizers[1].state.values(), strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_stepper_falls_back_to_step_without_state() -> None:
    head = _head_and_batch(6)[0]
    optimizer = torch.optim.Adam(head.parameters())
    assert stepper(optimizer) == optimizer.step
    with pytest.raises(ValueError, match="call optimizer.step"):
        AdamStep(optimizer)
    for p in head.parameters():
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


def test_dropout_masks_do_not_depend_on_how_rows_are_taken() -> None:
    like = torch.zeros(1)
    draws = []
    for sizes in ([32] * 10, [320], [5, 27, 100, 188]):
        masks = DropoutMasks((16, 8), (0.3, 0.0), chunk_rows=512)
        torch.manual_seed(8)
        parts = [masks.take(n, like) for n in sizes]
        assert all(part[1] is None for part in parts)
        draws.append(torch.cat([part[0] for part in parts]))
    assert torch.equal(draws[0], draws[1]) and torch.equal(draws[0], draws[2])


def test_dropout_masks_keep_with_probability_one_minus_p_and_rescale() -> None:
    masks = DropoutMasks((256,), (0.3,), chunk_rows=4096)
    torch.manual_seed(9)
    (mask,) = masks.take(4096, torch.zeros(1))
    assert mask.unique().tolist() == [0.0, pytest.approx(1 / 0.7)]
    kept = (mask > 0).float().mean().item()
    assert abs(kept - 0.7) < 0.005  # 1M draws: std 0.00045
    # Rows past a chunk come from a fresh chunk; a reset starts over from the seed state.
    masks.reset()
    torch.manual_seed(9)
    (again,) = masks.take(4096, torch.zeros(1))
    assert torch.equal(mask, again)


def test_dropout_rates_outside_zero_one_are_refused() -> None:
    with pytest.raises(ValueError, match=r"dropout rates must be in \[0, 1\), got \[0.3, 1.0\]"):
        DenseHead(4, (8, 8), (0.3, 1.0))
