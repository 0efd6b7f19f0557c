"""Build TF-Hub-format text-embedding SavedModels with TensorFlow.

The tests, the benchmarks and the Keras reference need modules that behave like Google's
token embeddings without downloading them, and `fakenews_pl.hub.tfhub_export` writes a converted
(possibly fine-tuned) table back as one. `export_embedding_module` writes a module with the
same structure as the public exporters in tensorflow/hub: a vocabulary asset
(`assets/tokens.txt`), a table of `vocab + oov_buckets` rows, the string preprocessing of a
`TextRecipe`, a sparse combiner, and the table listed as the module's `variables` and
`trainable_variables`, so that `hub.KerasLayer(path, trainable=True)` fine-tunes it. The graph
uses exactly the ops `fakenews_pl.hub.convert` reads, so converting the module gives back the same
recipe, vocabulary, OOV buckets, combiner and table.

`export_text_embedding` is the short form for the exporters' recipes: `split="v2"` follows
`examples/text_embeddings_v2/export_v2.py` (`tf.strings.split(x, " ")`, so two spaces make an
empty token); `split="v1"` follows `examples/text_embeddings/export.py`
(`tf.compat.v1.string_split(x, " ")`, which skips empty tokens); `split="whitespace"` splits on
ASCII whitespace. TensorFlow is imported lazily: the torch side never needs it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fakenews_pl.hub.pooling import COMBINERS
from fakenews_pl.hub.tokenizer import TextRecipe

SPLITS = ("v2", "v1", "whitespace")
TABLE_DTYPES = ("float16", "float32", "float64")


def exporter_recipe(
    strip_punctuation: bool = True, lower: str | None = None, split: str = "v2"
) -> TextRecipe:
    """The `TextRecipe` of `export_text_embedding`'s options (what the converter reads back).

    `lower` is None, "ascii" or "utf-8"; `split` one of `SPLITS`.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    steps = []
    if strip_punctuation:
        steps.append(
            {"op": "regex_replace", "pattern": r"\pP", "rewrite": "", "replace_global": True}
        )
    if lower is not None:
        steps.append({"op": "lower", "encoding": lower})
    if split == "v1":
        return TextRecipe(steps=tuple(steps), split="any_of", sep=" ", skip_empty=True)
    return TextRecipe(steps=tuple(steps), split="sep" if split == "v2" else "whitespace")


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
    recipe = exporter_recipe(strip_punctuation, lower, split)
    return export_embedding_module(
        export_dir, vocab, table, recipe, oov_buckets=oov_buckets, combiner=combiner
    )


def check_writable(recipe: TextRecipe) -> None:
    """Refuse (ValueError) a recipe whose graph `fakenews_pl.hub.convert` would read back as a
    different recipe. The converter only produces writable ones; the others are spellings it
    never writes (e.g. `skip_empty` with StringSplitV2, which has no such attribute)."""
    if recipe.skip_empty and recipe.split != "any_of":
        raise ValueError(
            f"recipe split {recipe.split!r} with skip_empty=True cannot be written: "
            "tf.strings.split (StringSplitV2) has no skip_empty; only split='any_of' "
            "(tf.compat.v1.string_split) skips empty tokens"
        )
    if recipe.split == "whitespace" and recipe.sep != " ":
        raise ValueError(
            f"recipe split 'whitespace' ignores sep; the converter records sep=' ', "
            f"got {recipe.sep!r}"
        )
    if recipe.maxsplit == 0 or recipe.maxsplit < -1:
        raise ValueError(
            f"recipe maxsplit must be -1 (no limit) or > 0, got {recipe.maxsplit} "
            "(StringSplitV2 treats it as no limit, and the converter records -1)"
        )


def _check_vocab(vocab: Sequence[str]) -> None:
    for i, token in enumerate(vocab):
        if "\n" in token or token.endswith("\r"):
            raise ValueError(
                f"vocabulary token {i} ({token!r}) holds a newline or ends with '\\r': "
                "TF's text-file table reads one token per line, without a trailing '\\r'"
            )


def export_embedding_module(
    export_dir: str | os.PathLike,
    vocab: Sequence[str],
    table: np.ndarray,
    recipe: TextRecipe = TextRecipe(),  # noqa: B008 (frozen dataclass: immutable default)
    *,
    oov_buckets: int = 1,
    combiner: str = "sqrtn",
) -> Path:
    """Write a TF2 SavedModel text embedding with `recipe`'s text handling.

    `table` is a (len(vocab) + oov_buckets, D) float16/32/64 array, saved in its own dtype.
    `oov_buckets=0` looks tokens up in a StaticHashTable whose default id -1 the safe lookup
    prunes (unknown tokens count for nothing), as `HubTokenizer` does. An empty row becomes
    `recipe.empty_row_token` (`tf.sparse.fill_empty_rows`) or, when None, a zero vector.
    `module(tf.constant([...]))` -> (N, D); `module._tokenize` -> (indices, ids, dense_shape).
    """
    import tensorflow as tf

    if combiner not in COMBINERS:
        raise ValueError(f"combiner must be one of {COMBINERS}, got {combiner!r}")
    if oov_buckets < 0:
        raise ValueError(f"oov_buckets must be >= 0, got {oov_buckets}")
    table = np.asarray(table)
    if table.ndim != 2 or table.shape[0] != len(vocab) + oov_buckets:
        raise ValueError(
            f"table must have shape (len(vocab) + oov_buckets, dim) = "
            f"({len(vocab) + oov_buckets}, dim), got {table.shape}"
        )
    if table.dtype.name not in TABLE_DTYPES:
        raise ValueError(f"table dtype must be one of {TABLE_DTYPES}, got {table.dtype}")
    check_writable(recipe)
    _check_vocab(vocab)

    with tempfile.TemporaryDirectory() as tmp:
        vocab_file = Path(tmp) / "tokens.txt"
        with open(vocab_file, "w", encoding="utf-8", newline="") as f:
            f.writelines(f"{token}\n" for token in vocab)
        module = _TextEmbedding(str(vocab_file), table, oov_buckets, recipe, combiner)
        tf.saved_model.save(module, str(export_dir))
    return Path(export_dir)


def _normalize(sentences, recipe: TextRecipe):
    """The recipe's string steps in order: StaticRegexReplace and StringLower ops."""
    import tensorflow as tf

    normalized = sentences
    for step in recipe.steps:
        if step["op"] == "regex_replace":
            normalized = tf.strings.regex_replace(  # str pattern/rewrite: StaticRegexReplace
                normalized,
                step["pattern"],
                step["rewrite"],
                replace_global=step.get("replace_global", True),
            )
        else:  # lower; the converter reads an empty encoding attr as ASCII
            encoding = "utf-8" if step["encoding"] == "utf-8" else ""
            normalized = tf.strings.lower(normalized, encoding=encoding)
    return tf.reshape(normalized, [-1])


def _split(normalized, recipe: TextRecipe):
    """(N,) strings -> SparseTensor of tokens, (N, max_tokens)."""
    import tensorflow as tf

    if recipe.split == "sep":
        return tf.strings.split(normalized, recipe.sep, maxsplit=recipe.maxsplit).to_sparse()
    if recipe.split == "whitespace":
        return tf.strings.split(normalized).to_sparse()  # StringSplitV2 with sep ""
    return tf.compat.v1.string_split(normalized, recipe.sep, skip_empty=recipe.skip_empty)


def _lookup_table(vocabulary_file, oov_buckets: int):
    import tensorflow as tf

    initializer = tf.lookup.TextFileInitializer(
        vocabulary_file,
        key_dtype=tf.string,
        key_index=tf.lookup.TextFileIndex.WHOLE_LINE,
        value_dtype=tf.int64,
        value_index=tf.lookup.TextFileIndex.LINE_NUMBER,
    )
    if oov_buckets:
        return tf.lookup.StaticVocabularyTable(initializer, num_oov_buckets=oov_buckets)
    # StaticVocabularyTable needs a bucket; -1 ids are pruned by safe_embedding_lookup_sparse.
    return tf.lookup.StaticHashTable(initializer, default_value=-1)


def _TextEmbedding(vocab_file, table, oov_buckets, recipe, combiner):
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
            self._table = _lookup_table(self._vocabulary_file, oov_buckets)
            self.embeddings = tf.Variable(table)
            self.variables = [self.embeddings]
            self.trainable_variables = [self.embeddings]

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def _tokenize(self, sentences):
            tokens = _split(_normalize(sentences, recipe), recipe)
            if recipe.empty_row_token is not None:
                tokens, _ = tf.sparse.fill_empty_rows(tokens, tf.constant(recipe.empty_row_token))
                # (Without a fill, reset_shape would drop trailing empty rows from the shape.)
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
