"""Tokenizer properties: hypothesis-made Unicode text tokenizes and embeds exactly as in TF.

For every recipe test_convert.py converts, a small module is exported and converted once; then
generated batches of texts (tests/support/texts.py: every script and category, combining marks,
every kind of whitespace, punctuation, symbols, emoji sequences, casing that changes length,
tokens thousands of characters long, empty strings) must give our ids and offsets equal to the
module's own `_tokenize`, and pooled vectors bit-equal to the module's output. Each batch goes
through both engines of `HubTokenizer`: as generated (fewer than SMALL_BATCH texts: string
steps per text, by translate table, and by google-re2 for a pattern that is not a bare class)
and padded to SMALL_BATCH (Arrow's RE2, vectorised). A last test compares utf-8 lowercasing
with TF's on every code point, alone and around a capital sigma.
"""

from __future__ import annotations

import dataclasses
import unicodedata

import numpy as np
import pyarrow as pa
import pytest

tf = pytest.importorskip("tensorflow")

from hypothesis import example, given  # noqa: E402
from support.texts import (  # noqa: E402
    ASSIGNED,
    REGRESSIONS,
    VOCAB,
    batches,
    padded,
    property_settings,
)
from test_convert import RECIPES  # noqa: E402  (the recipes the converter supports)

from fakenews_pl.hub.convert import convert  # noqa: E402
from fakenews_pl.hub.embedding import HubEmbedding  # noqa: E402
from fakenews_pl.hub.hub_module import export_text_embedding  # noqa: E402
from fakenews_pl.hub.tokenizer import (  # noqa: E402
    _NEWER_THAN_TF_ICU,
    SMALL_BATCH,
    HubTokenizer,
    _apply_step,
)

pytestmark = [pytest.mark.tf, pytest.mark.slow]

OOV_BUCKETS = 4099


class _Setups(dict):
    """recipe name -> (TF module, HubEmbedding, google-re2 variant); a short repr, since
    hypothesis prints it with every falsifying example."""

    def __repr__(self) -> str:
        return f"<modules: {', '.join(self)}>"


@pytest.fixture(scope="module")
def setups(tmp_path_factory) -> _Setups:
    """Per recipe: the TF module, our converted embedding and its google-re2 variant (or
    None), built and converted once."""
    root = tmp_path_factory.mktemp("properties")
    out = _Setups()
    for i, (name, options) in enumerate(RECIPES.items()):
        # Thousands of OOV buckets: with the recipes' own 1-5, a wrong token would often hash
        # to the right id (test_convert.py checks the bucket arithmetic itself).
        options = {**options, "oov_buckets": OOV_BUCKETS}
        rng = np.random.default_rng(100 + i)
        table = rng.normal(size=(len(VOCAB) + options["oov_buckets"], 8)).astype(np.float32)
        module = export_text_embedding(root / "hub" / name, VOCAB, table, **options)
        convert(str(module), root / "converted" / name, show_progress=False)
        embedding = HubEmbedding.load(root / "converted" / name)
        variant = _re2_variant(embedding.tokenizer, VOCAB)
        out[name] = (tf.saved_model.load(str(module)), embedding, variant)
    return out


def _re2_variant(tokenizer: HubTokenizer, vocab: list[str]) -> HubTokenizer | None:
    """The same tokenizer with `\\pP` written as `(?:\\pP)`, which the per-text engine runs
    on google-re2 instead of a translate table; None when the recipe has no regex step."""
    steps = tuple(
        {**s, "pattern": f"(?:{s['pattern']})"} if s["op"] == "regex_replace" else s
        for s in tokenizer.recipe.steps
    )
    if steps == tokenizer.recipe.steps:
        return None
    recipe = dataclasses.replace(tokenizer.recipe, steps=steps)
    return HubTokenizer(vocab, tokenizer.oov_buckets, recipe)


def _assert_ids_equal(tokenizer: HubTokenizer, texts: list[str], ids, rows, engine: str):
    """Our (ids, offsets) for `texts` against TF's (ids, row of each id); the first text that
    differs is named with its tokens."""
    ours, offsets = tokenizer.encode(texts)
    expected_offsets = np.searchsorted(rows, np.arange(len(texts)))
    if np.array_equal(ours, ids) and np.array_equal(offsets, expected_offsets):
        return
    ends = np.append(offsets[1:], len(ours))
    for i, text in enumerate(texts):
        theirs = ids[rows == i]
        if not np.array_equal(ours[offsets[i] : ends[i]], theirs):
            tokens = [t[:40] for t in tokenizer.tokenize(texts)[i]]  # by the same engine
            pytest.fail(
                f"{engine} engine, text {i} {text[:200]!r}: our tokens {tokens[:30]!r}, ids "
                f"{ours[offsets[i] : ends[i]][:30].tolist()}; TF ids {theirs[:30].tolist()}"
            )
    pytest.fail(f"{engine} engine: same ids, different offsets")


@pytest.mark.parametrize("name", list(RECIPES))
@property_settings(50)
@given(texts=batches)
@example(texts=REGRESSIONS[0])
@example(texts=REGRESSIONS[1])
@example(texts=REGRESSIONS[2])
@example(texts=REGRESSIONS[3])
def test_ids_and_vectors_equal_tensorflow(name, texts, setups):
    module, embedding, variant = setups[name]
    tokenizer = embedding.tokenizer
    assert len(texts) < SMALL_BATCH
    big = padded(texts)
    indices, ids, _ = module._tokenize(tf.constant(big))
    rows, ids = indices.numpy()[:, 0], ids.numpy()
    n_small = int(np.searchsorted(rows, len(texts)))

    _assert_ids_equal(tokenizer, big, ids, rows, "Arrow")
    _assert_ids_equal(tokenizer, texts, ids[:n_small], rows[:n_small], "per-text")
    if variant is not None:
        _assert_ids_equal(variant, texts, ids[:n_small], rows[:n_small], "google-re2")

    expected = module(tf.constant(big)).numpy()
    np.testing.assert_array_equal(embedding.embed_texts(big).numpy(), expected)


def test_lowercasing_equals_tensorflow_for_every_code_point():
    """TF's utf-8 StringLower and ours on each code point alone, and on each assigned one where
    a final sigma's context turns on whether it is cased or case-ignorable; and the characters
    our tokenizer treats as unknown to TF's ICU are exactly those Python knows (assigned, not
    private use) and `tf.strings.unicode_script` calls Unknown (USCRIPT_UNKNOWN = 103). On a
    Python with newer Unicode data than 14.0 this names the code points to add."""
    codes = np.array([c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF])
    chars = [chr(c) for c in codes]
    contexts = ("{}Σ", "A{}Σ", "AΣ{}", "AΣ{}B", "Σ{}Σ")
    texts = chars + [form.format(c) for form in contexts for c in ASSIGNED]
    step = {"op": "lower", "encoding": "utf-8"}
    ours = _apply_step(pa.array(texts, pa.large_string()), step, per_text=False).to_pylist()
    expected = [t.decode() for t in tf.strings.lower(texts, encoding="utf-8").numpy()]
    differ = [(t, o, e) for t, o, e in zip(texts, ours, expected, strict=True) if o != e]
    assert differ == []

    unknown = tf.strings.unicode_script(tf.constant(codes, tf.int32)).numpy() == 103
    assigned = np.array([unicodedata.category(c) not in ("Cn", "Co") for c in chars])
    listed = np.array([c in _NEWER_THAN_TF_ICU for c in chars])
    assert [hex(c) for c in codes[(unknown & assigned) != listed]] == []
