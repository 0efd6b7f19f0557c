"""The export formats by name (fakenews_pl.serving.export): every check is made before any
output is written; the writing itself is tested through scripts/export_model.py
(tests/test_bundle.py, test_onnx_export.py, test_tfhub_export.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fakenews_pl.errors import UserError
from fakenews_pl.serving import export
from fakenews_pl.serving.classifier import Classifier
from fakenews_pl.training.model import FakeNewsClassifier


def test_the_formats_and_their_markers() -> None:
    assert list(export.FORMATS) == ["bundle", "onnx", "tfhub", "keras"]
    assert export.FORMATS["keras"].needs == ("tfhub",)
    assert {f.marker for f in export.FORMATS.values()} == {"bundle.json", export.EXPORT_INFO}


def test_refusals_come_before_anything_is_written(
    exported_bundle: Path, demo_assets: dict, tmp_path: Path
) -> None:
    with pytest.raises(UserError, match="unknown export format"):
        export.export(exported_bundle, {"pickle": tmp_path / "x"})
    with pytest.raises(UserError, match=r"keras builds on \['tfhub'\]"):
        export.export(exported_bundle, {"keras": tmp_path / "k"})
    with pytest.raises(UserError, match="overlaps"):
        export.export(exported_bundle, {"bundle": exported_bundle / "inside"})
    # A CNN model: a bundle holds its encoder; ONNX and Keras graphs are of the bag model.
    torch.manual_seed(0)
    model = FakeNewsClassifier(
        str(demo_assets["embedding"]), encoder="cnn", cnn={"widths": [2], "filters": 2}
    )
    cnn_bundle = tmp_path / "cnn"
    Classifier(model.net, ["Fake", "True"]).export(cnn_bundle)
    outputs = {"bundle": tmp_path / "b", "tfhub": tmp_path / "t", "keras": tmp_path / "k"}
    with pytest.raises(UserError, match="--keras exports the bag model; this one has a cnn"):
        export.export(cnn_bundle, outputs, labels={"keras": "--keras"})
    with pytest.raises(UserError, match="onnx exports the bag model"):
        export.export(cnn_bundle, {"onnx": tmp_path / "o"})
    assert not any((tmp_path / name).exists() for name in "btko")
    (line,) = export.export(cnn_bundle, {"bundle": tmp_path / "b"})
    assert line.startswith(f"wrote {tmp_path / 'b'}") and (tmp_path / "b" / "bundle.json").is_file()
