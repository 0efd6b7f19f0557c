"""HubEmbedding: loading, pooling, trainable and sparse modes, refusal of altered artifacts,
float32 and float64 tables (and a classifier trained on a float64 one)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from fakenews_pl.data import demo
from fakenews_pl.hub import artifact
from fakenews_pl.hub.embedding import HubEmbedding
from fakenews_pl.hub.tokenizer import TextRecipe
from fakenews_pl.nn.optim import RowSparseAdam, TouchedRowAdam
from fakenews_pl.training import checkpoints, pipeline

VOCAB = ["the", "fake", "news", "is", "true"]
BUCKETS = 2


def make_artifact(path, combiner="sqrtn", dtype=torch.float32):
    table = torch.arange((len(VOCAB) + BUCKETS) * 3, dtype=dtype).reshape(-1, 3)
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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_table_keeps_its_dtype_and_meta_json_records_it(tmp_path, dtype):
    table = make_artifact(tmp_path / "emb", dtype=dtype) / 7  # 1/7: not exact in float32
    with artifact.atomic_directory(tmp_path / "sevenths") as tmp:
        artifact.write_artifact(tmp, table, VOCAB, artifact.read_meta(tmp_path / "emb"))
    name = str(dtype).removeprefix("torch.")
    loaded = artifact.read(tmp_path / "sevenths")
    assert loaded.meta["dtype"] == name and loaded.table.dtype == dtype
    assert torch.equal(loaded.table, table)  # float64 is not rounded to float32 on the way
    emb = HubEmbedding.load(tmp_path / "sevenths")
    assert emb.dtype == emb.weight.dtype == dtype
    out = emb.embed_texts(["the fake news", "true", ""])
    assert out.dtype == dtype
    head_scale = 1 / torch.tensor(math.sqrt(3), dtype=dtype)  # TF: (x0 + x1 + x2) * (1 / m)
    assert torch.equal(out[0], (table[0] + table[1] + table[2]) * head_scale)


def test_other_float_tables_are_stored_as_float32(tmp_path):
    table = torch.randn(len(VOCAB) + BUCKETS, 3).half()
    meta = {"source": "t", "oov_buckets": BUCKETS, "combiner": "sum"}
    meta["recipe"] = TextRecipe().to_dict()
    with artifact.atomic_directory(tmp_path / "emb") as tmp:
        artifact.write_artifact(tmp, table, VOCAB, meta)
    loaded = artifact.read(tmp_path / "emb")
    assert loaded.meta["dtype"] == "float32" and torch.equal(loaded.table, table.float())


def _rewrite_meta(path: Path, **changes) -> None:
    """Edit meta.json and renew its checksum, as a writer of that content would have."""
    meta = artifact.read_meta(path)
    for key, value in changes.items():
        if value is None:
            meta.pop(key)
        else:
            meta[key] = value
    meta[artifact.META_SHA256] = artifact.meta_checksum(meta)
    (path / artifact.META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")


def test_an_artifact_without_a_dtype_reads_as_float32(tmp_path):
    """Artifacts written before tables could be float64 record no dtype: still valid."""
    table = make_artifact(tmp_path / "emb")
    _rewrite_meta(tmp_path / "emb", dtype=None)
    assert "dtype" not in json.loads((tmp_path / "emb" / artifact.META_FILE).read_text())
    loaded = artifact.read(tmp_path / "emb")
    assert loaded.meta["dtype"] == "float32" and torch.equal(loaded.table, table)
    assert HubEmbedding.load(tmp_path / "emb").dtype == torch.float32


def test_a_dtype_that_disagrees_with_the_table_is_refused(tmp_path):
    make_artifact(tmp_path / "emb")
    _rewrite_meta(tmp_path / "emb", dtype="float64")
    with pytest.raises(artifact.ArtifactError, match="holds a float32 table, meta.json says"):
        artifact.read(tmp_path / "emb")
    _rewrite_meta(tmp_path / "emb", dtype="int8")
    with pytest.raises(artifact.ArtifactError, match="dtype 'int8' is not one of"):
        HubEmbedding.load(tmp_path / "emb")


@pytest.fixture(scope="module")
def float64_demo_embedding(tmp_path_factory) -> Path:
    """The demo embedding as a float64 table (its float32 values plus bits below float32's)."""
    table, vocab = demo.build_embedding()
    noise = torch.randn(
        table.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    table64 = table.double() + noise * 1e-9
    meta = {
        "source": "test: the demo embedding in float64",
        "oov_buckets": demo.OOV_BUCKETS,
        "recipe": TextRecipe().to_dict(),
        "combiner": "sqrtn",
    }
    out = tmp_path_factory.mktemp("float64") / "embedding"
    with artifact.atomic_directory(out) as tmp:
        artifact.write_artifact(tmp, table64, vocab, meta)
    return out


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["trainable=true"],
        ["trainable=true", "model.table_optimizer=lazy"],
        ["trainable=true", "data.fuse_train_batches=false"],
    ],
    ids=["frozen", "exact", "sparse", "exact-unfused"],
)
def test_a_classifier_trains_on_a_float64_table(
    extra, float64_demo_embedding, compose_train, root_script, tmp_path: Path
) -> None:
    """The table stays float64 (frozen, or fine-tuned by either row optimizer, fused or one
    Lightning step per minibatch); the head and the cached pooled vectors are float32."""
    path = float64_demo_embedding
    cfg = compose_train(tmp_path, f"embedding.path={path}", *extra)
    metrics, objects = root_script("train").train(cfg)
    model, datamodule = objects["model"], objects["datamodule"]
    fused = "data.fuse_train_batches=false" not in extra  # one epoch batch, or minibatches
    assert (objects["trainer"].num_training_batches == 1) == fused
    assert math.isfinite(metrics["test/loss"]) and math.isfinite(metrics["train/loss"])
    table = model.embedding.weight.detach()
    assert table.dtype == torch.float64
    assert all(p.dtype == torch.float32 for p in model.head.parameters())
    texts = ["Officials announce a plan", "SHOCKING twins"]
    ids, offsets = model.embedding.encode(texts)
    pooled = model.embedding(ids, offsets)
    assert pooled.dtype == torch.float64
    model.eval()
    assert torch.equal(model.predict_proba(texts), torch.sigmoid(model.head(pooled.float())))
    original = HubEmbedding.load(path).weight
    if not cfg.trainable:
        assert datamodule.plan.pooled.dtype == torch.float32 and torch.equal(table, original)
        return
    optimizer = objects["trainer"].optimizers[1]  # the table's; [0] is the head's
    sparse = "model.table_optimizer=lazy" in extra
    assert type(optimizer) is (RowSparseAdam if sparse else TouchedRowAdam)
    (state,) = optimizer.state.values()
    assert state["exp_avg"].dtype == state["exp_avg_sq"].dtype == torch.float64
    moved = (table != original).any(dim=1)
    assert moved.sum() > 10
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved[checkpoints.TOUCHED_VALUES].dtype == torch.float64
    reloaded = pipeline.load_model(str(tmp_path / "checkpoints" / "last.ckpt"))
    assert torch.equal(reloaded.embedding.weight, table)
