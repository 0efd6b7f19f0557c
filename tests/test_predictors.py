"""fakenews_pl/serving/predictors.py: a path's model, loaded for predict.py and serve.py; a
saved TF-IDF baseline served by a real serve.py process."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import numpy as np
import pytest
from servers import free_port, serving

from fakenews_pl.serving import predictors
from fakenews_pl.serving.classifier import Classifier
from fakenews_pl.training.baseline import BaselineConfig, TfidfBaseline

REPO = Path(__file__).resolve().parents[1]
TEXTS = [
    "shocking secret wedding revealed by insiders",
    "shocking star hiding secret after split",
    "council approves new flood defences budget",
    "university publishes annual research report",
] * 5
LABELS = [0, 0, 1, 1] * 5


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[TfidfBaseline, Path]:
    """A tiny baseline, fitted and saved once for the module."""
    model = TfidfBaseline.fit(TEXTS, LABELS, ["Fake", "True"], BaselineConfig(), seed=0)
    path = tmp_path_factory.mktemp("predictors") / "baseline"
    model.save(path)
    return model, path


def test_a_saved_baseline_is_a_model_dir_and_loads_as_one(saved, tmp_path: Path) -> None:
    model, path = saved
    assert predictors.is_model_dir(path) and not predictors.is_model_dir(tmp_path)
    loaded = predictors.load_predictor(path, "cpu", threads=None)
    assert isinstance(loaded, TfidfBaseline)
    assert np.array_equal(loaded.predict_proba(TEXTS), model.predict_proba(TEXTS))
    assert not hasattr(loaded, "explain")  # the server then answers explanation: null


def test_anything_else_goes_to_the_classifier(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(Classifier, "load", classmethod(lambda cls, *a, **k: calls.append((a, k))))
    predictors.load_predictor("run/last.ckpt", "cpu", threads=2)
    assert calls == [(("run/last.ckpt", "cpu"), {"threads": 2})]


def test_serve_py_serves_a_saved_baseline(saved, tmp_path: Path) -> None:
    model, path = saved
    port = free_port()
    args = ["serve.py", f"ckpt_path={path}", f"port={port}", f"paths.log_dir={tmp_path}"]
    with serving(args, tmp_path / "serve.log", port, timeout=60) as server:
        health = httpx.get(f"{server.url}/health", timeout=2).json()
        assert health["model"] == "baseline" and health["explain"] is False
        assert health["class_names"] == ["Fake", "True"]
        assert health["decision"] == {"threshold": 0.5, "target": None, "chosen_on": None}
        texts = TEXTS[:4]
        answer = httpx.post(f"{server.url}/predict", json={"texts": texts, "explain": True}).json()
        probabilities = model.predict_proba(texts)
        assert [p["label"] for p in answer["predictions"]] == model.labels(probabilities)
        for prediction, row in zip(answer["predictions"], probabilities, strict=True):
            shown = prediction["probabilities"]  # float32, in its shortest decimal
            assert [np.float32(shown["Fake"]), np.float32(shown["True"])] == row.tolist()
            assert prediction["explanation"] is None
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=15) == 0
