"""A hyperparameter search of the head with Optuna: a persistent study, pruning, the best run
as overrides `train.py` takes as they are.

    SWEEP_DIR/study.journal          the study (Optuna's journal file): rerun the same command
                                     and the search resumes where it stopped
    SWEEP_DIR/trials/<n>/            trial n: train.py's report (metrics.json, ...), run.json,
                                     overrides.yaml (its overrides), error.txt if it failed
    SWEEP_DIR/best_overrides.yaml    the best trial's overrides, a list `key=value`
    SWEEP_DIR/best.yaml              the best trial: number, value, params, the train.py command
    SWEEP_DIR/summary.{csv,md,png}   every trial side by side (fakenews_pl.training.summary)
    SWEEP_DIR/search.lock            held while a search runs: one search per study

A trial that raises, or whose metric is missing or NaN, is a failed trial (its error in
`error.txt`) and the search goes on; failed trials do not count towards `search.n_trials`
(another trial runs, up to `search.max_failed_trials` failures), and a search in which no
trial completed fails. A trial a killed search left running is marked failed and its values
run again. The study directory records its study's name (`study.json`); a resumed study's
sampler is seeded by the study's seed and trial count, so it proposes new values.

Each trial is one training run in this process, built from `pipeline` as `train.py` builds it,
with the trial's values set on the composed config and `PruneOnValidation` among the
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
import re
import shlex
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
# Study attribute listing the trials a killed or interrupted search left unfinished: they are
# marked failed, not counted towards n_trials, and their values tried again.
INTERRUPTED = "interrupted_trials"
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


def make_objective(
    cfg: DictConfig, sweep_dir: Path, hook: TrialHook | None = None
) -> Callable[[optuna.Trial], float]:
    """The study's objective: a trial's values -> a training run in `trials/<n>/` -> the
    value of `search.metric` in its metrics.json. A failure or NaN writes `error.txt` and
    raises (Optuna records the trial as failed and goes on)."""
    s = cfg.search

    def objective(trial: optuna.Trial) -> float:
        started = time.perf_counter()
        trial_dir = sweep_dir / "trials" / str(trial.number)
        trial_dir.mkdir(parents=True)  # a trial's directory is its own: never one found there
        overrides = suggest(trial, s.space)
        _write_yaml(trial_dir / "overrides.yaml", overrides)
        trial.set_user_attr("overrides", overrides)
        try:
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
            _interrupted(trial.study, trial.number)
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


def open_study(cfg: DictConfig, sweep_dir: Path, pruner: Any = None) -> optuna.Study:
    """The study in `SWEEP_DIR/study.journal`, created or loaded (`search.study_name`), with
    the pruner of `search.pruner` and the sampler of `search.sampler`, seeded by the study's
    seed and its trial count: a resumed or extended search goes on with new values instead of
    drawing those of its first trials again (a seeded sampler restarts its sequence)."""
    s = cfg.search
    if s.direction not in DIRECTIONS:
        raise ConfigError(f"search.direction={s.direction}: expected one of {list(DIRECTIONS)}")
    claim_study_dir(sweep_dir, s.study_name)
    backend = optuna.storages.journal.JournalFileBackend(str(sweep_dir / JOURNAL_FILE))
    storage = optuna.storages.JournalStorage(backend)
    try:
        started = len(optuna.load_study(study_name=s.study_name, storage=storage).trials)
    except KeyError:  # a new study
        started = 0
    sampler_cfg = s.sampler
    if started and sampler_cfg.get("seed") is not None:
        mixed = np.random.SeedSequence([int(sampler_cfg.seed), started]).generate_state(1)[0]
        sampler_cfg = OmegaConf.merge(sampler_cfg, {"seed": int(mixed)})
    return optuna.create_study(
        storage=storage,
        study_name=s.study_name,
        direction=s.direction,
        sampler=instantiate(sampler_cfg),
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


def _interrupted(study: optuna.Study, number: int) -> None:
    seen = list(study.user_attrs.get(INTERRUPTED, []))
    if number not in seen:
        study.set_user_attr(INTERRUPTED, [*seen, number])


@contextlib.contextmanager
def only_search(sweep_dir: Path) -> Iterator[None]:
    """Hold `SWEEP_DIR/search.lock` while searching: a second search of the same study is
    refused (so a RUNNING trial found on start is one a killed search left). The kernel drops
    the lock when the process ends, killed or not."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with open(sweep_dir / LOCK_FILE, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"{sweep_dir}: another search of this study is running (it holds {LOCK_FILE}); "
                "wait for it, or give this one another search.study_name"
            ) from None
        yield


def recover_interrupted(study: optuna.Study, sweep_dir: Path) -> list[int]:
    """Trials a killed search left RUNNING: marked failed (with `error.txt`), not counted, and
    their values queued to run again. Only one search may use a study at a time."""
    numbers = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        _interrupted(study, trial.number)
        if trial.params:
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        study.tell(trial.number, state=TrialState.FAIL)
        trial_dir = sweep_dir / "trials" / str(trial.number)
        if trial_dir.is_dir():
            (trial_dir / "error.txt").write_text(
                "error: interrupted (the search was killed); its values run again\n"
            )
        numbers.append(trial.number)
    return numbers


def counted_trials(study: optuna.Study) -> int:
    """Trials that ran to a result, complete or pruned: what `search.n_trials` counts. Failed
    ones (and those a kill interrupted) do not use up the budget."""
    done = (TrialState.COMPLETE, TrialState.PRUNED)
    return len(study.get_trials(False, states=done))


def failed_trials(study: optuna.Study) -> int:
    """Trials that failed (raised, or gave no finite metric), interrupted ones left out."""
    interrupted = set(study.user_attrs.get(INTERRUPTED, []))
    failed = study.get_trials(False, states=(TrialState.FAIL,))
    return sum(t.number not in interrupted for t in failed)


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


def best_command(overrides: list[str], base_overrides: list[str]) -> str:
    """The train.py command line that repeats the best trial."""
    return shlex.join(["python", "train.py", *base_overrides, *overrides])


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
            "base_overrides": list(base_overrides),
            "command": command,
        },
    )
    return command


def run_search(
    cfg: DictConfig,
    sweep_dir: str | Path,
    base_overrides: list[str] | None = None,
    pruner: Any = None,
    hook: TrialHook | None = None,
) -> optuna.Study:
    """Run (or resume) the study until `search.n_trials` trials ran to an outcome; write the
    best trial's overrides and the summary into `sweep_dir`.

    `base_overrides`: the command line's own overrides, repeated in the printed train.py
    command; `pruner` replaces `search.pruner`; `hook` runs at each trial's start.
    """
    check_search_config(cfg)
    sweep_dir = Path(sweep_dir)
    s = cfg.search
    pipeline.clean_stale_temporaries(cfg)
    with only_search(sweep_dir):
        study = open_study(cfg, sweep_dir, pruner)
        tracking.start_sweep(cfg, sweep_dir, "search", base_overrides or [])  # trials: children
        trials_dir = sweep_dir / "trials"
        if not study.trials and trials_dir.is_dir() and any(trials_dir.iterdir()):
            raise UserError(
                f"{trials_dir} holds trials, but the study's journal {JOURNAL_FILE} has none (it "
                "was removed?); move that directory away or choose another search.study_name"
            )
        retried = recover_interrupted(study, sweep_dir)
        if retried:
            log.info(f"Trials {retried} were interrupted by a killed search: they run again")
        remaining = s.n_trials - counted_trials(study)
        log.info(f"Study {s.study_name} in {sweep_dir}: {max(remaining, 0)} of {s.n_trials} to run")
        # Failed trials are run again, up to max_failed_trials failures in this search.
        max_failed = s.get("max_failed_trials")
        max_failed = s.n_trials if max_failed is None else max_failed
        failed_before = failed_trials(study)
        objective = make_objective(cfg, sweep_dir, hook)
        while (remaining := s.n_trials - counted_trials(study)) > 0:
            budget = max_failed - (failed_trials(study) - failed_before)
            if budget <= 0:
                break
            study.optimize(
                objective, n_trials=min(remaining, budget), catch=(Exception,), gc_after_trial=True
            )
        summary.write_summary(
            sweep_dir, sweep_dir / "trials", metric=s.metric, mode=DIRECTIONS[s.direction]
        )
        command = write_best(study, sweep_dir, base_overrides or [])
        tracking.end_sweep(sweep_dir)
    failed = failed_trials(study) - failed_before
    if command is None:
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
    print(f"Best trial {study.best_trial.number}: {s.metric}={study.best_value:.6g}")
    print(f"Repeat it with:\n    {command}")
    return study
