"""PlanBatches: the batch plan decided once per fit; frozen embeddings are pooled once, bit for
bit the embedding's output."""

import numpy as np
import torch
from pytorch_lightning import Trainer

from fakenews_pl.data import batches
from fakenews_pl.data.batches import BatchPlan
from fakenews_pl.data.datamodule import FakeNewsDataModule
from fakenews_pl.training.callbacks import PlanBatches, plan_batches, pool_corpus
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
        one = Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False)
        self.strategy, self.precision_plugin = one.strategy, one.precision_plugin


def test_the_batch_plan_is_decided_once_and_handed_to_the_data(demo_assets: dict) -> None:
    """A frozen bag model trains on pooled vectors in fused epochs; a trainable table on token
    ids; a sequence encoder on length buckets; data.fuse_train_batches=false and
    data.length_buckets force their way."""
    dm = _datamodule(demo_assets)
    path = str(demo_assets["embedding"])
    frozen, trainable = FakeNewsClassifier(path), FakeNewsClassifier(path, trainable=True)
    cnn = FakeNewsClassifier(path, encoder="cnn", cnn={"widths": [2], "filters": 2})
    PlanBatches().setup(_Trainer(dm), frozen, "fit")
    assert dm.plan.kind == "epoch" and dm.plan.pooled is not None
    assert "pooled" in dm.dataset("train").__getitems__([0])
    assert torch.equal(dm.plan.pooled, pool_corpus(dm.corpus, frozen.embedding))
    PlanBatches().setup(_Trainer(dm), trainable, "fit")
    assert dm.plan == BatchPlan("epoch") and "ids" in dm.dataset("train").__getitems__([0])
    PlanBatches().setup(_Trainer(dm), cnn, "fit")
    assert dm.plan == BatchPlan("buckets")
    trainer = _Trainer(dm)
    assert plan_batches(trainable.net, trainer, dm.corpus, False, None) == BatchPlan()
    assert plan_batches(trainable.net, trainer, dm.corpus, True, True) == BatchPlan("buckets")
    assert plan_batches(cnn.net, trainer, dm.corpus, True, False) == BatchPlan()
    assert plan_batches(trainable.net, None, dm.corpus, True, None) == BatchPlan()  # no trainer
