"""Experiment tracking in MLflow (`logger=mlflow`, the `[track]` extra).

A run with an MLflow logger (conf/logger/mlflow.yaml: Lightning's `MLFlowLogger`) is one MLflow
run, created here before training (`tracked`, around `pipeline.train`) so that a failure is
recorded too (status FAILED, tag `error`). Lightning's logger writes into it while the run
trains (the model's hyperparameters, the per-epoch `train/*` and `val/*` values); after the
report, this module adds:

- params: the resolved config, flattened to dotted keys (`model.lr`); a value longer than
  MLflow's limit is cut, and the whole config is the `config.yaml` artifact;
- metrics: every number of metrics.json (`test/accuracy`, ...) at the last step; a key the
  epochs already logged as a series (`train/accuracy`) is logged as `report/<key>`;
- artifacts: the report's files (report.md, metrics.json, classification_report.csv, the
  PNGs), run.json and config.yaml.

The TF-IDF baseline (no Trainer) is logged the same way, without epochs.

A multirun or a search is one parent run (`start_sweep`, `end_sweep`), recorded in its sweep
directory (`mlflow_run.json`); a run whose directory lies in that sweep directory (a job's
`SWEEP_DIR/<n>`, a trial's `SWEEP_DIR/trials/<n>`) is its child (tag `mlflow.parentRunId`),
whichever process or launcher runs it. The parent gets the sweep's summary files at the end.

mlflow is imported only once a run uses it: without the extra, `check_config` refuses
`logger=mlflow` in one line before any work.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import functools
import importlib.util
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from fakenews_pl import temporaries
from fakenews_pl.errors import EXIT_STATUS, ConfigError, one_line

EXTRA_MISSING = 'logger=mlflow needs the [track] extra: pip install -e ".[track]"'
LOGGER_CLASS = "MLFlowLogger"
PARENT_FILE = "mlflow_run.json"  # in a sweep directory: its parent run
PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
# What a run logs as artifacts besides reports.REPORT_FILES, and what a sweep's parent gets.
RUN_FILES = ("run.json",)
SWEEP_FILES = ("summary.md", "summary.csv", "summary.png", "best.yaml", "best_overrides.yaml")
CONFIG_ARTIFACT = "config.yaml"
# How far above a run's directory its sweep directory may be: a multirun job's dir is
# SWEEP_DIR/<n>, a search trial's SWEEP_DIR/trials/<n>.
SWEEP_DEPTH = 2


def mlflow_installed() -> bool:
    """Whether mlflow can be imported (the [track] extra), without importing it."""
    return importlib.util.find_spec("mlflow") is not None


def mlflow_entry(cfg: DictConfig) -> tuple[str, DictConfig] | None:
    """(key, node) of the MLflow logger among `cfg.logger`, or None."""
    for key, entry in (cfg.get("logger") or {}).items():
        if isinstance(entry, DictConfig) and str(entry.get("_target_", "")).endswith(LOGGER_CLASS):
            return str(key), entry
    return None


def check_config(cfg: DictConfig) -> None:
    """Refuse an MLflow logger without mlflow installed (one line, before any work)."""
    if mlflow_entry(cfg) is not None and not mlflow_installed():
        raise ConfigError(EXTRA_MISSING)


# ------------------------------------------------------------------ stores and experiments


def tracking_uri(entry: DictConfig) -> str:
    """The logger's `tracking_uri`, else MLflow's own default (`MLFLOW_TRACKING_URI`, ...)."""
    if entry.get("tracking_uri"):
        return str(entry.tracking_uri)
    import mlflow

    return mlflow.get_tracking_uri()


def _local_db(uri: str) -> Path | None:
    """The database file of a `sqlite:///PATH` store, else None."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def client_for(uri: str) -> Any:
    """An `MlflowClient` on `uri` (a local sqlite store's folder is made first); a store
    MLflow refuses is a `ConfigError` naming `logger.mlflow.tracking_uri`."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    db = _local_db(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    # "Creating initial MLflow database tables...": once per new store, nothing to act on.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    try:
        return MlflowClient(tracking_uri=uri)
    except MlflowException as e:
        raise ConfigError(f"logger.mlflow.tracking_uri={uri}: {e.message}") from None


def experiment_id(client: Any, uri: str, entry: DictConfig) -> str:
    """The id of `entry.experiment_name`, created where missing. Its artifacts go to
    `artifact_location`, or (null) beside a local sqlite store's database,
    `artifacts/<experiment>` (MLflow's own default would be the working directory's
    `mlruns/`); a tracking server chooses for itself."""
    name = str(entry.get("experiment_name") or "Default")
    found = client.get_experiment_by_name(name)
    if found is not None and found.lifecycle_stage != "deleted":
        return found.experiment_id
    location = entry.get("artifact_location")
    db = _local_db(uri)
    if location is None and db is not None:
        location = str(db.parent.resolve() / "artifacts" / re.sub(r"[^\w.-]", "_", name))
    return client.create_experiment(name, artifact_location=location)


def _resolve_tags(tags: dict[str, str]) -> dict[str, str]:
    """`tags` with MLflow's context added (user, source script, git commit)."""
    from mlflow.tracking.context.registry import resolve_tags

    return resolve_tags(tags)


# ------------------------------------------------------------------ sweeps: the parent run


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on `directory` (processes of one sweep create one parent)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def read_parent(sweep_dir: Path) -> dict[str, str] | None:
    """The parent run a sweep directory records: {tracking_uri, experiment_id, run_id}."""
    path = Path(sweep_dir) / PARENT_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def start_sweep(
    cfg: DictConfig, sweep_dir: str | Path, kind: str, overrides: Sequence[str] = ()
) -> str | None:
    """The parent run of a multirun or search in `sweep_dir` (`kind`: "multirun",
    "search"), created (tagged with the command line's `overrides`) or, on a resumed search,
    found and marked running again; its id, or None without an MLflow logger. Safe to call
    from every process of one sweep."""
    found = mlflow_entry(cfg)
    if found is None:
        return None
    check_config(cfg)
    entry = found[1]
    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    uri = tracking_uri(entry)
    client = client_for(uri)
    with _locked(sweep_dir):
        record = read_parent(sweep_dir)
        if record is not None and record["tracking_uri"] == uri:
            client.update_run(record["run_id"], status="RUNNING")
            return record["run_id"]
        tags = {
            RUN_NAME_TAG: f"{kind} {sweep_dir.name}",
            "kind": kind,
            "sweep_dir": str(sweep_dir.resolve()),
            "overrides": _cut(" ".join(overrides), _limit("MAX_TAG_VAL_LENGTH", 5000)),
        }
        exp = experiment_id(client, uri, entry)
        run = client.create_run(exp, tags=_resolve_tags(tags))
        record = {"tracking_uri": uri, "experiment_id": exp, "run_id": run.info.run_id}
        temporaries.write_json(sweep_dir / PARENT_FILE, record)
    return record["run_id"]


def start_multirun(config: DictConfig) -> None:
    """`start_sweep` for a Hydra multirun (`SweepCallback.on_multirun_start`); a refusal is
    one line and exit status 2 there too (Hydra turns a callback's exception into a warning
    and goes on)."""
    try:
        start_sweep(config, config.hydra.sweep.dir, "multirun", config.hydra.overrides.task)
    except ConfigError as e:
        print(one_line(e), file=sys.stderr, flush=True)
        sys.exit(EXIT_STATUS)


def end_sweep(sweep_dir: str | Path) -> None:
    """Give a sweep's parent run (if it has one) the sweep's summary files that exist
    (`SWEEP_FILES`) and mark it finished. An MLflow failure here is one line on stderr: the
    runs are done and summarised."""
    sweep_dir = Path(sweep_dir)
    record = read_parent(sweep_dir)
    if record is None:
        return
    from mlflow.exceptions import MlflowException

    try:
        client = client_for(record["tracking_uri"])
        for name in SWEEP_FILES:
            if (sweep_dir / name).is_file():
                client.log_artifact(record["run_id"], str(sweep_dir / name))
        client.set_terminated(record["run_id"], "FINISHED")
    except (MlflowException, OSError, ConfigError) as e:
        print(f"error: MLflow run {record['run_id']}: {one_line(e)}", file=sys.stderr, flush=True)


def parent_of(out_dir: Path, uri: str) -> dict[str, str] | None:
    """The record of the sweep `out_dir` belongs to (in an enclosing directory up to
    `SWEEP_DEPTH` levels up, on the same tracking store), or None."""
    for directory in list(Path(out_dir).resolve().parents)[:SWEEP_DEPTH]:
        record = read_parent(directory)
        if record is not None:
            return record if record["tracking_uri"] == uri else None
    return None


# ------------------------------------------------------------------ one run


def _limit(name: str, default: int) -> int:
    from mlflow.utils import validation

    return int(getattr(validation, name, default))


def _cut(text: str, limit: int) -> str:
    """`text`, or its start and a note when longer than `limit` characters."""
    if len(text) <= limit:
        return text
    note = f"... ({len(text)} characters; the whole config is the {CONFIG_ARTIFACT} artifact)"
    return text[: limit - len(note)] + note


def flat_params(cfg: DictConfig | ListConfig, prefix: str = "") -> dict[str, str]:
    """The config as {dotted key: value as text}: lists as one value, `[256, 64]`; a value
    this process cannot resolve (a Hydra-only interpolation) is left out."""
    out: dict[str, str] = {}
    for key in cfg:
        name = f"{prefix}{key}"
        try:
            value = cfg[key]
        except Exception:
            continue
        if isinstance(value, DictConfig):
            out.update(flat_params(value, f"{name}."))
            continue
        if isinstance(value, ListConfig):
            try:
                value = OmegaConf.to_container(value, resolve=True)
            except Exception:
                continue
        out[re.sub(r"[^\w./ :-]", "_", name)] = str(value)
    return out


def _config_yaml(cfg: DictConfig) -> str:
    try:
        return OmegaConf.to_yaml(cfg, resolve=True)
    except Exception:  # a Hydra-only interpolation outside Hydra: as written
        return OmegaConf.to_yaml(cfg)


def _run_overrides(out_dir: Path) -> list[str]:
    """The run's overrides: Hydra's record of them, or a search trial's `overrides.yaml`."""
    import yaml

    for path in (out_dir / ".hydra" / "overrides.yaml", out_dir / "overrides.yaml"):
        if path.is_file():
            return [str(o) for o in yaml.safe_load(path.read_text(encoding="utf-8")) or []]
    return []


class TrackedRun:
    """One run's MLflow run: created before training, completed (or failed) after it."""

    def __init__(self, cfg: DictConfig, info: dict[str, Any] | None) -> None:
        key, entry = mlflow_entry(cfg)  # type: ignore[misc]
        out_dir = Path(cfg.paths.output_dir)
        self.uri = tracking_uri(entry)
        self.client = client_for(self.uri)
        self.out_dir = out_dir
        given = entry.get("run_id")
        parent = parent_of(out_dir, self.uri)
        if given:  # logger.mlflow.run_id: go on logging into that run
            self.run_id = str(given)
        else:
            exp = parent["experiment_id"] if parent else experiment_id(self.client, self.uri, entry)
            tags = {str(k): str(v) for k, v in (entry.get("tags") or {}).items()}
            tags[RUN_NAME_TAG] = str(entry.get("run_name") or self._name(out_dir, parent, info))
            tags["run_dir"] = str(out_dir.resolve())
            tags["overrides"] = _cut(
                " ".join(_run_overrides(out_dir)), _limit("MAX_TAG_VAL_LENGTH", 5000)
            )
            if info and "search trial" in info:
                tags["trial"] = str(info["search trial"])
            if parent:
                tags[PARENT_TAG] = parent["run_id"]
            self.run_id = self.client.create_run(exp, tags=_resolve_tags(tags)).info.run_id
        # Lightning's logger writes the epochs into this very run.
        self.cfg = copy.deepcopy(cfg)
        with open_dict(self.cfg):
            self.cfg.logger[key].tracking_uri = self.uri
            self.cfg.logger[key].run_id = self.run_id

    @staticmethod
    def _name(out_dir: Path, parent: dict | None, info: dict[str, Any] | None) -> str:
        if info and "search trial" in info:
            return f"trial {info['search trial']}"
        return f"job {out_dir.name}" if parent else out_dir.name

    def log_params(self) -> None:
        """The config as params, but keys the run has already (Lightning's hyperparameters
        keep their values: MLflow refuses to change a param)."""
        from mlflow.entities import Param

        have = self.client.get_run(self.run_id).data.params
        limit = _limit("MAX_PARAM_VAL_LENGTH", 6000)
        params = [
            Param(key, _cut(value, limit))
            for key, value in flat_params(self.cfg).items()
            if key not in have and len(key) <= _limit("MAX_ENTITY_KEY_LENGTH", 250)
        ]
        for start in range(0, len(params), 100):  # MLflow takes 100 params a batch
            self.client.log_batch(self.run_id, params=params[start : start + 100])
        self.client.log_text(self.run_id, _config_yaml(self.cfg), CONFIG_ARTIFACT)

    def log_report(self, metrics: dict[str, Any], step: int) -> None:
        """metrics.json's numbers at `step` (a key the epochs logged becomes `report/<key>`)
        and the report's files as artifacts."""
        import time

        from mlflow.entities import Metric

        from fakenews_pl.training.reports import REPORT_FILES

        series = self.client.get_run(self.run_id).data.metrics
        now = int(time.time() * 1000)
        logged = [
            Metric(f"report/{key}" if key in series else key, float(value), now, step)
            for key, value in metrics.items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        ]
        for start in range(0, len(logged), 1000):  # MLflow takes 1000 metrics a batch
            self.client.log_batch(self.run_id, metrics=logged[start : start + 1000])
        for name in (*REPORT_FILES, *RUN_FILES):
            if (self.out_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(self.out_dir / name))

    def finish(self, metrics: dict[str, Any], objects: dict[str, Any]) -> None:
        """After the report: params, metrics and files, then FINISHED."""
        self.log_params()
        if metrics:
            trainer = objects.get("trainer")
            self.log_report(metrics, trainer.global_step if trainer is not None else 0)
        self.client.set_terminated(self.run_id, "FINISHED")

    def fail(self, exc: BaseException) -> None:
        """The run raised: its params, the error as tag `error` and FAILED; a search trial
        the pruner stopped (Optuna's `TrialPruned`) or an interrupt is KILLED, its reason
        as tag `stopped`. Never raises (the run's own error is the one to see)."""
        stopped = isinstance(exc, KeyboardInterrupt) or any(
            cls.__name__ == "TrialPruned" for cls in type(exc).__mro__
        )
        with contextlib.suppress(Exception):
            limit = _limit("MAX_TAG_VAL_LENGTH", 5000)
            reason = _cut(one_line(exc).removeprefix("error: "), limit)
            self.client.set_tag(self.run_id, "stopped" if stopped else "error", reason)
            self.log_params()
        with contextlib.suppress(Exception):
            self.client.set_terminated(self.run_id, "KILLED" if stopped else "FAILED")


def tracked(train: Callable[..., tuple[dict[str, Any], dict[str, Any]]]) -> Callable[..., Any]:
    """Wrap `pipeline.train`: with an MLflow logger, on rank 0, the run is an MLflow run
    (`TrackedRun`) logged after the report; otherwise `train` as it is."""

    @functools.wraps(train)
    def wrapper(
        cfg: DictConfig, *args: Any, **kwargs: Any
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        from pytorch_lightning.utilities import rank_zero_only

        if mlflow_entry(cfg) is None or getattr(rank_zero_only, "rank", 0) != 0:
            return train(cfg, *args, **kwargs)
        info = args[1] if len(args) > 1 else kwargs.get("info")
        run = TrackedRun(cfg, info)
        try:
            metrics, objects = train(run.cfg, *args, **kwargs)
        except BaseException as exc:
            run.fail(exc)
            raise
        run.finish(metrics, objects)
        return metrics, objects

    return wrapper
