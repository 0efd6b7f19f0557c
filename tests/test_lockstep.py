"""model.optimizer=keras_adam against tf.keras itself: the optimizer given the same gradients
(bit for bit), and a short lockstep of the notebook's Keras model and ours on a tiny module
(benchmarks/lockstep_keras.py; docs/parity.md)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tensorflow_hub's KerasLayer needs Keras 2
tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("tf_keras")
pytest.importorskip("tensorflow_hub")

from fakenews_pl.data import demo  # noqa: E402
from fakenews_pl.hub.convert import convert  # noqa: E402
from fakenews_pl.nn.optim import KerasAdam, TouchedRowAdam, keras_alpha  # noqa: E402

pytestmark = [pytest.mark.tf, pytest.mark.slow]

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
# Ours and Keras's weights after lockstep steps with keras_adam: the largest difference. The
# weights here are below 1 in size, where float32 numbers are at most 6e-8 apart: this is a
# rounding step or two. What is left are float32 rounding differences in the gradients (matrix
# products and sums in another order: oneDNN's and MKL's; the loss's gradient formula); measured
# 1.5e-8 after 20 steps. torch's Adam is 7e-5 away after one step.
TOLERANCE = 1e-7
LOSS_TOLERANCE = 1e-6


def test_keras_alpha_equals_tensorflows_for_every_step() -> None:
    @tf.function
    def alpha(step):  # as Adam.update_step computes it, in a graph
        power = tf.cast(step, tf.float32)
        beta_1_power = tf.pow(tf.cast(0.9, tf.float32), power)
        beta_2_power = tf.pow(tf.cast(0.999, tf.float32), power)
        return tf.cast(1e-4, tf.float32) * tf.sqrt(1 - beta_2_power) / (1 - beta_1_power)

    steps = [*range(1, 3000), *range(3000, 200_000, 997)]
    ours = np.array([keras_alpha(1e-4, 0.9, 0.999, s) for s in steps], dtype=np.float32)
    theirs = np.array([alpha(tf.constant(s)).numpy() for s in steps])
    assert np.array_equal(ours, theirs)


def test_keras_adam_equals_tf_keras_adam_bit_for_bit() -> None:
    """The same gradients into tf_keras's Adam (in a tf.function, as fit runs it) and ours:
    a dense kernel, and a table with row gradients (tf.IndexedSlices, what an embedding
    lookup gives) into KerasAdam(row_gradients) and TouchedRowAdam(arithmetic='keras'); and a
    float64 table, whose update Keras computes in float64."""
    rng = np.random.default_rng(0)
    kernel0 = (rng.normal(size=(20, 8)) * 0.1).astype(np.float32)
    table0 = (rng.normal(size=(30, 6)) * 0.1).astype(np.float32)
    table64_0 = table0.astype(np.float64) * (1 + 1e-12)  # values float32 cannot hold
    kernel, table, table64 = tf.Variable(kernel0), tf.Variable(table0), tf.Variable(table64_0)
    optimizer = keras.optimizers.Adam(learning_rate=1e-4)
    shape = tf.constant(table0.shape, tf.int64)

    @tf.function
    def apply(grad, rows, values, values64):
        optimizer.apply_gradients(
            [
                (grad, kernel),
                (tf.IndexedSlices(values, rows, shape), table),
                (tf.IndexedSlices(values64, rows, shape), table64),
            ]
        )

    ours_kernel = torch.nn.Parameter(torch.from_numpy(kernel0.copy()))
    ours_table, touched_table = (torch.nn.Parameter(torch.from_numpy(table0.copy())) for _ in "ab")
    touched64 = torch.nn.Parameter(torch.from_numpy(table64_0.copy()))
    ours = [
        KerasAdam([ours_kernel], lr=1e-4, eps=1e-7),
        KerasAdam([ours_table], lr=1e-4, eps=1e-7, row_gradients=True),
        TouchedRowAdam([touched_table], lr=1e-4, eps=1e-7, arithmetic="keras"),
        TouchedRowAdam([touched64], lr=1e-4, eps=1e-7, arithmetic="keras"),
    ]
    for step in range(300):
        spread = 10.0 ** rng.uniform(-9, -2, size=kernel0.shape)  # epsilon matters, or not
        grad = (rng.normal(size=kernel0.shape) * spread).astype(np.float32)
        rows = np.unique(rng.integers(0, 10 + step // 20, size=5))  # rows join over time
        values = (rng.normal(size=(len(rows), 6)) * 1e-5).astype(np.float32)
        values64 = values.astype(np.float64) / 3
        apply(tf.constant(grad), tf.constant(rows), tf.constant(values), tf.constant(values64))
        ours_kernel.grad = torch.from_numpy(grad)
        dense = torch.zeros(table0.shape)
        dense[torch.from_numpy(rows)] = torch.from_numpy(values)
        ours_table.grad = dense
        touched_table.grad = dense.to_sparse(1)  # rows
        dense64 = torch.zeros(table0.shape, dtype=torch.float64)
        dense64[torch.from_numpy(rows)] = torch.from_numpy(values64)
        touched64.grad = dense64.to_sparse(1)
        for o in ours:
            o.step()
    for o in ours[2:]:
        o.sync()
    assert np.array_equal(ours_kernel.detach().numpy(), kernel.numpy())
    assert np.array_equal(ours_table.detach().numpy(), table.numpy())
    assert np.array_equal(touched_table.detach().numpy(), table.numpy())
    assert np.array_equal(touched64.detach().numpy(), table64.numpy())


@pytest.fixture(scope="module")
def tiny_module(tmp_path_factory) -> dict:
    """A TF-Hub-format SVD module (16 dims) of 640 synthetic headlines and its artifact."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCHMARKS))
        from svd_module import export_svd_module
    root = tmp_path_factory.mktemp("lockstep")
    frame = demo.make_headlines(640, seed=3)
    texts, labels = frame["text"].tolist(), (frame["label"] == "True").astype(int).tolist()
    export_svd_module(texts, root / "module", dim=16)
    convert(str(root / "module"), root / "artifact", show_progress=False)
    return {"module": root / "module", "artifact": root / "artifact", "texts": texts, "y": labels}


@pytest.fixture
def lockstep(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import lockstep_keras

    return lockstep_keras


@pytest.mark.parametrize("trainable", [False, True])
def test_a_short_lockstep_agrees_with_keras_to_float32_rounding(
    trainable: bool, tiny_module: dict, lockstep
) -> None:
    def run(optimizer: str):
        return lockstep.run(
            tiny_module["module"],
            tiny_module["artifact"],
            16,
            tiny_module["texts"],
            tiny_module["y"],
            trainable=trainable,
            optimizer=optimizer,
            checkpoints=(1, 5, 20),
            log=lambda _: None,
        )

    exact = run("keras_adam")
    assert len(exact.losses) == 20 and set(exact.diffs) == {1, 5, 20}
    assert (lockstep.TABLE in exact.diffs[20]) is trainable  # the table is compared when it moves
    for steps in (1, 5, 20):
        assert exact.max_diff(steps) <= TOLERANCE, (steps, exact.diffs[steps])
    assert exact.loss_diffs().max() <= LOSS_TOLERANCE
    if not trainable:
        torch_adam = run("adam")  # the default arithmetic is visibly not Keras's
        assert torch_adam.max_diff(1) > 20 * TOLERANCE
