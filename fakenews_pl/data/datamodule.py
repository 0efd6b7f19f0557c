"""The LightningDataModule: labelled CSV files -> a tokenized corpus -> split batches.

    dm = FakeNewsDataModule("artifacts/embeddings/nnlm128", train_csv="train.csv",
                            test_csv="test.csv")
    dm.setup()
    batch = next(iter(dm.train_dataloader()))   # a batches.TokenBatch

Reading, preprocessing, tokenizing and splitting live in `fakenews_pl.data.corpus`; what a
batch holds in `fakenews_pl.data.batches`. How training batches are made (minibatches, one
fused epoch batch, length buckets; pooled vectors or token ids) is a `batches.BatchPlan`,
decided once per fit by `fakenews_pl.training.callbacks.PlanBatches` and handed over with
`use_plan`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from pytorch_lightning import LightningDataModule
from pytorch_lightning.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset

from fakenews_pl.data import batches, corpus
from fakenews_pl.data.batches import BatchPlan
from fakenews_pl.errors import ConfigError

VAL_SOURCES = ("split", "test")
SPLITS = ("train", "val", "test")


def check_options(
    format: str,
    val_source: str,
    files: Sequence[str] | None,
    train_csv: str | None,
    test_csv: str | None,
    label_names: Sequence[str] | None,
    dir: str | None = None,
    text_field: str = "title",
) -> None:
    """Refuse option combinations the data module cannot use, naming the `data.*` keys."""
    if format not in corpus.FORMATS:
        raise ConfigError(f"data.format must be one of {corpus.FORMATS}, got {format!r}")
    if val_source not in VAL_SOURCES:
        raise ConfigError(f"data.val_source must be one of {VAL_SOURCES}, got {val_source!r}")
    if text_field not in corpus.TEXT_FIELDS:
        raise ConfigError(
            f"data.text_field must be one of {corpus.TEXT_FIELDS}, got {text_field!r}"
        )
    pair = train_csv is not None or test_csv is not None
    if format == "isot":
        if not dir or files or pair:
            raise ConfigError(
                "data=isot reads Fake.csv and True.csv in data.dir and splits them: give "
                f"data.dir and leave data.files, data.train_csv and data.test_csv null; got "
                f"dir={dir}, files={files}, train_csv={train_csv}, test_csv={test_csv}"
            )
        if label_names is not None and sorted(map(str, label_names)) != ["Fake", "True"]:
            raise ConfigError(
                "data=isot labels rows by their file, Fake or True: data.label_names must "
                f"name those two, got {list(label_names)}"
            )
    elif bool(files) == pair or (pair and not (train_csv and test_csv)):
        raise ConfigError(
            "give either data.files (split into train/test) or both data.train_csv and "
            f"data.test_csv; got files={files}, train_csv={train_csv}, test_csv={test_csv}"
        )
    if label_names is not None and len(label_names) != 2:
        raise ConfigError(f"data.label_names must name two classes, got {list(label_names)}")


class FakeNewsDataModule(LightningDataModule):
    """Labelled texts from CSV files, split train/val/test, tokenized for one embedding.

    Give either `train_csv` and `test_csv`, or `files` (split into train/test by a seeded
    stratified `test_size` split), or with `format="isot"` the `dir` holding the ISOT dataset's
    `Fake.csv` and `True.csv` (split like `files`; `text_field` title, text or both, and
    `strip_dateline`: `corpus.read_isot_csv`). Validation is a seeded stratified
    `val_fraction` of train, or the test set itself with `val_source="test"` (what the notebook
    does). Training batches hold `batch_size` rows (the notebook's 32), made as the
    plan handed over says (`use_plan`; `fuse_train_batches` and `length_buckets` are read by
    whoever decides it).
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
        num_workers: int = 0,
        dir: str | None = None,
        text_field: str = "title",
        strip_dateline: bool = True,
        max_tokens: int = 256,
        length_buckets: bool | None = None,
    ) -> None:
        super().__init__()
        check_options(format, val_source, files, train_csv, test_csv, label_names, dir, text_field)
        self.save_hyperparameters()
        self.corpus: corpus.Corpus | None = None
        self.rows: dict[str, np.ndarray] = {}
        # Until a plan is handed over (`use_plan`): plain minibatches, or length buckets.
        self.plan = BatchPlan("buckets" if length_buckets else "minibatches")

    @property
    def paths(self) -> list[str]:
        """The data files, in the order they are read."""
        hp = self.hparams
        if hp.format == "isot":
            return [str(path) for path in corpus.isot_paths(hp.dir)]
        return list(hp.files) if hp.files else [hp.train_csv, hp.test_csv]

    @property
    def split_files(self) -> bool:
        """Whether all files together are split into train/test (else: train file, test file)."""
        return self.hparams.format == "isot" or bool(self.hparams.files)

    @property
    def class_names(self) -> list[str]:
        """Class names by index (0, 1)."""
        self.setup()
        return self.corpus.class_names

    def setup(self, stage: str | None = None) -> None:
        """Read, validate, tokenize (or load the token cache) and split; runs once."""
        if self.corpus is not None:
            return
        hp = self.hparams
        self.corpus = corpus.load(
            self.paths,
            hp.embedding_path,
            hp.format,
            hp.text_column,
            hp.label_column,
            hp.label_names,
            hp.cache_dir,
            labels_from=None if self.split_files else 1,  # LabelEncoder on the training data
            text_field=hp.text_field,
            strip_dateline=hp.strip_dateline,
        )
        self.rows = corpus.split(
            self.corpus, self.split_files, hp.test_size, hp.val_fraction,
            hp.val_source == "test", hp.split_seed,
        )  # fmt: skip
        self._labels = torch.from_numpy(self.corpus.labels.astype(np.float32))

    def fingerprint(self) -> dict[str, Any]:
        """What the run trained and held out: per split, its row count and the sha256 of its
        texts and labels in order (`corpus.rows_sha256`)."""
        self.setup()
        return {
            split: {"rows": len(rows), "sha256": corpus.rows_sha256(self.corpus, rows)}
            for split, rows in self.rows.items()
        }

    def state_dict(self) -> dict[str, Any]:
        """Saved in every checkpoint: the data's `fingerprint` (evaluate.py checks it)."""
        return {"fingerprint": self.fingerprint()} if self.corpus is not None else {}

    def use_plan(self, plan: BatchPlan) -> None:
        """Make training batches as `plan` says (and serve its pooled vectors, if any, for
        every split)."""
        self.plan = plan

    def dataset(self, split: str) -> Dataset:
        """The rows of `split` as pooled vectors when given, else as token bags."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.setup()
        if self.plan.pooled is not None:
            return batches.PooledRows(self.plan.pooled, self.rows[split], self._labels)
        return batches.TokenRows(self.corpus, self.rows[split], self._labels)

    def split_dataloader(self, split: str, shuffle: bool = False) -> DataLoader:
        """Batches of `split`, in file order unless `shuffle`.

        Training batches are `batch_size`; evaluation batches are `eval_batch_size`: without
        dropout or updates the results do not depend on it (losses are sample-weighted means),
        and large batches save per-step overhead."""
        hp = self.hparams
        size = hp.batch_size if shuffle else hp.eval_batch_size
        return batches.loader(self.dataset(split), size, shuffle, hp.num_workers)

    def train_dataloader(self) -> DataLoader:
        """Training batches as the plan says (`use_plan`): shuffled minibatches of
        `batch_size`, one epoch batch of them (`fakenews_pl.training.fused`), or minibatches of
        rows of similar length (for a sequence encoder)."""
        hp = self.hparams
        if self.plan.kind == "buckets":
            train_lengths = self.corpus.lengths[self.rows["train"]]
            rank_zero_info("train texts, " + batches.length_summary(train_lengths, hp.max_tokens))
            lengths = np.minimum(train_lengths, hp.max_tokens)
            return batches.bucket_loader(
                self.dataset("train"), hp.batch_size, lengths, hp.num_workers
            )
        if self.plan.kind == "epoch":
            return batches.epoch_loader(self.dataset("train"), hp.batch_size)
        return self.split_dataloader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches, in file order."""
        return self.split_dataloader("val")

    def test_dataloader(self) -> DataLoader:
        """Test batches, in file order."""
        return self.split_dataloader("test")

    def labels(self, split: str) -> np.ndarray:
        """(N_split,) int64 class indices of `split`, in file order."""
        self.setup()
        return self.corpus.labels[self.rows[split]]

    def texts(self, split: str) -> np.ndarray:
        """The texts of `split` exactly as they are fed to the embedding."""
        self.setup()
        return self.corpus.texts[self.rows[split]]
