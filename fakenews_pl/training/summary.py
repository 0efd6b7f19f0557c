"""What a sweep produced, side by side: the notebook's comparison of its models, and the pick.

    SWEEP_DIR/summary.csv   one row per run, every column (a program reads it)
    SWEEP_DIR/summary.md    a person reads it: the recommendation in one sentence, a compact
                            table (run, the overrides that differ between runs, the metrics
                            that matter, the best marked), then every column
    SWEEP_DIR/summary.png   test accuracy and F1 of `Fake` per run, each bar labelled with
                            its run's differing overrides, frozen vs fine-tuned by colour

Rows come from each run directory's files: `metrics.json` (train.py's report), `run.json`
(embedding, trainable, wall time, peak RSS, checkpoint), the overrides (`.hydra/overrides.yaml`
or `overrides.yaml`) and `error.txt` for a run that failed: it stays a row, with its error.
`SweepCallback` writes them at the end of every multirun; `scripts/summarize.py SWEEP_DIR`
rebuilds them from the files.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from fakenews_pl import temporaries
from fakenews_pl.errors import UserError
from fakenews_pl.training import tracking

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

SUMMARY_FILES = ("summary.csv", "summary.md", "summary.png")
# A row's {override key: value} (`override_values`): the compact table's and the figure's
# columns come from it; summary.csv has the overrides as one string instead.
SETTINGS = "_settings"
# metrics.json keys of a row, in table order ({c}: each class)
METRICS = (
    "test/accuracy",
    "test/precision_{c}",
    "test/recall_{c}",
    "test/f1_{c}",
    "test/macro_f1",
    "test/auroc",
    "test/average_precision_{c}",
    "decision/threshold",
    "train/accuracy",
    "val/best_loss",
    "fit/epochs",
    "val/best_epoch",
)


def _overrides(run: Path) -> list[str]:
    for path in (run / ".hydra" / "overrides.yaml", run / "overrides.yaml"):
        if path.is_file():
            return [str(o) for o in yaml.safe_load(path.read_text()) or []]
    return []


DELETED = "(deleted)"


def override_values(overrides: list[str]) -> dict[str, str]:
    """{key: value} of command-line overrides: `+key=v` and `key=v` as `v`, `~key` as
    `(deleted)`."""
    values = {}
    for override in overrides:
        key, _, value = override.partition("=")
        if key.startswith("~"):
            values[key[1:]] = DELETED
        else:
            values[key.lstrip("+")] = value
    return values


def varying(settings: list[dict[str, str] | None]) -> list[str]:
    """The override keys whose value differs between runs (absent counts as a value), in the
    order they first appear; runs without recorded overrides (None: never started) are left
    out."""
    known = [values for values in settings if values is not None]
    keys = list(dict.fromkeys(key for values in known for key in values))
    return [key for key in keys if len({values.get(key) for values in known}) > 1]


def _classes(metrics: dict[str, Any]) -> list[str]:
    return sorted(k.removeprefix("test/support_") for k in metrics if k.startswith("test/support_"))


# A row's `status`: what became of the job.
FINISHED, FAILED, NOT_FINISHED = "finished", "failed", "not finished"


class SummaryError(UserError):
    """A summary that cannot be made as asked (e.g. a metric no run has)."""


def _read_json(path: Path) -> tuple[dict[str, Any], str | None]:
    """(content, None), or ({}, why) for a file that is not a whole JSON object."""
    if not path.is_file():
        return {}, None
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return {}, f"{path.name} is not readable JSON ({e}): truncated or damaged"
    if not isinstance(content, dict):
        return {}, f"{path.name} holds {type(content).__name__}, not an object"
    return content, None


def read_run(run: Path, metric: str | None = None) -> dict[str, Any] | None:
    """One row from a run directory; None when it is no job of the sweep (neither a job number
    nor a directory holding a run's files). A job that wrote neither its metrics nor an error
    (killed, or still running) is a row with status `not finished`."""
    files = {name: run / name for name in ("metrics.json", "run.json", "error.txt")}
    has_files = any(path.is_file() for path in files.values())
    if not has_files and not run.name.isdigit():
        return None
    (metrics, bad_metrics), (info, bad_info) = (
        _read_json(files[name]) for name in ("metrics.json", "run.json")
    )
    overrides = _overrides(run)
    row: dict[str, Any] = {
        "run": run.name,
        "status": NOT_FINISHED,
        "overrides": " ".join(overrides),
        SETTINGS: override_values(overrides),
        "embedding": info.get("embedding"),
        "trainable": info.get("trainable"),
        "encoder": info.get("encoder"),
        "baseline": bool(info.get("baseline", False)),  # the TF-IDF model the notebook compared to
    }
    for key in METRICS:
        for c in _classes(metrics) if "{c}" in key else [None]:
            name = key.format(c=c) if c else key
            row[name] = metrics.get(name)
    if metric and metric not in row:  # the metric a sweep picks by, when it is another key
        row[metric] = metrics.get(metric)
    if "state" in info:  # a search trial's: complete, pruned, failed
        row["state"] = info["state"]
    error = None
    if files["error.txt"].is_file():
        lines = files["error.txt"].read_text(errors="replace").strip().splitlines()
        error = lines[0] if lines else "error: (error.txt is empty)"
    elif bad_metrics or bad_info:
        error = f"error: {bad_metrics or bad_info}"
    elif metrics.get("status") == "diverged":
        error = f"error: the run diverged at epoch {metrics.get('diverged_epoch')}"
    if error is not None:
        row["status"] = FAILED
    elif metrics or info.get("state") in ("PRUNED", "COMPLETE"):
        row["status"] = FINISHED
    row.update(
        wall_s=info.get("wall_s"),
        peak_rss_mb=info.get("peak_rss_mb"),
        checkpoint=info.get("checkpoint"),
        error=error,
        note=metrics.get("note"),  # the demo's: its figures say nothing about news
    )
    return row


def expected_jobs(sweep_dir: Path) -> int | None:
    """How many jobs the multirun in `sweep_dir` launches: the product of its sweep overrides'
    value counts (Hydra's basic sweeper), from the `multirun.yaml` Hydra writes; None when that
    cannot be known (no such file, another sweeper, a sweep that is not a list)."""
    path = sweep_dir / "multirun.yaml"
    if not path.is_file():
        return None
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
        hydra = config["hydra"]
        if "basic_sweeper" not in str(hydra.get("sweeper", {}).get("_target_", "")):
            return None
        params = hydra["sweeper"].get("params") or {}
        texts = [f"{name}={value}" for name, value in params.items()]
        texts += [str(o) for o in hydra["overrides"]["task"]]
        sizes = {}  # as the sweeper: a key's last override wins (the command line's)
        for override in OverridesParser.create().parse_overrides(texts):
            sweep = override.is_sweep_override()
            sizes[override.get_key_element()] = (
                len(list(override.sweep_string_iterator())) if sweep else 1
            )
        return math.prod(sizes.values())
    except Exception:  # an unusual sweep: the count is unknown, and the summary says so
        return None


def _sort_key(path: Path) -> tuple[int, str]:
    return (int(path.name), "") if path.name.isdigit() else (sys.maxsize, path.name)


def collect(runs_dir: Path, metric: str | None = None, expected: int | None = None) -> pd.DataFrame:
    """A row per run directory directly below `runs_dir`, in job order (with `metric`'s
    column when it is not among the usual ones); with `expected` jobs, a `not finished` row
    for each job number that has no directory (never started)."""
    import pandas as pd  # pandas and matplotlib: only a sweep's end pays for them

    runs = sorted((run for run in runs_dir.iterdir() if run.is_dir()), key=_sort_key)
    rows = [row for row in (read_run(run, metric) for run in runs) if row is not None]
    seen = {row["run"] for row in rows}
    for number in range(expected or 0):
        if str(number) not in seen:
            rows.append({"run": str(number), "status": NOT_FINISHED, "error": None, SETTINGS: None})
    rows.sort(key=lambda row: _sort_key(Path(row["run"])))
    return pd.DataFrame(rows)


# Metrics whose best is the highest (and losses the lowest); for any other key (a count of
# errors, epochs) a summary must be told which (`mode`): guessing "highest" recommended the
# run with the most false alarms.
HIGHER_IS_BETTER = ("accuracy", "precision", "recall", "f1", "auroc", "average_precision")


def default_mode(metric: str) -> str:
    """min for a loss, max for a score; a `SummaryError` asking for the mode otherwise."""
    name = metric.rsplit("/", 1)[-1]
    if "loss" in name:
        return "min"
    if any(name == key or name.startswith(f"{key}_") or name.endswith(f"_{key}")
           for key in HIGHER_IS_BETTER):  # fmt: skip
        return "max"
    raise SummaryError(
        f"--metric {metric}: is its best the lowest or the highest? say so with --mode min or "
        "--mode max (search.direction in a search)"
    )


def check_metric(frame: pd.DataFrame, metric: str, runs_dir: Path) -> None:
    """Refuse a `metric` that no finished run's metrics.json has, naming the keys they have,
    or one that is not a number."""
    finished = frame[frame["status"] == FINISHED] if "status" in frame else frame.iloc[:0]
    if metric in frame and finished[metric].notna().any():
        values = finished[metric].dropna()
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            raise SummaryError(f"--metric {metric}: not a number in metrics.json")
        return
    if finished.empty:
        return
    keys: set[str] = set()
    for run in finished["run"]:
        metrics, _ = _read_json(runs_dir / str(run) / "metrics.json")
        keys |= {k for k, v in metrics.items() if isinstance(v, int | float)}
    if not keys:  # no finished run wrote metrics.json (search trials may not): nothing to say
        return
    raise SummaryError(
        f"--metric {metric}: no finished run's metrics.json has it; expected one of "
        f"{', '.join(sorted(keys)) or '(none)'}"
    )


def counts(frame: pd.DataFrame) -> str:
    """`N runs: F finished, X failed, U not finished` for a summary's frame."""
    import pandas as pd  # pandas and matplotlib: only a sweep's end pays for them

    status = frame["status"] if "status" in frame else pd.Series(dtype=object)
    parts = [f"{int((status == s).sum())} {s}" for s in (FINISHED, FAILED, NOT_FINISHED)]
    return f"{len(frame)} runs: {', '.join(parts)}"


def mark_best(frame: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    """Add `best` (True on the run with the best `metric`; none if no run has it)."""
    import pandas as pd  # pandas and matplotlib: only a sweep's end pays for them

    if mode not in ("min", "max", None):
        raise ValueError(f"mode must be min, max or None (no best), got {mode!r}")
    frame = frame.copy()
    frame["best"] = False
    if mode is None:
        return frame
    if metric in frame and frame[metric].notna().any():
        values = pd.to_numeric(frame[metric], errors="coerce")
        frame.loc[values.idxmin() if mode == "min" else values.idxmax(), "best"] = True
    return frame


def fake_class(frame: pd.DataFrame) -> str | None:
    """The class whose recall the notebook cares about: `Fake` where the data names it so,
    else the first class (label 0)."""
    classes = [c.removeprefix("test/f1_") for c in frame.columns if c.startswith("test/f1_")]
    return "Fake" if "Fake" in classes else (classes[0] if classes else None)


def _settings(frame: pd.DataFrame) -> list[dict[str, str] | None]:
    if SETTINGS not in frame:
        return [None] * len(frame)
    return [v if isinstance(v, dict) else None for v in frame[SETTINGS]]


def _cell(value: Any) -> str:
    if isinstance(value, float) and not math.isnan(value):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).replace("|", "\\|")


def _table(columns: list[str], rows: list[list[str]], bold: list[bool]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    for cells, strong in zip(rows, bold, strict=True):
        cells = [f"**{cell}**" if strong and cell else cell for cell in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def compact_columns(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """(heading, column) of the metrics the compact table shows, where the frame has them."""
    fake = fake_class(frame)
    wanted = [
        ("test accuracy", "test/accuracy"),
        (f"F1 {fake}", f"test/f1_{fake}"),
        (f"recall {fake}", f"test/recall_{fake}"),
        (f"precision {fake}", f"test/precision_{fake}"),
        ("threshold", "decision/threshold"),
        ("macro F1", "test/macro_f1"),
        ("epochs", "fit/epochs"),
        ("wall s", "wall_s"),
    ]
    return [(h, c) for h, c in wanted if c in frame and frame[c].notna().any()]


SEED = "seed"
# The rule `over_seeds` states: another model is within noise of the best when, over the seeds
# both ran, the mean of their per-seed differences is within this many standard errors of 0.
NOISE_SE = 2.0


def over_seeds(frame: pd.DataFrame, metric: str, mode: str | None) -> pd.DataFrame | None:
    """Per model (runs with the same differing overrides but `seed`), over its finished seeds:
    n, mean and standard deviation (ddof 1) of `metric` and of the compact table's metrics;
    `best` (by mean `metric`), and `within_noise` of the best: paired over the seeds both
    ran, |mean difference| <= `NOISE_SE` standard errors of the differences (None with fewer
    than two shared seeds). The baseline first. None when the sweep does not vary the seed."""
    import numpy as np
    import pandas as pd

    settings = _settings(frame)
    keys = varying(settings)
    if SEED not in keys or metric not in frame:
        return None
    others = [k for k in keys if k != SEED]
    columns = [metric, *dict.fromkeys(c for _, c in compact_columns(frame) if c != "wall_s")]
    groups: dict[tuple, dict[str, Any]] = {}
    for (_, row), values in zip(frame.iterrows(), settings, strict=True):
        if values is None or row.get("status") != FINISHED or not _number(row.get(metric)):
            continue
        key = tuple(values.get(k, "(default)") for k in others)
        group = groups.setdefault(key, {"rows": [], "baseline": False})
        group["rows"].append(row)
        group["baseline"] |= bool(row.get("baseline"))
    records = []
    for key, group in groups.items():
        rows = group["rows"]
        record = {
            "model": ", ".join(f"{k}={v}" for k, v in zip(others, key, strict=True)) or "(all)",
            "baseline": group["baseline"],
            "trainable": rows[0].get("trainable"),
            "seeds": len(rows),
            "_by_seed": {str(r[SETTINGS].get(SEED)): float(r[metric]) for r in rows},
        }
        for column in columns:
            values = pd.to_numeric(pd.Series([r.get(column) for r in rows]), errors="coerce")
            record[f"{column} mean"] = float(values.mean())
            record[f"{column} std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
        records.append(record)
    if not records:
        return None
    table = pd.DataFrame(records)
    means = table[f"{metric} mean"]
    table["best"] = False
    if mode is None:  # no direction: no best, nothing within noise of it
        table["within_noise"] = None
        return table.drop(columns="_by_seed")
    best = int(means.idxmin() if mode == "min" else means.idxmax())
    table.loc[best, "best"] = True
    within = []
    for i, record in enumerate(records):
        shared = sorted(set(record["_by_seed"]) & set(records[best]["_by_seed"]))
        if i == best or len(shared) < 2:
            within.append(None if i != best else True)
            continue
        d = np.array([record["_by_seed"][s] - records[best]["_by_seed"][s] for s in shared])
        standard_error = d.std(ddof=1) / math.sqrt(len(d))
        within.append(bool(abs(d.mean()) <= NOISE_SE * standard_error))
    table["within_noise"] = within
    order = sorted(range(len(table)), key=lambda i: (not table.loc[i, "baseline"], i))
    return table.drop(columns="_by_seed").iloc[order].reset_index(drop=True)


def _spread(mean: float, std: float, places: int = 4) -> str:
    if math.isnan(mean):
        return ""
    return f"{mean:.{places}f}" if math.isnan(std) else f"{mean:.{places}f} ± {std:.{places}f}"


def seed_lines(table: pd.DataFrame, frame: pd.DataFrame, metric: str, mode: str) -> list[str]:
    """summary.md's part for a sweep over seeds: the recommendation in one sentence and a row
    per model (the baseline first) with each metric's mean ± standard deviation."""
    if not table["best"].any():
        return [f"## Per model (no best: `{metric}` has no direction; pass --mode)", ""]
    best = table[table["best"]].iloc[0]
    near = [m for m, w, b in zip(table["model"], table["within_noise"], table["best"], strict=True)
            if w and not b]  # fmt: skip
    seeds = int(table["seeds"].max())
    lines = [
        f"Recommended: `{best['model']}`, the {'lowest' if mode == 'min' else 'highest'} mean "
        f"`{metric}` over its {int(best['seeds'])} seeds "
        f"({_spread(best[f'{metric} mean'], best[f'{metric} std'])}); "
        + (
            f"within noise of it: {', '.join(f'`{m}`' for m in near)}."
            if near
            else "no other model is within noise of it."
        ),
        "",
        f"Within noise: over the seeds both ran, the mean of the per-seed differences in "
        f"`{metric}` is within {NOISE_SE:g} standard errors of zero (a paired comparison; "
        "needs 2 shared seeds).",
        "",
        f"## Per model, over up to {seeds} seeds (mean ± standard deviation)",
        "",
    ]
    headings = [(metric, metric)] + [(h, c) for h, c in compact_columns(frame)
                                     if c not in ("wall_s", metric)]  # fmt: skip
    rows, bold = [], []
    for _, record in table.iterrows():
        mark = "best" if record["best"] else "within noise" if record["within_noise"] else ""
        cells = [record["model"] + (" (baseline)" if record["baseline"] else ""),
                 str(int(record["seeds"]))]  # fmt: skip
        cells += [_spread(record[f"{c} mean"], record[f"{c} std"], 1 if c == "fit/epochs" else 4)
                  for _, c in headings]  # fmt: skip
        rows.append(cells + [mark])
        bold.append(bool(record["best"]))
    columns = ["model", "seeds", *(f"`{h}`" if h == metric else h for h, _ in headings), ""]
    return lines + _table(columns, rows, bold)


def recommendation(frame: pd.DataFrame, metric: str, mode: str) -> str | None:
    """The pick in one sentence: the best run by `metric`, its differing overrides and its
    test figures; None when no run has the metric."""
    best = frame[frame["best"]] if "best" in frame else frame.iloc[:0]
    if best.empty:
        return None
    row = best.iloc[0]
    keys = varying(_settings(frame))
    settings = row.get(SETTINGS) if isinstance(row.get(SETTINGS), dict) else {}
    what = ", ".join(f"`{k}={settings.get(k, '(default)')}`" for k in keys)
    finished = int((frame["status"] == FINISHED).sum()) if "status" in frame else len(frame)
    fake = fake_class(frame)
    tested = [f"accuracy {row['test/accuracy']:.4f}"] if _number(row.get("test/accuracy")) else []
    if fake and _number(row.get(f"test/recall_{fake}")):
        tested.append(f"recall of {fake} {row[f'test/recall_{fake}']:.4f}")
    sentence = (
        f"Recommended: run {row['run']}{f' ({what})' if what else ''}, the "
        f"{'lowest' if mode == 'min' else 'highest'} `{metric}` of the {finished} finished runs "
        f"({row[metric]:.4f})"
    )
    return sentence + (f"; on the test set, {' and '.join(tested)}." if tested else ".")


def _seconds(value: Any) -> str:
    return f"{value:.1f}" if _number(value) else ""


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not (isinstance(value, float) and math.isnan(value))


def _markdown(frame: pd.DataFrame, metric: str, mode: str, expected: int | None = None) -> str:
    from fakenews_pl.training.reports import SYNTHETIC_BANNER

    expected_note = "" if expected is None else f" (the sweep has {expected} jobs)"
    lines = ["# Sweep summary", ""]
    if "note" in frame and frame["note"].notna().any():
        lines += [f"**{SYNTHETIC_BANNER}**", ""]
    table = over_seeds(frame, metric, mode)
    if table is not None:
        lines += seed_lines(table, frame, metric, mode) + ["", "## Every run", ""]
    else:
        pick = recommendation(frame, metric, mode)
        lines += [pick, ""] if pick else []
    lines += [f"{counts(frame)}{expected_note}; best by `{metric}` ({mode}) marked **best**.", ""]
    # The compact table: what differs between runs, and what matters of their results.
    keys = varying(_settings(frame))
    metrics = compact_columns(frame)
    rows, bold = [], []
    for (_, row), settings in zip(frame.iterrows(), _settings(frame), strict=True):
        status = row.get("status")
        mark = "best" if row.get("best") else "" if status == FINISHED else str(status)
        mark = "baseline" + (f", {mark}" if mark else "") if row.get("baseline") else mark
        cells = [str(row["run"])]
        cells += [_cell((settings or {}).get(k, "" if settings is None else "(default)"))
                  for k in keys]  # fmt: skip
        cells += [_cell(row.get(column)) if column != "wall_s" else _seconds(row.get(column))
                  for _, column in metrics] + [mark]  # fmt: skip
        rows.append(cells)
        bold.append(bool(row.get("best")))
    columns = ["run", *(f"`{k}`" for k in keys), *(heading for heading, _ in metrics), ""]
    lines += _table(columns, rows, bold)
    # Every column, as summary.csv has them.
    lines += ["", "## Every column", ""]
    columns = [c for c in frame.columns if c not in ("checkpoint", SETTINGS)]
    full = [[_cell(row[c]) for c in columns] for _, row in frame.iterrows()]
    lines += _table(columns, full, [bool(row.get("best")) for _, row in frame.iterrows()])
    best = frame[frame["best"]] if "best" in frame else frame.iloc[:0]
    if len(best) and best.iloc[0].get("checkpoint"):
        lines += ["", f"Best run's checkpoint: `{best.iloc[0]['checkpoint']}`"]
    return "\n".join(lines) + "\n"


def _short_setting(setting: str) -> str:
    """`model.hidden_sizes=[128,32]` as a bar label line: the key's last part, a path's last
    part, at most 24 characters of value."""
    key, _, value = setting.partition("=")
    value = value.rstrip("/").rsplit("/", 1)[-1] if "/" in value else value
    value = value if len(value) <= 24 else value[:23] + "~"
    return f"{key.rsplit('.', 1)[-1]}={value}" if value else key


def bar_labels(frame: pd.DataFrame) -> list[str]:
    """Each run's bar label: its number, then its differing overrides, one per line (the
    last part of a dotted key where that part is unique; a path's last part; at most 24
    characters each). Without differing overrides, the embedding and how it was trained."""
    settings = _settings(frame)
    keys = varying(settings)
    tails = [k.rsplit(".", 1)[-1] for k in keys]
    short = {k: t if tails.count(t) == 1 else k for k, t in zip(keys, tails, strict=True)}

    def shown(value: str) -> str:
        value = value.rstrip("/").rsplit("/", 1)[-1] if "/" in value else value
        return value if len(value) <= 24 else value[:23] + "~"

    labels = []
    for (_, row), values in zip(frame.iterrows(), settings, strict=True):
        if keys and values is not None:
            lines = [f"{short[k]}={shown(values.get(k, '(default)'))}" for k in keys]
        elif keys:
            lines = ["(not started)"]
        else:
            trained = row.get("trainable")
            how = "" if not isinstance(trained, bool) else "fine-tuned" if trained else "frozen"
            lines = [" ".join(str(v) for v in (row.get("embedding") or "", how) if v)]
        labels.append("\n".join([f"run {row['run']}", *lines]))
    return labels


def summary_figure(frame: pd.DataFrame, metric: str, mode: str | None = None) -> Figure:
    """Test accuracy and F1 of `Fake` per run, labelled by `bar_labels`, frozen vs fine-tuned
    by colour (a legend entry for each kind present), the best run by `metric` outlined, and
    the synthetic banner when the demo was used."""
    import pandas as pd
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from fakenews_pl.training.reports import SYNTHETIC_BANNER

    fake = fake_class(frame)
    if mode is None:
        try:
            mode = default_mode(metric)
        except SummaryError:
            mode = None
    seeds = over_seeds(frame, metric, mode)
    if seeds is not None:  # a bar per model: the mean over its seeds, the std as error bar
        frame = seeds.rename(columns=lambda c: c.removesuffix(" mean"))
        parts = zip(frame["model"], frame["seeds"], frame["baseline"], strict=True)
        labels = [
            "\n".join(_short_setting(part) for part in model.split(", "))
            + f"\n({int(n)} seeds)"
            + ("\nbaseline" if baseline else "")
            for model, n, baseline in parts
        ]
    else:
        labels = bar_labels(frame)
    lines = max((label.count("\n") + 1 for label in labels), default=1)
    fig = Figure(figsize=(max(6, 1.9 * len(frame) + 1.5), 5 + 0.15 * lines), layout="constrained")
    axes = fig.subplots(2, 1, sharex=True)
    kinds = {True: ("tab:orange", "fine-tuned"), False: ("tab:blue", "frozen")}
    trained = [
        t if isinstance(t, bool) else None for t in frame.get("trainable", [None] * len(frame))
    ]
    colors = [kinds[t][0] if t is not None else "tab:gray" for t in trained]
    baseline = [bool(b) for b in frame.get("baseline", [False] * len(frame))]
    colors = ["tab:gray" if b else c for b, c in zip(baseline, colors, strict=True)]
    best = frame["best"].tolist() if "best" in frame else [False] * len(frame)
    for ax, key, title in (
        (axes[0], "test/accuracy", "Test accuracy"),
        (axes[1], f"test/f1_{fake}", f"Test F1 of {fake}"),
    ):
        values = pd.to_numeric(frame[key], errors="coerce").fillna(0) if key in frame else None
        if values is None:
            ax.set_axis_off()
            continue
        spread = None
        if seeds is not None and f"{key} std" in frame:
            spread = pd.to_numeric(frame[f"{key} std"], errors="coerce").fillna(0)
        bars = ax.bar(range(len(frame)), values, color=colors, yerr=spread, capsize=3)
        for bar, is_best in zip(bars, best, strict=True):
            if is_best:
                bar.set_edgecolor("black")
                bar.set_linewidth(2)
        texts = [f"{v:.4f}" for v in values]
        if spread is not None:
            texts = [f"{t} ± {s:.4f}" if s else t for t, s in zip(texts, spread, strict=True)]
        ax.bar_label(bars, texts, fontsize=7, padding=2)
        ax.set_xticks(range(len(frame)), labels, fontsize=7)
        ax.set_title(title, fontsize=10)
        ax.set_ylim(0, 1.1)
        ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    present = [t for b, t in zip(baseline, trained, strict=True) if not b]
    handles = [Patch(color=kinds[t][0], label=kinds[t][1]) for t in (False, True) if t in present]
    if any(baseline):
        handles.insert(0, Patch(color="tab:gray", label="baseline (TF-IDF)"))
    if any(best):
        what = f"best mean {metric}" if seeds is not None else f"best by {metric}"
        handles.append(Patch(facecolor="white", edgecolor="black", linewidth=2, label=what))
    if handles:
        fig.legend(handles=handles, loc="outside upper right", fontsize=8)
    if "note" in frame and frame["note"].notna().any():
        fig.suptitle(SYNTHETIC_BANNER, color="tab:red", fontsize=10, fontweight="bold")
    return fig


def write_summary(
    sweep_dir: str | Path,
    runs_dir: str | Path | None = None,
    metric: str = "val/best_loss",
    mode: str | None = None,
    strict: bool = True,
) -> str:
    """Write `SUMMARY_FILES` into `sweep_dir` from the runs below `runs_dir` (default: the
    sweep dir itself); the best run by `metric` (`mode` min for losses, else max) marked; each
    file written atomically. Returns the counts line (`counts`). A `metric` that no finished
    run has is a `SummaryError` (`strict=False`: no run is marked best)."""
    import pandas as pd  # pandas and matplotlib: only a sweep's end pays for them

    sweep_dir = Path(sweep_dir)
    runs_dir = Path(runs_dir) if runs_dir else sweep_dir
    expected = expected_jobs(sweep_dir)
    frame = collect(runs_dir, metric, expected)
    if frame.empty:
        frame = pd.DataFrame(columns=["run", "status", "overrides", "error"])
    if strict:
        check_metric(frame, metric, runs_dir)  # a metric the runs have, before its direction
    try:
        mode = mode or default_mode(metric)
    except SummaryError:
        if strict:
            raise
        mode = None  # the sweep's metric says no direction: no run is marked best
    frame = mark_best(frame, metric, mode)
    with temporaries.atomic_path(sweep_dir / "summary.csv") as tmp:
        frame.drop(columns=[SETTINGS], errors="ignore").to_csv(tmp, index=False)
    with temporaries.atomic_file(sweep_dir / "summary.md", "w", encoding="utf-8") as f:
        f.write(_markdown(frame, metric, mode, expected))
    with temporaries.atomic_path(sweep_dir / "summary.png") as tmp:
        # tmp is a temporary name: the format cannot come from it
        summary_figure(frame, metric, mode).savefig(tmp, dpi=110, format="png")
    return counts(frame)


def sweep_choices(config: DictConfig, key: str) -> list[str]:
    """Every value a multirun gives `key` (`key=a,b` on the command line or in
    `hydra.sweeper.params`), as strings; empty when it is not swept."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = config.hydra.get("sweeper", {}).get("params") or {}
    texts = [f"{name}={value}" for name, value in params.items()]
    texts += [str(o) for o in config.hydra.overrides.task]
    values: list[str] = []
    for override in OverridesParser.create().parse_overrides(texts):
        if override.get_key_element() == key:  # the last one wins, as in the sweeper
            if override.is_sweep_override():
                values = [str(v) for v in override.sweep_string_iterator()]
            else:
                values = [str(override.value())]
    return values


def missing_embeddings(config: DictConfig) -> list[tuple[str, Path]]:
    """(name, directory) of each TF-Hub embedding a sweep names that is not converted yet."""
    from fakenews_pl.hub.artifact import META_FILE
    from fakenews_pl.hub.convert import HUB_MODULES

    root = Path(config.paths.embeddings_dir)
    names = sweep_choices(config, "embedding")
    # A grid cell (conf/cell/<embedding>_frozen|_finetune) names its embedding first.
    names += [cell.split("_")[0] for cell in sweep_choices(config, "cell")]
    return [
        (n, root / n)
        for n in dict.fromkeys(names)
        if n in HUB_MODULES and not (root / n / META_FILE).is_file()
    ]


class SweepCallback(Callback):
    """Hydra callback (conf/hydra/default.yaml): before a multirun, every embedding it names
    must be converted (one line naming each missing one and its command, exit status 2, no
    run started); after it, the summary files. With `logger=mlflow`, the multirun is an
    MLflow parent run, its jobs children, and the summary files its artifacts (`tracking`)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Refuse a sweep over embeddings that are not converted, before any training."""
        missing = missing_embeddings(config)
        if missing:
            commands = "; ".join(f"python scripts/convert_tfhub.py {n} {p}" for n, p in missing)
            names = ", ".join(n for n, _ in missing)
            print(
                f"error: the sweep needs embeddings that are not converted ({names}): {commands} "
                f"(or all four: python scripts/convert_tfhub.py all {missing[0][1].parent})",
                file=sys.stderr,
            )
            sys.exit(2)
        tracking.start_multirun(config)  # with logger=mlflow: the sweep's parent run

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Summarise the sweep directory by the metric the sweep optimizes."""
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        metric = config.get("optimized_metric") or "val/best_loss"
        try:
            line = write_summary(sweep_dir, metric=metric)
        except SummaryError as e:  # the runs are done: summarise them, best unmarked
            print(f"error: optimized_metric={metric}: {e}", file=sys.stderr, flush=True)
            line = write_summary(sweep_dir, metric=metric, strict=False)
        print(f"Sweep summary written to {sweep_dir} ({line}): {', '.join(SUMMARY_FILES)}")
        tracking.end_sweep(sweep_dir)  # the summary, to the sweep's MLflow run
