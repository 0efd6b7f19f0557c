"""Tokenizer semantics that need no TensorFlow (the TF comparisons live in test_convert.py)."""

from __future__ import annotations

import functools

import farmhash
import numpy as np
import pytest
from hypothesis import example, given
from support.texts import RECIPE_KINDS, REGRESSIONS, batches, padded, property_settings
from support.texts import VOCAB as PROPERTY_VOCAB

from fakenews_pl.hub.tokenizer import SMALL_BATCH, HubTokenizer, TextRecipe

VOCAB = ["a", "b", "c", "Hello"]


def oov(token: str, buckets: int = 3) -> int:
    return len(VOCAB) + farmhash.fingerprint64(token.encode("utf-8")) % buckets


def test_encode_gives_flat_ids_and_bag_offsets():
    tok = HubTokenizer(VOCAB, 3, TextRecipe())
    ids, offsets = tok.encode(["a b", "", "c, zz!", "Hello"])
    # "" -> the "" token (an OOV bucket row); punctuation stripped before the split.
    assert ids.tolist() == [0, 1, oov(""), 2, oov("zz"), 3]
    assert offsets.tolist() == [0, 2, 3, 5]
    assert ids.dtype == np.int64 and offsets.dtype == np.int64


def test_separator_split_keeps_empty_tokens_and_v1_split_skips_them():
    keep = HubTokenizer(VOCAB, 3, TextRecipe(steps=()))
    skip = HubTokenizer(VOCAB, 3, TextRecipe(steps=(), split="any_of", skip_empty=True))
    assert keep.tokenize(["a  b ", " "]) == [["a", "", "b", ""], ["", ""]]
    assert skip.tokenize(["a  b ", " "]) == [["a", "b"], [""]]


def test_whitespace_split_is_ascii_whitespace_only():
    tok = HubTokenizer(VOCAB, 3, TextRecipe(steps=(), split="whitespace"))
    assert tok.tokenize(["  a\tb\nc\x0bd\x0ce\rf  ", "x\u00a0y\u2003z"]) == [
        ["a", "b", "c", "d", "e", "f"],
        ["x\u00a0y\u2003z"],
    ]


def test_lowercasing_ascii_leaves_non_ascii_alone():
    ascii_lower = TextRecipe(steps=({"op": "lower", "encoding": "ascii"},))
    utf8_lower = TextRecipe(steps=({"op": "lower", "encoding": "utf-8"},))
    text = ["ÀBC ΣΟΦΙΑ"]
    assert HubTokenizer(VOCAB, 1, ascii_lower).tokenize(text) == [["Àbc", "ΣΟΦΙΑ"]]
    assert HubTokenizer(VOCAB, 1, utf8_lower).tokenize(text) == [["àbc", "σοφια"]]


def test_empty_rows_stay_empty_without_a_fill_token():
    tok = HubTokenizer(VOCAB, 3, TextRecipe(split="whitespace", empty_row_token=None))
    ids, offsets = tok.encode(["", "a", "   "])
    assert ids.tolist() == [0] and offsets.tolist() == [0, 0, 1]


def test_without_oov_buckets_unknown_tokens_are_dropped():
    tok = HubTokenizer(VOCAB, 0, TextRecipe(empty_row_token=None))
    ids, offsets = tok.encode(["a zz b", "zz"])
    assert ids.tolist() == [0, 1] and offsets.tolist() == [0, 2]


def test_first_occurrence_of_a_duplicated_token_wins():
    tok = HubTokenizer(["a", "b", "a"], 1, TextRecipe())
    assert tok.token_id("a") == 0 and tok.vocab_size == 3


def test_non_string_text_is_named_by_position():
    tok = HubTokenizer(VOCAB, 1, TextRecipe())
    with pytest.raises(TypeError, match=r"text 2 is float nan, expected str"):
        tok.encode(["a", "b", float("nan")])
    with pytest.raises(TypeError, match="single str"):
        tok.encode("a b")


def test_recipe_round_trips_and_rejects_nonsense():
    recipe = TextRecipe(steps=({"op": "lower", "encoding": "ascii"},), split="any_of", sep=" \t")
    assert TextRecipe.from_dict(recipe.to_dict()) == recipe
    with pytest.raises(ValueError, match="split"):
        TextRecipe(split="bytes")
    with pytest.raises(ValueError, match="unknown recipe step"):
        TextRecipe(steps=({"op": "strip"},))
    with pytest.raises(ValueError, match="encoding"):
        TextRecipe(steps=({"op": "lower", "encoding": "latin-1"},))


def test_non_string_text_is_refused_alike_by_the_lean_path():
    tok = HubTokenizer(VOCAB, 1, TextRecipe())
    with pytest.raises(TypeError, match=r"text 2 is float nan, expected str"):
        tok.encode_few(["a", "b", float("nan")])
    with pytest.raises(TypeError, match="single str"):
        tok.encode_few("a b")
    for encode in (tok.encode, tok.encode_few):  # a lone surrogate is not UTF-8
        with pytest.raises(UnicodeEncodeError):
            encode(["a", "b\ud800"])


# What the module's vocabulary holds: the property texts' vocabulary, with and without OOV
# buckets (thousands: a wrong token would seldom hash to the right id).
LEAN_BUCKETS = {"oov-buckets": 4099, "no-buckets": 0}


@functools.cache
def _tokenizer(recipe: str, buckets: str) -> HubTokenizer:
    return HubTokenizer(PROPERTY_VOCAB, LEAN_BUCKETS[buckets], RECIPE_KINDS[recipe])


@pytest.mark.parametrize("buckets", list(LEAN_BUCKETS))
@pytest.mark.parametrize("recipe", list(RECIPE_KINDS))
@property_settings(25)
@given(texts=batches)
@example(texts=["", " ", "a  b ", " \t,", "\x1c\x85\xa0 x\ty"])
@example(texts=REGRESSIONS[0])
@example(texts=REGRESSIONS[2])
def test_encode_few_gives_encodes_ids_and_offsets(recipe, buckets, texts):
    """The lean tokenizer against both engines of `encode`: per text (the few texts as given)
    and Arrow's (padded to SMALL_BATCH), on the property-test texts, for each kind of recipe."""
    tok = _tokenizer(recipe, buckets)
    ids, offsets = tok.encode(texts)
    assert tok.encode_few(texts) == (ids.tolist(), offsets.tolist())
    big = padded(texts)
    assert len(big) == SMALL_BATCH
    ids, offsets = tok.encode(big)
    assert tok.encode_few(big) == (ids.tolist(), offsets.tolist())
