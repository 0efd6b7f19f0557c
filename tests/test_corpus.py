"""The corpus: CSV reading and validation, the notebook's preprocessing, labels, the token
cache and the splits."""

import gzip
import json
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.preprocessing import LabelEncoder

from fakenews_pl.data import corpus
from fakenews_pl.data.corpus import DataError, notebook_text, read_labelled_csv, require_lists
from fakenews_pl.errors import UserError
from fakenews_pl.hub import artifact
from fakenews_pl.hub.embedding import HubEmbedding
from fakenews_pl.hub.tokenizer import HubTokenizer, TextRecipe


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
    require_lists("f.csv", pd.Series([cell]), "for_glove", "hint")  # a list: accepted


@pytest.mark.parametrize(
    "cell",
    ["Did Miley Cyrus secretly get married?", "[VIDEO] Senate votes [live]", "['a', b]", "['a'"],
)
def test_a_cell_that_is_not_a_list_of_strings_is_refused(cell: str) -> None:
    with pytest.raises(DataError, match=r"f.csv: data row 7 column 'for_glove' .*\(hint\)"):
        require_lists("f.csv", pd.Series(["['ok']", cell]), "for_glove", "hint", first_row=6)


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
        (  # bracketed like a list, but a headline: was read as one and mangled
            pd.DataFrame(
                {"for_glove": ["['a']", "[VIDEO] Senate votes [live]"], "label": ["Fake"] * 2}
            ),
            True,
            ["data row 2", "'for_glove'", "Python-list", "for plain text use data=csv"],
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


def write_bytes(path: Path, data: bytes) -> Path:
    """`data` as the file's (decompressed, for .csv.gz) bytes."""
    path.write_bytes(gzip.compress(data, mtime=0) if path.name.endswith(".gz") else data)
    return path


def refused(path: Path, text_column: str = "text") -> str:
    """The one-line `DataError` message reading `path` gives."""
    with pytest.raises(DataError) as info:
        read_labelled_csv(path, text_column, "label", notebook=False)
    message = str(info.value)
    assert isinstance(info.value, UserError) and isinstance(info.value, ValueError)
    assert message.startswith(str(path)) and "\n" not in message
    return message


@pytest.mark.parametrize("name", ["latin1.csv", "latin1.csv.gz"])
def test_a_non_utf8_file_names_the_line_and_byte(tmp_path: Path, name: str) -> None:
    data = "text,label\nabc,Fake\ncafé,True\n".encode("latin-1")  # é is 0xe9 at byte 23
    message = refused(write_bytes(tmp_path / name, data))
    assert "line 3 (byte offset 23" in message and "0xe9" in message
    assert "expected a UTF-8 CSV (re-save the file as UTF-8)" in message
    # In the header: line 1.
    message = refused(write_bytes(tmp_path / name, "café,label\n".encode("latin-1")), "café")
    assert "line 1 (byte offset 3" in message


def test_a_truncated_or_corrupt_gzip_file_is_named(tmp_path: Path) -> None:
    rows = "".join(f"story number {i},{'Fake' if i % 3 else 'True'}\n" for i in range(5000))
    data = gzip.compress(f"text,label\n{rows}".encode(), mtime=0)
    truncated = tmp_path / "truncated.csv.gz"
    truncated.write_bytes(data[: len(data) // 2])
    assert "truncated or corrupt gzip file" in refused(truncated)
    corrupt = bytearray(data)
    corrupt[-8] ^= 0xFF  # the CRC-32 of the gzip trailer
    (tmp_path / "corrupt.csv.gz").write_bytes(bytes(corrupt))
    assert "truncated or corrupt gzip file" in refused(tmp_path / "corrupt.csv.gz")


def test_duplicate_column_names_are_refused(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "dup.csv", b"label,text,label,x,x\nFake,a,True,1,2\n")
    message = refused(path)  # pandas would have used the first `label` and named the other
    assert "'label' at columns 1, 3" in message and "'x' at columns 4, 5" in message
    assert "expected each column name once" in message


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"text,label\n", "has no data rows; expected at least one labelled row"),
        (b"text,label\n\n\n", "has no data rows; expected at least one labelled row"),
        (b"", "has no header and no data rows; expected at least one labelled row"),
    ],
)
def test_a_file_without_data_rows_is_refused_at_read_time(
    tmp_path: Path, data: bytes, needle: str
) -> None:
    assert needle in refused(write_bytes(tmp_path / "empty.csv", data))


def test_an_unterminated_quote_is_one_data_error(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "quote.csv", b'text,label\n"abc,Fake\nx,True\n')
    assert "not a readable CSV file" in refused(path)


def copy_embedding(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def test_an_altered_vocabulary_never_poisons_the_token_cache(
    tmp_path: Path, tiny_csv: Path, demo_assets: dict
) -> None:
    emb = copy_embedding(demo_assets["embedding"], tmp_path / "emb")
    vocab_file = emb / artifact.VOCAB_FILE
    genuine = vocab_file.read_bytes()
    lines = genuine.split(b"\n")
    lines[0], lines[1] = lines[1], lines[0]  # the two most frequent words: same size
    vocab_file.write_bytes(b"\n".join(lines))
    texts = pd.read_csv(tiny_csv)["text"].tolist()
    expected = artifact.read_tokenizer(demo_assets["embedding"]).encode(texts)[0]
    meta = json.loads((emb / artifact.META_FILE).read_text(encoding="utf-8"))
    recipe = TextRecipe.from_dict(meta["recipe"])
    swapped = HubTokenizer(artifact.read_vocab(vocab_file), meta["oov_buckets"], recipe)
    swapped = swapped.encode(texts)[0]
    assert not np.array_equal(swapped, expected)  # the swap matters for these texts
    cache = tmp_path / "cache"
    with pytest.raises(artifact.ArtifactError, match="vocab.txt: sha256"):
        load_csv(tiny_csv, emb, cache_dir=cache)
    assert not list(cache.rglob("*.npz"))  # nothing stored under the genuine key
    vocab_file.write_bytes(genuine)
    assert np.array_equal(load_csv(tiny_csv, emb, cache_dir=cache).ids, expected)
    assert np.array_equal(load_csv(tiny_csv, emb, cache_dir=cache).ids, expected)  # cached


def test_a_run_hashes_the_table_once_and_before_tokenizing(
    tmp_path: Path,
    tiny_csv: Path,
    demo_assets: dict,
    monkeypatch: pytest.MonkeyPatch,
    hash_counter: Counter,
) -> None:
    monkeypatch.setattr(artifact, "SETTLED_NS", 20_000_000)  # 20 ms instead of 2 s
    emb = copy_embedding(demo_assets["embedding"], tmp_path / "emb")
    time.sleep(0.05)  # the copied files have settled
    hashed = hash_counter
    hashed.clear()  # count from here
    load_csv(tiny_csv, emb)  # the corpus verifies the whole artifact ...
    assert hashed[artifact.TABLE_FILE] == 1 and hashed[artifact.VOCAB_FILE] == 1
    HubEmbedding.load(emb)  # ... and the model's load in the same process trusts that
    assert hashed[artifact.TABLE_FILE] == 1 and hashed[artifact.VOCAB_FILE] == 1


# ---------------------------------------------------------------------------------------------
# data=isot: the Kaggle / ISOT "Fake and real news" files
# ---------------------------------------------------------------------------------------------

ISOT_FAKE = pd.DataFrame(
    {
        "title": ["Hillary SHOCKED by this video", "WATCH: Senator melts down", "Pope backs it"],
        "text": [
            "According to Reuters, nobody saw it coming.",
            " ",  # Fake.csv has such blank texts
            "(Reuters) - copied wire text, stripped alike",
        ],
        "subject": ["News", "politics", "News"],
        "date": ["December 31, 2017", "December 30, 2017", "December 29, 2017"],
    }
)
ISOT_TRUE = pd.DataFrame(
    {
        "title": ["Senate passes budget bill", "North Korea fires missile", "Trump on Twitter"],
        "text": [
            "WASHINGTON (Reuters) - The Senate passed the bill on Friday.",
            "SEOUL/BEIJING (Reuters) - North Korea fired a missile, officials said.",
            "The following statements were posted to the verified Twitter account.",
        ],
        "subject": ["politicsNews", "worldnews", "politicsNews"],
        "date": ["December 31, 2017 ", "December 29, 2017 ", "December 29, 2017 "],
    }
)


def write_isot(directory: Path, fake: pd.DataFrame = ISOT_FAKE, true=ISOT_TRUE) -> Path:
    """Fake.csv and True.csv in the ISOT columns (title,text,subject,date) in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    write(directory / "Fake.csv", fake)
    write(directory / "True.csv", true)
    return directory


@pytest.mark.parametrize(
    ("text_field", "strip", "fake", "true"),
    [
        ("title", True, ISOT_FAKE["title"].tolist(), ISOT_TRUE["title"].tolist()),
        (
            "text",
            True,
            ["According to Reuters, nobody saw it coming.", "copied wire text, stripped alike"],
            [
                "The Senate passed the bill on Friday.",
                "North Korea fired a missile, officials said.",
                "The following statements were posted to the verified Twitter account.",
            ],
        ),
        (
            "text",
            False,
            [ISOT_FAKE["text"][0], ISOT_FAKE["text"][2]],
            ISOT_TRUE["text"].tolist(),
        ),
        (
            "both",
            True,
            [
                "Hillary SHOCKED by this video According to Reuters, nobody saw it coming.",
                "WATCH: Senator melts down",  # a blank text leaves the title
                "Pope backs it copied wire text, stripped alike",
            ],
            [
                "Senate passes budget bill The Senate passed the bill on Friday.",
                "North Korea fires missile North Korea fired a missile, officials said.",
                "Trump on Twitter The following statements were posted to the verified Twitter "
                "account.",
            ],
        ),
    ],
)
@pytest.mark.filterwarnings("ignore:.*rows whose text is blank")
def test_isot_reads_the_chosen_text_field_and_labels_from_the_file(
    tmp_path: Path, demo_assets: dict, text_field: str, strip: bool, fake: list, true: list
) -> None:
    directory = write_isot(tmp_path / "isot")
    paths = corpus.isot_paths(directory)
    assert [p.name for p in paths] == ["Fake.csv", "True.csv"]
    loaded = corpus.load(
        paths, demo_assets["embedding"], fmt="isot", text_field=text_field, strip_dateline=strip
    )
    assert loaded.texts.tolist() == fake + true
    assert loaded.class_names == ["Fake", "True"]  # sorted file labels, like LabelEncoder
    assert loaded.labels.tolist() == [0] * len(fake) + [1] * len(true)
    assert loaded.file_rows == [len(fake), len(true)]
    ids, offsets = artifact.read_tokenizer(demo_assets["embedding"]).encode(fake + true)
    assert np.array_equal(loaded.ids, ids) and np.array_equal(loaded.starts, offsets)


def test_isot_leaves_out_blank_texts_with_a_warning(tmp_path: Path) -> None:
    path = write_isot(tmp_path / "isot") / "Fake.csv"
    with pytest.warns(UserWarning, match=r"Fake.csv: left out 1 of 3 rows whose text is blank"):
        texts, labels = corpus.read_isot_csv(path, "text")
    assert len(texts) == 2 and labels.tolist() == ["Fake", "Fake"]
    texts, _ = corpus.read_isot_csv(path, "title")  # titles are all there: nothing left out
    assert len(texts) == 3
    blank = ISOT_FAKE.assign(text=["", " ", "\t"])
    with pytest.raises(DataError, match="every row's text is blank"):
        corpus.read_isot_csv(write(tmp_path / "Fake.csv", blank), "text")


def isot_refused(path: Path, text_field: str = "title") -> str:
    """The one-line `DataError` message reading ISOT file `path` gives."""
    with pytest.raises(DataError) as info:
        corpus.read_isot_csv(path, text_field)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    return message


def test_isot_refusals_name_the_file_and_column(tmp_path: Path, demo_assets: dict) -> None:
    directory = write_isot(tmp_path / "isot")
    (directory / "True.csv").unlink()
    with pytest.raises(DataError) as info:
        corpus.load(corpus.isot_paths(directory), demo_assets["embedding"], fmt="isot")
    message = str(info.value)
    assert message.startswith(str(directory / "True.csv")) and "no such data file" in message
    assert "Fake.csv and True.csv of the Kaggle / ISOT 'Fake and real news' dataset" in message
    path = write(directory / "True.csv", ISOT_TRUE.drop(columns="text"))
    message = isot_refused(path, "both")
    assert "missing column 'text' (data.text_field=both)" in message
    assert "expected the ISOT columns title,text,subject,date" in message
    assert len(corpus.read_isot_csv(path, "title")[0]) == 3  # the title alone needs no text
    latin1 = write_bytes(directory / "Fake.csv", "title,text\ncafé,x\n".encode("latin-1"))
    assert "is not UTF-8" in isot_refused(latin1)
    empty = write_bytes(directory / "Fake.csv", b"title,text,subject,date\n")
    assert "has no data rows" in isot_refused(empty)


@pytest.mark.filterwarnings("ignore:.*rows whose text is blank")
def test_isot_token_cache_is_keyed_by_the_text_field(
    tmp_path: Path, demo_assets: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = corpus.isot_paths(write_isot(tmp_path / "isot"))
    cache = tmp_path / "cache"

    def load(**kwargs) -> corpus.Corpus:
        return corpus.load(paths, demo_assets["embedding"], fmt="isot", cache_dir=cache, **kwargs)

    title, text = load(text_field="title"), load(text_field="text")
    assert len(list((cache / "tokens").glob("*.npz"))) == 4  # two files x two fields
    assert not np.array_equal(title.ids, text.ids)

    def refuse(*args, **kwargs):
        raise AssertionError("tokenized again despite the cache")

    monkeypatch.setattr(corpus.HubTokenizer, "encode", refuse)
    assert np.array_equal(load(text_field="title").ids, title.ids)
    assert np.array_equal(load(text_field="text").ids, text.ids)
    with pytest.raises(AssertionError, match="tokenized again"):
        load(text_field="text", strip_dateline=False)


def test_data_formats_are_one_registry_that_load_reads(
    tiny_csv: Path, demo_assets: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`data.format` names an entry of `corpus.DATA_FORMATS`: a format added there is read by
    `load` (with its own text spec in the token cache's key), and the three formats' specs
    are the keys caches were written under before the registry."""
    assert corpus.FORMATS == ("notebook", "csv", "isot")
    settings = corpus.ReadSettings("title", "label", "both", False)
    assert [corpus.DATA_FORMATS[f].text_spec(settings) for f in corpus.FORMATS] == [
        {"format": "notebook", "text_column": "title"},
        {"format": "csv", "text_column": "title"},
        {"format": "isot", "text_field": "both", "strip_dateline": False},
    ]

    def read_upper(path: Path, s: corpus.ReadSettings):
        texts, labels = read_labelled_csv(path, s.text_column, s.label_column, notebook=False)
        return np.array([t.upper() for t in texts], dtype=object), labels

    upper = corpus.DataFormat(
        "upper", read_upper, lambda s: {"format": "upper"}, lambda s: s.label_column
    )
    monkeypatch.setitem(corpus.DATA_FORMATS, "upper", upper)
    plain = corpus.load([tiny_csv], demo_assets["embedding"], fmt="csv", text_column="text")
    shouted = corpus.load([tiny_csv], demo_assets["embedding"], fmt="upper", text_column="text")
    assert list(shouted.texts) == [t.upper() for t in plain.texts]
    with pytest.raises(ValueError, match="data.format must be one of"):
        corpus.load([tiny_csv], demo_assets["embedding"], fmt="tsv")
