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
