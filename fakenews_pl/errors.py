"""Errors a user can cause, and the one handler every entry point reports them through.

A `UserError` (bad config key, data file, artifact, checkpoint) carries a message that names
the key, file, row or column and what was expected. `train.py`, `evaluate.py` and the scripts
print it as one line, `error: ...`, on stderr and exit with status 2, without a traceback;
`FAKENEWS_PL_TRACEBACK=1` in the environment shows the traceback instead. In a multirun
(`-m`) no run stops the sweep: a failed run (any exception) writes `error.txt` into its own
directory, which the sweep summary shows as a row, and returns NaN.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

TRACEBACK_ENV = "FAKENEWS_PL_TRACEBACK"
EXIT_STATUS = 2

F = TypeVar("F", bound=Callable[..., Any])


class UserError(Exception):
    """An error the user can fix; the message names the key, file, row or column, and why."""


class ConfigError(UserError, ValueError):
    """A config value that cannot be used; the message starts with the config key."""


class MissingInputError(UserError, FileNotFoundError):
    """A file or directory the run needs is not there; the message says how to make it."""


def _named(exc: BaseException, name: str) -> bool:
    """Whether `exc` is an instance of a class called `name` (libraries left unimported)."""
    return any(cls.__name__ == name for cls in type(exc).__mro__)


def user_error(exc: BaseException, context: bool = False) -> UserError | None:
    """The `UserError` behind `exc` (itself, or the cause Hydra's instantiate wrapped), or None.

    Lightning's `MisconfigurationException` (a Trainer or callback setting it cannot use, e.g.
    `trainer.limit_train_batches=-3`) and OmegaConf's missing mandatory value (`ckpt_path: ???`)
    are the user's too. `context`: follow the exception being handled when one was raised
    too (OmegaConf raises its own while handling a resolver's error)."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, UserError):
            return exc
        if _named(exc, "MisconfigurationException"):
            return ConfigError(f"{exc} (a trainer.* or callbacks.* setting)")
        if _named(exc, "MissingMandatoryValue"):
            key = getattr(exc, "full_key", None) or "a setting"
            return ConfigError(f"{key}: no value given; expected {key}=...")
        exc, seen = exc.__cause__ or (exc.__context__ if context else None), seen + 1
    return None


# Config keys that were replaced: the old key -> how to say the same now.
REPLACED_KEYS = {
    "model.sparse_embedding": "model.table_optimizer=lazy (true) or exact (false)",
    "model.dense_table_adam": "model.table_optimizer=dense (true) or exact (false)",
    "callbacks.rich_progress_bar": "callbacks.progress",
}


def replaced_key_hint(text: str) -> str:
    """ "; <key> was replaced: use <new spelling>" for each replaced key `text` names."""
    return "".join(
        f"; {key} was replaced: use {new}" for key, new in REPLACED_KEYS.items() if key in text
    )


def hydra_error(exc: BaseException) -> str | None:
    """One line for an error Hydra raises before the job runs (an override it cannot parse, a
    key or config option that does not exist), with the cause OmegaConf gave; else None."""
    if not _named(exc, "HydraException") or _named(exc, "InstantiationException"):
        return None
    cause = exc.__cause__
    detail = str(cause).strip().splitlines()[0] if cause is not None and str(cause).strip() else ""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if "Config search path:" in lines:  # where Hydra looked: noise for a misspelt option
        lines = lines[: lines.index("Config search path:")]
    lines = [line for line in lines if not line.startswith("See https://hydra.cc")]
    override = getattr(exc, "override", None)  # OverrideParseException names it apart
    head = f"cannot parse the override {override!r}: " if override else ""
    line = head + " ".join(lines) + (f" ({detail})" if detail and detail not in lines else "")
    if override and ">=" in override:  # Hydra's grammar takes >= only inside quotes
        key, _, value = override.partition("=")
        line += f"; quote the value: '{key}=\"{value}\"'"
    return line + replaced_key_hint(line)


def run(main: Callable[[], Any]) -> Any:
    """Run a `@hydra.main` entry point so that Hydra's own errors (composing the config,
    parsing an override) are one line and exit status 2 too, like every other user error.

    Hydra prints those itself as several lines and exits 1 unless `HYDRA_FULL_ERROR=1`, which
    makes it raise them to here instead. A `UserError` raised while Hydra resolves the run dir
    (`search.study_name`) is one line too."""
    os.environ["HYDRA_FULL_ERROR"] = "1"
    os.environ["OC_CAUSE"] = "1"  # OmegaConf keeps the cause of an error (our UserError) then
    try:
        return main()
    except Exception as exc:
        line = hydra_error(exc)
        if line is None and (error := user_error(exc, context=True)) is not None:
            line = one_line(error).removeprefix("error: ")  # e.g. a resolver of a run dir name
        if line is None or os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
            raise
        print(f"error: {line}", file=sys.stderr, flush=True)
        sys.exit(EXIT_STATUS)


# What Hydra writes into a run dir before the job starts: a job refused before any work
# leaves no directory behind.
_HYDRA_FILES = {".hydra", "config.yaml", "hydra.yaml", "overrides.yaml"}


def _remove_untouched_run_dir() -> None:
    """Remove this single run's Hydra output dir if it holds only what Hydra wrote (its config
    copies and the job's log), i.e. the job was refused before it wrote anything."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    out = Path(hydra_cfg.runtime.output_dir)
    log = f"{hydra_cfg.job.name}.log"
    if not out.is_dir():
        return
    names = {p.relative_to(out).as_posix() for p in out.rglob("*")}
    hydra_files = {n for n in names if n.split("/")[0] in (".hydra", log)}
    if names - hydra_files or any(Path(n).name not in _HYDRA_FILES | {log} for n in hydra_files):
        return
    shutil.rmtree(out, ignore_errors=True)


def one_line(exc: BaseException) -> str:
    """`error: <message>` on one line (newlines in the message become `; `)."""
    message = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return f"error: {message}"


def _multirun_job_dir() -> Path | None:
    """The output dir of the current Hydra multirun job, or None outside a multirun."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    return Path(hydra_cfg.runtime.output_dir) if hydra_cfg.mode == RunMode.MULTIRUN else None


def reports_user_errors(fn: F) -> F:
    """Wrap an entry point: a `UserError` becomes one line on stderr and exit status 2; in a
    multirun any failure is recorded in the job's `error.txt` and the sweep goes on."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            job_dir = _multirun_job_dir()
            if job_dir is not None:
                line = one_line(user_error(exc) or exc)
                job_dir.mkdir(parents=True, exist_ok=True)
                (job_dir / "error.txt").write_text(f"{line}\n", encoding="utf-8")
                print(f"{line} (this run failed; the sweep goes on)", file=sys.stderr, flush=True)
                return float("nan")
            error = user_error(exc)
            if error is None or os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
                raise
            _remove_untouched_run_dir()
            print(one_line(error), file=sys.stderr, flush=True)
            sys.exit(EXIT_STATUS)

    return wrapper  # type: ignore[return-value]
