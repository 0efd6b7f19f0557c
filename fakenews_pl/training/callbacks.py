"""Callbacks listed in `conf/callbacks/`: pieces of a run that sit between model, data and the
trainer (`PooledFeatures`, `EpochProgressBar`).

`PooledFeatures`: with a frozen embedding, dropout comes after the first dense layer, so each
text's pooled vector never changes during training. The callback pools every row of the
corpus once at setup and hands the (N, D) vectors to the data module, whose batches then
carry them instead of token ids (`batches.PooledBatch`): the head trains on cached vectors,
with results identical to pooling every batch (tested).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import RichProgressBar
from torch import nn

from fakenews_pl.data.batches import gather_bags


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


class PooledFeatures(pl.Callback):
    """Pool every text once when the model's embedding is frozen; batches carry the vectors."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """After the data module's setup: pool its corpus, or stop pooling if the table trains."""
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "use_pooled"):
            return
        embedding = pl_module.embedding
        # A sequence encoder reads every token's vector, not the pooled one.
        frozen = not any(p.requires_grad for p in embedding.parameters())
        frozen = frozen and getattr(pl_module, "encoder", None) is None
        datamodule.use_pooled(pool_corpus(datamodule.corpus, embedding) if frozen else None)


class EpochProgressBar(RichProgressBar):
    """Rich's progress bar, numbering epochs from 1 (as Keras does, and as every file a run
    writes: metrics.json, metrics.csv, curves.png, epoch_NNN.ckpt)."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Show `Epoch n/max_epochs` with n counted from 1."""
        super().on_train_epoch_start(trainer, pl_module)
        if self.progress is not None and self.train_progress_bar_id is not None:
            text = f"Epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"
            self.progress.update(self.train_progress_bar_id, description=text)
