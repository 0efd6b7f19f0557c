"""The artifact format: what write_artifact writes, read gives back, verified."""

from __future__ import annotations

import pytest
import torch

from fakenews_pl import artifact
from fakenews_pl.tokenizer import TextRecipe

VOCAB = ["the", "fake", "news", "ünïcode"]
META = {"source": "test", "oov_buckets": 2, "combiner": "mean", "recipe": TextRecipe().to_dict()}


def test_atomic_directory_leaves_nothing_on_failure(tmp_path):
    with pytest.raises(RuntimeError), artifact.atomic_directory(tmp_path / "out") as tmp:
        (tmp / "partial").write_text("x")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_write_artifact_checks_row_count(tmp_path):
    meta = {**META, "oov_buckets": 5}
    with pytest.raises(artifact.ArtifactError, match="expected vocab 4 \\+ OOV buckets 5"):
        artifact.write_artifact(tmp_path, torch.zeros(3, 2), VOCAB, meta)


def test_read_gives_back_what_was_written(tmp_path):
    table = torch.randn(len(VOCAB) + 2, 5)
    with artifact.atomic_directory(tmp_path / "emb") as tmp:
        artifact.write_artifact(tmp, table, VOCAB, META)
    loaded = artifact.read(tmp_path / "emb")
    assert torch.equal(loaded.table, table)
    assert loaded.meta["combiner"] == "mean" and loaded.meta["path"] == str(tmp_path / "emb")
    assert (loaded.meta["vocab_size"], loaded.meta["num_rows"], loaded.meta["dim"]) == (4, 6, 5)
    ids, _ = loaded.tokenizer.encode(["the ünïcode news", "unknown"])
    assert ids[:3].tolist() == [0, 3, 2] and ids[3] >= len(VOCAB)  # vocab hits, an OOV bucket
    tokenizer = artifact.read_tokenizer(tmp_path / "emb")  # without the table
    assert tokenizer.encode(["the ünïcode news"])[0].tolist() == [0, 3, 2]
    (tmp_path / "emb" / artifact.VOCAB_FILE).write_text("the\n", encoding="utf-8")
    with pytest.raises(artifact.ArtifactError, match="vocab.txt: sha256"):
        artifact.read(tmp_path / "emb")
    with pytest.raises(artifact.ArtifactError, match="has 1 tokens, meta.json says 4"):
        artifact.read_tokenizer(tmp_path / "emb")
