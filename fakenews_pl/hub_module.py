"""Build TF-Hub-format text-embedding SavedModels with TensorFlow.

The tests, the benchmarks and the Keras reference need modules that behave like Google's
token embeddings without downloading them. `export_text_embedding` writes one with the same
structure as the public exporters in tensorflow/hub: a vocabulary asset (`assets/tokens.txt`),
a table of `vocab + oov_buckets` rows, string preprocessing, a sparse combiner, and the table
listed as the module's `variables` and `trainable_variables`, so that
`hub.KerasLayer(path, trainable=True)` fine-tunes it.

`split="v2"` follows `examples/text_embeddings_v2/export_v2.py` (`tf.strings.split(x, " ")`,
so two spaces make an empty token); `split="v1"` follows `examples/text_embeddings/export.py`
(`tf.compat.v1.string_split(x, " ")`, which skips empty tokens); `split="whitespace"` splits on
ASCII whitespace. TensorFlow is imported lazily: the torch side never needs it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fakenews_pl.pooling import COMBINERS

SPLITS = ("v2", "v1", "whitespace")


def export_text_embedding(
    export_dir: str | os.PathLike,
    vocab: Sequence[str],
    table: np.ndarray,
    *,
    oov_buckets: int = 1,
    strip_punctuation: bool = True,
    lower: str | None = None,
    split: str = "v2",
    combiner: str = "sqrtn",
) -> Path:
    """Write a TF2 SavedModel text embedding: `module(tf.constant([...]))` -> (N, D).

    `table` has `len(vocab) + oov_buckets` rows. `lower` is None, "ascii" or "utf-8".
    """
    import tensorflow as tf

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if combiner not in COMBINERS:
        raise ValueError(f"combiner must be one of {COMBINERS}, got {combiner!r}")
    if table.ndim != 2 or table.shape[0] != len(vocab) + oov_buckets:
        raise ValueError(
            f"table must have shape (len(vocab) + oov_buckets, dim) = "
            f"({len(vocab) + oov_buckets}, dim), got {table.shape}"
        )

    with tempfile.TemporaryDirectory() as tmp:
        vocab_file = Path(tmp) / "tokens.txt"
        vocab_file.write_text("".join(f"{token}\n" for token in vocab), encoding="utf-8")
        module = _TextEmbedding(
            str(vocab_file), table, oov_buckets, strip_punctuation, lower, split, combiner
        )
        tf.saved_model.save(module, str(export_dir))
    return Path(export_dir)


def _TextEmbedding(vocab_file, table, oov_buckets, strip_punctuation, lower, split, combiner):
    """The exporters' TextEmbeddingModel (built lazily for TF).

    A `tf.train.Checkpoint`, as in export_v2.py, rather than a `tf.Module`: a Module's
    `variables` and `trainable_variables` are read-only properties that are not saved, so a
    loaded module would list nothing and `hub.KerasLayer(trainable=True)` would fine-tune
    nothing. Here both are plain attributes saved with the module. The table keeps its
    checkpoint key `embeddings/.ATTRIBUTES/VARIABLE_VALUE` (its shortest path); saving also
    adds the Checkpoint's scalar int64 `save_counter`, which no signature reads.
    """
    import tensorflow as tf

    class TextEmbeddingModel(tf.train.Checkpoint):
        def __init__(self):
            super().__init__()
            self._vocabulary_file = tf.saved_model.Asset(vocab_file)
            self._table = tf.lookup.StaticVocabularyTable(
                tf.lookup.TextFileInitializer(
                    self._vocabulary_file,
                    key_dtype=tf.string,
                    key_index=tf.lookup.TextFileIndex.WHOLE_LINE,
                    value_dtype=tf.int64,
                    value_index=tf.lookup.TextFileIndex.LINE_NUMBER,
                ),
                num_oov_buckets=oov_buckets,
            )
            self.embeddings = tf.Variable(table)
            self.variables = [self.embeddings]
            self.trainable_variables = [self.embeddings]

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def _tokenize(self, sentences):
            normalized = sentences
            if strip_punctuation:
                normalized = tf.strings.regex_replace(normalized, r"\pP", "")
            if lower == "ascii":
                normalized = tf.strings.lower(normalized)
            elif lower == "utf-8":
                normalized = tf.strings.lower(normalized, encoding="utf-8")
            normalized = tf.reshape(normalized, [-1])
            if split == "v2":
                tokens = tf.strings.split(normalized, " ").to_sparse()
            elif split == "whitespace":
                tokens = tf.strings.split(normalized).to_sparse()
            else:
                tokens = tf.compat.v1.string_split(normalized, " ")
            tokens, _ = tf.sparse.fill_empty_rows(tokens, tf.constant(""))
            tokens = tf.sparse.reset_shape(tokens)
            ids = self._table.lookup(tokens.values)
            return tokens.indices, ids, tokens.dense_shape

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def __call__(self, sentences):
            indices, ids, shape = self._tokenize(sentences)
            return tf.nn.safe_embedding_lookup_sparse(
                embedding_weights=self.embeddings,
                sparse_ids=tf.SparseTensor(indices, ids, shape),
                sparse_weights=None,
                combiner=combiner,
            )

    return TextEmbeddingModel()
