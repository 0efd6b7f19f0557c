"""The decision rule (fakenews_pl/training/decision.py): a threshold chosen on the validation
split only, to meet a target, and the same threshold through checkpoint, bundle, predict.py,
Classifier and the server."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from fakenews_pl import Classifier
from fakenews_pl.errors import ConfigError
from fakenews_pl.training import checkpoints, decision, pipeline, reports
from fakenews_pl.training.decision import Target, TargetUnreachable, choose, parse_target

NAMES = ["Fake", "True"]


def _brute_force(p: np.ndarray, y: np.ndarray, target: Target) -> float:
    """Every candidate threshold tried one by one, as the docstring states the rule."""
    index = NAMES.index(target.class_name)
    best = None
    for t in sorted({0.0, *p.tolist()}):
        if t >= 1:
            continue
        predicted = (p > t).astype(int)
        hits = ((predicted == index) & (y == index)).sum()
        recall = hits / max((y == index).sum(), 1)
        precision = hits / max((predicted == index).sum(), 1)
        metric, other = (recall, precision) if target.metric == "recall" else (precision, recall)
        if metric >= target.value:
            key = (other, -abs(t - 0.5))
            if best is None or key > best[0]:
                best = (key, t)
    assert best is not None
    return best[1]


@pytest.mark.parametrize(
    "text", ["recall_Fake>=0.9", "recall_True>=0.8", "precision_Fake>=0.7", "precision_True>=0.75"]
)
def test_choose_is_the_stated_rule(text: str) -> None:
    generator = np.random.default_rng(3)
    y = generator.integers(0, 2, 400)
    p = np.clip(0.5 + 0.25 * (y - 0.5) + generator.normal(0, 0.2, 400), 0, 1).astype(np.float32)
    p = p.astype(np.float64)
    target = parse_target(text, NAMES)
    assert choose(p, y, target, NAMES) == _brute_force(p, y, target)


def test_a_target_out_of_reach_is_refused_in_one_line() -> None:
    p, y = np.array([0.2, 0.4, 0.6, 0.8]), np.array([1, 0, 1, 0])  # anti-correlated
    with pytest.raises(TargetUnreachable, match=r"precision_Fake>=1: no threshold reaches it"):
        choose(p, y, parse_target("precision_Fake>=1.0", NAMES), NAMES)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"threshold": 1.5, "target": None}, "decision.threshold=1.5: expected a number in [0, 1)"),
        ({"threshold": 0.5, "target": "f1_Fake>=0.9"}, "decision.target='f1_Fake>=0.9'"),
        ({"threshold": 0.5, "target": "recall_Fake>=2"}, "with x in (0, 1]"),
        ({"threshold": 0.3, "target": "recall_Fake>=0.9"}, "give one"),
    ],
)
def test_bad_decision_settings_are_refused(settings: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        decision.check_config(settings)
    with pytest.raises(ConfigError, match="a class of"):
        parse_target("recall_Real>=0.9", NAMES)


@pytest.fixture(scope="module")
def chosen_run(compose_train, tmp_path_factory) -> dict:
    """A tiny demo run whose threshold is chosen for recall of Fake >= 0.9 on validation (a
    tenth of train: not the test rows)."""
    out = tmp_path_factory.mktemp("decision")
    cfg = compose_train(out, 'decision.target="recall_Fake>=0.9"', "trainer.max_epochs=3")
    metrics, objects = pipeline.train(cfg)
    return {"dir": out, "metrics": metrics, **objects}


def test_the_threshold_is_chosen_on_the_validation_split_only(chosen_run: dict) -> None:
    metrics, model, datamodule = (
        chosen_run["metrics"],
        chosen_run["model"],
        chosen_run["datamodule"],
    )
    assert datamodule.hparams.val_source != "test"
    logits, labels = reports.predict_logits(model, datamodule.split_dataloader("val"))
    p = torch.sigmoid(logits).double().numpy()
    target = parse_target("recall_Fake>=0.9", NAMES)
    assert metrics["decision/threshold"] == choose(p, labels.long().numpy(), target, NAMES)
    assert metrics["decision/chosen_on"] == "val"
    test_logits, test_labels = reports.predict_logits(model, datamodule.split_dataloader("test"))
    test_p = torch.sigmoid(test_logits).double().numpy()
    on_test = choose(test_p, test_labels.long().numpy(), target, NAMES)
    assert on_test != metrics["decision/threshold"]  # what choosing on test would have given
    # The report's tables are at the chosen threshold.
    predicted = (test_p > metrics["decision/threshold"]).astype(int)
    fake = test_labels.numpy() == 0
    assert metrics["test/recall_Fake"] == pytest.approx((predicted[fake] == 0).mean(), abs=1e-6)
    assert (chosen_run["dir"] / "roc_pr_test.png").stat().st_size > 0
    assert 0 < metrics["test/average_precision_Fake"] <= 1


def test_the_threshold_survives_checkpoint_bundle_predict_and_serve(
    chosen_run: dict, root_script, compose_train, tmp_path: Path
) -> None:
    from starlette.testclient import TestClient

    from fakenews_pl.serving.server import create_app

    threshold = chosen_run["metrics"]["decision/threshold"]
    info = json.loads((chosen_run["dir"] / "run.json").read_text())
    recorded = checkpoints.read(info["checkpoint"])[checkpoints.DECISION]
    assert recorded["threshold"] == threshold and recorded["target"] == "recall_Fake>=0.9"
    from_checkpoint = Classifier.load(info["checkpoint"])
    from_checkpoint.export(tmp_path / "bundle")
    from_bundle = Classifier.load(tmp_path / "bundle")
    assert from_checkpoint.threshold == from_bundle.threshold == threshold  # bit for bit
    texts = chosen_run["datamodule"].texts("test")[:200].tolist()
    p = from_bundle.predict_proba(texts)[:, 1]
    assert from_bundle.predict(texts) == [NAMES[int(x > threshold)] for x in p]
    assert any(0.5 < x <= threshold for x in p)  # rows the threshold labels otherwise than 0.5
    cfg = compose_train(
        tmp_path, f"ckpt_path={tmp_path / 'bundle'}", f"+text='{texts[0]}'", config_name="predict"
    )
    (line,) = root_script("predict").predict(cfg)
    assert line.endswith(f"; True when P(True) > {threshold:.4f})")
    assert line.startswith(from_bundle.predict(texts[:1])[0])
    with TestClient(create_app(from_bundle)) as client:
        assert client.get("/health").json()["decision"]["threshold"] == threshold
        answer = client.post("/predict", json={"texts": texts}).json()["predictions"]
    assert [a["label"] for a in answer] == from_bundle.predict(texts)


def test_evaluate_uses_the_checkpoints_threshold_and_never_changes_it(
    chosen_run: dict, root_script, compose_train, tmp_path: Path
) -> None:
    info = json.loads((chosen_run["dir"] / "run.json").read_text())
    before = Path(info["checkpoint"]).read_bytes()
    cfg = compose_train(tmp_path, f"ckpt_path={info['checkpoint']}", config_name="eval")
    metrics = root_script("evaluate").evaluate(cfg)
    assert metrics["decision/threshold"] == chosen_run["metrics"]["decision/threshold"]
    assert metrics["test/recall_Fake"] == chosen_run["metrics"]["test/recall_Fake"]
    cfg = compose_train(
        tmp_path / "other", f"ckpt_path={info['checkpoint']}", "decision.threshold=0.3",
        'decision.target="precision_Fake>=0.5"', config_name="eval",
    )  # fmt: skip
    with pytest.raises(ConfigError, match="give one"):
        root_script("evaluate").evaluate(cfg)
    assert Path(info["checkpoint"]).read_bytes() == before


def test_evaluate_at_an_explicit_half_reports_at_a_half(
    chosen_run: dict, root_script, compose_train, tmp_path: Path
) -> None:
    """decision.threshold=0.5 was taken for 'not set' and the checkpoint's threshold used."""
    info = json.loads((chosen_run["dir"] / "run.json").read_text())
    cfg = compose_train(
        tmp_path, f"ckpt_path={info['checkpoint']}", "decision.threshold=0.5", config_name="eval"
    )
    metrics = root_script("evaluate").evaluate(cfg)
    assert metrics["decision/threshold"] == 0.5 != chosen_run["metrics"]["decision/threshold"]


def test_a_target_of_an_unknown_class_is_refused_before_training(
    compose_train, tmp_path: Path
) -> None:
    cfg = compose_train(tmp_path, 'decision.target="recall_Bogus>=0.9"')
    with pytest.raises(ConfigError, match="a class of \\['Fake', 'True'\\]"):
        pipeline.train(cfg)
    assert not (tmp_path / "checkpoints").exists()  # no epoch ran
