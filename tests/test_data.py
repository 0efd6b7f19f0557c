"""FakeNewsDataModule: splits, batches, fused epochs, pooled vectors, option checks."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pytorch_lightning import Trainer

from fakenews_pl.callbacks import pool_corpus
from fakenews_pl.corpus import notebook_text
from fakenews_pl.data import FakeNewsDataModule
from fakenews_pl.embedding import HubEmbedding


def csv_module(path: Path, embedding: Path, **kwargs) -> FakeNewsDataModule:
    """A data=csv module over one file split 67/33, with a 10% validation split."""
    args = dict(format="csv", text_column="text", label_column="label", files=[str(path)])
    return FakeNewsDataModule(str(embedding), **{**args, **kwargs})


def test_splits_are_stratified_seeded_and_disjoint(tiny_csv: Path, demo_assets: dict) -> None:
    dm = csv_module(tiny_csv, demo_assets["embedding"], split_seed=3)
    dm.setup()
    rows = dm.rows
    assert dm.class_names == ["fake", "real"]  # sorted, like LabelEncoder
    everything = np.concatenate([rows["train"], rows["val"], rows["test"]])
    assert sorted(everything.tolist()) == list(range(60))  # disjoint and complete
    assert len(rows["test"]) == 20  # ceil(0.33 * 60)
    # Stratified: every part keeps the 40/60 class ratio (to within one row).
    for split in ("train", "test"):
        share = dm.labels(split).mean()
        assert abs(share - 0.6) <= 1 / len(rows[split])
    again = csv_module(tiny_csv, demo_assets["embedding"], split_seed=3)
    again.setup()
    other = csv_module(tiny_csv, demo_assets["embedding"], split_seed=4)
    other.setup()
    assert np.array_equal(again.rows["test"], rows["test"])
    assert not np.array_equal(other.rows["test"], rows["test"])


def test_val_source_test_validates_on_the_test_set(tiny_csv: Path, demo_assets: dict) -> None:
    dm = csv_module(tiny_csv, demo_assets["embedding"], val_source="test")
    dm.setup()
    assert np.array_equal(dm.rows["val"], dm.rows["test"])
    assert len(dm.rows["train"]) + len(dm.rows["test"]) == 60


def test_train_and_test_files_keep_file_order(demo_assets: dict) -> None:
    demo_dir = demo_assets["demo_dir"]
    dm = FakeNewsDataModule(
        str(demo_assets["embedding"]),
        train_csv=str(demo_dir / "train.csv"),
        test_csv=str(demo_dir / "test.csv"),
        label_names=["Fake", "True"],
        val_source="test",
    )
    dm.setup()
    expected = notebook_text(pd.read_csv(demo_dir / "test.csv")["for_glove"])
    assert dm.texts("test").tolist() == expected.tolist()


def test_batches_equal_the_tokenizer_output(tiny_csv: Path, demo_assets: dict) -> None:
    dm = csv_module(tiny_csv, demo_assets["embedding"])
    dm.setup()
    positions = [5, 0, 17, 3]
    batch = dm.dataset("train").__getitems__(positions)
    texts = dm.texts("train")[positions].tolist()
    ids, offsets = HubEmbedding.load(demo_assets["embedding"]).encode(texts)
    assert torch.equal(batch["ids"], ids)
    assert torch.equal(batch["offsets"], offsets)
    labels = torch.from_numpy(dm.labels("train")[positions]).float()
    assert torch.equal(batch["labels"], labels)


def test_dataloader_yields_batches_of_32(tiny_csv: Path, demo_assets: dict) -> None:
    dm = csv_module(tiny_csv, demo_assets["embedding"], val_fraction=0.1, fuse_train_batches=False)
    dm.setup()
    sizes = [len(b["labels"]) for b in dm.train_dataloader()]
    assert sizes[0] == 32 and sum(sizes) == len(dm.rows["train"])


def test_fused_dataloader_yields_the_epoch_as_one_batch_of_minibatches(
    tiny_csv: Path, demo_assets: dict
) -> None:
    dm = csv_module(tiny_csv, demo_assets["embedding"], val_fraction=0.1)
    dm.setup()
    assert len(list(dm.train_dataloader())) > 1  # no trainer: nothing to fuse for
    dm.trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False)
    (batch,) = list(dm.train_dataloader())
    assert batch["minibatch"] == 32 and len(batch["labels"]) == len(dm.rows["train"])
    assert len(batch["offsets"]) == len(dm.rows["train"])
    # The order depends on the seed and the epoch alone: a different shuffle each epoch, of
    # the same rows (Lightning calls set_epoch before each epoch).
    loader = dm.train_dataloader()
    (same,) = list(loader)
    assert torch.equal(batch["ids"], same["ids"])
    loader.batch_sampler.sampler.set_epoch(1)
    (again,) = list(loader)
    assert not torch.equal(batch["ids"], again["ids"])
    assert torch.equal(batch["labels"].sort().values, again["labels"].sort().values)


def test_pooled_cache_equals_the_embedding_output(tiny_csv: Path, demo_assets: dict) -> None:
    dm = csv_module(tiny_csv, demo_assets["embedding"])
    dm.setup()
    embedding = HubEmbedding.load(demo_assets["embedding"])
    token_batch = dm.dataset("test").__getitems__(list(range(8)))
    dm.use_pooled(pool_corpus(dm.corpus, embedding))
    pooled_batch = dm.dataset("test").__getitems__(list(range(8)))
    expected = embedding(token_batch["ids"], token_batch["offsets"])
    assert torch.equal(pooled_batch["pooled"], expected)  # bit for bit
    assert torch.equal(pooled_batch["labels"], token_batch["labels"])
    dm.use_pooled(None)
    assert "ids" in dm.dataset("test").__getitems__([0])


def test_options_are_validated(demo_assets: dict) -> None:
    emb = str(demo_assets["embedding"])
    with pytest.raises(ValueError, match="either data.files"):
        FakeNewsDataModule(emb, train_csv="a.csv")
    with pytest.raises(ValueError, match="either data.files"):
        FakeNewsDataModule(emb, files=["a.csv"], train_csv="a.csv", test_csv="b.csv")
    with pytest.raises(ValueError, match="val_source"):
        FakeNewsDataModule(emb, files=["a.csv"], val_source="train")
