"""One search, several workers: a 16-trial search of the head on the seed-fakenews slice with
1 worker and with 2 (`search.workers=2`), on the journal file and on PostgreSQL, side by side.

    python benchmarks/bench_search.py                         # ~5-10 minutes on 2 cores
    python benchmarks/bench_search.py --trials 8 --epochs 2   # quicker
    python benchmarks/bench_search.py --keep /tmp/bench-search

Each search is one `python search.py ...` command as a user types it (`data=seed_fakenews`,
the demo embedding unless `--embedding NAME` names a converted one, `hparams_search=head_optuna`,
`trainer.max_epochs=--epochs`), into a fresh log dir; PostgreSQL is a throwaway server
(tests/postgres.py: initdb + pg_ctl, as `nobody` under root). Per search: wall seconds,
trials per minute, the 1-minute load average before and after, and what the study holds
(complete, pruned, failed, discarded trials; distinct parameter sets). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

REPO = Path(__file__).resolve().parents[1]
SEED_DATA = REPO.parent / "shared" / "data" / "seed-fakenews"


def _postgres():
    spec = importlib.util.spec_from_file_location("postgres", REPO / "tests" / "postgres.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_search(out: Path, name: str, workers: int, storage: str | None, args) -> dict:
    """One search.py command; its figures."""
    cmd = [
        sys.executable, "search.py", "data=seed_fakenews", f"paths.seed_data_dir={args.data}",
        f"paths.log_dir={out / 'logs'}", f"search.study_name={name}",
        f"search.n_trials={args.trials}", f"search.workers={workers}",
        f"trainer.max_epochs={args.epochs}", "trainer.enable_progress_bar=false",
        "~callbacks.progress",
    ]  # fmt: skip
    if args.embedding:
        cmd.append(f"embedding={args.embedding}")
    if storage:
        cmd.append(f"search.storage={storage}")
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    with open(out / f"{name}.log", "w") as log:
        proc = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - started
    load_after = os.getloadavg()[0]
    sweep = out / "logs" / "search" / name
    if storage is None:
        backend = optuna.storages.journal.JournalFileBackend(str(sweep / "study.journal"))
        storage = optuna.storages.JournalStorage(backend)
    study = optuna.load_study(study_name=name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    ran = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    discarded = sum("discarded" in t.user_attrs for t in trials)
    return {
        "name": name,
        "status": proc.returncode,
        "wall_s": wall,
        "per_min": len(ran) / wall * 60,
        "load": (load_before, load_after),
        "complete": sum(t.state == TrialState.COMPLETE for t in trials),
        "pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "failed": sum(t.state == TrialState.FAIL for t in trials) - discarded,
        "discarded": discarded,
        "distinct": len({tuple(sorted(t.params.items())) for t in ran}),
        "workers_seen": len({t.user_attrs.get("worker") for t in ran}),
        "best": study.best_value if any(t.state == TrialState.COMPLETE for t in trials) else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data", type=Path, default=SEED_DATA)
    parser.add_argument("--embedding", default=None, help="a converted embedding (default: demo)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the runs here")
    parser.add_argument("--storages", default="journal,postgresql")
    args = parser.parse_args()
    out = args.keep or Path(tempfile.mkdtemp(prefix="bench-search-"))
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with contextlib.ExitStack() as stack:
        for kind in args.storages.split(","):
            url = stack.enter_context(_postgres().server()) if kind == "postgresql" else None
            for workers in (1, 2):
                name = f"bench-{kind}-{workers}w-{int(time.time())}"
                row = run_search(out, name, workers, url, args)
                row.update(storage=kind, workers=workers)
                rows.append(row)
                print(row, flush=True)
    print(f"\n{args.trials} trials, trainer.max_epochs={args.epochs}, data {args.data}, "
          f"embedding {args.embedding or 'demo'}; runs in {out}\n")  # fmt: skip
    print(
        "| storage | workers | wall s | trials/min | load before/after | complete / pruned "
        "| failed | discarded | distinct params | workers that ran trials | best | status |"
    )
    print("| --- " * 12 + "|")
    for r in rows:
        best = f"{r['best']:.4f}" if r["best"] is not None else "-"
        print(
            f"| {r['storage']} | {r['workers']} | {r['wall_s']:.1f} | {r['per_min']:.1f} "
            f"| {r['load'][0]:.2f} / {r['load'][1]:.2f} | {r['complete']} / {r['pruned']} "
            f"| {r['failed']} | {r['discarded']} | {r['distinct']} | {r['workers_seen']} "
            f"| {best} | {r['status']} |"
        )
    if args.keep is None:
        shutil.rmtree(out, ignore_errors=True)
    return int(any(r["status"] != 0 for r in rows))


if __name__ == "__main__":
    sys.exit(main())
