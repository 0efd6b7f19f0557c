"""The TF-IDF + logistic regression baseline (model=tfidf_lr): trained by `pipeline.train` on
the network's own split, reported like it, equal to scikit-learn's own fit, saved without
pickle and refused when altered; predict.py, export, search and sweep summaries on it."""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from omegaconf import OmegaConf
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from fakenews_pl.errors import ConfigError, UserError
from fakenews_pl.training import baseline, config, pipeline, reports, search, summary
from fakenews_pl.training.baseline import BaselineConfig, BaselineError, TfidfBaseline
from fakenews_pl.training.decision import TargetUnreachable

SEED = 42  # train.yaml's


@pytest.fixture(scope="module")
def run(compose_train, root_script, tmp_path_factory) -> dict:
    """`python train.py model=tfidf_lr` on the demo, in process, once for the module: its run
    dir, metrics, objects and what it printed (read it, never change it)."""
    out = tmp_path_factory.mktemp("baseline_run")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        metrics, objects = root_script("train").train(compose_train(out, "model=tfidf_lr"))
    saved = out / "baseline"
    return {
        "dir": out,
        "saved": saved,
        "metrics": metrics,
        "printed": printed.getvalue(),
        **objects,
    }


def _reference(texts, labels, **vectorizer):
    """scikit-learn's own fit, as conf/model/tfidf_lr.yaml's defaults (max_iter=1000) ask."""
    fitted = TfidfVectorizer(**vectorizer)
    features = fitted.fit_transform(list(texts))
    regression = LogisticRegression(max_iter=1000, random_state=SEED).fit(features, labels)
    return fitted, regression


def test_a_run_writes_the_networks_report_files_and_keys(run: dict, trained_run: dict) -> None:
    out, metrics = run["dir"], run["metrics"]
    for name in reports.REPORT_FILES:
        assert (out / name).is_file(), name
    assert json.loads((out / "metrics.json").read_text()) == metrics
    split_keys = {k for k in trained_run["metrics"] if k.startswith(("train/", "test/"))}
    assert {k for k in metrics if k.startswith(("train/", "test/"))} == split_keys
    assert metrics["fit/epochs"] == 0 and "val/best_loss" not in metrics  # one fit, no epochs
    assert metrics["note"]  # the demo's inputs: synthetic
    report = (out / "report.md").read_text()
    assert "TF-IDF + logistic regression (model=tfidf_lr)" in report
    assert "ngram_range=[1, 1], min_df=1, max_features=null" in report
    info = json.loads((out / "run.json").read_text())
    assert info["baseline"] is True and info["model"] == info["encoder"] == "tfidf_lr"
    assert info["embedding"] is None and info["trainable"] is None
    assert info["checkpoint"] == str(run["saved"]) and baseline.is_baseline_dir(run["saved"])
    assert info["wall_s"] > 0 and info["peak_rss_mb"] > 0
    printed = run["printed"]
    assert "TF-IDF (1-grams, " in printed and "lbfgs iterations" in printed
    block = reports.end_of_run(metrics, ["Fake", "True"], out, baseline.WEIGHTS)
    assert printed.rstrip().endswith(block)  # the network's end-of-run block


def test_the_rows_are_the_data_modules_splits(run: dict) -> None:
    datamodule, model, metrics = run["datamodule"], run["model"], run["metrics"]
    assert model.fit_info["train"] == datamodule.fingerprint()["train"]
    for split in ("train", "test"):
        labels = datamodule.labels(split)
        assert sum(metrics[f"{split}/support_{c}"] for c in ("Fake", "True")) == len(labels)
        predicted = np.array(model.predict(datamodule.texts(split))) == "True"
        for t, true in enumerate(("Fake", "True")):
            for p, guess in enumerate(("Fake", "True")):
                count = int(np.sum((labels == t) & (predicted == p)))
                assert metrics[f"{split}/confusion_{true}_{guess}"] == count


def test_probabilities_are_scikit_learns_own_fit(run: dict) -> None:
    datamodule, model = run["datamodule"], run["model"]
    texts = datamodule.texts("train")
    fitted, regression = _reference(texts, datamodule.labels("train"))
    for split in ("train", "test"):
        features = fitted.transform(list(datamodule.texts(split)))
        expected = regression.predict_proba(features)
        ours = model.regression.predict_proba(model.vectorizer.transform(datamodule.texts(split)))
        assert np.array_equal(ours, expected)
        assert np.array_equal(model.predict_proba(datamodule.texts(split)), expected.astype("f4"))
        accuracy = np.mean((expected[:, 1] > 0.5) == datamodule.labels(split))
        assert run["metrics"][f"{split}/accuracy"] == pytest.approx(accuracy, abs=1e-7)


def test_every_setting_reaches_scikit_learn(run: dict) -> None:
    datamodule = run["datamodule"]
    texts, labels = datamodule.texts("train"), datamodule.labels("train")
    vectorizer = {"ngram_range": (1, 2), "min_df": 2, "max_features": 60, "sublinear_tf": True,
                  "lowercase": False}  # fmt: skip
    cfg = BaselineConfig(**vectorizer, C=0.3, max_iter=1000, class_weight="balanced")
    model = TfidfBaseline.fit(texts, labels, ["Fake", "True"], cfg, SEED)
    fitted = TfidfVectorizer(**vectorizer)
    features = fitted.fit_transform(list(texts))
    regression = LogisticRegression(C=0.3, max_iter=1000, class_weight="balanced")
    regression.fit(features, labels)
    test = datamodule.texts("test")
    expected = regression.predict_proba(fitted.transform(list(test)))
    assert model.n_features == 60 and any(" " in term for term in model.vectorizer.vocabulary_)
    assert np.array_equal(model.predict_proba(test), expected.astype(np.float32))
    default = TfidfBaseline.fit(texts, labels, ["Fake", "True"], BaselineConfig(), SEED)
    assert not np.array_equal(default.predict_proba(test), model.predict_proba(test))


def test_a_saved_model_loads_bit_identical(run: dict, tmp_path: Path) -> None:
    model, texts = run["model"], list(run["datamodule"].texts("test"))
    loaded = TfidfBaseline.load(run["saved"])
    assert np.array_equal(loaded.predict_proba(texts), model.predict_proba(texts))
    assert np.array_equal(loaded.logits(texts), model.logits(texts))
    assert loaded.class_names == ["Fake", "True"] and loaded.threshold == 0.5
    assert loaded.config == model.config and loaded.data == {"format": "notebook",
                                                            "text_column": "for_glove"}  # fmt: skip
    probabilities = loaded.predict_proba(texts)
    threshold = float(np.median(probabilities[:, 1]))
    loaded.threshold = threshold
    loaded.save(tmp_path / "moved")
    again = TfidfBaseline.load(tmp_path / "moved")
    assert again.threshold == threshold
    assert again.labels(probabilities) == [
        "True" if p > threshold else "Fake" for p in probabilities[:, 1]
    ]
    assert again.labels(probabilities) != model.labels(probabilities)  # 0.5 gives others
    with pytest.raises(FileExistsError):
        again.save(tmp_path / "moved")
    assert again.predict_proba([]).shape == (0, 2)


def _copy(run: dict, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run["saved"], tmp_path / "copy"))


@pytest.mark.parametrize("name", [baseline.WEIGHTS_FILE, baseline.VOCABULARY_FILE])
def test_a_damaged_file_is_refused_naming_it(run: dict, tmp_path: Path, name: str) -> None:
    saved = _copy(run, tmp_path)
    data = bytearray((saved / name).read_bytes())
    data[-3] ^= 0x01
    (saved / name).write_bytes(bytes(data))
    expected = json.loads((saved / baseline.MANIFEST).read_text())["sha256"][name]
    with pytest.raises(BaselineError) as error:
        TfidfBaseline.load(saved)
    message = str(error.value)
    assert message.startswith(f"{saved / name}: sha256 ") and "\n" not in message
    assert f"does not match {expected} recorded in baseline.json" in message
    (saved / name).unlink()
    with pytest.raises(BaselineError, match=f"{saved / name} is missing"):
        TfidfBaseline.load(saved)


def test_an_edited_manifest_is_refused(run: dict, tmp_path: Path) -> None:
    saved = _copy(run, tmp_path)
    manifest = json.loads((saved / baseline.MANIFEST).read_text())
    manifest["class_names"] = ["True", "Fake"]  # swapped by hand: every label would flip
    (saved / baseline.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BaselineError, match="it was edited since"):
        TfidfBaseline.load(saved)
    with pytest.raises(BaselineError, match="baseline.json is missing"):
        TfidfBaseline.load(tmp_path)


def test_no_pickle_is_written_or_read(run: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    names = sorted(path.name for path in run["saved"].iterdir())
    assert names == ["baseline.json", "vocabulary.json", "weights.safetensors"]
    for path in run["saved"].iterdir():
        assert not path.read_bytes().startswith(b"\x80")  # pickle protocol 2+ opcode
    json.loads((run["saved"] / baseline.VOCABULARY_FILE).read_text())

    def refuse(*args, **kwargs):
        raise AssertionError("pickle used")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    loaded = TfidfBaseline.load(run["saved"])
    texts = list(run["datamodule"].texts("test")[:20])
    assert np.array_equal(loaded.predict_proba(texts), run["model"].predict_proba(texts))


def test_no_features_and_no_convergence_are_said(run: dict) -> None:
    with pytest.raises(ConfigError, match=r"model.min_df=1, model.ngram_range=\[1, 1\]: no TF"):
        TfidfBaseline.fit(["a b", "c d"], [0, 1], ["Fake", "True"], BaselineConfig(), SEED)
    datamodule = run["datamodule"]
    texts, labels = datamodule.texts("train"), datamodule.labels("train")
    model = TfidfBaseline.fit(texts, labels, ["Fake", "True"], BaselineConfig(max_iter=1), SEED)
    assert model.fit_info == {"iterations": 1, "converged": False}
    line = baseline.describe_fit(model, datamodule, 0.1)
    assert line.endswith("NOT converged within model.max_iter=1: raise it")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.C=0", "model.C=0: expected an inverse regularization > 0"),
        ("model.ngram_range=[2,1]", "model.ngram_range=[2,1]: expected [min, max] n-gram sizes"),
        ("model.ngram_range=[1]", "model.ngram_range=[1]: expected [min, max]"),
        ("model.min_df=0", "model.min_df=0: expected a document count >= 1"),
        ("model.min_df=1.5", "model.min_df=1.5: expected a document count"),
        ("model.max_features=0", "model.max_features=0: expected a term count >= 1, or null"),
        ("model.max_iter=0", "model.max_iter=0: expected an iteration count >= 1"),
        ("model.class_weight=auto", "model.class_weight=auto: expected null or balanced"),
        ("model.lowercase=1", "model.lowercase=1: expected true or false"),
        ("trainable=true", "trainable=True: expected false with model=tfidf_lr (the TF-IDF"),
        ("ckpt_path=last", "ckpt_path=last: expected null with model=tfidf_lr"),
        ("+model.optimizer=keras_adam", "model.optimizer: not a setting of the TF-IDF baseline"),
    ],
)
def test_bad_settings_are_refused_naming_the_key(
    compose_train, tmp_path: Path, override: str, message: str
) -> None:
    config.check_train_config(compose_train(tmp_path, "model=tfidf_lr"))  # the defaults pass
    with pytest.raises(ConfigError) as error:
        config.check_train_config(compose_train(tmp_path, "model=tfidf_lr", override))
    assert str(error.value).startswith(message)


def test_a_kind_that_names_no_model_is_refused(compose_train, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model.kind=tfidf: expected tfidf_lr"):
        config.check_train_config(compose_train(tmp_path, "+model.kind=tfidf"))


def test_predict_py_gives_the_baselines_label(run: dict, compose_train, root_script) -> None:
    text = str(run["datamodule"].texts("test")[0])
    (probabilities,) = run["model"].predict_proba([text])
    predict = root_script("predict")
    cfg = compose_train(run["dir"] / "p", f"ckpt_path={run['saved']}", f"text='{text}'",
                        config_name="predict")  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        (line,) = predict.predict(cfg)
    label = run["model"].predict([text])[0]
    shares = f"Fake {probabilities[0]:.4f}, True {probabilities[1]:.4f}"
    assert line == f"{label} ({shares}; True when P(True) > 0.5000)"
    for override, key in (("explain=true", "explain=True"), ("input=x.csv", "input=x.csv")):
        bad = compose_train(run["dir"] / "p", f"ckpt_path={run['saved']}", override,
                            *(["output=y.csv"] if "input" in override else [f"text='{text}'"]),
                            config_name="predict")  # fmt: skip
        with pytest.raises(ConfigError, match=f"{key}: expected .* with a saved TF-IDF baseline"):
            predict.predict(bad)


def test_export_refuses_a_saved_baseline(run: dict, tmp_path: Path) -> None:
    from fakenews_pl.serving import export

    with pytest.raises(UserError, match="a saved TF-IDF baseline is self-contained already"):
        export.export(run["saved"], {"bundle": tmp_path / "out"})
    assert not (tmp_path / "out").exists()


def test_a_search_trial_trains_the_baseline(run: dict, compose_train, tmp_path: Path) -> None:
    cfg = compose_train(tmp_path, "hparams_search=head_optuna", "model=tfidf_lr",
                        config_name="search")  # fmt: skip
    with pytest.raises(ConfigError, match="search.space.model.lr: no such key"):
        search.check_search_config(cfg)
    cfg.search.space = OmegaConf.create({"model.C": {"type": "float", "low": 0.1, "high": 10.0}})
    with pytest.raises(ConfigError, match="search.metric=val/best_loss: model=tfidf_lr is one"):
        search.check_search_config(cfg)
    cfg.search.space = OmegaConf.create({"model": {"type": "categorical", "choices": ["x"]}})
    with pytest.raises(ConfigError, match="search.space.model: a config group or node"):
        search.check_search_config(cfg)
    cfg.search.space = OmegaConf.create({"model.C": {"type": "float", "low": 0.1, "high": 10.0}})
    cfg.search.metric = "val/loss"
    search.check_search_config(cfg)
    objective = search.make_objective(cfg, tmp_path / "sweep")
    study = optuna.create_study()
    with contextlib.redirect_stdout(io.StringIO()):
        study.optimize(objective, n_trials=1)
    trial_dir = tmp_path / "sweep" / "trials" / "0"
    metrics = json.loads((trial_dir / "metrics.json").read_text())
    assert study.best_value == metrics["val/loss"]
    rows = len(run["datamodule"].labels("val"))
    assert metrics["val/support_Fake"] + metrics["val/support_True"] == rows
    assert json.loads((trial_dir / "run.json").read_text())["state"] == "COMPLETE"


def test_a_sweep_summary_lists_the_baseline_beside_the_network(
    run: dict, trained_run: dict, tmp_path: Path
) -> None:
    sweep = tmp_path / "sweep"
    shutil.copytree(trained_run["dir"], sweep / "0", ignore=shutil.ignore_patterns("*.ckpt"))
    shutil.copytree(run["dir"], sweep / "1")
    # By val/best_loss (train.yaml's optimized_metric): only the network has it.
    assert summary.write_summary(sweep) == "2 runs: 2 finished, 0 failed, 0 not finished"
    table = pd.read_csv(sweep / "summary.csv")
    assert list(table["encoder"]) == ["bag", "tfidf_lr"] and list(table["best"]) == [True, False]
    assert table["test/accuracy"][1] == run["metrics"]["test/accuracy"]
    summary.write_summary(sweep, metric="test/accuracy")
    best = pd.read_csv(sweep / "summary.csv")["best"]
    higher = int(run["metrics"]["test/accuracy"] > trained_run["metrics"]["test/accuracy"])
    assert list(best) == [not higher, bool(higher)]


def test_real_data_is_not_marked_synthetic_for_the_demo_embedding(
    compose_train, tiny_csv: Path, tmp_path: Path
) -> None:
    """The baseline reads no embedding vectors: the demo table that tokenizes its data module's
    cache does not make its report synthetic (a network's run on it is)."""
    data = ["data=csv", f"data.files=[{tiny_csv}]"]
    assert pipeline.prepare_demo(compose_train(tmp_path / "net", *data))
    cfg = compose_train(tmp_path / "run", "model=tfidf_lr", *data)
    assert not pipeline.prepare_demo(cfg)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        metrics, objects = pipeline.train(cfg)
    assert "note" not in metrics and "SYNTHETIC" not in printed.getvalue()
    assert objects["model"].class_names == ["fake", "real"]
    assert metrics["test/support_fake"] + metrics["test/support_real"] == 20  # 33% of 60


def test_a_decision_target_is_chosen_on_val_kept_and_applied(
    run: dict, compose_train, root_script, tmp_path: Path
) -> None:
    """decision.target chooses the threshold on the validation split's probabilities (as
    predict_proba gives them), the report is at it, and the saved model, predict.py and
    the labels apply it; a target out of reach stops the run once the model is saved."""
    target = 'decision.target="recall_Fake>=0.95"'
    cfg = compose_train(tmp_path / "run", "model=tfidf_lr", target)
    with contextlib.redirect_stdout(io.StringIO()):
        metrics, objects = pipeline.train(cfg)
    model, datamodule = objects["model"], objects["datamodule"]
    threshold = metrics["decision/threshold"]
    assert metrics["decision/target"] == "recall_Fake>=0.95" and metrics["decision/chosen_on"]
    assert threshold > 0.5 and model.threshold == threshold
    val = model.predict(datamodule.texts("val"))
    fake = datamodule.labels("val") == 0
    assert np.mean(np.array(val)[fake] == "Fake") >= 0.95  # the target, met on val
    test = np.array(model.predict(datamodule.texts("test")))
    assert metrics["test/confusion_Fake_Fake"] == int(np.sum(test[datamodule.labels("test") == 0]
                                                           == "Fake"))  # fmt: skip
    loaded = TfidfBaseline.load(tmp_path / "run" / "baseline")
    assert loaded.threshold == threshold and loaded.decision == model.decision
    text = str(datamodule.texts("test")[0])
    predict_cfg = compose_train(tmp_path / "p", f"ckpt_path={tmp_path / 'run' / 'baseline'}",
                                f"text='{text}'", config_name="predict")  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        (line,) = root_script("predict").predict(predict_cfg)
    assert line.startswith(loaded.predict([text])[0]) and f"> {threshold:.4f})" in line


def test_a_target_out_of_reach_stops_the_run_once_the_model_is_saved(
    compose_train, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable(*args):
        raise TargetUnreachable("decision.target=recall_Fake>=0.99: no threshold reaches it")

    monkeypatch.setattr(baseline, "decide", unreachable)
    cfg = compose_train(tmp_path, "model=tfidf_lr", 'decision.target="recall_Fake>=0.99"')
    with pytest.raises(TargetUnreachable), contextlib.redirect_stdout(io.StringIO()):
        pipeline.train(cfg)
    assert TfidfBaseline.load(tmp_path / "baseline").threshold == 0.5
    assert not (tmp_path / "metrics.json").exists()


def test_the_notebook_grids_baseline_cell_is_this_baseline(compose_train, tmp_path: Path) -> None:
    cfg = compose_train(tmp_path, "experiment=notebook_grid", "cell=baseline")
    assert baseline.is_baseline(cfg.model) and cfg.data.val_source == "test"
    config.check_train_config(cfg, multirun=True)


def test_a_run_dir_used_again_holds_the_new_model_and_its_report(
    compose_train, root_script, tmp_path: Path
) -> None:
    """The second run wrote its reports, then failed on the first run's baseline/ (a
    traceback), leaving one model's reports beside another model's files."""
    train = root_script("train").train
    train(compose_train(tmp_path, "model=tfidf_lr", "model.max_iter=1"))
    metrics, objects = train(compose_train(tmp_path, "model=tfidf_lr"))
    saved = TfidfBaseline.load(tmp_path / "baseline")
    assert saved.fit_info == objects["model"].fit_info and saved.fit_info["iterations"] > 1
    texts = objects["datamodule"].texts("test").tolist()
    assert np.array_equal(saved.predict_proba(texts), objects["model"].predict_proba(texts))
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
