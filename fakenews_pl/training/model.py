"""The notebook's classifier as a LightningModule that trains a `FakeNewsNet`.

    HubEmbedding (D) -> Dense 256 ReLU -> Dropout 0.3 -> Dense 64 ReLU -> Dropout 0.2 -> Dense 1

The network (`fakenews_pl.nn.net`) is built from this module's hyperparameters; this module
adds what training needs. Keras parity: glorot-uniform weights and zero biases, binary
cross-entropy on the logit (Keras does the same for a sigmoid output), Adam with lr 1e-4 and
Keras's epsilon 1e-7; `optimizer` chooses torch's Adam arithmetic (`adam`) or Keras's, op for
op (`keras_adam`). The embedding is frozen unless `trainable`; `table_optimizer` then chooses
how the table trains (`fakenews_pl.nn.optim.build_optimizers`): `exact` (the notebook's Adam,
computed on the rows ever touched), `lazy` (SparseAdam: only the rows a batch touches move) or
`dense` (Adam over the whole table, the reference). `training_step` takes one minibatch, or on
one device a whole epoch of them, stepped through by `fakenews_pl.training.fused`.

`encoder="cnn"` or `"bilstm"` puts a sequence encoder (`fakenews_pl.nn.encoders`, trained with
the head's optimizer) between the token vectors and the head instead of the module's bag
pooling; its minibatches are never fused (one `training_step` each, autograd).

Checkpoints hold the embedding's path and sizes as hyperparameters, never the tensor
(`fakenews_pl.training.checkpoints`: a frozen model's checkpoint leaves the table out and
reloads it from the artifact, refusing one whose sha256 differs from the one trained with).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from pytorch_lightning import LightningModule
from pytorch_lightning.strategies import DDPStrategy, SingleDeviceStrategy, Strategy
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import BinaryAccuracy

from fakenews_pl import threads
from fakenews_pl.data import batches
from fakenews_pl.data.batches import epoch_seed
from fakenews_pl.errors import ConfigError
from fakenews_pl.hub.embedding import HubEmbedding
from fakenews_pl.nn.net import FakeNewsNet, HoldsNet
from fakenews_pl.nn.optim import (
    OPTIMIZERS,
    TABLE_OPTIMIZERS,
    RowOptimizer,
    TouchedRowAdam,
    build_optimizers,
    sparse_table_gradients,
)
from fakenews_pl.training import checkpoints, fused


def reduces_sparse_gradients(strategy: Strategy) -> bool:
    """Whether `strategy` can train a table with sparse gradients: one device, or DDP over gloo
    (sparse all-reduce exists only in gloo; NCCL, FSDP and DeepSpeed need dense gradients)."""
    if type(strategy) is SingleDeviceStrategy:
        return True
    if type(strategy) is not DDPStrategy:
        return False
    backend = strategy.process_group_backend
    if backend is None:  # Lightning's default for the device
        backend = "nccl" if strategy.root_device.type == "cuda" else "gloo"
    return backend == "gloo"


def check_strategy(lazy_table: bool, strategy: Strategy) -> None:
    """Refuse strategies that cannot reduce the lazy table's sparse gradients (the exact table
    optimizer takes dense ones there instead)."""
    if not lazy_table or reduces_sparse_gradients(strategy):
        return
    fix = "use trainer=ddp_cpu (gloo) or model.table_optimizer=exact (dense gradients there)"
    if type(strategy) is not DDPStrategy:
        raise ConfigError(
            f"model.table_optimizer=lazy with trainable=true needs DDP with the gloo backend; "
            f"trainer.strategy is {type(strategy).__name__}, which cannot reduce sparse "
            f"gradients: {fix}"
        )
    backend = strategy.process_group_backend
    if backend is None:  # Lightning's default for the device
        backend = "nccl" if strategy.root_device.type == "cuda" else "gloo"
    if backend != "gloo":
        raise ConfigError(
            f"model.table_optimizer=lazy with trainable=true needs the gloo backend; "
            f"DDP process_group_backend is {backend!r}, which has no sparse all-reduce: {fix}"
        )


class FakeNewsClassifier(HoldsNet, LightningModule):
    """A `FakeNewsNet` trained with binary cross-entropy, its epoch metrics and history."""

    def __init__(
        self,
        embedding_path: str,
        embedding_dim: int | None = None,
        embedding_rows: int | None = None,
        trainable: bool = False,
        table_optimizer: str = "exact",
        hidden_sizes: Sequence[int] = (256, 64),
        dropouts: Sequence[float] = (0.3, 0.2),
        lr: float = 1e-4,
        adam_eps: float = 1e-7,
        class_names: Sequence[str] = ("Fake", "True"),
        step_threads: int | None = 1,
        optimizer: str = "adam",
        encoder: str = "bag",
        max_tokens: int = 256,
        cnn: dict[str, Any] | None = None,
        bilstm: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"model.optimizer={optimizer!r}: expected one of {', '.join(OPTIMIZERS)}"
            )
        if table_optimizer not in TABLE_OPTIMIZERS:
            raise ConfigError(
                f"model.table_optimizer={table_optimizer!r}: expected one of "
                f"{', '.join(TABLE_OPTIMIZERS)}"
            )
        if step_threads is not None and not (type(step_threads) is int and step_threads >= 1):
            raise ConfigError(
                f"model.step_threads={step_threads}: expected a thread count >= 1, or null "
                f"(torch's count)"
            )
        self.save_hyperparameters()
        # Row (sparse) table gradients for the exact and lazy optimizers; dense: torch's Adam
        # over the whole table (the reference they equal).
        sparse = trainable and sparse_table_gradients(table_optimizer)
        embedding = HubEmbedding.load(embedding_path, trainable=trainable, sparse=sparse)
        if embedding_dim is not None and embedding_dim != embedding.dim:
            rank_zero_warn(
                f"embedding.dim is {embedding_dim} but the artifact at {embedding_path} has "
                f"dim {embedding.dim}; using {embedding.dim}"
            )
        checkpoints.check_table_rows(embedding, embedding_rows, embedding_path)
        # Sizes, not tensors: what a checkpoint needs to rebuild the module.
        self.hparams.embedding_dim = embedding.dim
        self.hparams.embedding_rows = embedding.num_rows
        self.net = FakeNewsNet.from_config(
            embedding, checkpoints.net_config(dict(self.hparams), embedding.dim)
        )
        self.lazy_table = trainable and table_optimizer == "lazy"
        # Stepped by hand: the table and the head have their own optimizers, and a fused
        # batch holds many minibatches (see training_step).
        self.automatic_optimization = False
        self.metrics = nn.ModuleDict()
        for split in ("train", "val", "test"):
            self.metrics[f"{split}_loss"] = MeanMetric()
            self.metrics[f"{split}_accuracy"] = BinaryAccuracy()
        self.history: list[dict[str, float]] = []
        self._val_row: dict[str, float] = {}
        self._table_hook: Any = None

    # ------------------------------------------------------------------ forward

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Batch -> (B,) logits; `pooled` (B, D) when cached, else `ids`/`offsets` bags."""
        pooled = batch.get("pooled")
        if pooled is None:
            return self.net(batch["ids"], batch["offsets"])
        return self.net.classify(pooled)

    def encode(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """(T,) ids, (B,) offsets -> (B, F) the head's input (`FakeNewsNet.features`)."""
        return self.net.features(ids, offsets)

    @torch.no_grad()
    def predict_proba(self, texts: Sequence[str]) -> torch.Tensor:
        """(N,) probability of class 1 (`class_names[1]`) for raw texts fed to the embedding."""
        self.eval()
        ids, offsets = self.embedding.encode(texts)
        device = self.embedding.weight.device
        return torch.sigmoid(self({"ids": ids.to(device), "offsets": offsets.to(device)}))

    # ------------------------------------------------------------------ steps and metrics

    def record(
        self, split: str, logits: torch.Tensor, labels: torch.Tensor, minibatch: int | None = None
    ) -> None:
        """Add (B,) logits to `split`'s epoch metrics: accuracy, and Keras's epoch loss (the
        sample-weighted mean of the per-minibatch mean losses; a minibatch is `minibatch`
        consecutive rows, the whole batch by default)."""
        logits = logits.detach().float()
        losses = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
        chunks = losses.split(minibatch or len(losses))
        means = torch.stack([chunk.mean() for chunk in chunks])
        sizes = means.new_tensor([len(chunk) for chunk in chunks])
        self.metrics[f"{split}_loss"].update(means, weight=sizes)
        self.metrics[f"{split}_accuracy"].update(torch.sigmoid(logits), labels)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        """One optimizer step on a minibatch (the notebook's 32 rows). An epoch batch (on one
        device at 32-bit, see `fakenews_pl.training.fused`) is stepped through by
        `fused.train_epoch` with the same minibatches, order and updates."""
        if batches.is_epoch(batch):
            return fused.train_epoch(self, batch)
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        # Small ops on hparams.step_threads; a trainable table's gradient (autograd computes it
        # with the head's) and update on the count found on entry (see fakenews_pl.threads).
        with threads.intra_op(self.hparams.get("step_threads")) as previous:
            # Row (sparse) gradients keep the table's work small: the step's count does too.
            large = len(optimizers) > 1 and not self.embedding.bag.sparse
            table_threads = previous if large else None
            logits = self(batch)
            loss = F.binary_cross_entropy_with_logits(logits.float(), batch["labels"])
            for optimizer in optimizers:
                optimizer.zero_grad()
            with threads.intra_op(table_threads):
                self.manual_backward(loss)
            optimizers[0].step()  # the head's
            with threads.intra_op(table_threads):
                for optimizer in optimizers[1:]:
                    optimizer.step()
            self.record("train", logits, batch["labels"])
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Record validation loss and accuracy (dropout off), on `step_threads` threads."""
        with threads.intra_op(self.hparams.get("step_threads")):
            self.record("val", self(batch), batch["labels"])

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Record test loss and accuracy (dropout off), on `step_threads` threads."""
        with threads.intra_op(self.hparams.get("step_threads")):
            self.record("test", self(batch), batch["labels"])

    def _compute(self, split: str) -> dict[str, float]:
        """Epoch-level values (synced across ranks by torchmetrics), then reset."""
        values = {}
        for name in ("loss", "accuracy"):
            metric = self.metrics[f"{split}_{name}"]
            values[f"{split}/{name}"] = float(metric.compute())
            metric.reset()
        return values

    def on_validation_epoch_end(self) -> None:
        """Log the epoch's validation loss and accuracy; keep them for the history."""
        values = self._compute("val")
        self.log_dict(values, prog_bar=True)
        if not self.trainer.sanity_checking:
            self.log("epoch", float(self.current_epoch + 1))  # metrics.csv counts from 1 too
            self._val_row = {"epoch": self.current_epoch + 1, **values}

    def on_train_epoch_start(self) -> None:
        """Start the dropout-mask stream from a fresh chunk."""
        # An epoch's dropout masks depend on the run's seed and the epoch alone.
        self.head.masks.reset(seed=epoch_seed(torch.initial_seed(), self.current_epoch))

    def on_train_epoch_end(self) -> None:
        """Log the epoch's train metrics and append the epoch to the history. Epochs are
        numbered from 1 in everything a user reads: the logged `epoch` (metrics.csv, and the
        `epoch_NNN.ckpt` names) and the history (metrics.json, curves.png)."""
        self._sync_table()
        values = self._compute("train")
        self.log_dict(values, prog_bar=True)
        epoch = self.current_epoch + 1
        self.log("epoch", float(epoch))
        row = {"epoch": epoch, **values}
        if self._val_row.get("epoch") == epoch:
            row.update(self._val_row)
        self.history.append(row)
        if not all(math.isfinite(value) for value in row.values()):
            self.trainer.should_stop = (
                True  # diverged: train.py reports it (pipeline.refuse_divergence)
            )

    def on_test_epoch_end(self) -> None:
        """Log the test loss and accuracy."""
        self.log_dict(self._compute("test"))

    # ------------------------------------------------------------------ setup and optimizers

    def setup(self, stage: str) -> None:
        """Refuse strategies that cannot train this model (see `check_strategy`); where sparse
        gradients cannot be all-reduced, the exact table optimizer gets dense ones."""
        check_strategy(self.lazy_table, self.trainer.strategy)
        if not reduces_sparse_gradients(self.trainer.strategy):
            self.embedding.bag.sparse = False

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """Adam for the head (and a sequence encoder); for a trainable table, a second one as
        `table_optimizer` says (`fakenews_pl.nn.optim.build_optimizers`)."""
        hp = self.hparams
        table = [p for p in self.embedding.parameters() if p.requires_grad]
        optimizers = build_optimizers(
            self.net.head_parameters(), table, hp.get("optimizer", "adam"),
            hp.get("table_optimizer", "exact"), hp.lr, hp.adam_eps,
        )  # fmt: skip
        if isinstance(exact := optimizers[-1], TouchedRowAdam):
            # It writes moved rows into the table lazily: each lookup syncs the rows it reads.
            if self._table_hook is not None:
                self._table_hook.remove()
            self._table_hook = exact.watch(self.embedding, self.embedding.weight)
        return optimizers

    def _table_optimizer(self) -> RowOptimizer | None:
        """The trainer's row optimizer of the table (exact or lazy), if it trains with one."""
        if not self.hparams.trainable:
            return None
        try:
            optimizers = self.trainer.optimizers
        except RuntimeError:  # not attached to a trainer
            return None
        return next((o for o in optimizers if isinstance(o, RowOptimizer)), None)

    def _sync_table(self) -> None:
        """Write every row the row optimizer has moved into the table."""
        if (optimizer := self._table_optimizer()) is not None:
            optimizer.sync(self.embedding.weight)

    def on_train_end(self) -> None:
        """The table complete when fit ends (reports, checkpoints, `embedding.weight`)."""
        self._sync_table()

    def _touched_rows(self) -> torch.Tensor | None:
        """The table rows the row optimizer (exact or lazy) has moved so far, written into the
        table now; None for a frozen table or torch's dense Adam."""
        optimizer = self._table_optimizer()
        if optimizer is None:
            return None
        optimizer.sync(self.embedding.weight)
        return optimizer.touched_rows(self.embedding.weight)

    # ------------------------------------------------------------------ checkpoints

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the history, the run's seed, and of the table what `checkpoints.keep_table`
        keeps (nothing when frozen, the moved rows after a row optimizer)."""
        checkpoint["history"] = list(self.history)
        checkpoint["seed"] = torch.initial_seed()  # the run's (seed_everything): resume checks it
        checkpoints.keep_table(
            checkpoint, self.embedding, bool(self.hparams.trainable), self._touched_rows()
        )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the history; a checkpoint of before `net` in today's form; the table from
        the artifact, if it is the same one, and the moved rows (`checkpoints.restore_table`)."""
        checkpoints.migrate(checkpoint)
        self.history = list(checkpoint.get("history", []))
        checkpoints.restore_table(checkpoint, self.embedding, self.hparams.embedding_path)
