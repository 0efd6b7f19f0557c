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


def user_error(exc: BaseException) -> UserError | None:
    """The `UserError` behind `exc` (itself, or the cause Hydra's instantiate wrapped), or None."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, UserError):
            return exc
        exc, seen = exc.__cause__, seen + 1
    return None


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
            print(one_line(error), file=sys.stderr, flush=True)
            sys.exit(EXIT_STATUS)

    return wrapper  # type: ignore[return-value]
