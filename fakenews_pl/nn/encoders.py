"""Sequence encoders over the converted token vectors: what TF-Hub's KerasLayer cannot do.

A Hub module returns one pooled vector per text; the converted artifact holds the per-token
table and the exact tokenizer, so the same ids can feed a convolutional or recurrent encoder
(the notebook's own next step: "using other type of layers such as LSTM or Conv1D"):

    bag     the module's sqrtn bag (`HubEmbedding`'s pooling; no encoder module)      -> (B, D)
    cnn     Kim-style 1-D convolutions of several widths, ReLU, max over time        -> (B, F*W)
    bilstm  a bidirectional LSTM over packed sequences, max or mean over time        -> (B, 2H)

Each reads the token bags the bag model reads ((T,) ids, (B,) offsets: the tokenizer's ids,
OOV buckets and empty-row fill exactly), keeps each text's first `max_tokens` tokens, and looks
their rows up through the embedding module (`HubEmbedding(ids)`), so a fine-tuned table gets
row (sparse) gradients and the exact row optimizer syncs the rows it reads, as for the bag.
Padding never reaches the output: the CNN's windows past a text's end and the LSTM's padded
steps are masked out (tested: a padded and an unpadded batch give the same vectors).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from fakenews_pl.errors import ConfigError

ENCODERS = ("bag", "cnn", "bilstm")
POOLS = ("max", "mean")


def sequence_layout(
    offsets: Tensor, total: int, max_tokens: int
) -> tuple[Tensor, Tensor, Tensor, int]:
    """(B,) bag offsets into `total` ids -> the first `max_tokens` of each bag as a padded grid:
    (T',) positions of the kept ids, (T',) their flat slots in a (B, L) grid, (B,) lengths, L.
    """
    starts = offsets.cpu().numpy().astype(np.int64)
    lengths = np.minimum(np.diff(np.append(starts, total)), max_tokens)  # (B,)
    width = max(int(lengths.max(initial=0)), 1)
    rank = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)  # (T',)
    rows = np.repeat(np.arange(len(starts)), lengths)
    keep = np.repeat(starts, lengths) + rank  # positions in ids
    device = offsets.device
    return (
        torch.from_numpy(keep).to(device),
        torch.from_numpy(rows * width + rank).to(device),
        torch.from_numpy(lengths).to(device),
        width,
    )


def padded_vectors(
    embedding: nn.Module, ids: Tensor, offsets: Tensor, max_tokens: int
) -> tuple[Tensor, Tensor]:
    """(B, L, D) float32 token vectors (zeros past each text's end) and (B,) lengths."""
    keep, slots, lengths, width = sequence_layout(offsets, ids.numel(), max_tokens)
    vectors = embedding(ids.index_select(0, keep)).float()  # (T', D): rows looked up
    grid = vectors.new_zeros(len(lengths) * width, vectors.shape[1])
    grid = grid.index_copy(0, slots, vectors)  # (B * L, D); differentiable in `vectors`
    return grid.view(len(lengths), width, -1), lengths


class CnnEncoder(nn.Module):
    """Conv1d per width (`filters` each) over the token vectors, ReLU, max over the windows
    inside the text (Kim 2014); a text shorter than a width has one window, zero-padded."""

    def __init__(self, dim: int, widths: Sequence[int] = (3, 4, 5), filters: int = 100) -> None:
        super().__init__()
        if not widths or any(int(w) < 1 for w in widths) or filters < 1:
            raise ConfigError(
                f"model.cnn: widths {list(widths)} and filters {filters} must be >= 1"
            )
        self.widths = [int(w) for w in widths]
        self.convs = nn.ModuleList(nn.Conv1d(dim, filters, w) for w in self.widths)
        self.out_dim = filters * len(self.widths)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """(B, L, D) vectors, (B,) lengths -> (B, filters * widths)."""
        x = x.transpose(1, 2)  # (B, D, L)
        pad = max(self.widths) - x.shape[2]
        if pad > 0:
            x = F.pad(x, (0, pad))
        outs = []
        for width, conv in zip(self.widths, self.convs, strict=True):
            h = torch.relu(conv(x))  # (B, F, L - w + 1)
            windows = torch.clamp(lengths - width + 1, min=1)  # (B,) windows inside the text
            inside = torch.arange(h.shape[2], device=h.device) < windows.unsqueeze(1)  # (B, W)
            outs.append(h.masked_fill(~inside.unsqueeze(1), float("-inf")).amax(dim=2))
        return torch.cat(outs, dim=1)


class BiLstmEncoder(nn.Module):
    """A bidirectional LSTM over packed sequences (padding never runs through it), then the
    max or mean of its outputs over each text's steps."""

    def __init__(self, dim: int, hidden: int = 128, layers: int = 1, pool: str = "max") -> None:
        super().__init__()
        if pool not in POOLS:
            raise ConfigError(f"model.bilstm.pool must be one of {POOLS}, got {pool!r}")
        if hidden < 1 or layers < 1:
            raise ConfigError(f"model.bilstm: hidden {hidden} and layers {layers} must be >= 1")
        self.lstm = nn.LSTM(dim, hidden, num_layers=layers, batch_first=True, bidirectional=True)
        self.pool = pool
        self.out_dim = 2 * hidden

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """(B, L, D) vectors, (B,) lengths -> (B, 2 * hidden)."""
        steps = torch.clamp(lengths, min=1)  # an empty text: one step over a zero vector
        packed = pack_padded_sequence(x, steps.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True)  # (B, L', 2H)
        inside = torch.arange(out.shape[1], device=out.device) < steps.to(out.device).unsqueeze(1)
        inside = inside.unsqueeze(2)  # (B, L', 1)
        if self.pool == "max":
            return out.masked_fill(~inside, float("-inf")).amax(dim=1)
        return (out * inside).sum(dim=1) / steps.to(out.dtype).unsqueeze(1)


class SequenceEncoder(nn.Module):
    """Token bags -> padded token vectors -> a `CnnEncoder` or `BiLstmEncoder`.

    A batch of more than `chunk_rows` rows (evaluation's 1,024, in file order) runs as chunks of
    rows of similar length, each padded to its own longest: one long text no longer pads every
    row of the batch to `max_tokens` (on seed-fakenews the median text has 12 tokens, the
    longest 2,930). Training minibatches are already bucketed by length and run whole.
    """

    def __init__(self, layer: nn.Module, max_tokens: int, chunk_rows: int = 128) -> None:
        super().__init__()
        self.layer, self.max_tokens, self.chunk_rows = layer, max_tokens, chunk_rows
        self.out_dim = layer.out_dim

    def forward(self, embedding: nn.Module, ids: Tensor, offsets: Tensor) -> Tensor:
        """(T,) ids, (B,) offsets through `embedding`'s rows -> (B, out_dim)."""
        x, lengths = padded_vectors(embedding, ids, offsets, self.max_tokens)
        if len(lengths) <= self.chunk_rows:
            return self.layer(x, lengths)
        order = torch.argsort(lengths, stable=True)
        parts = []
        for rows in order.split(self.chunk_rows):
            width = max(int(lengths[rows].max()), 1)
            parts.append(self.layer(x[rows, :width], lengths[rows]))
        return torch.cat(parts).index_select(0, torch.argsort(order))  # back in batch order


def build_encoder(
    name: str,
    dim: int,
    max_tokens: int,
    cnn: dict[str, Any] | None = None,
    bilstm: dict[str, Any] | None = None,
) -> SequenceEncoder | None:
    """The encoder `name` over `dim`-wide token vectors; None for the bag (pooling only)."""
    if name not in ENCODERS:
        raise ConfigError(f"model.encoder must be one of {ENCODERS}, got {name!r}")
    if not (isinstance(max_tokens, int) and max_tokens >= 1):
        raise ConfigError(f"model.max_tokens={max_tokens}: expected an integer >= 1")
    if name == "bag":
        return None
    if name == "cnn":
        return SequenceEncoder(CnnEncoder(dim, **dict(cnn or {})), max_tokens)
    return SequenceEncoder(BiLstmEncoder(dim, **dict(bilstm or {})), max_tokens)
