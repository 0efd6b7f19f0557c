"""One handler for user errors: one line on stderr, exit status 2, a switch for the traceback."""

import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import InstantiationException

from fakenews_pl import errors
from fakenews_pl.errors import ConfigError, UserError


def _fails(exc: BaseException):
    @errors.reports_user_errors
    def entry() -> None:
        raise exc

    return entry


def test_a_user_error_is_one_line_and_exit_status_2(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        _fails(ConfigError("model.lr=-1: expected a learning rate > 0\n  (see conf/model)"))()
    assert info.value.code == errors.EXIT_STATUS
    err = capsys.readouterr().err
    assert err == "error: model.lr=-1: expected a learning rate > 0 (see conf/model)\n"


def test_the_cause_hydra_wrapped_is_reported(capsys: pytest.CaptureFixture) -> None:
    try:
        raise ConfigError("data.val_source: expected one of ('split', 'test')")
    except ConfigError as cause:
        wrapped = InstantiationException("Error in call to target 'FakeNewsDataModule'")
        wrapped.__cause__ = cause
    with pytest.raises(SystemExit):
        _fails(wrapped)()
    assert capsys.readouterr().err.startswith("error: data.val_source")


def test_bugs_keep_their_traceback_and_the_switch_shows_user_errors_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(KeyError):
        _fails(KeyError("a bug, not the user's"))()
    monkeypatch.setenv(errors.TRACEBACK_ENV, "1")
    with pytest.raises(UserError):
        _fails(UserError("shown with its traceback"))()


@pytest.mark.slow
def test_train_py_reports_a_bad_option_in_one_line(cli_overrides, tmp_path) -> None:
    args = [sys.executable, "train.py", "model.dropouts=[0.3]", *cli_overrides(tmp_path)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=errors_root())
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "error: model.dropouts=[0.3]: expected one dropout rate per hidden layer "
        "(model.hidden_sizes has 2)"
    ]
    # Refused before any work: the run dir holds only what Hydra writes before the job.
    written = {p.name for p in (tmp_path / "logs").rglob("*") if p.is_file()}
    assert written <= {"config.yaml", "hydra.yaml", "overrides.yaml", "train.log"}


def errors_root() -> Path:
    return Path(__file__).resolve().parents[1]
