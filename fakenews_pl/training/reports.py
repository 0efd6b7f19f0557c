"""The notebook's `print_results`, from torchmetrics: tables, metrics.json and plots.

Predicted class = `prob > threshold`: 0.5 by default, the notebook's `np.rint(prob)` (0.5 rounds
to 0), or the run's decision (`fakenews_pl/training/decision.py`). Per split (train, test):
per-class precision, recall, F1 and support at that threshold, accuracy, macro and
support-weighted averages (sklearn's `classification_report` layout, classes named by label),
and, threshold-free, binary AUROC, each class's average precision and the BCE loss; the
confusion matrix.

Files written into a run dir (`REPORT_FILES`): `metrics.json` (flat keys, see `split_metrics`),
`report.md` (both tables), `classification_report.csv`, `confusion_matrix_{train,test}.png`,
`curves.png` (loss and accuracy per epoch, train vs validation), `roc_pr_test.png` (the test
split's ROC and precision-recall curves of each class, the operating point marked).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure  # the OO API: no pyplot state, no GUI backend
from torch import nn
from torchmetrics.classification import (
    BinaryAUROC,
    BinaryAveragePrecision,
    BinaryPrecisionRecallCurve,
    BinaryROC,
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from fakenews_pl import temporaries

REPORT_SPLITS = ("train", "test")
REPORT_FILES = (
    "metrics.json",
    "report.md",
    "classification_report.csv",
    "confusion_matrix_train.png",
    "confusion_matrix_test.png",
    "curves.png",
    "roc_pr_test.png",
)
TABLE_ROWS = ("precision", "recall", "f1-score", "support")


@dataclass
class SplitReport:
    """One split's flat metrics, its sklearn-style table and its confusion-matrix metric."""

    metrics: dict[str, float]
    table: pd.DataFrame
    confusion: MulticlassConfusionMatrix


@torch.no_grad()
def predict_logits(model: nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> tuple:
    """(N,) logits and (N,) labels over `batches`, in eval mode (dropout off)."""
    model.eval()
    device = next(model.parameters()).device
    logits, labels = [], []
    for batch in batches:
        batch = {key: value.to(device) for key, value in batch.items()}
        logits.append(model(batch).float().cpu())
        labels.append(batch["labels"].cpu())
    return torch.cat(logits), torch.cat(labels)


def split_metrics(
    split: str,
    logits: torch.Tensor,
    labels: torch.Tensor,
    class_names: Sequence[str],
    threshold: float = 0.5,
) -> SplitReport:
    """Metrics of one split from (N,) logits and (N,) 0/1 labels, class 1 where
    P(class 1) > `threshold`.

    Keys, with `{s}` the split and `{c}` a class name: `{s}/loss`, `{s}/accuracy`,
    `{s}/auroc`, `{s}/average_precision_{c}` (the area under class c's precision-recall curve,
    threshold-free), `{s}/{precision,recall,f1,support}_{c}`,
    `{s}/{macro,weighted}_{precision,recall,f1}`, `{s}/confusion_{true}_{predicted}`.
    """
    probs, target = torch.sigmoid(logits), labels.long()
    preds = (probs > threshold).long()  # at 0.5, np.rint: exactly 0.5 is class 0
    n = len(class_names)
    # Reports are built on one rank: no cross-process sync on compute().
    per_class = {
        "precision": MulticlassPrecision(n, average=None, sync_on_compute=False),
        "recall": MulticlassRecall(n, average=None, sync_on_compute=False),
        "f1": MulticlassF1Score(n, average=None, sync_on_compute=False),
    }
    values = {name: metric(preds, target) for name, metric in per_class.items()}
    confusion = MulticlassConfusionMatrix(n, sync_on_compute=False)
    matrix = confusion(preds, target)  # (true, predicted)
    support = matrix.sum(dim=1).float()
    accuracy = float(MulticlassAccuracy(n, average="micro", sync_on_compute=False)(preds, target))
    out = {
        f"{split}/loss": float(F.binary_cross_entropy_with_logits(logits, labels.float())),
        f"{split}/accuracy": accuracy,
        f"{split}/auroc": float(BinaryAUROC(sync_on_compute=False)(probs, target)),
    }
    for i, name in enumerate(class_names):  # class 0 ranks rows by 1 - P(class 1)
        scores, positive = (probs, target) if i == 1 else (1 - probs, 1 - target)
        average = BinaryAveragePrecision(sync_on_compute=False)(scores, positive)
        out[f"{split}/average_precision_{name}"] = float(average)
    table = {}
    for i, name in enumerate(class_names):
        for key, value in values.items():
            out[f"{split}/{key}_{name}"] = float(value[i])
        out[f"{split}/support_{name}"] = int(support[i])
        table[name] = [float(values[k][i]) for k in per_class] + [int(support[i])]
    total = float(support.sum())
    for avg, weights in (("macro", torch.ones(n) / n), ("weighted", support / total)):
        for key, value in values.items():
            out[f"{split}/{avg}_{key}"] = float((value * weights).sum())
        table[f"{avg} avg"] = [out[f"{split}/{avg}_{k}"] for k in per_class] + [total]
    for i, true in enumerate(class_names):
        for j, predicted in enumerate(class_names):
            out[f"{split}/confusion_{true}_{predicted}"] = int(matrix[i, j])
    table = pd.DataFrame(table, index=list(TABLE_ROWS))
    # sklearn's output_dict puts accuracy in every row of its column; keep that layout.
    table.insert(n, "accuracy", accuracy)
    return SplitReport(out, table, confusion)


def classification_report(reports: dict[str, SplitReport]) -> pd.DataFrame:
    """The notebook's stacked table: rows (data, index), columns classes + averages."""
    return pd.concat(
        {split.upper(): report.table for split, report in reports.items()},
        names=["data", "index"],
    )


def markdown_table(frame: pd.DataFrame) -> str:
    """A DataFrame as a GitHub-markdown table (support as integers, scores to 4 places)."""

    def cell(row: str, column: str, value: Any) -> str:
        counts = row == "support" and column != "accuracy"
        return str(int(value)) if counts else f"{value:.4f}"

    lines = ["| | " + " | ".join(map(str, frame.columns)) + " |"]
    lines.append("|---" * (len(frame.columns) + 1) + "|")
    for row, values in frame.iterrows():
        cells = (cell(row, column, v) for column, v in values.items())
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mark(fig: Figure, note: str | None) -> None:
    """Print `note` (e.g. that the data is synthetic) across the top of a figure."""
    if note:
        fig.suptitle(note.upper(), color="crimson", fontsize=9, fontweight="bold")


def plot_confusion(
    report: SplitReport, class_names: Sequence[str], title: str, path: Path, note: str | None = None
) -> None:
    """torchmetrics' confusion-matrix plot, true classes as rows, saved to `path`."""
    fig = Figure(figsize=(5, 4.5), layout="constrained")
    ax = fig.subplots()
    report.confusion.plot(ax=ax, labels=list(class_names), cmap="Blues")  # as the notebook
    ax.set_title(title)
    _mark(fig, note)
    fig.savefig(path, dpi=120)


def plot_curves(history: Sequence[dict[str, float]], path: Path, note: str | None = None) -> None:
    """Loss and accuracy per epoch, train vs validation (the notebook's lower two panels)."""
    fig = Figure(figsize=(10, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    epochs = [row["epoch"] for row in history]
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for split, label in (("train", "train"), ("val", "validation")):
            key = f"{split}/{metric}"
            ax.plot(epochs, [row.get(key, math.nan) for row in history], "o-", label=label)
        ax.set_title(f"{metric.capitalize()} vs. epochs")
        ax.set_xlabel("epoch")
        ax.legend()
    if not history:
        fig.text(0.5, 0.5, "no training history recorded", ha="center")
    _mark(fig, note)
    fig.savefig(path, dpi=120)


def plot_operating_point(
    logits: torch.Tensor,
    labels: torch.Tensor,
    class_names: Sequence[str],
    threshold: float,
    path: Path,
    note: str | None = None,
) -> None:
    """ROC and precision-recall curves of each class on one split (torchmetrics), the
    operating point at `threshold` marked on each curve."""
    probs, target = torch.sigmoid(logits.double()).float(), labels.long()
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    roc_ax, pr_ax = fig.subplots(1, 2)
    for i, name in enumerate(class_names):
        scores, positive = (probs, target) if i == 1 else (1 - probs, 1 - target)
        fpr, tpr, _ = BinaryROC(sync_on_compute=False)(scores, positive)
        precision, recall, _ = BinaryPrecisionRecallCurve(sync_on_compute=False)(scores, positive)
        (line,) = roc_ax.plot(fpr, tpr, label=f"{name}")
        pr_ax.plot(recall, precision, color=line.get_color(), label=f"{name}")
        # The operating point: class 1 where P(class 1) > threshold.
        predicted = (probs > threshold).long() if i == 1 else (probs <= threshold).long()
        hits = int((predicted * positive).sum())
        point_recall = hits / max(int(positive.sum()), 1)
        point_precision = hits / max(int(predicted.sum()), 1)
        false_alarms = int((predicted * (1 - positive)).sum()) / max(int((1 - positive).sum()), 1)
        roc_ax.plot([false_alarms], [point_recall], "o", color=line.get_color())
        pr_ax.plot([point_recall], [point_precision], "o", color=line.get_color())
    roc_ax.plot([0, 1], [0, 1], ":", color="gray")
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate (recall)",
               title="ROC, test split")  # fmt: skip
    pr_ax.set(xlabel="recall", ylabel="precision", title="Precision-recall, test split")
    for ax in (roc_ax, pr_ax):
        ax.legend(title=f"class (o: threshold {threshold:.4g})", fontsize=8)
    _mark(fig, note)
    fig.savefig(path, dpi=120)


def history_metrics(history: Sequence[dict[str, float]]) -> dict[str, float]:
    """`fit/epochs`, and `val/best_loss` / `val/best_epoch` (1-based) when validation ran."""
    out: dict[str, float] = {"fit/epochs": len(history)}
    val = [(row["val/loss"], row["epoch"]) for row in history if "val/loss" in row]
    if val:
        best_loss, best_epoch = min(val)
        out.update({"val/best_loss": best_loss, "val/best_epoch": best_epoch})
    return out


def write_report(
    out_dir: str | Path,
    predictions: dict[str, tuple[torch.Tensor, torch.Tensor]],
    class_names: Sequence[str],
    history: Sequence[dict[str, float]],
    info: dict[str, Any],
    note: str | None = None,
    splits: Sequence[str] = REPORT_SPLITS,
    decision: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Write every file of `REPORT_FILES` into `out_dir`; return the metrics.json dict.
    `decision` (`decision.Decision.as_dict()`; None: threshold 0.5) sets the threshold every
    table is computed at; metrics.json keeps it as `decision/threshold`, `decision/target`,
    `decision/chosen_on`.
    `splits`: those whose metrics go into metrics.json (train and test are also reported in
    report.md and plotted; a search trial adds val, what it is judged on).

    `predictions` maps a split to its (logits, labels); `info` is listed at the top of
    report.md (what was trained, which weights are reported); `note` (say, that the inputs
    are synthetic) goes into report.md, metrics.json (`note`) and across every figure.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    decision = decision or {"threshold": 0.5, "target": None, "chosen_on": None}
    threshold = float(decision["threshold"])
    computed = {s: split_metrics(s, *predictions[s], class_names, threshold) for s in splits}
    metrics = {k: v for report in computed.values() for k, v in report.metrics.items()}
    metrics.update(history_metrics(history))
    metrics.update({f"decision/{key}": value for key, value in decision.items()})
    rule = f"{class_names[1]} when P({class_names[1]}) > {threshold:.6g}"
    if decision.get("target"):
        rule += f", chosen for {decision['target']} on {decision['chosen_on']}"
    info = {**info, "decision": rule}
    if note:
        metrics["note"] = note
        info = {"note": note, **info}
    temporaries.write_json(out / "metrics.json", metrics)
    reports = {s: computed[s] for s in REPORT_SPLITS}
    classification_report(reports).to_csv(out / "classification_report.csv")
    lines = ["# Classification report", ""]
    lines += [f"- **{key}**: {value}" for key, value in info.items()]
    for split, report in reports.items():
        lines += ["", f"## {split.upper()}", "", markdown_table(report.table)]
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for split, report in reports.items():
        title = f"Confusion matrix, {split} set"
        plot_confusion(report, class_names, title, out / f"confusion_matrix_{split}.png", note)
    plot_curves(history, out / "curves.png", note)
    roc_pr = out / "roc_pr_test.png"
    plot_operating_point(*predictions["test"], class_names, threshold, roc_pr, note)
    return metrics


SYNTHETIC_BANNER = "SYNTHETIC DEMO DATA: these figures say nothing about news"


def end_of_run(
    metrics: dict[str, Any], class_names: Sequence[str], out_dir: str | Path, weights: str
) -> str:
    """What a run prints when it ends: the banner when its inputs were the synthetic demo
    (metrics.json's `note`), the test accuracy and which weights it describes (`weights`),
    precision/recall/F1 per class as the notebook's report has them, and the run dir."""
    rows = int(sum(metrics.get(f"test/support_{c}", 0) for c in class_names))
    lines = [SYNTHETIC_BANNER] if metrics.get("note") else []
    lines.append(f"test accuracy {metrics['test/accuracy']:.4f} on {rows:,} rows")
    lines.append(f"weights: {weights}")
    threshold = metrics.get("decision/threshold", 0.5)
    if threshold != 0.5 or metrics.get("decision/target"):
        chosen = metrics.get("decision/target")
        how = f" (chosen for {chosen} on {metrics.get('decision/chosen_on')})" if chosen else ""
        lines.append(f"decision: {class_names[1]} when P({class_names[1]}) > {threshold:.4f}{how}")
    lines.append(f"{'class':<12}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}")
    for c in class_names:
        p, r, f = (metrics[f"test/{key}_{c}"] for key in ("precision", "recall", "f1"))
        support = int(metrics[f"test/support_{c}"])
        lines.append(f"{str(c)[:11]:<12}{p:>10.4f}{r:>10.4f}{f:>10.4f}{support:>10,}")
    lines.append(f"run dir: {out_dir}")
    return "\n".join(lines)
