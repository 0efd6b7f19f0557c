"""MLflow tracking (`logger=mlflow`): a run, a baseline, a failed run, a multirun and a search
read back with `MlflowClient`; the one-line refusal without the [track] extra."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from fakenews_pl.errors import ConfigError, UserError
from fakenews_pl.training import config, reports, tracking

REPO = Path(__file__).resolve().parents[1]
EXTRA_LINE = 'error: logger=mlflow needs the [track] extra: pip install -e ".[track]"'

if not tracking.mlflow_installed():
    pytest.skip(
        "mlflow is not installed (the [track] extra: pip install -e '.[track]')",
        allow_module_level=True,
    )

from mlflow.tracking import MlflowClient  # noqa: E402


def _client(out: Path) -> MlflowClient:
    """The default store of runs whose paths.log_dir is out/logs (conf/logger/mlflow.yaml)."""
    return MlflowClient(f"sqlite:///{out / 'logs' / 'mlruns' / 'mlflow.db'}")


def _runs(client: MlflowClient, experiment: str = "train") -> list:
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])


def _artifacts(client: MlflowClient, run_id: str) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id)}


def test_a_run_logs_its_config_epochs_test_metrics_and_report(
    compose_train, root_script, tmp_path: Path
) -> None:
    long_value = "x" * 7000  # over MLflow's 6000-character limit on a param value
    cfg = compose_train(tmp_path, "logger=mlflow", "trainer.max_epochs=2", f"+note={long_value}")
    metrics, _ = root_script("train").train(cfg)
    client = _client(tmp_path)
    (run,) = _runs(client)
    assert run.info.status == "FINISHED" and "mlflow.parentRunId" not in run.data.tags
    assert run.info.run_name == tmp_path.name  # the run dir's name
    params = run.data.params
    assert params["model.lr"] == "0.0001" and params["model.hidden_sizes"] == "[256, 64]"
    assert params["trainer.max_epochs"] == "2" and params["seed"] == "42"
    limit = tracking._limit("MAX_PARAM_VAL_LENGTH", 6000)
    assert len(params["note"]) == limit and params["note"].endswith("config.yaml artifact)")
    for key in ("train/loss", "val/loss", "val/accuracy"):  # Lightning's, one point an epoch
        history = client.get_metric_history(run.info.run_id, key)
        assert len(history) == metrics["fit/epochs"] == 2, key
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    logged = run.data.metrics
    assert logged["test/accuracy"] == on_disk["test/accuracy"] == metrics["test/accuracy"]
    assert logged["test/f1_Fake"] == on_disk["test/f1_Fake"]
    # metrics.json's train/accuracy (the reported weights on train) is not the epochs' series
    assert logged["report/train/accuracy"] == on_disk["train/accuracy"]
    files = _artifacts(client, run.info.run_id)
    assert {*reports.REPORT_FILES, "run.json", "config.yaml"} <= files
    whole = client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path / "dl"))
    assert OmegaConf.load(whole).note == long_value


def test_the_baseline_is_logged_without_epochs(compose_train, root_script, tmp_path) -> None:
    cfg = compose_train(tmp_path, "logger=mlflow", "model=tfidf_lr")
    metrics, _ = root_script("train").train(cfg)
    client = _client(tmp_path)
    (run,) = _runs(client)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.C"] == "1.0" and run.data.params["model.kind"] == "tfidf_lr"
    assert run.data.metrics["test/accuracy"] == metrics["test/accuracy"]
    assert client.get_metric_history(run.info.run_id, "val/loss") == []
    assert {"report.md", "metrics.json", "run.json"} <= _artifacts(client, run.info.run_id)


def test_a_run_that_fails_is_a_failed_mlflow_run_with_its_error(compose_train, tmp_path) -> None:
    from fakenews_pl.training import pipeline

    missing = tmp_path / "missing.csv"
    cfg = compose_train(
        tmp_path,
        "logger=mlflow",
        "data=csv",
        f"data.train_csv={missing}",
        f"data.test_csv={missing}",
    )
    with pytest.raises(UserError, match="no such data file"):
        pipeline.train(cfg)
    (run,) = _runs(_client(tmp_path))
    assert run.info.status == "FAILED"
    assert run.data.tags["error"] == f"{missing}: no such data file"
    assert run.data.params["data.train_csv"] == str(missing)


def test_a_pruned_trial_is_killed_not_failed(compose_train, tmp_path: Path) -> None:
    class TrialPruned(Exception):  # Optuna's, by name: tracking does not import optuna
        pass

    cfg = compose_train(tmp_path, "logger=mlflow")
    run = tracking.TrackedRun(cfg, {"search trial": 3})
    assert run.cfg.logger.mlflow.run_id == run.run_id  # Lightning's logger writes into it
    run.fail(TrialPruned("pruned at epoch 2: val/loss=0.7"))
    (logged,) = _runs(_client(tmp_path))
    assert logged.info.status == "KILLED" and logged.info.run_name == "trial 3"
    assert logged.data.tags["stopped"] == "pruned at epoch 2: val/loss=0.7"
    assert "error" not in logged.data.tags and logged.data.tags["trial"] == "3"


def test_logger_mlflow_without_the_extra_is_refused_in_one_line(
    compose_train, cli_overrides, monkeypatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(tracking, "mlflow_installed", lambda: False)
    with pytest.raises(ConfigError, match=r"^logger=mlflow needs the \[track\] extra"):
        config.check_train_config(compose_train(tmp_path, "logger=mlflow"))
    config.check_train_config(compose_train(tmp_path))  # the default logger needs nothing
    # train.py itself: one line, exit status 2, before any work (no run dir left)
    code = (
        "import runpy, sys\n"
        "from fakenews_pl.training import tracking\n"
        "tracking.mlflow_installed = lambda: False\n"
        "sys.argv = ['train.py', *sys.argv[1:]]\n"
        "runpy.run_path('train.py', run_name='__main__')\n"
    )
    env = {**os.environ, "PROJECT_ROOT": str(REPO), "PYTHONPATH": str(REPO)}
    for args in (["logger=mlflow"], ["-m", "logger=mlflow", "seed=1,2"]):
        cmd = [sys.executable, "-c", code, *args, *cli_overrides(tmp_path)]
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert proc.stderr.strip() == EXTRA_LINE, args
    assert not list((tmp_path / "logs").rglob("metrics.json"))
    assert not (tmp_path / "logs" / "train" / "runs").exists() or not any(
        (tmp_path / "logs" / "train" / "runs").iterdir()
    )


def test_params_are_the_config_flattened() -> None:
    cfg = OmegaConf.create(
        {"model": {"lr": 1e-4, "sizes": [256, 64], "opt": None}, "bad key!": 1, "x": "${y}"}
    )
    assert tracking.flat_params(cfg) == {
        "model.lr": "0.0001",
        "model.sizes": "[256, 64]",
        "model.opt": "None",
        "bad key_": "1",
    }  # `${y}` does not resolve: left out
    assert tracking._cut("abc", 3) == "abc"
    cut = tracking._cut("y" * 200, 120)
    assert len(cut) == 120 and cut.startswith("y") and "200 characters" in cut


@pytest.mark.slow
def test_a_multirun_is_a_parent_run_with_a_child_per_job(
    cli_overrides, tiny_run, tmp_path: Path
) -> None:
    sweep = tmp_path / "s"
    cmd = [
        sys.executable, "train.py", "-m", "model.lr=1e-4,1e-3", "logger=mlflow", *tiny_run,
        *cli_overrides(tmp_path), f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = _client(tmp_path)
    runs = _runs(client)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.data.tags["kind"] == "multirun" and parent.info.status == "FINISHED"
    assert "model.lr=1e-4,1e-3" in parent.data.tags["overrides"]
    assert json.loads((sweep / tracking.PARENT_FILE).read_text())["run_id"] == parent.info.run_id
    children = [r for r in runs if r is not parent]
    assert len(children) == 2
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    for child, lr in zip(children, ("0.0001", "0.001"), strict=True):
        run_dir = Path(child.data.tags["run_dir"])
        assert run_dir.parent == sweep.resolve() and child.info.status == "FINISHED"
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert child.data.metrics["test/accuracy"] == metrics["test/accuracy"]
        assert child.data.params["model.lr"] == lr
        assert f"model.lr={lr}" in child.data.tags["overrides"].split()  # as Hydra wrote it
    assert {"summary.md", "summary.csv", "summary.png"} <= _artifacts(client, parent.info.run_id)


@pytest.mark.slow
def test_a_search_is_a_parent_run_with_a_child_per_trial(
    compose_train, tiny_run, tmp_path: Path
) -> None:
    from fakenews_pl.training import search

    cfg = compose_train(
        tmp_path, "hparams_search=head_optuna", "logger=mlflow", "search.n_trials=2", *tiny_run,
        config_name="search",
    )  # fmt: skip
    sweep = tmp_path / "study"
    search.run_search(cfg, sweep)
    client = _client(tmp_path)
    runs = _runs(client, "search")
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.data.tags["kind"] == "search" and parent.info.status == "FINISHED"
    children = sorted((r for r in runs if r is not parent), key=lambda r: r.data.tags["trial"])
    assert [r.data.tags["trial"] for r in children] == ["0", "1"]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    for child in children:
        trial_dir = sweep / "trials" / child.data.tags["trial"]
        metrics = json.loads((trial_dir / "metrics.json").read_text())
        assert child.data.metrics["test/accuracy"] == metrics["test/accuracy"]
        chosen = yaml.safe_load((trial_dir / "overrides.yaml").read_text())
        assert child.data.tags["overrides"] == " ".join(chosen)
    files = _artifacts(client, parent.info.run_id)
    assert {"summary.md", "best.yaml", "best_overrides.yaml"} <= files
    # the same command again (a resumed search) goes on in the same parent
    search.run_search(cfg, sweep)
    assert len([r for r in _runs(client, "search") if "mlflow.parentRunId" not in r.data.tags]) == 1
