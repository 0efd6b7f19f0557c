"""How long a command takes to answer, against `python -c "import torch"` in the same run.

    python benchmarks/bench_startup.py [--repeats 7] [--keep DIR]

Prepares a demo checkpoint and its exported bundle once (a one-epoch `train.py` run and
`scripts/export_model.py`; `--keep DIR` reuses them), then times, in turn (round robin, so a
change of load hits every command alike), each command below `--repeats` times as a fresh
process, and prints the median and the fastest wall time of each and the ratio of the medians
to `import torch`'s:

    import torch        python -c "import torch"                        (the reference)
    refused config      python train.py model.lr=-1                     (exit 2, one line)
    predict, bundle     python predict.py ckpt_path=BUNDLE text=...
    predict, checkpoint python predict.py ckpt_path=CKPT text=...

Targets (issue 20): the refused config <= 1.5x, predict on a bundle <= 2x.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEXT = "Did Miley Cyrus secretly get married?"


def run(args: list[str], expect: int = 0) -> float:
    """Wall seconds of one process; refuses an unexpected exit status."""
    started = time.perf_counter()
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != expect:
        raise SystemExit(f"{' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return elapsed


def prepare(work: Path) -> tuple[Path, Path]:
    """A one-epoch demo checkpoint and its bundle under `work` (kept if there)."""
    bundle = work / "bundle"
    found = sorted(work.glob("logs/train/runs/*/checkpoints/last.ckpt"))
    if not found:
        run([sys.executable, "train.py", "trainer.max_epochs=1", f"paths.log_dir={work / 'logs'}",
             "trainer.enable_progress_bar=false", "~callbacks.progress"])  # fmt: skip
        found = sorted(work.glob("logs/train/runs/*/checkpoints/last.ckpt"))
    ckpt = found[-1]
    if not bundle.is_dir():
        run([sys.executable, "scripts/export_model.py", str(ckpt), str(bundle)])
    return ckpt, bundle


def main() -> None:
    """Prepare, time, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--keep", type=Path, help="a directory for the checkpoint and bundle")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_startup_"))
    work.mkdir(parents=True, exist_ok=True)
    ckpt, bundle = prepare(work)
    py = sys.executable
    commands = {
        "import torch": ([py, "-c", "import torch"], 0),
        "refused config": ([py, "train.py", "model.lr=-1"], 2),
        "predict, bundle": ([py, "predict.py", f"ckpt_path={bundle}", f"text={TEXT}"], 0),
        "predict, checkpoint": ([py, "predict.py", f"ckpt_path={ckpt}", f"text={TEXT}"], 0),
    }
    for argv, expect in commands.values():  # warm the page cache once
        run(argv, expect)
    times: dict[str, list[float]] = {name: [] for name in commands}
    loads = [os.getloadavg()[0]]
    for _ in range(args.repeats):
        for name, (argv, expect) in commands.items():
            times[name].append(run(argv, expect))
        loads.append(os.getloadavg()[0])
    reference = statistics.median(times["import torch"])
    print(f"{date.today()}, `python benchmarks/bench_startup.py --repeats {args.repeats}`, "
          f"load {min(loads):.1f}-{max(loads):.1f}, {os.cpu_count()} cores")  # fmt: skip
    print("| command | median s | fastest s | median / import torch |")
    print("| --- | --- | --- | --- |")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.2f} | {min(values):.2f} | {median / reference:.2f}x |")


if __name__ == "__main__":
    main()
