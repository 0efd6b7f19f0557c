"""The training pipeline (`train`, what train.py and every search trial run) and the building
blocks evaluate.py wires together from the Hydra config."""

from __future__ import annotations

import json
import logging
import math
import resource
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning import Callback, Trainer, seed_everything
from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities import rank_zero_info, rank_zero_only, rank_zero_warn

from fakenews_pl import temporaries
from fakenews_pl.data import corpus, demo
from fakenews_pl.data.datamodule import FakeNewsDataModule
from fakenews_pl.errors import ConfigError, MissingInputError, UserError
from fakenews_pl.hub import artifact
from fakenews_pl.hub.convert import HUB_MODULES
from fakenews_pl.training import baseline, checkpoints, decision, reports, tracking
from fakenews_pl.training.model import FakeNewsClassifier, check_strategy

# Batches are slices of in-memory arrays: worker processes would only add pickling.
warnings.filterwarnings("ignore", ".*does not have many workers.*")
# The model logs epoch values from torchmetrics' compute(), which has already reduced them
# across ranks; Lightning's reminder to pass sync_dist=True does not apply.
warnings.filterwarnings("ignore", ".*when logging on epoch level in distributed setting.*")
# Lightning's own use of torch.utils._pytree, deprecated there; nothing a user can act on.
warnings.filterwarnings("ignore", r".*isinstance\(treespec, LeafSpec\).*")


# Lightning's start-up and end lines a user cannot act on: a tip to install a cloud logging
# service, "GPU available: False" and "TPU available: False" on a CPU run (a GPU in use is still
# named), and why fit stopped (the progress display says it: training/progress.py).
QUIETED = ("litlogger", "GPU available: False", "TPU available: False", "`Trainer.fit` stopped")


class _Quiet(logging.Filter):
    """Drops Lightning's records that start with or contain one of `QUIETED`."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every other record."""
        message = record.getMessage()
        return not any(text in message for text in QUIETED)


logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_Quiet())

# What `report_on` reports, as report.md words it.
REPORT_ON = {
    "last": "last: the final weights after early stopping (as the notebook: Keras without "
    "restore_best_weights)",
    "best": "best: the checkpoint with the lowest val/loss",
}


def data_files(cfg: DictConfig) -> list[str]:
    """The data files `cfg.data` names: `files`, `train_csv` and `test_csv`, or ISOT's two."""
    if cfg.get("format") == "isot":
        return [str(path) for path in corpus.isot_paths(cfg.dir)]
    return list(cfg.files) if cfg.get("files") else [cfg.train_csv, cfg.test_csv]


@rank_zero_only
def clean_stale_temporaries(cfg: DictConfig) -> None:
    """Remove what killed runs left half-written under the project's output and cache dirs
    (their owners are gone; named in one line)."""
    roots = {cfg.paths.log_dir, cfg.paths.cache_dir, cfg.paths.embeddings_dir, cfg.paths.demo_dir}
    removed = []
    for root in sorted(roots):
        if Path(root).is_dir():
            removed += temporaries.clean_tree(root, report=False)
    temporaries.report_cleaned(removed)


def prepare_demo(cfg: DictConfig) -> bool:
    """Write the demo inputs the run selects (embedding=demo, data=demo) where missing;
    whether the run reads any synthetic input (model=tfidf_lr reads no embedding vectors: the
    embedding only tokenizes its data module's cache)."""
    synthetic = demo.prepare(cfg.paths.demo_dir, [cfg.embedding.path, *data_files(cfg.data)])
    if baseline.is_baseline(cfg.model):
        return demo.uses_demo(cfg.paths.demo_dir, data_files(cfg.data))
    return synthetic


def ensure_embedding(cfg: DictConfig) -> str:
    """The converted embedding at `cfg.path`, or an error naming the command that makes it."""
    path = Path(cfg.path)
    if (path / artifact.META_FILE).is_file():
        return str(path)
    source = cfg.name if cfg.name in HUB_MODULES else "SOURCE"
    raise MissingInputError(
        f"no converted embedding at embedding.path={path} (embedding={cfg.name}); convert one "
        f"first with:\n    python scripts/convert_tfhub.py {source} {path}"
    )


def build_datamodule(cfg: DictConfig, embedding_path: str, **overrides: Any) -> FakeNewsDataModule:
    """Instantiate `cfg.data`, then read, tokenize and split."""
    datamodule = instantiate(cfg, embedding_path=embedding_path, _convert_="all", **overrides)
    datamodule.setup()
    return datamodule


def build_model(cfg: DictConfig, datamodule: FakeNewsDataModule) -> FakeNewsClassifier:
    """Instantiate `cfg.model` with the class names the data defines."""
    return instantiate(cfg, class_names=datamodule.class_names, _convert_="all")


def instantiate_group(cfg: DictConfig | None) -> list[Any]:
    """Every entry of a config group that has a `_target_` (callbacks, loggers)."""
    if not cfg:
        return []
    return [instantiate(entry) for entry in cfg.values() if entry and "_target_" in entry]


def build_trainer(cfg: DictConfig, model: FakeNewsClassifier) -> Trainer:
    """Trainer with `cfg.callbacks` and `cfg.logger`; refuses unsupported strategies up front."""
    callbacks: list[Callback] = instantiate_group(cfg.get("callbacks"))
    loggers: list[Logger] = instantiate_group(cfg.get("logger"))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    # Before fit launches any process: a refused combination costs nothing.
    check_strategy(model.lazy_table, trainer.strategy)
    return trainer


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """`ckpt_path`: a checkpoint file; `last`, the newest `checkpoints/last.ckpt` of an earlier
    run of this task (`paths.log_dir/<task>/runs/*`); or None."""
    ckpt = cfg.get("ckpt_path")
    if ckpt != "last":
        return ckpt
    runs = Path(cfg.paths.log_dir) / cfg.task_name / "runs"
    newest = checkpoints.resolve_last(runs, Path(cfg.paths.output_dir).resolve())
    rank_zero_info(f"ckpt_path=last: resuming {newest}")
    return newest


def fit(
    trainer: Trainer, model: FakeNewsClassifier, datamodule: Any, ckpt_path: str | None
) -> None:
    """`trainer.fit`, resuming from `ckpt_path` (verified, loaded with `weights_only=True`;
    train.py first checks it is a checkpoint of this very run: `check_resume`)."""
    with checkpoints.refusing_unsafe(ckpt_path):
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)


# Data settings a resumed run must share with its checkpoint: they decide the rows of each
# split, the minibatches and the token sequences.
RESUME_DATA_KEYS = (
    "format", "text_column", "label_column", "label_names", "text_field", "strip_dateline",
    "test_size", "val_fraction", "val_source", "split_seed", "batch_size", "max_tokens",
    "length_buckets",
)  # fmt: skip
# Model settings that may differ on resume: where the artifact is (its sha256 is checked when
# the weights load) and the thread count (the same results).
RESUME_FREE_MODEL_KEYS = ("embedding_path", "step_threads")


def check_resume(ckpt_path: str, model: FakeNewsClassifier, datamodule: Any) -> None:
    """Refuse resuming `ckpt_path` into another run: its seed, data settings, the rows of each
    split (the fingerprint) and the model's settings must equal this run's; every difference
    is named in one line (a seed or split change would turn training rows into validation
    rows; another network would not load)."""
    checkpoint = checkpoints.read(ckpt_path)
    differ = []

    def compare(key: str, recorded: Any, actual: Any) -> None:
        if recorded != actual:
            differ.append(f"{key}: checkpoint {_short(recorded)}, this run {_short(actual)}")

    if "seed" in checkpoint:
        compare("seed", checkpoint["seed"], torch.initial_seed())
    saved_data = checkpoint.get(checkpoints.DATA_HPARAMS) or {}
    for key in RESUME_DATA_KEYS:
        if key in saved_data:
            compare(f"data.{key}", saved_data[key], datamodule.hparams.get(key))
    saved_model = checkpoint.get(checkpoints.HPARAMS) or {}
    for key in sorted(set(saved_model) | set(model.hparams)):
        if key not in RESUME_FREE_MODEL_KEYS:
            name = "trainable" if key == "trainable" else f"model.{key}"
            compare(name, saved_model.get(key), model.hparams.get(key))
    recorded = checkpoint.get(type(datamodule).__qualname__, {}).get("fingerprint")
    if recorded is not None and not differ:
        actual = datamodule.fingerprint()
        changed = [
            split for split in ("train", "val", "test") if recorded.get(split) != actual[split]
        ]
        if changed:
            differ.append(
                f"the {'/'.join(changed)} rows differ from the checkpoint's (the data files "
                "changed, or are split otherwise)"
            )
    if differ:
        raise ConfigError(
            f"ckpt_path={ckpt_path} is a checkpoint of another run: {'; '.join(differ)}; resume "
            "with the settings it was trained with, or start a new run without ckpt_path"
        )


def _short(value: Any) -> str:
    text = str(list(value) if isinstance(value, list | tuple) else value)
    return text if len(text) <= 80 else text[:77] + "..."


def load_model(path: str, **kwargs: Any) -> FakeNewsClassifier:
    """A model checkpoint loaded with `weights_only=True` (no code runs on load)."""
    with checkpoints.refusing_unsafe(path):
        return FakeNewsClassifier.load_from_checkpoint(path, weights_only=True, **kwargs)


def weights_for_report(
    trainer: Trainer, model: FakeNewsClassifier, report_on: str
) -> FakeNewsClassifier:
    """`last`: the weights fit ended with (the notebook: Keras without restore_best_weights);
    `best`: the checkpoint with the lowest `val/loss`.
    """
    if report_on not in REPORT_ON:
        raise ConfigError(f"report_on must be one of {list(REPORT_ON)}, got {report_on!r}")
    if report_on == "last":
        return model
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if not best:
        raise ConfigError("report_on=best needs a ModelCheckpoint that saved a best checkpoint")
    best_model = load_model(best, map_location=model.device)
    best_model.history = model.history  # the curves show the whole run
    return best_model


class TrainingDiverged(UserError):
    """The loss became infinite or NaN: the run stopped, and its report would be meaningless."""


def refuse_divergence(model: FakeNewsClassifier, out_dir: str) -> None:
    """After fit: if an epoch's loss or accuracy is not finite, write metrics.json saying
    `diverged` (what a sweep summary reads) and raise `TrainingDiverged` naming the epoch."""
    for row in model.history:
        bad = [key for key, value in row.items() if not math.isfinite(value)]
        if not bad:
            continue
        metrics = {"status": "diverged", "diverged_epoch": row["epoch"], "diverged_keys": bad}
        temporaries.write_json(Path(out_dir) / "metrics.json", metrics)
        hp = model.hparams
        raise TrainingDiverged(
            f"the run diverged: {', '.join(f'{k}={row[k]}' for k in bad)} at epoch "
            f"{row['epoch']} (model.lr={hp.lr}); nothing is reported (metrics.json says "
            "diverged): lower model.lr, or check the data and the embedding for extreme values"
        )


def record_decision(checkpoint: str, metrics: dict[str, Any]) -> None:
    """Keep a chosen (or set) threshold in `checkpoint`, that of the reported weights (run.json's),
    which `Classifier.load`, exported bundles, predict.py and serve.py then apply; the default
    (0.5) needs no record, and a run without checkpoints has nowhere to keep it."""
    chosen = {key: metrics[f"decision/{key}"] for key in ("threshold", "target", "chosen_on")}
    if checkpoint and chosen != decision.Decision().as_dict():
        checkpoints.record_decision(checkpoint, chosen)


def write_run_info(cfg: DictConfig, trainer: Trainer, started: float) -> dict[str, Any]:
    """`run.json` in the run dir: what a sweep summary lists beside the metrics (embedding,
    trainable, encoder, wall seconds, peak RSS, the checkpoint of the reported weights);
    returns its content."""
    checkpoint = trainer.checkpoint_callback
    best = checkpoint.best_model_path if checkpoint is not None else ""
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    info = {
        "embedding": cfg.embedding.get("name"),
        "trainable": bool(cfg.trainable),
        "encoder": cfg.model.get("encoder", "bag"),
        "wall_s": time.perf_counter() - started,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "checkpoint": best if cfg.report_on == "best" else (str(last) if last.is_file() else best),
    }
    path = Path(cfg.paths.output_dir) / "run.json"
    path.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def write_report(
    model: FakeNewsClassifier,
    datamodule: FakeNewsDataModule,
    out_dir: str,
    info: dict[str, Any],
    synthetic: bool = False,
    report_val: bool = False,
    report_on: str | None = None,
    decision_cfg: Any = None,
    recorded: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Predict train and test, then write metrics.json, tables and plots into `out_dir` and
    print the end-of-run block (`reports.end_of_run`; `report_on`: which of a run's weights
    these are, `reported_weights`; None: a loaded checkpoint's, `info["checkpoint"]`);
    `synthetic` marks the report as made on the demo's synthetic inputs; `report_val` adds the
    validation split's metrics to metrics.json (`val/f1_Fake`, ...: what a search judges).
    The threshold: `decision_cfg` (`decision.decide`: fixed, or chosen on the validation
    split), or, when that is the default, the `recorded` decision of a loaded checkpoint."""
    splits = [*reports.REPORT_SPLITS, *(["val"] if report_val else [])]
    choosing = decision_cfg is not None and decision_cfg.get("target") is not None
    predicted = [*splits, *(["val"] if choosing and not report_val else [])]
    predictions = {
        split: reports.predict_logits(model, datamodule.split_dataloader(split))
        for split in predicted
    }
    hp = datamodule.hparams
    chosen = choose_decision(
        decision_cfg, recorded, predictions.get("val"), datamodule.class_names,
        hp.val_source == "test",
    )  # fmt: skip
    info = {
        "embedding": model.hparams.embedding_path,
        "trainable": model.hparams.trainable,
        "table_optimizer": model.hparams.table_optimizer,
        "data": datamodule.paths,
        "validation": "the test set" if hp.val_source == "test" else f"{hp.val_fraction} of train",
        **info,
    }
    note = demo.NOTE if synthetic else None
    metrics = reports.write_report(
        out_dir, predictions, datamodule.class_names, model.history, info, note, splits,
        chosen.as_dict(),
    )  # fmt: skip
    if report_on is None:
        weights = f"those of {info['checkpoint']}"
    else:
        weights = reported_weights(metrics, report_on)
    print(reports.end_of_run(metrics, datamodule.class_names, out_dir, weights), flush=True)
    return metrics


def choose_decision(
    decision_cfg: Any,
    recorded: dict[str, Any] | None,
    val: tuple[torch.Tensor, torch.Tensor] | None,
    class_names: list[str],
    val_is_test: bool,
) -> decision.Decision:
    """The decision a report uses: the configured one (a target chosen on `val`'s (logits,
    labels)); where the config is the default and a checkpoint `recorded` one, that."""
    # evaluate.py's decision.threshold null (its default) means the checkpoint's own rule.
    default = decision_cfg is None or (
        decision_cfg.get("target") is None and decision_cfg.get("threshold") is None
    )
    if default and recorded:
        return decision.Decision.from_dict(recorded)
    probabilities = None
    if val is not None:
        logits, labels = val
        probabilities = (torch.sigmoid(logits).double().numpy(), labels.long().numpy())
    return decision.decide(decision_cfg, probabilities, class_names, val_is_test)


def check_test_rows(ckpt_path: str, datamodule: FakeNewsDataModule, strict: bool = True) -> None:
    """Refuse (or with `strict=False` warn) when the rows `datamodule` calls test are not the
    rows the run in `ckpt_path` held out, as the checkpoint records them."""
    checkpoint = checkpoints.read(ckpt_path)
    recorded = checkpoint.get(type(datamodule).__qualname__, {}).get("fingerprint", {}).get("test")
    if recorded is None:
        rank_zero_warn(
            f"{ckpt_path} records no fingerprint of its data: the test rows are unchecked"
        )
        return
    actual = datamodule.fingerprint()["test"]
    if actual == recorded:
        return
    message = (
        f"{ckpt_path}: the {actual['rows']} rows evaluate.py would call test are not the "
        f"{recorded['rows']} rows the run held out (texts and labels sha256 "
        f"{actual['sha256'][:12]} != {recorded['sha256'][:12]}: the files changed, were reordered, "
        "or are split otherwise); pass check_test_rows=false to evaluate on them anyway"
    )
    if strict:
        raise UserError(message)
    rank_zero_warn(message)


def load_checkpoint(cfg: DictConfig) -> tuple[FakeNewsClassifier, FakeNewsDataModule]:
    """The model in `cfg.ckpt_path` and its data: `cfg.data` if given, else the checkpoint's."""
    overrides = {"embedding_path": cfg.embedding_path} if cfg.get("embedding_path") else {}
    model = load_model(
        cfg.ckpt_path, map_location=torch.device(cfg.get("device", "cpu")), **overrides
    )
    path = model.hparams.embedding_path
    if cfg.get("data"):
        labels = cfg.data.get("label_names") or list(model.hparams.class_names)
        datamodule = build_datamodule(cfg.data, path, label_names=labels)
    else:
        with checkpoints.refusing_unsafe(cfg.ckpt_path):
            datamodule = FakeNewsDataModule.load_from_checkpoint(
                cfg.ckpt_path, weights_only=True, embedding_path=path
            )
        datamodule.setup()
    check_test_rows(cfg.ckpt_path, datamodule, strict=cfg.get("check_test_rows", True))
    if datamodule.class_names != list(model.hparams.class_names):
        raise UserError(
            f"the data's classes {datamodule.class_names} differ from the checkpoint's "
            f"{list(model.hparams.class_names)}"
        )
    return model, datamodule


def reported_weights(metrics: dict[str, Any], report_on: str) -> str:
    """Which weights a run reports, in words, from its metrics.json: the last epoch's (the
    notebook's) or the best by val/loss."""
    if report_on == "best":
        epoch = metrics.get("val/best_epoch", "?")
        return f"the best epoch's, epoch {epoch} by val/loss (report_on=best)"
    return f"the last epoch's, epoch {metrics['fit/epochs']} (report_on=last, as the notebook)"


@tracking.tracked
def train(
    cfg: DictConfig,
    callbacks: Sequence[Callback] = (),
    info: dict[str, Any] | None = None,
    report_val: bool = False,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit, then report on train and test: (metrics.json's content, the objects built). What
    train.py runs, and every search trial (with its pruning callback added, its trial number
    in `info`, which report.md lists, and `report_val`: see `write_report`).

    Only rank 0 reports; other ranks return empty metrics.
    """
    started = time.perf_counter()
    seed_everything(cfg.seed, workers=True, verbose=False)
    clean_stale_temporaries(cfg)
    synthetic = prepare_demo(cfg)
    if synthetic:
        rank_zero_info(f"SYNTHETIC DEMO DATA: {demo.NOTE}")
    embedding_path = ensure_embedding(cfg.embedding)
    datamodule = build_datamodule(cfg.data, embedding_path)
    target = (cfg.get("decision") or {}).get("target")
    if target is not None:  # its class, now that the data's are known: before any training
        decision.parse_target(target, datamodule.class_names)
    if baseline.is_baseline(cfg.model):  # model=tfidf_lr: the same rows, no Trainer, no epochs
        return baseline.train(cfg, datamodule, synthetic, started, info, report_val)
    model = build_model(cfg.model, datamodule)
    ckpt_path = resolve_ckpt_path(cfg)
    if ckpt_path is not None:  # before the Trainer: a refusal is the only line printed
        check_resume(ckpt_path, model, datamodule)
    trainer = build_trainer(cfg, model)
    trainer.callbacks.extend(callbacks)
    fit(trainer, model, datamodule, ckpt_path)
    objects = {"datamodule": datamodule, "model": model, "trainer": trainer}
    if not trainer.is_global_zero:
        return {}, objects
    refuse_divergence(model, cfg.paths.output_dir)
    reported = weights_for_report(trainer, model, cfg.report_on)
    info = {"weights": REPORT_ON[cfg.report_on], **(info or {})}
    metrics = write_report(
        reported, datamodule, cfg.paths.output_dir, info, synthetic, report_val, cfg.report_on,
        cfg.get("decision"),
    )  # fmt: skip
    run_info = write_run_info(cfg, trainer, started)
    record_decision(run_info["checkpoint"], metrics)
    return metrics, {**objects, "reported_model": reported}
