"""PooledFeatures: frozen embeddings are pooled once, bit for bit the embedding's output."""

from pathlib import Path

import numpy as np
import torch

from fakenews_pl.data import batches
from fakenews_pl.data.datamodule import FakeNewsDataModule
from fakenews_pl.training.callbacks import PooledFeatures, pool_corpus
from fakenews_pl.training.model import FakeNewsClassifier


def _datamodule(demo_assets: dict) -> FakeNewsDataModule:
    dm = FakeNewsDataModule(
        str(demo_assets["embedding"]),
        train_csv=str(demo_assets["train_csv"]),
        test_csv=str(demo_assets["test_csv"]),
    )
    dm.setup()
    return dm


def test_pool_corpus_equals_the_embedding_on_each_row(demo_assets: dict) -> None:
    dm = _datamodule(demo_assets)
    model = FakeNewsClassifier(str(demo_assets["embedding"]))
    pooled = pool_corpus(dm.corpus, model.embedding, chunk=100)  # several chunks
    rows = np.array([0, 7, 150, len(dm.corpus.labels) - 1])
    c = dm.corpus
    ids, offsets = batches.gather_bags(c.ids, c.starts, c.lengths, rows)
    assert pooled.shape == (len(c.labels), model.embedding.dim)
    assert torch.equal(pooled[rows], model.embedding(ids, offsets))


class _Trainer:
    def __init__(self, datamodule: FakeNewsDataModule) -> None:
        self.datamodule = datamodule


def test_pooled_features_pools_only_a_frozen_table(demo_assets: dict, tmp_path: Path) -> None:
    dm = _datamodule(demo_assets)
    frozen = FakeNewsClassifier(str(demo_assets["embedding"]))
    PooledFeatures().setup(_Trainer(dm), frozen, "fit")
    assert dm.pooled is not None and "pooled" in dm.dataset("train").__getitems__([0])
    trainable = FakeNewsClassifier(str(demo_assets["embedding"]), trainable=True)
    PooledFeatures().setup(_Trainer(dm), trainable, "fit")
    assert dm.pooled is None and "ids" in dm.dataset("train").__getitems__([0])
