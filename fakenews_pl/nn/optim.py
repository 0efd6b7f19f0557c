"""Optimizer steps for many small minibatches: the same updates with less work per call.

`AdamStep` is `torch.optim.Adam.step` as its one functional call on the optimizer's own state
(no per-call bookkeeping). `RowSparseAdam` is `torch.optim.SparseAdam` with each update done on
the gradient's rows by index_select/index_add_ instead of sparse-tensor masks and additions:
the same arithmetic in the same order (bit-identical, tested), at a fraction of the cost on CPU.
`KerasAdam` (and `TouchedRowAdam(arithmetic="keras")` for a table) is the notebook's optimizer,
tf.keras's Adam, op for op: `model.optimizer=keras_adam`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch.optim.adam import adam as functional_adam


class AdamStep:
    """`optimizer.step()` of a `torch.optim.Adam` whose state exists, as one functional call.

    The same `torch.optim.adam.adam` the optimizer calls, on its parameters, gradients and
    state tensors (updated in place), without the per-call bookkeeping of `Optimizer.step`.
    Valid while the gradient tensors stay the ones it was built over (written in place).
    """

    def __init__(self, optimizer: torch.optim.Adam) -> None:
        if len(optimizer.param_groups) != 1:
            raise ValueError(
                f"AdamStep takes one parameter group, got {len(optimizer.param_groups)}"
            )
        if not _stepped(optimizer):
            raise ValueError(
                "AdamStep needs every parameter's gradient and Adam state: call optimizer.step() "
                "first"
            )
        group = optimizer.param_groups[0]
        params = group["params"]
        state = [optimizer.state[p] for p in params]
        self.group = group
        self.tensors = (
            params,
            [p.grad for p in params],
            [s["exp_avg"] for s in state],
            [s["exp_avg_sq"] for s in state],
            [s["max_exp_avg_sq"] for s in state] if group["amsgrad"] else [],
            [s["step"] for s in state],
        )
        self.flags = {
            key: group[key]
            for key in (
                "foreach",
                "capturable",
                "differentiable",
                "fused",
                "decoupled_weight_decay",
            )
            if key in group
        }

    def __call__(self) -> None:
        """One Adam step of every parameter, in place."""
        g = self.group
        beta1, beta2 = g["betas"]
        functional_adam(
            *self.tensors,
            **self.flags,
            amsgrad=g["amsgrad"],
            beta1=beta1,
            beta2=beta2,
            lr=g["lr"],
            weight_decay=g["weight_decay"],
            eps=g["eps"],
            maximize=g["maximize"],
        )


def stepper(optimizer: torch.optim.Optimizer) -> Callable[[], None]:
    """The cheapest exact `optimizer.step` for gradients written in place: `AdamStep` for a
    stepped Adam, `KerasAdam.update` for Keras's, else `optimizer.step`."""
    if type(optimizer) is torch.optim.Adam and len(optimizer.param_groups) == 1:
        if _stepped(optimizer):
            return AdamStep(optimizer)
    if isinstance(optimizer, KerasAdam):
        return optimizer.update
    return optimizer.step


def _stepped(optimizer: torch.optim.Optimizer) -> bool:
    """Whether every parameter of the first group has a gradient and optimizer state."""
    params = optimizer.param_groups[0]["params"]
    return all(p.grad is not None and optimizer.state.get(p) for p in params)


class Updating:
    """An optimizer whose `step` is `update` (the same arithmetic without `Optimizer.step`'s
    per-call hooks and profiling, which fused epochs call directly) plus the closure."""

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One update of every parameter with a gradient; returns the closure's loss."""
        loss = _closure_loss(closure)
        self.update()
        return loss

    def update(self) -> None:
        """One update of every parameter with a gradient."""
        raise NotImplementedError


class RowOptimizer(Updating):
    """What the model asks of a table optimizer that works on rows (exact or lazy): `update`,
    `touched_rows` (the rows that may have moved: what a checkpoint keeps of the table) and
    `sync` (write moved rows into the table; nothing to do where updates are written in
    place)."""

    def touched_rows(self, param: torch.Tensor) -> torch.Tensor:
        """(K,) the rows of `param` that have had a gradient."""
        raise NotImplementedError

    def sync(self, param: torch.Tensor | None = None, ids: torch.Tensor | None = None) -> None:
        """Write the current values of moved rows into the table (here: already there)."""


class RowSparseAdam(RowOptimizer, torch.optim.SparseAdam):
    """`torch.optim.SparseAdam` (lazy Adam: only rows with a gradient move) computed on rows.

    Same state (`step`, `exp_avg`, `exp_avg_sq`), same formulas in the same order as
    SparseAdam's functional update; a dense gradient is refused as it is there. A row that
    never had a gradient keeps zero moments and its value, so `state_dict` holds the touched
    rows only (`rows`, (K,) ascending, and their moments) and `load_state_dict` expands them.
    """

    def touched_rows(self, param: torch.Tensor) -> torch.Tensor:
        """(K,) the rows of `param` that have had a gradient (and so may have moved)."""
        state = self.state.get(param)
        if not state:
            return torch.empty(0, dtype=torch.int64)
        return (state["exp_avg"].ne(0) | state["exp_avg_sq"].ne(0)).any(dim=1).nonzero().squeeze(1)

    def state_dict(self) -> dict[str, Any]:
        """SparseAdam's `state_dict` with each table's moments cut to its touched rows."""
        state_dict = super().state_dict()
        params = [p for group in self.param_groups for p in group["params"]]
        for key, state in state_dict["state"].items():
            rows = self.touched_rows(params[int(key)])
            state_dict["state"][key] = {
                **state,
                "rows": rows,
                "exp_avg": state["exp_avg"].index_select(0, rows),
                "exp_avg_sq": state["exp_avg_sq"].index_select(0, rows),
            }
        return state_dict

    def load_state_dict(self, state_dict: dict) -> None:
        """SparseAdam's `load_state_dict` of a `state_dict` cut to touched rows."""
        params = [p for group in self.param_groups for p in group["params"]]
        full = {**state_dict, "state": {}}
        for key, state in state_dict["state"].items():
            state = dict(state)
            rows = state.pop("rows", None)
            if rows is not None:
                param = params[int(key)]
                for name in ("exp_avg", "exp_avg_sq"):
                    dense = torch.zeros(param.shape, dtype=state[name].dtype)
                    state[name] = dense.index_copy_(0, rows.long(), state[name])
            full["state"][key] = state
        super().load_state_dict(full)

    @torch.no_grad()
    def update(self) -> None:
        """The update of `step()`, without `Optimizer.step`'s per-call hooks and profiling."""
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                if not param.grad.is_sparse:
                    raise RuntimeError(
                        "RowSparseAdam does not support dense gradients, please consider Adam "
                        "instead"
                    )
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(
                        param, memory_format=torch.preserve_format
                    )
                state["step"] += 1
                grad = -param.grad if group.get("maximize", False) else param.grad
                _row_adam(
                    param,
                    grad.coalesce(),  # the update is non-linear: one row per index
                    state["exp_avg"],
                    state["exp_avg_sq"],
                    state["step"],
                    lr=float(group["lr"]),
                    beta1=beta1,
                    beta2=beta2,
                    eps=group["eps"],
                )


def _row_adam(
    param: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: int,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
) -> None:
    """SparseAdam's update on the rows of a coalesced (V, D) COO gradient.

    `dense.sparse_mask(grad)._values()` is `dense.index_select(0, rows)`, and
    `dense.add_(sparse(rows, values))` with unique rows is `old + values` written back with
    `index_copy_` (one float addition either way; `index_add_` is far slower on CPU).
    """
    if grad.sparse_dim() != 1:
        raise ValueError(
            f"RowSparseAdam needs row gradients (sparse_dim 1), got {grad.sparse_dim()}"
        )
    rows, values = grad._indices()[0], grad._values()
    if values.numel() == 0:
        return
    # old <- b * old + (1 - b) * new  <==>  old += (1 - b) * (new - old)
    old_exp_avg = exp_avg.index_select(0, rows)
    numer = values.sub(old_exp_avg).mul_(1 - beta1).add_(old_exp_avg)
    exp_avg.index_copy_(0, rows, numer)
    old_exp_avg_sq = exp_avg_sq.index_select(0, rows)
    new_exp_avg_sq = values.pow(2).sub_(old_exp_avg_sq).mul_(1 - beta2).add_(old_exp_avg_sq)
    exp_avg_sq.index_copy_(0, rows, new_exp_avg_sq)
    denom = new_exp_avg_sq.sqrt_().add_(eps)
    step_size = lr * math.sqrt(1 - beta2**step) / (1 - beta1**step)
    update = -step_size * numer.div_(denom)
    param.index_copy_(0, rows, param.index_select(0, rows).add_(update))


class TouchedRowAdam(RowOptimizer, torch.optim.Optimizer):
    """`torch.optim.Adam` for an embedding table, exact, computed on the rows ever touched.

    Without weight decay, Adam leaves a parameter whose gradient has been zero since the start
    where it is (its moments are zero, so is its step), and moves every parameter whose
    gradient was ever non-zero at every step after (its moments decay). So the full-table update
    is the update of the rows touched so far: this optimizer keeps that set, growing as new rows
    get gradients, and runs Adam's own kernel (`torch.optim.adam.adam`, fused where the table
    lives on CPU or CUDA) on those rows only. Table, moments and step count equal
    `torch.optim.Adam`'s over the whole table bit for bit (tests/test_optim.py); rows never
    touched are neither read nor written.

    The touched rows' values live in a compact (K, D) copy that the kernel updates in place;
    they are written into the table lazily (`sync`): the rows a lookup reads, just before it
    reads them (`watch` registers that on the embedding module), and all of them at the end of
    an epoch and before a checkpoint. Writing all K rows back every step would cost more than
    the update itself.

    Gradients: sparse (`nn.EmbeddingBag(sparse=True)`; coalescing sums a row's occurrences in
    the order the dense backward does) or dense (rows with a non-zero gradient; for DDP
    backends without sparse all-reduce). State per table: `step` (as Adam's), `rows` (K,)
    int64 ascending, `exp_avg` and `exp_avg_sq` (K, D): `state_dict` holds the touched rows'
    moments only.

    `arithmetic="keras"`: tf.keras's Adam on the table instead (`keras_row_adam`, its branch
    for an embedding's row gradients), equal to `KerasAdam(row_gradients=True)` over the whole
    table bit for bit: the premise holds there too (zero moments, zero step).
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        fused: bool | None = None,
        arithmetic: str = "torch",
    ) -> None:
        if arithmetic not in ("torch", "keras"):
            raise ValueError(f"arithmetic must be 'torch' or 'keras', got {arithmetic!r}")
        defaults = {"lr": lr, "betas": betas, "eps": eps, "fused": fused, "maximize": False}
        super().__init__(params, defaults)
        self.arithmetic = arithmetic
        for group in self.param_groups:
            for param in group["params"]:
                if param.ndim != 2:
                    raise ValueError(f"TouchedRowAdam takes (rows, dim) tables, got {param.ndim}-D")
        self._reset_buffers()

    def _reset_buffers(self) -> None:
        """Drop what is rebuilt from `state` and the table: positions, values, gradients."""
        self._positions: dict[torch.Tensor, torch.Tensor] = {}  # (N,) row -> position, or -1
        self._values: dict[torch.Tensor, torch.Tensor] = {}  # (K, D) current touched rows
        self._grads: dict[torch.Tensor, torch.Tensor] = {}  # (K, D), zero but the last step's
        self._written: dict[torch.Tensor, torch.Tensor] = {}  # positions the last step wrote
        self._scratch: dict[torch.Tensor, torch.Tensor] = {}  # (K, D) work buffer
        self._stale: set[torch.Tensor] = set()  # tables whose touched rows are not written yet

    def touched_rows(self, param: torch.Tensor) -> torch.Tensor:
        """(K,) the rows of `param` that have had a gradient, ascending."""
        state = self.state.get(param)
        return state["rows"] if state else torch.empty(0, dtype=torch.int64)

    @torch.no_grad()
    def sync(self, param: torch.Tensor | None = None, ids: torch.Tensor | None = None) -> None:
        """Write the current values of touched rows into the table: those among `ids`, or all
        (then the table is complete until the next step). `param`: every table when None."""
        params = [param] if param is not None else list(self._values)
        for table in params:
            if table not in self._stale:
                continue
            values, rows = self._values[table], self.state[table]["rows"]
            if ids is None:
                table.index_copy_(0, rows, values)
                self._stale.discard(table)
                continue
            positions = self._positions[table].index_select(0, ids)
            known = positions >= 0
            table.index_put_((ids[known],), values.index_select(0, positions[known]))

    def watch(self, module: torch.nn.Module, param: torch.Tensor) -> Any:
        """Sync `param`'s rows among the ids of each `module(ids, ...)` call before it runs;
        returns the hook handle."""
        return module.register_forward_pre_hook(lambda _, args: self.sync(param, args[0]))

    @torch.no_grad()
    def update(self) -> None:
        """One Adam step of every touched row (rows first touched now included)."""
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    self._step_table(param, param.grad, group)

    def _step_table(self, param: torch.Tensor, grad: torch.Tensor, group: dict) -> None:
        if grad.is_sparse:
            grad = grad.coalesce()  # one row per index, summed as the dense backward sums
            grad_rows, grad_values = grad._indices()[0], grad._values()
        else:
            grad_rows = grad.ne(0).any(dim=1).nonzero().squeeze(1)
            grad_values = grad.index_select(0, grad_rows)
        state = self.state[param]
        if not state:
            fused = _fused(group, param)
            device = param.device if fused else torch.device("cpu")
            state["step"] = torch.zeros((), dtype=torch.float32, device=device)
            state["rows"] = torch.empty(0, dtype=torch.int64, device=param.device)
            state["exp_avg"] = param.new_zeros((0, param.shape[1]))
            state["exp_avg_sq"] = param.new_zeros((0, param.shape[1]))
        positions = self._position_map(param)
        new = grad_rows[positions.index_select(0, grad_rows) < 0]
        if len(new):
            self._add_rows(param, state, new)
            positions = self._positions[param]
        values, grads = self._values[param], self._grads[param]
        # (K, D) this step's gradient: zero but for the rows it has
        grad_positions = positions.index_select(0, grad_rows)
        grads.index_fill_(0, self._written[param], 0.0)
        grads.index_copy_(0, grad_positions, grad_values)
        self._written[param] = grad_positions
        beta1, beta2 = group["betas"]
        if self.arithmetic == "keras":
            state["step"] += 1
            keras_row_adam(
                values,
                grad_positions,
                grad_values,
                state["exp_avg"],
                state["exp_avg_sq"],
                int(state["step"]),
                lr=float(group["lr"]),
                beta1=beta1,
                beta2=beta2,
                eps=group["eps"],
                scratch=self._scratch_for(param, values),
            )
            self._stale.add(param)
            return
        functional_adam(
            [values],
            [grads],
            [state["exp_avg"]],
            [state["exp_avg_sq"]],
            [],
            [state["step"]],
            fused=_fused(group, param),
            amsgrad=False,
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=0.0,
            eps=group["eps"],
            maximize=False,
        )
        self._stale.add(param)

    def _scratch_for(self, param: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """A work buffer shaped like the compact (K, D) values, reused while K stays."""
        scratch = self._scratch.get(param)
        if scratch is None or scratch.shape != values.shape:
            scratch = self._scratch[param] = torch.empty_like(values)
        return scratch

    def _add_rows(self, param: torch.Tensor, state: dict, new: torch.Tensor) -> None:
        """Merge rows touched for the first time into the (ascending) touched set: zero
        moments, their values from the table (which untouched rows never leave)."""
        self.sync(param)  # values below are re-gathered in the new order
        rows = torch.cat([state["rows"], new])
        order = rows.argsort()
        zeros = param.new_zeros((len(new), param.shape[1]))
        state["rows"] = rows[order]
        state["exp_avg"] = torch.cat([state["exp_avg"], zeros])[order]
        state["exp_avg_sq"] = torch.cat([state["exp_avg_sq"], zeros])[order]
        self._positions.pop(param, None)
        self._values.pop(param, None)
        self._position_map(param)

    def _position_map(self, param: torch.Tensor) -> torch.Tensor:
        """(N,) position of each table row in `rows`, -1 for rows never touched; also builds
        the compact values (from the synced table) and gradient buffers."""
        positions = self._positions.get(param)
        if positions is None:
            state = self.state[param]
            rows = state["rows"]
            positions = torch.full((param.shape[0],), -1, dtype=torch.int64, device=param.device)
            positions[rows] = torch.arange(len(rows), device=param.device)
            self._positions[param] = positions
            self.sync(param)
            self._values[param] = param.detach().index_select(0, rows)
            self._grads[param] = torch.zeros_like(self._values[param])
            self._written[param] = torch.empty(0, dtype=torch.int64, device=param.device)
        return positions

    def state_dict(self) -> dict[str, Any]:
        """Adam's `state_dict`; the table is complete (synced) from here on."""
        self.sync()
        return super().state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        """Adam's `load_state_dict`, keeping `rows` as int64 (the base class would cast it to
        the table's float dtype); the table must hold the values saved with it."""
        rows = {key: value["rows"] for key, value in state_dict["state"].items()}
        stripped = {
            **state_dict,
            "state": {
                key: {k: v for k, v in value.items() if k != "rows"}
                for key, value in state_dict["state"].items()
            },
        }
        super().load_state_dict(stripped)
        params = [p for group in self.param_groups for p in group["params"]]
        for key, value in rows.items():
            param = params[int(key)]
            self.state[param]["rows"] = value.to(device=param.device, dtype=torch.int64)
        self._reset_buffers()


# ---------------------------------------------------------------- tf.keras's Adam


@lru_cache(maxsize=64)  # the head's and the table's optimizers ask for the same steps
def keras_alpha(
    lr: float, beta1: float, beta2: float, step: int, dtype: torch.dtype = torch.float32
) -> float:
    """Keras's step size `lr * sqrt(1 - beta2^t) / (1 - beta1^t)`, computed as
    `Adam.update_step` computes it: in the variable's dtype (float32 for the notebook's), from
    `lr` (a float32 variable) and the betas (`tf.cast` of a Python float: float32 first) cast
    to it. The result is exact as a Python float."""

    def cast(value: float) -> torch.Tensor:
        return torch.tensor(value, dtype=torch.float32).to(dtype)

    t = torch.tensor(float(step), dtype=dtype)
    beta1_power = cast(beta1).pow(t)  # float32: libm's powf, as TF's scalar Pow
    beta2_power = cast(beta2).pow(t)
    return float(cast(lr) * ieee_sqrt(1 - beta2_power) / (1 - beta1_power))


def ieee_sqrt(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """sqrt correctly rounded, as IEEE 754 defines it and TensorFlow computes it (into `out`,
    contiguous, when given).

    torch's sqrt on CPU is not (torch 2.13 with MKL: 17% of random float32 values come out an
    ulp away, float64 too in 1%); NumPy's is (the processor's sqrt instruction), and runs on
    the tensor's memory. On CUDA torch's sqrt is IEEE's.
    """
    if out is None:
        out = torch.empty_like(x, memory_format=torch.contiguous_format)
    if x.device.type != "cpu":
        return torch.sqrt(x, out=out)
    np.sqrt(x.detach().numpy(), out=out.numpy())
    return out


@torch.no_grad()
def keras_adam(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    step: int,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
) -> None:
    """One step of tf.keras's Adam on dense gradients (tf_keras 2.x, `Adam.update_step`), in
    place, one float32 rounding per operation as there:

        m += (g - m) * (1 - beta1);  v += (g^2 - v) * (1 - beta2)
        var -= (m * alpha) / (sqrt(v) + eps)       alpha = `keras_alpha(lr, beta1, beta2, t)`

    Epsilon is added to sqrt(v), not to sqrt(v / (1 - beta2^t)) as in torch's Adam: it is
    torch's form with epsilon / sqrt(1 - beta2^t) (31.6 times larger at the first step).
    """
    alpha = keras_alpha(lr, beta1, beta2, step, params[0].dtype)
    delta = torch._foreach_sub(grads, exp_avgs)
    torch._foreach_mul_(delta, 1 - beta1)
    torch._foreach_add_(exp_avgs, delta)
    delta = torch._foreach_mul(grads, grads)
    torch._foreach_sub_(delta, exp_avg_sqs)
    torch._foreach_mul_(delta, 1 - beta2)
    torch._foreach_add_(exp_avg_sqs, delta)
    _keras_apply(params, exp_avgs, exp_avg_sqs, alpha, eps)


@torch.no_grad()
def keras_row_adam(
    param: torch.Tensor,
    rows: torch.Tensor,
    values: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: int,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    scratch: torch.Tensor | None = None,
) -> None:
    """One step of tf.keras's Adam on a row gradient (`tf.IndexedSlices`, what an embedding
    lookup gives: (R,) unique `rows` of (N, D) contiguous `param`, (R, D) `values`), in place,
    as its sparse branch does it: every row's moments decay, then the gradient's rows get theirs:

        m += -m * (1 - beta1);  m[rows] += g * (1 - beta1)     (v likewise with g^2, beta2)
        var -= (m * alpha) / (sqrt(v) + eps)                     (every row)

    A row whose moments are zero (never had a gradient) does not move. `scratch`: an (N, D)
    buffer to work in (a table's is large: allocating it every step costs more than the
    arithmetic).
    """
    alpha = keras_alpha(lr, beta1, beta2, step, param.dtype)
    a = scratch if scratch is not None else torch.empty_like(param)
    exp_avg.sub_(torch.mul(exp_avg, 1 - beta1, out=a))  # m + (-m * c): negation is exact
    exp_avg.index_add_(0, rows, values * (1 - beta1))
    exp_avg_sq.sub_(torch.mul(exp_avg_sq, 1 - beta2, out=a))
    exp_avg_sq.index_add_(0, rows, values.square().mul_(1 - beta2))
    # var + (-alpha * m) / denom is var - (m * alpha) / denom, rounded alike (negation is exact;
    # the kernel multiplies, divides, then adds: no fused multiply-add; tested bit for bit)
    param.addcdiv_(exp_avg, ieee_sqrt(exp_avg_sq, out=a).add_(eps), value=-alpha)


def _keras_apply(
    params: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    alpha: float,
    eps: float,
) -> None:
    """var -= (m * alpha) / (sqrt(v) + eps), each operation rounded on its own (the square
    roots on the tensors joined into one: fewer calls for the head's six small ones)."""
    denom = ieee_sqrt(torch.cat([v.reshape(-1) for v in exp_avg_sqs])).add_(eps)
    parts = denom.split([p.numel() for p in params])
    for param, exp_avg, part in zip(params, exp_avgs, parts, strict=True):
        param.addcdiv_(exp_avg, part.view_as(param), value=-alpha)  # see keras_row_adam


class KerasAdam(Updating, torch.optim.Optimizer):
    """tf.keras's Adam, the notebook's optimizer, op for op (`keras_adam`; tf_keras 2.x's
    `Adam.update_step`, without amsgrad or weight decay, as the notebook compiles it).

    `row_gradients`: the parameter is an embedding table, whose gradient Keras gets as
    `tf.IndexedSlices` and updates with its sparse branch (`keras_row_adam`); a dense gradient
    here is treated as rows (those that are non-zero), which gives the same values. State per
    parameter: `step` (float32 tensor, as torch's Adam), `exp_avg`, `exp_avg_sq`.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-7,
        row_gradients: bool = False,
    ) -> None:
        defaults = {"lr": lr, "betas": betas, "eps": eps, "row_gradients": row_gradients}
        super().__init__(params, defaults)
        self._scratch: dict[torch.Tensor, torch.Tensor] = {}  # a table's work buffer

    @torch.no_grad()
    def update(self) -> None:
        """The update of `step()`, without `Optimizer.step`'s per-call hooks and profiling."""
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if any(p.grad.is_sparse for p in params):
                raise RuntimeError("KerasAdam takes dense gradients")
            states = [self._state(p) for p in params]
            for state in states:
                state["step"] += 1
            beta1, beta2 = group["betas"]
            hyper = {"lr": float(group["lr"]), "beta1": beta1, "beta2": beta2, "eps": group["eps"]}
            step = int(states[0]["step"])  # Keras counts steps once for all its variables
            if not group["row_gradients"]:
                exp_avgs = [s["exp_avg"] for s in states]
                exp_avg_sqs = [s["exp_avg_sq"] for s in states]
                grads = [p.grad for p in params]
                keras_adam(params, grads, exp_avgs, exp_avg_sqs, step, **hyper)
                continue
            for param, state in zip(params, states, strict=True):
                grad = param.grad
                rows = grad.ne(0).any(dim=1).nonzero().squeeze(1)
                values = grad.index_select(0, rows)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                if param not in self._scratch:
                    self._scratch[param] = torch.empty_like(param)
                scratch = self._scratch[param]
                keras_row_adam(
                    param, rows, values, exp_avg, exp_avg_sq, step, **hyper, scratch=scratch
                )

    def _state(self, param: torch.Tensor) -> dict:
        state = self.state[param]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        return state


def _closure_loss(closure: Callable[[], float] | None) -> float | None:
    """What `Optimizer.step(closure)` returns: the closure's loss, evaluated with grad on."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def _fused(group: dict, param: torch.Tensor) -> bool:
    """Adam's fused kernel where the group asks for it (default: on CPU and CUDA tables)."""
    fused = group.get("fused")
    return param.device.type in ("cpu", "cuda") if fused is None else bool(fused)


# model.optimizer: Adam's arithmetic, torch's or tf.keras's (the notebook's, op for op).
OPTIMIZERS = ("adam", "keras_adam")
# model.table_optimizer, for a trainable table: the notebook's Adam exactly, computed on the
# rows ever touched (`TouchedRowAdam`); lazy Adam (`RowSparseAdam`: only a minibatch's rows
# move, not the notebook's); or Adam over every row every step (the slow reference).
TABLE_OPTIMIZERS = ("exact", "lazy", "dense")


def sparse_table_gradients(table_optimizer: str) -> bool:
    """Whether `table_optimizer` takes the table's gradient as rows (a sparse tensor)."""
    return table_optimizer in ("exact", "lazy")


def build_optimizers(
    head: list[torch.Tensor],
    table: list[torch.Tensor],
    optimizer: str = "adam",
    table_optimizer: str = "exact",
    lr: float = 1e-4,
    eps: float = 1e-7,
) -> list[torch.optim.Optimizer]:
    """The head's optimizer, then (for a trainable `table`) the table's: every combination of
    `OPTIMIZERS` and `TABLE_OPTIMIZERS`. Adam is per-parameter, so two optimizers step exactly
    as one over both. The lazy table keeps torch's arithmetic under `keras_adam` (it is not the
    notebook's optimizer either way)."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if table_optimizer not in TABLE_OPTIMIZERS:
        raise ValueError(
            f"table_optimizer must be one of {TABLE_OPTIMIZERS}, got {table_optimizer!r}"
        )
    keras = optimizer == "keras_adam"
    # The fused kernel is the same Adam in one pass over memory: for a dense 1M-row table that
    # is ~4x faster than the per-tensor loop on CPU.
    fused = all(p.device.type in ("cpu", "cuda") for p in [*head, *table])
    optimizers: list[torch.optim.Optimizer] = [
        KerasAdam(head, lr=lr, eps=eps)
        if keras
        else torch.optim.Adam(head, lr=lr, eps=eps, fused=fused)
    ]
    if not table:
        return optimizers
    if table_optimizer == "lazy":
        optimizers.append(RowSparseAdam(table, lr=lr, eps=eps))
    elif table_optimizer == "dense" and keras:
        optimizers.append(KerasAdam(table, lr=lr, eps=eps, row_gradients=True))
    elif table_optimizer == "dense":
        optimizers.append(torch.optim.Adam(table, lr=lr, eps=eps, fused=fused))
    else:
        arithmetic = "keras" if keras else "torch"
        optimizers.append(TouchedRowAdam(table, lr=lr, eps=eps, fused=fused, arithmetic=arithmetic))
    return optimizers
