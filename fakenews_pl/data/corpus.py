"""The labelled texts of a run: CSV files read and validated, the notebook's preprocessing,
labels encoded, texts tokenized once (cached on disk), and the stratified splits.

    corpus = load(["train.csv", "test.csv"], "artifacts/embeddings/nnlm128", fmt="notebook",
                  text_column="for_glove", label_column="label", label_names=["Fake", "True"])
    rows = split(corpus, file_rows=True, ...)   # {"train", "val", "test"}: index arrays

`fmt="notebook"` reads the notebook's columns and rebuilds its input exactly:
`" ".join(new_cleaning(for_glove))`; `fmt="csv"` takes `text_column` as it is; `fmt="isot"`
reads the Kaggle / ISOT "Fake and real news" files (`isot_paths(dir)`: `Fake.csv`, `True.csv`,
the label is the file's) with `text_field` title, text or both (`read_isot_csv`). Labels are
numbered like sklearn's `LabelEncoder` (sorted names: `Fake`=0, `True`=1) unless `label_names`
fixes the order.
"""

from __future__ import annotations

import codecs
import contextlib
import functools
import gzip
import hashlib
import json
import os
import re
import warnings
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fakenews_pl import temporaries
from fakenews_pl.errors import UserError
from fakenews_pl.hub import artifact
from fakenews_pl.hub.tokenizer import HubTokenizer

# The Kaggle / ISOT "Fake and real news" dataset: one file per class, named after its label.
ISOT_FILES = ("Fake.csv", "True.csv")
ISOT_COLUMNS = "title,text,subject,date"
TEXT_FIELDS = ("title", "text", "both")
# ISOT's real articles are all Reuters wire copy opening "WASHINGTON (Reuters) - ",
# "SEOUL/BEIJING (Reuters) - " or "(Reuters) - ": the source, not the veracity.
REUTERS_DATELINE = re.compile(r"^[^(\n]{0,120}\(Reuters\)\s*[-\u2013\u2014]?\s*")
# 2: keyed by a verified artifact. A version-1 entry may hold the ids of an altered vocabulary
# under the genuine artifact's key, so none is reused. 3: an empty text under a v1 "any_of"
# split keeping empty tokens has no token (then the fill), as TF's StringSplit gives it.
_CACHE_VERSION = 3


class DataError(UserError, ValueError):
    """A data file that cannot be used; the message names the file, row or column, and why."""


def notebook_text(for_glove: pd.Series) -> pd.Series:
    """The notebook's `text_from_token(new_cleaning(x))`, vectorised.

    `new_cleaning` deletes `[`, `]`, `'` and spaces and splits on `,`; `" ".join` of that
    split is the same string with every `,` turned into a space.
    """
    out = for_glove
    for char in ("[", "]", "'", " "):
        out = out.str.replace(char, "", regex=False)
    return out.str.replace(",", " ", regex=False)


def read_labelled_csv(
    path: str | os.PathLike, text_column: str, label_column: str, notebook: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(texts, labels) as string arrays from one `.csv` / `.csv.gz` file, or a `DataError`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such data file")
    header = read_header(path)
    for column, role in ((text_column, "text_column"), (label_column, "label_column")):
        if column not in header:
            hint = (
                " (data=notebook expects the notebook's columns text,label,cleaned,for_glove; "
                "use data=csv with data.text_column=... for other files)"
                if notebook
                else ""
            )
            raise DataError(
                f"{path}: missing column {column!r} (data.{role}); "
                f"the file has columns {header}{hint}"
            )
    # Only empty cells are missing: a headline reading "NA" or "null" is text.
    frame = _read_csv(
        path,
        usecols=[text_column, label_column],
        dtype=str,
        keep_default_na=False,
        na_values=[""],
    )
    if frame.empty:
        raise DataError(f"{path} has no data rows; expected at least one labelled row")
    for column in (text_column, label_column):
        _require_values(path, frame[column], column)
    texts = frame[text_column]
    if notebook:
        require_lists(path, texts, text_column, "for plain text use data=csv")
        texts = notebook_text(texts)
    return texts.to_numpy(dtype=object), frame[label_column].to_numpy(dtype=str)


def isot_paths(directory: str | os.PathLike) -> list[Path]:
    """`Fake.csv` and `True.csv` in `directory`, in the order of their labels (Fake=0, True=1)."""
    return [Path(directory) / name for name in ISOT_FILES]


def read_isot_csv(
    path: str | os.PathLike, text_field: str = "title", strip_dateline: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(texts, labels) from `Fake.csv` or `True.csv` of the ISOT dataset, or a `DataError`.

    Every label is the file's name without `.csv` (`Fake`, `True`). `text_field`: `title`,
    `text`, or `both` (title, one space, text: the embedding pools a bag of words, so no
    sentence mark is added). `strip_dateline` removes a text's leading "CITY (Reuters) - ".
    Rows whose text is blank are left out with a warning (Fake.csv has ~600 articles whose
    text is a single space: as empty bags they would be a label of their own).
    """
    path = Path(path)
    if text_field not in TEXT_FIELDS:
        raise ValueError(f"text_field must be one of {TEXT_FIELDS}, got {text_field!r}")
    if not path.is_file():
        raise DataError(
            f"{path}: no such data file; data=isot expects data.dir to hold "
            f"{' and '.join(ISOT_FILES)} of the Kaggle / ISOT 'Fake and real news' dataset"
        )
    header = read_header(path)
    columns = ["title", "text"] if text_field == "both" else [text_field]
    for column in columns:
        if column not in header:
            raise DataError(
                f"{path}: missing column {column!r} (data.text_field={text_field}); the file has "
                f"columns {header}; expected the ISOT columns {ISOT_COLUMNS}"
            )
    # Empty cells are empty strings: a blank text is left out below, not refused.
    frame = _read_csv(path, usecols=columns, dtype=str, keep_default_na=False)
    if frame.empty:
        raise DataError(f"{path} has no data rows; expected at least one article")
    if "text" in columns and strip_dateline:
        frame["text"] = frame["text"].str.replace(REUTERS_DATELINE, "", n=1, regex=True)
    texts = frame[columns[0]].str.strip()
    if text_field == "both":
        texts = (texts + " " + frame["text"].str.strip()).str.strip()
    blank = int((texts == "").sum())
    if blank == len(texts):
        raise DataError(f"{path}: every row's {text_field} is blank; expected text to classify")
    if blank:
        warnings.warn(
            f"{path}: left out {blank} of {len(texts)} rows whose {text_field} is blank",
            stacklevel=2,
        )
        texts = texts[texts != ""]
    label = path.name.split(".")[0]
    return texts.to_numpy(dtype=object), np.full(len(texts), label)


@dataclass(frozen=True)
class ReadSettings:
    """The `data.*` settings a data format may read a file with."""

    text_column: str = "for_glove"
    label_column: str = "label"
    text_field: str = "title"
    strip_dateline: bool = True


@dataclass(frozen=True)
class DataFormat:
    """One way to read labelled files (`data.format`): `read(path, settings)` -> (texts,
    labels) as arrays, or a `DataError`; `text_spec(settings)`: what decides the texts (part of
    the token cache's key); `label_column(settings)`: how errors name the labels' source."""

    name: str
    read: Callable[[Path, ReadSettings], tuple[np.ndarray, np.ndarray]]
    text_spec: Callable[[ReadSettings], dict[str, Any]]
    label_column: Callable[[ReadSettings], str]


# data.format: the notebook's columns and preprocessing, any CSV as it is, the ISOT files. A
# new format is one entry here (and its data/*.yaml).
DATA_FORMATS: dict[str, DataFormat] = {
    "notebook": DataFormat(
        "notebook",
        lambda path, s: read_labelled_csv(path, s.text_column, s.label_column, notebook=True),
        lambda s: {"format": "notebook", "text_column": s.text_column},
        lambda s: s.label_column,
    ),
    "csv": DataFormat(
        "csv",
        lambda path, s: read_labelled_csv(path, s.text_column, s.label_column, notebook=False),
        lambda s: {"format": "csv", "text_column": s.text_column},
        lambda s: s.label_column,
    ),
    "isot": DataFormat(
        "isot",
        lambda path, s: read_isot_csv(path, s.text_field, s.strip_dateline),
        lambda s: {
            "format": "isot",
            "text_field": s.text_field,
            "strip_dateline": s.strip_dateline,
        },
        lambda s: "label (the file's name)",
    ),
}
FORMATS = tuple(DATA_FORMATS)


def read_header(path: Path) -> list[str]:
    """The column names of a CSV file as pandas names them, or a `DataError` for an empty
    file or a name that appears twice (pandas would silently rename the second `name.1`)."""
    # The header row as data: the names as written, before pandas makes them unique.
    raw = _read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False).iloc[0]
    positions = defaultdict(list)
    for i, name in enumerate(raw.tolist()):
        positions[name].append(str(i + 1))
    duplicated = [
        f"{name!r} at columns {', '.join(at)}" for name, at in positions.items() if len(at) > 1
    ]
    if duplicated:
        raise DataError(
            f"{path}: duplicate column names in the header: {'; '.join(duplicated)} "
            "(counting from 1); expected each column name once"
        )
    return [name if name else f"Unnamed: {i}" for i, name in enumerate(raw.tolist())]


def _read_csv(path: Path, **kwargs: Any) -> pd.DataFrame:
    """`pd.read_csv` with every way a file can be unreadable turned into one `DataError` line."""
    with csv_errors(path):
        return pd.read_csv(path, **kwargs)


def read_csv_chunks(
    path: str | os.PathLike, chunk_rows: int, **kwargs: Any
) -> Iterator[pd.DataFrame]:
    """`pd.read_csv(path, chunksize=chunk_rows)`'s chunks, with `_read_csv`'s one-line errors
    (a bad byte or an unterminated quote is found only when its chunk is read)."""
    path = Path(path)
    with csv_errors(path):
        yield from pd.read_csv(path, chunksize=chunk_rows, **kwargs)


@contextlib.contextmanager
def csv_errors(path: Path) -> Iterator[None]:
    """Turn pandas' and the decompressor's errors while reading `path` into one `DataError`."""
    try:
        yield
    except UnicodeDecodeError as e:
        raise DataError(_not_utf8(path, e)) from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(
            f"{path}: truncated or corrupt gzip file ({e}); expected a complete gzip-compressed "
            "CSV (compress or download it again)"
        ) from None
    except pd.errors.EmptyDataError:
        raise DataError(
            f"{path} has no header and no data rows; expected at least one labelled row"
        ) from None
    except (ValueError, OSError) as e:  # pandas' ParserError (a ValueError) names the line
        message = " ".join(str(e).split())
        raise DataError(f"{path}: not a readable CSV file ({message})") from None


def _not_utf8(path: Path, error: UnicodeDecodeError, chunk: int = 1 << 20) -> str:
    """Where the first byte that is not UTF-8 is: scanned again only now, on failure."""
    opener = gzip.open if path.name.endswith(".gz") else open
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, newlines = 0, 0  # bytes read and newlines among them
    with opener(path, "rb") as f:
        while True:
            block = f.read(chunk)
            try:
                decoder.decode(block, final=not block)
            except UnicodeDecodeError as e:
                # e.object is the decoder's held-back bytes (never a newline) + this block.
                start = offset - (len(e.object) - len(block)) + e.start
                line = newlines + e.object.count(b"\n", 0, e.start) + 1
                where = " of the decompressed data" if opener is gzip.open else ""
                return (
                    f"{path}: line {line} (byte offset {start}{where}): byte "
                    f"0x{e.object[e.start]:02x} is not UTF-8; expected a UTF-8 CSV "
                    "(re-save the file as UTF-8)"
                )
            if not block:
                return f"{path}: not UTF-8 ({error}); expected a UTF-8 CSV (re-save it as UTF-8)"
            offset, newlines = offset + len(block), newlines + block.count(b"\n")


def _require_values(path: Path, values: pd.Series, column: str) -> None:
    empty = np.flatnonzero(values.isna().to_numpy())
    if len(empty):
        raise DataError(
            f"{path}: data row {empty[0] + 1} has an empty {column!r} "
            f"({len(empty)} such rows); expected a value in every row"
        )


# A cell of the notebook's `for_glove` column: a Python list of strings as `str(list)` writes
# it ('...' or "..." items, backslash escapes), possibly empty.
_QUOTED = r"""(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""
LIST_LITERAL = re.compile(rf"\s*\[\s*(?:{_QUOTED}(?:\s*,\s*{_QUOTED})*\s*,?\s*)?\]\s*", re.S)


def require_lists(
    path: str | os.PathLike, values: pd.Series, column: str, hint: str, first_row: int = 1
) -> None:
    """Refuse the first cell of `values` that is not a list of strings as the notebook stores
    its tokens (`"['word', 'word']"`): read as the notebook's format, a plain headline would be
    mangled into its characters run together. Rows are counted from `first_row` (1-based)."""
    bad = np.flatnonzero(~values.str.fullmatch(LIST_LITERAL).fillna(False).to_numpy(dtype=bool))
    if len(bad):
        raise DataError(
            f"{path}: data row {first_row + bad[0]} column {column!r} is "
            f"{values.iloc[bad[0]][:60]!r} ({len(bad)} such rows); the notebook's format expects "
            f"a token list stored as a Python-list string like \"['word', 'word']\" ({hint})"
        )


def encode_labels(
    path: str | os.PathLike, labels: np.ndarray, class_names: Sequence[str], column: str
) -> np.ndarray:
    """Label strings -> class indices (int64), or a `DataError` naming the first unknown one."""
    codes = pd.Categorical(labels, categories=list(class_names)).codes.astype(np.int64)
    bad = np.flatnonzero(codes < 0)
    if len(bad):
        raise DataError(
            f"{path}: data row {bad[0] + 1} has label {labels[bad[0]]!r} in column {column!r}; "
            f"expected one of {list(class_names)}"
        )
    return codes


def token_cache_key(path: str | os.PathLike, text_spec: dict[str, Any], meta: dict) -> str:
    """Hash of the file's bytes, how its text is built, and the embedding's vocabulary.

    `meta` is `artifact.verified_meta`'s: its `sha256` are those of the files on disk.
    """
    parts = {
        "version": _CACHE_VERSION,
        "file_sha256": artifact.sha256_file(path),
        "text": text_spec,
        "embedding_sha256": meta["sha256"],
        "recipe": meta["recipe"],
        "oov_buckets": meta["oov_buckets"],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def tokenize_cached(
    texts: np.ndarray, tokenizer: Callable[[], HubTokenizer], cache_file: Path | None
) -> tuple[np.ndarray, np.ndarray]:
    """(total_tokens,) ids and (N,) bag lengths, read from `cache_file` when it exists.

    `tokenizer` is called only on a cache miss (a large vocabulary takes a while to index).
    """
    if cache_file is not None and cache_file.is_file():
        with np.load(cache_file) as cached:
            return cached["ids"], cached["lengths"]
    ids, offsets = tokenizer().encode(texts.tolist())
    lengths = np.diff(offsets, append=len(ids)).astype(np.int64)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        # Atomic: concurrent ranks and runs write identical bytes; a reader never sees half.
        with temporaries.atomic_file(cache_file) as f:
            np.savez(f, ids=ids, lengths=lengths)
    return ids, lengths


@dataclass
class Corpus:
    """Every row of every file, tokenized: `ids[starts[i]:starts[i] + lengths[i]]` is row i."""

    texts: np.ndarray  # (N,) str
    labels: np.ndarray  # (N,) int64 class indices into class_names
    ids: np.ndarray  # (total_tokens,) int64
    starts: np.ndarray  # (N,) int64
    lengths: np.ndarray  # (N,) int64
    file_rows: list[int]  # rows per file, in the order the files were given
    class_names: list[str]


def load(
    paths: Sequence[str | os.PathLike],
    embedding_path: str | os.PathLike,
    fmt: str = "notebook",
    text_column: str = "for_glove",
    label_column: str = "label",
    label_names: Sequence[str] | None = None,
    cache_dir: str | os.PathLike | None = None,
    labels_from: int | None = None,
    text_field: str = "title",
    strip_dateline: bool = True,
) -> Corpus:
    """Read, validate and tokenize `paths` for the embedding at `embedding_path`.

    Class names are `label_names`, else the sorted labels of the first `labels_from` files
    (all of them by default), like `LabelEncoder` fitted on the training data. `text_field`
    and `strip_dateline` are `fmt="isot"`'s (`read_isot_csv`).
    """
    if fmt not in DATA_FORMATS:
        raise ValueError(f"data.format must be one of {tuple(DATA_FORMATS)}, got {fmt!r}")
    settings = ReadSettings(text_column, label_column, text_field, strip_dateline)
    data_format = DATA_FORMATS[fmt]
    read = [data_format.read(Path(p), settings) for p in paths]
    label_column = data_format.label_column(settings)
    text_spec = data_format.text_spec(settings)
    if label_names is not None:
        names = [str(name) for name in label_names]
    else:
        names = class_names(
            paths[:labels_from], [lab for _, lab in read[:labels_from]], label_column
        )
    # Verified before anything is cached: the key names verified contents, and the tokenizer
    # checks the vocabulary bytes it is built from against the same hash.
    meta = artifact.verified_meta(embedding_path)
    tokenizer = functools.cache(lambda: artifact.read_tokenizer(embedding_path, meta))
    parts = []
    for path, (texts, labels) in zip(paths, read, strict=True):
        codes = encode_labels(path, labels, names, label_column)
        cache_file = None
        if cache_dir:
            key = token_cache_key(path, text_spec, meta)
            cache_file = Path(cache_dir) / "tokens" / f"{key}.npz"
        parts.append((texts, codes, *tokenize_cached(texts, tokenizer, cache_file)))
    return _concat(parts, names)


def class_names(
    paths: Sequence[str | os.PathLike], labels: Sequence[np.ndarray], column: str
) -> list[str]:
    """The two sorted label names found in `labels` (LabelEncoder's order), or a `DataError`."""
    names = sorted(set(np.concatenate(labels).tolist()))
    if len(names) != 2:
        raise DataError(
            f"{', '.join(map(str, paths))}: found labels {names} in column {column!r}; "
            "the classifier is binary, expected two classes"
        )
    return names


def split(
    corpus: Corpus,
    split_files: bool,
    test_size: float,
    val_fraction: float,
    val_from_test: bool,
    seed: int,
) -> dict[str, np.ndarray]:
    """Row indices of train, val and test, each in file order.

    `split_files`: all files together split into train/test by a seeded stratified `test_size`
    split; else the first file is train and the second test. Validation is a seeded stratified
    `val_fraction` of train, or the test rows themselves (`val_from_test`, the notebook's way).
    """
    labels, sizes = corpus.labels, corpus.file_rows
    if split_files:
        train, test = _stratified(np.arange(sum(sizes)), labels, test_size, seed)
    else:
        train, test = np.arange(sizes[0]), np.arange(sizes[0], sizes[0] + sizes[1])
    if val_from_test:
        return {"train": train, "val": test, "test": test}
    train, val = _stratified(train, labels, val_fraction, seed)
    return {"train": train, "val": val, "test": test}


def rows_sha256(corpus: Corpus, rows: np.ndarray) -> str:
    """sha256 over the texts and labels of `rows`, in order: what a split holds, as a check."""
    digest = hashlib.sha256()
    for text, label in zip(corpus.texts[rows].tolist(), corpus.labels[rows].tolist(), strict=True):
        digest.update(f"{label}\x00{text}\x00".encode())
    return digest.hexdigest()


def _stratified(
    rows: np.ndarray, labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split of `rows`, each part back in file order."""
    # scikit-learn takes ~1 s to import: only runs that split pay it, not predict or serve.
    from sklearn.model_selection import train_test_split

    try:
        keep, held = train_test_split(
            rows, test_size=fraction, stratify=labels[rows], random_state=seed
        )
    except ValueError as e:
        counts = np.bincount(labels[rows], minlength=2).tolist()
        raise DataError(
            f"cannot split {len(rows)} rows (class counts {counts}) with fraction {fraction}: {e}"
        ) from None
    return np.sort(keep), np.sort(held)


def _concat(parts: list[tuple[np.ndarray, ...]], names: list[str]) -> Corpus:
    texts, labels, ids, lengths = (np.concatenate([p[i] for p in parts]) for i in range(4))
    starts = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    file_rows = [len(p[0]) for p in parts]
    return Corpus(
        texts, labels.astype(np.int64), ids.astype(np.int64), starts, lengths, file_rows, names
    )
