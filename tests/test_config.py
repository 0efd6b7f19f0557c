"""The composed config is checked before any work; each refusal names its key."""

from pathlib import Path

import pytest
import torch

from fakenews_pl.errors import ConfigError
from fakenews_pl.training import config


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.dropouts=[0.3]", "model.dropouts=[0.3]: expected one dropout rate per hidden"),
        ("model.dropouts=[0.3,1.0]", "model.dropouts=[0.3,1.0]: expected rates in [0, 1)"),
        ("model.hidden_sizes=[]", "model.hidden_sizes=[]: expected a non-empty list"),
        ("model.hidden_sizes=[256,0]", "model.hidden_sizes=[256,0]: expected a non-empty"),
        ("model.lr=-1", "model.lr=-1: expected a learning rate > 0"),
        ("model.adam_eps=0", "model.adam_eps=0: expected an epsilon > 0"),
        ("data.batch_size=0", "data.batch_size=0: expected a batch size >= 1"),
        ("data.val_fraction=1.5", "data.val_fraction=1.5: expected a fraction in (0, 1)"),
        ("trainer.max_epochs=0", "trainer.max_epochs=0: expected an epoch count >= 1"),
        ("trainer.min_epochs=5", "trainer.min_epochs=5: expected an epoch count between 0 and"),
        ("trainer.precision=8", "trainer.precision=8: expected one of"),
        ("trainer.devices=0", "trainer.devices=0: expected -1, 'auto' or a process count"),
        ("report_on=first", "report_on=first: expected one of ['last', 'best']"),
        ("ckpt_path=/no/such.ckpt", "ckpt_path=/no/such.ckpt: expected a checkpoint file"),
        ("model.lr=inf", "model.lr=inf: expected a finite number"),
        ("model.dropouts=[0.3,nan]", "model.dropouts[1]=nan: expected a finite number"),
        ("data.val_fraction=-inf", "data.val_fraction=-inf: expected a finite number"),
        ("seed=-1", "seed=-1: expected an integer in [0, 2**32 - 1]"),
        ("model.table_optimizer=sparse", "model.table_optimizer=sparse: expected one of exact,"),
        ("model.optimizer=sgd", "model.optimizer=sgd: expected one of adam, keras_adam"),
        (
            "+model.dense_table_adam=true",
            "model.dense_table_adam was replaced: use model.table_optimizer=dense (true)",
        ),
        (
            "trainer.enable_checkpointing=false",
            "trainer.enable_checkpointing=False: expected true while callbacks.model_checkpoint,"
            " callbacks.last_checkpoint are listed (remove them too: ~callbacks.model_checkpoint",
        ),
    ],
)
def test_bad_values_are_refused_naming_the_key(
    override: str, message: str, compose_train, tmp_path: Path
) -> None:
    cfg = compose_train(tmp_path, override)
    with pytest.raises(ConfigError) as info:
        config.check_train_config(cfg)
    assert str(info.value).startswith(message)


def test_the_default_and_the_experiments_pass(compose_train, tmp_path: Path) -> None:
    for overrides in ([], ["experiment=notebook_finetune"], ["trainer=ddp_cpu"]):
        config.check_train_config(compose_train(tmp_path, *overrides))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without GPU")
def test_a_gpu_that_is_not_there_is_refused(compose_train, tmp_path: Path) -> None:
    for trainer in ("gpu", "ddp"):
        with pytest.raises(ConfigError, match="trainer.accelerator=gpu: expected a machine with"):
            config.check_train_config(compose_train(tmp_path, f"trainer={trainer}"))


def test_evaluate_needs_a_checkpoint_file_and_a_real_device(compose_train, tmp_path: Path) -> None:
    cfg = compose_train(tmp_path, f"ckpt_path={tmp_path / 'x.ckpt'}", config_name="eval")
    with pytest.raises(ConfigError, match="ckpt_path=.*x.ckpt: expected a checkpoint file"):
        config.check_eval_config(cfg)
    (tmp_path / "x.ckpt").write_bytes(b"")
    cfg = compose_train(
        tmp_path, f"ckpt_path={tmp_path / 'x.ckpt'}", "device=tpu", config_name="eval"
    )
    with pytest.raises(ConfigError, match="device=tpu: expected cpu or cuda"):
        config.check_eval_config(cfg)


def test_ddp_under_multirun_needs_spawned_workers(compose_train, tmp_path: Path) -> None:
    cfg = compose_train(tmp_path, "trainer=ddp_cpu")
    config.check_train_config(cfg, multirun=False)  # a single run: Lightning's launcher is fine
    with pytest.raises(ConfigError, match="trainer.strategy.start_method=popen: expected spawn"):
        config.check_train_config(cfg, multirun=True)
    spawned = compose_train(tmp_path, "trainer=ddp_spawn", "trainer.accelerator=cpu")
    assert spawned.trainer.strategy.start_method == "spawn"
    config.check_multirun_strategy(spawned, multirun=True)


def test_launcher_configs_compose() -> None:
    """hydra/launcher=joblib (parallel jobs on one machine) and submitit_slurm (clusters:
    cannot run here) compose with train.yaml."""
    from hydra import compose, initialize_config_dir

    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    repo = Path(__file__).resolve().parents[1]
    with initialize_config_dir(config_dir=str(repo / "conf"), version_base="1.3"):
        for launcher, target in (("joblib", "JoblibLauncher"), ("submitit_slurm", "SlurmLauncher")):
            cfg = compose(
                "train", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True
            )
            assert cfg.hydra.launcher._target_.endswith(target)
