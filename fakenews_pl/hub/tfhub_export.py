"""A converted (possibly fine-tuned) embedding back to a TF-Hub-format SavedModel.

    export_tfhub("exports/nnlm128-tuned", "artifacts/embeddings/nnlm128", table=tuned_table)
    hub.KerasLayer("exports/nnlm128-tuned", input_shape=[], dtype=tf.string)

The module gets the artifact's own text recipe, vocabulary, OOV buckets and combiner (as read
from the source module's graph by `fakenews_pl.hub.convert`) and the given table, in its dtype; the
graph is `hub_module.export_embedding_module`'s, which the converter reads back to the same
artifact. Converting the export gives the table bit for bit, and the module's output equals
`HubEmbedding.embed_texts` over that table (tests/test_tfhub_export.py).

`export_keras_classifier` puts a dense head on such a module as a tf-keras SavedModel whose
output is the torch classifier's probability. TensorFlow is imported only when called.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fakenews_pl.hub import artifact, hub_module
from fakenews_pl.hub.tokenizer import TextRecipe

EXPORT_INFO = "fakenews_pl_export.json"  # beside saved_model.pb; TF loaders ignore it
INFO_FORMAT = "fakenews_pl.tfhub_export/1"


def export_tfhub(
    out_dir: str | os.PathLike,
    artifact_dir: str | os.PathLike,
    table: Any = None,
    overwrite: bool = False,
) -> Path:
    """Write artifact `artifact_dir` as a TF2 TF-Hub-format SavedModel in `out_dir`.

    `table`: a (num_rows, dim) torch tensor or numpy array replacing the artifact's table
    (e.g. fine-tuned); float16/32/64, kept in its dtype. The artifact is verified (sha256)
    before it is used. `out_dir` appears only complete: on any failure nothing is left, and an
    existing one is replaced only with `overwrite`. Also writes `fakenews_pl_export.json`
    (source, artifact, whether the table was replaced, its sha256) beside saved_model.pb.
    """
    artifact_dir, out = Path(artifact_dir), Path(out_dir)
    if out.resolve() == artifact_dir.resolve():
        raise ValueError(f"{out} is the artifact being exported; choose another output directory")
    meta = artifact.verified_meta(artifact_dir)
    vocab = artifact.read_vocab(
        artifact_dir / artifact.VOCAB_FILE, meta["sha256"][artifact.VOCAB_FILE]
    )
    if len(vocab) != meta["vocab_size"]:
        raise artifact.ArtifactError(
            f"{artifact_dir / artifact.VOCAB_FILE} has {len(vocab)} tokens, "
            f"meta.json says {meta['vocab_size']}"
        )
    shape = (meta["num_rows"], meta["dim"])
    replaced = table is not None
    if not replaced:
        table = artifact.read(artifact_dir).table  # verified above (memoized)
    weights = as_table_array(table, shape, "the artifact's table" if not replaced else "table")
    recipe = TextRecipe.from_dict(meta["recipe"])
    info = {
        "format": INFO_FORMAT,
        "source": meta.get("source"),
        "artifact": str(artifact_dir.absolute()),
        "artifact_meta_sha256": meta.get(artifact.META_SHA256),
        "table_replaced": replaced,  # True: a table passed in (e.g. fine-tuned), not the file's
        "table_sha256": hashlib.sha256(weights.tobytes()).hexdigest(),
        "dtype": weights.dtype.name,
        "shape": list(weights.shape),
        "oov_buckets": meta["oov_buckets"],
        "combiner": meta["combiner"],
        "recipe": recipe.to_dict(),
    }
    with artifact.atomic_directory(out, overwrite=overwrite) as tmp:
        hub_module.export_embedding_module(
            tmp,
            vocab,
            weights,
            recipe,
            oov_buckets=meta["oov_buckets"],
            combiner=meta["combiner"],
        )
        _write_info(tmp, info)
    return out


def as_table_array(table: Any, shape: tuple[int, int], what: str = "table") -> np.ndarray:
    """A torch tensor or array as a C-contiguous float16/32/64 numpy array of `shape`, all
    finite; anything else raises ValueError naming `what`."""
    if hasattr(table, "detach"):  # torch.Tensor (a Parameter too)
        if str(table.dtype) not in ("torch.float16", "torch.float32", "torch.float64"):
            raise ValueError(
                f"{what} has dtype {table.dtype}; expected float16/32/64 (cast it first)"
            )
        table = table.detach().cpu().numpy()
    array = np.ascontiguousarray(table)
    if array.dtype.name not in hub_module.TABLE_DTYPES:
        raise ValueError(
            f"{what} has dtype {array.dtype}; expected one of {hub_module.TABLE_DTYPES}"
        )
    if array.shape != tuple(shape):
        raise ValueError(
            f"{what} has shape {array.shape}; the artifact's is {tuple(shape)} "
            "(vocabulary + OOV buckets, dim)"
        )
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        rows = np.flatnonzero(~finite)
        raise ValueError(
            f"{what} has non-finite values in {len(rows)} rows (first: row {rows[0]}); "
            "nothing was written"
        )
    return array


def _write_info(directory: Path, info: dict[str, Any]) -> None:
    text = json.dumps(info, indent=2, ensure_ascii=False) + "\n"
    (directory / EXPORT_INFO).write_text(text, encoding="utf-8")


def export_keras_classifier(
    out_dir: str | os.PathLike,
    module_dir: str | os.PathLike,
    head_layers: Sequence[tuple[np.ndarray, np.ndarray]],
    class_names: Sequence[str],
    overwrite: bool = False,
) -> Path:
    """Write the notebook's Keras model as a tf-keras SavedModel: `hub.KerasLayer(module_dir)`
    (frozen), then one Dense per `(weight (out, in), bias (out,))` of `head_layers`, ReLU
    between them and a sigmoid on the last, which must have one output. Dropout is left out
    (inference). `model(tf.constant(texts))` -> (N, 1) probability of `class_names[1]`.

    `class_names` go into `fakenews_pl_export.json` beside saved_model.pb. Atomic like
    `export_tfhub`.
    """
    import tensorflow as tf
    import tf_keras

    with warnings.catch_warnings():  # tensorflow_hub 0.16 still imports pkg_resources
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
        import tensorflow_hub as hub

    if len(class_names) != 2:
        raise ValueError(f"expected 2 class names (a binary head), got {list(class_names)}")
    layers = [(np.asarray(w), np.asarray(b)) for w, b in head_layers]
    if not layers:
        raise ValueError("head_layers is empty; expected at least the output layer")
    embedding = hub.KerasLayer(str(module_dir), input_shape=[], dtype=tf.string, name="embedding")
    width = int(embedding(tf.constant([""])).shape[-1])
    for i, (weight, bias) in enumerate(layers):
        if weight.ndim != 2 or weight.shape[1] != width or bias.shape != (weight.shape[0],):
            raise ValueError(
                f"head layer {i}: weight {weight.shape} and bias {bias.shape} do not take "
                f"{width} inputs (expected weight (out, {width}) and bias (out,))"
            )
        width = weight.shape[0]
    if width != 1:
        raise ValueError(f"the last head layer has {width} outputs; expected 1 (a logit)")

    model = tf_keras.Sequential([embedding], name="fakenews_classifier")
    for i, (weight, bias) in enumerate(layers):
        last = i == len(layers) - 1
        dense = tf_keras.layers.Dense(
            weight.shape[0], activation="sigmoid" if last else "relu", name=f"dense_{i}"
        )
        model.add(dense)
        dense.set_weights([weight.T.astype(np.float32), bias.astype(np.float32)])
    info = {
        "format": INFO_FORMAT,
        "module": str(Path(module_dir).absolute()),
        "class_names": [str(c) for c in class_names],
        "output": f"(N, 1) probability of {class_names[1]!r}",
        "head": [list(w.shape) for w, _ in layers],
    }
    with artifact.atomic_directory(out_dir, overwrite=overwrite) as tmp:
        model.save(str(tmp), save_format="tf", include_optimizer=False)
        _write_info(tmp, info)
    return Path(out_dir)
