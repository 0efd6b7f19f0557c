"""The embedded default: a synthetic headline dataset and a small embedding built from it.

`python train.py` with no arguments must run on a fresh clone without downloads or TensorFlow.
The demo inputs live in one directory, `paths.demo_dir`; `prepare` writes those a run reads
(deterministically and atomically) when they are missing, and nothing else generates data:

* `DEMO_DIR/train.csv`, `DEMO_DIR/test.csv`: synthetic headlines, made up from templates,
  labelled `Fake` (gossip-style templates) or `True` (wire-style templates), with shared
  templates and flipped labels so the task is not trivially separable. They are written in
  the notebook's column format (`text,label,cleaned,for_glove`), so the default run goes
  through the notebook's own preprocessing. They say nothing about real news.
* `DEMO_DIR/embedding/`: a converted-format embedding (`artifact.write_artifact`, the v2 exporter's
  `TextRecipe()`): word vectors from a truncated SVD of the term-document matrix of a
  *separate* unlabelled synthetic corpus, plus a few random OOV-bucket rows.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fakenews_pl import temporaries
from fakenews_pl.hub import artifact
from fakenews_pl.hub.tokenizer import HubTokenizer, TextRecipe

SEED = 20220702
DIM = 32
OOV_BUCKETS = 4
TRAIN_ROWS, TEST_ROWS = 1340, 660  # the notebook's 67/33 train/test proportion
FAKE_SHARE = 0.4  # the notebook's data is about 40% Fake
LABEL_NOISE = 0.08
EMBEDDING, TRAIN_CSV, TEST_CSV = "embedding", "train.csv", "test.csv"  # inside paths.demo_dir
# Written into metrics.json, report.md and every figure; worded as before the package had
# subpackages, so a demo run's metrics.json stays byte-identical across that change.
NOTE = "synthetic demo inputs (fakenews_pl.demo): not real news"

_NAMES = [
    "Ava Marlow",
    "Jon Castell",
    "Mia Okafor",
    "Leo Brandt",
    "Zoe Harlan",
    "Nico Vale",
    "Ivy Stroud",
    "Max Delgado",
    "Ruby Kane",
    "Theo Lindqvist",
    "Cleo Varga",
    "Sam Oyelaran",
]
_PLACES = ["Ridgeford", "Lake Orin", "Port Calder", "Easton Vale", "Millbrook", "Norhaven"]
_ORGS = [
    "the city council",
    "the health ministry",
    "the central bank",
    "the state university",
    "the transport authority",
    "the energy regulator",
]
_TOPICS = [
    "the new album",
    "the wedding",
    "the film premiere",
    "the award show",
    "the tour",
    "the charity gala",
    "the fashion week",
    "the reality series",
]
_POLICY = [
    "a housing plan",
    "new rail funding",
    "a school budget",
    "water safety rules",
    "a tax review",
    "flood defences",
    "a hospital expansion",
]
_GOSSIP = [
    "secretly married",
    "caught cheating",
    "pregnant with twins",
    "feuding",
    "broke up",
    "banned from the set",
    "fired from the show",
    "hiding a secret",
]
_NUMBERS = ["2", "3", "4", "5", "7", "12", "15", "20"]

# (template, label); "either" templates get a label by the class prior, so words alone don't tell.
_TEMPLATES = [
    ("SHOCKING {name} {gossip} after {topic}", "Fake"),
    ("You won't believe what {name} said about {name2}", "Fake"),
    ("Insiders claim {name} and {name2} {gossip}", "Fake"),
    ("{name} is {gossip} sources reveal", "Fake"),
    ("EXCLUSIVE {name} furious as {name2} steals {topic}", "Fake"),
    ("Fans stunned {name} {gossip} in {place}", "Fake"),
    ("{orgc} approves {policy} for {place}", "True"),
    ("{orgc} reports {number} percent rise in {place} rents", "True"),
    ("{name} to headline {topic} in {place} organisers confirm", "True"),
    ("Officials in {place} announce {policy}", "True"),
    ("{orgc} publishes annual review of {policy}", "True"),
    ("{name} wins award for {topic} at ceremony in {place}", "True"),
    ("{name} seen in {place} ahead of {topic}", "either"),
    ("{name} and {name2} attend {topic}", "either"),
    ("What {name} told reporters about {topic}", "either"),
]


def make_headlines(n: int, seed: int) -> pd.DataFrame:
    """`n` synthetic headlines with columns `text` and `label` (`Fake`/`True`)."""
    rng = np.random.default_rng(seed)
    fake_ids = [i for i, (_, lab) in enumerate(_TEMPLATES) if lab == "Fake"]
    true_ids = [i for i, (_, lab) in enumerate(_TEMPLATES) if lab == "True"]
    either_ids = [i for i, (_, lab) in enumerate(_TEMPLATES) if lab == "either"]
    rows = []
    for _ in range(n):
        label = "Fake" if rng.random() < FAKE_SHARE else "True"
        pool = either_ids if rng.random() < 0.2 else (fake_ids if label == "Fake" else true_ids)
        template = _TEMPLATES[int(rng.choice(pool))][0]
        name, name2 = rng.choice(_NAMES, size=2, replace=False)
        text = template.format(
            name=name,
            name2=name2,
            place=rng.choice(_PLACES),
            topic=rng.choice(_TOPICS),
            policy=rng.choice(_POLICY),
            gossip=rng.choice(_GOSSIP),
            number=rng.choice(_NUMBERS),
            orgc=str(rng.choice(_ORGS)).capitalize(),
        )
        if rng.random() < LABEL_NOISE:
            label = "True" if label == "Fake" else "Fake"
        rows.append((text, label))
    return pd.DataFrame(rows, columns=["text", "label"])


def _tokens(text: str) -> list[str]:
    return re.findall(r"[A-Za-z0-9]+", text)


def to_notebook_format(frame: pd.DataFrame) -> pd.DataFrame:
    """Add the notebook's `cleaned` / `for_glove` columns: token lists stored as Python reprs."""
    tokens = frame["text"].map(_tokens)
    return frame.assign(
        cleaned=tokens.map(lambda ts: str([t.lower() for t in ts])),
        for_glove=tokens.map(lambda ts: str(list(ts))),
    )


def write_dataset(train_csv: str | os.PathLike, test_csv: str | os.PathLike) -> None:
    """Write the synthetic train/test CSVs (notebook format) unless both exist already."""
    train_csv, test_csv = Path(train_csv), Path(test_csv)
    if train_csv.is_file() and test_csv.is_file():
        return
    frame = to_notebook_format(make_headlines(TRAIN_ROWS + TEST_ROWS, SEED))
    for path, part in ((train_csv, frame[:TRAIN_ROWS]), (test_csv, frame[TRAIN_ROWS:])):
        path.parent.mkdir(parents=True, exist_ok=True)
        with temporaries.atomic_path(path) as tmp:  # a reader never sees half a file
            part.to_csv(tmp, index=False)


def build_embedding(seed: int = SEED + 1) -> tuple[torch.Tensor, list[str]]:
    """(vocab + OOV, DIM) table and vocabulary from an SVD of an unlabelled synthetic corpus."""
    texts = make_headlines(4000, seed)["text"].map(lambda t: " ".join(_tokens(t))).tolist()
    # Tokens exactly as the artifact's recipe will split them at lookup time.
    tokenizer = HubTokenizer([], 0, TextRecipe())
    docs = tokenizer.tokenize(texts)
    counts = pd.Series([t for doc in docs for t in doc]).value_counts(sort=True)
    vocab = sorted(counts.index, key=lambda t: (-counts[t], t))  # most frequent first
    index = {t: i for i, t in enumerate(vocab)}
    # (V, docs) log-scaled term-document matrix -> U S^(1/2) as word vectors.
    tdm = np.zeros((len(vocab), len(docs)), dtype=np.float64)
    for j, doc in enumerate(docs):
        for token in doc:
            tdm[index[token], j] += 1.0
    tdm = np.log1p(tdm) * np.log(len(docs) / (tdm > 0).sum(axis=1, keepdims=True))
    u, s, _ = np.linalg.svd(tdm, full_matrices=False)
    vectors = u[:, :DIM] * np.sqrt(s[:DIM])
    vectors /= np.linalg.norm(vectors, axis=1).mean()
    oov = np.random.default_rng(seed).normal(0.0, 0.05, size=(OOV_BUCKETS, DIM))
    return torch.from_numpy(np.vstack([vectors, oov]).astype(np.float32)), vocab


def write_embedding(out_dir: str | os.PathLike) -> Path:
    """Write the demo embedding artifact to `out_dir` unless a valid one is there already.

    It is generated content: a copy in an older format, or altered, is written again.
    """
    out = Path(out_dir)
    exists = (out / artifact.META_FILE).is_file()
    if exists:
        with contextlib.suppress(artifact.ArtifactError):
            artifact.verified_meta(out)
            return out
    table, vocab = build_embedding()
    meta = {
        "source": "fakenews_pl.data.demo (synthetic; SVD of a synthetic headline corpus)",
        "oov_buckets": OOV_BUCKETS,
        "recipe": TextRecipe().to_dict(),
        "combiner": "sqrtn",
    }
    try:
        with artifact.atomic_directory(out, overwrite=exists) as tmp:
            artifact.write_artifact(tmp, table, vocab, meta)
    except (FileExistsError, OSError):
        # Another process (a DDP rank) finished first; its directory is identical.
        if not (out / artifact.META_FILE).is_file():
            raise
        artifact.verified_meta(out)
    return out


def inputs(demo_dir: str | os.PathLike) -> dict[str, Path]:
    """Where the demo's embedding and train/test files live inside `demo_dir`."""
    root = Path(os.path.abspath(demo_dir))
    return {
        "embedding": root / EMBEDDING,
        "train_csv": root / TRAIN_CSV,
        "test_csv": root / TEST_CSV,
    }


def uses_demo(demo_dir: str | os.PathLike, paths: Sequence[str | os.PathLike]) -> bool:
    """Whether any of `paths` (an embedding, data files) is one of the demo's inputs."""
    return bool({Path(os.path.abspath(p)) for p in paths} & set(inputs(demo_dir).values()))


def prepare(demo_dir: str | os.PathLike, paths: Sequence[str | os.PathLike]) -> bool:
    """Write the demo inputs among `paths` that are missing; whether any of `paths` is one
    (the run then reports on synthetic inputs)."""
    where, wanted = inputs(demo_dir), {Path(os.path.abspath(p)) for p in paths}
    if where["embedding"] in wanted:
        write_embedding(where["embedding"])
    if wanted & {where["train_csv"], where["test_csv"]}:
        write_dataset(where["train_csv"], where["test_csv"])
    return uses_demo(demo_dir, paths)
