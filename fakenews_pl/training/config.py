"""The composed Hydra config, checked before any work: every value a run cannot use is refused
as a `ConfigError` naming its key and what was expected (sizes, lengths, ranges, devices that
exist, `max_epochs >= 1`)."""

from __future__ import annotations

import math
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from fakenews_pl import temporaries
from fakenews_pl.errors import REPLACED_KEYS, ConfigError
from fakenews_pl.nn.optim import OPTIMIZERS, TABLE_OPTIMIZERS
from fakenews_pl.training import baseline, decision, tracking


def run_suffix() -> str:
    """`${run_suffix:}` in run-dir names (conf/hydra): this process's id and a random tag."""
    return f"{os.getpid()}-{secrets.token_hex(2)}"


# Run dirs are resolved by Hydra before the job starts: every entry point imports this module,
# so the resolver exists by then.
if not OmegaConf.has_resolver("run_suffix"):
    OmegaConf.register_new_resolver("run_suffix", run_suffix, use_cache=True)

PRECISIONS = ("32-true", "32", 32, "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true")
ACCELERATORS = ("cpu", "gpu", "cuda", "auto")
REPORT_ON = ("last", "best")


def _require(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={_show(value)}: expected {expected}")


def _show(value: Any) -> str:
    if isinstance(value, ListConfig | list | tuple):
        return "[" + ",".join(_show(v) for v in value) + "]"
    return str(value)


def is_int(value: Any) -> bool:
    """An int that is not a bool (YAML's `true` is not a count)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """An int or float that is not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check(cfg: DictConfig, key: str, test: Callable[[Any], bool], expected: str) -> None:
    """Check `cfg.<key>` (dotted) with `test`; a missing key is left to Hydra."""
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            return
        node = node[part]
    try:
        ok = bool(test(node))
    except (TypeError, ValueError):
        ok = False
    _require(ok, key, node, expected)


def check_finite(cfg: DictConfig | ListConfig, prefix: str = "") -> None:
    """Refuse `inf` and `nan` in any float setting (`model.lr=inf` trained to NaN), naming the
    key; values that do not resolve are left to the checks that read them."""
    items = cfg.items_ex(resolve=False) if isinstance(cfg, DictConfig) else enumerate(cfg)
    for key, _ in list(items):
        name = f"{prefix}{key}" if isinstance(cfg, DictConfig) else f"{prefix[:-1]}[{key}]"
        try:
            value = cfg[key]
        except Exception:  # an interpolation this process cannot resolve (hydra's ${now:})
            continue
        if isinstance(value, DictConfig | ListConfig):
            check_finite(value, f"{name}.")
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{name}={value}: expected a finite number")


def check_model(cfg: DictConfig) -> None:
    """`model.*`: layer sizes, one dropout rate per hidden layer, positive lr and epsilon."""
    _check(
        cfg,
        "model.hidden_sizes",
        lambda v: len(v) > 0 and all(is_int(n) and n >= 1 for n in v),
        "a non-empty list of layer widths >= 1, e.g. [256,64]",
    )
    sizes = cfg.model.get("hidden_sizes") or []
    _check(
        cfg,
        "model.dropouts",
        lambda v: len(v) == len(sizes),
        f"one dropout rate per hidden layer (model.hidden_sizes has {len(sizes)})",
    )
    _check(
        cfg,
        "model.dropouts",
        lambda v: all(is_number(p) and 0 <= p < 1 for p in v),
        "rates in [0, 1)",
    )
    for old, new in REPLACED_KEYS.items():
        if old.removeprefix("model.") in cfg.model:
            raise ConfigError(f"{old} was replaced: use {new}")
    _check(cfg, "model.table_optimizer", lambda v: v in TABLE_OPTIMIZERS, _one_of(TABLE_OPTIMIZERS))
    _check(cfg, "model.optimizer", lambda v: v in OPTIMIZERS, _one_of(OPTIMIZERS))
    _check(cfg, "model.lr", lambda v: is_number(v) and v > 0, "a learning rate > 0")
    _check(cfg, "model.adam_eps", lambda v: is_number(v) and v > 0, "an epsilon > 0")


def check_baseline(cfg: DictConfig) -> None:
    """`model=tfidf_lr`: its settings (conf/model/tfidf_lr.yaml), and no `trainable=true` (there
    is no table to fine-tune) nor `ckpt_path` (one fit: nothing to resume). A `model.kind` that
    names no model is refused too."""
    _check(cfg, "model.kind", lambda v: v == baseline.KIND, f"{baseline.KIND} (model=tfidf_lr)")
    if not baseline.is_baseline(cfg.model):
        return
    keys = ("kind", *baseline.VECTORIZER_KEYS, *baseline.REGRESSION_KEYS)
    for key in cfg.model:
        if key not in keys:  # e.g. an experiment's model.optimizer: not the baseline's
            raise ConfigError(
                f"model.{key}: not a setting of the TF-IDF baseline (model=tfidf_lr takes "
                + ", ".join(f"model.{k}" for k in keys)
                + ")"
            )
    _check(
        cfg,
        "model.ngram_range",
        lambda v: len(v) == 2 and all(is_int(n) for n in v) and 1 <= v[0] <= v[1],
        "[min, max] n-gram sizes with 1 <= min <= max, e.g. [1,1] or [1,2]",
    )
    _check(
        cfg,
        "model.min_df",
        lambda v: (is_int(v) and v >= 1) or (isinstance(v, float) and 0 < v <= 1),
        "a document count >= 1 (an int) or a fraction in (0, 1] (a float)",
    )
    _check(
        cfg,
        "model.max_features",
        lambda v: v is None or (is_int(v) and v >= 1),
        "a term count >= 1, or null (all)",
    )
    for key in ("model.sublinear_tf", "model.lowercase"):
        _check(cfg, key, lambda v: isinstance(v, bool), "true or false")
    _check(cfg, "model.C", lambda v: is_number(v) and v > 0, "an inverse regularization > 0")
    _check(cfg, "model.max_iter", lambda v: is_int(v) and v >= 1, "an iteration count >= 1")
    _check(cfg, "model.class_weight", lambda v: v in (None, "balanced"), "null or balanced")
    _check(
        cfg,
        "trainable",
        lambda v: v is False,
        "false with model=tfidf_lr (the TF-IDF baseline has no embedding table to fine-tune)",
    )
    _check(
        cfg,
        "ckpt_path",
        lambda v: v is None,
        "null with model=tfidf_lr (the baseline is one fit: there is nothing to resume)",
    )


def _one_of(choices: tuple[str, ...]) -> str:
    return "one of " + ", ".join(choices)


def check_data(cfg: DictConfig) -> None:
    """`data.*`: batch sizes, split fractions."""
    for key in ("data.batch_size", "data.eval_batch_size"):
        _check(cfg, key, lambda v: is_int(v) and v >= 1, "a batch size >= 1")
    for key in ("data.test_size", "data.val_fraction"):
        _check(cfg, key, lambda v: is_number(v) and 0 < v < 1, "a fraction in (0, 1)")
    _check(cfg, "data.num_workers", lambda v: is_int(v) and v >= 0, "a worker count >= 0")


def check_trainer(cfg: DictConfig) -> None:
    """`trainer.*`: epochs, precision, and an accelerator and device count that exist."""
    _check(cfg, "trainer.max_epochs", lambda v: is_int(v) and v >= 1, "an epoch count >= 1")
    max_epochs = cfg.trainer.get("max_epochs")
    _check(
        cfg,
        "trainer.min_epochs",
        lambda v: v is None or (is_int(v) and 0 <= v <= max_epochs),
        f"an epoch count between 0 and trainer.max_epochs ({max_epochs})",
    )
    for split in ("train", "val", "test"):
        _check(
            cfg,
            f"trainer.limit_{split}_batches",
            lambda v: v is None or (is_int(v) and v >= 0) or (is_number(v) and 0 <= v <= 1),
            "a batch count >= 0, a fraction in [0, 1], or null",
        )
    _check(cfg, "trainer.precision", lambda v: v in PRECISIONS, f"one of {list(PRECISIONS)}")
    _check(cfg, "trainer.accelerator", lambda v: v in ACCELERATORS, f"one of {ACCELERATORS}")
    accelerator = cfg.trainer.get("accelerator")
    devices = cfg.trainer.get("devices")
    if accelerator in ("gpu", "cuda"):
        available = torch.cuda.device_count()
        _require(
            available > 0,
            "trainer.accelerator",
            accelerator,
            "a machine with a CUDA GPU; this one has none (use trainer=cpu or trainer=ddp_cpu)",
        )
        _require(
            devices in (-1, "auto") or (is_int(devices) and 1 <= devices <= available),
            "trainer.devices",
            devices,
            f"-1 or a count between 1 and the {available} GPU(s) this machine has",
        )
    else:
        _require(
            devices in (-1, "auto") or (is_int(devices) and devices >= 1),
            "trainer.devices",
            devices,
            "-1, 'auto' or a process count >= 1",
        )


def check_checkpointing(cfg: DictConfig) -> None:
    """`trainer.enable_checkpointing=false` with checkpoint callbacks listed: Lightning refuses
    the pair deep inside the Trainer; name both and the way out here."""
    if cfg.get("trainer", {}).get("enable_checkpointing", True) is not False:
        return
    listed = [
        f"callbacks.{name}"
        for name, entry in (cfg.get("callbacks") or {}).items()
        if entry and str(entry.get("_target_", "")).endswith("ModelCheckpoint")
    ]
    _require(
        not listed,
        "trainer.enable_checkpointing",
        False,
        f"true while {', '.join(listed)} are listed (remove them too: "
        + " ".join(f"~{name}" for name in listed)
        + "; without checkpoints a run cannot be resumed or report_on=best)",
    )


def in_multirun() -> bool:
    """Whether this process is a job of a Hydra multirun (`-m`)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def check_multirun_strategy(cfg: DictConfig, multirun: bool) -> None:
    """Refuse `trainer=ddp` in a multirun: its launcher re-runs the whole command line (the
    sweep with it) in every child process; `trainer=ddp_spawn` spawns them from the job."""
    strategy = cfg.trainer.get("strategy")
    if not multirun or not isinstance(strategy, DictConfig):
        return
    is_ddp = str(strategy.get("_target_", "")).endswith("DDPStrategy")
    _require(
        not is_ddp or strategy.get("start_method", "popen") != "popen",
        "trainer.strategy.start_method",
        strategy.get("start_method", "popen"),
        "spawn under -m (trainer=ddp_spawn, or hydra/launcher=joblib with one device a job): "
        "trainer=ddp re-runs the whole command in every child process, the sweep included",
    )


def check_train_config(cfg: DictConfig, multirun: bool | None = None) -> None:
    """Everything `train.py` reads, before it writes or reads anything."""
    tracking.check_config(cfg)
    check_finite(cfg)
    check_model(cfg)
    check_baseline(cfg)
    check_data(cfg)
    check_trainer(cfg)
    check_multirun_strategy(cfg, in_multirun() if multirun is None else multirun)
    _check(cfg, "report_on", lambda v: v in REPORT_ON, f"one of {list(REPORT_ON)}")
    _check(cfg, "seed", lambda v: is_int(v) and 0 <= v < 2**32, "an integer in [0, 2**32 - 1]")
    check_checkpointing(cfg)
    if cfg.get("decision") is not None:
        decision.check_config(cfg.decision)
    _check(cfg, "trainable", lambda v: isinstance(v, bool), "true or false")
    ckpt = cfg.get("ckpt_path")
    if ckpt not in (None, "last"):
        _require(Path(ckpt).is_file(), "ckpt_path", ckpt, "a checkpoint file, or `last`")


def check_eval_config(cfg: DictConfig) -> None:
    """What `evaluate.py` reads: the checkpoint, the device and any data given."""
    check_finite(cfg)
    check_checkpoint_and_device(cfg)
    if cfg.get("data"):
        check_data(cfg)
    if cfg.get("decision") is not None:
        decision.check_config(cfg.decision, recorded_default=True)


def check_predict_config(cfg: DictConfig, is_model_dir: Callable[[str], bool]) -> None:
    """What `predict.py` reads and writes: a text or an input file and an output path that is
    none of its inputs, the chunk size, explain settings, the model (a checkpoint, or a
    directory `is_model_dir` accepts) and the device."""
    check_finite(cfg)
    if (cfg.text is None) == (cfg.input is None) or (cfg.input is not None) != bool(cfg.output):
        raise ConfigError("give text=... or both input=FILE.csv and output=OUT.csv")
    _check(cfg, "explain", lambda v: isinstance(v, bool), "true or false")
    _check(cfg, "explain_top", lambda v: is_int(v) and v >= 1, "a token count >= 1")
    _check(cfg, "chunk_rows", lambda v: is_int(v) and v >= 1, "a row count >= 1")
    _check(cfg, "format", lambda v: v in (None, "notebook", "csv"), "notebook, csv or null")
    check_checkpoint_and_device(cfg, is_model_dir)
    if baseline.is_baseline_dir(cfg.ckpt_path):  # labels and probabilities of text=... only
        what = "with a saved TF-IDF baseline"
        _require(not cfg.explain, "explain", cfg.explain, f"false {what} (it does not explain)")
        _require(cfg.input is None, "input", cfg.input, f"null {what}: give it text=...")
    if cfg.input is None:
        return
    _require(Path(cfg.input).is_file(), "input", cfg.input, "a CSV file (.csv or .csv.gz)")
    out = Path(cfg.output)
    _require(not out.is_dir(), "output", out, "a file path, not a directory")
    _require(
        out.parent.is_dir(),
        "output",
        out,
        f"a file in an existing directory ({out.parent} is not one)",
    )
    temporaries.refuse_input_as_output(out, [cfg.input, cfg.ckpt_path], "output")


def check_checkpoint_and_device(
    cfg: DictConfig, is_model_dir: Callable[[str], bool] | None = None
) -> None:
    """`ckpt_path`, a checkpoint file (or a directory `is_model_dir` accepts: an exported
    model's, `serving.bundle.is_bundle`), and `device`, cpu or a CUDA GPU this machine has
    (what evaluate.py, predict.py and serve.py load a model with)."""
    ckpt = cfg.get("ckpt_path")
    bundles = is_model_dir is not None
    ok = ckpt is not None and (Path(ckpt).is_file() or bundles and is_model_dir(ckpt))
    expected = "a checkpoint file" + (
        " or a directory from scripts/export_model.py (or a run's baseline/)" if bundles else ""
    )
    _require(ok, "ckpt_path", ckpt, expected)
    device = cfg.get("device", "cpu")
    try:
        device_type = torch.device(device).type
    except (RuntimeError, TypeError):
        device_type = None
    _require(device_type in ("cpu", "cuda"), "device", device, "cpu or cuda[:N]")
    if device_type == "cuda":
        _require(torch.cuda.is_available(), "device", device, "a machine with a CUDA GPU")
