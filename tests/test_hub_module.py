"""The TF-Hub-format modules the tests and benchmarks build: what TensorFlow sees in them."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from fakenews_pl.hub import convert as convert_mod  # noqa: E402
from fakenews_pl.hub.hub_module import export_text_embedding  # noqa: E402

pytestmark = pytest.mark.tf

VOCAB = ["the", "a", "fake", "news"]
BUCKETS = 3


@pytest.fixture(scope="module")
def module(tmp_path_factory):
    table = np.random.default_rng(0).normal(size=(len(VOCAB) + BUCKETS, 4)).astype(np.float32)
    path = tmp_path_factory.mktemp("hub") / "module"
    return export_text_embedding(path, VOCAB, table, oov_buckets=BUCKETS), table


def test_module_embeds_like_its_table_with_sqrtn(module):
    path, table = module
    layer = tf.saved_model.load(str(path))
    (vector,) = layer(tf.constant(["the fake news"])).numpy()
    np.testing.assert_allclose(vector, table[[0, 2, 3]].sum(0) / np.sqrt(3), rtol=1e-6)


def test_exported_table_is_trainable_through_keras_layer(module):
    """`hub.KerasLayer(trainable=True)` fine-tunes exactly the table (the module lists it in
    `trainable_variables`); with trainable=False it keeps it frozen."""
    import tensorflow_hub as hub

    path, table = module
    read, key = convert_mod.read_table(path, len(table))
    assert key == "embeddings/.ATTRIBUTES/VARIABLE_VALUE"  # the converter's pick
    np.testing.assert_array_equal(read, table)
    layer = hub.KerasLayer(str(path), trainable=True)
    assert [tuple(w.shape) for w in layer.trainable_weights] == [table.shape]
    np.testing.assert_array_equal(layer.trainable_weights[0].numpy(), table)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(tf.constant(["the fake news", "unknownword"])))
    (grad,) = tape.gradient(loss, layer.trainable_weights)
    touched = np.flatnonzero(np.abs(tf.convert_to_tensor(grad).numpy()).sum(axis=1))
    unknown = len(VOCAB) + tf.strings.to_hash_bucket_fast(["unknownword"], BUCKETS).numpy()[0]
    assert touched.tolist() == sorted([0, 2, 3, unknown])  # the, fake, news, OOV bucket
    frozen = hub.KerasLayer(str(path), trainable=False)
    assert frozen.trainable_weights == []
    assert [tuple(w.shape) for w in frozen.non_trainable_weights] == [table.shape]
