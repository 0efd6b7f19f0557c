"""The dense head: what it shows is what runs, Keras init, HeadStep (autograd's calls by hand,
bit for bit) and the DropoutMasks stream."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fakenews_pl.nn.head import DenseHead, DropoutMasks, StreamDropout


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


def test_head_is_the_notebooks_with_keras_init() -> None:
    dim = 32
    head = DenseHead(dim, (256, 64), (0.3, 0.2))
    linears = [m for m in head if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(dim, 256), (256, 64), (64, 1)]
    assert [m.p for m in head if isinstance(m, StreamDropout)] == [0.3, 0.2]
    assert sum(isinstance(m, nn.ReLU) for m in head) == 2
    for layer in linears:
        bound = math.sqrt(6 / (layer.in_features + layer.out_features))  # glorot_uniform
        assert torch.all(layer.bias == 0)
        assert layer.weight.abs().max() <= bound
    # U(-b, b) has std b / sqrt(3); the 256 x 64 layer has 16k draws.
    big = linears[1]
    bound = math.sqrt(6 / (256 + 64))
    assert abs(big.weight.std().item() - bound / math.sqrt(3)) < 0.02 * bound


def test_print_shows_what_runs_and_dropout_p_takes_effect() -> None:
    torch.manual_seed(0)
    head = DenseHead(8, (16, 4), (0.3, 0.2))
    text = repr(head)
    assert "StreamDropout(p=0.3)" in text and "StreamDropout(p=0.2)" in text
    # Parameter names are those of the nn.Sequential (checkpoints of earlier versions load).
    assert list(head.state_dict()) == [f"{i}.{n}" for i in (0, 3, 6) for n in ("weight", "bias")]
    calls = []
    for layer in head:
        layer.register_forward_hook(lambda m, i, o: calls.append(type(m).__name__))
    head.train()(torch.randn(5, 8))
    assert calls == ["Linear", "ReLU", "StreamDropout"] * 2 + ["Linear"]  # every layer runs
    head[2].p = 0.9  # the first dropout, as print(head) numbers it
    head.masks.reset()
    first, _ = head.masks.take(4096, torch.zeros(1))
    assert abs((first == 0).float().mean().item() - 0.9) < 0.02
    head.eval()
    x = torch.randn(3, 8)
    assert torch.equal(head(x), head(x))  # no dropout in evaluation


@pytest.mark.parametrize("rows", [1, 3, 16])
def test_eval_logits_are_the_eval_forward_bit_for_bit(rows: int) -> None:
    head, x, _ = _head_and_batch(2, rows)
    head.eval()
    with torch.no_grad():
        expected, got = head(x), head.eval_logits(x)
    assert got.shape == expected.shape == (rows,)
    assert torch.equal(got.view(torch.int32), expected.view(torch.int32))
