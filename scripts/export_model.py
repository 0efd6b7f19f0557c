"""Export a trained model: a self-contained bundle, and its embedding back to a TF-Hub module.

    python scripts/export_model.py logs/train/runs/<run>/checkpoints/last.ckpt exported/
    python scripts/export_model.py CKPT --tfhub tfhub_module/     # the (fine-tuned) embedding
    python scripts/export_model.py CKPT --tfhub tfhub_module/ --keras keras_model/  # + the head
    python scripts/export_model.py CKPT exported/ --onnx          # with exported/model.onnx

The bundle (`fakenews_pl.serving.bundle`) holds the embedding artifact (the fine-tuned table
when the run trained it), the head as safetensors, the class names, the text recipe and the
sha256 of every file; `Classifier.load("exported/")`, `predict.py ckpt_path=exported/` and
`serve.py` load it without Lightning, Hydra or TensorFlow. `--tfhub` writes the embedding as a TF2
TF-Hub-format SavedModel with the source module's text recipe (`hub.KerasLayer` loads it;
needs the `[tf]` extra). `--onnx` adds the whole classifier as model.onnx (the pooling plan
as inputs: `fakenews_pl.serving.onnx_export`; the `[onnx]` extra). CKPT may also be a bundle. Every
output appears only once complete; errors are one line on stderr (exit status 2).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fakenews_pl.errors import EXIT_STATUS, UserError

# What each output holds when export_model.py wrote it: only such a directory is replaced.
MARKERS = {
    "OUT_DIR": "bundle.json",
    "--tfhub": "fakenews_pl_export.json",
    "--keras": "fakenews_pl_export.json",
}


def check_output(flag: str, out: Path, marker: str, overwrite: bool) -> None:
    """An output may be new, or with `overwrite` a directory this command wrote before."""
    if not out.exists() and not out.is_symlink():
        return
    if not overwrite:
        raise UserError(f"{out} already exists (pass --overwrite to replace it)")
    if not out.is_dir() or out.is_symlink() or not (out / marker).is_file():
        raise UserError(
            f"{flag} {out}: --overwrite replaces only a directory export_model.py wrote (one "
            f"holding {marker}); this one is not, so it is left as it is: choose another path"
        )


def refuse_overlap(flag: str, out: Path, inputs: list[str | Path]) -> None:
    """Refuse an output that is, holds or lies inside one of `inputs` (what the command reads,
    and its other outputs): writing it would replace or delete them."""
    target = out.resolve()
    for given in inputs:
        source = Path(given).resolve()
        if target == source or target in source.parents or source in target.parents:
            raise UserError(
                f"{flag} {out} overlaps {given}, which export_model.py reads or writes; "
                "expected an output outside every input and every other output"
            )


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="a checkpoint file or an exported bundle")
    parser.add_argument("out_dir", type=Path, nargs="?", help="the bundle directory to create")
    parser.add_argument("--tfhub", type=Path, metavar="DIR", help="write the embedding here too")
    parser.add_argument(
        "--keras",
        type=Path,
        metavar="DIR",
        help="with --tfhub: the whole classifier as a tf-keras SavedModel over that module",
    )
    parser.add_argument(
        "--onnx", action="store_true", help="add model.onnx to the bundle (onnxruntime runs it)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    args = parser.parse_args(argv)
    if args.out_dir is None and args.tfhub is None:
        parser.error("give OUT_DIR (a bundle), --tfhub DIR, or both")
    if args.keras is not None and args.tfhub is None:
        parser.error("--keras builds on the --tfhub module: give --tfhub DIR too")
    if args.onnx and args.out_dir is None:
        parser.error("--onnx adds model.onnx to a bundle: give OUT_DIR")
    outputs = {
        flag: path
        for flag, path in (
            ("OUT_DIR", args.out_dir),
            ("--tfhub", args.tfhub),
            ("--keras", args.keras),
        )
        if path is not None
    }
    try:
        for flag, out in outputs.items():
            others = [path for other, path in outputs.items() if other != flag]
            refuse_overlap(flag, out, [args.source, *others])
            check_output(flag, out, MARKERS[flag], args.overwrite)
        if not (args.source.is_file() or (args.source / "bundle.json").is_file()):
            raise UserError(f"{args.source}: expected a checkpoint file or an exported bundle")
        from fakenews_pl.serving.classifier import Classifier

        clf = Classifier.load(args.source)
        for flag, out in outputs.items():
            refuse_overlap(flag, out, [clf.embedding.meta["path"]])
        if args.out_dir is not None:
            info = clf.export(args.out_dir, str(args.source), args.overwrite, onnx=args.onnx)
            table = "fine-tuned" if info["fine_tuned"] else "frozen"
            print(f"wrote {args.out_dir}: {len(info['sha256'])} files, {table} embedding")
        if args.tfhub is not None:
            from fakenews_pl.hub.tfhub_export import export_tfhub

            tuned = None if clf.table_from_artifact else clf.embedding.weight.detach().cpu()
            export_tfhub(args.tfhub, clf.embedding.meta["path"], tuned, overwrite=args.overwrite)
            print(f"wrote {args.tfhub}: a TF-Hub-format SavedModel (hub.KerasLayer loads it)")
        if args.keras is not None:
            from fakenews_pl.hub.tfhub_export import export_keras_classifier

            layers = [
                (layer.weight.detach().cpu().numpy(), layer.bias.detach().cpu().numpy())
                for layer in clf.head.linears
            ]
            export_keras_classifier(
                args.keras, args.tfhub, layers, clf.class_names, overwrite=args.overwrite
            )
            print(f"wrote {args.keras}: the classifier as a tf-keras SavedModel")
    except (UserError, FileExistsError) as e:  # FileExistsError: another process wrote it
        print(f"error: {e}", file=sys.stderr)
        return EXIT_STATUS
    except ImportError as e:
        print(
            f"error: {e.name or e} is not installed: pip install -e '.[tf,onnx]'", file=sys.stderr
        )
        return EXIT_STATUS
    return 0


if __name__ == "__main__":
    sys.exit(main())
