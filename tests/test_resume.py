"""Exact resume: a run SIGKILLed mid-epoch and resumed ends bit-identical to the run that was
never interrupted; last.ckpt always holds the last completed epoch; unsafe checkpoints are
refused."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

from fakenews_pl.errors import ConfigError, UserError

REPO = Path(__file__).resolve().parents[1]
QUIET = ["~callbacks.progress", "trainer.enable_progress_bar=false"]


def _train(args: list[str], log_dir: Path, demo_args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests" / "support")}
    cmd = [sys.executable, "train.py", *demo_args, f"paths.log_dir={log_dir}", *QUIET, *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)


def _train_here(args: list[str], log_dir: Path, demo_args: list[str], root_script) -> Path:
    """The same run as `_train`, in this process (what is tested is the killed process, not
    these): returns its run dir."""
    out = log_dir / "train" / "runs" / "in_process"
    overrides = [*demo_args, f"paths.log_dir={log_dir}", f"paths.output_dir={out}", *QUIET]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, *args])
    root_script("train").train(cfg)
    return out


def _run_dir(log_dir: Path) -> Path:
    (run,) = (log_dir / "train" / "runs").iterdir()
    return run


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fused", "extra", "kill"),
    [
        (True, [], ["+callbacks.kill.epoch=12"]),  # early stopping ends it (~25 epochs)
        (False, ["trainer.max_epochs=4"], ["+callbacks.kill.epoch=3", "+callbacks.kill.batch=5"]),
        # fine-tuned with the exact touched-row Adam: its rows and moments resume too
        (
            False,
            ["trainable=true", "trainer.max_epochs=3"],
            ["+callbacks.kill.epoch=2", "+callbacks.kill.batch=7"],
        ),
        # ... and with the lazy SparseAdam, whose checkpoints hold the touched rows only too
        (
            True,
            ["trainable=true", "model.table_optimizer=lazy", "trainer.max_epochs=3"],
            ["+callbacks.kill.epoch=2"],
        ),
        # sequence encoders: length-bucketed minibatches, a fine-tuned CNN, a frozen BiLSTM
        (
            False,
            ["model.encoder=cnn", "trainable=true", "trainer.max_epochs=3"],
            ["+callbacks.kill.epoch=2", "+callbacks.kill.batch=9"],
        ),
        (
            True,
            ["model.encoder=bilstm", "trainer.max_epochs=3"],
            ["+callbacks.kill.epoch=2", "+callbacks.kill.batch=4"],
        ),
    ],
)
def test_a_killed_run_resumes_to_the_same_end(
    fused: bool,
    extra: list[str],
    kill: list[str],
    cli_overrides,
    root_script,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The run that is killed is a process of its own (SIGKILL mid-epoch); the uninterrupted
    run and the resumed one run in this process."""
    demo_args = [o for o in cli_overrides(tmp_path) if not o.startswith("paths.log_dir")]
    common = [f"data.fuse_train_batches={fused}", *extra]
    whole_run = _train_here(common, tmp_path / "whole", demo_args, root_script)
    killed = _train(
        [*common, "+callbacks.kill._target_=kill_callback.KillAt", *kill],
        tmp_path / "killed",
        demo_args,
    )
    assert killed.returncode == -9  # SIGKILL: nothing ran after it
    killed_run = _run_dir(tmp_path / "killed")
    assert not (killed_run / "metrics.json").exists()
    with caplog.at_level(logging.INFO):
        resumed_run = _train_here(
            [*common, "ckpt_path=last"], tmp_path / "killed", demo_args, root_script
        )
    # It resumed the killed run's last.ckpt (a fresh run with the same seed would end the same).
    assert f"ckpt_path=last: resuming {killed_run / 'checkpoints' / 'last.ckpt'}" in caplog.text
    assert (resumed_run / "checkpoints" / "last.ckpt").is_file() and killed_run != resumed_run
    expected = json.loads((whole_run / "metrics.json").read_text())
    assert json.loads((resumed_run / "metrics.json").read_text()) == expected
    a, b = _weights(whole_run), _weights(resumed_run)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = "embedding_touched_rows"
    ckpts = [torch.load(resumed_run / "checkpoints" / "last.ckpt", weights_only=True)]
    whole_ckpt = torch.load(whole_run / "checkpoints" / "last.ckpt", weights_only=True)
    if rows in whole_ckpt:  # the fine-tuned table: the same rows moved to the same values
        for key in (rows, "embedding_touched_values"):
            assert torch.equal(ckpts[0][key], whole_ckpt[key])


def test_last_ckpt_holds_the_final_epoch_and_evaluate_reproduces_the_report(
    compose_train, root_script, tmp_path: Path
) -> None:
    """Early stopping ends a run on epochs that did not improve: last.ckpt must hold the final
    weights (the report's), not the best epoch's."""
    cfg = compose_train(tmp_path, "trainer.max_epochs=100", "trainer.limit_train_batches=null")
    metrics, objects = root_script("train").train(cfg)
    epochs = metrics["fit/epochs"]
    assert metrics["val/best_epoch"] < epochs  # the run ended on epochs that did not improve
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] + 1 == epochs  # Lightning counts from 0 inside the checkpoint
    best = f"epoch_{metrics['val/best_epoch']:03d}.ckpt"  # file names count from 1
    assert (tmp_path / "checkpoints" / best).is_file()
    final = objects["model"].state_dict()
    assert all(torch.equal(last["state_dict"][k], final[k]) for k in last["state_dict"])
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    evaluated = root_script("evaluate").evaluate(
        compose_train(tmp_path / "eval", f"ckpt_path={ckpt}", config_name="eval")
    )
    assert {k: v for k, v in evaluated.items() if k.startswith("test/")} == {
        k: v for k, v in metrics.items() if k.startswith("test/")
    }


class _Payload:
    """Unpickling this runs `touch MARKER`: what a crafted checkpoint can do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_that_runs_code_on_load_is_refused(
    compose_train, root_script, tmp_path: Path
) -> None:
    marker, bad = tmp_path / "pwned", tmp_path / "bad.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}, "x": _Payload(marker)}, bad)
    cfg = compose_train(tmp_path / "eval", f"ckpt_path={bad}", config_name="eval")
    with pytest.raises(UserError, match="bad.ckpt: refused to load"):
        root_script("evaluate").evaluate(cfg)
    with pytest.raises(UserError, match="bad.ckpt: refused to load"):
        root_script("train").train(compose_train(tmp_path / "train", f"ckpt_path={bad}"))
    assert not marker.exists()


def test_evaluate_refuses_test_rows_the_run_did_not_hold_out(
    compose_train, root_script, tiny_csv: Path, tmp_path: Path
) -> None:
    data = ["data=csv", f"data.files=[{tiny_csv}]", "data.val_source=test"]
    metrics, _ = root_script("train").train(compose_train(tmp_path / "run", *data))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    evaluate = root_script("evaluate").evaluate
    same = evaluate(compose_train(tmp_path / "same", f"ckpt_path={ckpt}", config_name="eval"))
    assert same["test/accuracy"] == metrics["test/accuracy"]  # the rows it held out: accepted
    frame = pd.read_csv(tiny_csv)
    frame.iloc[::-1].to_csv(tiny_csv, index=False)  # the same rows, reordered
    cfg = compose_train(tmp_path / "moved", f"ckpt_path={ckpt}", config_name="eval")
    with pytest.raises(UserError, match=r"would call test are not the 20 rows the run held out"):
        evaluate(cfg)
    assert not (tmp_path / "moved" / "metrics.json").exists()
    cfg = compose_train(
        tmp_path / "anyway", f"ckpt_path={ckpt}", "check_test_rows=false", config_name="eval"
    )
    with pytest.warns(UserWarning, match="check_test_rows=false"):
        evaluate(cfg)
    assert (tmp_path / "anyway" / "metrics.json").is_file()


def test_resuming_into_another_run_is_refused_naming_what_differs(
    compose_train, root_script, tiny_csv: Path, tmp_path: Path
) -> None:
    """`ckpt_path=<last.ckpt> seed=8` resumed a seed-42 run on another split (training rows
    became validation rows); another encoder was a traceback."""
    train = root_script("train").train
    data = ["data=csv", f"data.files=[{tiny_csv}]"]
    train(compose_train(tmp_path / "run", *data))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    resume = [f"ckpt_path={ckpt}", "trainer.max_epochs=2", *data]
    cases = {
        ("seed=8",): r"seed: checkpoint 42, this run 8; data.split_seed: checkpoint 42, this run 8",
        ("model.encoder=bilstm",): r"model.encoder: checkpoint bag, this run bilstm",
        ("model.hidden_sizes=[8]", "model.dropouts=[0.1]"): r"model.dropouts: .*model.hidden_sizes",
        ("data.val_fraction=0.2",): r"data.val_fraction: checkpoint 0.1, this run 0.2",
    }
    for n, (overrides, message) in enumerate(cases.items()):
        cfg = compose_train(tmp_path / f"r{n}", *resume, *overrides)
        with pytest.raises(ConfigError, match=f"is a checkpoint of another run: {message}"):
            train(cfg)
        assert not (tmp_path / f"r{n}" / "metrics.json").exists()
    frame = pd.read_csv(tiny_csv)
    frame.iloc[::-1].to_csv(tiny_csv, index=False)  # the same rows, reordered: another split
    with pytest.raises(ConfigError, match="the train/val/test rows differ"):
        train(compose_train(tmp_path / "moved", *resume))
    frame.to_csv(tiny_csv, index=False)
    metrics, _ = train(compose_train(tmp_path / "same", *resume))  # the same run: resumes
    assert metrics["fit/epochs"] == 2
