"""A converted TF-Hub text embedding as a torch module.

    emb = HubEmbedding.load("artifacts/embeddings/nnlm128")
    vectors = emb.embed_texts(["A headline", "another one"])   # (2, 128)

For training, tokenize once with `emb.tokenizer.encode(texts)` and call `emb(ids, offsets)`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from fakenews_pl import artifact
from fakenews_pl.pooling import COMBINERS, pool_bags
from fakenews_pl.tokenizer import HubTokenizer, TextRecipe


class HubEmbedding(nn.Module):
    """Vocabulary + OOV-bucket table pooled per text, as the Hub module's combiner does it."""

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
        self.bag = nn.EmbeddingBag.from_pretrained(
            table.float(), freeze=not trainable, mode="sum", sparse=sparse
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

        `verify` checks the sha256 of the table and vocabulary against meta.json.
        """
        path = Path(path)
        meta = artifact.read_meta(path)
        if verify:
            artifact.verify_checksums(path, meta)
        tensors = load_file(path / artifact.TABLE_FILE)
        if artifact.TABLE_KEY not in tensors:
            raise artifact.ArtifactError(
                f"{path / artifact.TABLE_FILE} has no tensor {artifact.TABLE_KEY!r}"
            )
        tokenizer = load_tokenizer(path, meta)
        return cls(
            tensors[artifact.TABLE_KEY],
            tokenizer,
            combiner=meta["combiner"],
            trainable=trainable,
            sparse=sparse,
            meta={**meta, "path": str(path)},
        )

    @property
    def dim(self) -> int:
        return self.bag.embedding_dim

    @property
    def num_rows(self) -> int:
        return self.bag.num_embeddings

    @property
    def weight(self) -> torch.Tensor:
        return self.bag.weight

    def set_trainable(self, trainable: bool) -> None:
        self.bag.weight.requires_grad_(trainable)

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """(total_tokens,) ids, (B,) offsets -> (B, D) pooled vectors; empty bags give zeros.

        Summed in the float32 order of TF's SparseSegmentSqrtN/Mean/Sum kernel, so the output
        equals the Hub module's bit for bit on CPU, for texts of any length.
        """
        return pool_bags(self.bag.weight, ids, offsets, self.combiner, sparse=self.bag.sparse)

    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Texts -> (ids, offsets) tensors for `forward`."""
        ids, offsets = self.tokenizer.encode(texts)
        return torch.from_numpy(ids), torch.from_numpy(offsets)

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Texts -> (N, D) float32 vectors, equal to the Hub module's output."""
        ids, offsets = self.encode(texts)
        return self(ids.to(self.weight.device), offsets.to(self.weight.device))


def load_tokenizer(path: str | os.PathLike, meta: dict[str, Any] | None = None) -> HubTokenizer:
    """The tokenizer of a converted embedding, without loading its table."""
    path = Path(path)
    meta = meta or artifact.read_meta(path)
    vocab = artifact.read_vocab(path / artifact.VOCAB_FILE)
    if len(vocab) != meta["vocab_size"]:
        raise artifact.ArtifactError(
            f"{path / artifact.VOCAB_FILE} has {len(vocab)} tokens, "
            f"meta.json says {meta['vocab_size']}"
        )
    return HubTokenizer(vocab, meta["oov_buckets"], TextRecipe.from_dict(meta["recipe"]))
