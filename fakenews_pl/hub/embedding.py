"""A converted TF-Hub text embedding as a torch module.

    emb = HubEmbedding.load("artifacts/embeddings/nnlm128")
    vectors = emb.embed_texts(["A headline", "another one"])   # (2, 128)

For training, tokenize once with `emb.tokenizer.encode(texts)` and call `emb(ids, offsets)`.
The table keeps the artifact's dtype (float32, or float64 for a module whose table is float64)
and so do the pooled vectors; the classifier's head casts them to its own dtype.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fakenews_pl.hub import artifact
from fakenews_pl.hub.pooling import COMBINERS, pool_bags, pool_lists
from fakenews_pl.hub.tokenizer import HubTokenizer

TABLE_DTYPES = (torch.float32, torch.float64)  # others are stored as float32


class HubEmbedding(nn.Module):
    """Vocabulary + OOV-bucket table pooled per text, as the Hub module's combiner does it.

    `table` keeps its dtype if float32 or float64 (any other is cast to float32).
    """

    def __init__(
        self,
        table: torch.Tensor,
        tokenizer: HubTokenizer,
        combiner: str = "sqrtn",
        trainable: bool = False,
        sparse: bool = False,
        meta: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if combiner not in COMBINERS:
            raise ValueError(f"combiner must be one of {COMBINERS}, got {combiner!r}")
        rows = tokenizer.vocab_size + tokenizer.oov_buckets
        if table.ndim != 2 or table.shape[0] != rows:
            raise ValueError(f"table must have {rows} rows (vocab + OOV), got {tuple(table.shape)}")
        self.tokenizer = tokenizer
        self.combiner = combiner
        self.meta = dict(meta or {})
        # The bag holds the table and the sparse flag; pooling is `pool_bags` (TF's order).
        table = table if table.dtype in TABLE_DTYPES else table.float()
        self.bag = nn.EmbeddingBag.from_pretrained(
            table, freeze=not trainable, mode="sum", sparse=sparse
        )

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        trainable: bool = False,
        sparse: bool = False,
        verify: bool = True,
    ) -> HubEmbedding:
        """Load a directory written by `scripts/convert_tfhub.py`.

        `verify` checks the sha256 of the table and vocabulary against meta.json (once per
        process while the files are unchanged: `artifact.verified_meta`); meta.json's own
        checksum is checked either way.
        """
        loaded = artifact.read(path, verify=verify)
        return cls(
            loaded.table,
            loaded.tokenizer,
            combiner=loaded.meta["combiner"],
            trainable=trainable,
            sparse=sparse,
            meta=loaded.meta,
        )

    @property
    def dim(self) -> int:
        """The vector size D."""
        return self.bag.embedding_dim

    @property
    def dtype(self) -> torch.dtype:
        """The table's dtype, and so the pooled vectors': float32 or float64."""
        return self.bag.weight.dtype

    @property
    def num_rows(self) -> int:
        """Vocabulary rows plus OOV-bucket rows."""
        return self.bag.num_embeddings

    @property
    def weight(self) -> torch.Tensor:
        """The (num_rows, D) table."""
        return self.bag.weight

    def set_trainable(self, trainable: bool) -> None:
        """Freeze or unfreeze the table."""
        self.bag.weight.requires_grad_(trainable)

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor | None = None) -> torch.Tensor:
        """(total_tokens,) ids, (B,) offsets -> (B, D) pooled vectors; empty bags give zeros.

        Summed in the order of TF's SparseSegmentSqrtN/Mean/Sum kernel, in the table's dtype,
        so the output equals the Hub module's bit for bit on CPU, for texts of any length.
        Without `offsets`: (T, D), each id's own row (the sequence encoders' lookup; row
        gradients when the table trains sparse, like the bag's).
        """
        if offsets is None:
            return F.embedding(ids, self.bag.weight, sparse=self.bag.sparse)
        return pool_bags(self.bag.weight, ids, offsets, self.combiner, sparse=self.bag.sparse)

    def pool_lists(self, ids: list[int], offsets: list[int]) -> torch.Tensor:
        """`forward` of a few bags given as lists (`tokenizer.encode_few`), in evaluation: the
        same (B, D) vectors without the numpy plan (`pooling.pool_lists`)."""
        return pool_lists(self.bag.weight, ids, offsets, self.combiner)

    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Texts -> (ids, offsets) tensors for `forward`."""
        ids, offsets = self.tokenizer.encode(texts)
        return torch.from_numpy(ids), torch.from_numpy(offsets)

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Texts -> (N, D) vectors in the table's dtype, equal to the Hub module's output."""
        ids, offsets = self.encode(texts)
        return self(ids.to(self.weight.device), offsets.to(self.weight.device))
