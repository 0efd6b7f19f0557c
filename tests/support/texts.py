"""Text the tokenizer must handle, as hypothesis strategies, and the recipes it runs.

Every script and category, combining marks, every kind of whitespace, punctuation, symbols,
emoji sequences, casing that changes length, tokens thousands of characters long, empty strings:
`batches` of up to 16 such texts. test_tokenizer_properties.py checks them against TensorFlow;
the lean path's tests (test_tokenizer.py, test_classifier.py) against the batch path.
"""

from __future__ import annotations

import functools
import itertools
import math
import unicodedata
from collections.abc import Sequence

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from fakenews_pl.hub.hub_module import exporter_recipe
from fakenews_pl.hub.tokenizer import SMALL_BATCH, TextRecipe

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


def padded(texts: list[str]) -> list[str]:
    """`texts` followed by prefixes of them, SMALL_BATCH texts in all (the Arrow engine)."""
    fill = itertools.islice(itertools.cycle(texts), SMALL_BATCH - len(texts))
    return texts + [t[: 1 + i % 64] for i, t in enumerate(fill)]


# Known regressions (also reached by the strategies above), run first on every recipe.
REGRESSIONS = [
    ["a\x00B c"],  # TF's utf-8 StringLower stops at the first NUL
    ["Ⱟ ꟁ Ꟑ 𐕰"],  # case pairs Python knows (Unicode 14) but TF's ICU (Unicode 13) does not
    ["AΣ\u0898", "A\u0898Σ", "ΑΣⱟ", "ⱟΣ"],  # final-sigma context across Unicode 14 characters
    ["Σ\u1734Σ"],  # U+1734: case-ignorable (Mn) to TF's ICU, a spacing mark (Mc) to Python 3.11
]

# Each kind of recipe: the exporters' (test_convert.py's RECIPES), then what the converter also
# reads from other graphs: an any-of split that keeps empty tokens, maxsplit, a separator of
# several characters, a rewrite that needs google-re2, and no fill token for an empty row.
RECIPE_KINDS = {
    "v2_exporter": exporter_recipe(),
    "no_punct_strip": exporter_recipe(strip_punctuation=False),
    "v1_skip_empty": exporter_recipe(split="v1"),
    "ascii_lower": exporter_recipe(lower="ascii"),
    "utf8_lower_whitespace": exporter_recipe(lower="utf-8", split="whitespace"),
    "any_of_keep_empty": TextRecipe(steps=(), split="any_of", sep=" \t,"),
    "sep_maxsplit": TextRecipe(maxsplit=3),
    "multi_char_sep": TextRecipe(steps=(), sep=", "),
    "re2_rewrite": TextRecipe(
        steps=(
            {
                "op": "regex_replace",
                "pattern": r"(\pL)(\d)",
                "rewrite": r"\2-\1",
                "replace_global": False,
            },
            {"op": "lower", "encoding": "utf-8"},
        )
    ),
    "no_fill": TextRecipe(split="whitespace", empty_row_token=None),
}


def property_settings(max_examples: int) -> settings:
    """Hypothesis settings of the property tests over these texts: a fixed set of examples
    (derandomized, no example database), no deadline, big batches allowed."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
