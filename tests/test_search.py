"""The Optuna search: a killed search resumed to its trial count, with a failed and a pruned
trial; the same command twice through search.py; the search space and pruning callback;
several worker processes on one study (the journal file and a real PostgreSQL server), one of
them killed mid-trial; the rules that keep them from running too many trials or the same values
twice, and the summary written once."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pandas as pd
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict
from optuna.trial import TrialState

from fakenews_pl import temporaries
from fakenews_pl.errors import ConfigError
from fakenews_pl.training import config, search

try:  # tests/postgres.py: a throwaway server (imported as pytest puts tests/ on sys.path)
    import postgres
except ImportError:  # pragma: no cover
    postgres = None

REPO = Path(__file__).resolve().parents[1]
SEARCH = ["hparams_search=head_optuna", "search.n_trials=4", "trainer.max_epochs=2"]

# The first half of the search, in its own process: trial 1 fails, trial 2 is SIGKILLed after
# its values were chosen (it stays RUNNING in the journal, as after a real kill).
KILLED_RUN = """
import json, os, signal, sys
from hydra import compose, initialize_config_dir
from fakenews_pl.training import search

def hook(trial, overrides):
    if trial.number == 1:
        raise RuntimeError("a deliberate failure")
    if trial.number == 2:
        os.kill(os.getpid(), signal.SIGKILL)

conf_dir, sweep, overrides = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
with initialize_config_dir(config_dir=conf_dir, version_base="1.3"):
    cfg = compose("search", overrides=overrides)
search.run_search(cfg, sweep, hook=hook)
"""


class PruneTrial(optuna.pruners.BasePruner):
    """Prunes trial `number` at its first report, no other."""

    def __init__(self, number: int) -> None:
        self.number = number

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return trial.number == self.number


def _states(study: optuna.Study) -> dict[int, TrialState]:
    return {t.number: t.state for t in study.get_trials(deepcopy=False)}


@pytest.mark.slow
def test_a_killed_search_resumes_to_its_trial_count(
    compose_train, cli_overrides, tiny_run, root_script, tmp_path: Path
) -> None:
    sweep = tmp_path / "sweep"
    args = [*cli_overrides(tmp_path), *tiny_run, *SEARCH, f"paths.output_dir={sweep}"]
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, str(REPO / "conf"), str(sweep), json.dumps(args)],
        cwd=REPO, capture_output=True, text=True, timeout=240,
        env={**os.environ, "PROJECT_ROOT": str(REPO)},
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert (sweep / "trials" / "0" / "metrics.json").is_file()
    assert "a deliberate failure" in (sweep / "trials" / "1" / "error.txt").read_text()

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("search", overrides=args)
    study = search.run_search(cfg, sweep, pruner=PruneTrial(3))  # the same call, resumed
    states = _states(study)
    assert states == {
        0: TrialState.COMPLETE,
        1: TrialState.FAIL,  # the deliberate failure
        2: TrialState.FAIL,  # killed: not counted, run again as trial 3
        3: TrialState.PRUNED,
        4: TrialState.COMPLETE,
        5: TrialState.COMPLETE,  # failed trials do not use up n_trials: one more runs
    }
    assert search.counted_trials(study) == 4 and search.interrupted_trials(study) == {2}
    trials = study.get_trials()
    assert trials[3].params == trials[2].params and trials[3].user_attrs["retry_of"] == 2
    assert list(trials[3].intermediate_values) == [1]  # pruned after epoch 1 of 2
    assert list(trials[4].intermediate_values) == [1, 2]
    assert not (sweep / "trials" / "3" / "metrics.json").exists()
    assert "interrupted" in (sweep / "trials" / "2" / "error.txt").read_text()
    metrics = json.loads((sweep / "trials" / "4" / "metrics.json").read_text())
    assert {"val/best_loss", "val/f1_Fake", "test/f1_Fake"} <= set(metrics)

    # the summary: a row per trial, the best one marked
    frame = pd.read_csv(sweep / "summary.csv")
    assert frame["run"].tolist() == [0, 1, 2, 3, 4, 5]
    assert frame.loc[frame["best"], "run"].item() == study.best_trial.number
    assert frame.loc[1, "error"].startswith("error: RuntimeError: a deliberate failure")
    for name in ("summary.md", "summary.png"):
        assert (sweep / name).stat().st_size > 0

    # the best overrides are a train.py command line as they are
    best = yaml.safe_load((sweep / search.BEST_OVERRIDES).read_text())
    assert best == study.best_trial.user_attrs["overrides"]
    train_cfg = compose_train(tmp_path / "again", "trainer.max_epochs=2", *best)
    config.check_train_config(train_cfg)
    metrics, _ = root_script("train").train(train_cfg)  # train.py repeats the best trial
    assert metrics["val/best_loss"] == study.best_value
    assert train_cfg.model.lr == study.best_params["model.lr"]
    assert OmegaConf.to_container(train_cfg.model.hidden_sizes) == yaml.safe_load(
        study.best_params["model.hidden_sizes"]
    )
    record = yaml.safe_load((sweep / search.BEST_FILE).read_text())
    assert record["trial"] == study.best_trial.number and record["command"].startswith("python")

    # once complete, the same call runs nothing more
    again = search.run_search(cfg, sweep)
    assert len(again.get_trials()) == 6


@pytest.mark.slow
def test_the_same_search_command_twice_runs_its_trials_once(
    cli_overrides, tiny_run, compose_train, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """search.py as a process, then the same search again in this process: it finds the study
    the command made (in the directory named after the study) and runs nothing."""
    cmd = [sys.executable, "search.py", "search.n_trials=1", *cli_overrides(tmp_path), *tiny_run]
    env = {**os.environ, "PROJECT_ROOT": str(REPO)}
    first = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    sweep = tmp_path / "logs" / "search" / "head_optuna"  # one directory per study name
    best = yaml.safe_load((sweep / search.BEST_OVERRIDES).read_text())
    assert "python train.py" in first.stdout and best[0] in first.stdout
    cfg = _search_cfg(compose_train, tmp_path, "search.n_trials=1", *tiny_run)
    with caplog.at_level(logging.INFO):
        study = search.run_search(cfg, sweep)
    assert "0 of 1 to run" in caplog.text and len(study.trials) == 1
    assert sorted(p.name for p in (sweep / "trials").iterdir()) == ["0"]


def test_the_search_space_becomes_overrides_a_config_takes(compose_train, tmp_path) -> None:
    cfg = compose_train(tmp_path, "hparams_search=head_optuna", config_name="search")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    overrides = search.suggest(study.ask(), cfg.search.space)
    assert [o.split("=")[0] for o in overrides] == list(cfg.search.space)
    trial_cfg = search.apply_overrides(cfg, overrides)
    assert isinstance(OmegaConf.to_container(trial_cfg.model.hidden_sizes)[0], int)
    assert trial_cfg.data.batch_size in (16, 32, 64) and cfg.model.lr == 1e-4  # a copy
    with pytest.raises(ConfigError, match="model.lrr"):
        search.apply_overrides(cfg, ["model.lrr=0.1"])
    with pytest.raises(ConfigError, match="trainer.devices=2"):
        search.check_search_config(search.apply_overrides(cfg, ["trainer.devices=2"]))
    f1 = compose_train(tmp_path, "hparams_search=head_optuna_f1", config_name="search")
    assert (f1.search.metric, f1.search.direction) == ("val/f1_Fake", "maximize")


def test_pruning_callback_reports_prunes_and_fails_on_nan() -> None:
    study = optuna.create_study(pruner=PruneTrial(1))
    for number, value, expected in ((0, 0.5, None), (1, 0.4, optuna.TrialPruned)):
        trial = study.ask()
        assert trial.number == number
        callback = search.PruneOnValidation(trial, "val/loss")
        trainer = SimpleNamespace(
            sanity_checking=False,
            current_epoch=0,
            callback_metrics={"val/loss": torch.tensor(value)},
        )
        if expected:
            with pytest.raises(expected, match="epoch 1"):
                callback.on_validation_end(trainer, None)
        else:
            callback.on_validation_end(trainer, None)
            assert study.get_trials()[0].intermediate_values == {1: 0.5}
    trainer.callback_metrics = {"val/loss": torch.tensor(float("nan"))}
    with pytest.raises(search.TrialFailed, match="nan"):
        search.PruneOnValidation(study.ask(), "val/loss").on_validation_end(trainer, None)


def test_a_nan_objective_fails_the_trial_and_the_search_goes_on(
    compose_train, monkeypatch, tmp_path: Path
) -> None:
    cfg = compose_train(tmp_path, "hparams_search=head_optuna", config_name="search")
    values = iter([float("nan"), 0.25])
    monkeypatch.setattr(search, "run_trial", lambda *a: {"val/best_loss": next(values)})
    study = optuna.create_study()
    study.optimize(search.make_objective(cfg, tmp_path), n_trials=2, catch=(Exception,))
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL, TrialState.COMPLETE]
    assert "val/best_loss=nan" in (tmp_path / "trials" / "0" / "error.txt").read_text()
    assert json.loads((tmp_path / "trials" / "1" / "run.json").read_text())["value"] == 0.25


# ---------------------------------------------------------------- no silent wrong answer


def _search_cfg(compose_train, tmp_path: Path, *overrides: str):
    return compose_train(tmp_path, "hparams_search=head_optuna", *overrides, config_name="search")


def _fake_trials(monkeypatch, fail: set[int] | None = None, every: bool = False) -> None:
    """Trials that train nothing: the value is a function of the trial's lr; `fail`: trial
    numbers that raise (`every`: all of them)."""

    def run_trial(cfg, trial, prune_on):
        if every or trial.number in (fail or set()):
            raise RuntimeError(f"trial {trial.number} fails")
        return {"val/best_loss": float(cfg.model.lr)}

    monkeypatch.setattr(search, "run_trial", run_trial)


def _params(study: optuna.Study) -> list[tuple]:
    done = study.get_trials(states=(TrialState.COMPLETE,))
    return [tuple(sorted(t.params.items())) for t in done]


def test_a_resumed_or_extended_search_never_repeats_its_values(
    compose_train, monkeypatch, tmp_path: Path
) -> None:
    """The seeded sampler restarted its sequence: a rerun after a kill, or raising n_trials,
    proposed exactly the values of trials 0 and 1 again."""
    _fake_trials(monkeypatch)
    sweep = tmp_path / "sweep"

    def interrupt(trial, overrides):
        if trial.number == 2:
            raise KeyboardInterrupt  # as a kill mid-trial

    cfg = _search_cfg(compose_train, tmp_path, "search.n_trials=4")
    with pytest.raises(KeyboardInterrupt):
        search.run_search(cfg, sweep, hook=interrupt)
    search.run_search(cfg, sweep)  # the same command again: resumes
    study = search.run_search(_search_cfg(compose_train, tmp_path, "search.n_trials=7"), sweep)
    params = _params(study)
    assert len(params) == 7 and len(set(params)) == 7, params


def test_study_names_are_one_segment_and_a_study_dir_is_never_anothers(
    compose_train, monkeypatch, cli_overrides, tmp_path: Path
) -> None:
    """`search.study_name=conc2/` used to write into study conc2's directory, deleting its
    trials/0 and replacing its best.yaml."""
    for bad in ("conc2/", "conc2/.", "..", ".", "a/b", ""):
        with pytest.raises(ConfigError, match="search.study_name=.*expected one name"):
            search.check_study_name(bad)
    _fake_trials(monkeypatch)
    logs = tmp_path / "logs" / "search"
    cfg = _search_cfg(compose_train, tmp_path, "search.n_trials=1", "search.study_name=conc2")
    search.run_search(cfg, logs / "conc2")
    before = {p: p.read_bytes() for p in (logs / "conc2").rglob("*") if p.is_file()}
    argv = [*cli_overrides(tmp_path), "search.study_name=conc2/", "search.n_trials=1"]
    refused = subprocess.run(  # refused before Hydra makes any directory
        [sys.executable, "search.py", *argv], cwd=REPO, capture_output=True, text=True,
        timeout=120, env={**os.environ, "PROJECT_ROOT": str(REPO)},
    )  # fmt: skip
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: search.study_name=conc2/: expected one name")
    assert refused.stderr.count("\n") == 1
    other = _search_cfg(compose_train, tmp_path, "search.n_trials=1", "search.study_name=other")
    with pytest.raises(search.UserError, match="holds study 'conc2'.*not 'other'"):
        search.run_search(other, logs / "conc2")  # a directory records its own study
    after = {p: p.read_bytes() for p in (logs / "conc2").rglob("*") if p.is_file()}
    assert after == before


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"type": "bogus"},
            r"model.lr.type=bogus: expected one of \['float', 'int', 'categorical'\]",
        ),
        ({"type": "float", "low": "abc", "high": 1.0}, "low=abc: expected a number"),
        ({"type": "float", "low": 0.1, "high": 0.01}, "low <= high"),
        ({"type": "float", "low": 0.0, "high": 0.1, "log": True}, "low > 0"),
        ({"type": "int", "low": 1.5, "high": 4}, "low=1.5: expected an integer"),
        ({"type": "categorical", "choices": []}, "expected a non-empty list of choices"),
        ({"type": "float", "low": 0.1, "high": 1.0, "lgo": True}, "unknown field 'lgo'"),
    ],
)
def test_a_bad_search_space_is_refused_before_any_trial(
    compose_train, monkeypatch, tmp_path: Path, entry: dict, message: str
) -> None:
    cfg = _search_cfg(compose_train, tmp_path)
    cfg.search.space["model.lr"] = entry
    _fake_trials(monkeypatch)
    with pytest.raises(ConfigError, match=message):
        search.run_search(cfg, tmp_path / "sweep")
    assert not (tmp_path / "sweep" / "trials").exists()


def test_failed_trials_do_not_use_up_the_budget_and_a_search_with_none_done_fails(
    compose_train, monkeypatch, tmp_path: Path
) -> None:
    """Failed trials counted toward n_trials: after fixing a bad space the rerun said '0 of 2
    to run', and a search whose every trial failed exited 0."""
    cfg = _search_cfg(compose_train, tmp_path, "search.n_trials=2")
    _fake_trials(monkeypatch, every=True)
    with pytest.raises(search.SearchFailed, match=r"no trial completed \(2 failed.*error.txt"):
        search.run_search(cfg, tmp_path / "sweep")  # gives up after max_failed_trials (2)
    _fake_trials(monkeypatch, fail={2})
    study = search.run_search(cfg, tmp_path / "sweep")  # the failures are run again
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.FAIL] * 3 + [TrialState.COMPLETE] * 2
    assert search.counted_trials(study) == 2


# ---------------------------------------------------------------- many workers on one study

# A worker process: run_search with a hook. Every worker's first trial waits until the doomed
# worker's trial runs (so the workers overlap); the doomed one (argv[4] == "kill") SIGKILLs
# itself in its first trial, after its values were chosen, once another worker's trial runs.
WORKER_RUN = """
import json, logging, os, signal, sys, time
from hydra import compose, initialize_config_dir
from optuna.trial import TrialState
from fakenews_pl.training import search

logging.basicConfig(level=logging.INFO, format="%(message)s")
conf_dir, sweep, overrides, doomed = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
first = []

def wait_for(trial, condition):
    deadline = time.time() + 60
    while time.time() < deadline and not condition(trial.study.get_trials(deepcopy=False)):
        time.sleep(0.2)

def hook(trial, overrides):
    if first:
        return
    first.append(trial.number)
    if doomed == "kill":
        trial.set_user_attr("doomed", True)
        running = lambda ts: any(t.state == TrialState.RUNNING and t.number != trial.number
                                 and search.WORKER in t.user_attrs for t in ts)
        wait_for(trial, running)
        os.kill(os.getpid(), signal.SIGKILL)
    wait_for(trial, lambda ts: any("doomed" in t.user_attrs for t in ts))

with initialize_config_dir(config_dir=conf_dir, version_base="1.3"):
    cfg = compose("search", overrides=overrides)
search.run_search(cfg, sweep, hook=hook)
"""
WORKERS_SEARCH = [
    "hparams_search=head_optuna",
    "search.n_trials=4",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    # a killed worker's trial is failed 2 s after its last heartbeat (PostgreSQL)
    "search.heartbeat_interval=1",
    "search.grace_period=2",
]


@pytest.fixture(scope="module")
def postgres_url() -> str:
    """A throwaway PostgreSQL server (tests/postgres.py) for this module; its database URL."""
    if postgres is None or postgres.find_bindir() is None:
        pytest.skip("PostgreSQL is not installed (no initdb on PATH or in /usr/lib/postgresql)")
    pytest.importorskip("psycopg", reason="psycopg (the [sweep] extra) is not installed")
    with postgres.server() as url:
        yield url


def _load(storage: str | None, sweep: Path, name: str = "head_optuna") -> optuna.Study:
    if storage is None:
        backend = optuna.storages.journal.JournalFileBackend(str(sweep / search.JOURNAL_FILE))
        storage = optuna.storages.JournalStorage(backend)
    return optuna.load_study(study_name=name, storage=storage)


def _check_results(study: optuna.Study, sweep: Path, n_trials: int) -> list:
    """Exactly n_trials ran to a result, each with its own values and directory; the summary
    shows every trial directory with its metrics.json figures; best.yaml is the best trial."""
    trials = study.get_trials()
    ran = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(ran) == n_trials == search.counted_trials(study)
    values = [tuple(sorted(t.params.items())) for t in ran]
    assert len(set(values)) == len(values), values  # never the same values twice
    kept = {t.number for t in trials if search.DISCARDED not in t.user_attrs}
    dirs = {int(p.name) for p in (sweep / "trials").iterdir()}
    assert dirs == kept  # a directory per trial that ran, and only those
    frame = pd.read_csv(sweep / "summary.csv").set_index("run")
    assert set(frame.index) == dirs
    for t in ran:
        metrics = json.loads((sweep / "trials" / str(t.number) / "metrics.json").read_text())
        for key in ("val/best_loss", "test/accuracy", "test/f1_Fake"):
            assert frame.loc[t.number, key] == pytest.approx(metrics[key], rel=1e-12), key
    assert frame.loc[frame["best"], :].index.item() == study.best_trial.number
    assert yaml.safe_load((sweep / search.BEST_FILE).read_text())["trial"] == (
        study.best_trial.number
    )
    assert study.user_attrs[search.SUMMARIZED] == search._ended(study)
    return ran


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["journal", "postgresql"])
def test_workers_share_a_study_and_a_killed_workers_trial_runs_again(
    storage: str, request, cli_overrides, tiny_run, tmp_path: Path
) -> None:
    """Three worker processes on one study, one SIGKILLed mid-trial: together they run exactly
    n_trials, never the same values twice, each trial in its own directory; the killed trial is
    failed and its values run again by another worker; one worker writes the summary."""
    url = request.getfixturevalue("postgres_url") if storage == "postgresql" else None
    sweep = tmp_path / "sweep"
    args = [*cli_overrides(tmp_path), *tiny_run, *WORKERS_SEARCH, f"paths.output_dir={sweep}"]
    if url:
        args.append(f"search.storage={url}")
    env = {**os.environ, "PROJECT_ROOT": str(REPO)}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER_RUN,
                str(REPO / "conf"),
                str(sweep),
                json.dumps(args),
                role,
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for role in ("kill", "work", "work")
    ]
    outputs = [proc.communicate(timeout=240) for proc in procs]
    codes = [proc.returncode for proc in procs]
    assert codes == [-signal.SIGKILL, 0, 0], [err[-3000:] for _, err in outputs]

    study = _load(url, sweep)
    ran = _check_results(study, sweep, n_trials=4)
    (killed,) = [t for t in study.get_trials() if "doomed" in t.user_attrs]
    assert killed.state == TrialState.FAIL and search.interrupted_trials(study) == {killed.number}
    (retry,) = [t for t in ran if t.user_attrs.get(search.RETRY_OF) == killed.number]
    assert retry.params == killed.params  # its values ran again, by a surviving worker
    assert retry.user_attrs[search.WORKER] != killed.user_attrs[search.WORKER]
    assert len({t.user_attrs[search.WORKER] for t in ran}) == 2  # both survivors ran trials
    assert "interrupted" in (sweep / "trials" / str(killed.number) / "error.txt").read_text()
    assert search.failed_trials(study) == 0
    wrote = [err.count("summary.md and best.yaml") for _, err in outputs]
    assert sum(wrote) == 1, wrote  # the summary was written once


@pytest.mark.slow
def test_search_workers_starts_the_workers_from_one_command(
    cli_overrides, tiny_run, tmp_path: Path
) -> None:
    """`python search.py search.workers=2`: one more search.py process joins the study, with
    its own log; the command ends once both have, with the study complete."""
    argv = [*cli_overrides(tmp_path), *tiny_run, "search.n_trials=3", "search.workers=2"]
    proc = subprocess.run(
        [sys.executable, "search.py", *argv], cwd=REPO, capture_output=True, text=True,
        timeout=240, env={**os.environ, "PROJECT_ROOT": str(REPO)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = tmp_path / "logs" / "search" / "head_optuna"
    assert "Started 1 more workers" in proc.stderr + proc.stdout
    assert (sweep / "search-worker1.log").is_file() and (sweep / ".hydra").is_dir()
    _check_results(_load(None, sweep), sweep, n_trials=3)


def _study(tmp_path: Path) -> optuna.Study:
    backend = optuna.storages.journal.JournalFileBackend(str(tmp_path / search.JOURNAL_FILE))
    return optuna.create_study(storage=optuna.storages.JournalStorage(backend))


SPACE = OmegaConf.create({"data.batch_size": {"type": "categorical", "choices": [16, 32, 64]}})


def test_a_trial_over_the_budget_or_with_taken_values_is_discarded(tmp_path: Path) -> None:
    study = _study(tmp_path)
    for _ in range(3):
        study.enqueue_trial({"data.batch_size": 32})
    first, second, third = study.ask(), study.ask(), study.ask()
    for trial in (first, second):
        search.check_budget(trial, n_trials=2)  # two places: both start
        search.suggest(trial, SPACE)
    with pytest.raises(search.Discarded, match="over the budget"):
        search.check_budget(third, n_trials=2)  # trials 0 and 1 run: no place for 2
    with pytest.raises(search.Discarded, match="the values of trial 1"):
        search.check_unique(first)  # both chose 32: neither runs twice...
    study.tell(first, state=TrialState.FAIL)
    search.check_unique(second)  # ...and once 0 is out of the way, 1 runs
    assert study.get_trials()[0].user_attrs[search.DISCARDED] == "the values of trial 1"
    study.tell(second, 0.5)
    study.tell(third, state=TrialState.FAIL)  # as Optuna records a discarded trial
    search.check_budget(study.ask(), n_trials=2)  # 0 failed: its place is free again
    assert search.failed_trials(study) == 0 and search.discarded_trials(study) == 2
    assert search.space_size(SPACE) == 3


def test_a_trial_whose_worker_died_is_failed_and_its_values_queued(
    compose_train, tmp_path: Path
) -> None:
    cfg = _search_cfg(compose_train, tmp_path)
    study = _study(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = temporaries.owner().split(":")[0]
    owners = {"dead": f"{host}:{dead.pid}:0", "alive": temporaries.owner(), "other": "h2:1:0"}
    for owner in owners.values():
        trial = study.ask()
        trial.suggest_float("model.lr", 1e-4, 1e-2)
        trial.set_user_attr(search.WORKER, owner)
        (tmp_path / "trials" / str(trial.number)).mkdir(parents=True)
    assert temporaries.owner_gone(owners["dead"]) and not temporaries.owner_gone(owners["alive"])
    search.fail_stale(study, cfg, tmp_path)
    states = _states(study)
    # another host's trial: alive until its heartbeat is older than the grace period
    assert [states[n] for n in (0, 1, 2)] == [TrialState.FAIL] + [TrialState.RUNNING] * 2
    retry = study.get_trials()[3]
    assert retry.state == TrialState.WAITING and retry.user_attrs[search.RETRY_OF] == 0
    assert "interrupted" in (tmp_path / "trials" / "0" / "error.txt").read_text()
    search.fail_stale(study, cfg, tmp_path)  # once only
    assert len(study.get_trials()) == 4
    cfg.search.grace_period = 0
    time.sleep(0.05)
    search.fail_stale(study, cfg, tmp_path)  # now the other host's is stale; ours still runs
    assert [_states(study)[n] for n in (1, 2)] == [TrialState.RUNNING, TrialState.FAIL]
    assert search.interrupted_trials(study) == {0, 2}


def test_the_summary_is_written_once_for_the_same_trials(
    compose_train, monkeypatch, tmp_path: Path
) -> None:
    _fake_trials(monkeypatch)
    cfg = _search_cfg(compose_train, tmp_path, "search.n_trials=2")
    study = search.run_search(cfg, tmp_path / "sweep")
    assert not search.write_results(study, cfg, tmp_path / "sweep", [])  # already written
    (tmp_path / "sweep" / "summary.png").unlink()
    assert search.write_results(study, cfg, tmp_path / "sweep", [])  # a file is missing
    assert (tmp_path / "sweep" / "summary.png").is_file()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("search.workers=0", "search.workers=0: expected a count"),
        ("search.storage=journal.log", "search.storage=journal.log: expected null"),
        ("search.grace_period=1", "1 <= heartbeat_interval < grace_period"),
    ],
)
def test_bad_worker_settings_are_refused(compose_train, tmp_path, override, message) -> None:
    cfg = _search_cfg(compose_train, tmp_path, override)
    with pytest.raises(ConfigError, match=message):
        search.check_search_config(cfg)


def test_more_trials_than_the_space_holds_are_refused(compose_train, tmp_path) -> None:
    cfg = _search_cfg(compose_train, tmp_path, "search.n_trials=4")
    cfg.search.space = SPACE
    with pytest.raises(ConfigError, match="n_trials=4: the search space holds only 3"):
        search.check_search_config(cfg)


def test_a_storage_that_cannot_be_opened_is_one_line(compose_train, tmp_path) -> None:
    url = "postgresql+psycopg://u:secret@127.0.0.1:1/db"
    cfg = _search_cfg(compose_train, tmp_path, f"search.storage={url}")
    with pytest.raises(search.UserError, match=r"u:\*\*\*@127.0.0.1:1/db: cannot open") as e:
        search.open_storage(cfg, tmp_path)
    assert "secret" not in str(e.value)


def test_a_search_space_file_without_worker_settings_takes_the_defaults(
    compose_train, tmp_path
) -> None:
    cfg = _search_cfg(compose_train, tmp_path)
    with open_dict(cfg):
        for key in search.WORKER_DEFAULTS:
            del cfg.search[key]
    search.check_search_config(cfg)
    assert search.is_journal(cfg) and search.setting(cfg, "grace_period") == 180


def test_the_repeat_command_leaves_out_what_workers_were_started_with() -> None:
    base = ["data=demo", "++search.workers=1", "hydra.output_subdir=null",
            "hydra.job.name=search-worker1", "model.lr=1e-3"]  # fmt: skip
    assert search.user_overrides(base) == ["data=demo", "model.lr=1e-3"]
    command = search.best_command(["model.dropouts=[0.1,0.1]"], base)
    assert command == "python train.py data=demo model.lr=1e-3 'model.dropouts=[0.1,0.1]'"
