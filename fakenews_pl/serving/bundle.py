"""An exported model: what `Classifier` needs, in one directory, without Lightning, Hydra or TF.

    OUT/bundle.json        format, class names, head sizes, the training data's text column
                           and format, where the model came from, and the sha256 of every file
    OUT/head.safetensors   the dense head's weights and biases (`DenseHead` state_dict keys)
    OUT/encoder.safetensors  a sequence encoder's weights, when the model has one (bundle.json's
                           `encoder` names it and its sizes; `fakenews_pl.nn.encoders`)
    OUT/embedding/         the embedding artifact (`fakenews_pl.hub.artifact`): the source's files
                           for a frozen model, a new artifact holding the fine-tuned table
                           otherwise (its meta.json names the artifact it was tuned from)

Written atomically (`artifact.atomic_directory`); read back only once every file matches the
sha256 bundle.json records. Reading needs torch, safetensors and the tokenizer's libraries only.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from fakenews_pl.errors import ConfigError, UserError
from fakenews_pl.hub import artifact
from fakenews_pl.hub.embedding import HubEmbedding
from fakenews_pl.nn.net import FakeNewsNet, NetConfig

# 2: bundle.json carries `bundle_sha256`, the checksum of its own content.
FORMAT = "fakenews_pl.bundle/2"
BUNDLE_SHA256 = "bundle_sha256"
BUNDLE_FILE = "bundle.json"
HEAD_FILE = "head.safetensors"
ENCODER_FILE = "encoder.safetensors"
EMBEDDING_DIR = "embedding"
# meta.json keys that describe the source table, not a fine-tuned one.
_SOURCE_ONLY = ("sha256", artifact.META_SHA256, "format", "path", "parity")


class BundleError(UserError, ValueError):
    """An exported bundle is missing, incomplete or has been altered."""


def is_bundle(path: str | os.PathLike) -> bool:
    """Whether `path` is a directory holding a bundle.json."""
    return (Path(path) / BUNDLE_FILE).is_file()


def write_bundle(
    out_dir: str | os.PathLike,
    net: FakeNewsNet,
    class_names: Sequence[str],
    fine_tuned: bool,
    tuned_table: bool | None = None,
    data: dict[str, Any] | None = None,
    source: str | None = None,
    overwrite: bool = False,
    extras: dict[str, Callable[[Path], None]] | None = None,
    decision: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write a bundle of `net` into `out_dir` (atomically); returns bundle.json.
    `decision`: the decision rule the model predicts with (`{"threshold", "target",
    "chosen_on"}`, the training run's; None: threshold 0.5), recorded as bundle.json's `decision`.

    `fine_tuned`: the table was trained (recorded). `tuned_table` (default: `fine_tuned`): the
    table differs from the artifact the embedding was loaded from, so it is written as a new
    artifact; otherwise that artifact's files are copied as they are. `extras`: more files,
    name -> a function writing it at the path given (e.g. model.onnx), hashed with the rest.
    """
    embedding, head, encoder = net.embedding, net.head, net.encoder
    tuned_table = fine_tuned if tuned_table is None else tuned_table
    source_dir = Path(embedding.meta["path"])
    source_meta = artifact.verified_meta(source_dir)
    with artifact.atomic_directory(out_dir, overwrite=overwrite) as tmp:
        target = tmp / EMBEDDING_DIR
        target.mkdir()
        if tuned_table:
            vocab = artifact.read_vocab(source_dir / artifact.VOCAB_FILE)
            meta = {k: v for k, v in source_meta.items() if k not in _SOURCE_ONLY}
            meta["fine_tuned_from"] = {
                "source": source_meta.get("source"),
                "table_sha256": source_meta["sha256"][artifact.TABLE_FILE],
            }
            artifact.write_artifact(target, embedding.weight.detach().cpu(), vocab, meta)
        else:
            for name in (artifact.TABLE_FILE, artifact.VOCAB_FILE, artifact.META_FILE):
                shutil.copyfile(source_dir / name, target / name)
        tensors = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
        save_file(tensors, str(tmp / HEAD_FILE))
        if encoder is not None:
            weights = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
            save_file(weights, str(tmp / ENCODER_FILE))
        for name, write in (extras or {}).items():
            write(tmp / name)
        config = net.config
        info = {
            "format": FORMAT,
            "class_names": [str(name) for name in class_names],
            "head": {
                "hidden_sizes": list(config.hidden_sizes),
                "dropouts": list(config.dropouts),
            },
            "encoder": config.encoder_settings,
            "fine_tuned": bool(fine_tuned),
            "data": dict(data or {}),
            "decision": dict(decision or {"threshold": 0.5, "target": None, "chosen_on": None}),
            "source": source,
            "sha256": {
                path.relative_to(tmp).as_posix(): artifact.sha256_file(path)
                for path in sorted(tmp.rglob("*"))
                if path.is_file()
            },
        }
        info[BUNDLE_SHA256] = artifact.meta_checksum(info, BUNDLE_SHA256)
        text = json.dumps(info, indent=2, ensure_ascii=False) + "\n"
        (tmp / BUNDLE_FILE).write_text(text, encoding="utf-8")
    return info


def read_info(directory: str | os.PathLike) -> dict[str, Any]:
    """bundle.json of `directory`, checked for its format and fields, or a `BundleError`."""
    path = Path(directory) / BUNDLE_FILE
    if not path.is_file():
        raise BundleError(
            f"{directory} is not an exported model: {BUNDLE_FILE} is missing "
            "(make one with scripts/export_model.py CKPT OUT_DIR)"
        )
    redo = "export the model again with scripts/export_model.py CKPT OUT_DIR"
    info = artifact.read_sealed(path, BundleError, FORMAT, BUNDLE_SHA256, lambda _: redo)
    for key in ("class_names", "head", "sha256"):
        if key not in info:
            raise BundleError(f"{path}: missing key {key!r}")
    return info


def verify(directory: str | os.PathLike, info: dict[str, Any]) -> None:
    """Refuse a bundle whose files differ from the sha256 in bundle.json, or that lacks one.

    The embedding's table and vocabulary are hashed by `artifact.verified_meta` (once per
    process); here their recorded hashes must equal the ones its meta.json holds.
    """
    root = Path(directory)
    artifact_files = {
        f"{EMBEDDING_DIR}/{artifact.TABLE_FILE}",
        f"{EMBEDDING_DIR}/{artifact.VOCAB_FILE}",
    }
    for name in (HEAD_FILE, f"{EMBEDDING_DIR}/{artifact.META_FILE}", *artifact_files):
        if name not in info["sha256"]:
            raise BundleError(f"{root / BUNDLE_FILE}: no sha256 recorded for {name}")
    for name, expected in info["sha256"].items():
        path = root / name
        if not path.is_file():
            raise BundleError(f"{path} is missing: the bundle is incomplete, export it again")
        if name in artifact_files:
            continue
        if (actual := artifact.sha256_file(path)) != expected:
            raise BundleError(
                f"{path}: sha256 {actual} does not match {expected} recorded in {BUNDLE_FILE}; "
                "the file is truncated or altered, export the model again"
            )
    meta = artifact.verified_meta(root / EMBEDDING_DIR)
    for name in artifact_files:
        if meta["sha256"][Path(name).name] != info["sha256"][name]:
            raise BundleError(
                f"{root / name}: not the file exported with this bundle (sha256 differs from "
                f"{BUNDLE_FILE}); export the model again"
            )


def read_bundle(
    directory: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[FakeNewsNet, dict[str, Any]]:
    """The network of a bundle, in evaluation mode on `device`, and its bundle.json."""
    info = read_info(directory)
    verify(directory, info)
    embedding = HubEmbedding.load(Path(directory) / EMBEDDING_DIR)
    try:
        config = NetConfig.from_settings(embedding.dim, info.get("encoder"), info["head"])
        net = FakeNewsNet.from_config(embedding, config)
    except (ConfigError, TypeError, KeyError, ValueError) as e:
        raise BundleError(
            f"{Path(directory) / BUNDLE_FILE}: its encoder or head is not one this version "
            f"builds ({e})"
        ) from None
    _load_weights(net.head, Path(directory) / HEAD_FILE, "head")
    if net.encoder is not None:
        _load_weights(net.encoder, Path(directory) / ENCODER_FILE, "encoder")
    return net.to(device).eval(), info


def _load_weights(module: torch.nn.Module, path: Path, what: str) -> None:
    """Load safetensors `path` into `module`, or a `BundleError` naming the file."""
    if not path.is_file():
        raise BundleError(f"{path} is missing: the bundle is incomplete, export it again")
    try:
        module.load_state_dict(load_file(path))
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1].strip()
        raise BundleError(
            f"{path}: does not fit the {what} bundle.json describes ({first})"
        ) from None
