"""A TF-Hub text module made the way tensorflow/hub's own example exporter makes it.

examples/text_embeddings_v2/export_v2.py (the documented way to turn one's own word vectors
into a TF-Hub text module), rebuilt here step by step from its structure:

* the embedding file ("token v1 v2 ... vD" per line) is parsed into Python floats and
  stacked with `np.array`, so the table is **float64** and so is every output;
* the vocabulary is written to a `tokens.txt` asset and looked up with
  `lookup_ops.index_table_from_file(..., num_oov_buckets, hasher_spec=FastHashSpec)`
  (a text-file hash table wrapped in `IdTableWithHashBuckets`);
* the OOV rows are appended by resizing the array in place (`ndarray.resize` fills with zeros);
* `_tokenize`: `regex_replace(r"\\pP", "")`, reshape to a vector, `tf.strings.split(" ")` to a
  sparse tensor, `fill_empty_rows` with `""`, `reset_shape`, then the table lookup;
* `__call__`: `safe_embedding_lookup_sparse(..., combiner="sqrtn")`;
* the model is a `tf.train.Checkpoint` with `variables`/`trainable_variables` attributes,
  saved with `tf.saved_model.save`.

Two names differ only because TensorFlow renamed them: the exporter's
`tracking.TrackableAsset` is `tf.saved_model.Asset` today. `lookup_ops` is a private module,
as in the exporter; `test_the_exporters_private_names_still_exist` (tests/test_convert.py)
fails loudly when an upgrade removes what is used here.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def write_embedding_file(path: str | os.PathLike, words: Sequence[str], vectors) -> Path:
    """The exporter's input format: one "token v1 ... vD" line per word, values as text."""
    with open(path, "w", encoding="utf-8") as f:
        for word, row in zip(words, vectors, strict=True):
            f.write(word + " " + " ".join(repr(float(v)) for v in row) + "\n")
    return Path(path)


def load_embedding_file(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """Tokens and the (V, D) matrix, parsed as the exporter's `load` does: Python floats
    stacked by `np.array`, hence float64."""
    vocabulary, embeddings = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            token, *values = line.split()
            vocabulary.append(token)
            embeddings.append([float(v) for v in values])
    if len({len(e) for e in embeddings}) > 1:
        raise ValueError(f"{path}: inconsistent embedding dimensions")
    return vocabulary, np.array(embeddings)


def export_v2_module(
    embedding_file: str | os.PathLike, export_path: str | os.PathLike, num_oov_buckets: int = 1
) -> Path:
    """`python export_v2.py --embedding_file=... --export_path=... --num_oov_buckets=...`."""
    import tensorflow as tf
    from tensorflow.python.ops import lookup_ops

    vocabulary, vectors = load_embedding_file(embedding_file)
    with tempfile.TemporaryDirectory() as tmp:
        tokens = Path(tmp) / "tokens.txt"
        tokens.write_text("".join(f"{t}\n" for t in vocabulary), encoding="utf-8")

        class TextEmbeddingModel(tf.train.Checkpoint):
            def __init__(self) -> None:
                super().__init__()
                self._vocabulary_file = tf.saved_model.Asset(str(tokens))
                self._table = lookup_ops.index_table_from_file(
                    vocabulary_file=self._vocabulary_file,
                    num_oov_buckets=num_oov_buckets,
                    hasher_spec=lookup_ops.FastHashSpec,
                )
                # In place, as the exporter does: the new OOV rows are zeros, dtype unchanged.
                vectors.resize((vectors.shape[0] + num_oov_buckets, vectors.shape[1]))
                self.embeddings = tf.Variable(vectors)
                self.variables = [self.embeddings]
                self.trainable_variables = self.variables

            @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
            def _tokenize(self, sentences):
                normalized = tf.strings.regex_replace(sentences, r"\pP", "")
                normalized = tf.reshape(normalized, [-1])
                sparse_tokens = tf.strings.split(normalized, " ").to_sparse()
                sparse_tokens, _ = tf.sparse.fill_empty_rows(sparse_tokens, tf.constant(""))
                sparse_tokens = tf.sparse.reset_shape(sparse_tokens)
                ids = self._table.lookup(sparse_tokens.values)
                return sparse_tokens.indices, ids, sparse_tokens.dense_shape

            @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
            def __call__(self, sentences):
                indices, ids, shape = self._tokenize(sentences)
                return tf.nn.safe_embedding_lookup_sparse(
                    embedding_weights=self.embeddings,
                    sparse_ids=tf.SparseTensor(indices, ids, shape),
                    sparse_weights=None,
                    combiner="sqrtn",
                )

        tf.saved_model.save(TextEmbeddingModel(), str(export_path))
    return Path(export_path)


def random_words(count: int, seed: int = 0) -> list[str]:
    """`count` distinct lowercase words of 2-9 letters (no punctuation: all reachable)."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words: dict[str, None] = {}
    while len(words) < count:
        words["".join(rng.choice(letters, rng.integers(2, 10)))] = None
    return list(words)
