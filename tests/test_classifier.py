"""The Python API and predict.py: new text scored exactly as the trained model scores it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fakenews_pl import Classifier
from fakenews_pl.corpus import DataError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(compose_train, root_script, tmp_path_factory) -> dict:
    """A tiny demo run: its checkpoint, model, data and metrics."""
    out = tmp_path_factory.mktemp("run")
    metrics, objects = root_script("train").train(compose_train(out))
    return {"ckpt": out / "checkpoints" / "last.ckpt", "metrics": metrics, **objects}


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
    assert line == f"{clf.predict(['Ava Marlow is feuding'])[0]} (Fake {p[0]:.4f}, True {p[1]:.4f})"
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


def test_predict_explains_a_text_and_a_file(
    run: dict, compose_train, root_script, demo_assets: dict, tmp_path: Path
) -> None:
    predict = root_script("predict").predict
    text = "Ava Marlow is feuding with the senate"
    cfg = compose_train(
        tmp_path, f"ckpt_path={run['ckpt']}", f"+text='{text}'", config_name="predict"
    )
    cfg.text, cfg.explain, cfg.explain_top = text, True, 2
    label, tokens = predict(cfg)
    clf = Classifier.load(run["ckpt"])
    (effects,) = clf.explain([text], 2)
    assert label.startswith(clf.predict([text])[0])
    assert tokens == (
        "top tokens (+ toward True, - toward Fake): "
        + " ".join(f"{t}:{e:+.4f}" for t, e in effects)
    )
    cfg.text, cfg.input, cfg.output = None, str(demo_assets["test_csv"]), str(tmp_path / "out.csv")
    predict(cfg)
    scored = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    first = scored["top_tokens"].iloc[0].split(" ")
    assert len(first) == 2 and all(":" in pair for pair in first)
