"""Errors a user can cause, and the one handler every entry point reports them through.

A `UserError` (bad config key, data file, artifact, checkpoint) carries a message that names
the key, file, row or column and what was expected. `train.py`, `evaluate.py` and the scripts
print it as one line, `error: ...`, on stderr and exit with status 2, without a traceback;
`FAKENEWS_PL_TRACEBACK=1` in the environment shows the traceback instead.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
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


def reports_user_errors(fn: F) -> F:
    """Wrap an entry point: a `UserError` becomes one line on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            error = user_error(exc)
            if error is None or os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
                raise
            print(one_line(error), file=sys.stderr, flush=True)
            sys.exit(EXIT_STATUS)

    return wrapper  # type: ignore[return-value]
