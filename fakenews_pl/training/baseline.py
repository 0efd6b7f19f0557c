"""The notebook's point of comparison, "the models trained on 1-grams TF-IDF": scikit-learn's
`TfidfVectorizer` and a `LogisticRegression`, fitted on exactly the rows and texts of a run's
train split (`model=tfidf_lr`, conf/model/tfidf_lr.yaml), reported like the network, and saved
without pickle:

    DIR/baseline.json        format, class names, `decision` (the threshold, and the target it
                             was chosen for: `fakenews_pl.training.decision`), the training
                             data's format and text column, the settings, the fit (iterations,
                             converged, the train split's fingerprint), the sha256 of every
                             other file, and `baseline_sha256`: that of its own content
    DIR/vocabulary.json      the vocabulary, a JSON list: term i is feature column i
    DIR/weights.safetensors  "idf" (V,), "coef" (1, V), "intercept" (1,), all float64

`TfidfBaseline.load` checks every file against baseline.json before reading any, then rebuilds
the fitted scikit-learn objects: their probabilities equal the saved model's bit for bit.
`pipeline.train` hands a run over to `train` once its data module is built, so that the seed,
the demo inputs and the split are the network's own. No Lightning here.
"""

from __future__ import annotations

import json
import os
import resource
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from fakenews_pl import temporaries
from fakenews_pl.errors import ConfigError, UserError
from fakenews_pl.hub import artifact
from fakenews_pl.training.decision import Decision, TargetUnreachable, decide

KIND = "tfidf_lr"  # `model.kind` of the baseline's config; the network's config has no `kind`
FORMAT = "fakenews_pl.tfidf_baseline/1"
MANIFEST = "baseline.json"
VOCABULARY_FILE = "vocabulary.json"
WEIGHTS_FILE = "weights.safetensors"
FILES = (VOCABULARY_FILE, WEIGHTS_FILE)
BASELINE_SHA256 = "baseline_sha256"
SAVE_DIR = "baseline"  # under a run's output dir: what predict.py and serve.py take
WEIGHTS = "the TF-IDF + logistic regression baseline (one fit on train: no epochs)"
# conf/model/tfidf_lr.yaml's settings, by the object they configure.
VECTORIZER_KEYS = ("ngram_range", "min_df", "max_features", "sublinear_tf", "lowercase")
REGRESSION_KEYS = ("C", "max_iter", "class_weight")


class BaselineError(UserError, ValueError):
    """A saved baseline directory is missing, incomplete or has been altered."""


def is_baseline(model_cfg: DictConfig | dict[str, Any]) -> bool:
    """Whether a `model` config selects the baseline (`model=tfidf_lr`)."""
    return model_cfg.get("kind") == KIND


def is_baseline_dir(path: str | os.PathLike) -> bool:
    """Whether `path` is a directory holding a saved baseline's baseline.json."""
    return (Path(path) / MANIFEST).is_file()


@dataclass(frozen=True)
class BaselineConfig:
    """The vectorizer's and the regression's settings (conf/model/tfidf_lr.yaml, less `kind`);
    `vectorizer` and `regression` are the only places the scikit-learn objects are built."""

    ngram_range: tuple[int, int] = (1, 1)
    min_df: int | float = 1
    max_features: int | None = None
    sublinear_tf: bool = False
    lowercase: bool = True
    C: float = 1.0
    max_iter: int = 1000
    class_weight: str | None = None

    @classmethod
    def from_config(cls, cfg: DictConfig | dict[str, Any]) -> BaselineConfig:
        """From `cfg.model` (or baseline.json's `settings`); unknown keys are a TypeError
        (config.check_baseline names them first)."""
        values = {key: value for key, value in dict(cfg).items() if key != "kind"}
        if "ngram_range" in values:
            values["ngram_range"] = tuple(int(n) for n in values["ngram_range"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings (baseline.json's `settings`)."""
        return {**asdict(self), "ngram_range": list(self.ngram_range)}

    def vectorizer(self, vocabulary: Sequence[str] | None = None) -> Any:
        """A `TfidfVectorizer` to fit, or with `vocabulary` one whose terms are fixed (idf
        still to set)."""
        from sklearn.feature_extraction.text import TfidfVectorizer

        return TfidfVectorizer(
            ngram_range=self.ngram_range,
            min_df=self.min_df,
            max_features=self.max_features,
            sublinear_tf=self.sublinear_tf,
            lowercase=self.lowercase,
            vocabulary=None if vocabulary is None else list(vocabulary),
        )

    def regression(self, seed: int) -> Any:
        """A `LogisticRegression` (lbfgs, L2) seeded with `seed`."""
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(
            C=self.C, max_iter=self.max_iter, class_weight=self.class_weight, random_state=seed
        )


class TfidfBaseline:
    """A fitted TF-IDF vectorizer and logistic regression with the class names (column 1 of
    `predict_proba` is `class_names[1]`) and the decision rule: class 1 where its probability
    is above `threshold` (0.5, or the one the run chose: `decision`, as a `Classifier` has)."""

    def __init__(
        self,
        vectorizer: Any,
        regression: Any,
        class_names: Sequence[str],
        config: BaselineConfig,
        seed: int,
        decision: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        fit: dict[str, Any] | None = None,
    ) -> None:
        self.vectorizer = vectorizer
        self.regression = regression
        self.class_names = [str(name) for name in class_names]
        self.config = config
        self.seed = seed
        # {"threshold", "target", "chosen_on"} (`decision.Decision.as_dict()`).
        self.decision = dict(decision or Decision().as_dict())
        self.threshold = float(self.decision["threshold"])  # may be set; `save` keeps it
        self.data = dict(data or {})  # the training data's format and text column
        self.fit_info = dict(fit or {})  # iterations, whether lbfgs converged, the split

    @classmethod
    def fit(
        cls,
        texts: Sequence[str],
        labels: Sequence[int],
        class_names: Sequence[str],
        config: BaselineConfig,
        seed: int,
        data: dict[str, Any] | None = None,
    ) -> TfidfBaseline:
        """Fit the vectorizer on `texts`, then the regression on their (N, V) features and 0/1
        `labels`. A vocabulary that comes out empty is a `ConfigError` naming the settings."""
        from sklearn.exceptions import ConvergenceWarning

        vectorizer = config.vectorizer()
        try:
            features = vectorizer.fit_transform(list(texts))
        except ValueError as e:  # "After pruning, no terms remain", "empty vocabulary"
            raise ConfigError(
                f"model.min_df={config.min_df}, model.ngram_range={list(config.ngram_range)}: "
                f"no TF-IDF features from {len(texts):,} training texts ({e})"
            ) from None
        regression = config.regression(seed)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            regression.fit(features, np.asarray(labels))
        converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        fit = {"iterations": int(regression.n_iter_.max()), "converged": converged}
        return cls(vectorizer, regression, class_names, config, seed, data=data, fit=fit)

    @property
    def n_features(self) -> int:
        """V: the vocabulary's size."""
        return len(self.vectorizer.vocabulary_)

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """(N,) float64 logits of class 1: the regression's decision function, whose sigmoid
        is `predict_proba`'s column 1."""
        texts = list(texts)
        if not texts:
            return np.zeros(0)
        return self.regression.decision_function(self.vectorizer.transform(texts))

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """(N, 2) float32 probabilities, columns in `class_names` order (scikit-learn's own
        float64 ones, rounded)."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, 2), dtype=np.float32)
        features = self.vectorizer.transform(texts)
        return self.regression.predict_proba(features).astype(np.float32)

    def labels(self, probabilities: np.ndarray) -> list[str]:
        """Class names from (N, 2) probabilities: class 1 where its probability is above
        `threshold`."""
        return [self.class_names[int(p > self.threshold)] for p in probabilities[:, 1]]

    def predict(self, texts: Sequence[str]) -> list[str]:
        """The predicted class name of each text."""
        return self.labels(self.predict_proba(texts))

    def save(self, directory: str | os.PathLike, overwrite: bool = False) -> dict[str, Any]:
        """Write the model into `directory`, atomically (the module docstring's format);
        returns baseline.json's content."""
        from safetensors.numpy import save_file

        vocabulary = sorted(self.vectorizer.vocabulary_, key=self.vectorizer.vocabulary_.get)
        weights = {
            "idf": np.ascontiguousarray(self.vectorizer.idf_, dtype=np.float64),
            "coef": np.ascontiguousarray(self.regression.coef_, dtype=np.float64),
            "intercept": np.ascontiguousarray(self.regression.intercept_, dtype=np.float64),
        }
        with artifact.atomic_directory(directory, overwrite=overwrite) as tmp:
            text = json.dumps(vocabulary, ensure_ascii=False) + "\n"
            (tmp / VOCABULARY_FILE).write_text(text, encoding="utf-8")
            save_file(weights, str(tmp / WEIGHTS_FILE))
            manifest = {
                "format": FORMAT,
                "kind": KIND,
                "class_names": self.class_names,
                "decision": self._decision(),
                "data": self.data,
                "settings": self.config.to_dict(),
                "seed": self.seed,
                "n_features": len(vocabulary),
                "fit": self.fit_info,
                "sha256": {name: artifact.sha256_file(tmp / name) for name in FILES},
            }
            manifest[BASELINE_SHA256] = artifact.meta_checksum(manifest, BASELINE_SHA256)
            text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
            (tmp / MANIFEST).write_text(text, encoding="utf-8")
        return manifest

    def _decision(self) -> dict[str, Any]:
        """`decision`, or a plain threshold when `threshold` was set to another since."""
        if self.threshold == self.decision["threshold"]:
            return self.decision
        return Decision(self.threshold).as_dict()

    @classmethod
    def load(cls, directory: str | os.PathLike) -> TfidfBaseline:
        """The model `save` wrote into `directory`, once baseline.json and every file it lists
        match their sha256 (else a `BaselineError` naming the file and what was expected)."""
        from safetensors.numpy import load_file

        root = Path(directory)
        manifest = read_manifest(root)
        verify(root, manifest)
        vocabulary = _read_vocabulary(root / VOCABULARY_FILE)
        weights = load_file(str(root / WEIGHTS_FILE))
        size = len(vocabulary)
        shapes = {"idf": (size,), "coef": (1, size), "intercept": (1,)}
        for name, shape in shapes.items():
            found = weights.get(name)
            if found is None or found.shape != shape or found.dtype != np.float64:
                what = "missing" if found is None else f"{found.dtype} {found.shape}"
                raise BaselineError(
                    f"{root / WEIGHTS_FILE}: tensor {name!r} is {what}, expected float64 "
                    f"{shape} for the {size:,} terms of {VOCABULARY_FILE}"
                )
        try:
            config = BaselineConfig.from_config(manifest["settings"])
        except (TypeError, ValueError) as e:
            raise BaselineError(
                f"{root / MANIFEST}: settings this version cannot use ({e})"
            ) from None
        vectorizer = config.vectorizer(vocabulary)
        vectorizer.idf_ = weights["idf"]
        regression = config.regression(manifest["seed"])
        regression.coef_ = weights["coef"]
        regression.intercept_ = weights["intercept"]
        regression.classes_ = np.arange(2)
        regression.n_features_in_ = size
        return cls(
            vectorizer,
            regression,
            manifest["class_names"],
            config,
            manifest["seed"],
            manifest["decision"],
            manifest.get("data"),
            manifest.get("fit"),
        )


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    """baseline.json of `directory`, checked for its format, its own checksum and its keys."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise BaselineError(
            f"{directory} is not a saved baseline: {MANIFEST} is missing (train one with "
            "python train.py model=tfidf_lr; it is saved in the run dir's baseline/)"
        )
    redo = "train the baseline again (python train.py model=tfidf_lr)"
    manifest = artifact.read_sealed(path, BaselineError, FORMAT, BASELINE_SHA256, lambda _: redo)
    for key in ("class_names", "decision", "settings", "seed", "sha256"):
        if key not in manifest:
            raise BaselineError(f"{path}: missing key {key!r}")
    return manifest


def verify(directory: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """Refuse a saved baseline whose files differ from the sha256 baseline.json records, or
    that lacks one."""
    root = Path(directory)
    for name in FILES:
        if name not in manifest["sha256"]:
            raise BaselineError(f"{root / MANIFEST}: no sha256 recorded for {name}")
    for name, expected in manifest["sha256"].items():
        path = root / name
        if not path.is_file():
            raise BaselineError(f"{path} is missing: the saved baseline is incomplete")
        if (actual := artifact.sha256_file(path)) != expected:
            raise BaselineError(
                f"{path}: sha256 {actual} does not match {expected} recorded in {MANIFEST}; "
                "the file is truncated or altered (train the baseline again)"
            )


def _read_vocabulary(path: Path) -> list[str]:
    """vocabulary.json: a list of distinct strings, or a `BaselineError`."""
    try:
        vocabulary = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BaselineError(f"{path}: not valid JSON ({e})") from None
    if (
        not isinstance(vocabulary, list)
        or not all(isinstance(term, str) for term in vocabulary)
        or len(set(vocabulary)) != len(vocabulary)
    ):
        raise BaselineError(f"{path}: expected a JSON list of distinct terms")
    return vocabulary


# ------------------------------------------------------------------ a training run


def train(
    cfg: DictConfig,
    datamodule: Any,
    synthetic: bool,
    started: float,
    info: dict[str, Any] | None = None,
    report_val: bool = False,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """`pipeline.train` for `model=tfidf_lr`, from its built `datamodule` on: fit on the train
    split's texts, report train and test (and val with `report_val`) as the network's run does
    (`reports.write_report`: the same metrics.json keys, report.md, confusion matrices; no
    training history: no epochs), save the model in `<output_dir>/baseline/`, write run.json.
    `synthetic`: the inputs are the demo's; `started`: the run's start (`time.perf_counter`).
    Returns (metrics.json's content, the objects built)."""
    import torch

    from fakenews_pl.data import demo
    from fakenews_pl.training import reports

    config = BaselineConfig.from_config(cfg.model)
    hp = datamodule.hparams
    data = {key: hp[key] for key in ("format", "text_column") if key in hp}
    fit_started = time.perf_counter()
    model = TfidfBaseline.fit(
        datamodule.texts("train"),
        datamodule.labels("train"),
        datamodule.class_names,
        config,
        cfg.seed,
        data,
    )
    model.fit_info["train"] = datamodule.fingerprint()["train"]
    print(describe_fit(model, datamodule, time.perf_counter() - fit_started), flush=True)
    splits = [*reports.REPORT_SPLITS, *(["val"] if report_val else [])]
    predictions = {
        split: (
            torch.from_numpy(model.logits(datamodule.texts(split)).astype(np.float32)),
            torch.from_numpy(datamodule.labels(split)),
        )
        for split in splits
    }
    out_dir = cfg.paths.output_dir
    saved = Path(out_dir) / SAVE_DIR
    chosen = _decide(cfg.get("decision"), datamodule, model, saved)
    model.decision, model.threshold = chosen.as_dict(), chosen.threshold
    settings = config.to_dict()
    info = {
        "model": "TF-IDF + logistic regression (model=tfidf_lr)",
        "vectorizer": ", ".join(f"{k}={json.dumps(settings[k])}" for k in VECTORIZER_KEYS),
        "regression": ", ".join(f"{k}={json.dumps(settings[k])}" for k in REGRESSION_KEYS),
        "features": f"{model.n_features:,}",
        "fit": f"{model.fit_info['iterations']} lbfgs iterations, "
        + ("converged" if model.fit_info["converged"] else "NOT converged (model.max_iter)"),
        "data": datamodule.paths,
        "validation": "not used to fit (one fit, no early stopping)",
        "weights": WEIGHTS,
        **(info or {}),
    }
    note = demo.NOTE if synthetic else None
    class_names = datamodule.class_names
    # The model first, then the reports that describe it: a run dir used again (hydra.run.dir)
    # never ends with one model's reports beside another model's files.
    model.save(saved, overwrite=True)
    metrics = reports.write_report(
        out_dir, predictions, class_names, [], info, note, splits, chosen.as_dict()
    )
    print(reports.end_of_run(metrics, class_names, out_dir, WEIGHTS), flush=True)
    write_run_info(out_dir, started, saved)
    return metrics, {"datamodule": datamodule, "model": model, "reported_model": model}


def _decide(decision_cfg: Any, datamodule: Any, model: TfidfBaseline, saved: Path) -> Decision:
    """The run's decision rule (`decision.decide`, as `pipeline.choose_decision` for a network):
    fixed, or chosen on the validation split's probabilities as `predict_proba` gives them (so
    that predict.py and serve.py label those rows as the choice counted them). A target out of
    reach stops the run once the model is saved (as a network's checkpoint is kept)."""
    val = None
    if decision_cfg is not None and decision_cfg.get("target") is not None:
        positive = model.predict_proba(datamodule.texts("val"))[:, 1].astype(np.float64)
        val = (positive, datamodule.labels("val"))
    val_is_test = datamodule.hparams.val_source == "test"
    try:
        return decide(decision_cfg, val, datamodule.class_names, val_is_test)
    except TargetUnreachable:
        model.save(saved, overwrite=True)
        raise


def describe_fit(model: TfidfBaseline, datamodule: Any, seconds: float) -> str:
    """The line a run prints once it has fitted: rows of each split, features, iterations."""
    rows = " / ".join(
        f"{len(datamodule.labels(split)):,} {split}" for split in ("train", "val", "test")
    )
    config, fit = model.config, model.fit_info
    low, high = config.ngram_range
    grams = f"{low}-grams" if low == high else f"{low}- to {high}-grams"
    line = (
        f"TF-IDF ({grams}, {model.n_features:,} terms) + logistic regression (C={config.C:g}): "
        f"fitted on {rows} rows in {seconds:.2f} s, {fit['iterations']} lbfgs iterations"
    )
    if not fit["converged"]:
        line += f"; NOT converged within model.max_iter={config.max_iter}: raise it"
    return line


def write_run_info(out_dir: str | os.PathLike, started: float, saved: Path) -> None:
    """run.json as `pipeline.write_run_info` writes it (what a sweep summary lists), for the
    baseline: no embedding, nothing trainable, `checkpoint` the saved model's directory."""
    info = {
        "embedding": None,
        "trainable": None,
        "encoder": KIND,
        "model": KIND,
        "baseline": True,
        "wall_s": time.perf_counter() - started,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "checkpoint": str(saved),
    }
    temporaries.write_json(Path(out_dir) / "run.json", info)
