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
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
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
        module, output_shape=[dim], input_shape=[], dtype=tf.string, trainable=trainable
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

    epoch_seconds: list[float] = []

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            epoch_seconds.append(time.perf_counter() - self.start)

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
            EpochTimer(),
        ],
    )
    names = args.names.split(",")
    steps_run = math.ceil(len(fit_x) / 32)
    result = {
        "trainable": args.trainable,
        "epochs": len(epoch_seconds),
        "epoch_seconds": epoch_seconds,
        "steps_per_epoch_run": steps_run,
        "steps_per_full_epoch": steps_full,
        "full_epoch_seconds": [s * steps_full / steps_run for s in epoch_seconds],
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
