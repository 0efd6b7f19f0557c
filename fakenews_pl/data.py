"""CSV files -> token ids (tokenized once, cached on disk) -> batches for the classifier.

    dm = FakeNewsDataModule("artifacts/embeddings/nnlm128", train_csv="train.csv",
                            test_csv="test.csv")
    dm.setup()
    batch = next(iter(dm.train_dataloader()))   # {"ids", "offsets", "labels"}

`format="notebook"` reads the notebook's columns and rebuilds its input exactly:
`" ".join(new_cleaning(for_glove))`; `format="csv"` takes `text_column` as it is. Labels are
numbered like sklearn's `LabelEncoder` (sorted names: `Fake`=0, `True`=1) unless `label_names`
fixes the order. Splits, train/val/test, are index arrays into one tokenized corpus.

With a frozen embedding the model calls `cache_features(embedding)` once: every row is pooled
to a (D,) vector and batches then carry `pooled` (B, D) instead of ids (dropout comes after
the first dense layer, so the pooled vectors never change during training).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from pytorch_lightning import LightningDataModule
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, Sampler

from fakenews_pl import artifact, demo
from fakenews_pl.embedding import load_tokenizer
from fakenews_pl.tokenizer import HubTokenizer

FORMATS = ("notebook", "csv")
VAL_SOURCES = ("split", "test")
SPLITS = ("train", "val", "test")
_CACHE_VERSION = 1


class DataError(ValueError):
    """A data file that cannot be used; the message names the file, row or column, and why."""


# ---------------------------------------------------------------- reading and preprocessing


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
    try:
        header = list(pd.read_csv(path, nrows=0).columns)
    except (ValueError, UnicodeDecodeError, OSError) as e:
        raise DataError(f"{path}: not a readable CSV file ({e})") from None
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
    frame = pd.read_csv(
        path,
        usecols=[text_column, label_column],
        dtype=str,
        keep_default_na=False,
        na_values=[""],
    )
    for column in (text_column, label_column):
        _require_values(path, frame[column], column)
    texts = frame[text_column]
    if notebook:
        _require_lists(path, texts, text_column)
        texts = notebook_text(texts)
    return texts.to_numpy(dtype=object), frame[label_column].to_numpy(dtype=str)


def _require_values(path: Path, values: pd.Series, column: str) -> None:
    empty = np.flatnonzero(values.isna().to_numpy())
    if len(empty):
        raise DataError(
            f"{path}: data row {empty[0] + 1} has an empty {column!r} "
            f"({len(empty)} such rows); expected a value in every row"
        )


def _require_lists(path: Path, values: pd.Series, column: str) -> None:
    stripped = values.str.strip()
    bad = np.flatnonzero(~(stripped.str.startswith("[") & stripped.str.endswith("]")).to_numpy())
    if len(bad):
        raise DataError(
            f"{path}: data row {bad[0] + 1} column {column!r} is {values.iloc[bad[0]][:60]!r}; "
            "expected a token list stored as a Python-list string like \"['word', 'word']\""
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


# ---------------------------------------------------------------- tokenization, cached


def token_cache_key(path: str | os.PathLike, text_spec: dict[str, Any], meta: dict) -> str:
    """Hash of the file's bytes, how its text is built, and the embedding's vocabulary."""
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
        tmp = cache_file.with_name(f".{cache_file.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as f:
            np.savez(f, ids=ids, lengths=lengths)
        os.replace(tmp, cache_file)  # atomic: concurrent ranks write identical bytes
    return ids, lengths


@dataclass
class Corpus:
    """Every row of every file, tokenized: `ids[starts[i]:starts[i] + lengths[i]]` is row i."""

    texts: np.ndarray  # (N,) str
    labels: np.ndarray  # (N,) int64
    ids: np.ndarray  # (total_tokens,) int64
    starts: np.ndarray  # (N,) int64
    lengths: np.ndarray  # (N,) int64


# ---------------------------------------------------------------- batches


def gather_bags(
    ids: np.ndarray, starts: np.ndarray, lengths: np.ndarray, rows: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows' bags -> (total,) ids and (B,) offsets for EmbeddingBag, with numpy only."""
    lens = lengths[rows]
    offsets = np.zeros(len(rows), dtype=np.int64)
    np.cumsum(lens[:-1], out=offsets[1:])
    # Position of every token of the batch in the flat `ids`: its bag's start + its rank.
    positions = np.arange(lens.sum(), dtype=np.int64) + np.repeat(starts[rows] - offsets, lens)
    return torch.from_numpy(ids[positions]), torch.from_numpy(offsets)


class TokenBatches(Dataset):
    """Rows of a corpus; `__getitems__` builds a whole batch at once (no per-item collate)."""

    def __init__(self, corpus: Corpus, rows: np.ndarray, labels: torch.Tensor) -> None:
        self.corpus, self.rows, self.labels = corpus, rows, labels

    def __len__(self) -> int:
        return len(self.rows)

    def __getitems__(self, positions: list[int]) -> dict[str, torch.Tensor]:
        rows = self.rows[np.asarray(positions, dtype=np.int64)]
        c = self.corpus
        ids, offsets = gather_bags(c.ids, c.starts, c.lengths, rows)
        return {"ids": ids, "offsets": offsets, "labels": self.labels[rows]}

    def __getitem__(self, position: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([position])


class PooledBatches(Dataset):
    """Rows of precomputed (N, D) pooled vectors; one index operation per batch."""

    def __init__(self, pooled: torch.Tensor, rows: np.ndarray, labels: torch.Tensor) -> None:
        self.pooled, self.rows, self.labels = pooled, torch.from_numpy(rows), labels

    def __len__(self) -> int:
        return len(self.rows)

    def __getitems__(self, positions: list[int]) -> dict[str, torch.Tensor]:
        rows = self.rows[torch.as_tensor(positions, dtype=torch.int64)]
        return {"pooled": self.pooled[rows], "labels": self.labels[rows]}

    def __getitem__(self, position: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([position])


class _WholeEpoch(Sampler):
    """One batch per epoch: every minibatch of `batches`, concatenated in order."""

    def __init__(self, batches: BatchSampler) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return 1

    def __iter__(self):
        yield [i for batch in self.batches for i in batch]


class _Minibatch:
    """collate_fn of fused batches: tags the epoch batch with its minibatch size."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        return {**batch, "minibatch": self.size}


def _batch_as_is(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """collate_fn: `__getitems__` already built the batch (module level: workers pickle it)."""
    return batch


# ---------------------------------------------------------------- the DataModule


class FakeNewsDataModule(LightningDataModule):
    """Labelled texts from CSV files, split train/val/test, tokenized for one embedding.

    Give either `train_csv` and `test_csv`, or `files` (split into train/test by a seeded
    stratified `test_size` split). Validation is a seeded stratified `val_fraction` of train,
    or the test set itself with `val_source="test"` (what the notebook does).
    """

    def __init__(
        self,
        embedding_path: str,
        format: str = "notebook",
        text_column: str = "for_glove",
        label_column: str = "label",
        label_names: Sequence[str] | None = None,
        train_csv: str | None = None,
        test_csv: str | None = None,
        files: Sequence[str] | None = None,
        test_size: float = 0.33,
        val_fraction: float = 0.1,
        val_source: str = "split",
        split_seed: int = 0,
        batch_size: int = 32,
        eval_batch_size: int = 1024,
        fuse_train_batches: bool = True,
        cache_dir: str | None = None,
        cache_pooled: bool = True,
        num_workers: int = 0,
        demo_dir: str | None = None,
    ) -> None:
        super().__init__()
        if format not in FORMATS:
            raise ValueError(f"data.format must be one of {FORMATS}, got {format!r}")
        if val_source not in VAL_SOURCES:
            raise ValueError(f"data.val_source must be one of {VAL_SOURCES}, got {val_source!r}")
        pair = train_csv is not None or test_csv is not None
        if bool(files) == pair or (pair and not (train_csv and test_csv)):
            raise ValueError(
                "give either data.files (split into train/test) or both data.train_csv and "
                f"data.test_csv; got files={files}, train_csv={train_csv}, test_csv={test_csv}"
            )
        if label_names is not None and len(label_names) != 2:
            raise ValueError(f"data.label_names must name two classes, got {list(label_names)}")
        self.save_hyperparameters()
        self.corpus: Corpus | None = None
        self.rows: dict[str, np.ndarray] = {}
        self.class_names: list[str] = []
        self.pooled: torch.Tensor | None = None
        self._labels: torch.Tensor | None = None

    def prepare_data(self) -> None:
        """Write the synthetic demo files when they are configured and missing."""
        hp = self.hparams
        if hp.demo_dir and hp.train_csv and Path(hp.train_csv).parent == Path(hp.demo_dir):
            demo.write_dataset(hp.train_csv, hp.test_csv)

    def setup(self, stage: str | None = None) -> None:
        """Read, validate, tokenize (or load the token cache) and split; runs once."""
        if self.corpus is not None:
            return
        hp = self.hparams
        paths = list(hp.files) if hp.files else [hp.train_csv, hp.test_csv]
        read = [
            read_labelled_csv(p, hp.text_column, hp.label_column, hp.format == "notebook")
            for p in paths
        ]
        self.class_names = self._class_names(paths, [labels for _, labels in read])
        meta = artifact.read_meta(hp.embedding_path)
        tokenizer = functools.cache(lambda: load_tokenizer(hp.embedding_path))
        text_spec = {"format": hp.format, "text_column": hp.text_column}
        parts = []
        for path, (texts, labels) in zip(paths, read, strict=True):
            codes = encode_labels(path, labels, self.class_names, hp.label_column)
            cache_file = None
            if hp.cache_dir:
                key = token_cache_key(path, text_spec, meta)
                cache_file = Path(hp.cache_dir) / "tokens" / f"{key}.npz"
            parts.append((texts, codes, *tokenize_cached(texts, tokenizer, cache_file)))
        self.corpus = _concat(parts)
        self._labels = torch.from_numpy(self.corpus.labels.astype(np.float32))
        self.rows = self._split([len(p[0]) for p in parts])

    def _class_names(self, paths: list[str], labels: list[np.ndarray]) -> list[str]:
        if self.hparams.label_names is not None:
            return [str(name) for name in self.hparams.label_names]
        # LabelEncoder: sorted unique labels of the training data.
        train = labels if self.hparams.files else labels[:1]
        names = sorted(set(np.concatenate(train).tolist()))
        if len(names) != 2:
            raise DataError(
                f"{', '.join(map(str, paths[: len(train)]))}: found labels {names} in column "
                f"{self.hparams.label_column!r}; the classifier is binary, expected two classes"
            )
        return names

    def _split(self, sizes: list[int]) -> dict[str, np.ndarray]:
        hp, labels = self.hparams, self.corpus.labels
        if hp.files:
            train, test = _stratified(np.arange(sum(sizes)), labels, hp.test_size, hp.split_seed)
        else:
            train, test = np.arange(sizes[0]), np.arange(sizes[0], sizes[0] + sizes[1])
        if hp.val_source == "test":
            return {"train": train, "val": test, "test": test}
        train, val = _stratified(train, labels, hp.val_fraction, hp.split_seed)
        return {"train": train, "val": val, "test": test}

    @torch.no_grad()
    def cache_features(self, embedding: nn.Module | None) -> None:
        """Pool every row once with a frozen `embedding`; None (or `cache_pooled=False`) drops it.

        (total_tokens,) ids, (chunk,) offsets -> (chunk, D), concatenated to (N, D).
        """
        if embedding is None or not self.hparams.cache_pooled:
            self.pooled = None
            return
        self.setup()
        c, device = self.corpus, embedding.weight.device
        chunks = []
        for start in range(0, len(c.labels), 4096):
            rows = np.arange(start, min(start + 4096, len(c.labels)))
            ids, offsets = gather_bags(c.ids, c.starts, c.lengths, rows)
            chunks.append(embedding(ids.to(device), offsets.to(device)).float().cpu())
        self.pooled = torch.cat(chunks)

    def dataset(self, split: str) -> Dataset:
        """The rows of `split` as pooled vectors when cached, else as token bags."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.setup()
        if self.pooled is not None:
            return PooledBatches(self.pooled, self.rows[split], self._labels)
        return TokenBatches(self.corpus, self.rows[split], self._labels)

    def split_dataloader(self, split: str, shuffle: bool = False) -> DataLoader:
        """Batches of `split`, in file order unless `shuffle`.

        Training batches are `batch_size` (the notebook's 32); evaluation batches are
        `eval_batch_size`: without dropout or updates the results do not depend on it (losses
        are sample-weighted means), and large batches save per-step overhead."""
        workers = self.hparams.num_workers
        return DataLoader(
            self.dataset(split),
            batch_size=self.hparams.batch_size if shuffle else self.hparams.eval_batch_size,
            shuffle=shuffle,
            collate_fn=_batch_as_is,
            num_workers=workers,
            persistent_workers=workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled batches of `batch_size`; fused (one process): the whole epoch's batches in
        one Lightning step, which the model steps through (see FakeNewsClassifier)."""
        trainer = self.trainer
        if not self.hparams.fuse_train_batches or (trainer and trainer.world_size > 1):
            return self.split_dataloader("train", shuffle=True)
        dataset, size = self.dataset("train"), self.hparams.batch_size
        # The same sampler classes as shuffle=True, so the same random order for a seed.
        epoch = _WholeEpoch(BatchSampler(RandomSampler(dataset), size, drop_last=False))
        return DataLoader(dataset, batch_sampler=epoch, collate_fn=_Minibatch(size))

    def val_dataloader(self) -> DataLoader:
        return self.split_dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.split_dataloader("test")

    def labels(self, split: str) -> np.ndarray:
        """(N_split,) int64 class indices of `split`, in file order."""
        self.setup()
        return self.corpus.labels[self.rows[split]]

    def texts(self, split: str) -> np.ndarray:
        """The texts of `split` exactly as they are fed to the embedding."""
        self.setup()
        return self.corpus.texts[self.rows[split]]


def _stratified(
    rows: np.ndarray, labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split of `rows`, each part back in file order."""
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


def _concat(parts: list[tuple[np.ndarray, ...]]) -> Corpus:
    texts, labels, ids, lengths = (np.concatenate([p[i] for p in parts]) for i in range(4))
    starts = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    return Corpus(texts, labels.astype(np.int64), ids.astype(np.int64), starts, lengths)
