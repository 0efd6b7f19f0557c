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
output appears only once complete; errors are one line on stderr (exit status 2). The formats
and their checks live in `fakenews_pl.serving.export`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fakenews_pl.errors import EXIT_STATUS, UserError


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
    # The command line's outputs as export formats (fakenews_pl.serving.export.FORMATS).
    bundle = "onnx" if args.onnx else "bundle"
    given = {bundle: (args.out_dir, "OUT_DIR"), "tfhub": (args.tfhub, "--tfhub"),
             "keras": (args.keras, "--keras")}  # fmt: skip
    outputs = {name: path for name, (path, _) in given.items() if path is not None}
    labels = {name: label for name, (_, label) in given.items()}
    try:
        from fakenews_pl.serving.export import export

        for line in export(args.source, outputs, args.overwrite, labels):
            print(line)
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
