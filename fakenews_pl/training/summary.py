"""What a sweep produced, side by side: the notebook's comparison of its models, and the pick.

    SWEEP_DIR/summary.csv   one row per run (a program reads it)
    SWEEP_DIR/summary.md    the same table, the best run marked (a person reads it)
    SWEEP_DIR/summary.png   test accuracy and F1 of the first class per run, frozen vs
                            fine-tuned per embedding

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

if TYPE_CHECKING:
    import pandas as pd

SUMMARY_FILES = ("summary.csv", "summary.md", "summary.png")
# metrics.json keys of a row, in table order ({c}: each class)
METRICS = (
    "test/accuracy",
    "test/precision_{c}",
    "test/recall_{c}",
    "test/f1_{c}",
    "test/macro_f1",
    "test/auroc",
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
    row: dict[str, Any] = {
        "run": run.name,
        "status": NOT_FINISHED,
        "overrides": " ".join(_overrides(run)),
        "embedding": info.get("embedding"),
        "trainable": info.get("trainable"),
        "encoder": info.get("encoder"),
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
        texts = [str(o) for o in hydra["overrides"]["task"]]
        params = hydra["sweeper"].get("params") or {}
        texts += [f"{name}={value}" for name, value in params.items()]
        count = 1
        for override in OverridesParser.create().parse_overrides(texts):
            if override.is_sweep_override():
                count *= len(list(override.sweep_string_iterator()))
        return count
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
            rows.append({"run": str(number), "status": NOT_FINISHED, "error": None})
    rows.sort(key=lambda row: _sort_key(Path(row["run"])))
    return pd.DataFrame(rows)


def check_metric(frame: pd.DataFrame, metric: str, runs_dir: Path) -> None:
    """Refuse a `metric` that no finished run's metrics.json has, naming the keys they have."""
    finished = frame[frame["status"] == FINISHED] if "status" in frame else frame.iloc[:0]
    if finished.empty or (metric in frame and finished[metric].notna().any()):
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

    if mode not in ("min", "max"):
        raise ValueError(f"mode must be min or max, got {mode!r}")
    frame = frame.copy()
    frame["best"] = False
    if metric in frame and frame[metric].notna().any():
        values = pd.to_numeric(frame[metric], errors="coerce")
        frame.loc[values.idxmin() if mode == "min" else values.idxmax(), "best"] = True
    return frame


def _markdown(frame: pd.DataFrame, metric: str, mode: str, expected: int | None = None) -> str:
    expected_note = "" if expected is None else f" (the sweep has {expected} jobs)"
    lines = [
        "# Sweep summary",
        "",
        f"{counts(frame)}{expected_note}; best by `{metric}` ({mode}) marked **best**.",
        "",
    ]
    columns = [c for c in frame.columns if c not in ("checkpoint",)]
    lines.append("| " + " | ".join(columns) + " |")
    lines.append("| " + " | ".join("---" for _ in columns) + " |")
    for _, row in frame.iterrows():
        cells = []
        for column in columns:
            value = row[column]
            if isinstance(value, float) and not math.isnan(value):
                value = f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
            elif value is None or (isinstance(value, float) and math.isnan(value)):
                value = ""
            cells.append(str(value).replace("|", "\\|"))
        if row.get("best"):
            cells = [f"**{cell}**" if cell else cell for cell in cells]
        lines.append("| " + " | ".join(cells) + " |")
    best = frame[frame["best"]] if "best" in frame else frame.iloc[:0]
    if len(best) and best.iloc[0].get("checkpoint"):
        lines += ["", f"Best run's checkpoint: `{best.iloc[0]['checkpoint']}`"]
    return "\n".join(lines) + "\n"


def _plot(frame: pd.DataFrame, path: Path) -> None:
    """Test accuracy and F1 of the first class per run, frozen vs fine-tuned per embedding."""
    import pandas as pd
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    f1 = next((c for c in frame.columns if c.startswith("test/f1_")), None)
    fig = Figure(figsize=(max(6, 1.2 * len(frame) + 3), 4), layout="constrained")
    axes = fig.subplots(1, 2)
    labels = [
        f"{row['run']}: {row.get('embedding') or ''}\n"
        + ("" if row.get("trainable") is None else "fine-tuned" if row["trainable"] else "frozen")
        + (f"\n{row['encoder']}" if row.get("encoder") not in (None, "bag") else "")
        for _, row in frame.iterrows()
    ]  # the run's number ties a bar to its row in summary.md
    for ax, key, title in ((axes[0], "test/accuracy", "Test accuracy"), (axes[1], f1, "")):
        if key is None or key not in frame:
            continue
        values = pd.to_numeric(frame[key], errors="coerce").fillna(0)
        colors = ["tab:orange" if t else "tab:blue" for t in frame.get("trainable", [])]
        ax.bar(range(len(frame)), values, color=colors or None)
        ax.set_xticks(range(len(frame)), labels, fontsize=7)
        ax.set_title(title or f"Test F1, {key.removeprefix('test/f1_')}")
        ax.set_ylim(0, 1)
    if "trainable" in frame and frame["trainable"].notna().any():
        handles = [Patch(color="tab:blue"), Patch(color="tab:orange")]
        fig.legend(handles, ["frozen", "fine-tuned"], loc="outside upper right", fontsize=8)
    fig.savefig(path, dpi=110, format="png")  # path may be a temporary name


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
    mode = mode or ("min" if "loss" in metric else "max")
    expected = expected_jobs(sweep_dir)
    frame = collect(runs_dir, metric, expected)
    if frame.empty:
        frame = pd.DataFrame(columns=["run", "status", "overrides", "error"])
    if strict:
        check_metric(frame, metric, runs_dir)
    frame = mark_best(frame, metric, mode)
    with temporaries.atomic_path(sweep_dir / "summary.csv") as tmp:
        frame.to_csv(tmp, index=False)
    with temporaries.atomic_file(sweep_dir / "summary.md", "w", encoding="utf-8") as f:
        f.write(_markdown(frame, metric, mode, expected))
    with temporaries.atomic_path(sweep_dir / "summary.png") as tmp:
        _plot(frame, tmp)
    return counts(frame)


def sweep_choices(config: DictConfig, key: str) -> list[str]:
    """Every value a multirun gives `key` (`key=a,b` on the command line or in
    `hydra.sweeper.params`), as strings; empty when it is not swept."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    texts = [str(o) for o in config.hydra.overrides.task]
    params = config.hydra.get("sweeper", {}).get("params") or {}
    texts += [f"{name}={value}" for name, value in params.items()]
    values: list[str] = []
    for override in OverridesParser.create().parse_overrides(texts):
        if override.get_key_element() == key:
            if override.is_sweep_override():
                values += [str(v) for v in override.sweep_string_iterator()]
            else:
                values.append(str(override.value()))
    return values


def missing_embeddings(config: DictConfig) -> list[tuple[str, Path]]:
    """(name, directory) of each TF-Hub embedding a sweep names that is not converted yet."""
    from fakenews_pl.hub.artifact import META_FILE
    from fakenews_pl.hub.convert import HUB_MODULES

    root = Path(config.paths.embeddings_dir)
    names = sweep_choices(config, "embedding")
    return [
        (n, root / n)
        for n in dict.fromkeys(names)
        if n in HUB_MODULES and not (root / n / META_FILE).is_file()
    ]


class SweepCallback(Callback):
    """Hydra callback (conf/hydra/default.yaml): before a multirun, every embedding it names
    must be converted (one line naming each missing one and its command, exit status 2, no
    run started); after it, the summary files."""

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
