"""A TF-Hub-format module whose vectors carry meaning: truncated SVD of a term-document matrix.

Random tables make the frozen comparison meaningless (both models predict the majority class),
so the parity and training benchmarks build word vectors from the training split itself:
`TruncatedSVD` of the (documents x terms) count matrix, terms tokenised exactly as the v2
exporter's recipe does it. `rows` pads the table to a real module's size with small random rows
for synthetic tokens, so memory and optimizer costs are those of the real table.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fakenews_pl.hub_module import export_text_embedding
from fakenews_pl.tokenizer import HubTokenizer, TextRecipe


def svd_word_vectors(texts: Sequence[str], dim: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """(vocabulary, (V, dim) float32 vectors) from the texts' term-document matrix."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import CountVectorizer

    splitter = HubTokenizer([], 1, TextRecipe())
    # TF vocabulary files hold one token per line: no empty tokens, no line breaks.
    docs = [
        [t for t in row if t and "\n" not in t and "\r" not in t]
        for row in splitter.tokenize(list(texts))
    ]
    counts = CountVectorizer(analyzer=lambda tokens: tokens, min_df=2).fit(docs)
    matrix = counts.transform(docs).astype(np.float32)
    svd = TruncatedSVD(n_components=dim, random_state=seed).fit(matrix)
    vectors = svd.components_.T * np.sqrt(svd.singular_values_)
    vectors /= np.abs(vectors).max()
    return list(counts.get_feature_names_out()), vectors.astype(np.float32)


def export_svd_module(
    texts: Sequence[str],
    out: Path,
    dim: int,
    rows: int | None = None,
    oov_buckets: int = 1,
    seed: int = 0,
) -> Path:
    """Export the SVD vectors as a v2-exporter module, padded to `rows` rows if given."""
    vocab, vectors = svd_word_vectors(texts, dim, seed)
    rng = np.random.default_rng(seed)
    extra = 0 if rows is None else rows - len(vocab) - oov_buckets
    if extra < 0:
        raise ValueError(f"{rows} rows cannot hold {len(vocab)} tokens + {oov_buckets} buckets")
    vocab += [f"pad{i:07d}" for i in range(extra)]
    scale = float(np.abs(vectors).std())
    filler = rng.normal(0, scale, size=(extra + oov_buckets, dim)).astype(np.float32)
    table = np.concatenate([vectors, filler])
    return export_text_embedding(out, vocab, table, oov_buckets=oov_buckets)
