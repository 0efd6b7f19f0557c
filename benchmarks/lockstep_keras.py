"""Ours and the notebook's Keras model in lockstep: the same start, minibatches and order.

    python benchmarks/lockstep_keras.py                      # frozen + trainable, both arithmetics
    python benchmarks/lockstep_keras.py --modes frozen --optimizers keras_adam --dim 128

Parity with the notebook is otherwise statistical (`parity_train.py`: test metrics over seeds);
this script shows it step by step. On the seed-fakenews texts (the train rows of
`parity_train.py`'s split) it builds the SVD word-vector module of the train texts as a TF-Hub
SavedModel and its converted artifact (`parity_train.build_module`), then per mode (frozen,
trainable) and per Adam arithmetic of ours (`model.optimizer`: `adam`, torch's; `keras_adam`,
tf.keras's op for op):

* Keras: the notebook's model (`keras_reference.build_model`: `hub.KerasLayer` over the
  SavedModel, Dense 256/64/1, Adam 1e-4, binary cross-entropy), stepped by `train_on_batch`;
* ours: `FakeNewsClassifier` over the artifact, stepped by its own `training_step` (autograd;
  the fused path's updates are the same bit for bit, tests/test_model.py), with the optimizers
  of its `configure_optimizers` (`TouchedRowAdam` for the table when trainable);
* the head's initial weights copied from Keras to ours (the table is the module's on both
  sides: the converter's, checked below), dropout off on both sides (rate 0: no masks), and
  the same 32-row minibatches in the same shuffled order.

It prints each step's loss on both sides (the loss of the minibatch before its update), and
the largest absolute difference of every weight, ours - Keras, after 1, 10 and 100 steps and
one epoch. `--out FILE` writes all of it as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tensorflow_hub's KerasLayer needs Keras 2
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from parity_train import DATA, build_module, code_state, load_seed_data, write_split  # noqa: E402

MINIBATCH = 32
TABLE = "embedding.bag.weight"


@dataclass
class Lockstep:
    """One lockstep run: per-step losses and, per checkpoint (steps done), the largest
    |ours - Keras| of every weight (our state_dict names); and the spacing of float32 numbers
    at each weight's largest |value| at the end (one rounding step there)."""

    mode: str
    optimizer: str
    losses: list[tuple[float, float]] = field(default_factory=list)  # (keras, ours) per step
    diffs: dict[int, dict[str, float]] = field(default_factory=dict)
    spacing: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def loss_diffs(self) -> np.ndarray:
        """(steps,) |ours - Keras| of each step's loss."""
        return np.abs(np.diff(np.asarray(self.losses, dtype=np.float64), axis=1))[:, 0]

    def max_diff(self, steps: int) -> float:
        """The largest |ours - Keras| over every weight after `steps` steps."""
        return max(self.diffs[steps].values())


def minibatch_order(rows: int, seed: int, size: int = MINIBATCH) -> list[np.ndarray]:
    """An epoch of shuffled row indices cut into `size`-row minibatches (the last may be
    shorter), the same for both models."""
    order = np.random.default_rng(seed).permutation(rows)
    return [order[i : i + size] for i in range(0, rows, size)]


def keras_model(module: str | Path, dim: int, trainable: bool, seed: int):
    """The notebook's compiled Keras model (`keras_reference.build_model`), dropout off."""
    import tf_keras as keras
    from keras_reference import build_model

    keras.utils.set_random_seed(seed)
    model = build_model(str(module), dim, trainable)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = 0.0  # read when the train function is traced: identity, no masks
    return model


def keras_weights(model) -> dict[str, np.ndarray]:
    """The Keras model's weights under our state_dict names, in our layout ((out, in) kernels)."""
    import tf_keras as keras

    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    weights = {}
    for index, layer in zip((0, 3, 6), dense, strict=True):
        kernel, bias = (w.numpy() for w in layer.weights)
        weights[f"head.{index}.weight"] = kernel.T
        weights[f"head.{index}.bias"] = bias
    (table,) = model.layers[0].weights  # the module's one variable
    weights[TABLE] = table.numpy()
    return weights


def ours_model(artifact: str | Path, trainable: bool, optimizer: str, start: dict[str, Any]):
    """Our classifier over the artifact, dropout off, the head's weights from `start`; and its
    optimizers, stepped by `training_step` as Lightning would (manual optimization)."""
    import torch

    from fakenews_pl.nn.optim import TouchedRowAdam
    from fakenews_pl.training.model import FakeNewsClassifier

    model = FakeNewsClassifier(
        str(artifact), trainable=trainable, dropouts=(0.0, 0.0), optimizer=optimizer
    )
    with torch.no_grad():
        for name, param in model.head.named_parameters():
            param.copy_(torch.from_numpy(start[f"head.{name}"]))
    table = model.embedding.weight.detach().numpy()
    if table.shape != start[TABLE].shape or not np.array_equal(table, start[TABLE]):
        raise SystemExit(f"{artifact}'s table is not the module's: the conversion differs")
    optimizers = model.configure_optimizers()
    # What Lightning provides to training_step under manual optimization, without a Trainer.
    model.optimizers = lambda: optimizers
    model.manual_backward = lambda loss: loss.backward()
    model.train()

    def synced_weights() -> dict[str, np.ndarray]:
        for o in optimizers:
            if isinstance(o, TouchedRowAdam):
                o.sync()  # it writes moved rows into the table lazily
        return {k: v.detach().numpy() for k, v in model.net.state_dict().items() if k in start}

    return model, synced_weights


def run(
    module: str | Path,
    artifact: str | Path,
    dim: int,
    texts: Sequence[str],
    labels: Sequence[int],
    trainable: bool,
    optimizer: str,
    checkpoints: Sequence[int],
    seed: int = 42,
    log=print,
) -> Lockstep:
    """Both models in lockstep over the first `max(checkpoints)` minibatches of one shuffled
    epoch of (`texts`, `labels`); the differences at each checkpoint (steps done)."""
    import torch

    result = Lockstep("trainable" if trainable else "frozen", optimizer)
    texts, labels = np.asarray(texts, dtype=object), np.asarray(labels, dtype=np.float32)
    batches = minibatch_order(len(texts), seed)[: max(checkpoints)]
    keras = keras_model(module, dim, trainable, seed)
    start = keras_weights(keras)
    ours, ours_weights = ours_model(artifact, trainable, optimizer, start)
    names = [k for k in start if trainable or k != TABLE]
    began = time.perf_counter()
    for step, rows in enumerate(batches, start=1):
        x, y = texts[rows].astype(str), labels[rows]
        keras_loss = float(keras.train_on_batch(x, y)[0])
        ids, offsets = ours.embedding.encode(list(x))
        batch = {"ids": ids, "offsets": offsets, "labels": torch.from_numpy(y)}
        ours_loss = float(ours.training_step(batch, step - 1).detach())
        result.losses.append((keras_loss, ours_loss))
        if step in checkpoints:
            kw, ow = keras_weights(keras), ours_weights()
            result.diffs[step] = {k: float(np.abs(ow[k] - kw[k]).max()) for k in names}
            result.spacing = {k: float(np.spacing(np.abs(kw[k]).max())) for k in names}
            log(f"  step {step}: max |ours - keras| {result.max_diff(step):.3g}")
    result.seconds = time.perf_counter() - began
    return result


# ---------------------------------------------------------------- report


def print_run(result: Lockstep, steps_shown: int) -> None:
    """Per-step losses (the first `steps_shown`, then each checkpoint's) and weight diffs."""
    label = {"adam": "torch's Adam", "keras_adam": "tf.keras's Adam, op for op"}
    print(f"\n== {result.mode}, model.optimizer={result.optimizer} ({label[result.optimizer]})")
    print(f"{'step':>6}{'keras loss':>14}{'ours loss':>14}{'|diff|':>11}")
    diffs = result.loss_diffs()
    shown = sorted({*range(1, min(steps_shown, len(diffs)) + 1), *result.diffs})
    for step in shown:
        keras_loss, ours_loss = result.losses[step - 1]
        print(f"{step:>6}{keras_loss:>14.8f}{ours_loss:>14.8f}{diffs[step - 1]:>11.2e}")
    print(f"max |loss diff| over all {len(diffs)} steps: {diffs.max():.2e}")
    steps = sorted(result.diffs)
    print("max |ours - keras| of each weight after N steps; spacing: of float32 numbers at")
    print("the weight's largest |value| at the end (one rounding step there)")
    print(f"{'weight':<22}{'spacing':>11}" + "".join(f"{s:>11}" for s in steps))
    for name, spacing in result.spacing.items():
        cells = "".join(f"{result.diffs[s][name]:>11.2e}" for s in steps)
        print(f"{name:<22}{spacing:>11.2e}{cells}")
    print(f"{'all':<33}" + "".join(f"{result.max_diff(s):>11.2e}" for s in steps))
    print(f"({result.seconds:.1f} s for both models)")


def print_summary(results: list[Lockstep]) -> None:
    """One line per run: the largest weight difference at each checkpoint."""
    steps = sorted(results[0].diffs)
    print("\nSummary: max |ours - keras| over every weight after N steps (last: one epoch);")
    print("loss: the largest |ours - keras| of a step's loss over the run")
    print(f"{'mode':<12}{'model.optimizer':<17}" + "".join(f"{s:>11}" for s in steps) + "  loss")
    for r in results:
        cells = "".join(f"{r.max_diff(s):>11.2e}" for s in steps)
        print(f"{r.mode:<12}{r.optimizer:<17}{cells}  {r.loss_diffs().max():.2e}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DATA)
    parser.add_argument("--dim", type=int, default=64, help="SVD module dimension")
    parser.add_argument("--seed", type=int, default=42, help="split, init and order seed")
    parser.add_argument("--modes", default="frozen,trainable")
    parser.add_argument("--optimizers", default="adam,keras_adam", help="model.optimizer values")
    parser.add_argument("--steps", default="1,10,100", help="checkpoints before the epoch's end")
    parser.add_argument("--show", type=int, default=10, help="steps whose losses are printed")
    parser.add_argument("--keep", type=Path, help="work dir to keep (module, split)")
    parser.add_argument("--out", type=Path, help="write every loss and difference here (JSON)")
    args = parser.parse_args(argv)
    if not args.data_dir.is_dir():
        sys.exit(f"no seed-fakenews data at {args.data_dir}; this benchmark needs it")
    work = args.keep or Path(tempfile.mkdtemp(prefix="lockstep_"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"lockstep_keras: work dir {work}; load average {os.getloadavg()}")
    print(code_state())
    texts, labels = load_seed_data(args.data_dir)
    write_split(texts, labels, work / "split", args.seed)
    import pandas as pd

    train = pd.read_csv(work / "split" / "train.csv", keep_default_na=False)
    train_texts, train_labels = train["text"].astype(str).tolist(), train["label"].tolist()
    saved, artifact = build_module(train_texts, work, args.dim, rows=None)
    epoch = -(-len(train_texts) // MINIBATCH)
    checkpoints = [*(int(s) for s in args.steps.split(",") if int(s) < epoch), epoch]
    print(f"{len(train_texts)} train rows: one epoch is {epoch} minibatches of {MINIBATCH}")
    results = []
    for mode in args.modes.split(","):
        for optimizer in args.optimizers.split(","):
            print(f"-- {mode}, {optimizer}", flush=True)
            result = run(
                saved,
                artifact,
                args.dim,
                train_texts,
                train_labels,
                trainable=mode == "trainable",
                optimizer=optimizer,
                checkpoints=checkpoints,
                seed=args.seed,
            )
            results.append(result)
            print_run(result, args.show)
    print_summary(results)
    print(f"\nload average {os.getloadavg()}")
    if args.out:
        args.out.write_text(json.dumps([r.__dict__ for r in results], indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
