"""A hyperparameter search of the head with Optuna: a persistent study, pruning, any number of
worker processes on one study, the best run as overrides `train.py` takes as they are.

    SWEEP_DIR/study.journal          the study (Optuna's journal file), unless `search.storage`
                                     names an Optuna storage URL (PostgreSQL, SQLite): rerun
                                     the same command and the search resumes where it stopped
    SWEEP_DIR/trials/<n>/            trial n: train.py's report (metrics.json, ...), run.json,
                                     overrides.yaml (its overrides), error.txt if it failed
    SWEEP_DIR/best_overrides.yaml    the best trial's overrides, a list `key=value`
    SWEEP_DIR/best.yaml              the best trial: number, value, params, the train.py command
    SWEEP_DIR/summary.{csv,md,png}   every trial side by side (fakenews_pl.training.summary)
    SWEEP_DIR/search.lock            taken by the worker that writes the summary and best.yaml

Workers: any number of processes running the same search (same `search.study_name`, same
storage, same SWEEP_DIR) share it; `search.workers=N` starts N from one command. Together they
run exactly `search.n_trials` trials to a result:
- a trial starts only within the budget: when the complete and pruned trials plus the unfinished
  trials created before it already make `n_trials`, it is discarded (a failed trial marked
  `discarded`, no directory) and its worker waits for the others' outcome;
- no parameters run twice: once its values are chosen, a trial whose values equal those of a
  complete, pruned or running trial is discarded and another is drawn (both of two that chose
  the same values at once may be discarded, never both run); the sampler is seeded by `seed`
  and the trial's number, so workers draw different values and a resumed study new ones;
- a worker killed mid-trial: its trial is failed and its values queued again (a `retry_of`
  trial another worker takes). PostgreSQL/SQLite: Optuna's heartbeat (`search.heartbeat_interval`,
  `search.grace_period`); the journal: each trial records its worker (host, pid) and a
  heartbeat, and is failed as soon as that process is gone on this host, or when its heartbeat
  is older than the grace period (a worker on another host);
- the summary and best.yaml are written once every trial has ended, by the first worker that
  takes `search.lock` then; it records what it summarized in the study, so the others skip.

A trial that raises, or whose metric is missing or NaN, is a failed trial (its error in
`error.txt`) and the search goes on; failed trials do not count towards `search.n_trials`
(another trial runs, up to `search.max_failed_trials` failures), and a search in which no
trial completed fails. The study directory records its study's name (`study.json`).

Each trial is one training run in its worker's process, built from `pipeline` as `train.py`
builds it, with the trial's values set on the composed config and `PruneOnValidation` among the
callbacks. The search space and the study's settings live in `conf/hparams_search/`; the
`search` node is what this module reads (`search.n_trials`, `search.metric`, ...).
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import logging
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from optuna.trial import TrialState
from pytorch_lightning import Callback, LightningModule, Trainer

from fakenews_pl import temporaries
from fakenews_pl.errors import ConfigError, UserError
from fakenews_pl.training import baseline, config, pipeline, summary, tracking

log = logging.getLogger(__name__)

JOURNAL_FILE = "study.journal"
LOCK_FILE = "search.lock"
BEST_OVERRIDES = "best_overrides.yaml"
BEST_FILE = "best.yaml"
# Study attribute of earlier versions listing the trials a killed search left unfinished; now
# an interrupted trial is the one a `retry_of` trial names.
INTERRUPTED = "interrupted_trials"
# Trial user attributes: the trial an interrupted one is run again as names it (RETRY_OF); a
# trial dropped before it trained says why (DISCARDED: over the budget, or a duplicate); the
# worker process running a trial (WORKER, `temporaries.owner()`) and its last heartbeat
# (HEARTBEAT, a Unix time; journal storage only: Optuna's RDB storage keeps its own).
RETRY_OF = "retry_of"
DISCARDED = "discarded"
WORKER = "worker"
HEARTBEAT = "heartbeat"
# Study attribute: the trials (number, state) the summary files were last written from.
SUMMARIZED = "summarized"
POLL_S = 1.0  # how often a waiting worker looks at the study again
# The worker settings of `search`, for a search space file written before they existed.
WORKER_DEFAULTS = {"storage": None, "workers": 1, "heartbeat_interval": 60, "grace_period": 180}
MAX_DISCARDED = 100  # duplicates in a row before a worker gives up on its sampler
DIRECTIONS = {"minimize": "min", "maximize": "max"}
PARAM_TYPES = ("float", "int", "categorical")
# The fields each type of search-space entry takes besides `type`.
SPACE_FIELDS = {
    "float": ("low", "high", "log", "step"),
    "int": ("low", "high", "log", "step"),
    "categorical": ("choices",),
}
STUDY_FILE = "study.json"  # the name of the study a directory holds
STUDY_NAME = re.compile(r"[A-Za-z0-9_.-]+")

# `${study_dir:${search.study_name}}` in conf/search.yaml: the study's directory name, checked
# before Hydra creates the run dir (a name like `other/` would otherwise reach another study's).
if not OmegaConf.has_resolver("study_dir"):
    OmegaConf.register_new_resolver("study_dir", lambda name: check_study_name(name))

# A hook the tests use to act at the start of a trial, after its values are chosen:
# hook(trial, overrides).
TrialHook = Callable[[optuna.Trial, list[str]], None]


class SearchFailed(UserError):
    """No trial of the search completed: nothing to report, and a non-zero exit status."""


class TrialFailed(RuntimeError):
    """A trial that ran but cannot be scored (a missing or NaN objective, a NaN loss)."""


class PruneOnValidation(Callback):
    """Report `monitor` after every validation epoch (step = the 1-based epoch) and stop the
    trial with `optuna.TrialPruned` when the pruner says so; a NaN value fails the trial.

    What optuna-integration's `PyTorchLightningPruningCallback` does, for the
    `pytorch_lightning` package (that one subclasses `lightning.pytorch`'s Callback), on one
    process only.
    """

    def __init__(self, trial: optuna.Trial, monitor: str = "val/loss") -> None:
        self.trial, self.monitor = trial, monitor

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Report this epoch's value; prune or fail the trial."""
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            raise ConfigError(
                f"search.prune_on={self.monitor}: not a logged validation value "
                f"(logged: {sorted(trainer.callback_metrics)})"
            )
        value, epoch = float(value), trainer.current_epoch + 1
        if not math.isfinite(value):
            raise TrialFailed(f"{self.monitor}={value} at epoch {epoch}")
        self.trial.report(value, step=epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch}: {self.monitor}={value:.6g}")


# ------------------------------------------------------------------ the search space


def _override_text(value: Any) -> str:
    """A value as a Hydra override writes it (floats exactly, lists as given in the yaml)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)
    return str(value)


def suggest(trial: optuna.Trial, space: DictConfig) -> list[str]:
    """The trial's values for every key of `space`, as `key=value` overrides.

    Each entry: `{type: float, low, high, log?}`, `{type: int, low, high, step?, log?}` or
    `{type: categorical, choices: [...]}` (a choice may be a list written as a string,
    "[256,64]": Optuna stores plain values only).
    """
    overrides = []
    for key, spec in space.items():
        kind = spec.get("type")
        if kind == "float":
            value = trial.suggest_float(
                key, spec.low, spec.high, log=spec.get("log", False), step=spec.get("step")
            )
        elif kind == "int":
            value = trial.suggest_int(
                key, spec.low, spec.high, step=spec.get("step", 1), log=spec.get("log", False)
            )
        elif kind == "categorical":
            value = trial.suggest_categorical(key, list(spec.choices))
        else:
            raise ConfigError(f"search.space.{key}.type={kind}: expected one of {PARAM_TYPES}")
        overrides.append(f"{key}={_override_text(value)}")
    return overrides


def apply_overrides(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """A copy of `cfg` with `key=value` overrides set, values parsed as on the command line;
    a key the config does not have is refused (a typo in the search space)."""
    out = copy.deepcopy(cfg)
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        if OmegaConf.select(out, key, default=KeyError) is KeyError:
            raise ConfigError(f"{key}: no such key in the training config (search.space)")
        OmegaConf.update(out, key, override.value(), merge=False)
    return out


# ------------------------------------------------------------------ one trial


def run_trial(cfg: DictConfig, trial: optuna.Trial, prune_on: str) -> dict[str, Any]:
    """Train as `train.py` does (`pipeline.train`) with `PruneOnValidation` added; metrics.json
    holds the validation split's metrics too (`val/f1_Fake`, ...), and is returned."""
    config.check_train_config(cfg)
    callbacks = [PruneOnValidation(trial, prune_on)]
    info = {"search trial": trial.number}
    metrics, _ = pipeline.train(cfg, callbacks, info, report_val=True)
    return metrics


def _write_yaml(path: Path, data: Any) -> None:
    with temporaries.atomic_file(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(data, f, sort_keys=False)


def _note_run(trial_dir: Path, cfg: DictConfig, **fields: Any) -> None:
    """Add the trial's state (and embedding, trainable) to its run.json."""
    path = trial_dir / "run.json"
    info = json.loads(path.read_text()) if path.is_file() else {}
    info.setdefault("embedding", cfg.embedding.get("name"))
    info.setdefault("trainable", bool(cfg.trainable))
    info.update(fields)
    path.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


class Discarded(RuntimeError):
    """A trial dropped before it trained: over the budget, or a duplicate (not a failure)."""


def _discard(trial: optuna.Trial, why: str) -> None:
    trial.set_user_attr(DISCARDED, why)
    raise Discarded(f"trial {trial.number} discarded: {why}")


def check_budget(trial: optuna.Trial, n_trials: int) -> None:
    """Discard `trial` when the trials that ran to a result, with the unfinished ones created
    before it, already make `n_trials`: of workers starting trials at once, only as many run as
    the budget holds (a failure among those ahead frees a place, which the next trial takes)."""
    trials = trial.study.get_trials(deepcopy=False)
    counted = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    unfinished = (TrialState.RUNNING, TrialState.WAITING)
    ahead = sum(t.number < trial.number and t.state in unfinished for t in trials)
    if counted + ahead >= n_trials:
        _discard(trial, f"over the budget ({counted} ran, {ahead} running, n_trials={n_trials})")


def check_unique(trial: optuna.Trial) -> None:
    """Discard `trial` when its values equal those of another complete, pruned or running
    trial. Every worker writes its trial's values before it reads the others', so of two trials
    that chose the same values at once at least one sees the other: neither or one runs."""
    taken = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    for other in trial.study.get_trials(deepcopy=False, states=taken):
        if other.number != trial.number and other.params == trial.params:
            _discard(trial, f"the values of trial {other.number}")


@contextlib.contextmanager
def heartbeat(trial: optuna.Trial, interval: float | None) -> Iterator[None]:
    """Record the trial's heartbeat every `interval` seconds while it runs (journal storage:
    Optuna's RDB storage beats on its own); None: none."""
    if not interval:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            try:
                trial.set_user_attr(HEARTBEAT, time.time())
            except Exception as e:  # failed by another worker as stale: say so, stop beating
                log.warning(f"Trial {trial.number}: heartbeat stopped ({_one_line(e)})")
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _reseed(trial: optuna.Trial, sampler_cfg: DictConfig) -> None:
    """A fresh sampler seeded by the seed and this trial's number: workers that start together
    draw different values, and a resumed study new ones (a seeded sampler restarts its
    sequence)."""
    if sampler_cfg.get("seed") is None:
        return
    mixed = np.random.SeedSequence([int(sampler_cfg.seed), trial.number]).generate_state(1)[0]
    trial.study.sampler = instantiate(OmegaConf.merge(sampler_cfg, {"seed": int(mixed)}))


def make_objective(
    cfg: DictConfig,
    sweep_dir: Path,
    hook: TrialHook | None = None,
    heartbeat_s: float | None = None,
) -> Callable[[optuna.Trial], float]:
    """The study's objective: a trial within the budget, its values (discarded when another
    trial has them) -> a training run in `trials/<n>/` -> the value of `search.metric` in its
    metrics.json. A failure or NaN writes `error.txt` and raises (Optuna records the trial as
    failed and goes on). `heartbeat_s`: record a heartbeat that often (journal storage)."""
    s = cfg.search

    def objective(trial: optuna.Trial) -> float:
        started = time.perf_counter()
        trial.set_user_attr(WORKER, temporaries.owner())
        check_budget(trial, s.n_trials)
        _reseed(trial, s.sampler)
        overrides = suggest(trial, s.space)
        check_unique(trial)
        trial_dir = sweep_dir / "trials" / str(trial.number)
        trial_dir.mkdir(parents=True)  # a trial's directory is its own: never one found there
        _write_yaml(trial_dir / "overrides.yaml", overrides)
        trial.set_user_attr("overrides", overrides)
        try:
            with heartbeat(trial, heartbeat_s):
                if hook is not None:
                    hook(trial, overrides)
                trial_cfg = apply_overrides(cfg, [*overrides, f"paths.output_dir={trial_dir}"])
                metrics = run_trial(trial_cfg, trial, s.prune_on)
            value = metrics.get(s.metric)
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise TrialFailed(f"search.metric {s.metric}={value} in metrics.json")
        except optuna.TrialPruned as e:
            _note_run(trial_dir, cfg, state="PRUNED", note=str(e), wall_s=_since(started))
            raise
        except KeyboardInterrupt:
            requeue(trial.study, trial, sweep_dir, "interrupted")
            raise
        except Exception as e:
            (trial_dir / "error.txt").write_text(
                f"error: {_one_line(e)}\n\n{traceback.format_exc()}", encoding="utf-8"
            )
            _note_run(trial_dir, cfg, state="FAIL", wall_s=_since(started))
            raise
        _note_run(trial_dir, cfg, state="COMPLETE", value=value)
        return float(value)

    return objective


def _since(started: float) -> float:
    return time.perf_counter() - started


def _one_line(exc: BaseException) -> str:
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ------------------------------------------------------------------ the study


def setting(cfg: DictConfig, key: str) -> Any:
    """`search.<key>` of the worker settings, or its default where the search space file
    predates it."""
    return cfg.search.get(key, WORKER_DEFAULTS[key])


def is_journal(cfg: DictConfig) -> bool:
    """Whether the study is SWEEP_DIR's journal file (`search.storage` null) or a database."""
    return not setting(cfg, "storage")


def open_storage(cfg: DictConfig, sweep_dir: Path) -> optuna.storages.BaseStorage:
    """The journal file in `sweep_dir`, or the database `search.storage` names, with Optuna's
    heartbeat: a trial whose worker stopped beating for `search.grace_period` seconds is failed
    and its values queued again (`requeue`)."""
    url = setting(cfg, "storage")
    if is_journal(cfg):
        backend = optuna.storages.journal.JournalFileBackend(str(sweep_dir / JOURNAL_FILE))
        return optuna.storages.JournalStorage(backend)

    def retry(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        requeue(study, trial, sweep_dir, "interrupted (its worker stopped beating)")

    try:
        from sqlalchemy.exc import IntegrityError, ProgrammingError
    except ImportError as e:
        raise UserError(
            f"search.storage={_redacted(url)}: {_one_line(e)} (pip install -e "
            '".[sweep]" brings SQLAlchemy and psycopg)'
        ) from None
    for attempt in range(6):  # workers starting together race creating the tables: again
        try:
            return optuna.storages.RDBStorage(
                url,
                heartbeat_interval=int(setting(cfg, "heartbeat_interval")),
                grace_period=int(setting(cfg, "grace_period")),
                heartbeat_stale_trial_callback=retry,
            )
        except (IntegrityError, ProgrammingError) as e:
            if attempt == 5:
                raise UserError(f"search.storage={_redacted(url)}: {_one_line(e)}") from None
            time.sleep(0.2 * (attempt + 1))
        except Exception as e:  # a bad URL, a missing driver, a server that does not answer
            raise UserError(
                f"search.storage={_redacted(url)}: cannot open it ({_one_line(e)})"
            ) from None
    raise AssertionError("unreachable")


def _redacted(url: str) -> str:
    """A storage URL without its password."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", str(url))


def open_study(cfg: DictConfig, sweep_dir: Path, pruner: Any = None) -> optuna.Study:
    """The study in `search.storage` (or `SWEEP_DIR/study.journal`), created or loaded
    (`search.study_name`), with the pruner of `search.pruner` and the sampler of
    `search.sampler` (re-seeded for each trial by its number: `make_objective`)."""
    s = cfg.search
    if s.direction not in DIRECTIONS:
        raise ConfigError(f"search.direction={s.direction}: expected one of {list(DIRECTIONS)}")
    claim_study_dir(sweep_dir, s.study_name)
    return optuna.create_study(
        storage=open_storage(cfg, sweep_dir),
        study_name=s.study_name,
        direction=s.direction,
        sampler=instantiate(s.sampler),
        pruner=pruner if pruner is not None else instantiate(s.pruner),
        load_if_exists=True,
    )


def claim_study_dir(sweep_dir: Path, name: str) -> None:
    """Record `name` in `SWEEP_DIR/study.json`, or refuse a directory that records another
    study (a search never writes into another study's directory)."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    record = sweep_dir / STUDY_FILE
    if record.is_file():
        try:
            owner = json.loads(record.read_text(encoding="utf-8")).get("study_name")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            owner = None
        if owner != name:
            raise UserError(
                f"{sweep_dir}: this directory holds study {owner!r} ({STUDY_FILE}), not "
                f"{name!r}; a search writes only into its own study's directory"
            )
        return
    temporaries.write_json(record, {"study_name": name})


def check_study_name(name: Any) -> str:
    """`search.study_name` is one path segment: letters, digits, `-`, `_`, `.` (not `.`/`..`),
    so it names one directory under `logs/search/` and no other study's."""
    if not (isinstance(name, str) and STUDY_NAME.fullmatch(name) and name not in (".", "..")):
        raise ConfigError(
            f"search.study_name={name}: expected one name of letters, digits, '-', '_' and '.' "
            "(not '.' or '..', no '/'): it names the study's directory"
        )
    return name


def requeue(study: optuna.Study, trial: Any, sweep_dir: Path, why: str) -> None:
    """Run an interrupted trial's values again: a waiting trial (`retry_of` its number) that
    the next free worker takes; `error.txt` in its directory says why."""
    study.enqueue_trial(dict(trial.params), user_attrs={RETRY_OF: trial.number})
    trial_dir = sweep_dir / "trials" / str(trial.number)
    if trial_dir.is_dir():
        (trial_dir / "error.txt").write_text(f"error: {why}; its values run again\n")
    log.info(f"Trial {trial.number}: {why}; its values run again")


def _beat_age(trial: optuna.trial.FrozenTrial) -> float:
    """Seconds since the trial's last heartbeat (or its start)."""
    last = trial.user_attrs.get(HEARTBEAT)
    if last is None and trial.datetime_start is not None:
        last = trial.datetime_start.timestamp()  # naive local time, as Optuna stores it
    return time.time() - last if last is not None else 0.0


def fail_stale(study: optuna.Study, cfg: DictConfig, sweep_dir: Path) -> None:
    """Fail the running trials whose worker is gone and queue their values again. A database:
    Optuna's heartbeat check (`requeue` is its callback). The journal: a trial whose worker
    process no longer runs on this host, or (another host's) whose heartbeat is older than
    `search.grace_period`. Of workers failing the same trial at once, only the one whose update
    lands first requeues it."""
    if not is_journal(cfg):
        optuna.storages.fail_stale_trials(study)
        return
    here = temporaries.owner().partition(":")[0]
    for trial in study.get_trials(deepcopy=True, states=(TrialState.RUNNING,)):
        owner = str(trial.user_attrs.get(WORKER, ""))
        if owner.partition(":")[0] == here:  # this host's: gone or not, exactly
            stale = temporaries.owner_gone(owner)
        else:  # another host's, or a trial whose worker has not said yet who it is
            stale = _beat_age(trial) > setting(cfg, "grace_period")
        if not stale:
            continue
        try:
            study.tell(trial.number, state=TrialState.FAIL)
        except (ValueError, RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # another worker failed it first (or its own worker finished it)
        requeue(study, trial, sweep_dir, "interrupted (its worker was killed)")


def _finished_normally(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(False, states=(TrialState.COMPLETE, TrialState.PRUNED))


def interrupted_trials(study: optuna.Study) -> set[int]:
    """Trials a kill or an interrupt stopped: those a `retry_of` trial runs again (and those an
    earlier version listed in the study's `interrupted_trials`)."""
    retried = {t.user_attrs[RETRY_OF] for t in study.get_trials(False) if RETRY_OF in t.user_attrs}
    return retried | set(study.user_attrs.get(INTERRUPTED, []))


def counted_trials(study: optuna.Study) -> int:
    """Trials that ran to a result, complete or pruned: what `search.n_trials` counts. Failed
    ones (and those a kill interrupted, and discarded ones) do not use up the budget."""
    return len(_finished_normally(study))


def failed_trials(study: optuna.Study) -> int:
    """Trials that failed (raised, or gave no finite metric); interrupted and discarded ones
    left out."""
    interrupted = interrupted_trials(study)
    failed = study.get_trials(False, states=(TrialState.FAIL,))
    return sum(t.number not in interrupted and DISCARDED not in t.user_attrs for t in failed)


def discarded_trials(study: optuna.Study) -> int:
    """Trials dropped before they trained (over the budget, or duplicates)."""
    return sum(DISCARDED in t.user_attrs for t in study.get_trials(False))


def space_size(space: DictConfig) -> float:
    """How many distinct value sets `space` holds (inf with a continuous float)."""
    size = 1.0
    for spec in space.values():
        if spec.type == "categorical":
            size *= len(spec.choices)
        elif spec.type == "int":
            size *= len(range(spec.low, spec.high + 1, spec.get("step") or 1))
        elif spec.get("step") is not None:
            size *= math.floor((spec.high - spec.low) / spec.step + 1e-9) + 1
        else:
            return math.inf
    return size


def check_space(space: Any) -> None:
    """Every entry of `search.space` before any trial: a known type, numeric bounds with
    low <= high (log: low > 0), a non-empty list of choices, no unknown field."""
    if not isinstance(space, DictConfig) or not space:
        raise ConfigError("search.space: expected a mapping of config keys to ranges")
    for key, spec in space.items():
        where = f"search.space.{key}"
        if not isinstance(spec, DictConfig):
            raise ConfigError(f"{where}={spec}: expected {{type: float|int|categorical, ...}}")
        kind = spec.get("type")
        if kind not in PARAM_TYPES:
            raise ConfigError(f"{where}.type={kind}: expected one of {list(PARAM_TYPES)}")
        unknown = sorted(set(spec) - {"type", *SPACE_FIELDS[kind]})
        if unknown:
            raise ConfigError(
                f"{where}: unknown field {unknown[0]!r} for type {kind}; expected "
                f"{', '.join(SPACE_FIELDS[kind])}"
            )
        try:
            _distribution(spec)
        except (ValueError, TypeError, KeyError) as e:
            raise ConfigError(f"{where}={OmegaConf.to_container(spec)}: {e}") from None


def _distribution(spec: DictConfig) -> optuna.distributions.BaseDistribution:
    """The Optuna distribution of one space entry (its checks raise ValueError)."""
    kind = spec.type
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, ListConfig) or len(choices) == 0:
            raise ValueError("expected a non-empty list of choices")
        return optuna.distributions.CategoricalDistribution(list(choices))
    number, expected = (
        (config.is_int, "an integer")
        if kind == "int"
        else (lambda v: config.is_number(v) and math.isfinite(v), "a number")
    )
    for field in ("low", "high"):
        if not number(spec.get(field)):
            raise ValueError(f"{field}={spec.get(field)}: expected {expected}")
    if spec.get("step") is not None and not (number(spec.step) and spec.step > 0):
        raise ValueError(f"step={spec.step}: expected a number > 0")
    if not isinstance(spec.get("log", False), bool):
        raise ValueError(f"log={spec.log}: expected true or false")
    if kind == "int":
        step = spec.get("step") or 1
        return optuna.distributions.IntDistribution(
            spec.low, spec.high, spec.get("log", False), step
        )
    return optuna.distributions.FloatDistribution(
        spec.low, spec.high, log=spec.get("log", False), step=spec.get("step")
    )


def check_search_config(cfg: DictConfig) -> None:
    """The `search` node and what a search needs of the training config, before any work."""
    if "search" not in cfg:
        raise ConfigError(
            "search: missing; pick a search space, e.g. python search.py hparams_search=head_optuna"
        )
    s = cfg.search
    if not (isinstance(s.n_trials, int) and s.n_trials >= 1):
        raise ConfigError(f"search.n_trials={s.n_trials}: expected a trial count >= 1")
    devices = cfg.trainer.get("devices")
    if devices != 1 or cfg.trainer.get("num_nodes", 1) != 1:
        raise ConfigError(
            f"trainer.devices={devices}: expected 1 (a search trains its trials one after "
            "another in its own process; use trainer=cpu or trainer=gpu)"
        )
    check_study_name(s.study_name)
    workers = setting(cfg, "workers")
    if not (config.is_int(workers) and workers >= 1):
        raise ConfigError(f"search.workers={workers}: expected a count of processes >= 1")
    storage = setting(cfg, "storage")
    if storage is not None and not (isinstance(storage, str) and "://" in storage):
        raise ConfigError(
            f"search.storage={storage}: expected null (the journal file in the study's "
            "directory) or an Optuna storage URL, e.g. postgresql+psycopg://user@host/db"
        )
    beat, grace = setting(cfg, "heartbeat_interval"), setting(cfg, "grace_period")
    if not (config.is_int(beat) and beat >= 1 and config.is_int(grace) and grace > beat):
        raise ConfigError(
            f"search.heartbeat_interval={beat}, search.grace_period={grace}: expected whole "
            "seconds, 1 <= heartbeat_interval < grace_period"
        )
    max_failed = s.get("max_failed_trials")
    if max_failed is not None and not (config.is_int(max_failed) and max_failed >= 0):
        raise ConfigError(f"search.max_failed_trials={max_failed}: expected a count >= 0 or null")
    check_space(s.space)
    for key in s.space:
        node = OmegaConf.select(cfg, key, default=KeyError)
        if node is KeyError:
            raise ConfigError(f"search.space.{key}: no such key in the training config")
        if isinstance(node, DictConfig):  # e.g. `model`: a trial sets values, not groups
            raise ConfigError(
                f"search.space.{key}: a config group or node, which a trial cannot choose; "
                f"choose it on the command line (python search.py {key}=...) and search its "
                f"keys ({key}.<key>)"
            )
    # After the keys: a space of the wrong keys is named as such, not counted.
    if s.n_trials > space_size(s.space):
        raise ConfigError(
            f"search.n_trials={s.n_trials}: the search space holds only "
            f"{int(space_size(s.space))} distinct sets of values, and no values run twice"
        )
    if baseline.is_baseline(cfg.model) and s.metric.startswith(("val/best_", "fit/")):
        raise ConfigError(
            f"search.metric={s.metric}: model=tfidf_lr is one fit, without epochs, so its "
            "metrics.json has no such key; score its trials by optimized_metric=val/loss or "
            "another val/ key"
        )
    config.check_train_config(cfg)


def best_value(study: optuna.Study) -> float | None:
    """The best complete trial's value, or None when no trial completed."""
    return study.best_value if study.get_trials(False, states=(TrialState.COMPLETE,)) else None


# What `search.workers` adds to its child workers' command lines: not the user's overrides.
WORKER_ONLY = ("++search.workers=", "hydra.output_subdir=", "hydra.job.name=search-worker")


def user_overrides(base_overrides: list[str]) -> list[str]:
    """The command line's overrides less those a worker process was started with."""
    return [o for o in base_overrides if not o.startswith(WORKER_ONLY)]


def best_command(overrides: list[str], base_overrides: list[str]) -> str:
    """The train.py command line that repeats the best trial."""
    return shlex.join(["python", "train.py", *user_overrides(base_overrides), *overrides])


def write_best(study: optuna.Study, sweep_dir: Path, base_overrides: list[str]) -> str | None:
    """`best_overrides.yaml` and `best.yaml` from the best complete trial; its command."""
    if not study.get_trials(False, states=(TrialState.COMPLETE,)):
        return None
    best = study.best_trial
    overrides = list(best.user_attrs["overrides"])
    command = best_command(overrides, base_overrides)
    _write_yaml(sweep_dir / BEST_OVERRIDES, overrides)
    _write_yaml(
        sweep_dir / BEST_FILE,
        {
            "trial": best.number,
            "value": best.value,
            "params": dict(best.params),
            "overrides": overrides,
            "base_overrides": user_overrides(base_overrides),
            "command": command,
        },
    )
    return command


def _ended(study: optuna.Study) -> list[list]:
    """The trials that ran (not discarded) as [number, state]: what a summary is written from."""
    return [
        [t.number, t.state.name]
        for t in study.get_trials(False)
        if t.state.is_finished() and DISCARDED not in t.user_attrs
    ]


def write_results(
    study: optuna.Study, cfg: DictConfig, sweep_dir: Path, base_overrides: list[str]
) -> bool:
    """The summary files and best.yaml, once no trial runs any more: written by the first
    worker that takes `search.lock` then (each file atomically), which records in the study
    which trials they show; a worker finding them written from the same trials writes nothing.
    True when this worker wrote them."""
    s = cfg.search
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with open(sweep_dir / LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released on close, or by the kernel on a kill
        ended = _ended(study)
        files = [*summary.SUMMARY_FILES, BEST_FILE]
        done = all((sweep_dir / name).is_file() for name in files)
        if done and study.user_attrs.get(SUMMARIZED) == ended:
            return False
        summary.write_summary(
            sweep_dir, sweep_dir / "trials", metric=s.metric, mode=DIRECTIONS[s.direction]
        )
        write_best(study, sweep_dir, base_overrides)
        study.set_user_attr(SUMMARIZED, ended)
    return True


def work(
    study: optuna.Study,
    cfg: DictConfig,
    sweep_dir: Path,
    objective: Callable[[optuna.Trial], float],
    max_failed: int,
) -> None:
    """Run trials until the study holds `search.n_trials` that ran to a result, or
    `max_failed` trials failed since this worker started; wait (failing stale trials) while
    the trials other workers run fill the budget, and at the end until none runs."""
    n_trials, failed_before, discarded = cfg.search.n_trials, failed_trials(study), 0
    while True:
        fail_stale(study, cfg, sweep_dir)
        trials = study.get_trials(deepcopy=False)
        counted = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
        running = sum(t.state == TrialState.RUNNING for t in trials)
        waiting = any(t.state == TrialState.WAITING for t in trials)
        if counted >= n_trials or failed_trials(study) - failed_before >= max_failed:
            if not running:
                return
        elif waiting or counted + running < n_trials:
            before = discarded_trials(study)
            study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True)
            discarded = discarded + 1 if discarded_trials(study) > before else 0
            if discarded >= MAX_DISCARDED:
                raise UserError(
                    f"search {cfg.search.study_name}: {discarded} trials in a row drew values "
                    "that other trials have; a small discrete space is searched best by a "
                    "sampler that knows it: search.sampler._target_="
                    "optuna.samplers.BruteForceSampler"
                )
            continue
        time.sleep(POLL_S)


def run_search(
    cfg: DictConfig,
    sweep_dir: str | Path,
    base_overrides: list[str] | None = None,
    pruner: Any = None,
    hook: TrialHook | None = None,
) -> optuna.Study:
    """Run (or resume, or join) the study until `search.n_trials` trials ran to an outcome;
    the worker that sees the last one end writes the best trial's overrides and the summary
    into `sweep_dir`.

    `base_overrides`: the command line's own overrides, repeated in the printed train.py
    command; `pruner` replaces `search.pruner`; `hook` runs at each trial's start.
    """
    check_search_config(cfg)
    sweep_dir = Path(sweep_dir)
    s = cfg.search
    pipeline.clean_stale_temporaries(cfg)
    trials_dir = sweep_dir / "trials"
    had_trials = trials_dir.is_dir() and any(trials_dir.iterdir())  # before the study is read
    study = open_study(cfg, sweep_dir, pruner)
    tracking.start_sweep(cfg, sweep_dir, "search", base_overrides or [])  # trials: children
    if had_trials and not study.trials:
        url = setting(cfg, "storage")
        where = JOURNAL_FILE if is_journal(cfg) else f"search.storage={_redacted(url)}"
        raise UserError(
            f"{trials_dir} holds trials, but the study in {where} has none (it was removed?); "
            "move that directory away or choose another search.study_name"
        )
    remaining = s.n_trials - counted_trials(study)
    log.info(f"Study {s.study_name} in {sweep_dir}: {max(remaining, 0)} of {s.n_trials} to run")
    # Failed trials are run again, up to max_failed_trials failures while this worker runs.
    max_failed = s.get("max_failed_trials")
    max_failed = s.n_trials if max_failed is None else max_failed
    failed_before = failed_trials(study)
    beat = setting(cfg, "heartbeat_interval") if is_journal(cfg) else None
    objective = make_objective(cfg, sweep_dir, hook, heartbeat_s=beat)
    work(study, cfg, sweep_dir, objective, max_failed)
    if write_results(study, cfg, sweep_dir, base_overrides or []):
        log.info(f"Wrote {sweep_dir}/summary.md and {BEST_FILE}")
        tracking.end_sweep(sweep_dir)  # the worker that wrote the summary closes the parent
    failed = failed_trials(study) - failed_before
    if best_value(study) is None:
        raise SearchFailed(
            f"search {s.study_name}: no trial completed ({failed} failed in this search, "
            f"search.max_failed_trials={max_failed}); their errors are in "
            f"{sweep_dir / 'trials'}/<n>/error.txt"
        )
    if s.n_trials - counted_trials(study) > 0:
        log.warning(
            f"Stopped after {failed} failed trials (search.max_failed_trials={max_failed}): "
            f"{counted_trials(study)} of {s.n_trials} trials ran; see trials/<n>/error.txt"
        )
    command = best_command(list(study.best_trial.user_attrs["overrides"]), base_overrides or [])
    print(f"Best trial {study.best_trial.number}: {s.metric}={study.best_value:.6g}")
    print(f"Repeat it with:\n    {command}")
    return study


# ------------------------------------------------------------------ worker processes


@contextlib.contextmanager
def worker_processes(cfg: DictConfig, script: str, argv: list[str]) -> Iterator[list]:
    """`search.workers=N`: N-1 more `script` processes with this command line's arguments (and
    `search.workers=1`, no `.hydra/` of their own, their log in `search-worker<k>.log`), in
    sessions of their own; SIGTERM and SIGINT sent to this process go to them too. Yields the
    processes and waits for them on the way out; a worker that exits non-zero is a UserError."""
    n = int(setting(cfg, "workers"))
    args = [a for a in argv if not a.lstrip("+").startswith("search.workers=")]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                script,
                *args,
                "++search.workers=1",
                "hydra.output_subdir=null",
                f"hydra.job.name=search-worker{k}",
            ],
            start_new_session=True,  # a terminal's Ctrl-C reaches them once: through this one
        )  # fmt: skip
        for k in range(1, n)
    ]
    if not procs:
        yield procs
        return

    def forward(signum: int, frame: Any) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)
        previous = handlers[signum]
        if callable(previous):
            previous(signum, frame)
        else:  # SIG_DFL: end as the signal would have
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    handlers = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    log.info(f"Started {len(procs)} more workers: pids {[p.pid for p in procs]}")
    try:
        yield procs
    finally:
        codes = [proc.wait() for proc in procs]
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    bad = [(proc.pid, code) for proc, code in zip(procs, codes, strict=True) if code != 0]
    if bad:
        raise UserError(f"search workers exited with an error (pid, status): {bad}")
