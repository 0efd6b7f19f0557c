"""The notebook's comparison, complete, on the seed-fakenews slice: its TF-IDF baseline beside
the eight embedding models, over seeds, at an operating point on recall of `Fake`.

    python benchmarks/bench_comparison.py                     # ~35 minutes on 2 cores
    python benchmarks/bench_comparison.py --keep /tmp/cmp     # keep (and reuse) modules, runs
    python benchmarks/bench_comparison.py --skip-timing       # only the seeds x target grid

Data and modules as `bench_grid.py` builds them (the parity split; SVD stand-ins of the four
TF-Hub embeddings at their real sizes). Three sweeps of `experiment=notebook_grid`, each ONE
process as a user types it, one after the other in this script:

1. `cell=` the eight embedding models only (the grid as it was before the baseline), one seed;
2. the grid as it is (the baseline + the eight), one seed: its wall time against sweep 1's
   (target: within 10%), and the baseline's own row;
3. the grid x `seed=42,43,44` x `decision.target="recall_0>=0.90"` (class 0 is Fake in the
   split's 0/1 labels): its summary.md per-model
   table (mean ± standard deviation over seeds, the within-noise marks, each run's threshold)
   checked figure by figure against the runs' own metrics.json.

Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_grid import build_modules, run_grid
from parity_train import DATA, code_state, load_seed_data, write_split

NEURAL = [
    f"{e}_{t}" for e in ("gnews20", "nnlm50", "nnlm128", "wiki250") for t in ("frozen", "finetune")
]
SEEDS = "42,43,44"
# The parity split's labels are 0/1 (`data.label_names=[0,1]`): class "0" is Fake.
FAKE = "0"
TARGET = f"recall_{FAKE}>=0.90"
WALL_SHARE = 0.10


def rerun(work: Path, name: str, extra: list[str], timeout: float) -> dict:
    """One sweep into WORK/<name> (run_grid writes WORK/sweep: moved aside after)."""
    grid = run_grid(work, extra, timeout)
    target = work / name
    shutil.rmtree(target, ignore_errors=True)
    if (work / "sweep").is_dir():
        (work / "sweep").rename(target)
    grid["dir"] = target
    return grid


def check_seed_summary(sweep: Path) -> list[tuple[str, bool]]:
    """summary.md's per-model means and standard deviations, recomputed from metrics.json."""
    import yaml

    per_model: dict[str, list[dict]] = {}
    for run in sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()):
        overrides = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
        cell = next(o.split("=", 1)[1] for o in overrides if o.startswith("cell="))
        metrics_file = run / "metrics.json"
        if metrics_file.is_file():
            per_model.setdefault(cell, []).append(json.loads(metrics_file.read_text()))
    text = (sweep / "summary.md").read_text()
    checks = []
    for cell, runs in per_model.items():
        row = next((line for line in text.splitlines() if line.startswith(f"| cell={cell}")
                    or line.startswith(f"| **cell={cell}")), "")  # fmt: skip
        cells = [c.strip().strip("*") for c in row.strip("|").split("|")]
        values = [r["test/accuracy"] for r in runs]
        expected = f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"
        checks.append((f"{cell}: {len(runs)} seeds, mean test accuracy {expected}",
                       len(runs) == 3 and expected in cells))  # fmt: skip
        thresholds = [r["decision/threshold"] for r in runs]
        recall = [r[f"test/recall_{FAKE}"] for r in runs]
        print(
            f"  {cell:<18} test acc {expected}  F1 Fake "
            f"{np.mean([r[f'test/f1_{FAKE}'] for r in runs]):.4f}  recall Fake at threshold "
            f"{np.mean(recall):.4f} ± {np.std(recall, ddof=1):.4f}  thresholds "
            f"{', '.join(f'{t:.3f}' for t in thresholds)}"
        )
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DATA)
    parser.add_argument("--keep", type=Path, help="work dir to keep and reuse (modules)")
    parser.add_argument("--skip-timing", action="store_true", help="only sweep 3")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per sweep")
    args = parser.parse_args(argv)
    if not args.data_dir.is_dir():
        sys.exit(f"no seed-fakenews data at {args.data_dir}; this benchmark needs it")
    began = time.perf_counter()
    work = (args.keep or Path(tempfile.mkdtemp(prefix="bench_comparison_"))).resolve()
    print(f"bench_comparison: work {work}; load {os.getloadavg()}; {code_state()}", flush=True)
    texts, labels = load_seed_data(args.data_dir)
    train_texts = write_split(texts, labels, work / "split", 42)
    build_modules(train_texts, work)
    checks: list[tuple[str, bool]] = []
    if not args.skip_timing:
        eight = rerun(work, "sweep_eight", [f"cell={','.join(NEURAL)}"], args.timeout)
        nine = rerun(work, "sweep_nine", [], args.timeout)
        share = nine["wall_s"] / eight["wall_s"] - 1
        baseline = next((r for r in nine["runs"] if r.get("baseline")), {})
        print(
            f"grid of 8: {eight['wall_s']:.1f} s (load {eight['load'][0]:.2f}->"
            f"{eight['load'][1]:.2f}); with the baseline: {nine['wall_s']:.1f} s (load "
            f"{nine['load'][0]:.2f}->{nine['load'][1]:.2f}): {100 * share:+.1f}%; the baseline "
            f"run {baseline.get('wall_s', math.nan):.1f} s, test accuracy "
            f"{baseline.get('test/accuracy', math.nan):.4f}, F1 Fake "
            f"{baseline.get(f'test/f1_{FAKE}', math.nan):.4f}, recall Fake "
            f"{baseline.get(f'test/recall_{FAKE}', math.nan):.4f}"
        )
        checks.append(
            (f"9 runs finished ({nine['rc']})", len(nine["runs"]) == 9 and nine["rc"] == 0)
        )
        label = f"with the baseline within {WALL_SHARE:.0%} of the grid of 8: {100 * share:+.1f}%"
        checks.append((label, share <= WALL_SHARE))
    seeds = rerun(
        work, "sweep_seeds", [f"seed={SEEDS}", f'decision.target="{TARGET}"'], args.timeout
    )
    print(f"grid x seeds {SEEDS} x {TARGET}: exit {seeds['rc']}, {seeds['wall_s']:.1f} s")
    checks.append(
        (f"27 runs finished ({seeds['rc']})", len(seeds["runs"]) == 27 and seeds["rc"] == 0)
    )
    checks += check_seed_summary(seeds["dir"])
    summary = (seeds["dir"] / "summary.md").read_text()
    print("\n" + summary.split("## Every run")[0])
    print("Checks:")
    for label, ok in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {label}")
    print(f"\nwall time {time.perf_counter() - began:.0f} s; load average {os.getloadavg()}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
