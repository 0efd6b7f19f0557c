"""demo: the synthetic default dataset and embedding are deterministic and well-formed."""

import json
import shutil
from pathlib import Path

import pandas as pd
from sklearn.linear_model import LogisticRegression

from fakenews_pl.data import demo
from fakenews_pl.hub import artifact
from fakenews_pl.hub.embedding import HubEmbedding
from fakenews_pl.hub.tokenizer import TextRecipe


def test_dataset_is_deterministic_and_in_notebook_format(tmp_path: Path, demo_assets: dict) -> None:
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    demo.write_dataset(train, test)
    reference = demo_assets["demo_dir"]
    assert train.read_bytes() == (reference / "train.csv").read_bytes()
    assert test.read_bytes() == (reference / "test.csv").read_bytes()
    frame = pd.read_csv(train)
    assert {"text", "label", "cleaned", "for_glove"} <= set(frame.columns)
    assert len(frame) == demo.TRAIN_ROWS and len(pd.read_csv(test)) == demo.TEST_ROWS
    assert set(frame["label"]) == {"Fake", "True"}
    assert frame["for_glove"].str.match(r"^\['.*'\]$").all()
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically, nothing left behind


def test_embedding_is_a_valid_artifact_with_the_v2_recipe(demo_assets: dict) -> None:
    path = demo_assets["embedding"]
    meta = artifact.read_meta(path)
    artifact.verify_checksums(path, meta)
    assert meta["recipe"] == TextRecipe().to_dict() and meta["oov_buckets"] == demo.OOV_BUCKETS
    embedding = HubEmbedding.load(path)
    assert embedding.dim == demo.DIM
    vectors = embedding.embed_texts(["Officials in Millbrook announce a tax review", "zzzz"])
    assert vectors.shape == (2, demo.DIM) and vectors.abs().sum() > 0  # "zzzz": an OOV bucket


def test_embedding_is_rebuilt_identically(tmp_path: Path, demo_assets: dict) -> None:
    demo.write_embedding(tmp_path / "again")
    fresh = artifact.read_meta(tmp_path / "again")["sha256"]
    assert fresh == artifact.read_meta(demo_assets["embedding"])["sha256"]
    # An existing artifact is left alone.
    before = (tmp_path / "again" / artifact.META_FILE).stat().st_mtime_ns
    demo.write_embedding(tmp_path / "again")
    assert (tmp_path / "again" / artifact.META_FILE).stat().st_mtime_ns == before


def test_an_old_or_altered_demo_embedding_is_written_again(
    tmp_path: Path, demo_assets: dict
) -> None:
    out = Path(shutil.copytree(demo_assets["embedding"], tmp_path / "emb"))
    reference = {p.name: p.read_bytes() for p in out.iterdir()}
    # A copy written before meta.json had a checksum: the format of the previous release.
    meta_file = out / artifact.META_FILE
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    meta["format"] = "fakenews_pl.hub_embedding/1"
    meta.pop("meta_sha256", None)
    meta_file.write_text(json.dumps(meta, indent=2), encoding="utf-8")
    demo.write_embedding(out)
    assert artifact.read_meta(out)["format"] == "fakenews_pl.hub_embedding/2"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == reference
    # An altered copy (two vocabulary lines swapped) is generated content too.
    vocab = out / artifact.VOCAB_FILE
    lines = vocab.read_text(encoding="utf-8").split("\n")
    lines[0], lines[1] = lines[1], lines[0]
    vocab.write_text("\n".join(lines), encoding="utf-8")
    demo.write_embedding(out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == reference
    assert not [p for p in tmp_path.iterdir() if p.name != "emb"]  # no temporaries left


def test_embedding_separates_the_demo_classes(demo_assets: dict) -> None:
    # A linear probe on the pooled SVD vectors beats the majority class on the test file:
    # the synthetic default is learnable, not noise.
    embedding = HubEmbedding.load(demo_assets["embedding"])
    parts = {}
    for split in ("train", "test"):
        frame = pd.read_csv(demo_assets["demo_dir"] / f"{split}.csv")
        parts[split] = (embedding.embed_texts(frame["text"].tolist()).numpy(), frame["label"])
    probe = LogisticRegression(max_iter=1000).fit(*parts["train"])
    x_test, y_test = parts["test"]
    majority = y_test.value_counts(normalize=True).max()
    assert probe.score(x_test, y_test) > majority + 0.1
