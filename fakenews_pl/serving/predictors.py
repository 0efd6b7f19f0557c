"""Which trained model a path holds, loaded for use: what predict.py and serve.py load.

    a checkpoint file, or a bundle directory (bundle.json)  -> `Classifier` (the network)
    a saved TF-IDF baseline, a run's baseline/ (baseline.json) -> `TfidfBaseline`

Both give `class_names`, `predict_proba(texts)` ((N, 2) float32), `labels(probabilities)` and
`predict(texts)`; only the `Classifier` explains its predictions and scores files
(`predict_file`).
"""

from __future__ import annotations

import os
from pathlib import Path

from fakenews_pl.serving import bundle
from fakenews_pl.serving.classifier import THREADS, Classifier
from fakenews_pl.training import baseline


def is_model_dir(path: str | os.PathLike) -> bool:
    """Whether `path` is a directory a predictor loads from: a bundle or a saved baseline."""
    return bundle.is_bundle(path) or baseline.is_baseline_dir(path)


def load_predictor(
    path: str | os.PathLike, device: str = "cpu", threads: int | None = THREADS
) -> Classifier | baseline.TfidfBaseline:
    """The model at `path`: a saved baseline as a `TfidfBaseline` (scikit-learn on the CPU,
    one thread: `device` and `threads` do not apply), anything else by `Classifier.load`."""
    if baseline.is_baseline_dir(path):
        return baseline.TfidfBaseline.load(Path(path))
    return Classifier.load(path, device, threads=threads)
