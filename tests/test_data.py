"""FakeNewsDataModule: the notebook's preprocessing, splits, errors, batches and caches."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.preprocessing import LabelEncoder

from fakenews_pl import data
from fakenews_pl.data import DataError, FakeNewsDataModule, notebook_text, read_labelled_csv
from fakenews_pl.embedding import HubEmbedding


# The notebook's own functions, copied verbatim as the reference.
def new_cleaning(data):
    cleaned_data = (
        data.replace("[", "").replace("]", "").replace("'", "").replace(" ", "").split(",")
    )
    return cleaned_data


def text_from_token(data):
    cleaned_sentence = " ".join(data)
    return cleaned_sentence


def csv_module(path: Path, embedding: Path, **kwargs) -> FakeNewsDataModule:
    """A data=csv module over one file split 67/33, with a 10% validation split."""
    args = dict(format="csv", text_column="text", label_column="label", files=[str(path)])
    return FakeNewsDataModule(str(embedding), **{**args, **kwargs})


@pytest.mark.data
def test_notebook_preprocessing_matches_the_notebook_on_seed_data(seed_data: Path) -> None:
    for path in sorted(seed_data.glob("*.csv.gz")):
        reference = pd.read_csv(path)  # as the notebook reads its CSVs
        expected = reference["for_glove"].apply(new_cleaning).apply(text_from_token)
        texts, labels = read_labelled_csv(path, "for_glove", "label", notebook=True)
        assert texts.tolist() == expected.tolist(), path.name
        # LabelEncoder over the file's labels (fit on the union: gos_1 alone is all Fake).
        codes = data.encode_labels(path, labels, ["Fake", "True"], "label")
        le = LabelEncoder().fit(["Fake", "True"])
        assert codes.tolist() == le.transform(reference["label"]).tolist()


@pytest.mark.parametrize(
    "cell",
    [
        "['Did', 'Miley', 'Cyrus']",
        "[]",
        "['a', ',', 'b']",
        "['[', 'in', ']', 'x']",
        "[\"don't\", 'stop']",
        "['  spaced  ', 'tab\tkept']",
    ],
)
def test_notebook_text_equals_reference_on_edge_cases(cell: str) -> None:
    assert notebook_text(pd.Series([cell])).iloc[0] == text_from_token(new_cleaning(cell))


def write(path: Path, frame: pd.DataFrame) -> Path:
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("frame", "notebook", "needles"),
    [
        (pd.DataFrame({"text": ["a"], "label": ["x"]}), True, ["'for_glove'", "text_column"]),
        (pd.DataFrame({"for_glove": ["['a']"]}), True, ["'label'", "label_column"]),
        (
            pd.DataFrame({"for_glove": ["['a']", "", "['c']"], "label": ["Fake"] * 3}),
            True,
            ["data row 2", "'for_glove'", "empty"],
        ),
        (
            pd.DataFrame({"for_glove": ["['a']", "a b c"], "label": ["Fake"] * 2}),
            True,
            ["data row 2", "'for_glove'", "Python-list"],
        ),
        (
            pd.DataFrame({"text": ["a", "b"], "label": ["Fake", None]}),
            False,
            ["data row 2", "'label'"],
        ),
    ],
)
def test_bad_files_raise_one_clear_error(
    tmp_path: Path, frame: pd.DataFrame, notebook: bool, needles: list[str]
) -> None:
    path = write(tmp_path / "bad.csv", frame)
    text_column = "for_glove" if notebook else "text"
    with pytest.raises(DataError) as info:
        read_labelled_csv(path, text_column, "label", notebook)
    message = str(info.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message


def test_missing_file_and_unexpected_label_are_named(tmp_path: Path, demo_assets: dict) -> None:
    with pytest.raises(DataError, match="no such data file"):
        read_labelled_csv(tmp_path / "absent.csv", "text", "label", notebook=False)
    frame = pd.DataFrame({"text": ["a", "b", "c"], "label": ["Fake", "True", "Maybe"]})
    path = write(tmp_path / "labels.csv", frame)
    dm = csv_module(path, demo_assets["embedding"], label_names=["Fake", "True"])
    with pytest.raises(DataError) as info:
        dm.setup()
    assert all(s in str(info.value) for s in (str(path), "data row 3", "'Maybe'", "'True'"))


def test_non_binary_labels_are_refused(tmp_path: Path, demo_assets: dict) -> None:
    frame = pd.DataFrame({"text": list("abcdef"), "label": ["x", "y", "z"] * 2})
    dm = csv_module(write(tmp_path / "three.csv", frame), demo_assets["embedding"])
    with pytest.raises(DataError, match=r"binary.*two classes"):
        dm.setup()


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
    demo_dir = demo_assets["data_dir"] / "demo"
    dm = FakeNewsDataModule(
        str(demo_assets["embedding"]),
        train_csv=str(demo_dir / "train.csv"),
        test_csv=str(demo_dir / "test.csv"),
        label_names=["Fake", "True"],
        val_source="test",
    )
    dm.setup()
    expected = pd.read_csv(demo_dir / "test.csv")["for_glove"].apply(new_cleaning)
    assert dm.texts("test").tolist() == expected.apply(text_from_token).tolist()


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
    (batch,) = list(dm.train_dataloader())
    assert batch["minibatch"] == 32 and len(batch["labels"]) == len(dm.rows["train"])
    assert len(batch["offsets"]) == len(dm.rows["train"])
    # A different shuffle each epoch, of the same rows.
    (again,) = list(dm.train_dataloader())
    assert not torch.equal(batch["ids"], again["ids"])
    assert torch.equal(batch["labels"].sort().values, again["labels"].sort().values)


def test_token_cache_is_reused_and_keyed_by_file_contents(
    tmp_path: Path, tiny_csv: Path, demo_assets: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    first = csv_module(tiny_csv, demo_assets["embedding"], cache_dir=str(cache))
    first.setup()
    assert len(list((cache / "tokens").glob("*.npz"))) == 1

    def refuse(*args, **kwargs):
        raise AssertionError("tokenized again despite the cache")

    monkeypatch.setattr(data.HubTokenizer, "encode", refuse)
    second = csv_module(tiny_csv, demo_assets["embedding"], cache_dir=str(cache))
    second.setup()
    assert np.array_equal(second.corpus.ids, first.corpus.ids)
    # Changed contents, same name: a new key, so the stale cache is not used.
    frame = pd.read_csv(tiny_csv)
    frame.loc[0, "text"] = "an entirely different headline"
    frame.to_csv(tiny_csv, index=False)
    with pytest.raises(AssertionError, match="tokenized again"):
        csv_module(tiny_csv, demo_assets["embedding"], cache_dir=str(cache)).setup()


def test_pooled_cache_equals_the_embedding_output(tiny_csv: Path, demo_assets: dict) -> None:
    dm = csv_module(tiny_csv, demo_assets["embedding"])
    dm.setup()
    embedding = HubEmbedding.load(demo_assets["embedding"])
    token_batch = dm.dataset("test").__getitems__(list(range(8)))
    dm.cache_features(embedding)
    pooled_batch = dm.dataset("test").__getitems__(list(range(8)))
    expected = embedding(token_batch["ids"], token_batch["offsets"])
    assert torch.equal(pooled_batch["pooled"], expected)  # bit for bit
    assert torch.equal(pooled_batch["labels"], token_batch["labels"])
    dm.cache_features(None)
    assert "ids" in dm.dataset("test").__getitems__([0])


def test_gzipped_csv_with_numeric_labels(tmp_path: Path, demo_assets: dict) -> None:
    frame = pd.DataFrame({"headline": [f"story {i}" for i in range(30)], "y": [0, 1, 1] * 10})
    path = tmp_path / "numbers.csv.gz"
    frame.to_csv(path, index=False)
    dm = csv_module(path, demo_assets["embedding"], text_column="headline", label_column="y")
    dm.setup()
    assert dm.class_names == ["0", "1"]
    assert dm.corpus.labels.tolist() == frame["y"].tolist()


def test_options_are_validated(demo_assets: dict) -> None:
    emb = str(demo_assets["embedding"])
    with pytest.raises(ValueError, match="either data.files"):
        FakeNewsDataModule(emb, train_csv="a.csv")
    with pytest.raises(ValueError, match="either data.files"):
        FakeNewsDataModule(emb, files=["a.csv"], train_csv="a.csv", test_csv="b.csv")
    with pytest.raises(ValueError, match="val_source"):
        FakeNewsDataModule(emb, files=["a.csv"], val_source="train")
