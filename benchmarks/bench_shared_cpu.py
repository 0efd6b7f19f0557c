"""The default `python train.py` on a shared CPU: torch's thread count vs `model.step_threads=1`.

    python benchmarks/bench_shared_cpu.py [--runs 10] [--quiet-too] [--timeout 300]

Each run is a fresh `python train.py` process with no arguments but its paths: the demo inputs
and token cache in one temporary folder (written once by a warm-up run that is not counted),
each run's outputs in its own `hydra.run.dir`. Beside them runs a competing CPU-bound process
(`--competitors`, default 1: a pure-Python busy loop, started before the first run, killed
after the last, and bounded by its own deadline). The two variants alternate run by run, which
goes first swapping every pair, so the machine's other load falls on both:

* before   `model.step_threads=null`: torch's thread count for everything, as before
* after    the default, `model.step_threads=1` for each training minibatch's small ops

`--quiet-too` repeats the runs without the competitor first. Prints wall seconds per run
(with CPU seconds and the 1-minute load average), then per condition and variant the median,
max and min, and whether every run's metrics.json has the same figures. OMP_NUM_THREADS and
MKL_NUM_THREADS are removed from the runs' environment (they would fix the count for both).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"before": ["model.step_threads=null"], "after": []}
BUSY = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"


def train_command(work: Path, run_dir: Path, extra: list[str]) -> list[str]:
    """`python train.py` with the paths inside `work` and its outputs in `run_dir`."""
    paths = [f"paths.{k}={work / k}" for k in ("demo_dir", "cache_dir", "embeddings_dir")]
    paths += [f"paths.data_dir={work / 'data'}", f"paths.log_dir={work / 'logs'}"]
    return [sys.executable, str(ROOT / "train.py"), *paths, f"hydra.run.dir={run_dir}", *extra]


def run_train(command: list[str], log: Path, timeout: float) -> dict:
    """Run one training process: wall and CPU seconds (its own rusage), exit status."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    load = os.getloadavg()[0]
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        status, usage, timed_out = None, None, False
        while status is None:
            pid, code, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                status, usage = os.waitstatus_to_exitcode(code), rusage
            elif time.perf_counter() - start > timeout:
                proc.kill()
                _, code, usage = os.wait4(proc.pid, 0)
                status, timed_out = os.waitstatus_to_exitcode(code), True
            else:
                time.sleep(0.02)
        proc.returncode = status  # reaped by wait4: keep Popen from waiting again
    wall = time.perf_counter() - start
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "status": status,
        "timed_out": timed_out,
        "load": load,
    }


def start_competitors(count: int, seconds: float) -> list[subprocess.Popen]:
    """`count` busy-loop processes, each ending by itself after `seconds` at the latest."""
    code = BUSY.format(seconds=seconds)
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(count)]


def stop(processes: list[subprocess.Popen]) -> None:
    """Kill and reap the processes this script started."""
    for proc in processes:
        proc.kill()
        proc.wait()


def run_condition(name: str, args: argparse.Namespace, work: Path, rows: list[dict]) -> None:
    """`args.runs` pairs of runs, before and after alternating, in condition `name`."""
    competitors = []
    if name == "shared":
        bound = 2 * args.runs * args.timeout + 60
        competitors = start_competitors(args.competitors, bound)
        time.sleep(1.0)  # let them reach the busy loop
    try:
        for i in range(args.runs):
            order = list(VARIANTS) if i % 2 == 0 else list(VARIANTS)[::-1]
            for variant in order:
                run_dir = work / "runs" / f"{name}_{variant}_{i:02d}"
                command = train_command(work, run_dir, VARIANTS[variant])
                run_dir.mkdir(parents=True)
                row = run_train(command, run_dir / "train.log", args.timeout)
                metrics = run_dir / "metrics.json"
                row.update(
                    condition=name,
                    variant=variant,
                    run=i,
                    metrics=json.loads(metrics.read_text()) if metrics.exists() else None,
                )
                rows.append(row)
                flag = " TIMEOUT" if row["timed_out"] else ""
                flag += f" EXIT {row['status']} (see {run_dir / 'train.log'})" * bool(
                    row["status"] and not row["timed_out"]
                )
                print(
                    f"{name:6s} {variant:6s} run {i:2d}: {row['wall']:6.1f} s wall, "
                    f"{row['cpu']:6.1f} s CPU, load {row['load']:.2f}{flag}",
                    flush=True,
                )
    finally:
        stop(competitors)


def numbers(metrics: dict | None) -> dict:
    """The figures of a metrics.json (its notes left out)."""
    return {k: v for k, v in (metrics or {}).items() if isinstance(v, int | float)}


def summary(rows: list[dict]) -> str:
    """Markdown table: per condition and variant, median / max / min wall seconds."""
    lines = [
        "| condition | variant | runs | median s | max s | min s | median CPU s | timeouts |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for condition in dict.fromkeys(r["condition"] for r in rows):
        for variant in VARIANTS:
            sel = [r for r in rows if r["condition"] == condition and r["variant"] == variant]
            if not sel:
                continue
            walls = [r["wall"] for r in sel]
            cpus = [r["cpu"] for r in sel]
            lines.append(
                f"| {condition} | {variant} | {len(sel)} | {statistics.median(walls):.1f} | "
                f"{max(walls):.1f} | {min(walls):.1f} | {statistics.median(cpus):.1f} | "
                f"{sum(r['timed_out'] for r in sel)} |"
            )
    loads = [r["load"] for r in rows]
    metrics = {json.dumps(numbers(r["metrics"]), sort_keys=True) for r in rows}
    same = all(r["metrics"] for r in rows) and len(metrics) == 1
    lines.append("")
    lines.append(f"load average (1 min) at the runs' starts: {min(loads):.2f}-{max(loads):.2f}")
    lines.append(f"metrics.json's figures identical in every run: {'yes' if same else 'NO'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="runs per variant and condition")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per run")
    parser.add_argument("--competitors", type=int, default=1, help="busy-loop processes")
    parser.add_argument("--quiet-too", action="store_true", help="also run without competitor")
    parser.add_argument("--keep", type=Path, help="keep the runs' folders here")
    args = parser.parse_args(argv)
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, load {os.getloadavg()}")
    work = Path(tempfile.mkdtemp(prefix="bench_shared_cpu_"))
    rows: list[dict] = []
    try:
        warm = run_train(train_command(work, work / "warmup", []), work / "warmup.log", 600)
        if warm["status"] != 0:
            tail = (work / "warmup.log").read_text()[-3000:]
            print(f"warm-up run failed (exit {warm['status']}):\n{tail}", file=sys.stderr)
            return 1
        print(f"warm-up (writes the demo inputs, not counted): {warm['wall']:.1f} s")
        for condition in ("quiet", "shared") if args.quiet_too else ("shared",):
            run_condition(condition, args, work, rows)
        print()
        print(summary(rows))
        return 0 if all(r["status"] == 0 for r in rows) else 1
    finally:
        if args.keep:
            shutil.copytree(work, args.keep, dirs_exist_ok=True, symlinks=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
