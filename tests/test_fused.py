"""Fused epochs: when they run, that they count optimizer steps as Lightning does, and that a
Lightning upgrade removing the private hooks they call fails loudly."""

import math

import pytest
import torch
from pytorch_lightning import Callback, Trainer, seed_everything
from pytorch_lightning.core.optimizer import LightningOptimizer
from pytorch_lightning.loops.optimization.manual import _ManualOptimization

from fakenews_pl.data.datamodule import FakeNewsDataModule
from fakenews_pl.training import fused
from fakenews_pl.training.callbacks import PlanBatches
from fakenews_pl.training.model import FakeNewsClassifier

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
    trainer = _trainer(devices=1, max_epochs=1, limit_val_batches=0, callbacks=[PlanBatches()])
    trainer.fit(model, datamodule=dm)
    assert trainer.num_training_batches == 1  # one epoch batch
    minibatches = math.ceil(len(dm.rows["train"]) / 32)
    optimizers = 2 if trainable else 1  # the head's Adam, and the table's
    assert trainer.global_step == minibatches * optimizers


@pytest.fixture
def two_threads():
    """torch's intra-op thread count set to 2 for the test (so null means 2 threads even on a
    1-core machine), and put back after."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield 2
    torch.set_num_threads(before)


def test_step_threads_must_be_a_count() -> None:
    with pytest.raises(ValueError, match="model.step_threads=0"):
        FakeNewsClassifier("not read: refused first", step_threads=0)


class _ThreadCounts(Callback):
    """torch.get_num_threads() after each training batch and before each validation batch."""

    def __init__(self) -> None:
        self.counts: set[int] = set()

    def on_train_batch_end(self, *args) -> None:
        self.counts.add(torch.get_num_threads())

    def on_validation_batch_start(self, *args) -> None:
        self.counts.add(torch.get_num_threads())


@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "lightning"])
@pytest.mark.parametrize("table", ["frozen", "finetuned", "sparse", "dense"])
def test_step_threads_train_identical_weights_and_restore_the_count(
    demo_assets: dict, two_threads: int, monkeypatch: pytest.MonkeyPatch, fuse: bool, table: str
) -> None:
    """model.step_threads=1 and null (torch's count, 2 here) train the same weights. With 1,
    each step's small ops run on 1 thread, and so does a table's work with row gradients
    (exact or lazy); the count is 2 again around a dense table's gradient and update
    (table_optimizer=dense), after every step or epoch, and after fit; validation batches run
    on step_threads too.

    (The demo's last minibatch has 22 rows; MKL's 2-thread products of 5-7 or 9-11 rows sum
    in another order than its 1-thread ones, so a run ending on one of those would differ in
    the last bits: see docs/benchmarks.md, "Shared machine".)"""
    calls: list[int] = []
    set_threads = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (calls.append(n), set_threads(n)))
    states, histories = {}, {}
    for threads in (1, None):
        calls.clear()
        seed_everything(0)
        dm = FakeNewsDataModule(
            str(demo_assets["embedding"]),
            train_csv=str(demo_assets["train_csv"]),
            test_csv=str(demo_assets["test_csv"]),
            fuse_train_batches=fuse,
        )
        model = FakeNewsClassifier(
            str(demo_assets["embedding"]),
            trainable=table != "frozen",
            table_optimizer={"sparse": "lazy", "dense": "dense"}.get(table, "exact"),
            step_threads=threads,
        )
        counts = _ThreadCounts()
        evaluating: list[int] = []  # the count inside each validation forward pass
        model.net.head.register_forward_pre_hook(
            lambda head, _, seen=evaluating: (
                None if head.training else seen.append(torch.get_num_threads())
            )
        )
        trainer = _trainer(
            devices=1,
            max_epochs=2,
            limit_train_batches=None if fuse else 6,  # fused: the whole epoch is one batch
            limit_val_batches=1,
            callbacks=[PlanBatches(), counts],
        )
        trainer.fit(model, datamodule=dm)
        assert counts.counts == {2}
        assert torch.get_num_threads() == 2
        states[threads], histories[threads] = model.state_dict(), model.history
        if threads is None:
            assert calls == [] and set(evaluating) == {2}
            continue
        assert set(evaluating) == {1}  # validation runs on step_threads too
        # 1 on entering each epoch (fused) or step, 2 on leaving it; with a dense table,
        # 2 and back to 1 around its work: per minibatch (fused), around the backward and the
        # table's step (Lightning); 1 and back to 2 around each validation batch (the sanity
        # check's and one per epoch).
        per_epoch = math.ceil(len(dm.rows["train"]) / 32) if fuse else 6
        minibatches = per_epoch * trainer.max_epochs
        switches = {
            (True, False): 2 * trainer.max_epochs,
            (True, True): 2 * trainer.max_epochs + 2 * minibatches,
            (False, False): 2 * minibatches,
            (False, True): 6 * minibatches,
        }[fuse, table == "dense"]
        switches += 2 * (trainer.max_epochs + 1)
        assert calls == [1, 2] * (switches // 2)
    assert histories[1] == histories[None]
    for key, value in states[1].items():
        assert torch.equal(value, states[None][key]), key
