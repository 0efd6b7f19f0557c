"""Text -> token ids exactly as a TF-Hub text-embedding module computes them.

A module's text handling is a `TextRecipe` read from its graph by `fakenews_pl.hub.convert`:
string transforms in graph order (`StaticRegexReplace`/`RegexReplace`, `StringLower`), a split
(`StringSplitV2` on a separator or on ASCII whitespace, or the v1 `StringSplit` on any of a set
of characters with optional empty-token skipping), and what an empty row becomes (the `""` token
in the public exporters, else a zero vector).

The string work runs vectorised in Apache Arrow, whose regex engine is RE2 like TensorFlow's, so
`\\pP` means Unicode punctuation exactly as it does in the module. A few texts (`encode_few`: the
classifier's single texts and small requests) go through the same steps in plain Python, since
Arrow's arrays cost more per call than a short text's whole tokenization. Token lookup mirrors
`tf.lookup.StaticVocabularyTable`: vocabulary line number, else
`vocab_size + Fingerprint64(token) % oov_buckets` (farmhash, as `StringToHashBucketFast`).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Sequence
from typing import Any

import farmhash
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import re2

SPLIT_KINDS = ("sep", "whitespace", "any_of")
SMALL_BATCH = 256  # below this many texts, string steps run per text (see HubTokenizer.split)
# Runs of what Arrow's ascii_split_whitespace splits on (Python's str.split() also splits on
# \x1c-\x1f and non-ASCII spaces).
_ASCII_WHITESPACE = re.compile("[\t\n\x0b\x0c\r ]+")
LOWER_ENCODINGS = ("ascii", "utf-8")


@dataclasses.dataclass(frozen=True)
class TextRecipe:
    """How a module turns a sentence into tokens.

    steps: string transforms in order, each `{"op": "regex_replace", "pattern", "rewrite",
        "replace_global"}` or `{"op": "lower", "encoding": "ascii" | "utf-8"}`.
    split: "sep" (StringSplitV2 with `sep`; keeps empty tokens, like Python's `str.split(sep)`),
        "whitespace" (StringSplitV2 with no sep: runs of ASCII whitespace, no empty tokens) or
        "any_of" (v1 StringSplit: any character of `sep` delimits).
    skip_empty: drop empty tokens after splitting (v1 StringSplit's `skip_empty`).
    maxsplit: StringSplitV2's `maxsplit` (-1: no limit).
    empty_row_token: the token an empty row is filled with, or None for a zero vector.
    """

    steps: tuple[dict[str, Any], ...] = (
        {"op": "regex_replace", "pattern": r"\pP", "rewrite": "", "replace_global": True},
    )
    split: str = "sep"
    sep: str = " "
    skip_empty: bool = False
    maxsplit: int = -1
    empty_row_token: str | None = ""

    def __post_init__(self) -> None:
        if self.split not in SPLIT_KINDS:
            raise ValueError(f"recipe split must be one of {SPLIT_KINDS}, got {self.split!r}")
        if self.split != "whitespace" and not self.sep:
            raise ValueError(f"recipe split {self.split!r} needs a non-empty sep")
        if self.split != "sep" and self.maxsplit != -1:
            raise ValueError("maxsplit is only supported with split='sep'")
        for step in self.steps:
            if step.get("op") == "lower" and step.get("encoding") not in LOWER_ENCODINGS:
                raise ValueError(f"lower step needs encoding in {LOWER_ENCODINGS}: {step}")
            elif step.get("op") not in ("lower", "regex_replace"):
                raise ValueError(f"unknown recipe step {step}")

    def to_dict(self) -> dict[str, Any]:
        """The recipe as JSON-ready data (meta.json's `recipe`)."""
        return {**dataclasses.asdict(self), "steps": [dict(s) for s in self.steps]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TextRecipe:
        """The recipe `to_dict` wrote."""
        return cls(**{**data, "steps": tuple(dict(s) for s in data["steps"])})


class HubTokenizer:
    """Turns texts into flat token ids + bag offsets for `nn.EmbeddingBag`."""

    def __init__(self, vocab: Sequence[str], oov_buckets: int, recipe: TextRecipe) -> None:
        if oov_buckets < 0:
            raise ValueError(f"oov_buckets must be >= 0, got {oov_buckets}")
        self.vocab_size = len(vocab)
        self.oov_buckets = oov_buckets
        self.recipe = recipe
        # First occurrence wins, as the line number a text-file table would hold.
        self._index: dict[str, int] = {}
        for i, token in enumerate(vocab):
            self._index.setdefault(token, i)
        # The string steps as hashable keys of `_text_step` (what `encode_few` runs per text).
        self._step_keys = tuple(_step_key(step) for step in recipe.steps)

    def token_id(self, token: str) -> int:
        """The id of one token; -1 for an unknown token when the module has no OOV buckets."""
        idx = self._index.get(token, -1)
        if idx < 0 and self.oov_buckets:
            idx = int(self._hash_buckets([token])[0])
        return idx

    def _hash_buckets(self, tokens: list[str]) -> np.ndarray:
        """OOV ids: vocab_size + Fingerprint64(utf-8) % buckets, as StringToHashBucketFast."""
        fingerprint = farmhash.fingerprint64
        hashes = np.fromiter(
            (fingerprint(t.encode("utf-8")) for t in tokens), dtype=np.uint64, count=len(tokens)
        )
        return self.vocab_size + (hashes % np.uint64(self.oov_buckets)).astype(np.int64)

    def split(self, texts: Sequence[str]) -> tuple[pa.Array, np.ndarray]:
        """Normalise and split: flat token strings and per-text token counts (before filling)."""
        arr = _as_arrow(texts)
        for step in self.recipe.steps:
            arr = _apply_step(arr, step, per_text=len(arr) < SMALL_BATCH)
        lists = _split(arr, self.recipe)
        values = lists.flatten()
        lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False).astype(np.int64)
        if self.recipe.split == "any_of" and not self.recipe.skip_empty:
            # v1 StringSplit gives an empty text no token (then the fill), not one "" token.
            empty = pc.binary_length(arr).to_numpy(zero_copy_only=False) == 0
            if empty.any():
                values = values.filter(pa.array(~np.repeat(empty, lengths)))
                lengths[empty] = 0
        if self.recipe.skip_empty or self.recipe.split == "whitespace":
            keep = pc.binary_length(values).to_numpy(zero_copy_only=False) > 0
            if not keep.all():
                rows = np.repeat(np.arange(len(lengths)), lengths)
                lengths = np.bincount(rows[keep], minlength=len(lengths)).astype(np.int64)
                values = values.filter(pa.array(keep))
        return values, lengths

    def tokenize(self, texts: Sequence[str]) -> list[list[str]]:
        """The tokens of each text as the module sees them (empty rows filled)."""
        values, lengths = self.split(texts)
        flat = values.to_pylist()
        out, start = [], 0
        for n in lengths:
            row = flat[start : start + n]
            if n == 0 and self.recipe.empty_row_token is not None:
                row = [self.recipe.empty_row_token]
            out.append(row)
            start += n
        return out

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Texts -> (ids, offsets): int64 arrays, `offsets[i]` is where text i's bag starts.

        `(total_tokens,) ids, (N,) offsets`; an empty row holds the fill token or nothing.
        """
        values, lengths = self.split(texts)
        # Look each distinct token up once: (U,) ids of the uniques, gathered by (T,) codes.
        encoded = values.dictionary_encode()
        uniques = encoded.dictionary.to_pylist()
        index_get = self._index.get
        unique_ids = np.array([index_get(t, -1) for t in uniques], dtype=np.int64)
        oov = np.flatnonzero(unique_ids < 0)
        if len(oov) and self.oov_buckets:
            unique_ids[oov] = self._hash_buckets([uniques[i] for i in oov])
        ids = unique_ids[encoded.indices.to_numpy(zero_copy_only=False)]
        if len(oov) and not self.oov_buckets:
            # No OOV buckets: TF's safe lookup prunes the -1 ids.
            keep = ids >= 0
            rows = np.repeat(np.arange(len(lengths)), lengths)
            lengths = np.bincount(rows[keep], minlength=len(lengths)).astype(np.int64)
            ids = ids[keep]
        if self.recipe.empty_row_token is not None:
            empty = np.flatnonzero(lengths == 0)
            if len(empty):
                starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
                fill_id = self.token_id(self.recipe.empty_row_token)
                if fill_id >= 0:
                    ids = np.insert(ids, starts[empty], fill_id)
                    lengths[empty] = 1
        offsets = np.zeros(len(lengths), dtype=np.int64)
        np.cumsum(lengths[:-1], out=offsets[1:])
        return ids, offsets

    def encode_few(self, texts: Sequence[str]) -> tuple[list[int], list[int]]:
        """`encode` for a few texts in plain Python: the same ids and offsets, as lists.

        `encode` spends ~0.1 ms per call on Arrow arrays, a dictionary encode and numpy calls
        however few its texts; a headline costs ~10 us here. Per token it costs more (a Python
        string and a dict lookup each), so it is for a few texts. Each text goes through the
        per-text engine of `split` (`_text_step`) and Python splits that cut where Arrow's
        kernels cut (tested against `encode` on the property-test texts).
        """
        if isinstance(texts, str):
            raise TypeError("expected a sequence of texts, got a single str")
        steps = [_text_step(*key) for key in self._step_keys]
        ids: list[int] = []
        offsets: list[int] = []
        for i, text in enumerate(texts):
            _check_text(i, text)
            for step in steps:
                text = step(text)
            offsets.append(len(ids))
            ids += self._row_ids(_split_text(text, self.recipe))
        return ids, offsets

    def _row_ids(self, tokens: list[str]) -> list[int]:
        """One text's ids as `encode` gives them: OOV tokens hashed, or dropped when the module
        has no buckets; no id left: the fill token's, if it has one."""
        get, buckets = self._index.get, self.oov_buckets
        if buckets:
            base, fingerprint = self.vocab_size, farmhash.fingerprint64
            row = [
                i if (i := get(t, -1)) >= 0 else base + fingerprint(t.encode("utf-8")) % buckets
                for t in tokens
            ]
        else:
            row = [i for t in tokens if (i := get(t, -1)) >= 0]
        fill = self.recipe.empty_row_token
        if not row and fill is not None and (fill_id := self.token_id(fill)) >= 0:
            row.append(fill_id)
        return row


def _as_arrow(texts: Sequence[str]) -> pa.Array:
    """The texts as an Arrow array; a `TypeError` naming the first that is not a str (Arrow
    itself would take None as a null and UTF-8 bytes as text, which `encode_few` refuses)."""
    if isinstance(texts, str):
        raise TypeError("expected a sequence of texts, got a single str")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise _not_a_text(i, text)
    return pa.array(texts, type=pa.large_string())


def _not_a_text(i: int, text: Any) -> TypeError:
    return TypeError(f"text {i} is {type(text).__name__} {text!r}, expected str")


def _check_text(i: int, text: Any) -> None:
    """What `_as_arrow` refuses, refused the same way: a non-str (TypeError naming it), a str
    that is not valid UTF-8 (a lone surrogate: UnicodeEncodeError)."""
    if not isinstance(text, str):
        raise _not_a_text(i, text)
    if not text.isascii():
        text.encode("utf-8")


def _split_text(text: str, recipe: TextRecipe) -> list[str]:
    """`HubTokenizer.split`'s tokens of one text after its steps, in plain Python."""
    if recipe.split == "whitespace":
        # ascii_split_whitespace gives "" before leading and after trailing whitespace; `split`
        # drops empty tokens after a whitespace split.
        return [token for token in _ASCII_WHITESPACE.split(text) if token]
    if recipe.split == "any_of" and not text and not recipe.skip_empty:
        return []  # v1 StringSplit: no token for an empty text
    sep = recipe.sep
    if recipe.split == "any_of" and len(sep) > 1:
        text = text.translate(dict.fromkeys(map(ord, sep[1:]), sep[0]))  # any of sep cuts
        tokens = text.split(sep[0])
    else:
        tokens = text.split(sep, recipe.maxsplit if recipe.maxsplit > 0 else -1)
    return [token for token in tokens if token] if recipe.skip_empty else tokens


@functools.lru_cache(maxsize=64)
def _re2(pattern: str) -> Any:
    return re2.compile(pattern)


def _python_rewrite(rewrite: str) -> str:
    """An RE2 rewrite string (`\\0`-`\\9` groups, `\\\\` a backslash) as a Python `sub` template."""
    return re.sub(r"\\(\d|\\)", lambda m: "\\\\" if m[1] == "\\" else f"\\g<{m[1]}>", rewrite)


# A pattern that matches exactly one code point: a Unicode property (\pP, \p{Lu}, \PL) or a
# bracket class without nested brackets.
_ONE_CODE_POINT = re.compile(r"\\[pP](?:[A-Za-z]|\{\^?\w+\})|\[(?:[^\[\]\\]|\\.)+\]")


@functools.lru_cache(maxsize=16)
def _deletion_table(pattern: str) -> dict[int, None] | None:
    """`str.translate` table deleting what a single-code-point RE2 pattern matches, built by
    running RE2 (Arrow's) once over every code point; None for other patterns."""
    if not _ONE_CODE_POINT.fullmatch(pattern):
        return None
    codes = np.array([c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF])
    kept = pc.replace_substring_regex(pa.array([chr(c) for c in codes]), pattern, "")
    deleted = codes[pc.utf8_length(kept).to_numpy(zero_copy_only=False) == 0]
    return dict.fromkeys(deleted.tolist())


# Code points assigned in Unicode 14.0 (Python 3.11's unicodedata), all 838 of them: the ICU
# that TensorFlow links (Unicode 13.0 data, as of TF 2.21) knows none of them.
# tests/test_tokenizer_properties.py checks this set against TF (`tf.strings.unicode_script`
# says Unknown where Python says assigned).
_NEWER_THAN_TF_ICU = frozenset(
    chr(c)
    for r in (
        "061D, 0870-088E, 0890-0891, 0898-089F, 08B5, 08C8-08D2, 0C3C, 0C5D, 0CDD, 170D, 1715, "
        "171F, 180F, 1AC1-1ACE, 1B4C, 1B7D-1B7E, 1DFA, 20C0, 2C2F, 2C5F, 2E53-2E5D, 9FFD-9FFF, "
        "A7C0-A7C1, A7D0-A7D1, A7D3, A7D5-A7D9, A7F2-A7F4, FBC2, FD40-FD4F, FDCF, FDFE-FDFF, "
        "10570-1057A, 1057C-1058A, 1058C-10592, 10594-10595, 10597-105A1, 105A3-105B1, "
        "105B3-105B9, 105BB-105BC, 10780-10785, 10787-107B0, 107B2-107BA, 10F70-10F89, "
        "11070-11075, 110C2, 116B9, 11740-11746, 11AB0-11ABF, 12F90-12FF2, 16A70-16ABE, "
        "16AC0-16AC9, 1AFF0-1AFF3, 1AFF5-1AFFB, 1AFFD-1AFFE, 1B11F-1B122, 1CF00-1CF2D, "
        "1CF30-1CF46, 1CF50-1CFC3, 1D1E9-1D1EA, 1DF00-1DF1E, 1E290-1E2AE, 1E7E0-1E7E6, "
        "1E7E8-1E7EB, 1E7ED-1E7EE, 1E7F0-1E7FE, 1F6DD-1F6DF, 1F7F0, 1F979, 1F9CC, 1FA7B-1FA7C, "
        "1FAA9-1FAAC, 1FAB7-1FABA, 1FAC3-1FAC5, 1FAD7-1FAD9, 1FAE0-1FAE7, 1FAF0-1FAF6, "
        "2A6DE-2A6DF, 2B735-2B738"
    ).split(", ")
    for c in range(int(r.split("-")[0], 16), int(r.split("-")[-1], 16) + 1)
)
_SPLIT_NEWER_THAN_TF_ICU = re.compile(f"([{''.join(sorted(_NEWER_THAN_TF_ICU))}])")
# U+1734 HANUNOO SIGN PAMUDPOD became a spacing mark (Mc) in Unicode 14.0, so Python no longer
# skips it as case-ignorable when it decides a final sigma; TF's ICU (Mn) still does. It is
# lowercased as a combining mark that is case-ignorable to both and absent from the text.
_PAMUDPOD = "\u1734"
_STAND_INS = [chr(c) for c in range(0x300, 0x370) if c not in (0x307, 0x345)]  # Mn, no case


def _icu_lower(text: str) -> str:
    """TF's StringLower(encoding="utf-8"): ICU's full lowercasing (root locale), which Python's
    str.lower matches (SpecialCasing: final sigma, İ -> i + U+0307) except in three ways.

    The kernel hands ICU the text as a C string, so everything from the first NUL on is lost;
    ICU treats the characters newer than its Unicode version as unassigned: neither
    lowercased nor cased nor case-ignorable, so they also bound a final sigma's context, which
    is exactly what lowercasing the stretches between them separately does; and it still
    skips U+1734 as case-ignorable (see _PAMUDPOD).
    """
    if "\x00" in text:
        text = text.partition("\x00")[0]
    if text.isascii():
        return text.lower()
    if _PAMUDPOD in text:
        # (A text holding all 110 stand-ins keeps Python's reading of U+1734.)
        stand_in = next((c for c in _STAND_INS if c not in text), None)
        if stand_in is not None:
            text = text.replace(_PAMUDPOD, stand_in)
            return _icu_lower(text).replace(stand_in, _PAMUDPOD)
    if _NEWER_THAN_TF_ICU.isdisjoint(text):
        return text.lower()
    parts = _SPLIT_NEWER_THAN_TF_ICU.split(text)  # [stretch, newer char, stretch, ...]
    return "".join(p if i % 2 else p.lower() for i, p in enumerate(parts))


def _apply_step(arr: pa.Array, step: dict[str, Any], per_text: bool) -> pa.Array:
    """One string step. `per_text` (small batches): Arrow compiles its RE2 pattern on every
    call (~0.2 ms for \\pP), so a few texts go through a translate table or google-re2 (the
    same RE2 engine, compiled once) instead (`_text_step`)."""
    if step["op"] == "lower" and step["encoding"] == "ascii":
        return pc.ascii_lower(arr)
    if step["op"] == "regex_replace" and not per_text:
        return pc.replace_substring_regex(
            arr,
            pattern=step["pattern"],
            replacement=step["rewrite"],
            max_replacements=None if step.get("replace_global", True) else 1,
        )
    one = _text_step(*_step_key(step))
    return pa.array([one(t) for t in arr.to_pylist()], pa.large_string())


def _step_key(step: dict[str, Any]) -> tuple:
    """A recipe step as `_text_step`'s arguments."""
    if step["op"] == "lower":
        return ("lower", step["encoding"])
    return ("regex_replace", step["pattern"], step["rewrite"], step.get("replace_global", True))


@functools.lru_cache(maxsize=64)
def _text_step(op: str, *args: Any) -> Callable[[str], str]:
    """One string step on one text: ("lower", encoding) or ("regex_replace", pattern, rewrite,
    replace_global). ASCII lowering changes A-Z only, as Arrow's ascii_lower."""
    if op == "lower":
        return _icu_lower if args[0] == "utf-8" else _ascii_lower
    pattern, rewrite, replace_global = args
    table = _deletion_table(pattern) if replace_global and not rewrite else None
    if table is not None:
        return lambda text: text.translate(table)
    return functools.partial(
        _re2(pattern).sub, _python_rewrite(rewrite), count=0 if replace_global else 1
    )


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _ascii_lower(text: str) -> str:
    return text.lower() if text.isascii() else text.translate(_ASCII_LOWER)


def _split(arr: pa.Array, recipe: TextRecipe) -> pa.LargeListArray:
    if recipe.split == "whitespace":
        return pc.ascii_split_whitespace(arr)
    if recipe.split == "sep" or len(recipe.sep) == 1:
        max_splits = recipe.maxsplit if recipe.maxsplit > 0 else None
        return pc.split_pattern(arr, pattern=recipe.sep, max_splits=max_splits)
    chars = "".join(f"\\x{{{ord(c):x}}}" for c in recipe.sep)
    return pc.split_pattern_regex(arr, pattern=f"[{chars}]")
