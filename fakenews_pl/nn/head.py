"""The notebook's dense head, and a training step for it that skips autograd's per-call cost.

    (B, D) -> Dense 256 ReLU -> Dropout 0.3 -> Dense 64 ReLU -> Dropout 0.2 -> Dense 1 -> (B,)

A frozen epoch is 443 steps of 32 rows through a 50k-parameter head: each step is a few
microseconds of arithmetic wrapped in autograd, optimizer and Lightning bookkeeping that costs
far more. `HeadStep` does the forward and the backward of one minibatch as the same ATen calls
autograd makes (the gradients are bit-identical, tested); `fakenews_pl.nn.optim` steps Adam.
Dropout masks come from one `DropoutMasks` stream in both paths, so autograd's forward and
`HeadStep` use the same ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fakenews_pl.data.batches import epoch_seed


class DropoutMasks:
    """Inverted-dropout masks (1/(1-p) where kept, with probability 1-p, else 0) for the
    training rows in the order they are used, `chunk_rows` rows at a time.

    One draw per chunk is much cheaper than one per minibatch (NumPy's PCG64 also draws
    uniforms at twice the rate of torch's CPU generator); each chunk's seed comes from torch's
    generator, so `seed_everything` fixes the masks. `take` never splits a minibatch across
    chunks (the rest of a chunk is dropped), so any sequence of `take` sizes after `reset`
    gets the same masks however the minibatches are stepped through.
    """

    def __init__(
        self, widths: Sequence[int], rates: Sequence[float | nn.Module], chunk_rows: int = 8192
    ) -> None:
        self.widths, self._rates, self.chunk_rows = tuple(widths), tuple(rates), chunk_rows
        self.rates  # noqa: B018 (reading the rates validates them)
        self.reset()

    @property
    def rates(self) -> tuple[float, ...]:
        """The rate of each layer: a number, or the `p` of a dropout module (read per draw)."""
        rates = tuple(float(getattr(r, "p", r)) for r in self._rates)
        if not all(0 <= p < 1 for p in rates):
            raise ValueError(f"dropout rates must be in [0, 1), got {list(rates)}")
        return rates

    def reset(self, seed: int | None = None) -> None:
        """Start from a fresh chunk (each training epoch does). With `seed`, the k-th chunk's
        masks depend on (seed, k) alone (the model passes one per epoch, so a resumed run
        draws the masks of the run it continues); without, on torch's global generator."""
        self._chunk: list[Tensor | None] = []
        self._next = self._rows = 0
        self._seed, self._chunks = seed, 0

    def take(self, rows: int, like: Tensor) -> list[Tensor | None]:
        """One (rows, width) mask per layer (None where the rate is 0), on `like`'s device."""
        if self._next + rows > self._rows:
            self._draw(max(rows, self.chunk_rows), like)
        start, self._next = self._next, self._next + rows
        return [None if m is None else m[start : self._next] for m in self._chunk]

    def _draw(self, rows: int, like: Tensor) -> None:
        if self._seed is None:
            seed = int(torch.randint(2**62, (1,)))
        else:
            seed = epoch_seed(self._seed, self._chunks)
        self._chunks += 1
        rng = np.random.default_rng(seed)
        self._chunk = []
        for width, p in zip(self.widths, self.rates, strict=True):
            if p <= 0:
                self._chunk.append(None)
                continue
            uniform = torch.from_numpy(rng.random((rows, width), dtype=np.float32))
            mask = uniform.ge_(p).div_(1 - p).to(device=like.device, dtype=like.dtype)
            self._chunk.append(mask)
        self._next, self._rows = 0, rows


class StreamDropout(nn.Module):
    """Inverted dropout at rate `p` whose masks come from the head's `DropoutMasks` stream
    (one draw for every layer and many minibatches); `p` is read at each draw."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """x times its mask (1/(1-p) where kept, else 0); no mask (evaluation): x."""
        return x if mask is None else x * mask

    def extra_repr(self) -> str:
        """What print shows: the rate."""
        return f"p={self.p}"


class DenseHead(nn.Sequential):
    """Dense+ReLU+Dropout per hidden size, then Dense(1): logits of the positive class.

    Keras-initialised (glorot-uniform weights, zero biases). `forward` calls each layer in
    order (what `print` shows is what runs); in training the dropout layers take their masks
    from `self.masks` (see `DropoutMasks`).
    """

    def __init__(self, dim: int, hidden_sizes: Sequence[int], dropouts: Sequence[float]) -> None:
        layers: list[nn.Module] = []
        for width, p in zip(hidden_sizes, dropouts, strict=True):
            layers += [nn.Linear(dim, width), nn.ReLU(), StreamDropout(p)]
            dim = width
        layers.append(nn.Linear(dim, 1))
        super().__init__(*layers)
        for layer in self.linears:
            nn.init.xavier_uniform_(layer.weight)  # = Keras glorot_uniform
            nn.init.zeros_(layer.bias)
        drops = [layer for layer in self if isinstance(layer, StreamDropout)]
        self.masks = DropoutMasks(hidden_sizes, drops)

    @property
    def linears(self) -> list[nn.Linear]:
        """The dense layers, input to output."""
        return [layer for layer in self if isinstance(layer, nn.Linear)]

    def forward(self, x: Tensor) -> Tensor:
        """(B, D) -> (B,) logits (autograd path)."""
        masks = iter(self.masks.take(len(x), x) if self.training else [])
        for layer in self:
            x = layer(x, next(masks, None)) if isinstance(layer, StreamDropout) else layer(x)
        return x.squeeze(-1)

    def eval_logits(self, x: Tensor) -> Tensor:
        """(B, D) -> (B,) logits in evaluation (no dropout), bit for bit `forward`'s: the same
        `F.linear` and ReLU calls on the layers' parameters, without `nn.Module.__call__`
        around each of the six layers (~15 us of a single text's ~0.13 ms `predict_proba`)."""
        *hidden, last = self.linears
        for layer in hidden:
            x = F.linear(x, layer.weight, layer.bias).relu_()
        return F.linear(x, last.weight, last.bias).squeeze(-1)

    def stepper(self) -> HeadStep:
        """A `HeadStep` over the current parameters (build one per epoch)."""
        return HeadStep(self)


class HeadStep:
    """Forward and backward of `binary_cross_entropy_with_logits(head(x), labels)` (mean)
    for one minibatch, without autograd.

    Writes every parameter's `.grad` in place (allocating it on first use) and returns the
    (B,) logits and, with `input_grad`, d loss / d x for the layers below. The calls are
    autograd's own for `F.linear` (addmm forward; the gradient times the weight, and its
    transpose times the input), ReLU (threshold_backward on the output), the mask product and
    BCE-with-logits ((sigmoid(z) - y) / B), in its order, so the gradients equal autograd's
    bit for bit (tested).
    """

    def __init__(self, head: DenseHead) -> None:
        *hidden, last = head.linears
        self.hidden = [(layer.weight, layer.bias) for layer in hidden]
        self.last = (last.weight, last.bias)
        self.masks = head.masks

    def __call__(self, x: Tensor, labels: Tensor, input_grad: bool = False):
        """(B,) logits and, with `input_grad`, (B, D) d loss / d x; parameter `.grad`s written."""
        with torch.no_grad():
            return self._step(x, labels, input_grad)

    def _step(self, x: Tensor, labels: Tensor, input_grad: bool) -> tuple[Tensor, Tensor | None]:
        inputs, relus = [], []
        masks = self.masks.take(len(x), x)
        for (weight, bias), mask in zip(self.hidden, masks, strict=True):
            inputs.append(x)
            relu = torch.addmm(bias, x, weight.t()).relu_()
            relus.append(relu)
            x = relu if mask is None else relu * mask
        weight, bias = self.last
        logits = torch.addmm(bias, x, weight.t())  # (B, 1)
        grad = torch.sigmoid(logits).sub_(labels.unsqueeze(1)).div_(len(logits))
        _set_grads(weight, bias, grad, x)
        for i in range(len(self.hidden) - 1, -1, -1):
            grad = torch.mm(grad, weight)
            if masks[i] is not None:
                grad = grad * masks[i]
            grad = torch.ops.aten.threshold_backward(grad, relus[i], 0)
            weight, bias = self.hidden[i]
            _set_grads(weight, bias, grad, inputs[i])
        if input_grad:
            return logits.squeeze(1), torch.mm(grad, weight)
        return logits.squeeze(1), None


def _set_grads(weight: Tensor, bias: Tensor, grad: Tensor, layer_input: Tensor) -> None:
    """d/dW = grad^T @ input and d/db = sum over rows, as autograd computes them."""
    if weight.grad is None:
        weight.grad = torch.mm(grad.t(), layer_input)
        bias.grad = grad.sum(0)
    else:
        torch.mm(grad.t(), layer_input, out=weight.grad)
        torch.sum(grad, 0, out=bias.grad)
