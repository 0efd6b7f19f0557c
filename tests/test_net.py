"""FakeNewsNet: the one place layers are built, from a small config that checkpoints and
bundles record; every holder (the LightningModule, Classifier, bundles) rebuilds the same net."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fakenews_pl.hub.embedding import HubEmbedding
from fakenews_pl.nn.encoders import BiLstmEncoder, CnnEncoder
from fakenews_pl.nn.net import FakeNewsNet, NetConfig
from fakenews_pl.serving import bundle
from fakenews_pl.serving.classifier import Classifier
from fakenews_pl.training import checkpoints
from fakenews_pl.training.model import FakeNewsClassifier


@pytest.fixture(scope="module")
def embedding(demo_assets: dict) -> HubEmbedding:
    return HubEmbedding.load(demo_assets["embedding"])


@pytest.mark.parametrize(
    ("settings", "layer", "features"),
    [
        ({"name": "bag"}, None, None),
        ({"name": "cnn", "max_tokens": 9, "cnn": {"widths": [2, 3], "filters": 5}}, CnnEncoder, 10),
        ({"name": "bilstm", "max_tokens": 7, "bilstm": {"hidden": 6}}, BiLstmEncoder, 12),
    ],
)
def test_from_config_builds_what_the_config_says(
    embedding: HubEmbedding, settings: dict, layer: type | None, features: int | None
) -> None:
    head = {"hidden_sizes": [16, 8], "dropouts": [0.5, 0.1]}
    config = NetConfig.from_settings(embedding.dim, settings, head)
    net = FakeNewsNet.from_config(embedding, config)
    assert net.embedding is embedding
    widths = [(layer.in_features, layer.out_features) for layer in net.head.linears]
    first = embedding.dim if layer is None else features
    assert widths == [(first, 16), (16, 8), (8, 1)]
    assert net.head.masks.rates == (0.5, 0.1)
    if layer is None:
        assert net.encoder is None
    else:
        assert (
            isinstance(net.encoder.layer, layer)
            and net.encoder.max_tokens == settings["max_tokens"]
        )
    # What a bundle records is what rebuilds it.
    assert config.encoder_settings == settings
    assert NetConfig.from_settings(embedding.dim, config.encoder_settings, head) == config
    ids, offsets = embedding.encode(["a b c", "", "d"])
    assert net.eval()(ids, offsets).shape == (3,)


def test_the_lean_path_is_the_bag_models(embedding: HubEmbedding) -> None:
    """`lean_probabilities` equals `probabilities` (bit for bit; tests/test_classifier.py checks
    it broadly) and refuses a sequence encoder, whose features it would skip: a Classifier
    scores such a model's few texts by the batch path."""
    head = {"hidden_sizes": [16, 8], "dropouts": [0.5, 0.1]}
    bag = FakeNewsNet.from_config(embedding, NetConfig(embedding.dim)).eval()
    ids, offsets = embedding.tokenizer.encode_few(["a b c", "", "d"])
    expected = bag.probabilities(torch.tensor(ids), torch.tensor(offsets))
    assert torch.equal(bag.lean_probabilities(ids, offsets), expected)
    settings = {"name": "cnn", "max_tokens": 9, "cnn": {"widths": [2], "filters": 5}}
    cnn = FakeNewsNet.from_config(embedding, NetConfig.from_settings(embedding.dim, settings, head))
    with pytest.raises(ValueError, match="bag model"):
        cnn.lean_probabilities(ids, offsets)
    assert Classifier(cnn, ("Fake", "True")).predict_proba(["a b c"]).shape == (1, 2)


def test_from_config_refuses_another_embedding_width(embedding: HubEmbedding) -> None:
    with pytest.raises(ValueError, match="dim"):
        FakeNewsNet.from_config(embedding, NetConfig(embedding.dim + 1))
    with pytest.raises(TypeError, match="unexpected encoder settings"):
        NetConfig.from_settings(
            embedding.dim, {"name": "cnn", "kernel": 3}, {"hidden_sizes": [4], "dropouts": [0.1]}
        )


def test_lightning_module_checkpoint_and_bundle_hold_the_same_net(
    demo_assets: dict, tmp_path: Path
) -> None:
    """The LightningModule's net, the net a checkpoint rebuilds without Lightning and the net
    of its bundle give the same probabilities bit for bit (a cnn net: encoder weights too)."""
    torch.manual_seed(3)
    model = FakeNewsClassifier(
        str(demo_assets["embedding"]), encoder="cnn", max_tokens=16,
        cnn={"widths": [2], "filters": 4}, hidden_sizes=[8], dropouts=[0.2],
    )  # fmt: skip
    state = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    model.on_save_checkpoint(state)
    assert not any(k.startswith(checkpoints.TABLE_PREFIX) for k in state["state_dict"])
    path = tmp_path / "model.ckpt"
    torch.save(state, path)
    net, _ = checkpoints.load_net(path)
    assert net.config == model.net.config
    clf = Classifier(net, ["Fake", "True"])
    clf.export(tmp_path / "bundle")
    again = Classifier.load(tmp_path / "bundle")
    texts = ["Did Miley Cyrus secretly get married?", "a b c d e f", ""]
    ids, offsets = model.embedding.encode(texts)
    expected = model.eval().net.probabilities(ids, offsets)
    for other in (clf, again):
        assert torch.equal(torch.from_numpy(other.predict_proba(texts)[:, 1]), expected)
    assert bundle.read_info(tmp_path / "bundle")["encoder"] == model.net.config.encoder_settings


def test_a_checkpoint_from_before_the_net_loads(demo_assets: dict, tmp_path: Path) -> None:
    """Checkpoints written before `net` (layer keys without `net.`) and before
    `table_optimizer` (sparse_embedding/dense_table_adam) load as they were trained."""
    torch.manual_seed(4)
    model = FakeNewsClassifier(str(demo_assets["embedding"]), hidden_sizes=[8], dropouts=[0.2])
    state = model.state_dict()
    old = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    hparams = {k: v for k, v in model.hparams.items() if k != "table_optimizer"}
    hparams |= {"sparse_embedding": True, "dense_table_adam": False}
    checkpoint = {"state_dict": old, "hyper_parameters": hparams}
    checkpoints.migrate(checkpoint)
    assert checkpoint["hyper_parameters"]["table_optimizer"] == "lazy"
    assert "sparse_embedding" not in checkpoint["hyper_parameters"]
    assert set(checkpoint["state_dict"]) == set(state)
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": old, "hyper_parameters": hparams}, path)
    net, _ = checkpoints.load_net(path)
    ids, offsets = model.embedding.encode(["a b", "c"])
    assert torch.equal(
        net.probabilities(ids, offsets), model.eval().net.probabilities(ids, offsets)
    )
