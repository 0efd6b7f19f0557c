"""HubEmbedding: loading, pooling, trainable and sparse modes, refusal of altered artifacts."""

from __future__ import annotations

import json

import pytest
import torch

from fakenews_pl import artifact
from fakenews_pl.embedding import HubEmbedding
from fakenews_pl.tokenizer import TextRecipe

VOCAB = ["the", "fake", "news", "is", "true"]
BUCKETS = 2


def make_artifact(path, combiner="sqrtn"):
    table = torch.arange((len(VOCAB) + BUCKETS) * 3, dtype=torch.float32).reshape(-1, 3)
    meta = {
        "source": "test",
        "oov_buckets": BUCKETS,
        "combiner": combiner,
        "recipe": TextRecipe().to_dict(),
    }
    with artifact.atomic_directory(path) as tmp:
        artifact.write_artifact(tmp, table, VOCAB, meta)
    return table


@pytest.mark.parametrize("combiner", ["sqrtn", "mean", "sum"])
def test_embed_texts_pools_like_the_combiner(tmp_path, combiner):
    table = make_artifact(tmp_path / "emb", combiner)
    emb = HubEmbedding.load(tmp_path / "emb")
    out = emb.embed_texts(["the fake news", "true"])
    total = table[[0, 1, 2]].sum(0)
    expected = {"sqrtn": total / 3**0.5, "mean": total / 3, "sum": total}[combiner]
    torch.testing.assert_close(out[0], expected)
    torch.testing.assert_close(out[1], table[4])
    assert out.shape == (2, 3) and emb.dim == 3 and emb.num_rows == len(VOCAB) + BUCKETS


def test_frozen_by_default_trainable_and_sparse_on_request(tmp_path):
    make_artifact(tmp_path / "emb")
    frozen = HubEmbedding.load(tmp_path / "emb")
    assert not frozen.weight.requires_grad
    sparse = HubEmbedding.load(tmp_path / "emb", trainable=True, sparse=True)
    ids, offsets = sparse.encode(["the news", "fake"])
    sparse(ids, offsets).sum().backward()
    grad = sparse.weight.grad
    assert grad.is_sparse
    touched = set(grad.coalesce().indices()[0].tolist())
    assert touched == {0, 1, 2}
    dense = HubEmbedding.load(tmp_path / "emb", trainable=True)
    dense(ids, offsets).sum().backward()
    assert not dense.weight.grad.is_sparse
    torch.testing.assert_close(dense.weight.grad, grad.to_dense())


def test_training_does_not_modify_the_artifact(tmp_path):
    make_artifact(tmp_path / "emb")
    emb = HubEmbedding.load(tmp_path / "emb", trainable=True)
    with torch.no_grad():
        emb.weight.add_(1.0)
    HubEmbedding.load(tmp_path / "emb")  # checksums still match


def flip_byte(path, offset=-5):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_tampered_or_truncated_artifact_is_refused(tmp_path):
    make_artifact(tmp_path / "emb")
    table = tmp_path / "emb" / artifact.TABLE_FILE
    original = table.read_bytes()
    flip_byte(table)
    with pytest.raises(artifact.ArtifactError, match=r"table.safetensors: sha256 .* altered"):
        HubEmbedding.load(tmp_path / "emb")
    table.write_bytes(original[:-12])
    with pytest.raises(artifact.ArtifactError, match="sha256"):
        HubEmbedding.load(tmp_path / "emb")
    table.write_bytes(original)
    vocab = tmp_path / "emb" / artifact.VOCAB_FILE
    vocab.write_text(vocab.read_text().replace("fake", "real"))
    with pytest.raises(artifact.ArtifactError, match="vocab.txt: sha256"):
        HubEmbedding.load(tmp_path / "emb")


def test_missing_or_foreign_directory_names_the_fix(tmp_path):
    with pytest.raises(artifact.ArtifactError, match="convert_tfhub.py"):
        HubEmbedding.load(tmp_path)
    (tmp_path / artifact.META_FILE).write_text(json.dumps({"format": "other"}))
    with pytest.raises(artifact.ArtifactError, match="format is 'other'"):
        HubEmbedding.load(tmp_path)


def test_an_edited_combiner_is_refused_naming_meta_json(tmp_path):
    make_artifact(tmp_path / "emb", combiner="sqrtn")
    meta_file = tmp_path / "emb" / artifact.META_FILE
    meta = json.loads(meta_file.read_text())
    meta["combiner"] = "mean"  # a valid combiner: only the checksum can tell
    meta_file.write_text(json.dumps(meta, indent=2))
    for verify in (True, False):
        with pytest.raises(artifact.ArtifactError) as info:
            HubEmbedding.load(tmp_path / "emb", verify=verify)
        assert str(info.value).startswith(f"{meta_file}: ")
        assert "meta_sha256" in str(info.value) and "--overwrite" in str(info.value)
