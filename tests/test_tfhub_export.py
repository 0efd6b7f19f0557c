"""Export back to TF-Hub: module -> artifact -> (fine-tuned) table -> SavedModel -> artifact.

Each recipe's module is converted, a few table rows are changed (as fine-tuning would), the
result is exported with `export_tfhub` and converted again: the second artifact must hold the
changed table bit for bit with the same vocabulary and recipe, and TensorFlow's output on the
export must equal `HubEmbedding` over the changed table bit for bit.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

tf = pytest.importorskip("tensorflow")
hub = pytest.importorskip("tensorflow_hub")

from fakenews_pl.hub import artifact, tfhub_export  # noqa: E402
from fakenews_pl.hub import convert as convert_mod  # noqa: E402
from fakenews_pl.hub.convert import convert, default_probes  # noqa: E402
from fakenews_pl.hub.embedding import HubEmbedding  # noqa: E402
from fakenews_pl.hub.hub_module import export_embedding_module  # noqa: E402
from fakenews_pl.hub.tfhub_export import export_keras_classifier, export_tfhub  # noqa: E402
from fakenews_pl.hub.tokenizer import TextRecipe  # noqa: E402
from fakenews_pl.nn.head import DenseHead  # noqa: E402

pytestmark = pytest.mark.tf

VOCAB = [
    "the",
    "a",
    "news",
    "fake",
    "true",
    "Hello",
    "hello",
    "world",
    "dont",
    "don't",
    "US",
    "us",
    "café",
    "straße",
    "σοφια",
    "ΣΟΦΙΑ",
    "москва",
    "北京",
    "😀",
    "email",
    "e-mail",
    "user",
    "at",
    "<empty>",
]
PUNCT = {"op": "regex_replace", "pattern": r"\pP", "rewrite": "", "replace_global": True}
# name -> (recipe, OOV buckets, combiner)
RECIPES = {
    "v2_default": (TextRecipe(), 3, "sqrtn"),
    "utf8_lower_whitespace": (
        TextRecipe(steps=(PUNCT, {"op": "lower", "encoding": "utf-8"}), split="whitespace"),
        5,
        "mean",
    ),
    "v1_any_of_skip_empty": (
        TextRecipe(steps=(PUNCT,), split="any_of", sep=" \t", skip_empty=True),
        4,
        "sum",
    ),
    "no_oov_buckets": (TextRecipe(steps=({"op": "lower", "encoding": "ascii"},)), 0, "sqrtn"),
    "no_fill_maxsplit_groups": (
        TextRecipe(
            steps=(
                {
                    "op": "regex_replace",
                    "pattern": r"(\w+)@(\w+)",
                    "rewrite": r"\2 at \1",
                    "replace_global": True,
                },
                {"op": "regex_replace", "pattern": "-", "rewrite": " ", "replace_global": False},
            ),
            maxsplit=6,
            empty_row_token=None,
        ),
        2,
        "sqrtn",
    ),
    "any_of_keep_empty": (TextRecipe(split="any_of", sep=",;", skip_empty=False), 2, "sqrtn"),
    "whitespace_fill_token": (
        TextRecipe(steps=(), split="whitespace", empty_row_token="<empty>"),
        1,
        "mean",
    ),
}
SENTENCES = default_probes(VOCAB) + [
    "The FAKE news, the fake NEWS!",
    "Hello, world! Hello... world?",
    "don't  e-mail\tthe US us",
    "user@news a-b-c-d fake-news",
    "Café STRASSE Straße ΣΟΦΙΑ σοφια МОСКВА 北京😀",
    "the the the the the the the the the the the the the the",  # repeated, > 10 tokens
    " ".join(VOCAB * 3),
    ",,a,,b, ,c,",
    "\t \t",
    "unknownword anotherunknown 12345",
    "",
    "",  # a trailing empty row (the last rows of a batch)
]


def _source_module(path: Path, name: str) -> Path:
    recipe, buckets, combiner = RECIPES[name]
    rng = np.random.default_rng(len(name))
    table = rng.normal(size=(len(VOCAB) + buckets, 8)).astype(np.float32)
    return export_embedding_module(
        path, VOCAB, table, recipe, oov_buckets=buckets, combiner=combiner
    )


def _fine_tune(table: torch.Tensor, seed: int) -> torch.Tensor:
    """The table with some rows changed, as training would: vocabulary and OOV rows."""
    tuned = table.clone()
    gen = torch.Generator().manual_seed(seed)
    rows = torch.tensor([0, 2, 3, len(VOCAB) - 1, len(tuned) - 1])
    tuned[rows] += 0.01 * torch.randn(len(rows), tuned.shape[1], generator=gen)
    assert not torch.equal(tuned, table)
    return tuned


def _round_trip(root: Path, name: str, source: Path) -> dict:
    first = root / f"{name}-artifact"
    convert(str(source), first, show_progress=False)
    tuned = _fine_tune(artifact.read(first).table, seed=len(name))
    exported = export_tfhub(root / f"{name}-export", first, table=tuned)
    second = root / f"{name}-reconverted"
    convert(str(exported), second, show_progress=False)
    return {"first": first, "tuned": tuned, "exported": exported, "second": second}


@pytest.fixture(scope="module")
def trips(tmp_path_factory) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("trips")
    return {name: _round_trip(root, name, _source_module(root / name, name)) for name in RECIPES}


def _tuned_embedding(trip: dict) -> HubEmbedding:
    first = HubEmbedding.load(trip["first"])
    return HubEmbedding(trip["tuned"], first.tokenizer, first.combiner)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RECIPES))
def test_reconverted_export_is_the_tuned_table_vocab_and_recipe(name, trips):
    trip = trips[name]
    first, second = artifact.read(trip["first"]), artifact.read(trip["second"])
    assert torch.equal(second.table, trip["tuned"])
    assert not torch.equal(second.table, first.table)
    assert artifact.read_vocab(trip["second"] / "vocab.txt") == VOCAB
    recipe, buckets, combiner = RECIPES[name]
    assert first.meta["recipe"] == second.meta["recipe"] == recipe.to_dict()
    assert first.meta["oov_buckets"] == second.meta["oov_buckets"] == buckets
    assert first.meta["combiner"] == second.meta["combiner"] == combiner
    assert second.meta["parity"]["max_abs_diff"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RECIPES))
def test_exported_module_embeds_like_the_tuned_table_bit_for_bit(name, trips):
    trip = trips[name]
    expected = _tuned_embedding(trip).embed_texts(SENTENCES).numpy()
    assert len(expected) == len(SENTENCES) and np.abs(expected).sum() > 0
    layer = hub.KerasLayer(str(trip["exported"]))
    np.testing.assert_array_equal(layer(tf.constant(SENTENCES)).numpy(), expected)
    loaded = tf.saved_model.load(str(trip["exported"]))
    np.testing.assert_array_equal(loaded(tf.constant(SENTENCES)).numpy(), expected)
    # Empty rows only (every row pruned or filled), and one text at a time.
    for batch in (["", ""], [SENTENCES[-3]], ["\t \t"]):
        np.testing.assert_array_equal(
            loaded(tf.constant(batch)).numpy(), _tuned_embedding(trip).embed_texts(batch).numpy()
        )


@pytest.mark.slow
def test_any_of_keeping_empty_tokens_round_trips(tmp_path):
    # v1 StringSplit gives an empty text no token, then the fill token: not one "" token.
    recipe = TextRecipe(split="any_of", sep=",", skip_empty=False, empty_row_token="<empty>")
    table = np.random.default_rng(0).normal(size=(len(VOCAB) + 1, 8)).astype(np.float32)
    source = export_embedding_module(tmp_path / "source", VOCAB, table, recipe)
    trip = _round_trip(tmp_path, "keep_empty", source)
    assert artifact.read(trip["second"]).meta["recipe"] == recipe.to_dict()


@pytest.mark.slow
def test_exported_table_fine_tunes_through_keras_layer(trips):
    trip = trips["v2_default"]
    layer = hub.KerasLayer(str(trip["exported"]), trainable=True)
    assert [tuple(w.shape) for w in layer.trainable_weights] == [tuple(trip["tuned"].shape)]
    np.testing.assert_array_equal(layer.trainable_weights[0].numpy(), trip["tuned"].numpy())
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(tf.constant(["the fake news"])))
    (grad,) = tape.gradient(loss, layer.trainable_weights)
    touched = np.flatnonzero(np.abs(tf.convert_to_tensor(grad).numpy()).sum(axis=1))
    assert touched.tolist() == [0, 2, 3]
    assert hub.KerasLayer(str(trip["exported"]), trainable=False).trainable_weights == []


@pytest.mark.slow
def test_export_records_where_it_came_from(trips):
    trip = trips["v2_default"]
    info = json.loads((trip["exported"] / tfhub_export.EXPORT_INFO).read_text())
    meta = artifact.read_meta(trip["first"])
    assert info["source"] == meta["source"] and info["table_replaced"] is True
    assert info["artifact_meta_sha256"] == meta["meta_sha256"]
    assert info["dtype"] == "float32" and info["recipe"] == meta["recipe"]
    assert info["shape"] == [len(VOCAB) + 3, 8]


def _tf1_lookup_import_module(path: Path) -> Path:
    """A graph not written by hub_module: a TF1 SavedModel with a `default` signature,
    RegexReplace on tensor arguments, ascii lower, the vocabulary as LookupTableImportV2
    constants, and the ids filled and looked up as the v1 exporter does."""
    v1 = tf.compat.v1
    with tf.Graph().as_default(), v1.Session() as sess:
        sentences = v1.placeholder(tf.string, [None], name="sentences")
        s = tf.strings.regex_replace(sentences, tf.constant(r"(\w+)@"), tf.constant(r"\1 "))
        tokens = tf.strings.split(tf.strings.lower(s), " ").to_sparse()
        init = tf.lookup.KeyValueTensorInitializer(
            tf.constant(VOCAB),
            tf.constant(np.arange(len(VOCAB))),  # constants, not Range
        )
        table = tf.lookup.StaticVocabularyTable(init, num_oov_buckets=2)
        weights = np.random.default_rng(3).normal(size=(len(VOCAB) + 2, 6)).astype(np.float32)
        embeddings = v1.get_variable("embeddings", initializer=weights)
        ids = tf.SparseTensor(tokens.indices, table.lookup(tokens.values), tokens.dense_shape)
        ids, _ = v1.sparse_fill_empty_rows(ids, table.lookup(tf.constant("")))
        out = tf.nn.safe_embedding_lookup_sparse(embeddings, ids, None, combiner="sqrtn")
        sess.run([v1.global_variables_initializer(), v1.tables_initializer()])
        builder = v1.saved_model.Builder(str(path))
        signature = v1.saved_model.predict_signature_def({"default": sentences}, {"default": out})
        builder.add_meta_graph_and_variables(
            sess,
            ["serve"],
            signature_def_map={"default": signature},
            main_op=v1.tables_initializer(),
        )
        builder.save()
    return path


@pytest.mark.slow
def test_a_module_of_another_structure_exports_with_its_own_recipe(tmp_path):
    source = _tf1_lookup_import_module(tmp_path / "source")
    trip = _round_trip(tmp_path, "other", source)
    first, second = artifact.read(trip["first"]), artifact.read(trip["second"])
    assert first.meta["recipe"]["steps"] == [
        {"op": "regex_replace", "pattern": r"(\w+)@", "rewrite": r"\1 ", "replace_global": True},
        {"op": "lower", "encoding": "ascii"},
    ]
    assert second.meta["recipe"] == first.meta["recipe"]
    assert torch.equal(second.table, trip["tuned"])
    expected = _tuned_embedding(trip).embed_texts(SENTENCES).numpy()
    actual = hub.KerasLayer(str(trip["exported"]))(tf.constant(SENTENCES)).numpy()
    np.testing.assert_array_equal(actual, expected)


@pytest.fixture(scope="module")
def small_artifact(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("small")
    source = _source_module(root / "module", "v2_default")
    convert(str(source), root / "artifact", show_progress=False)
    return root / "artifact"


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def test_without_a_table_the_artifacts_own_is_exported(small_artifact, tmp_path):
    out = export_tfhub(tmp_path / "out", small_artifact)
    table, _ = convert_mod.read_table(out, len(VOCAB) + 3)
    np.testing.assert_array_equal(table, artifact.read(small_artifact).table.numpy())
    info = json.loads((out / tfhub_export.EXPORT_INFO).read_text())
    assert info["table_replaced"] is False


def test_a_float64_table_stays_float64(small_artifact, tmp_path):
    tuned = artifact.read(small_artifact).table.double() / 3  # not representable in float32
    out = export_tfhub(tmp_path / "out", small_artifact, table=tuned)
    table, _ = convert_mod.read_table(out, len(tuned))
    assert table.dtype == np.float64
    np.testing.assert_array_equal(table, tuned.numpy())
    vectors = tf.saved_model.load(str(out))(tf.constant(["the fake news"])).numpy()
    assert vectors.dtype == np.float64
    np.testing.assert_allclose(vectors[0], tuned[[0, 3, 2]].sum(0).numpy() / np.sqrt(3))


def test_a_failure_mid_export_leaves_nothing(small_artifact, tmp_path, monkeypatch):
    def fail(directory, info):
        assert (Path(directory) / "saved_model.pb").is_file()  # the SavedModel was written
        raise KeyboardInterrupt

    monkeypatch.setattr(tfhub_export, "_write_info", fail)
    with pytest.raises(KeyboardInterrupt):
        export_tfhub(tmp_path / "out", small_artifact)
    assert list(tmp_path.iterdir()) == []


def test_an_existing_output_is_kept_unless_overwrite(small_artifact, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        export_tfhub(out, small_artifact)
    assert (out / "keep.txt").read_text() == "mine"
    export_tfhub(out, small_artifact, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "saved_model.pb").is_file()
    assert _leftovers(tmp_path) == []
    with pytest.raises(ValueError, match="is the artifact being exported"):
        export_tfhub(small_artifact, small_artifact, overwrite=True)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda t: t[:-1], r"shape \(26, 8\); the artifact's is \(27, 8\)"),
        (lambda t: t.to(torch.bfloat16), "dtype torch.bfloat16"),
        (lambda t: t.numpy().astype(np.int32), "dtype int32"),
        (lambda t: t.index_fill(0, torch.tensor([4]), float("nan")), "1 rows .first: row 4"),
    ],
    ids=["shape", "bfloat16", "int", "nan"],
)
def test_a_bad_table_is_refused_before_anything_is_written(small_artifact, tmp_path, make, message):
    table = make(artifact.read(small_artifact).table)
    with pytest.raises(ValueError, match=message):
        export_tfhub(tmp_path / "out", small_artifact, table=table)
    assert list(tmp_path.iterdir()) == []


def test_an_altered_artifact_is_refused(small_artifact, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("meta.json", "table.safetensors", "vocab.txt"):
        (copy / name).write_bytes((small_artifact / name).read_bytes())
    (copy / "vocab.txt").write_text("".join(f"{t}\n" for t in reversed(VOCAB)), encoding="utf-8")
    with pytest.raises(artifact.ArtifactError, match="sha256"):
        export_tfhub(tmp_path / "out", copy)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_keras_classifier_gives_the_torch_probability(small_artifact, tmp_path):
    import tf_keras

    emb = HubEmbedding.load(small_artifact)
    module = export_tfhub(tmp_path / "module", small_artifact)
    torch.manual_seed(0)
    head = DenseHead(emb.dim, [256, 64], [0.3, 0.2]).eval()  # the notebook's
    for layer in head.linears:  # non-zero biases, so a dropped bias would show
        torch.nn.init.normal_(layer.bias)
    layers = [(lin.weight.detach().numpy(), lin.bias.detach().numpy()) for lin in head.linears]
    out = export_keras_classifier(tmp_path / "clf", module, layers, ["Fake", "True"])
    with torch.no_grad():
        expected = torch.sigmoid(head(emb.embed_texts(SENTENCES))).numpy()
    # Float32 dense layers summed in another order: 1.5e-6 at most measured (5 seeds).
    model = tf_keras.models.load_model(str(out), custom_objects={"KerasLayer": hub.KerasLayer})
    actual = model(tf.constant(SENTENCES)).numpy()
    assert actual.shape == (len(SENTENCES), 1)
    np.testing.assert_allclose(actual[:, 0], expected, rtol=0, atol=1e-5)
    served = tf.saved_model.load(str(out))(tf.constant(SENTENCES)).numpy()
    np.testing.assert_allclose(served[:, 0], expected, rtol=0, atol=1e-5)
    info = json.loads((out / tfhub_export.EXPORT_INFO).read_text())
    assert info["class_names"] == ["Fake", "True"]
    assert info["head"] == [[256, 8], [64, 256], [1, 64]]
    with pytest.raises(ValueError, match="head layer 1"):
        export_keras_classifier(tmp_path / "bad", module, layers[::2], ["Fake", "True"])
    assert not (tmp_path / "bad").exists()
