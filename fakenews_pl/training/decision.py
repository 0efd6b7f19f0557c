"""The decision rule: class 1 when P(class 1) > threshold, the threshold fixed or chosen.

`decision.threshold` (default 0.5: the notebook's `np.rint(prob)`) fixes it;
`decision.target="recall_Fake>=0.90"` (or `precision_<class>>=x`) chooses it on the validation
split, never the test split: among the thresholds that meet the target there, the one that
does best on the other half of the pair (a recall target: the highest precision of that class,
i.e. the fewest false alarms; a precision target: the highest recall), ties to the threshold
nearest 0.5. Candidates are 0 and the distinct validation probabilities of class 1, so a
chosen threshold is one of those (rows with exactly that probability go to class 0).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from fakenews_pl.errors import ConfigError, UserError

TARGET = re.compile(r"^(recall|precision)_(.+)>=([0-9.]+)$")
DEFAULT_THRESHOLD = 0.5


@dataclasses.dataclass(frozen=True)
class Target:
    """`recall_Fake>=0.90`: the metric, the class it is of, and the least value it may take."""

    metric: str
    class_name: str
    value: float

    def __str__(self) -> str:
        return f"{self.metric}_{self.class_name}>={self.value:g}"


@dataclasses.dataclass(frozen=True)
class Decision:
    """A threshold and how it came to be (what metrics.json, checkpoints and bundles keep)."""

    threshold: float = DEFAULT_THRESHOLD
    target: str | None = None
    chosen_on: str | None = None  # "val", or the warning that val was the test split

    def as_dict(self) -> dict[str, Any]:
        """`{"threshold", "target", "chosen_on"}`: the form files keep."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, value: dict[str, Any] | None) -> Decision:
        """The decision a file recorded; the default (0.5) when it recorded none."""
        if not value:
            return cls()
        return cls(float(value["threshold"]), value.get("target"), value.get("chosen_on"))


class TargetUnreachable(UserError):
    """No threshold meets the target on the validation split."""


def parse_target(text: str, class_names: Sequence[str]) -> Target:
    """`recall_Fake>=0.90` -> Target; a ConfigError naming `decision.target` otherwise."""
    match = TARGET.match(str(text).replace(" ", ""))
    expected = (
        f"recall_<class>>=x or precision_<class>>=x, a class of {list(class_names)} and x in "
        "(0, 1], e.g. recall_Fake>=0.90"
    )
    if not match:
        raise ConfigError(f"decision.target={text!r}: expected {expected}")
    metric, name, value = match.group(1), match.group(2), float(match.group(3))
    if name not in [str(c) for c in class_names] or not 0 < value <= 1:
        raise ConfigError(f"decision.target={text!r}: expected {expected}")
    return Target(metric, name, value)


def check_config(decision: Any, recorded_default: bool = False) -> None:
    """`decision.threshold` in [0, 1) and `decision.target` of the right form (its class is
    checked once the data's classes are known, `parse_target`), not both set.
    `recorded_default`: threshold null is allowed (evaluate.py: the checkpoint's own)."""
    threshold, target = decision.get("threshold"), decision.get("target")
    number = isinstance(threshold, int | float) and not isinstance(threshold, bool)
    if threshold is None and recorded_default:
        number, threshold = True, DEFAULT_THRESHOLD
    if not number or not 0 <= threshold < 1:
        raise ConfigError(f"decision.threshold={threshold!r}: expected a number in [0, 1)")
    if target is None:
        return
    match = TARGET.match(str(target).replace(" ", ""))
    if not match or not 0 < float(match.group(3)) <= 1:
        raise ConfigError(
            f"decision.target={target!r}: expected recall_<class>>=x or precision_<class>>=x "
            "with x in (0, 1], e.g. recall_Fake>=0.90"
        )
    if threshold != DEFAULT_THRESHOLD:
        raise ConfigError(
            f"decision.threshold={threshold} and decision.target={target!r}: give one (a "
            "target chooses the threshold on the validation split)"
        )


def rates(probabilities: np.ndarray, labels: np.ndarray, thresholds: np.ndarray) -> dict:
    """Per threshold t (class 1 when p > t): precision and recall of class 0 and class 1.
    (N,) probabilities of class 1, (N,) 0/1 labels, (T,) thresholds -> {name: (T,) array}."""
    p = np.sort(probabilities[labels == 1])
    q = np.sort(probabilities[labels == 0])
    # rows at or below t: predicted class 0
    ones_below = np.searchsorted(p, thresholds, side="right")  # class-1 rows predicted 0
    zeros_below = np.searchsorted(q, thresholds, side="right")  # class-0 rows predicted 0
    tp1, fp1 = len(p) - ones_below, len(q) - zeros_below
    tp0, fp0 = zeros_below, ones_below

    def ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.divide(a, b, out=np.zeros(len(thresholds)), where=b > 0)

    ones, zeros = np.full(len(thresholds), len(p)), np.full(len(thresholds), len(q))
    return {
        "precision_1": ratio(tp1, tp1 + fp1), "recall_1": ratio(tp1, ones),
        "precision_0": ratio(tp0, tp0 + fp0), "recall_0": ratio(tp0, zeros),
    }  # fmt: skip


def choose(
    probabilities: np.ndarray, labels: np.ndarray, target: Target, class_names: Sequence[str]
) -> float:
    """The threshold that meets `target` on these (validation) rows and does best on the other
    half of the pair; `TargetUnreachable` when none meets it."""
    index = [str(c) for c in class_names].index(target.class_name)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    candidates = np.unique(np.concatenate([[0.0], probabilities]))
    candidates = candidates[candidates < 1.0]
    table = rates(probabilities, np.asarray(labels).astype(int), candidates)
    met = table[f"{target.metric}_{index}"] >= target.value - 1e-12
    if not met.any():
        best = table[f"{target.metric}_{index}"].max()
        raise TargetUnreachable(
            f"decision.target={target}: no threshold reaches it on the validation split (at "
            f"most {best:.4f}); lower the target, or evaluate this checkpoint with another "
            "(python evaluate.py ckpt_path=... decision.target=...)"
        )
    other = "precision" if target.metric == "recall" else "recall"
    score = np.where(met, table[f"{other}_{index}"], -math.inf)
    best = np.flatnonzero(score == score.max())
    return float(candidates[best[np.argmin(np.abs(candidates[best] - DEFAULT_THRESHOLD))]])


def decide(
    decision: Any,
    val: tuple[np.ndarray, np.ndarray] | None,
    class_names: Sequence[str],
    val_is_test: bool,
) -> Decision:
    """The run's Decision from its `decision` config: the fixed threshold, or the one
    `choose` finds on `val` ((N,) probabilities of class 1, (N,) labels)."""
    target = decision.get("target") if decision is not None else None
    if target is None:
        given = None if decision is None else decision.get("threshold")
        return Decision(DEFAULT_THRESHOLD if given is None else float(given))
    parsed = parse_target(target, class_names)
    if val is None:
        raise ConfigError(f"decision.target={target!r}: needs a validation split to choose on")
    threshold = choose(val[0], val[1], parsed, class_names)
    chosen_on = (
        "val, which is the test split here (data.val_source=test, as the notebook): the "
        "threshold saw the test rows"
        if val_is_test
        else "val"
    )
    return Decision(threshold, str(parsed), chosen_on)
