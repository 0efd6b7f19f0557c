"""The notebook's Keras model, exactly, as the reference our Lightning model is measured against.

    python benchmarks/keras_reference.py --module SAVED_MODEL --split SPLIT_DIR [--trainable]
        [--max-steps N] [--out result.json]

`SPLIT_DIR` holds `train.csv`, `val.csv` and `test.csv` with columns `text,label` (label 0/1),
written by `benchmarks/parity_train.py` or `benchmarks/bench_train.py` from our own split, so
both models see the same rows. The model is the notebook's `transfer_model`: `hub.KerasLayer`
over the SavedModel, Dense(256, relu), Dropout(0.3), Dense(64, relu), Dropout(0.2),
Dense(1, sigmoid); Adam(1e-4), binary cross-entropy, batch 32, up to 100 epochs, EarlyStopping on
val_loss with patience 2 (final weights kept, as in the notebook). `--max-steps` cuts each epoch
to N batches (for the 20-minute fine-tuning epochs) and reports the time scaled to a full epoch.
The result JSON holds per-epoch seconds, peak RSS, and the notebook's classification report.

Timing: `epoch_seconds` is wall time from Keras's `on_epoch_begin` to `on_epoch_end`, which
includes the epoch's validation pass; `train_seconds` / `val_seconds` split it at
`on_test_begin`. For a cut epoch, `full_epoch_seconds` is the median step time (`step_seconds`,
the run's first step, which traces the graph, left out) times the steps of a full epoch, plus
the measured validation time: scaling a mean would multiply one-off costs (graph tracing, the
optimizer's slot variables, a burst of load from other work).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tensorflow_hub's KerasLayer needs Keras 2
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def build_model(module: str, dim: int, trainable: bool):
    """The notebook's `transfer_model`, compiled as it compiles it."""
    import tensorflow as tf
    import tensorflow_hub as hub
    import tf_keras as keras

    hub_layer = hub.KerasLayer(
        module,
        output_shape=[dim],
        input_shape=[],
        dtype=tf.string,
        trainable=trainable,
    )
    if trainable and not hub_layer.trainable_weights:
        # KerasLayer fine-tunes only what the module lists as `trainable_variables`
        # (export_v2.py lists the table); without them --trainable would train the head only.
        raise SystemExit(
            f"--trainable: {module} lists no trainable_variables, so Keras would fine-tune "
            "nothing but the head; re-export it with fakenews_pl.hub.hub_module"
        )
    model = keras.Sequential(
        [
            hub_layer,
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=1e-4),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy")],
    )
    return model


def report(y_true, y_prob, names: list[str]) -> dict:
    """sklearn's classification_report on `np.rint(predict)`, as the notebook's print_results."""
    import numpy as np
    from sklearn.metrics import classification_report, confusion_matrix, roc_auc_score

    y_pred = np.rint(y_prob).astype(int)
    out = classification_report(
        y_true, y_pred, target_names=names, output_dict=True, zero_division=0
    )
    out["confusion_matrix"] = confusion_matrix(y_true, y_pred, labels=[0, 1]).tolist()
    out["auroc"] = float(roc_auc_score(y_true, y_prob)) if len(set(y_true)) == 2 else None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--module", required=True, help="TF-Hub SavedModel directory or handle")
    parser.add_argument("--split", type=Path, required=True, help="dir with train/val/test.csv")
    parser.add_argument("--trainable", action="store_true", help="fine-tune the embedding")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--max-steps", type=int, default=0, help="batches per epoch (0: all)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--names", default="Fake,True", help="class names for labels 0,1")
    parser.add_argument("--out", type=Path, help="write the result JSON here")
    args = parser.parse_args()

    import numpy as np
    import pandas as pd
    import tensorflow as tf
    import tf_keras as keras

    keras.utils.set_random_seed(args.seed)
    frames = {
        s: pd.read_csv(args.split / f"{s}.csv", keep_default_na=False)
        for s in ("train", "val", "test")
    }
    x = {s: f["text"].astype(str).to_numpy() for s, f in frames.items()}
    y = {s: f["label"].to_numpy().astype("float32") for s, f in frames.items()}
    dim = int(tf.saved_model.load(args.module)(tf.constant([""])).shape[-1])
    model = build_model(args.module, dim, args.trainable)

    times: dict[str, list[float]] = {"epoch": [], "train": [], "val": [], "step": []}

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self, per_step: bool) -> None:
            super().__init__()
            self.per_step = per_step
            self._supports_tf_logs = True  # no per-batch conversion of the logs to numpy

        def on_epoch_begin(self, epoch, logs=None):
            self.start = self.val_start = time.perf_counter()

        def on_train_batch_begin(self, batch, logs=None):
            if self.per_step:
                self.step_start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            if self.per_step:
                times["step"].append(time.perf_counter() - self.step_start)

        def on_test_begin(self, logs=None):
            self.val_start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            end = time.perf_counter()
            times["epoch"].append(end - self.start)
            times["train"].append(self.val_start - self.start)
            times["val"].append(end - self.val_start)

    steps_full = math.ceil(len(x["train"]) / 32)
    fit_x, fit_y = x["train"], y["train"]
    if args.max_steps:
        # The cut epoch trains on a prefix of a shuffled order; its time scales linearly.
        order = np.random.default_rng(args.seed).permutation(len(fit_x))[: args.max_steps * 32]
        fit_x, fit_y = fit_x[order], fit_y[order]
    history = model.fit(
        fit_x,
        fit_y,
        epochs=args.epochs,
        batch_size=32,
        verbose=0,
        validation_data=(x["val"], y["val"]),
        callbacks=[
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=2, mode="min"),
            EpochTimer(per_step=bool(args.max_steps)),
        ],
    )
    names = args.names.split(",")
    steps_run = math.ceil(len(fit_x) / 32)
    full_epoch_seconds = times["epoch"]
    if steps_run < steps_full:
        step_median = statistics.median(times["step"][1:] or times["step"])
        full_epoch_seconds = [step_median * steps_full + v for v in times["val"]]
    result = {
        "trainable": args.trainable,
        "trainable_params": int(sum(int(tf.size(w)) for w in model.trainable_weights)),
        "epochs": len(times["epoch"]),
        "epoch_seconds": times["epoch"],
        "train_seconds": times["train"],
        "val_seconds": times["val"],
        "step_seconds": times["step"],
        "steps_per_epoch_run": steps_run,
        "steps_per_full_epoch": steps_full,
        "full_epoch_seconds": full_epoch_seconds,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "history": {k: [float(v) for v in vals] for k, vals in history.history.items()},
        "train": report(y["train"], model.predict(x["train"], verbose=0)[:, 0], names),
        "test": report(y["test"], model.predict(x["test"], verbose=0)[:, 0], names),
    }
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text if not args.out else f"wrote {args.out}", file=sys.stdout)


if __name__ == "__main__":
    main()
