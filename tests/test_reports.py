"""reports: torchmetrics figures against sklearn's, and the files a run dir gets."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import classification_report, confusion_matrix, log_loss, roc_auc_score

from fakenews_pl.training import reports

CLASSES = ["Fake", "True"]


def random_predictions(n: int = 300, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(n,) logits and 0/1 labels, loosely correlated, with one probability of exactly 0.5."""
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(n, generator=g) < 0.6).float()
    logits = 1.5 * (labels - 0.5) + torch.randn(n, generator=g)
    logits[0] = 0.0  # sigmoid(0) = 0.5: np.rint makes it class 0
    return logits, labels


def test_split_metrics_equal_sklearns_classification_report() -> None:
    logits, labels = random_predictions()
    probs = torch.sigmoid(logits).numpy()
    preds = np.rint(probs).astype(int)  # the notebook's rule
    target = labels.long().numpy()
    expected = classification_report(target, preds, output_dict=True)
    got = reports.split_metrics("test", logits, labels, CLASSES).metrics
    for i, name in enumerate(CLASSES):
        ref = expected[str(i)]
        assert got[f"test/precision_{name}"] == pytest.approx(ref["precision"], abs=1e-6)
        assert got[f"test/recall_{name}"] == pytest.approx(ref["recall"], abs=1e-6)
        assert got[f"test/f1_{name}"] == pytest.approx(ref["f1-score"], abs=1e-6)
        assert got[f"test/support_{name}"] == ref["support"]
    for avg in ("macro", "weighted"):
        ref = expected[f"{avg} avg"]
        for ours, theirs in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
            assert got[f"test/{avg}_{ours}"] == pytest.approx(ref[theirs], abs=1e-6)
    assert got["test/accuracy"] == pytest.approx(expected["accuracy"], abs=1e-6)
    assert got["test/auroc"] == pytest.approx(roc_auc_score(labels, probs), abs=1e-5)
    assert got["test/loss"] == pytest.approx(log_loss(labels, probs), abs=1e-5)
    matrix = confusion_matrix(target, preds)
    for i, true in enumerate(CLASSES):
        for j, predicted in enumerate(CLASSES):
            assert got[f"test/confusion_{true}_{predicted}"] == matrix[i, j]


def test_table_has_the_notebooks_layout() -> None:
    table = reports.split_metrics("train", *random_predictions(), CLASSES).table
    assert list(table.columns) == ["Fake", "True", "accuracy", "macro avg", "weighted avg"]
    assert list(table.index) == ["precision", "recall", "f1-score", "support"]
    assert table.loc["support", "macro avg"] == table.loc["support", ["Fake", "True"]].sum()
    assert table["accuracy"].nunique() == 1  # sklearn repeats accuracy down its column


def test_history_metrics_pick_the_best_validation_epoch() -> None:
    history = [
        {"epoch": 1, "train/loss": 0.7, "val/loss": 0.6},  # epochs count from 1
        {"epoch": 2, "train/loss": 0.5, "val/loss": 0.4},
        {"epoch": 3, "train/loss": 0.4, "val/loss": 0.45},
    ]
    assert reports.history_metrics(history) == {
        "fit/epochs": 3,
        "val/best_loss": 0.4,
        "val/best_epoch": 2,
    }


def test_write_report_files_agree_with_each_other(tmp_path: Path) -> None:
    predictions = {"train": random_predictions(400, 1), "test": random_predictions(200, 2)}
    history = [{"epoch": 0, "train/loss": 0.6, "train/accuracy": 0.7, "val/loss": 0.5}]
    metrics = reports.write_report(tmp_path, predictions, CLASSES, history, {"weights": "last"})
    for name in reports.REPORT_FILES:
        assert (tmp_path / name).stat().st_size > 0, name
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    for split, (_, labels) in predictions.items():
        cm = {(t, p): metrics[f"{split}/confusion_{t}_{p}"] for t in CLASSES for p in CLASSES}
        assert sum(cm.values()) == len(labels)
        implied = (cm["Fake", "Fake"] + cm["True", "True"]) / len(labels)
        assert metrics[f"{split}/accuracy"] == pytest.approx(implied, abs=1e-6)
    table = pd.read_csv(tmp_path / "classification_report.csv", index_col=[0, 1])
    assert table.loc[("TEST", "f1-score"), "True"] == pytest.approx(metrics["test/f1_True"])
    assert table.loc[("TRAIN", "support"), "Fake"] == metrics["train/support_Fake"]
    markdown = (tmp_path / "report.md").read_text()
    assert "## TRAIN" in markdown and "## TEST" in markdown and "**weights**: last" in markdown
    assert f"| {metrics['test/precision_Fake']:.4f} |" in markdown.split("## TEST")[1]


def test_a_note_marks_every_file(tmp_path: Path) -> None:
    """The demo's reports say they are synthetic in metrics.json, report.md and every figure."""
    from matplotlib.image import imread

    predictions = {"train": random_predictions(400, 1), "test": random_predictions(200, 2)}
    history = [{"epoch": 1, "train/loss": 0.6, "train/accuracy": 0.7, "val/loss": 0.5}]
    note = "synthetic demo inputs: not real news"
    plain = reports.write_report(tmp_path / "plain", predictions, CLASSES, history, {})
    marked = reports.write_report(tmp_path / "marked", predictions, CLASSES, history, {}, note)
    assert "note" not in plain and marked["note"] == note
    assert json.loads((tmp_path / "marked" / "metrics.json").read_text())["note"] == note
    assert note in (tmp_path / "marked" / "report.md").read_text()
    for name in ("confusion_matrix_train.png", "confusion_matrix_test.png", "curves.png"):
        a, b = imread(tmp_path / "plain" / name), imread(tmp_path / "marked" / name)
        assert a.shape != b.shape or not np.array_equal(a, b), name  # the banner is drawn


def _block_values(block: str, class_names: list[str]) -> dict[str, float]:
    """The figures an end-of-run block shows, read back from its text."""
    lines = block.splitlines()
    accuracy = next(line for line in lines if line.startswith("test accuracy "))
    values = {"test/accuracy": float(accuracy.split()[2]), "rows": int(accuracy.split()[4])}
    for line in lines:
        name, *rest = line.split()
        if name in class_names:
            for key, value in zip(("precision", "recall", "f1"), rest[:3], strict=True):
                values[f"test/{key}_{name}"] = float(value)
            values[f"test/support_{name}"] = int(rest[3].replace(",", ""))
    return values


def test_the_end_of_run_block_says_what_metrics_json_says(
    trained_run: dict, compose_train, root_script, tmp_path: Path, capsys
) -> None:
    """evaluate.py (as train.py) ends by printing the test accuracy, the weights it reports and
    each class's precision/recall/F1; the figures equal metrics.json's, and the synthetic-demo
    banner is there exactly when the inputs were the demo (metrics.json's `note`)."""
    cfg = compose_train(tmp_path, f"ckpt_path={trained_run['ckpt']}", config_name="eval")
    capsys.readouterr()
    root_script("evaluate").evaluate(cfg)
    block = capsys.readouterr().out
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    names = ["Fake", "True"]
    shown = _block_values(block, names)
    for key, value in shown.items():
        if key == "rows":
            assert value == sum(metrics[f"test/support_{c}"] for c in names)
        else:
            assert value == round(metrics[key], 4 if isinstance(value, float) else 0), key
    assert len(shown) == 2 + 4 * len(names)
    assert f"weights: those of {trained_run['ckpt']}" in block and f"run dir: {tmp_path}" in block
    assert metrics["note"] and block.splitlines()[0] == reports.SYNTHETIC_BANNER
    real = {k: v for k, v in metrics.items() if k != "note"}  # the same figures, real inputs
    assert reports.SYNTHETIC_BANNER not in reports.end_of_run(real, names, tmp_path, "w")
    assert all(len(line) <= 80 for line in reports.end_of_run(real, names, "run", "w").split("\n"))
