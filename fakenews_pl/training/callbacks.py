"""Callbacks listed in `conf/callbacks/` and the trainer's checkpoint plugin: pieces of a run
that sit between model, data and the trainer (`PlanBatches`, `AtomicCheckpointIO`).

`PlanBatches`: the batch plan (`batches.BatchPlan`), decided once per fit. With a frozen
embedding, dropout comes after the first dense layer, so each text's pooled vector never
changes during training: the plan pools every row of the corpus once and the data module's
batches then carry the (N, D) vectors instead of token ids (`batches.PooledBatch`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.cloud_io import get_filesystem
from pytorch_lightning.plugins.io import TorchCheckpointIO
from torch import nn

from fakenews_pl import temporaries
from fakenews_pl.data.batches import BatchPlan, gather_bags
from fakenews_pl.training import checkpoints, fused


@torch.no_grad()
def pool_corpus(corpus: Any, embedding: nn.Module, chunk: int = 4096) -> torch.Tensor:
    """(N, D) float32 pooled vectors of every corpus row, `chunk` rows per embedding call."""
    device = embedding.weight.device
    pooled = []
    for start in range(0, len(corpus.labels), chunk):
        rows = np.arange(start, min(start + chunk, len(corpus.labels)))
        ids, offsets = gather_bags(corpus.ids, corpus.starts, corpus.lengths, rows)
        # (total_tokens,) ids, (chunk,) offsets -> (chunk, D)
        pooled.append(embedding(ids.to(device), offsets.to(device)).float().cpu())
    return torch.cat(pooled)


def plan_batches(
    net: nn.Module, trainer: pl.Trainer | None, corpus: Any, fuse: bool, buckets: bool | None
) -> BatchPlan:
    """How `net` (a `FakeNewsNet`) trains on `corpus` under `trainer`: a sequence encoder takes
    minibatches of rows of similar length (`buckets`: None follows the encoder, true or false
    forces it); otherwise, with `fuse` and where `fused.fuse_epochs(trainer)` holds, one epoch
    batch of minibatches. A frozen bag model's batches carry pooled vectors (its input never
    changes during training: dropout comes after the first dense layer)."""
    sequence = net.encoder is not None
    frozen = not sequence and not any(p.requires_grad for p in net.embedding.parameters())
    pooled = pool_corpus(corpus, net.embedding) if frozen else None
    if sequence if buckets is None else buckets:
        return BatchPlan("buckets", pooled)
    if fuse and not sequence and fused.fuse_epochs(trainer):
        return BatchPlan("epoch", pooled)
    return BatchPlan("minibatches", pooled)


class PlanBatches(pl.Callback):
    """Decide the batch plan once per fit, when model, data and trainer are known
    (`plan_batches`, from `data.fuse_train_batches` and `data.length_buckets`), and hand it to
    the data module: results are identical to pooling every batch (tested)."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """After the data module's setup: hand it the plan."""
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "use_plan"):
            return
        hp = datamodule.hparams
        plan = plan_batches(
            pl_module.net, trainer, datamodule.corpus, hp.fuse_train_batches, hp.length_buckets
        )
        datamodule.use_plan(plan)


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` whose local saves stream into a temporary file, then rename it
    (`checkpoints.save`). Temporaries are named after their process
    (`fakenews_pl.temporaries`): those of a killed run are removed before the first save into
    a directory, in one line of output."""

    def __init__(self) -> None:
        super().__init__()
        self._swept: set[Path] = set()  # directories cleaned of killed runs' temporaries

    def save_checkpoint(
        self,
        checkpoint: dict[str, Any],
        path: str | os.PathLike,
        storage_options: Any | None = None,
    ) -> None:
        """Stream `checkpoint` into a temporary beside `path`, then rename it over `path`."""
        if storage_options is not None or "file" not in get_filesystem(path).protocol:
            super().save_checkpoint(checkpoint, path, storage_options)  # remote: Lightning's
            return
        directory = Path(path).absolute().parent
        if directory not in self._swept:
            temporaries.clean_stale(directory)
            self._swept.add(directory)
        checkpoints.save(checkpoint, path)
