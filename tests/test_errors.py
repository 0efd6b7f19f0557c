"""One handler for user errors: one line on stderr, exit status 2, a switch for the traceback."""

import json
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


def _misconfiguration(message: str) -> Exception:
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    return MisconfigurationException(message)


@pytest.mark.parametrize(
    ("cause", "line"),
    [
        (
            lambda: ConfigError("data.val_source: expected one of ('split', 'test')"),
            "error: data.val_source: expected one of ('split', 'test')\n",
        ),
        (  # Lightning's refusal of a Trainer setting
            lambda: _misconfiguration("`enable_checkpointing=False` but found `ModelCheckpoint`"),
            "error: `enable_checkpointing=False` but found `ModelCheckpoint` "
            "(a trainer.* or callbacks.* setting)\n",
        ),
    ],
)
def test_the_cause_hydra_wrapped_is_reported(cause, line: str, capsys) -> None:
    wrapped = InstantiationException("Error in call to target 'x'")
    wrapped.__cause__ = cause()
    with pytest.raises(SystemExit) as info:
        _fails(wrapped)()
    assert info.value.code == errors.EXIT_STATUS
    assert capsys.readouterr().err == line


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
    # Refused before any work: no run dir is left (it held only what Hydra wrote).
    assert not [p for p in (tmp_path / "logs").rglob("*") if p.is_file()]


def errors_root() -> Path:
    return Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["model.bogus=1"], "error: Could not override 'model.bogus'. To append to your config"),
        (
            ["model.lr=[1"],
            "error: cannot parse the override 'model.lr=[1': no viable alternative at input '[1'",
        ),
        (
            ["embedding=bogus"],
            "error: In 'train.yaml': Could not find 'embedding/bogus' Available options in "
            "'embedding':",
        ),
        # A key that was replaced: Hydra's refusal, with the new spelling at its end.
        (["model.sparse_embedding=true"], "error: Could not override 'model.sparse_embedding'"),
    ],
)
def test_hydras_own_errors_are_one_line_and_leave_no_run_dir(
    argv: list[str], message: str, cli_overrides, tmp_path: Path
) -> None:
    """Hydra printed several lines and exited 1 for these; every refused run left a directory
    holding only train.log."""
    proc = subprocess.run(
        [sys.executable, "train.py", *cli_overrides(tmp_path), *argv],
        capture_output=True, text=True, timeout=120, cwd=errors_root(),
    )  # fmt: skip
    assert proc.returncode == errors.EXIT_STATUS
    assert proc.stderr.startswith(message) and proc.stderr.count("\n") == 1, proc.stderr
    assert not [p for p in (tmp_path / "logs").rglob("*") if p.is_file()]  # no run dir left
    replaced = [key for key in errors.REPLACED_KEYS if argv[0].startswith(key + "=")]
    assert proc.stderr.rstrip().endswith(
        "".join(f"; {key} was replaced: use {errors.REPLACED_KEYS[key]}" for key in replaced)
    )


@pytest.mark.slow
def test_a_diverged_run_fails_in_one_line_and_keeps_its_run_dir(
    cli_overrides, tiny_run, tmp_path: Path
) -> None:
    """`model.lr` huge but finite: the loss becomes NaN; the run used to report NaN and exit 0.
    Its run dir holds more than Hydra's files (metrics.json saying why), so it stays. (A
    process: a job Hydra runs in this one would bind its log handlers to pytest's streams.)"""
    args = [*cli_overrides(tmp_path), *tiny_run, "model.lr=1e30", "trainer.max_epochs=3"]
    proc = subprocess.run(
        [sys.executable, "train.py", *args],
        capture_output=True, text=True, timeout=120, cwd=errors_root(),
    )  # fmt: skip
    assert proc.returncode == errors.EXIT_STATUS
    line = proc.stderr.strip().splitlines()[-1]  # after the run's own output
    assert "Traceback" not in proc.stderr
    assert line.startswith("error: the run diverged: ") and "at epoch 1 (model.lr=1e+30)" in line
    (metrics,) = (tmp_path / "logs").rglob("metrics.json")
    assert json.loads(metrics.read_text())["status"] == "diverged"
    assert not (metrics.parent / "report.md").exists()
    # A Trainer setting refused before the Trainer is built: one line too, no run dir left.
    command = [sys.executable, "train.py", *cli_overrides(tmp_path / "b")]
    bad = subprocess.run(
        [*command, "trainer.limit_train_batches=-3"],
        capture_output=True, text=True, timeout=120, cwd=errors_root(),
    )  # fmt: skip
    assert bad.returncode == errors.EXIT_STATUS
    assert bad.stderr.splitlines() == [
        "error: trainer.limit_train_batches=-3: expected a batch count >= 0, a fraction in "
        "[0, 1], or null"
    ]
    assert not [p for p in (tmp_path / "b" / "logs").rglob("*") if p.is_file()]
