"""The classifier with its pooling plan as graph inputs: torch.export and onnxruntime give our
pooled vectors bit for bit, and our probabilities to float32 rounding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fakenews_pl import Classifier
from fakenews_pl.serving import onnx_export
from fakenews_pl.serving.bundle import BundleError

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

# Lengths 0 to 30 tokens (heads, 8-blocks, several blocks), unknown words, punctuation, "".
TEXTS = [" ".join(["senate", "vote", "Marlow", "zzz!"][i % 4] for i in range(n)) for n in range(31)]
TEXTS += ["Did Miley Cyrus secretly get married?", "", "   "]
# onnxruntime's matrix products are not MKL's: the probabilities' largest difference measured
# on these texts is 6e-8 (one float32 rounding near 0.5).
PROBABILITY_ATOL = 2e-7


@pytest.fixture(scope="module")
def clf(compose_train, root_script, tmp_path_factory) -> Classifier:
    """A fine-tuned tiny demo model."""
    out = tmp_path_factory.mktemp("run")
    root_script("train").train(compose_train(out, "trainable=true"))
    return Classifier.load(out / "checkpoints" / "last.ckpt")


def pooled(model: onnx_export.PlannedClassifier, inputs) -> torch.Tensor:
    """The graph's pooled vectors: its forward up to the head."""
    captured = []
    handle = model.head.register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    model(*inputs)
    handle.remove()
    return captured[0]


def test_the_planned_graph_and_its_export_equal_the_eager_model(clf: Classifier) -> None:
    model = onnx_export.PlannedClassifier(clf.net).eval()
    inputs = onnx_export.graph_inputs(clf.embedding.tokenizer, clf.embedding.combiner, TEXTS)
    with torch.no_grad():
        expected = clf.embedding.embed_texts(TEXTS)
        assert torch.equal(pooled(model, inputs), expected)
        probability = model(*inputs)
        assert torch.equal(probability, torch.from_numpy(clf.predict_proba(TEXTS)[:, 1]))
        program = onnx_export.export_program(model, inputs)
        # Other bag, sub-bag and token counts than the example's: the shapes are dynamic.
        fewer = onnx_export.graph_inputs(clf.embedding.tokenizer, "sqrtn", TEXTS[5:9])
        assert torch.equal(program.module()(*fewer), model(*fewer))


def test_onnxruntime_gives_the_pooled_vectors_bit_for_bit(clf: Classifier, tmp_path: Path) -> None:
    import onnx
    import onnxruntime

    path = tmp_path / "model.onnx"
    onnx_export.write_onnx(clf.net, path)
    graph = onnx.load(str(path))
    # Expose the pooled vectors (the head's input) as an extra output, to compare them exactly.
    first_gemm = next(n for n in graph.graph.node if n.op_type in ("Gemm", "MatMul"))
    graph.graph.output.append(onnx.helper.make_empty_tensor_value_info(first_gemm.input[0]))
    session = onnxruntime.InferenceSession(graph.SerializeToString())
    inputs = onnx_export.graph_inputs(clf.embedding.tokenizer, clf.embedding.combiner, TEXTS)
    feeds = {n: t.numpy() for n, t in zip(onnx_export.INPUT_NAMES, inputs, strict=True)}
    probability, vectors = session.run(None, feeds)
    assert np.array_equal(vectors, clf.embedding.embed_texts(TEXTS).numpy())
    expected = clf.predict_proba(TEXTS)[:, 1]
    assert np.abs(probability - expected).max() <= PROBABILITY_ATOL


def test_a_bundle_with_onnx_runs_in_onnxruntime(clf: Classifier, tmp_path: Path) -> None:
    info = clf.export(tmp_path / "bundle", onnx=True)
    assert onnx_export.ONNX_FILE in info["sha256"]
    runner = onnx_export.OnnxClassifier.load(tmp_path / "bundle")
    assert runner.class_names == clf.class_names
    for texts in (TEXTS, TEXTS[:1], [""]):
        got = runner.predict_proba(texts)
        assert got.shape == (len(texts), 2)
        assert np.abs(got - clf.predict_proba(texts)).max() <= PROBABILITY_ATOL
    clf.export(tmp_path / "plain")
    with pytest.raises(BundleError, match="has no model.onnx"):
        onnx_export.OnnxClassifier.load(tmp_path / "plain")
