"""The network, built in one place: embedding -> encoder -> head.

    HubEmbedding (D) -> [sequence encoder (F)] -> Dense 256 ReLU -> Dropout 0.3
                     -> Dense 64 ReLU -> Dropout 0.2 -> Dense 1          -> (B,) logits

`FakeNewsNet.from_config(embedding, NetConfig(...))` is the only place layers are built. The
LightningModule (`fakenews_pl.training.model`) trains one, and the `Classifier`, bundles, ONNX
export and fused epochs hold or take one. `NetConfig` is all a checkpoint or a bundle records
to rebuild it around its embedding (sizes, never tensors).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from fakenews_pl.nn.encoders import ENCODERS, SequenceEncoder, build_encoder
from fakenews_pl.nn.head import DenseHead


@dataclass(frozen=True)
class NetConfig:
    """What a `FakeNewsNet` is made of, beyond its embedding (whose width it records).

    `encoder`: "bag" (the module's own pooling: the notebook's model), "cnn" or "bilstm", fed
    each text's first `max_tokens` tokens; `cnn`/`bilstm`: that encoder's keyword arguments
    (`fakenews_pl.nn.encoders`). `hidden_sizes`/`dropouts`: the head's dense layers.
    """

    dim: int
    encoder: str = "bag"
    max_tokens: int = 256
    cnn: Mapping[str, Any] = field(default_factory=dict)
    bilstm: Mapping[str, Any] = field(default_factory=dict)
    hidden_sizes: tuple[int, ...] = (256, 64)
    dropouts: tuple[float, ...] = (0.3, 0.2)

    def __post_init__(self) -> None:
        # Lists from YAML or JSON, tuples here: configs compare equal however they were read.
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
        object.__setattr__(self, "dropouts", tuple(float(p) for p in self.dropouts))
        object.__setattr__(self, "cnn", dict(self.cnn or {}))
        object.__setattr__(self, "bilstm", dict(self.bilstm or {}))

    @property
    def encoder_settings(self) -> dict[str, Any]:
        """The encoder's part, as bundle.json's `encoder` records it: `{"name": "bag"}`, or the
        name, `max_tokens` and that encoder's keyword arguments."""
        if self.encoder == "bag":
            return {"name": "bag"}
        return {"name": self.encoder, "max_tokens": self.max_tokens,
                self.encoder: dict(getattr(self, self.encoder))}  # fmt: skip

    @classmethod
    def from_settings(
        cls, dim: int, encoder: Mapping[str, Any] | None, head: Mapping[str, Any]
    ) -> NetConfig:
        """The config from bundle.json's `encoder` and `head` entries (see `encoder_settings`)."""
        settings = dict(encoder or {"name": "bag"})
        name = settings.pop("name", "bag")
        unknown = sorted(set(settings) - {"max_tokens", *ENCODERS})
        if unknown:
            raise TypeError(f"unexpected encoder settings {unknown}")
        return cls(
            dim, name, settings.get("max_tokens", 256), settings.get("cnn") or {},
            settings.get("bilstm") or {}, head["hidden_sizes"], head["dropouts"],
        )  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        """The config as plain JSON-ready values."""
        values = asdict(self)
        return {**values, "hidden_sizes": list(self.hidden_sizes), "dropouts": list(self.dropouts)}


class HoldsNet:
    """The parts of `self.net` (a `FakeNewsNet`) by name, for the classes that hold one (the
    LightningModule, the Classifier)."""

    net: FakeNewsNet

    @property
    def embedding(self) -> nn.Module:
        """The network's embedding (a `HubEmbedding`: tokenizer, table, the artifact's meta)."""
        return self.net.embedding

    @property
    def encoder(self) -> SequenceEncoder | None:
        """The network's sequence encoder (None: the bag)."""
        return self.net.encoder

    @property
    def head(self) -> DenseHead:
        """The network's dense head."""
        return self.net.head


class FakeNewsNet(nn.Module):
    """Embedding, optional sequence encoder and dense head: token bags -> (B,) logits."""

    def __init__(
        self,
        embedding: nn.Module,
        encoder: SequenceEncoder | None,
        head: DenseHead,
        config: NetConfig,
    ) -> None:
        super().__init__()
        self.embedding, self.encoder, self.head, self.config = embedding, encoder, head, config

    @classmethod
    def from_config(cls, embedding: nn.Module, config: NetConfig) -> FakeNewsNet:
        """Build the encoder and the head for `embedding` (a `HubEmbedding`) as `config` says."""
        if config.dim != embedding.dim:
            raise ValueError(f"config dim {config.dim} != the embedding's {embedding.dim}")
        encoder = build_encoder(
            config.encoder, embedding.dim, config.max_tokens, config.cnn, config.bilstm
        )
        features = embedding.dim if encoder is None else encoder.out_dim
        head = DenseHead(features, config.hidden_sizes, config.dropouts)
        return cls(embedding, encoder, head, config)

    def features(self, ids: Tensor, offsets: Tensor) -> Tensor:
        """(T,) ids, (B,) offsets -> (B, F) the head's input: the bag's pooled vectors, or the
        sequence encoder's features."""
        if self.encoder is None:
            return self.embedding(ids, offsets)  # (B, D)
        return self.encoder(self.embedding, ids, offsets)

    def classify(self, features: Tensor) -> Tensor:
        """(B, F) features -> (B,) logits; a float64 table's vectors meet a float32 head."""
        return self.head(features.to(self.head[0].weight.dtype))

    def forward(self, ids: Tensor, offsets: Tensor) -> Tensor:
        """(T,) ids, (B,) offsets -> (B,) logits."""
        return self.classify(self.features(ids, offsets))

    def head_parameters(self) -> list[nn.Parameter]:
        """What the head's optimizer trains: the head's and a sequence encoder's parameters."""
        params = list(self.head.parameters())
        return params + ([] if self.encoder is None else list(self.encoder.parameters()))

    @torch.no_grad()
    def probabilities(self, ids: Tensor, offsets: Tensor) -> Tensor:
        """(T,) ids, (B,) offsets -> (B,) float32 probability of class 1 (evaluation)."""
        return torch.sigmoid(self(ids, offsets)).float()

    @torch.no_grad()
    def lean_probabilities(self, ids: list[int], offsets: list[int]) -> Tensor:
        """`probabilities` of a few bags given as lists (`HubTokenizer.encode_few`), for the bag
        model: the same (B,) float32, bit for bit, by the same ops without the batch machinery
        (`HubEmbedding.pool_lists`, `DenseHead.eval_logits`). Evaluation only (no dropout)."""
        if self.encoder is not None:
            raise ValueError(f"the lean path is the bag model's, not {self.config.encoder}'s")
        features = self.embedding.pool_lists(ids, offsets)  # (B, D)
        logits = self.head.eval_logits(features.to(self.head[0].weight.dtype))
        return torch.sigmoid(logits).float()
