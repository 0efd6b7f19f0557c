"""The export formats, by name: what `scripts/export_model.py` writes from a `Classifier`.

    bundle  a self-contained directory `Classifier.load` reads (`fakenews_pl.serving.bundle`)
    onnx    a bundle with model.onnx beside it (`fakenews_pl.serving.onnx_export`; [onnx])
    tfhub   the (fine-tuned) embedding as a TF-Hub-format SavedModel ([tf])
    keras   the whole classifier as a tf-keras SavedModel over the `tfhub` module ([tf])

A new format is one `ExportFormat` in `FORMATS`: its writer, the file that marks a directory
it wrote (only such a directory is replaced by `--overwrite`) and the formats it builds on.
`export` checks every output first (new, or one this command wrote; never overlapping an
input or another output), then writes them in `FORMATS` order, each appearing only once
complete.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fakenews_pl.errors import UserError
from fakenews_pl.serving.bundle import BUNDLE_FILE
from fakenews_pl.serving.classifier import Classifier
from fakenews_pl.training import baseline

# Beside a tfhub or keras export (fakenews_pl.hub.tfhub_export writes it).
EXPORT_INFO = "fakenews_pl_export.json"


@dataclass(frozen=True)
class ExportFormat:
    """One way to export: `write(clf, out, outputs, source, overwrite)` returns the line the
    command prints; `marker` is the file a directory it wrote holds; `needs` the formats whose
    outputs it reads (given in the same call)."""

    name: str
    marker: str
    write: Callable[[Classifier, Path, dict[str, Path], str, bool], str]
    needs: tuple[str, ...] = ()
    # A graph of the bag model: a sequence encoder is refused before any output is written.
    bag_only: bool = False


def _bundle(clf: Classifier, out: Path, outputs: dict, source: str, overwrite: bool) -> str:
    info = clf.export(out, source, overwrite)
    table = "fine-tuned" if info["fine_tuned"] else "frozen"
    return f"wrote {out}: {len(info['sha256'])} files, {table} embedding"


def _onnx(clf: Classifier, out: Path, outputs: dict, source: str, overwrite: bool) -> str:
    info = clf.export(out, source, overwrite, onnx=True)
    table = "fine-tuned" if info["fine_tuned"] else "frozen"
    return f"wrote {out}: {len(info['sha256'])} files with model.onnx, {table} embedding"


def _tfhub(clf: Classifier, out: Path, outputs: dict, source: str, overwrite: bool) -> str:
    from fakenews_pl.hub.tfhub_export import export_tfhub

    tuned = None if clf.table_from_artifact else clf.embedding.weight.detach().cpu()
    export_tfhub(out, clf.embedding.meta["path"], tuned, overwrite=overwrite)
    return f"wrote {out}: a TF-Hub-format SavedModel (hub.KerasLayer loads it)"


def _keras(clf: Classifier, out: Path, outputs: dict, source: str, overwrite: bool) -> str:
    from fakenews_pl.hub.tfhub_export import export_keras_classifier

    layers = [
        (layer.weight.detach().cpu().numpy(), layer.bias.detach().cpu().numpy())
        for layer in clf.head.linears
    ]
    export_keras_classifier(out, outputs["tfhub"], layers, clf.class_names, overwrite=overwrite)
    return f"wrote {out}: the classifier as a tf-keras SavedModel"


FORMATS: dict[str, ExportFormat] = {
    fmt.name: fmt
    for fmt in (
        ExportFormat("bundle", BUNDLE_FILE, _bundle),
        # Classifier.export refuses --onnx of a sequence-encoder model before writing.
        ExportFormat("onnx", BUNDLE_FILE, _onnx),
        ExportFormat("tfhub", EXPORT_INFO, _tfhub),
        ExportFormat("keras", EXPORT_INFO, _keras, needs=("tfhub",), bag_only=True),
    )
}


def check_output(label: str, out: Path, marker: str, overwrite: bool) -> None:
    """An output may be new, or with `overwrite` a directory this command wrote before."""
    if not out.exists() and not out.is_symlink():
        return
    if not overwrite:
        raise UserError(f"{out} already exists (pass --overwrite to replace it)")
    if not out.is_dir() or out.is_symlink() or not (out / marker).is_file():
        raise UserError(
            f"{label} {out}: --overwrite replaces only a directory export_model.py wrote (one "
            f"holding {marker}); this one is not, so it is left as it is: choose another path"
        )


def refuse_overlap(label: str, out: Path, inputs: list[str | Path]) -> None:
    """Refuse an output that is, holds or lies inside one of `inputs` (what the command reads,
    and its other outputs): writing it would replace or delete them."""
    target = out.resolve()
    for given in inputs:
        source = Path(given).resolve()
        if target == source or target in source.parents or source in target.parents:
            raise UserError(
                f"{label} {out} overlaps {given}, which export_model.py reads or writes; "
                "expected an output outside every input and every other output"
            )


def export(
    source: Path,
    outputs: dict[str, Path],
    overwrite: bool = False,
    labels: dict[str, str] | None = None,
) -> list[str]:
    """Export the model at `source` (a checkpoint or a bundle) as each format named in
    `outputs` (name -> path); returns the lines to print. `labels`: how the command line
    names each output (for errors)."""
    labels = {name: (labels or {}).get(name, name) for name in outputs}
    unknown = sorted(set(outputs) - set(FORMATS))
    if unknown:
        raise UserError(f"unknown export format {unknown}: expected some of {sorted(FORMATS)}")
    for name in outputs:
        missing = [need for need in FORMATS[name].needs if need not in outputs]
        if missing:
            raise UserError(f"{labels[name]} builds on {missing}: give those outputs too")
    for name, out in outputs.items():
        others = [path for other, path in outputs.items() if other != name]
        refuse_overlap(labels[name], out, [source, *others])
        check_output(labels[name], out, FORMATS[name].marker, overwrite)
    if baseline.is_baseline_dir(source):
        raise UserError(
            f"{source}: a saved TF-IDF baseline is self-contained already (predict.py and "
            "serve.py load it as it is; copy the directory to move it): export_model.py "
            "exports the network's checkpoints"
        )
    if not (source.is_file() or (source / BUNDLE_FILE).is_file()):
        raise UserError(f"{source}: expected a checkpoint file or an exported bundle")
    clf = Classifier.load(source)
    for name, out in outputs.items():
        refuse_overlap(labels[name], out, [clf.embedding.meta["path"]])
        if FORMATS[name].bag_only and clf.encoder is not None:
            raise UserError(
                f"{labels[name]} exports the bag model; this one has a "
                f"{clf.net.config.encoder} encoder (export a bundle instead)"
            )
    lines: list[Any] = []
    for name in FORMATS:  # in dependency order
        if name in outputs:
            lines.append(FORMATS[name].write(clf, outputs[name], outputs, str(source), overwrite))
    return lines
