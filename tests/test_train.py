"""train.py / evaluate.py end to end: reports, evaluation, resume, reload, DDP, sweeps."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from fakenews_pl.data import demo
from fakenews_pl.hub.embedding import HubEmbedding
from fakenews_pl.training import checkpoints, pipeline, reports

SEED_FILES = ["gos_1", "gos_2", "gos_3", "gos_4", "gos_5", "news_7"]


@pytest.fixture(scope="module")
def trained(trained_run: dict) -> dict:
    """The session's tiny in-process `train.py` run (frozen demo embedding)."""
    return {"out": trained_run["dir"], **trained_run}


def split_keys(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k.startswith(("train/", "test/"))}


def test_one_epoch_run_writes_every_report_file(trained: dict) -> None:
    out = trained["out"]
    for name in reports.REPORT_FILES:
        assert (out / name).stat().st_size > 0, name
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert (out / "checkpoints" / "epoch_001.ckpt").is_file()  # best by val/loss, from 1
    assert not (out / "tensorboard").exists()  # CSV only unless logger=tensorboard
    logged = pd.read_csv(out / "csv" / "version_0" / "metrics.csv")
    assert set(logged["epoch"]) == {1}  # epochs count from 1 in every file a user reads
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == trained["metrics"] and metrics["fit/epochs"] == 1
    assert metrics["note"] == demo.NOTE  # the default run's inputs are the synthetic demo
    # The curves' history and the CSV logger saw the same epoch values.
    history = trained["model"].history
    assert logged["val/loss"].dropna().tolist() == pytest.approx([history[0]["val/loss"]])
    assert logged["train/loss"].dropna().tolist() == pytest.approx([history[0]["train/loss"]])
    for split in ("train", "test"):
        cm = {
            (t, p): metrics[f"{split}/confusion_{t}_{p}"]
            for t in ("Fake", "True")
            for p in ("Fake", "True")
        }
        implied = (cm["Fake", "Fake"] + cm["True", "True"]) / sum(cm.values())
        assert metrics[f"{split}/accuracy"] == pytest.approx(implied, abs=1e-6)
        assert sum(cm.values()) == len(trained["datamodule"].rows[split])


def test_evaluate_reproduces_the_training_report(
    trained: dict, compose_train, root_script, tmp_path: Path
) -> None:
    ckpt = trained["out"] / "checkpoints" / "last.ckpt"
    cfg = compose_train(tmp_path, f"ckpt_path={ckpt}", config_name="eval")
    metrics = root_script("evaluate").evaluate(cfg)
    assert split_keys(metrics) == split_keys(trained["metrics"])  # report_on=last: last.ckpt
    for name in reports.REPORT_FILES:
        assert (tmp_path / name).is_file(), name


def test_reload_in_a_fresh_process_gives_identical_probabilities(
    trained: dict, run_python, tmp_path: Path
) -> None:
    texts = trained["datamodule"].texts("test")[:64].tolist()
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    code = (
        "import json, sys, torch\n"
        "from fakenews_pl.training.model import FakeNewsClassifier\n"
        "model = FakeNewsClassifier.load_from_checkpoint(sys.argv[1])\n"
        "torch.save(model.predict_proba(json.load(open(sys.argv[2]))), sys.argv[3])\n"
    )
    ckpt = trained["out"] / "checkpoints" / "last.ckpt"
    run_python(["-c", code, str(ckpt), str(tmp_path / "texts.json"), str(tmp_path / "p.pt")])
    fresh = torch.load(tmp_path / "p.pt")
    assert torch.equal(fresh, trained["model"].predict_proba(texts))


def test_resume_from_last_ckpt_continues_the_run(
    trained: dict, compose_train, root_script, tmp_path: Path
) -> None:
    last = trained["out"] / "checkpoints" / "last.ckpt"
    cfg = compose_train(tmp_path, f"ckpt_path={last}", "trainer.max_epochs=2", "report_on=best")
    metrics, objects = root_script("train").train(cfg)
    trainer, history = objects["trainer"], objects["model"].history
    assert trainer.current_epoch == 2
    assert trainer.global_step == 2 * trained["trainer"].global_step
    assert len(history) == 2 and history[0] == trained["model"].history[0]
    assert metrics["fit/epochs"] == 2
    # last.ckpt holds the final epoch.
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 1  # Lightning counts from 0 inside
    # report_on=best describes the best checkpoint's weights, not the final ones.
    best = trainer.checkpoint_callback.best_model_path
    assert Path(best).name == f"epoch_{metrics['val/best_epoch']:03d}.ckpt"
    cfg = compose_train(tmp_path / "eval", f"ckpt_path={best}", config_name="eval")
    assert split_keys(root_script("evaluate").evaluate(cfg)) == split_keys(metrics)


def test_frozen_cache_trains_exactly_like_token_batches(
    compose_train, root_script, tmp_path: Path
) -> None:
    runs = {}
    for cached in (True, False):
        # Minibatches of pooled vectors (the plan, unfused) against minibatches of token ids
        # (no plan handed over)
        without = [] if cached else ["~callbacks.plan_batches"]
        cfg = compose_train(tmp_path / str(cached), "data.fuse_train_batches=false", *without)
        runs[cached] = root_script("train").train(cfg)
    (cached_metrics, cached), (token_metrics, tokens) = runs[True], runs[False]
    assert cached["datamodule"].plan.pooled is not None and tokens["datamodule"].plan.pooled is None
    assert cached_metrics == token_metrics
    assert cached["model"].history == tokens["model"].history
    for (key, a), (_, b) in zip(
        cached["model"].state_dict().items(), tokens["model"].state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), key


@pytest.mark.parametrize(
    "extra", [[], ["trainable=true"], ["trainable=true", "model.table_optimizer=lazy"]]
)
def test_fused_epoch_batches_train_exactly_like_lightning_steps(
    extra, compose_train, root_script, tmp_path: Path
) -> None:
    """One Lightning step per epoch (the model steps through its minibatches with the head's
    hand-written backward) must give the same minibatches, updates and metrics as one
    Lightning step per minibatch through autograd. The epoch train loss is a weighted mean
    summed in another order, so it may differ in the last float32 bit."""
    runs = {}
    for fused in (True, False):
        cfg = compose_train(
            tmp_path / str(fused),
            f"data.fuse_train_batches={fused}",
            *extra,
            "trainer.limit_train_batches=null",
            "trainer.max_epochs=2",
        )
        runs[fused] = root_script("train").train(cfg)
    (fused_metrics, fused), (plain_metrics, plain) = runs[True], runs[False]
    assert fused["trainer"].num_training_batches == 1
    assert plain["trainer"].num_training_batches > 1
    assert fused["trainer"].global_step == plain["trainer"].global_step > 0
    assert fused_metrics == plain_metrics
    fused_history, plain_history = fused["model"].history, plain["model"].history
    assert [{**row, "train/loss": None} for row in fused_history] == [
        {**row, "train/loss": None} for row in plain_history
    ]
    for a, b in zip(fused_history, plain_history, strict=True):
        assert a["train/loss"] == pytest.approx(b["train/loss"], rel=1e-6, abs=0)
    for (key, a), (_, b) in zip(
        fused["model"].state_dict().items(), plain["model"].state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), key


def test_exact_touched_row_adam_trains_exactly_like_adam_over_the_whole_table(
    compose_train, root_script, tmp_path: Path
) -> None:
    """The default fine-tuning (TouchedRowAdam) against torch's Adam over every row: the same
    weights, history and metrics after two full epochs."""
    runs = {}
    for dense in (False, True):
        cfg = compose_train(
            tmp_path / str(dense),
            "trainable=true",
            f"model.table_optimizer={'dense' if dense else 'exact'}",
            "trainer.limit_train_batches=null",
            "trainer.max_epochs=2",
        )
        runs[dense] = root_script("train").train(cfg)
    (ours_metrics, ours), (dense_metrics, dense) = runs[False], runs[True]
    assert ours_metrics == dense_metrics and ours["model"].history == dense["model"].history
    for (key, a), (_, b) in zip(
        ours["model"].state_dict().items(), dense["model"].state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), key


@pytest.mark.parametrize("sparse", [False, True])
def test_finetuning_trains_the_table(
    sparse: bool, compose_train, root_script, demo_assets: dict, tmp_path: Path
) -> None:
    cfg = compose_train(
        tmp_path, "trainable=true", f"model.table_optimizer={'lazy' if sparse else 'exact'}"
    )
    metrics, objects = root_script("train").train(cfg)
    table = objects["model"].embedding.weight.detach()
    original = HubEmbedding.load(demo_assets["embedding"]).weight
    moved = (table != original).any(dim=1)
    assert moved.sum() > 10  # many rows moved
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt, weights_only=True)
    # Exact or lazy Adam: only the touched rows are saved, the rest is the artifact's.
    assert not any(k.startswith("net.embedding.") for k in saved["state_dict"])
    rows = saved[checkpoints.TOUCHED_ROWS]
    assert set(moved.nonzero().squeeze(1).tolist()) <= set(rows.tolist())
    assert len(rows) < len(table)
    (table_state,) = saved["optimizer_states"][1]["state"].values()
    assert len(table_state["exp_avg"]) == len(rows)  # the moments of those rows only
    reloaded = pipeline.load_model(str(ckpt))
    assert torch.equal(reloaded.embedding.weight, table)
    assert math.isfinite(metrics["test/loss"])


def test_sparse_with_nccl_is_refused_before_any_process_starts(
    compose_train, root_script, tmp_path: Path
) -> None:
    cfg = compose_train(
        tmp_path,
        "trainer=ddp_cpu",
        "trainer.strategy.process_group_backend=nccl",
        "trainable=true",
        "model.table_optimizer=lazy",
    )
    with pytest.raises(ValueError, match="needs the gloo backend"):
        root_script("train").train(cfg)
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize(
    ("experiment", "trainable"), [("notebook_frozen", False), ("notebook_finetune", True)]
)
def test_experiments_use_the_seed_files_like_the_notebook(
    experiment: str, trainable: bool, compose_train, tmp_path: Path
) -> None:
    cfg = compose_train(tmp_path, f"experiment={experiment}")
    assert cfg.trainable is trainable and cfg.model.trainable is trainable
    assert cfg.data.format == "notebook" and cfg.data.val_source == "test"  # data=seed_fakenews
    assert cfg.data.train_csv is None and cfg.report_on == "last"
    files = [Path(f) for f in cfg.data.files]
    assert [f.name.split(".")[0] for f in files] == SEED_FILES
    assert {f.parent for f in files} == {Path(cfg.paths.seed_data_dir)}
    assert cfg.model.embedding_path == cfg.embedding.path and cfg.model.embedding_dim == 128


@pytest.mark.data
def test_seed_data_files_of_the_experiments_exist(seed_data: Path) -> None:
    for name in SEED_FILES:
        assert (seed_data / f"{name}.csv.gz").is_file()


def test_trainer_variants_are_diffs_of_the_default(compose_train, tmp_path: Path) -> None:
    expected = {
        "cpu": ("cpu", 1, None),
        "gpu": ("gpu", 1, None),
        "ddp": ("gpu", -1, None),
        "ddp_cpu": ("cpu", 2, "gloo"),
    }
    for name, (accelerator, devices, backend) in expected.items():
        trainer = compose_train(tmp_path, f"trainer={name}").trainer
        assert (trainer.accelerator, trainer.devices) == (accelerator, devices), name
        assert trainer.deterministic and trainer.max_epochs == 1  # inherited / overridden
        if name.startswith("ddp"):
            assert trainer.strategy.process_group_backend == backend
        assert trainer.plugins[0]._target_ == "fakenews_pl.training.callbacks.AtomicCheckpointIO"


@pytest.mark.slow
# The exact table (sparse gradients all-reduced by gloo) with the bag; the lazy table with a
# CNN, whose length-bucketed sampler Lightning shards.
@pytest.mark.parametrize(("sparse", "encoder"), [(False, "bag"), (True, "cnn")])
def test_two_process_cpu_ddp(
    sparse: bool, encoder: str, run_python, cli_overrides, tiny_run, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    quick = [o for o in tiny_run if "limit_train_batches" not in o]
    args = [
        "train.py",
        "trainer=ddp_cpu",
        "trainable=true",
        f"model.table_optimizer={'lazy' if sparse else 'exact'}",
    ]
    # cnn: length-bucketed minibatches, whose sampler Lightning swaps for a distributed one
    args.append(f"model.encoder={encoder}")
    run_python([*args, *cli_overrides(tmp_path), *quick, f"hydra.run.dir={run}"])
    assert (run / "metrics.json").is_file()
    assert (run / "train_ddp_process_1.log").is_file()  # the second rank ran
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    # Each rank took half of the training rows (the demo's train file less 10% validation).
    train_rows = demo.TRAIN_ROWS - math.ceil(0.1 * demo.TRAIN_ROWS)
    batches = checkpoint["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["completed"]
    assert batches == math.ceil(math.ceil(train_rows / 2) / 32)


@pytest.mark.slow
def test_small_hparams_sweep_multirun(run_python, cli_overrides, tiny_run, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = ["train.py", "-m", "hparams_search=lr_width", "model.hidden_sizes=[32,8]"]
    run_python([*args, *cli_overrides(tmp_path), *tiny_run, f"hydra.sweep.dir={sweep}"])
    runs = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/metrics.json"))]
    assert len(runs) == 2  # model.lr: 1e-4, 1e-3
    assert all("val/best_loss" in m for m in runs)  # the metric the sweep optimizes
    assert runs[0]["test/loss"] != runs[1]["test/loss"]
    overrides = [(sweep / str(i) / ".hydra" / "overrides.yaml").read_text() for i in (0, 1)]
    assert "model.lr=0.0001" in overrides[0] and "model.lr=0.001" in overrides[1]
