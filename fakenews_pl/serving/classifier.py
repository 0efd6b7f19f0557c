"""A trained model on new text, from Python, without Hydra or a Lightning trainer.

    from fakenews_pl import Classifier
    clf = Classifier.load("logs/train/runs/<run>/checkpoints/last.ckpt")
    clf.predict_proba(["Did Miley Cyrus secretly get married?"])   # (N, 2), one column a class
    clf.predict(["Did Miley Cyrus secretly get married?"])         # ["Fake"]
    clf.explain(["Did Miley Cyrus secretly get married?"])         # [[("miley", -0.08), ...]]
    clf.predict_file("new.csv", "scored.csv")                       # streamed, any size
    clf.export("exported/")                                          # a bundle: Classifier.load it

`Classifier.load` takes a checkpoint or an exported bundle (`fakenews_pl.serving.bundle`); a bundle
loads without Lightning, Hydra or TensorFlow. A text is classified as the class of column 1
when its probability is above 0.5 (the notebook's `np.rint`). Checkpoints load with
`weights_only=True`; one whose embedding artifact is missing or differs (sha256) is refused in
one line, as is a bundle whose files differ from the sha256 its bundle.json records.

`predict_proba` of a few texts (up to `LEAN_TEXTS`; the bag model on CPU) takes a lean path: the
same ops without the batch machinery, so the same bits, in a third of the time for one text.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fakenews_pl import temporaries, threads
from fakenews_pl.errors import UserError
from fakenews_pl.nn.net import FakeNewsNet, HoldsNet
from fakenews_pl.serving import bundle
from fakenews_pl.training import checkpoints

# Intra-op threads of a prediction. The work is small products and lookups: on a busy 2-core
# machine a second OpenMP thread waits for a core in each of them (one text took ~7 ms instead
# of 0.35 ms, a batch of 1,024 78 ms instead of 2.5 ms: docs/benchmarks.md, "Prediction
# speed"); on an idle one it gains ~1.4x at batch 1,024. `Classifier.threads = None` keeps
# torch's count.
THREADS = 1
# Up to this many texts (and at most `batch_size`), `predict_proba` of the bag model on CPU takes
# the lean path (`Classifier._predict_few`): plain-Python tokenizer and pooling plan, the head's
# functions called directly; bit for bit the batch path's output. Its cost grows faster per token
# than the batch path's (Python strings and dict lookups against Arrow's), so the cut-off is where
# it stops winning for long texts: 8 texts of 200+ tokens take 1.50 ms against the batch path's
# 1.72, 16 take 3.04 against 2.78; headlines gain at any count (1: 0.12 against 0.37 ms; 8: 0.21
# against 0.46). `benchmarks/bench_single_text.py --sizes 1,2,4,8,16`, 2026-12-04, 2 cores,
# load 0.5.
LEAN_TEXTS = 8


class Classifier(HoldsNet):
    """A trained `FakeNewsNet` in evaluation mode, with the class names and the data settings
    it was trained with; its forward passes run on `threads` intra-op threads."""

    def __init__(
        self,
        net: FakeNewsNet,
        class_names: Sequence[str],
        data: dict[str, Any] | None = None,
        fine_tuned: bool = False,
        table_from_artifact: bool = True,
        threads: int | None = THREADS,
        decision: dict[str, Any] | None = None,
    ) -> None:
        self.net = net.eval()
        self.class_names = [str(name) for name in class_names]
        self.data = dict(data or {})  # the training data's format and text column
        self.fine_tuned = fine_tuned  # the table was trained with the head
        # Whether the table equals the artifact's at `embedding.meta["path"]` (a bundle's does;
        # a fine-tuned checkpoint's does not).
        self.table_from_artifact = table_from_artifact
        self.threads = threads  # None: torch's count
        # The decision rule of the run (fakenews_pl/training/decision.py): class 1 where
        # P(class 1) > threshold, 0.5 unless the run chose another on its validation split.
        self.decision = dict(decision or {"threshold": 0.5, "target": None, "chosen_on": None})
        self.threshold = float(self.decision["threshold"])

    @classmethod
    def load(
        cls, path: str | os.PathLike, device: str = "cpu", threads: int | None = THREADS
    ) -> Classifier:
        """The model in checkpoint file `path` or in bundle directory `path`
        (`scripts/export_model.py`), on `device`; neither needs Lightning or Hydra."""
        if bundle.is_bundle(path):
            net, info = bundle.read_bundle(path, device)
            return cls(
                net, info["class_names"], info.get("data"), info["fine_tuned"], threads=threads,
                decision=info.get("decision"),
            )  # fmt: skip
        net, checkpoint = checkpoints.load_net(path, device)
        data = checkpoint.get(checkpoints.DATA_HPARAMS) or {}
        data = {key: data[key] for key in ("format", "text_column") if key in data}
        hp = checkpoint[checkpoints.HPARAMS]
        trainable = bool(hp.get("trainable"))
        names = hp.get("class_names", ("Fake", "True"))
        decision = checkpoint.get(checkpoints.DECISION)  # recorded when the run chose one
        return cls(net, names, data, trainable, not trainable, threads=threads, decision=decision)

    def export(
        self,
        out_dir: str | os.PathLike,
        source: str | None = None,
        overwrite: bool = False,
        onnx: bool = False,
    ) -> dict[str, Any]:
        """Write this model as a bundle (`fakenews_pl.serving.bundle`); returns its bundle.json.
        `onnx`: with model.onnx too (`fakenews_pl.serving.onnx_export`; the `[onnx]` extra)."""
        extras = {}
        if onnx and self.encoder is not None:
            raise UserError(
                f"--onnx exports the bag model; this one has a {self.net.config.encoder} "
                "encoder (export the bundle without --onnx)"
            )
        if onnx:
            from fakenews_pl.serving.onnx_export import ONNX_FILE, write_onnx

            extras[ONNX_FILE] = lambda path: write_onnx(self.net, path)
        return bundle.write_bundle(
            out_dir,
            self.net,
            self.class_names,
            fine_tuned=self.fine_tuned,
            tuned_table=not self.table_from_artifact,
            data=self.data,
            source=source,
            overwrite=overwrite,
            extras=extras,
            decision=self.decision,
        )

    @torch.no_grad()
    def _positive(self, ids: np.ndarray, offsets: np.ndarray) -> torch.Tensor:
        """(T,) ids, (B,) offsets -> (B,) probability of class 1, as the trained model has it,
        on `self.threads` intra-op threads (None: torch's count)."""
        with threads.intra_op(self.threads):
            return self._forward(ids, offsets)

    @torch.no_grad()
    def _forward(self, ids: np.ndarray, offsets: np.ndarray) -> torch.Tensor:
        """`_positive` on the current thread count."""
        device = self.embedding.weight.device
        ids, offsets = torch.from_numpy(ids).to(device), torch.from_numpy(offsets).to(device)
        return self.net.probabilities(ids, offsets).cpu()

    def predict_proba(self, texts: Sequence[str], batch_size: int = 1024) -> np.ndarray:
        """(N, 2) float32 probabilities, columns in `class_names` order."""
        texts = _texts(texts)
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"batch_size={batch_size!r}: expected an integer >= 1")
        if 0 < len(texts) <= min(LEAN_TEXTS, batch_size) and self._lean:
            return self._predict_few(texts)
        return self._predict_batches(texts, batch_size)

    def _predict_batches(self, texts: list[str], batch_size: int) -> np.ndarray:
        """`predict_proba` in batches of `batch_size`: `encode`, the numpy pooling plan and the
        network's forward."""
        tokenizer = self.embedding.tokenizer
        positive = [
            self._positive(*tokenizer.encode(texts[start : start + batch_size]))
            for start in range(0, len(texts), batch_size)
        ]
        p = torch.cat(positive).numpy() if positive else np.zeros(0, dtype=np.float32)
        return np.stack([1 - p, p], axis=1)

    @property
    def _lean(self) -> bool:
        """Whether `_predict_few` can run this model: the bag model, on CPU."""
        return self.net.encoder is None and self.embedding.weight.device.type == "cpu"

    def _predict_few(self, texts: list[str]) -> np.ndarray:
        """`predict_proba` of a few texts, bit for bit the batch path's (one batch of them), at
        a fraction of its fixed cost per call: `encode_few`, then `lean_probabilities`."""
        ids, offsets = self.embedding.tokenizer.encode_few(texts)
        with threads.intra_op(self.threads):
            p = self.net.lean_probabilities(ids, offsets).numpy()
        return np.stack([1 - p, p], axis=1)

    def predict(self, texts: Sequence[str]) -> list[str]:
        """The predicted class name of each text."""
        return self.labels(self.predict_proba(texts))

    def labels(self, probabilities: np.ndarray) -> list[str]:
        """Class names from (N, 2) probabilities: class 1 when its probability is above the
        run's threshold (`self.threshold`, 0.5 unless the run chose another)."""
        return [self.class_names[int(p > self.threshold)] for p in probabilities[:, 1]]

    def explain(self, texts: Sequence[str], top: int = 5) -> list[list[tuple[str, float]]]:
        """Each text's `top` most influential tokens, as the module sees them (after its text
        recipe), by leaving each out: `(token, effect)` with effect = P(class 1 | text) -
        P(class 1 | text without every occurrence of the token). Positive: the token pushed
        toward `class_names[1]`; negative: toward `class_names[0]`. Largest |effect| first;
        tokens the module ignores (no id) are left out.

        One forward pass per text over the text and each of its leave-one-out variants
        (U + 1 bags for U distinct tokens: cheap for a bag model)."""
        tokenizer = self.embedding.tokenizer
        fill = tokenizer.recipe.empty_row_token
        fill_ids = (
            [] if fill is None or tokenizer.token_id(fill) < 0 else [tokenizer.token_id(fill)]
        )
        explained = []
        for tokens in tokenizer.tokenize(_texts(texts)):
            pairs = [(t, i) for t in tokens if (i := tokenizer.token_id(t)) >= 0]
            distinct = list(dict.fromkeys(t for t, _ in pairs))
            bags = [[i for _, i in pairs]]
            bags += [[i for t, i in pairs if t != left] or fill_ids for left in distinct]
            lengths = np.array([len(bag) for bag in bags], dtype=np.int64)
            offsets = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)
            ids = np.fromiter((i for bag in bags for i in bag), dtype=np.int64, count=lengths.sum())
            p = self._positive(ids, offsets).double().numpy()
            effects = sorted(zip(distinct, p[0] - p[1:], strict=True), key=lambda e: -abs(e[1]))
            explained.append([(token, float(effect)) for token, effect in effects[:top]])
        return explained

    def oov_bucket(self, token: str) -> int | None:
        """The out-of-vocabulary bucket `token` hashes to, or None for a vocabulary token (or
        one the module ignores). Every token of a bucket is one row of the table: to the model
        they are the same word."""
        tokenizer = self.embedding.tokenizer
        row = tokenizer.token_id(token)
        return row - tokenizer.vocab_size if row >= tokenizer.vocab_size else None

    def alike(self, tokens: Sequence[str]) -> dict[str, list[str]]:
        """For each of `tokens` that the model cannot tell apart from others of them (one OOV
        bucket, or rows with identical vectors: the demo's words that always occur together),
        those others, in `tokens`' order. Such tokens get equal `explain` effects when they
        occur equally often."""
        tokenizer = self.embedding.tokenizer
        rows = {t: r for t in dict.fromkeys(tokens) if (r := tokenizer.token_id(t)) >= 0}
        if not rows:
            return {}
        vectors = self.embedding.weight.detach()[list(rows.values())].cpu()
        _, group = torch.unique(vectors, dim=0, return_inverse=True)
        members: dict[int, list[str]] = {}
        for token, g in zip(rows, group.tolist(), strict=True):
            members.setdefault(g, []).append(token)
        return {
            t: [o for o in same if o != t]
            for same in members.values()
            if len(same) > 1
            for t in same
        }

    def explain_cost(self, texts: Sequence[str]) -> int:
        """The work `explain(texts)` does, in token-vector additions: each text's tokens times
        its distinct tokens plus one (the text and its leave-one-out variants). The server
        refuses a request over its budget before doing any of it."""
        tokenizer = self.embedding.tokenizer
        return sum(
            len(tokens) * (len(set(tokens)) + 1) for tokens in tokenizer.tokenize(list(texts))
        )

    def predict_file(
        self,
        source: str | os.PathLike,
        out: str | os.PathLike,
        text_column: str | None = None,
        fmt: str | None = None,
        chunk_rows: int = 50_000,
        progress: bool = True,
        explain: int = 0,
    ) -> int:
        """Score every row of CSV `source` into `out`: its columns plus `probability_<class>`
        and `predicted_label`, `chunk_rows` rows at a time (bounded memory); `out` appears
        only when complete. `fmt="notebook"` (default: as trained) rebuilds the notebook's
        input from `text_column` (default: as trained). `explain=k` adds `top_tokens`: each
        text's k most influential tokens (`explain`), as `token:+0.1234` separated by spaces
        (`format_effects`: an out-of-vocabulary token as `token[oov-bucket-N]:+0.1234`).
        Returns the row count."""
        # pandas (~0.3 s to import) only where a file is scored, not for a text or a request.
        from fakenews_pl.data import corpus
        from fakenews_pl.data.corpus import DataError

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
        temporaries.clean_stale(out.parent)  # what a killed predict left beside its output
        with _progress(progress, source) as advance, temporaries.atomic_path(out) as tmp:
            reader = corpus.read_csv_chunks(
                source, chunk_rows, dtype=str, keep_default_na=False, na_values=[""]
            )
            for chunk in reader:
                texts = chunk[text_column].fillna("")
                if fmt == "notebook":
                    hint = "if the column holds plain text, pass format=csv"
                    corpus.require_lists(source, texts, text_column, hint, first_row=rows + 1)
                    texts = corpus.notebook_text(texts)
                probabilities = self.predict_proba(texts.tolist())
                for i, name in enumerate(self.class_names):
                    chunk[f"probability_{name}"] = probabilities[:, i]
                chunk["predicted_label"] = self.labels(probabilities)
                if explain:
                    chunk["top_tokens"] = [
                        format_effects(effects, self.oov_bucket)
                        for effects in self.explain(texts.tolist(), explain)
                    ]
                chunk.to_csv(tmp, mode="a", header=rows == 0, index=False)
                rows += len(chunk)
                advance(len(chunk))
        return rows


def _texts(texts: Sequence[str]) -> list[str]:
    """`texts` as a list; a single str is refused (as a sequence it would be its characters)."""
    if isinstance(texts, str):
        raise TypeError("expected a sequence of texts, got a single str (wrap it in a list)")
    return list(texts)


def format_effects(
    effects: Sequence[tuple[str, float]], oov_bucket: Callable[[str], int | None] | None = None
) -> str:
    """`explain`'s (token, effect) pairs as one line: `token:+0.1234 other:-0.0051`; with
    `oov_bucket` (`Classifier.oov_bucket`), an out-of-vocabulary token is marked with its
    bucket: `Miley[oov-bucket-2]:+0.0183` (tokens of one bucket are one word to the model)."""

    def shown(token: str) -> str:
        bucket = oov_bucket(token) if oov_bucket is not None else None
        return token if bucket is None else f"{token}[oov-bucket-{bucket}]"

    return " ".join(f"{shown(token)}:{effect:+.4f}" for token, effect in effects)


def alike_notes(clf: Classifier, effects: Sequence[tuple[str, float]]) -> list[str]:
    """One line per group of shown tokens the model cannot tell apart (`Classifier.alike`):
    why their effects are equal, which reads as a bug unless said."""
    tokens = [token for token, _ in effects]
    alike, notes, seen = clf.alike(tokens), [], set()
    for token in tokens:
        if token not in alike or token in seen:
            continue
        group = [token, *alike[token]]
        seen.update(group)
        names = ", ".join(group[:-1]) + f" and {group[-1]}"
        buckets = {clf.oov_bucket(t) for t in group}
        if len(buckets) == 1 and None not in buckets:
            why = f"are out of the vocabulary and share bucket {buckets.pop()} (one table row)"
        else:
            why = "have identical vectors in the table"
        notes.append(
            f"note: {names} {why}: to the model they are one word, so their effects are equal "
            "where they occur equally often"
        )
    return notes


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
