"""FakeNewsDataModule: splits, batches, fused epochs, pooled vectors, option checks."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fakenews_pl.data.batches import BatchPlan
from fakenews_pl.data.corpus import notebook_text
from fakenews_pl.data.datamodule import FakeNewsDataModule
from fakenews_pl.hub.embedding import HubEmbedding
from fakenews_pl.training.callbacks import pool_corpus


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
    assert len(list(dm.train_dataloader())) > 1  # no plan handed over: minibatches
    dm.use_plan(BatchPlan("epoch"))
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
    dm.use_plan(BatchPlan(pooled=pool_corpus(dm.corpus, embedding)))
    pooled_batch = dm.dataset("test").__getitems__(list(range(8)))
    expected = embedding(token_batch["ids"], token_batch["offsets"])
    assert torch.equal(pooled_batch["pooled"], expected)  # bit for bit
    assert torch.equal(pooled_batch["labels"], token_batch["labels"])
    dm.use_plan(BatchPlan())
    assert "ids" in dm.dataset("test").__getitems__([0])


def test_options_are_validated(demo_assets: dict) -> None:
    emb = str(demo_assets["embedding"])
    with pytest.raises(ValueError, match="either data.files"):
        FakeNewsDataModule(emb, train_csv="a.csv")
    with pytest.raises(ValueError, match="either data.files"):
        FakeNewsDataModule(emb, files=["a.csv"], train_csv="a.csv", test_csv="b.csv")
    with pytest.raises(ValueError, match="val_source"):
        FakeNewsDataModule(emb, files=["a.csv"], val_source="train")


# ---------------------------------------------------------------------------------------------
# data=isot: Fake.csv and True.csv in data.dir
# ---------------------------------------------------------------------------------------------


def write_isot(directory: Path, rows: int = 30) -> Path:
    """Fake.csv and True.csv of `rows` rows each in the ISOT columns, True texts with datelines."""
    directory.mkdir(parents=True, exist_ok=True)
    for label, lead in (("Fake", "BREAKING: you will not believe"), ("True", "Senate votes")):
        frame = pd.DataFrame(
            {
                "title": [f"{lead} story {i}" for i in range(rows)],
                "text": [
                    f"WASHINGTON (Reuters) - article {i} body" if label == "True" else f"body {i}"
                    for i in range(rows)
                ],
                "subject": ["politicsNews" if label == "True" else "News"] * rows,
                "date": ["December 31, 2017"] * rows,
            }
        )
        frame.to_csv(directory / f"{label}.csv", index=False)
    return directory


def test_isot_module_splits_and_yields_batches(tmp_path: Path, demo_assets: dict) -> None:
    directory = write_isot(tmp_path / "isot")
    dm = FakeNewsDataModule(
        str(demo_assets["embedding"]),
        format="isot",
        dir=str(directory),
        text_field="both",
        fuse_train_batches=False,
    )
    assert dm.paths == [str(directory / "Fake.csv"), str(directory / "True.csv")]
    dm.setup()
    assert dm.class_names == ["Fake", "True"]
    rows = dm.rows
    everything = np.concatenate([rows["train"], rows["val"], rows["test"]])
    assert sorted(everything.tolist()) == list(range(60))  # both files, split together
    assert len(rows["test"]) == 20 and dm.labels("test").sum() == 10  # stratified 0.33
    texts = dict(zip(dm.texts("test").tolist(), dm.labels("test").tolist(), strict=True))
    assert all(label == text.startswith("Senate votes") for text, label in texts.items())
    assert not any("Reuters" in text for text in texts)  # the dateline is stripped
    sizes = [len(batch["labels"]) for batch in dm.train_dataloader()]
    assert sizes[0] == 32 and sum(sizes) == len(rows["train"])
    (val,) = list(dm.val_dataloader())
    assert torch.equal(val["labels"], torch.from_numpy(dm.labels("val")).float())


def test_isot_options_are_validated(tmp_path: Path, demo_assets: dict) -> None:
    emb, directory = str(demo_assets["embedding"]), str(tmp_path)
    with pytest.raises(ValueError, match="give data.dir"):
        FakeNewsDataModule(emb, format="isot")
    with pytest.raises(ValueError, match="leave data.files"):
        FakeNewsDataModule(emb, format="isot", dir=directory, files=["a.csv"])
    with pytest.raises(ValueError, match="data.text_field must be one of"):
        FakeNewsDataModule(emb, format="isot", dir=directory, text_field="body")
    with pytest.raises(ValueError, match="Fake or True"):
        FakeNewsDataModule(emb, format="isot", dir=directory, label_names=["fake", "real"])


def test_data_isot_composes_checks_and_instantiates(
    tmp_path: Path, demo_assets: dict, compose_train
) -> None:
    from hydra.utils import instantiate

    from fakenews_pl.training.config import check_train_config

    default = compose_train(tmp_path / "default", "data=isot")
    assert default.data.dir == f"{demo_assets['data_dir']}/isot"  # paths.data_dir/isot
    assert default.data.text_field == "title" and default.data.strip_dateline is True
    directory = write_isot(tmp_path / "isot")
    cfg = compose_train(tmp_path / "out", "data=isot", f"data.dir={directory}")
    check_train_config(cfg)
    dm = instantiate(cfg.data, embedding_path=str(demo_assets["embedding"]), _convert_="all")
    dm.setup()
    assert dm.class_names == ["Fake", "True"]
    assert dm.hparams.format == "isot" and dm.hparams.text_field == "title"
    titles = pd.concat([pd.read_csv(path) for path in dm.paths])["title"].tolist()
    texts = np.concatenate([dm.texts(split) for split in ("train", "val", "test")])
    assert sorted(texts.tolist()) == sorted(titles)  # text_field=title: the headlines alone
