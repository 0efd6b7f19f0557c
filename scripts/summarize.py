"""Rebuild a sweep's summary.csv, summary.md and summary.png from its runs' files.

    python scripts/summarize.py logs/train/multiruns/<sweep>
    python scripts/summarize.py SWEEP_DIR --metric test/f1_Fake        # best by another metric

SWEEP_DIR holds one directory per run (Hydra's job numbers) with its metrics.json, run.json and
overrides, or error.txt for a run that failed; a job that wrote neither (killed) is a row
with status `not finished`, and so is each job of the sweep (Hydra's multirun.yaml) that never
started. A --metric no finished run has is refused in one line (exit status 2).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fakenews_pl.errors import UserError
from fakenews_pl.training.summary import SUMMARY_FILES, read_run, write_summary


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, write the summary files, print where; the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="the multirun directory")
    parser.add_argument("--runs-dir", type=Path, help="where the run dirs are (default: SWEEP_DIR)")
    parser.add_argument("--metric", default="val/best_loss", help="metrics.json key for the best")
    parser.add_argument(
        "--mode", choices=("min", "max"),
        help="default: min for losses, max for scores (accuracy, precision, recall, f1, ...)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"error: {args.sweep_dir}: no such sweep directory", file=sys.stderr)
        return 2
    runs_dir = args.runs_dir or args.sweep_dir
    if not runs_dir.is_dir():
        print(f"error: --runs-dir {runs_dir}: no such directory", file=sys.stderr)
        return 2
    runs = [d for d in runs_dir.iterdir() if d.is_dir() and read_run(d) is not None]
    if not runs and not (args.sweep_dir / "multirun.yaml").is_file():
        print(
            f"error: {runs_dir}: no run directories in it (expected a multirun's directory, "
            "whose jobs are 0/, 1/, ...); nothing written",
            file=sys.stderr,
        )
        return 2
    try:
        line = write_summary(args.sweep_dir, args.runs_dir, args.metric, args.mode)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{line}; wrote {', '.join(str(args.sweep_dir / name) for name in SUMMARY_FILES)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
