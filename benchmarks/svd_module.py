"""A TF-Hub-format module whose vectors carry meaning: truncated SVD of a term-document matrix.

Random tables make the frozen comparison meaningless (both models predict the majority class),
so the parity and training benchmarks build word vectors from the training split itself:
`TruncatedSVD` (latent semantic analysis) of the (documents x terms) sublinear TF-IDF matrix,
terms tokenised exactly as the v2 exporter's recipe does it, scaled to a fixed spread (`STD`).
On seed-fakenews this lifts the notebook's frozen head clearly above the majority class
(`benchmarks/parity_train.py` prints the figures), where raw counts scaled to max |x| = 1 left
it near the majority class: their pooled vectors are tiny and dominated by word frequency.
`rows` pads the table to a real module's size with small random rows for synthetic tokens, so
memory and optimizer costs are those of the real table.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fakenews_pl.hub.hub_module import export_text_embedding
from fakenews_pl.hub.tokenizer import HubTokenizer, TextRecipe

# Overall standard deviation of the word vectors (and of the filler rows).
STD = 0.1


def svd_word_vectors(texts: Sequence[str], dim: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """(vocabulary, (V, dim) float32 vectors) from the texts' term-document matrix."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer

    splitter = HubTokenizer([], 1, TextRecipe())
    # TF vocabulary files hold one token per line: no empty tokens, no line breaks.
    docs = [
        [t for t in row if t and "\n" not in t and "\r" not in t]
        for row in splitter.tokenize(list(texts))
    ]
    counts = CountVectorizer(analyzer=lambda tokens: tokens, min_df=2).fit(docs)
    matrix = counts.transform(docs).astype(np.float32)
    weighted = TfidfTransformer(sublinear_tf=True).fit_transform(matrix)
    svd = TruncatedSVD(n_components=dim, random_state=seed).fit(weighted)
    vectors = svd.components_.T * np.sqrt(svd.singular_values_)  # (V, dim)
    vectors *= STD / vectors.std()
    return list(counts.get_feature_names_out()), vectors.astype(np.float32)


def svd_table(
    texts: Sequence[str], dim: int, rows: int | None = None, oov_buckets: int = 1, seed: int = 0
) -> tuple[list[str], np.ndarray]:
    """(vocabulary, (len(vocab) + oov_buckets, dim) table): the SVD vectors, then filler rows
    for synthetic tokens up to `rows` rows and the OOV buckets."""
    vocab, vectors = svd_word_vectors(texts, dim, seed)
    rng = np.random.default_rng(seed)
    extra = 0 if rows is None else rows - len(vocab) - oov_buckets
    if extra < 0:
        raise ValueError(f"{rows} rows cannot hold {len(vocab)} tokens + {oov_buckets} buckets")
    vocab += [f"pad{i:07d}" for i in range(extra)]
    scale = float(np.abs(vectors).std())
    filler = rng.normal(0, scale, size=(extra + oov_buckets, dim)).astype(np.float32)
    return vocab, np.concatenate([vectors, filler])


def export_svd_module(
    texts: Sequence[str],
    out: Path,
    dim: int,
    rows: int | None = None,
    oov_buckets: int = 1,
    seed: int = 0,
) -> Path:
    """Export the SVD vectors as a v2-exporter module, padded to `rows` rows if given."""
    vocab, table = svd_table(texts, dim, rows, oov_buckets, seed)
    return export_text_embedding(out, vocab, table, oov_buckets=oov_buckets)


def write_svd_artifact(
    texts: Sequence[str],
    out: Path,
    dim: int,
    rows: int | None = None,
    oov_buckets: int = 1,
    seed: int = 0,
) -> Path:
    """Write the same table straight into a `HubEmbedding` artifact, without TensorFlow.

    The artifact `scripts/convert_tfhub.py` makes of `export_svd_module(...)` with the same
    arguments holds the same table and vocabulary (the same sha256); this path is for machines
    without TensorFlow, such as the GPU check (`benchmarks/gpu_check.sh`).
    """
    import torch

    from fakenews_pl.hub import artifact

    vocab, table = svd_table(texts, dim, rows, oov_buckets, seed)
    meta = {
        "source": "benchmarks/svd_module.write_svd_artifact (SVD of the train texts)",
        "oov_buckets": oov_buckets,
        "recipe": TextRecipe().to_dict(),  # the v2 exporter's, as export_text_embedding's
        "combiner": "sqrtn",
    }
    with artifact.atomic_directory(out) as tmp:
        artifact.write_artifact(tmp, torch.from_numpy(table), vocab, meta)
    return Path(out)
