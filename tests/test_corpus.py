"""The corpus: CSV reading and validation, the notebook's preprocessing, labels, the token
cache and the splits."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.preprocessing import LabelEncoder

from fakenews_pl import corpus
from fakenews_pl.corpus import DataError, notebook_text, read_labelled_csv


# The notebook's own functions, copied verbatim as the reference.
def new_cleaning(data):
    cleaned_data = (
        data.replace("[", "").replace("]", "").replace("'", "").replace(" ", "").split(",")
    )
    return cleaned_data


def text_from_token(data):
    cleaned_sentence = " ".join(data)
    return cleaned_sentence


def load_csv(path: Path, embedding: Path, **kwargs) -> corpus.Corpus:
    """`corpus.load` of one data=csv file (text, label)."""
    args = dict(fmt="csv", text_column="text", label_column="label")
    return corpus.load([path], embedding, **{**args, **kwargs})


@pytest.mark.data
def test_notebook_preprocessing_matches_the_notebook_on_seed_data(seed_data: Path) -> None:
    for path in sorted(seed_data.glob("*.csv.gz")):
        reference = pd.read_csv(path)  # as the notebook reads its CSVs
        expected = reference["for_glove"].apply(new_cleaning).apply(text_from_token)
        texts, labels = read_labelled_csv(path, "for_glove", "label", notebook=True)
        assert texts.tolist() == expected.tolist(), path.name
        # LabelEncoder over the file's labels (fit on the union: gos_1 alone is all Fake).
        codes = corpus.encode_labels(path, labels, ["Fake", "True"], "label")
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
    with pytest.raises(DataError) as info:
        load_csv(path, demo_assets["embedding"], label_names=["Fake", "True"])
    assert all(s in str(info.value) for s in (str(path), "data row 3", "'Maybe'", "'True'"))


def test_non_binary_labels_are_refused(tmp_path: Path, demo_assets: dict) -> None:
    frame = pd.DataFrame({"text": list("abcdef"), "label": ["x", "y", "z"] * 2})
    with pytest.raises(DataError, match=r"binary.*two classes"):
        load_csv(write(tmp_path / "three.csv", frame), demo_assets["embedding"])


def test_token_cache_is_reused_and_keyed_by_file_contents(
    tmp_path: Path, tiny_csv: Path, demo_assets: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    first = load_csv(tiny_csv, demo_assets["embedding"], cache_dir=cache)
    assert len(list((cache / "tokens").glob("*.npz"))) == 1

    def refuse(*args, **kwargs):
        raise AssertionError("tokenized again despite the cache")

    monkeypatch.setattr(corpus.HubTokenizer, "encode", refuse)
    second = load_csv(tiny_csv, demo_assets["embedding"], cache_dir=cache)
    assert np.array_equal(second.ids, first.ids)
    # Changed contents, same name: a new key, so the stale cache is not used.
    frame = pd.read_csv(tiny_csv)
    frame.loc[0, "text"] = "an entirely different headline"
    frame.to_csv(tiny_csv, index=False)
    with pytest.raises(AssertionError, match="tokenized again"):
        load_csv(tiny_csv, demo_assets["embedding"], cache_dir=cache)


def test_gzipped_csv_with_numeric_labels(tmp_path: Path, demo_assets: dict) -> None:
    frame = pd.DataFrame({"headline": [f"story {i}" for i in range(30)], "y": [0, 1, 1] * 10})
    path = tmp_path / "numbers.csv.gz"
    frame.to_csv(path, index=False)
    loaded = load_csv(path, demo_assets["embedding"], text_column="headline", label_column="y")
    assert loaded.class_names == ["0", "1"]
    assert loaded.labels.tolist() == frame["y"].tolist()
