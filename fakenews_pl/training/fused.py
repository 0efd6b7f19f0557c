"""Fused training epochs: one Lightning step per epoch, its minibatches stepped by hand.

A frozen epoch is ~443 minibatches of 32 rows through a 50k-parameter head: each step is a
few microseconds of arithmetic inside far more autograd, optimizer and Lightning bookkeeping.
Where `fuse_epochs(trainer)` holds (one device, 32-bit precision), the data module hands the
model each epoch's shuffled minibatches as one epoch batch (`batches.epoch_loader`) and
`train_epoch` steps through them: the head's forward and backward by `head.HeadStep`, its
Adam update by `optim.stepper` (autograd's and `Adam.step`'s own calls, so the weights are
identical to one Lightning step per minibatch: tested), the table's gradient by autograd when
it trains. Per-step hooks (`on_before_backward`, `on_after_backward`,
`on_before_optimizer_step`) do not run; `data.fuse_train_batches=false` runs them all.

Threads: `model.step_threads` (default 1) intra-op threads run each minibatch's small ops (the
head's forward, backward and Adam; a minibatch's bag pooling) in both training paths
(`fakenews_pl.threads.intra_op`), and so does a fine-tuned table's work with row gradients
(exact or lazy Adam: rows, not the table); the count found on entry comes back around a dense
table's gradient and update (`model.table_optimizer=dense`), which are large, and after the
epoch or step. The weights are identical either way (tested), except in the last bits where a
minibatch has 5-7 or 9-11 rows: MKL's 2-thread products of those sizes sum in another order
than its 1-thread ones (docs/benchmarks.md, "Shared machine").

This is the only module that touches Lightning's private names: each `LightningOptimizer`'s
`_on_before_step` / `_on_after_step`, which Lightning's manual-optimization loop points at its
optimizer-step counter. Calling them around each update keeps `trainer.global_step` counting
steps as `LightningOptimizer.step` does. `check_lightning` refuses, with a message naming the
way out, if an upgrade removes them (tests/test_fused.py fails loudly too).
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.core.optimizer import LightningOptimizer
from pytorch_lightning.plugins.precision import Precision
from pytorch_lightning.strategies import SingleDeviceStrategy

from fakenews_pl.data.batches import MINIBATCH, minibatches
from fakenews_pl.nn.optim import Updating, stepper
from fakenews_pl.threads import intra_op

PRIVATE_HOOKS = ("_on_before_step", "_on_after_step")


def fuse_epochs(trainer: pl.Trainer | None) -> bool:
    """Whether `trainer` can run fused epochs: one device at 32-bit precision (no gradient
    scaling, no autocast, nothing between backward and step)."""
    return (
        trainer is not None
        and type(trainer.strategy) is SingleDeviceStrategy
        and type(trainer.precision_plugin) is Precision
    )


def check_lightning(wrappers: list[LightningOptimizer]) -> None:
    """Refuse if Lightning no longer has the private step hooks this module calls."""
    missing = sorted(
        {h for w in wrappers for h in PRIVATE_HOOKS if not callable(getattr(w, h, None))}
    )
    if missing:
        raise RuntimeError(
            f"pytorch_lightning {pl.__version__}'s LightningOptimizer has no {missing}, which "
            "fused epochs call to count optimizer steps; run with data.fuse_train_batches=false "
            "(one Lightning step per minibatch) or a Lightning version in pyproject.toml's range"
        )


def train_epoch(model: pl.LightningModule, batch: dict[str, Any]) -> None:
    """Step `model` (a `FakeNewsClassifier`: its `net`, optimizers and `record`) through
    every minibatch of an epoch batch and record its train metrics."""
    labels, size = batch["labels"], batch[MINIBATCH]
    wrappers = model.optimizers()
    wrappers = wrappers if isinstance(wrappers, list) else [wrappers]
    check_lightning(wrappers)
    head_optimizer, *table_optimizers = [w.optimizer for w in wrappers]
    trainable = bool(table_optimizers)
    net = model.net
    head_step, step_head = net.head.stepper(), None
    # (The table's gradient is a new tensor every step: no AdamStep for it.)
    step_tables = [o.update if isinstance(o, Updating) else o.step for o in table_optimizers]
    logits = []
    with intra_op(model.hparams.get("step_threads")) as previous:
        for part in minibatches(batch, size):
            x = part.get("pooled")
            if x is None:
                with torch.set_grad_enabled(trainable):
                    x = net.embedding(part["ids"], part["offsets"])  # (T,), (B,) -> (B, D)
                    x = x.float()  # a float64 table's vectors; the head is float32 here
            part_logits, grad = head_step(x, part["labels"], trainable)
            for wrapper in wrappers:
                wrapper._on_before_step()
            if trainable:  # the table's gradient and update: on the previous count when large
                with intra_op(None if net.embedding.bag.sparse else previous):
                    for optimizer in table_optimizers:
                        optimizer.zero_grad()
                    x.backward(grad)
                    for step_table in step_tables:
                        step_table()
            if step_head is None:  # the first step creates Adam's state; then its kernel alone
                head_optimizer.step()
                step_head = stepper(head_optimizer)
            else:
                step_head()
            for wrapper in wrappers:
                wrapper._on_after_step()
            logits.append(part_logits)
    model.record("train", torch.cat(logits), labels, minibatch=size)
