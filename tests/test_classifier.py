"""The Python API and predict.py: new text scored exactly as the trained model scores it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import example, given
from support.texts import RECIPE_KINDS, batches, property_settings
from support.texts import VOCAB as PROPERTY_VOCAB

from fakenews_pl import Classifier
from fakenews_pl.data.corpus import DataError
from fakenews_pl.errors import UserError
from fakenews_pl.hub import artifact
from fakenews_pl.hub.embedding import HubEmbedding
from fakenews_pl.hub.tokenizer import HubTokenizer
from fakenews_pl.nn.net import FakeNewsNet, NetConfig
from fakenews_pl.serving.classifier import LEAN_TEXTS, alike_notes, format_effects

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(trained_run: dict) -> dict:
    """The session's tiny demo run: its checkpoint, model, data and metrics."""
    return trained_run


def test_predict_proba_equals_the_trained_models(run: dict) -> None:
    texts = run["datamodule"].texts("test")[:50].tolist()
    clf = Classifier.load(run["ckpt"])
    probabilities = clf.predict_proba(texts)
    assert probabilities.shape == (50, 2) and clf.class_names == ["Fake", "True"]
    expected = run["model"].predict_proba(texts).numpy()
    assert np.array_equal(probabilities[:, 1], expected)
    # In batches of 16: MKL's products may round the last bit otherwise for other batch sizes.
    assert np.allclose(clf.predict_proba(texts, batch_size=16), probabilities, rtol=1e-6, atol=0)
    assert np.allclose(probabilities.sum(axis=1), 1)
    assert clf.predict(texts) == [clf.class_names[int(p > 0.5)] for p in expected]


def _bits(probabilities: np.ndarray) -> np.ndarray:
    assert probabilities.dtype == np.float32
    return probabilities.view(np.uint32)


@pytest.mark.parametrize("count", [1, LEAN_TEXTS + 1])  # the lean path, the batch path
def test_what_is_not_a_list_of_texts_is_refused_alike_by_both_paths(run: dict, count) -> None:
    clf = Classifier.load(run["ckpt"])
    with pytest.raises(TypeError, match="got a single str"):
        clf.predict_proba("one headline")  # not its characters as texts
    with pytest.raises(TypeError, match="got a single str"):
        clf.explain("one headline")
    for bad in (None, b"bytes", 3):
        with pytest.raises(TypeError, match=f"text {count - 1} is {type(bad).__name__} "):
            clf.predict_proba(["fine"] * (count - 1) + [bad])
    for size in (0, -1, 1.5):
        with pytest.raises(ValueError, match=rf"batch_size={size}: expected an integer >= 1"):
            clf.predict_proba(["fine"] * count, batch_size=size)


def test_a_few_texts_take_the_lean_path_bit_for_bit(run: dict, monkeypatch) -> None:
    """Up to LEAN_TEXTS texts are scored without `encode` (the lean path) and give the batch
    path's bits; more texts, or a smaller batch_size, take the batch path."""
    clf = Classifier.load(run["ckpt"])
    texts = [
        *run["datamodule"].texts("test")[:40].tolist(),
        "",
        "zq0x unheard-of words only",
        " ".join(run["datamodule"].texts("test")[40:44]),  # a long bag: the 8-blocks
    ]
    sizes = (1, 2, 5, LEAN_TEXTS)
    expected = {
        (size, start): clf._predict_batches(texts[start : start + size], 1024)
        for size in sizes
        for start in range(0, len(texts), size)
    }
    encoded = []
    real_encode = HubTokenizer.encode
    monkeypatch.setattr(
        HubTokenizer,
        "encode",
        lambda tok, texts: encoded.append(len(texts)) or real_encode(tok, texts),
    )
    for (size, start), probabilities in expected.items():
        assert np.array_equal(
            _bits(clf.predict_proba(texts[start : start + size])), _bits(probabilities)
        )
    assert encoded == []
    clf.predict_proba(texts[: LEAN_TEXTS + 1])
    clf.predict_proba(texts[:4], batch_size=3)
    assert encoded == [LEAN_TEXTS + 1, 3, 1]


# Tiny bag models, one per kind of recipe, covering both table dtypes, every combiner, and
# modules with and without OOV buckets: (OOV buckets, table dtype, combiner).
LEAN_MODELS = {
    "v2_exporter": (3, torch.float32, "sqrtn"),
    "no_punct_strip": (0, torch.float64, "mean"),
    "v1_skip_empty": (4, torch.float32, "sum"),
    "ascii_lower": (0, torch.float64, "sqrtn"),
    "utf8_lower_whitespace": (5, torch.float32, "mean"),
    "any_of_keep_empty": (97, torch.float64, "sum"),
    "sep_maxsplit": (0, torch.float32, "sqrtn"),
    "multi_char_sep": (2, torch.float64, "mean"),
    "re2_rewrite": (1, torch.float64, "sqrtn"),
    "no_fill": (0, torch.float32, "sum"),
}
assert set(LEAN_MODELS) == set(RECIPE_KINDS)


@pytest.fixture(scope="module")
def lean_models() -> dict[str, Classifier]:
    """Per recipe kind, a `Classifier` of a seeded bag model over a 16-wide table of the
    property texts' vocabulary, with the notebook's head (random biases)."""
    models = {}
    for i, (name, (buckets, dtype, combiner)) in enumerate(LEAN_MODELS.items()):
        tokenizer = HubTokenizer(PROPERTY_VOCAB, buckets, RECIPE_KINDS[name])
        rng = np.random.default_rng(i)
        table = torch.from_numpy(rng.normal(size=(len(PROPERTY_VOCAB) + buckets, 16))).to(dtype)
        embedding = HubEmbedding(table, tokenizer, combiner)
        torch.manual_seed(i)
        net = FakeNewsNet.from_config(embedding, NetConfig(16))
        with torch.no_grad():
            for layer in net.head.linears:
                layer.bias.normal_(0, 0.1)
        models[name] = Classifier(net, ("Fake", "True"))
    return models


@pytest.mark.parametrize("name", list(LEAN_MODELS))
@property_settings(25)
@given(texts=batches)
@example(texts=["", "the news"])
@example(texts=["the news fake " * 3, "ok " * 17, "the, news, fake, " * 25])
def test_the_lean_path_gives_the_batch_paths_bits(name, texts, lean_models) -> None:
    """`_predict_few` against `_predict_batches` on the tokenizer's property-test texts."""
    clf = lean_models[name]
    assert np.array_equal(_bits(clf._predict_few(texts)), _bits(clf._predict_batches(texts, 1024)))


def test_scoring_the_test_file_reproduces_the_reports_accuracy(
    run: dict, demo_assets: dict, tmp_path: Path
) -> None:
    clf = Classifier.load(run["ckpt"])
    out = tmp_path / "scored.csv"
    rows = clf.predict_file(demo_assets["test_csv"], out, chunk_rows=97, progress=False)
    scored = pd.read_csv(out, keep_default_na=False)
    source = pd.read_csv(demo_assets["test_csv"], keep_default_na=False)
    assert rows == len(source) == len(scored)
    assert scored[list(source.columns)].equals(source)  # the input rows, untouched
    accuracy = (scored["predicted_label"] == scored["label"]).mean()
    assert accuracy == pytest.approx(run["metrics"]["test/accuracy"], abs=1e-6)
    assert {"probability_Fake", "probability_True"} <= set(scored.columns)


def test_a_missing_column_is_refused_and_leaves_no_output(run: dict, tmp_path: Path) -> None:
    source = tmp_path / "new.csv"
    pd.DataFrame({"headline": ["a", "b"]}).to_csv(source, index=False)
    clf = Classifier.load(run["ckpt"])
    with pytest.raises(DataError, match="missing column 'for_glove'"):
        clf.predict_file(source, tmp_path / "out.csv", progress=False)
    assert clf.predict_file(source, tmp_path / "out.csv", "headline", "csv", progress=False) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.csv", "out.csv"]


@pytest.mark.slow
def test_predict_py_prints_the_label_and_probabilities(run: dict, cli_overrides, tmp_path) -> None:
    args = [sys.executable, "predict.py", f"ckpt_path={run['ckpt']}", "text=Ava Marlow is feuding"]
    proc = subprocess.run(
        [*args, *cli_overrides(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    clf = Classifier.load(run["ckpt"])
    (p,) = clf.predict_proba(["Ava Marlow is feuding"])
    line = proc.stdout.strip().splitlines()[-1]
    label = clf.predict(["Ava Marlow is feuding"])[0]
    assert line == f"{label} (Fake {p[0]:.4f}, True {p[1]:.4f}; True when P(True) > 0.5000)"
    bad = subprocess.run(
        [sys.executable, "predict.py", f"ckpt_path={run['ckpt']}", *cli_overrides(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.strip() == "error: give text=... or both input=FILE.csv and output=OUT.csv"


def test_leaving_out_the_top_token_moves_the_probability_as_explained(run: dict) -> None:
    clf = Classifier.load(run["ckpt"])
    texts = [*run["datamodule"].texts("test")[:20].tolist(), "", "one"]
    explained = clf.explain(texts, top=3)
    full = clf.predict_proba(texts)[:, 1]
    moved = 0
    for text, effects, p in zip(texts, explained, full, strict=True):
        tokens = clf.embedding.tokenizer.tokenize([text])[0]
        assert len(effects) == min(3, len(set(tokens)))
        sizes = [abs(effect) for _, effect in effects]
        assert sizes == sorted(sizes, reverse=True)
        token, effect = effects[0]
        # The text re-tokenizes to its tokens less the top one (the recipe strips punctuation
        # and splits on " ", so joining the tokens with " " gives them back).
        without = clf.predict_proba([" ".join(t for t in tokens if t != token)])[0, 1]
        assert p - without == pytest.approx(effect, abs=1e-6)
        moved += abs(effect) > 1e-4 and np.sign(p - without) == np.sign(effect)
    assert moved >= 15  # most headlines have a token that matters


def _sharing_a_bucket(clf: Classifier) -> tuple[str, str]:
    """Two made-up words (not in the vocabulary) that hash to one OOV bucket."""
    seen: dict[int, str] = {}
    for i in range(1000):
        word = f"zq{i}x"
        bucket = clf.oov_bucket(word)
        assert bucket is not None
        if bucket in seen:
            return seen[bucket], word
        seen[bucket] = word
    raise AssertionError("no two words share a bucket")


def test_tokens_the_model_cannot_tell_apart_are_marked_and_explained(run: dict) -> None:
    """Equal effects (`secretly:-0.0813 married:-0.0813`) read as a bug unless said why."""
    clf = Classifier.load(run["ckpt"])
    tokenizer = clf.embedding.tokenizer
    first, second = _sharing_a_bucket(clf)
    bucket = clf.oov_bucket(first)
    assert tokenizer.token_id(first) == tokenizer.token_id(second)  # one row of the table
    vocab_word = next(t for t in ("the", "in", "a") if tokenizer.token_id(t) >= 0)
    assert clf.oov_bucket(vocab_word) is None
    (effects,) = clf.explain([f"{first} {vocab_word} {second}"], top=3)
    effect = dict(effects)
    assert effect[first] == effect[second]  # one occurrence each of one row
    assert clf.alike([first, vocab_word, second]) == {first: [second], second: [first]}
    line = format_effects(effects, clf.oov_bucket)
    assert f"{first}[oov-bucket-{bucket}]:{effect[first]:+.4f}" in line.split(" ")
    assert f"{vocab_word}:{effect[vocab_word]:+.4f}" in line.split(" ")
    assert alike_notes(clf, effects) == [
        f"note: {first} and {second} are out of the vocabulary and share bucket {bucket} (one "
        "table row): to the model they are one word, so their effects are equal where they "
        "occur equally often"
    ]


def test_vocabulary_words_with_identical_vectors_are_explained_too(run: dict) -> None:
    """The demo's SVD vectors are equal for words that always occur together."""
    clf = Classifier.load(run["ckpt"])
    tokenizer = clf.embedding.tokenizer
    vocab = artifact.read_vocab(Path(clf.embedding.meta["path"]) / artifact.VOCAB_FILE)
    table = clf.embedding.weight.detach()
    rows = {word: table[tokenizer.token_id(word)] for word in vocab}
    a, b = next(
        (a, b) for i, a in enumerate(vocab) for b in vocab[i + 1 :] if torch.equal(rows[a], rows[b])
    )
    assert clf.alike([a, b]) == {a: [b], b: [a]}
    (note,) = alike_notes(clf, [(a, 0.1), (b, 0.1)])
    assert note.startswith(f"note: {a} and {b} have identical vectors in the table")
    assert clf.alike([a, "zq0x"]) == {}  # a vocabulary row and a bucket row: told apart


def test_predict_explains_a_text_and_a_file(
    run: dict, compose_train, root_script, demo_assets: dict, tmp_path: Path
) -> None:
    predict = root_script("predict").predict
    text = "Ava Marlow is feuding with the senate"
    cfg = compose_train(
        tmp_path, f"ckpt_path={run['ckpt']}", f"+text='{text}'", config_name="predict"
    )
    cfg.text, cfg.explain, cfg.explain_top = text, True, 2
    label, tokens, *notes = predict(cfg)
    clf = Classifier.load(run["ckpt"])
    (effects,) = clf.explain([text], 2)
    assert label.startswith(clf.predict([text])[0])
    shown = [f"{t}[oov-bucket-{clf.oov_bucket(t)}]" if clf.oov_bucket(t) is not None else t
             for t, _ in effects]  # fmt: skip
    assert tokens == (
        "top tokens (+ toward True, - toward Fake): "
        + " ".join(f"{t}:{e:+.4f}" for t, (_, e) in zip(shown, effects, strict=True))
    )
    assert notes == alike_notes(clf, effects)
    cfg.text, cfg.input, cfg.output = None, str(demo_assets["test_csv"]), str(tmp_path / "out.csv")
    predict(cfg)
    scored = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    first = scored["top_tokens"].iloc[0].split(" ")
    assert len(first) == 2 and all(":" in pair for pair in first)


# --------------------------------------------------------------------- no silent wrong answer


def _predict_cfg(compose_train, ckpt: Path, out_dir: Path, **values):
    cfg = compose_train(out_dir, f"ckpt_path={ckpt}", config_name="predict")
    for key, value in values.items():
        cfg[key] = value
    return cfg


def test_plain_headlines_read_as_the_notebooks_format_are_refused(
    run: dict, compose_train, root_script, tmp_path: Path
) -> None:
    """A notebook-format checkpoint scoring plain headlines: before, every row was silently
    mangled into its characters run together; now the first such row is named, with the fix."""
    source = tmp_path / "new.csv"
    pd.DataFrame(
        {"title": ["['ava', 'marlow', 'feuding']", "Did Miley Cyrus secretly get married?"]}
    ).to_csv(source, index=False)
    cfg = _predict_cfg(
        compose_train, run["ckpt"], tmp_path, input=str(source),
        output=str(tmp_path / "out.csv"), text_column="title", chunk_rows=1,
    )  # fmt: skip
    predict = root_script("predict").predict
    with pytest.raises(DataError, match=r"data row 2 column 'title' is 'Did Miley.*format=csv"):
        predict(cfg)
    assert not (tmp_path / "out.csv").exists()
    cfg.format = "csv"
    predict(cfg)
    scored = pd.read_csv(tmp_path / "out.csv")
    clf = Classifier.load(run["ckpt"])
    expected = clf.predict_proba(["['ava', 'marlow', 'feuding']", scored["title"][1]])
    assert np.array_equal(scored["probability_True"].to_numpy(np.float32), expected[:, 1])


@pytest.mark.parametrize(
    "values, message",
    [
        ({"chunk_rows": 0}, "chunk_rows=0: expected a row count >= 1"),
        ({"output": "{tmp}/missing/out.csv"}, "a file in an existing directory"),
        ({"output": "{tmp}/afile/out.csv"}, "a file in an existing directory"),
        ({"output": "{tmp}"}, "a file path, not a directory"),
        ({"output": "{ckpt}"}, "which this command reads"),
        ({"output": "{input}"}, "which this command reads"),
        ({"input": "{tmp}/latin1.csv"}, "byte 0xe9 is not UTF-8"),
        ({"input": "{tmp}/quote.csv"}, "not a readable CSV file"),
    ],
)
def test_predict_refuses_in_one_line_and_writes_nothing(
    run: dict, compose_train, root_script, demo_assets: dict, tmp_path: Path, values, message
) -> None:
    (tmp_path / "afile").write_text("x")
    (tmp_path / "latin1.csv").write_bytes(
        "for_glove,label\n\"['caf\xe9']\",Fake\n".encode("latin-1")
    )
    (tmp_path / "quote.csv").write_text("for_glove,label\n\"['a'],Fake\n")
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(run["ckpt"].read_bytes())
    names = {"tmp": tmp_path, "ckpt": ckpt, "input": demo_assets["test_csv"]}
    values = {"input": str(demo_assets["test_csv"]), "output": str(tmp_path / "o.csv"), **values}
    values = {k: v.format(**names) if isinstance(v, str) else v for k, v in values.items()}
    before = {p: p.read_bytes() for p in [ckpt, demo_assets["test_csv"]]}
    cfg = _predict_cfg(compose_train, ckpt, tmp_path, **values)
    with pytest.raises(UserError) as refused:
        root_script("predict").predict(cfg)
    assert message in str(refused.value) and "\n" not in str(refused.value)
    assert {p: p.read_bytes() for p in before} == before
    assert not (tmp_path / "o.csv").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_predict_never_writes_into_the_models_own_files(
    run: dict, tmp_path: Path, compose_train, root_script, demo_assets
) -> None:
    bundle = tmp_path / "bundle"
    Classifier.load(run["ckpt"]).export(bundle)
    before = sorted(p.name for p in bundle.rglob("*"))
    for output in (
        bundle / "head.safetensors",
        bundle / "scored.csv",
        bundle / "embedding" / "x.csv",
    ):
        cfg = _predict_cfg(
            compose_train, bundle, tmp_path, input=str(demo_assets["test_csv"]), output=str(output)
        )
        with pytest.raises(UserError, match="which this command reads"):
            root_script("predict").predict(cfg)
    assert sorted(p.name for p in bundle.rglob("*")) == before
    Classifier.load(bundle)  # still whole


@pytest.mark.slow
def test_a_killed_predicts_temporaries_are_removed_by_the_next(
    run: dict, cli_overrides, demo_assets: dict, tmp_path: Path
) -> None:
    big = tmp_path / "big.csv"
    source = pd.read_csv(demo_assets["test_csv"], keep_default_na=False)
    pd.concat([source] * 60).to_csv(big, index=False)
    out = tmp_path / "out" / "scored.csv"
    out.parent.mkdir()
    args = [
        sys.executable, "predict.py", f"ckpt_path={run['ckpt']}", f"input={big}",
        f"output={out}", "chunk_rows=50", *cli_overrides(tmp_path),
    ]  # fmt: skip
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):  # until its temporary holds some rows
            temps = [p for p in out.parent.iterdir() if ".tmp-" in p.name]
            if temps and temps[0].stat().st_size > 0:
                break
            assert proc.poll() is None, "predict ended before it could be killed"
            time.sleep(0.05)
        else:
            raise AssertionError("predict wrote no temporary")
    finally:
        proc.kill()
        proc.wait()
    assert [p for p in out.parent.iterdir() if ".tmp-" in p.name] and not out.exists()
    again = subprocess.run(
        [*args[:3], f"input={demo_assets['test_csv']}", *args[4:]],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    assert "removed 1 stale temporary" in again.stderr + again.stdout
    assert sorted(p.name for p in out.parent.iterdir()) == ["scored.csv"]
