"""Fused epochs: when they run, that they count optimizer steps as Lightning does, and that a
Lightning upgrade removing the private hooks they call fails loudly."""

import math

import pytest
import torch
from pytorch_lightning import Trainer
from pytorch_lightning.core.optimizer import LightningOptimizer
from pytorch_lightning.loops.optimization.manual import _ManualOptimization

from fakenews_pl import fused
from fakenews_pl.callbacks import PooledFeatures
from fakenews_pl.data import FakeNewsDataModule
from fakenews_pl.model import FakeNewsClassifier

QUIET = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False)


def _trainer(**kwargs) -> Trainer:
    return Trainer(accelerator="cpu", enable_model_summary=False, **QUIET, **kwargs)


def test_fused_only_on_one_device_at_32_bit() -> None:
    assert fused.fuse_epochs(_trainer(devices=1))
    assert not fused.fuse_epochs(_trainer(devices=1, precision="bf16-mixed"))
    assert not fused.fuse_epochs(_trainer(devices=2, strategy="ddp"))
    assert not fused.fuse_epochs(None)


def test_lightnings_private_step_hooks_are_still_there() -> None:
    """The names fused.py calls. If this fails after a Lightning upgrade, fused epochs must be
    adapted (or refused) before the upgrade is allowed."""
    for name in fused.PRIVATE_HOOKS:
        assert callable(getattr(_ManualOptimization, name, None)), name
    optimizer = LightningOptimizer(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1))
    fused.check_lightning([optimizer])  # the instance has them


def test_check_lightning_refuses_with_the_way_out() -> None:
    class Old:
        pass

    with pytest.raises(RuntimeError, match="data.fuse_train_batches=false"):
        fused.check_lightning([Old()])


@pytest.mark.parametrize("trainable", [False, True])
def test_a_fused_epoch_counts_every_optimizer_step(demo_assets: dict, trainable: bool) -> None:
    dm = FakeNewsDataModule(
        str(demo_assets["embedding"]),
        train_csv=str(demo_assets["train_csv"]),
        test_csv=str(demo_assets["test_csv"]),
    )
    model = FakeNewsClassifier(str(demo_assets["embedding"]), trainable=trainable)
    trainer = _trainer(devices=1, max_epochs=1, limit_val_batches=0, callbacks=[PooledFeatures()])
    trainer.fit(model, datamodule=dm)
    assert trainer.num_training_batches == 1  # one epoch batch
    minibatches = math.ceil(len(dm.rows["train"]) / 32)
    optimizers = 2 if trainable else 1  # the head's Adam, and the table's
    assert trainer.global_step == minibatches * optimizers
