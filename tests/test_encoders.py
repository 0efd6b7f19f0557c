"""Sequence encoders: the bag tokenizer's ids, padding that never reaches the output, training,
reloading and exporting like the bag model, and sparse fine-tuning of used rows only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fakenews_pl import Classifier
from fakenews_pl.data.batches import EpochShuffle, LengthBuckets
from fakenews_pl.errors import ConfigError
from fakenews_pl.hub.embedding import HubEmbedding
from fakenews_pl.hub.pooling import pool_bags
from fakenews_pl.nn import encoders

TEXTS = [
    "Ava Marlow is feuding with the senate",
    "",
    "one",
    "a b",  # shorter than every CNN width
    " ".join(["senate vote budget Marlow zzz"] * 9),  # 45 tokens
]


@pytest.fixture(scope="module")
def embedding(demo_assets: dict) -> HubEmbedding:
    return HubEmbedding.load(demo_assets["embedding"])


def test_the_sequences_are_the_bag_tokenizers_ids(embedding: HubEmbedding) -> None:
    ids, offsets = embedding.encode(TEXTS)
    keep, slots, lengths, width = encoders.sequence_layout(offsets, ids.numel(), 10_000)
    assert torch.equal(keep, torch.arange(ids.numel()))  # every id, in order
    grid, grid_lengths = encoders.padded_vectors(embedding, ids, offsets, 10_000)
    assert torch.equal(grid_lengths, lengths) and grid.shape == (len(TEXTS), width, embedding.dim)
    # Each row holds its text's vectors, then zeros; the bag pooling of those ids is the module's.
    starts = torch.cat([offsets, torch.tensor([ids.numel()])])
    for i in range(len(TEXTS)):
        n = int(lengths[i])
        rows = embedding.weight[ids[starts[i] : starts[i + 1]]]
        assert torch.equal(grid[i, :n], rows) and not grid[i, n:].any()
    repooled = pool_bags(embedding.weight, ids[keep], offsets, embedding.combiner)
    assert torch.equal(repooled, embedding.embed_texts(TEXTS))


def test_max_tokens_keeps_each_texts_first_tokens(embedding: HubEmbedding) -> None:
    ids, offsets = embedding.encode(TEXTS)
    grid, lengths = encoders.padded_vectors(embedding, ids, offsets, 3)
    full, _ = encoders.padded_vectors(embedding, ids, offsets, 10_000)
    assert lengths.tolist() == [3, 1, 1, 2, 3]  # "" is the fill token, one id
    assert torch.equal(grid, full[:, :3])


@pytest.mark.parametrize("name", ["cnn", "bilstm"])
def test_padding_does_not_change_a_texts_features(name: str, embedding: HubEmbedding) -> None:
    torch.manual_seed(0)
    encoder = encoders.build_encoder(name, embedding.dim, 256).eval()
    with torch.no_grad():
        batch = encoder(embedding, *embedding.encode(TEXTS))
        assert batch.shape == (len(TEXTS), encoder.out_dim) and torch.isfinite(batch).all()
        for i, text in enumerate(TEXTS):
            alone = encoder(embedding, *embedding.encode([text]))[0]
            # The same windows and steps; only the matrix products' shapes differ.
            torch.testing.assert_close(alone, batch[i], rtol=1e-5, atol=1e-6)


def test_bad_encoder_settings_name_the_key(embedding: HubEmbedding) -> None:
    with pytest.raises(ConfigError, match="model.encoder must be one of"):
        encoders.build_encoder("transformer", embedding.dim, 256)
    with pytest.raises(ConfigError, match="model.bilstm.pool must be one of"):
        encoders.build_encoder("bilstm", embedding.dim, 256, bilstm={"pool": "last"})
    with pytest.raises(ConfigError, match="model.max_tokens=0"):
        encoders.build_encoder("cnn", embedding.dim, 0)
    assert encoders.build_encoder("bag", embedding.dim, 256) is None


def test_length_buckets_cover_every_row_once_with_little_padding() -> None:
    lengths = np.random.default_rng(0).integers(1, 200, size=1000)
    sampler = LengthBuckets(EpochShuffle(range(1000), seed=3), 32, lengths, chunk_batches=10)
    epochs = []
    for epoch in (0, 1):
        sampler.sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler) == 32
        assert sorted(i for b in batches for i in b) == list(range(1000))
        epochs.append(batches)
        spread = np.mean([np.ptp(lengths[b]) for b in batches])
        assert spread < 40  # random batches of 32 spread over ~180 tokens
    assert epochs[0] != epochs[1]
    sampler.sampler.set_epoch(1)
    assert list(sampler) == epochs[1]  # a function of the seed and the epoch


@pytest.fixture(scope="module")
def runs(compose_train, root_script, tmp_path_factory) -> dict:
    """Tiny demo runs: cnn fine-tuned (exact Adam), bilstm frozen, cnn fine-tuned lazily."""
    out = {}
    for key, overrides in {
        "cnn": ["model.encoder=cnn", "trainable=true"],
        "bilstm": ["model.encoder=bilstm", "model.bilstm.pool=mean"],
        "cnn_sparse": ["model.encoder=cnn", "trainable=true", "model.table_optimizer=lazy"],
    }.items():
        run_dir = tmp_path_factory.mktemp(key)
        metrics, objects = root_script("train").train(compose_train(run_dir, *overrides))
        out[key] = {"dir": run_dir, "metrics": metrics, **objects}
    return out


@pytest.mark.parametrize("key", ["cnn", "bilstm"])
def test_a_trained_encoder_reloads_and_exports_identically(
    key: str, runs: dict, tmp_path: Path
) -> None:
    run = runs[key]
    texts = [*run["datamodule"].texts("test")[:40].tolist(), *TEXTS]
    expected = run["model"].predict_proba(texts).numpy()
    clf = Classifier.load(run["dir"] / "checkpoints" / "last.ckpt")
    assert clf.net.config.encoder == key
    assert np.array_equal(clf.predict_proba(texts)[:, 1], expected)
    info = clf.export(tmp_path / "bundle")
    assert info["encoder"]["name"] == key and "encoder.safetensors" in info["sha256"]
    bundled = Classifier.load(tmp_path / "bundle")
    assert np.array_equal(bundled.predict_proba(texts), clf.predict_proba(texts))
    assert bundled.explain(texts[:3]) == clf.explain(texts[:3])
    with pytest.raises(Exception, match="--onnx exports the bag model"):
        clf.export(tmp_path / "onnx", onnx=True)


def test_sparse_fine_tuning_moves_only_the_rows_the_training_texts_use(runs: dict) -> None:
    for key in ("cnn", "cnn_sparse"):
        model, datamodule = runs[key]["model"], runs[key]["datamodule"]
        original = HubEmbedding.load(model.hparams.embedding_path).weight
        moved = (model.embedding.weight.detach() != original).any(dim=1).nonzero().squeeze(1)
        corpus, rows = datamodule.corpus, datamodule.rows["train"]
        used = np.unique(
            np.concatenate(
                [corpus.ids[corpus.starts[r] : corpus.starts[r] + corpus.lengths[r]] for r in rows]
            )
        )
        assert len(moved) > 0 and set(moved.tolist()) <= set(used.tolist())
        assert model.embedding.bag.weight.grad is None or model.embedding.bag.weight.grad.is_sparse


@pytest.mark.slow
def test_an_encoder_axis_in_a_search(tiny_run, compose_train, tmp_path: Path) -> None:
    """A search over the encoders (in this process: search.py's and `train.py -m`'s processes
    are tested in tests/test_search.py and test_summary.py, with the same run.json the
    summary's `encoder` column reads)."""
    import pandas as pd

    from fakenews_pl.training import search

    # The search's encoder axis: every trial names the encoder it trained.
    overrides = ["hparams_search=encoder_optuna", "search.n_trials=3", *tiny_run]
    cfg = compose_train(tmp_path / "search", *overrides, config_name="search")
    search.run_search(cfg, tmp_path / "search" / "study")
    trials = pd.read_csv(tmp_path / "search" / "study" / "summary.csv")
    assert len(trials) == 3 and set(trials["encoder"]) <= {"bag", "cnn", "bilstm"}
    pairs = zip(trials["encoder"], trials["overrides"], strict=True)
    assert all(f"model.encoder={encoder}" in overrides for encoder, overrides in pairs)


@pytest.mark.parametrize("name", ["cnn", "bilstm"])
def test_a_large_batch_runs_in_length_chunks_with_the_same_features(
    name: str, embedding: HubEmbedding
) -> None:
    torch.manual_seed(0)
    encoder = encoders.build_encoder(name, embedding.dim, 256).eval()
    texts = [" ".join(["senate vote"] * (i % 37)) for i in range(300)]  # 0 to 72 tokens
    ids, offsets = embedding.encode(texts)
    with torch.no_grad():
        chunked = encoder(embedding, ids, offsets)  # 300 rows > chunk_rows: 3 chunks
        encoder.chunk_rows = 1_000
        whole = encoder(embedding, ids, offsets)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)
