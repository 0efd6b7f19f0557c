"""Convert a TF-Hub text embedding into a verified fakenews_pl artifact.

    python scripts/convert_tfhub.py nnlm128 artifacts/embeddings/nnlm128
    python scripts/convert_tfhub.py /path/to/saved_model out_dir --probe-file my_sentences.txt
    python scripts/convert_tfhub.py /path/to/float64_module out_dir --dtype float32

SOURCE is a local SavedModel directory, a TF-Hub handle or URL, or one of the short names
gnews20, nnlm50, nnlm128, wiki250; `all` converts those four into OUT_DIR/<name> (the paths
`embedding=<name>` reads), keeping any that is already there. OUT_DIR appears only once the
conversion has been verified against TensorFlow; on any failure (or Ctrl-C) nothing is left
behind. Without network, download
the module elsewhere (the .tar.gz from tfhub.dev or Kaggle), extract it and pass the directory.
The table keeps the module's dtype (float32, or float64 as TF-Hub's example exporter writes
it; the outputs then equal TensorFlow's bit for bit) unless `--dtype float32` stores a float64
table as float32, verified within `--relative-tolerance` of TensorFlow's float64 outputs.
Errors are one line on stderr, without TensorFlow's start-up logging.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fakenews_pl.hub.convert import (
    DEFAULT_RELATIVE_TOLERANCE,
    DEFAULT_TOLERANCE,
    DTYPE_CHOICES,
    HUB_MODULES,
    ConversionError,
    convert,
    parse_source,
    quiet_tensorflow,
)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (errors are one line on stderr)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "source", help=f"SavedModel dir, TF-Hub handle/URL, one of {list(HUB_MODULES)}, or all"
    )
    parser.add_argument("out_dir", type=Path, help="artifact directory to create")
    parser.add_argument("--probe-file", type=Path, help="extra probe sentences, one per line")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help="largest allowed |TF - torch| when the table keeps its dtype (default %(default)g)",
    )
    parser.add_argument(
        "--dtype",
        choices=DTYPE_CHOICES,
        default="keep",
        help="the table's dtype in the artifact: the module's own (keep, the default) or float32",
    )
    parser.add_argument(
        "--relative-tolerance",
        type=float,
        default=DEFAULT_RELATIVE_TOLERANCE,
        help="largest allowed max|TF - torch| / max|TF| of a vector when a float64 table is "
        "stored as float32 (default %(default)g)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT_DIR")
    args = parser.parse_args(argv)
    probes = []
    if args.probe_file:
        try:
            probes = args.probe_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            parser.error(f"--probe-file {args.probe_file}: {e}")
    # `all`: the notebook's four modules, each into OUT_DIR/<name> (the embedding= names).
    jobs = (
        [(name, args.out_dir / name) for name in HUB_MODULES]
        if args.source == "all"
        else [(args.source, args.out_dir)]
    )
    for source, out_dir in jobs:
        try:
            # What can be checked without TensorFlow (seconds to import) is checked first.
            parse_source(source)
            if out_dir.exists() and not args.overwrite:
                if args.source == "all" and (out_dir / "meta.json").is_file():
                    print(f"{out_dir} exists; kept (--overwrite converts it again)")
                    continue
                raise FileExistsError(f"{out_dir} already exists (pass --overwrite to replace it)")
            quiet_tensorflow()
            meta = convert(
                source,
                out_dir,
                probes,
                args.tolerance,
                args.overwrite,
                dtype=args.dtype,
                relative_tolerance=args.relative_tolerance,
            )
        except (ConversionError, FileExistsError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        except ImportError as e:
            print(f"error: {e.name or e} is not installed: pip install -e '.[tf]'", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("interrupted; nothing was written", file=sys.stderr)
            return 130
        _report(out_dir, meta)
    return 0


def _report(out_dir: Path, meta: dict) -> None:
    """One line: what was written and how close it is to TensorFlow."""
    parity = meta["parity"]
    if parity.get("checked") == "max_rel_diff":
        close = (
            f"stored as float32 from {meta['source_dtype']}, max |TF - torch| / max |TF| = "
            f"{parity['max_rel_diff']:.2g}"
        )
    else:
        close = f"max |TF - torch| = {parity['max_abs_diff']:.2g}"
    print(
        f"wrote {out_dir}: {meta['num_rows']:,} x {meta['dim']} {meta['dtype']} "
        f"({meta['vocab_size']:,} tokens + {meta['oov_buckets']} OOV buckets), {close} over "
        f"{parity['probes']} probes"
    )


if __name__ == "__main__":
    sys.exit(main())
