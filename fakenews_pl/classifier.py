"""A trained model on new text, from Python, without Hydra or a Lightning trainer.

    from fakenews_pl import Classifier
    clf = Classifier.load("logs/train/runs/<run>/checkpoints/last.ckpt")
    clf.predict_proba(["Did Miley Cyrus secretly get married?"])   # (N, 2), one column a class
    clf.predict(["Did Miley Cyrus secretly get married?"])         # ["Fake"]
    clf.predict_file("new.csv", "scored.csv")                       # streamed, any size

A text is classified as the class of column 1 when its probability is above 0.5 (the
notebook's `np.rint`). Checkpoints load with `weights_only=True`; one whose embedding artifact
is missing or differs (sha256) is refused in one line.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from fakenews_pl import corpus, temporaries
from fakenews_pl.corpus import DataError


class Classifier:
    """A `FakeNewsClassifier` in evaluation mode, with the data settings it was trained with."""

    def __init__(self, model: Any, data: dict[str, Any] | None = None) -> None:
        self.model = model.eval()
        self.class_names = [str(name) for name in model.hparams.class_names]
        self.data = dict(data or {})  # the training data's format and text column

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu") -> Classifier:
        """The model in checkpoint `path`, on `device`."""
        from fakenews_pl import pipeline  # the checkpoint loaders (weights_only, one-line refusals)

        model = pipeline.load_model(str(path), map_location=torch.device(device))
        data = pipeline.read_checkpoint(path).get("datamodule_hyper_parameters")
        return cls(model, data)

    @torch.no_grad()
    def predict_proba(self, texts: Sequence[str], batch_size: int = 1024) -> np.ndarray:
        """(N, 2) float32 probabilities, columns in `class_names` order."""
        texts = list(texts)
        positive = [
            self.model.predict_proba(texts[start : start + batch_size]).float().cpu()
            for start in range(0, len(texts), batch_size)
        ]
        p = torch.cat(positive).numpy() if positive else np.zeros(0, dtype=np.float32)
        return np.stack([1 - p, p], axis=1)

    def predict(self, texts: Sequence[str]) -> list[str]:
        """The predicted class name of each text."""
        return self.labels(self.predict_proba(texts))

    def labels(self, probabilities: np.ndarray) -> list[str]:
        """Class names from (N, 2) probabilities: class 1 when its probability is above 0.5."""
        return [self.class_names[int(p > 0.5)] for p in probabilities[:, 1]]

    def predict_file(
        self,
        source: str | os.PathLike,
        out: str | os.PathLike,
        text_column: str | None = None,
        fmt: str | None = None,
        chunk_rows: int = 50_000,
        progress: bool = True,
    ) -> int:
        """Score every row of CSV `source` into `out`: its columns plus `probability_<class>`
        and `predicted_label`, `chunk_rows` rows at a time (bounded memory); `out` appears
        only when complete. `fmt="notebook"` (default: as trained) rebuilds the notebook's
        input from `text_column` (default: as trained). Returns the row count."""
        source, out = Path(source), Path(out)
        fmt = fmt or self.data.get("format") or "csv"
        text_column = text_column or self.data.get("text_column") or "text"
        if fmt not in ("notebook", "csv"):
            raise DataError(f"predict format must be notebook or csv, got {fmt!r}")
        header = corpus.read_header(source)
        if text_column not in header:
            raise DataError(
                f"{source}: missing column {text_column!r} (text_column); "
                f"the file has columns {header}"
            )
        rows = 0
        with _progress(progress, source) as advance, temporaries.atomic_path(out) as tmp:
            reader = pd.read_csv(
                source, dtype=str, keep_default_na=False, na_values=[""], chunksize=chunk_rows
            )
            for chunk in reader:
                texts = chunk[text_column].fillna("")
                if fmt == "notebook":
                    texts = corpus.notebook_text(texts)
                probabilities = self.predict_proba(texts.tolist())
                for i, name in enumerate(self.class_names):
                    chunk[f"probability_{name}"] = probabilities[:, i]
                chunk["predicted_label"] = self.labels(probabilities)
                chunk.to_csv(tmp, mode="a", header=rows == 0, index=False)
                rows += len(chunk)
                advance(len(chunk))
        return rows


class _progress:
    """A rich progress line counting scored rows (nothing when `enabled` is false)."""

    def __init__(self, enabled: bool, source: Path) -> None:
        self.enabled, self.source = enabled, source

    def __enter__(self):
        if not self.enabled:
            return lambda n: None
        from rich.progress import Progress, SpinnerColumn, TextColumn

        self.bar = Progress(
            SpinnerColumn(), TextColumn("{task.description} {task.completed:,} rows")
        )
        self.bar.start()
        task = self.bar.add_task(f"scoring {self.source.name}", total=None)
        return lambda n: self.bar.advance(task, n)

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            self.bar.stop()
