"""The notebook's whole eight-run grid, as a user runs it, at the four real table sizes.

    python benchmarks/bench_grid.py                       # everything, ~20 minutes on 2 cores
    python benchmarks/bench_grid.py --keep /tmp/grid      # keep (and later reuse) modules, runs
    python benchmarks/bench_grid.py --keep /tmp/grid --skip-keras   # reuse /tmp/grid/keras.json

Data: the seed-fakenews split of `parity_train.py` (seeded, stratified, test 0.33, validation =
the test set). Modules: as `bench_train.py` builds them, one per TF-Hub embedding of the grid,
at that embedding's real size (`bench_embedding.SIZES`: gnews20 20,001 x 20, nnlm50
963,812 x 50, nnlm128 973,771 x 128, wiki250 1,009,375 x 250 with 9,375 OOV buckets): SVD word
vectors of the train texts padded with filler rows, exported as a TF-Hub SavedModel and
converted with `scripts/convert_tfhub.py` into `WORK/embeddings/<name>`, the layout
`embedding=<name>` reads with `paths.embeddings_dir=WORK/embeddings`.

The grid: ONE process, the command a user types (the notebook_grid experiment; its data
overridden back to the split's CSV files, as `parity_train.ours_command` does):

    python train.py -m experiment=notebook_grid data=csv data.train_csv=WORK/split/train.csv
        data.test_csv=WORK/split/test.csv data.val_source=test data.label_names=[0,1]
        paths.embeddings_dir=WORK/embeddings paths.log_dir=WORK/logs
        paths.cache_dir=WORK/cache hydra.sweep.dir=WORK/sweep
        +callbacks.epoch_timer... +callbacks.ckpt_timer...   (per-job JSON, measurement only)

with the default callbacks (checkpoints, early stopping, progress bar). Measured: the sweep's
wall time and peak RSS (`os.wait4` ru_maxrss of that one process: the largest of its eight
jobs, as they run in it one after the other), every run's row of the sweep's `summary.csv`
(written by the project's SweepCallback: epochs, test accuracy, wall seconds), the `*.ckpt`
files under WORK/sweep (per run: last.ckpt and the best epoch_*.ckpt, against the full table,
rows x dim x 4 bytes) and checkpointing time: `parity_train.CheckpointTimer` times every
`trainer.save_checkpoint` call of each epoch, `parity_train.EpochTimer` the epochs (validation
and checkpoints included); checkpointing's share = save seconds / (epoch seconds - save
seconds), summed over the run's epochs.

The Keras estimate of the same grid (`keras_reference.py`, the notebook's exact model, on the
same split and modules): frozen, the measured process wall time of a full run (early
stopping); fine-tuned (a full one takes ~1-2 hours per embedding), one epoch cut to
`--keras-steps` batches, scaled as bench_train does (median step time, graph-tracing first
step left out, x the steps of a full epoch + the measured validation pass), times the number
of epochs OUR fine-tuned run of that embedding took (Keras's own count is not measured). Its
accuracies after a cut epoch mean nothing and are not shown.

Targets (this 2-core machine): the whole grid <= 5 minutes; <= 1/50 of the Keras estimate;
every fine-tuned run's checkpoints (last.ckpt, epoch_*.ckpt) each <= 10% of its full table;
fine-tuned runs' checkpointing <= 0.5x of their epoch time; the sweep's peak RSS <= 3 GB.
Exit status 1 when one fails. Every child has a timeout (`--timeout`, seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import parity_train
from bench_embedding import SIZES
from parity_train import (
    DATA,
    REPO,
    build_module,
    code_state,
    load_seed_data,
    run_child,
    run_keras,
    write_split,
)

GRID = ("gnews20", "nnlm50", "nnlm128", "wiki250")  # conf/experiment/notebook_grid.yaml
GRID_LIMIT_S = 300.0
KERAS_RATIO = 1 / 50
CKPT_TABLE_SHARE = 0.10
CKPT_TIME_SHARE = 0.5
RSS_LIMIT_GB = 3.0


def build_modules(train_texts: list[str], work: Path) -> dict[str, dict[str, Any]]:
    """Per embedding: its SavedModel, converted artifact in WORK/embeddings/<name>, size."""
    out = {}
    embeddings = work / "embeddings"
    embeddings.mkdir(parents=True, exist_ok=True)
    for name in GRID:
        rows, dim, buckets = SIZES[name]
        mdir = work / "modules" / name
        mdir.mkdir(parents=True, exist_ok=True)
        target = embeddings / name
        link = mdir / "svd_artifact"
        if target.is_dir() and not link.exists():
            link.symlink_to(target.resolve())
        print(f"module {name}: {rows:,} x {dim} ({buckets:,} OOV buckets)", flush=True)
        start = time.perf_counter()
        saved, artifact = build_module(train_texts, mdir, dim, rows, buckets)
        if not link.is_symlink():  # freshly converted here: move it where embedding= reads
            shutil.rmtree(target, ignore_errors=True)
            shutil.move(str(artifact), str(target))
            link.symlink_to(target.resolve())
        meta = json.loads((target / "meta.json").read_text())
        assert (meta["num_rows"], meta["dim"]) == (rows, dim), (name, meta["num_rows"], meta["dim"])
        out[name] = {
            "saved": saved,
            "artifact": target,
            "rows": rows,
            "dim": dim,
            "table_bytes": rows * dim * 4,
            "build_s": time.perf_counter() - start,
        }
    return out


def grid_command(work: Path, extra: list[str]) -> list[str]:
    split = work / "split"
    return [
        sys.executable,
        str(REPO / "train.py"),
        "-m",
        "experiment=notebook_grid",
        "data=csv",
        f"data.train_csv={split / 'train.csv'}",
        f"data.test_csv={split / 'test.csv'}",
        "data.val_source=test",
        "data.label_names=[0,1]",
        f"paths.embeddings_dir={work / 'embeddings'}",
        f"paths.log_dir={work / 'logs'}",
        f"paths.cache_dir={work / 'cache'}",
        f"hydra.sweep.dir={work / 'sweep'}",
        "+callbacks.epoch_timer._target_=benchmarks.parity_train.EpochTimer",
        "+callbacks.epoch_timer.out=${paths.output_dir}/epoch_times.json",
        "+callbacks.ckpt_timer._target_=benchmarks.parity_train.CheckpointTimer",
        "+callbacks.ckpt_timer.out=${paths.output_dir}/ckpt_times.json",
        *extra,
    ]


def run_grid(work: Path, extra: list[str], timeout: float) -> dict[str, Any]:
    """The sweep in one child process; its wall time, peak RSS and one row per run."""
    import pandas as pd

    sweep = work / "sweep"
    shutil.rmtree(sweep, ignore_errors=True)
    shutil.rmtree(work / "cache", ignore_errors=True)  # cold token caches, as a first grid
    cmd = grid_command(work, extra)
    print("grid: " + " ".join(cmd[1:]).replace(str(work), "WORK"), flush=True)
    result = run_child(cmd, work / "grid.log", check=False, timeout=timeout)
    if result["rc"] != 0:
        tail = (work / "grid.log").read_text(errors="replace")[-3000:]
        print(f"grid FAILED (exit {result['rc']}); log {work / 'grid.log'}:\n{tail}")
    summary = sweep / "summary.csv"
    frame = pd.read_csv(summary) if summary.is_file() else pd.DataFrame()
    runs = []
    for _, row in frame.iterrows():
        run_dir = sweep / str(row["run"])
        rec = {k: (None if pd.isna(v) else v) for k, v in row.items()}
        rec["dir"] = run_dir
        rec["ckpts"] = {p.name: p.stat().st_size for p in sorted(run_dir.rglob("*.ckpt"))}
        for key, name in (("epochs_t", "epoch_times.json"), ("saves_t", "ckpt_times.json")):
            path = run_dir / name
            rec[key] = json.loads(path.read_text()) if path.is_file() else None
        runs.append(rec)
    result.update(runs=runs, summary=summary if summary.is_file() else None)
    result["ckpt_bytes"] = sum(p.stat().st_size for p in sweep.rglob("*.ckpt"))
    return result


def checkpoint_share(rec: dict[str, Any]) -> tuple[float, float, float] | None:
    """(save s, epoch s without saves, share) summed over the run's epochs, or None."""
    if not rec["epochs_t"] or rec["saves_t"] is None:
        return None
    epochs = rec["epochs_t"]["epoch_seconds"]
    saves = rec["saves_t"]["save_seconds"]
    save = sum(saves.get(str(i + 1), 0.0) for i in range(len(epochs)))
    rest = sum(epochs) - save
    return save, rest, save / rest if rest > 0 else float("inf")


def run_keras_all(modules: dict[str, dict], work: Path, seed: int, steps: int) -> dict[str, Any]:
    """Per embedding: a full frozen run and a fine-tuning epoch cut to `steps` batches."""
    out: dict[str, Any] = {"steps": steps, "seed": seed, "load": [os.getloadavg()[0]]}
    for name in GRID:
        for trainable in (False, True):
            tag = f"{name}_{'finetune' if trainable else 'frozen'}"
            print(f"keras {tag} ...", flush=True)
            row = run_keras(
                modules[name]["saved"],
                work / "split",
                work / "keras" / f"{tag}.json",
                trainable,
                seed,
                steps if trainable else 0,
                1 if trainable else 100,
            )
            raw = row["raw"]
            out[tag] = {
                "wall_s": row["wall_s"],
                "peak_rss_mb": row["peak_rss_mb"],
                "epochs": row["epochs"],
                "accuracy": row["accuracy"],
                "full_epoch_s": raw["full_epoch_seconds"][0],
                "step_median_s": statistics.median(raw["step_seconds"][1:] or raw["step_seconds"])
                if trainable
                else None,
                "steps_per_full_epoch": raw["steps_per_full_epoch"],
                "val_s": raw["val_seconds"][0],
            }
            print(
                f"  {row['wall_s']:.0f} s wall, {row['epochs']} epoch(s), "
                f"epoch {out[tag]['full_epoch_s']:.1f} s, RSS {row['peak_rss_mb']:.0f} MiB",
                flush=True,
            )
    out["load"].append(os.getloadavg()[0])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DATA)
    parser.add_argument("--seed", type=int, default=42, help="split and Keras seed")
    parser.add_argument("--keras-steps", type=int, default=20, help="Keras fine-tuning steps")
    parser.add_argument("--skip-keras", action="store_true", help="reuse WORK/keras.json")
    parser.add_argument("--keep", type=Path, help="work dir to keep and reuse (modules, keras)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per child process")
    parser.add_argument("extra", nargs="*", help="more train.py overrides for the grid")
    args = parser.parse_args(argv)
    if not args.data_dir.is_dir():
        sys.exit(f"no seed-fakenews data at {args.data_dir}; this benchmark needs it")
    missing = [n for n in GRID if n not in SIZES]
    if missing:
        sys.exit(f"bench_embedding.SIZES lacks {missing}")
    parity_train.CHILD_TIMEOUT_S = args.timeout
    work = (args.keep or Path(tempfile.mkdtemp(prefix="bench_grid_"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    print(f"bench_grid: work dir {work}; {os.cpu_count()} CPUs; load {os.getloadavg()}")
    print(code_state(), flush=True)
    texts, labels = load_seed_data(args.data_dir)
    train_texts = write_split(texts, labels, work / "split", args.seed)
    print(
        f"split (seed {args.seed}): {len(train_texts)} train, {len(texts) - len(train_texts)} test"
    )
    modules = build_modules(train_texts, work)

    print(f"grid ... (load {os.getloadavg()[0]:.2f})", flush=True)
    grid = run_grid(work, args.extra, args.timeout)
    grid_s, rss_gb = grid["wall_s"], grid["peak_rss_mb"] * 2**20 / 1e9
    print(
        f"grid: exit {grid['rc']}, {grid_s:.1f} s wall, peak RSS {rss_gb:.2f} GB, "
        f"load {grid['load'][0]:.2f}->{grid['load'][1]:.2f}, "
        f"checkpoints on disk {grid['ckpt_bytes'] / 2**20:.1f} MiB"
    )

    keras_file = work / "keras.json"
    if args.skip_keras:
        if not keras_file.is_file():
            sys.exit(f"--skip-keras: no {keras_file} from an earlier run")
        keras = json.loads(keras_file.read_text())
        print(f"keras: reusing {keras_file} ({keras['steps']} fine-tuning steps)")
    else:
        (work / "keras").mkdir(exist_ok=True)
        keras = run_keras_all(modules, work, args.seed, args.keras_steps)
        keras_file.write_text(json.dumps(keras, indent=1, default=str) + "\n")

    # ---- the table
    checks: list[tuple[str, bool | None]] = []
    keras_total = 0.0
    head = (
        f"\n{'embedding':<10}{'trainable':>10}{'epochs':>7}{'test acc':>9}{'run s':>7}"
        f"{'share':>7}{'ckpt MiB (last/best)':>22}{'% table':>14}{'ckpt s/epoch s':>18}"
        f"{'Keras s (est.)':>16}"
    )
    print(head)
    for rec in grid["runs"]:
        name, trainable = rec.get("embedding"), bool(rec.get("trainable"))
        module = modules.get(name)
        if module is None or rec.get("error"):
            print(f"{rec['run']}: FAILED: {rec.get('error')}")
            checks.append((f"run {rec['run']} ({rec.get('overrides')}) completed", False))
            continue
        epochs = int(rec["fit/epochs"])
        last = rec["ckpts"].get("last.ckpt", 0)
        best = max((v for k, v in rec["ckpts"].items() if k.startswith("epoch_")), default=0)
        share_tab = [100 * b / module["table_bytes"] for b in (last, best)]
        if trainable:
            k = keras[f"{name}_finetune"]
            k_s = epochs * k["full_epoch_s"]
        else:
            k = keras[f"{name}_frozen"]
            k_s = k["wall_s"]
        keras_total += k_s
        ck = checkpoint_share(rec)
        ck_text = "n/a" if ck is None else f"{ck[0]:.2f}/{ck[1]:.2f}={ck[2]:.2f}x"
        wall = rec.get("wall_s") or float("nan")
        print(
            f"{name:<10}{str(trainable).lower():>10}{epochs:>7}{rec['test/accuracy']:>9.4f}"
            f"{wall:>7.1f}{100 * wall / grid_s:>6.0f}%"
            f"{f'{last / 2**20:.1f} / {best / 2**20:.1f}':>22}"
            f"{f'{share_tab[0]:.1f} / {share_tab[1]:.1f}':>14}{ck_text:>18}{k_s:>16.0f}"
        )
        rec.update(keras_s=k_s, ckpt=ck, share_tab=share_tab)
        if trainable:
            checks.append(
                (
                    f"{name} fine-tuned checkpoints <= {CKPT_TABLE_SHARE:.0%} of the "
                    f"{module['table_bytes'] / 2**20:.0f} MiB table each: last "
                    f"{share_tab[0]:.1f}%, best {share_tab[1]:.1f}%",
                    max(share_tab) <= 100 * CKPT_TABLE_SHARE and last > 0,
                )
            )
            checks.append(
                (
                    f"{name} fine-tuned checkpointing <= {CKPT_TIME_SHARE}x of the epoch time: "
                    + ("not measured" if ck is None else f"{ck[2]:.3f}x"),
                    None if ck is None else ck[2] <= CKPT_TIME_SHARE,
                )
            )
    print(
        f"\nKeras estimate of the grid: {keras_total:.0f} s ({keras_total / 60:.1f} min); "
        f"frozen = measured full runs, fine-tuned = {keras['steps']}-step median step x steps "
        "per epoch + validation, x our fine-tuned run's epochs"
    )
    for name in GRID:
        fr, ft = keras[f"{name}_frozen"], keras[f"{name}_finetune"]
        print(
            f"  Keras {name}: frozen {fr['epochs']} epochs, {fr['wall_s']:.0f} s process wall, "
            f"RSS {fr['peak_rss_mb']:.0f} MiB; fine-tune step {ft['step_median_s']:.3f} s x "
            f"{ft['steps_per_full_epoch']} + validation {ft['val_s']:.1f} s = "
            f"{ft['full_epoch_s']:.1f} s an epoch, RSS {ft['peak_rss_mb']:.0f} MiB"
        )
    ratio = grid_s / keras_total if keras_total else float("inf")
    done = len(grid["runs"]) == 2 * len(GRID) and grid["rc"] == 0
    checks[:0] = [
        (f"the grid ran all {2 * len(GRID)} runs (exit {grid['rc']})", done),
        (f"whole grid <= {GRID_LIMIT_S / 60:.0f} minutes: {grid_s:.1f} s", grid_s <= GRID_LIMIT_S),
        (
            f"whole grid <= 1/50 of the Keras estimate: {grid_s:.0f} s / {keras_total:.0f} s "
            f"= 1/{1 / ratio:.1f}",
            ratio <= KERAS_RATIO,
        ),
        (f"sweep peak RSS <= {RSS_LIMIT_GB:g} GB: {rss_gb:.2f} GB", rss_gb <= RSS_LIMIT_GB),
    ]
    print("\nTargets:")
    for label, ok in checks:
        print(f"  {'n/a ' if ok is None else 'PASS' if ok else 'FAIL'}  {label}")
    print(f"\nwall time {time.perf_counter() - began:.0f} s; load average {os.getloadavg()}")
    print(code_state())
    (work / "bench_grid.json").write_text(
        json.dumps({"grid": grid, "keras": keras, "checks": checks}, indent=1, default=str) + "\n"
    )
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(ok is not False for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
