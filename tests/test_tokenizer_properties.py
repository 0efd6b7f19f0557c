"""Tokenizer properties: hypothesis-made Unicode text tokenizes and embeds exactly as in TF.

For every recipe test_convert.py converts, a small module is exported and converted once; then
generated batches of texts (every script and category, combining marks, every kind of
whitespace, punctuation, symbols, emoji sequences, casing that changes length, tokens thousands
of characters long, empty strings) must give our ids and offsets equal to the module's own
`_tokenize`, and pooled vectors bit-equal to the module's output. Each batch goes through both
engines of `HubTokenizer`: as generated (fewer than SMALL_BATCH texts: string steps per text,
by translate table, and by google-re2 for a pattern that is not a bare class) and padded to
SMALL_BATCH (Arrow's RE2, vectorised). A last test compares utf-8 lowercasing with TF's on
every code point, alone and around a capital sigma.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import unicodedata
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pytest

tf = pytest.importorskip("tensorflow")

from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
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

# Small, but with hits for every recipe: cased and lowered forms (after full Unicode
# lowercasing İ -> i + U+0307, ẞ -> ß, a final Σ -> ς), NFC and NFD forms, lone combining marks,
# emoji sequences, tokens holding non-ASCII spaces or punctuation (kept by the recipes that
# split on " " or do not strip punctuation). No "\n" or trailing "\r": a vocabulary is lines.
VOCAB = [
    "the", "news", "fake", "Hello", "hello", "HELLO", "ok", "1", "2024",
    "don't", "dont", "U.S.", "US", "us", "e-mail", "email", "C++", "C", "#tag", "tag",
    "café", "cafe\u0301", "e\u0301", "\u0301", "naïve", "résumé",
    "straße", "STRASSE", "ß", "ẞ", "i̇stanbul", "İstanbul", "istanbul", "ı",
    "σοφια", "σοφιας", "ΣΟΦΙΑΣ", "σ", "ς", "ǆemal", "ǅemal",
    "москва", "Москва", "北京", "東京", "서울", "القاهرة", "עברית", "हिन्दी", "ไทย",
    "😀", "👍🏽", "👨\u200d👩\u200d👧", "🇫🇷", "\u200b", "a\u200bb",
    "\u00a0", "non\u00a0breaking", "x\ty", "\t", "\u3000", "«quoted»", "...", "¿qué?",
]  # fmt: skip


def _pools() -> dict[str, str]:
    """Code points by kind, each kind one str (Python's Unicode data). Strings, not lists of
    a million one-character strings, which would slow every garbage collection in the run."""
    kinds: dict[str, list[str]] = {
        k: [] for k in ("assigned", "cased", "ignorable", "control", "punctuation", "symbol")
    }
    for c in map(chr, itertools.chain(range(0xD800), range(0xE000, 0x110000))):
        category = unicodedata.category(c)
        if category not in ("Cn", "Co"):
            kinds["assigned"].append(c)
        if c.lower() != c or c.upper() != c:
            kinds["cased"].append(c)
        # What full lowercasing skips over when it decides a final sigma: marks, format
        # characters, modifier letters and symbols.
        if category in ("Mn", "Me", "Mc", "Cf", "Lm", "Sk"):
            kinds["ignorable"].append(c)
        if category in ("Cc", "Cf", "Zs", "Zl", "Zp"):
            kinds["control"].append(c)  # NUL first
        if category[0] in "PS":
            kinds["punctuation" if category[0] == "P" else "symbol"].append(c)
    return {kind: "".join(chars) for kind, chars in kinds.items()}


_POOLS = _pools()
ASSIGNED, CASE_IGNORABLE, CONTROL = _POOLS["assigned"], _POOLS["ignorable"], _POOLS["control"]
PUNCTUATION, SYMBOLS = _POOLS["punctuation"], _POOLS["symbol"]  # Pc Pd Ps Pe Pi Pf Po; S*
# A few specials first: dotted capital I, dotless i, capital sharp s, sigmas, a titlecase
# digraph, a ligature, Kelvin, Ohm and Angstrom signs (which lowercase to k, ω, å).
CASED = "İIıẞßΣςσǅﬁŉ\u212a\u2126\u212bΐ" + _POOLS["cased"]
WHITESPACE = (
    "\t\n\v\f\r \x1c\x1d\x1e\x1f\x85\xa0\u1680\u180e"
    + "".join(map(chr, range(0x2000, 0x200B)))
    + "\u2028\u2029\u202f\u205f\u3000"
    + "\u200b\u200c\u200d\u2060\ufeff"  # zero-width
)


def _index(size: int) -> st.SearchStrategy[int]:
    """An index below `size`, drawn about evenly: hypothesis favours small integers (a plain
    `sampled_from` rarely reaches a large pool's tail), so it is drawn as base-64 digits."""
    digits = max(1, math.ceil(math.log(size, 64)))
    return st.tuples(*[st.integers(0, 63)] * digits).map(
        lambda ds: functools.reduce(lambda acc, d: acc * 64 + d, ds, 0) % size
    )


def _spread(pool: Sequence[str]) -> st.SearchStrategy[str]:
    """One element of a large pool; shrinks towards pool[0]."""
    return _index(len(pool)).map(pool.__getitem__)


def _window(pool: str, sep: str) -> st.SearchStrategy[str]:
    """Up to 64 neighbouring elements of a pool joined by `sep`: a sweep through a block."""
    return st.builds(lambda i, n: sep.join(pool[i : i + n]), _index(len(pool)), st.integers(1, 64))


any_char = st.characters(exclude_categories=("Cs",))  # every category, unassigned included
letter = st.one_of(
    any_char,
    _spread(ASSIGNED),
    _spread(CASED),
    _spread(CASE_IGNORABLE),
    _spread(CONTROL),
    st.characters(categories=("M",)),
    # C-string and encoding edges: NUL, DEL, the replacement character, noncharacters, the
    # byte-order mark, the last code point.
    st.sampled_from("\x00\x7f\ufffd\ufffe\uffff\ufeff\U0010ffff"),
)
emoji_base = st.one_of(
    _spread("".join(map(chr, range(0x1F300, 0x1FB00)))), st.sampled_from("☺❤✌☝⚽")
)
emoji = st.builds(
    lambda base, tone, vs: base + tone + vs,
    emoji_base,
    st.sampled_from([""] + [chr(c) for c in range(0x1F3FB, 0x1F400)]),  # skin tones
    st.sampled_from(["", "\ufe0f"]),
)
regional = st.characters(min_codepoint=0x1F1E6, max_codepoint=0x1F1FF)
emoji_sequence = st.one_of(
    emoji,
    st.lists(emoji, min_size=2, max_size=4).map("\u200d".join),  # ZWJ sequences
    st.tuples(regional, regional).map("".join),  # flags
    st.sampled_from("0123456789#*").map(lambda c: c + "\ufe0f\u20e3"),  # keycaps
    st.just("🏴" + "".join(chr(0xE0000 + ord(c)) for c in "gbsct") + "\U000e007f"),
)
vocab_word = st.builds(
    lambda word, case, end: case(word) + end,
    _spread(VOCAB),
    st.sampled_from([str, str.upper, str.lower, str.title, str.swapcase, str.casefold]),
    st.sampled_from(["", " ", "  ", "\t", "\n", ". "]),
)
piece = st.one_of(
    vocab_word,
    st.text(letter, min_size=1, max_size=16),
    st.lists(letter, min_size=8, max_size=48).map(" ".join),  # one character per token
    st.text(st.sampled_from(WHITESPACE), min_size=1, max_size=4),
    st.text(_spread(PUNCTUATION), min_size=1, max_size=6),
    st.text(_spread(SYMBOLS), min_size=1, max_size=4),
    emoji_sequence,
    st.text(st.one_of(_spread(CASED), st.sampled_from("ΣΣΑΟΣ")), min_size=1, max_size=8),
    # Final-sigma contexts: what precedes and follows a capital sigma.
    st.builds(lambda a, b: a + "Σ" + b, st.text(letter, max_size=3), st.text(letter, max_size=3)),
    # Sweeps: neighbouring code points of a script, case pairs one per token, and each of
    # them on both sides of a capital sigma.
    _window(ASSIGNED, ""),
    _window(PUNCTUATION, ""),
    _window(SYMBOLS, ""),
    _window(CASED, " "),
    _window(CASED + CASE_IGNORABLE, "Σ"),
    # A token thousands of characters long, and a run of spaces (thousands of empty tokens).
    st.builds(
        lambda s, n: (s * n)[:n], st.text(letter, min_size=1, max_size=4), st.integers(1000, 6000)
    ),
    st.builds(lambda ws, n: ws * n, st.sampled_from(" \t\u3000"), st.integers(500, 3000)),
    # Many tokens in one bag: the pooled sum's order matters.
    st.builds(
        lambda words, n: " ".join(words * n),
        st.lists(vocab_word, min_size=1, max_size=4),
        st.integers(50, 800),
    ),
)
text = st.one_of(st.just(""), st.lists(piece, min_size=1, max_size=12).map("".join))
batches = st.lists(text, min_size=1, max_size=16)

# Known regressions (also reached by the strategies above), run first on every recipe.
REGRESSIONS = [
    ["a\x00B c"],  # TF's utf-8 StringLower stops at the first NUL
    ["Ⱟ ꟁ Ꟑ 𐕰"],  # case pairs Python knows (Unicode 14) but TF's ICU (Unicode 13) does not
    ["AΣ\u0898", "A\u0898Σ", "ΑΣⱟ", "ⱟΣ"],  # final-sigma context across Unicode 14 characters
    ["Σ\u1734Σ"],  # U+1734: case-ignorable (Mn) to TF's ICU, a spacing mark (Mc) to Python 3.11
]


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


def _pad(texts: list[str]) -> list[str]:
    """`texts` followed by prefixes of them, SMALL_BATCH texts in all (the Arrow engine)."""
    fill = itertools.islice(itertools.cycle(texts), SMALL_BATCH - len(texts))
    return texts + [t[: 1 + i % 64] for i, t in enumerate(fill)]


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
@settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(texts=batches)
@example(texts=REGRESSIONS[0])
@example(texts=REGRESSIONS[1])
@example(texts=REGRESSIONS[2])
@example(texts=REGRESSIONS[3])
def test_ids_and_vectors_equal_tensorflow(name, texts, setups):
    module, embedding, variant = setups[name]
    tokenizer = embedding.tokenizer
    assert len(texts) < SMALL_BATCH
    big = _pad(texts)
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
