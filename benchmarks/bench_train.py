"""Training speed and memory at a real TF-Hub table size: the notebook's Keras model beside ours.

    python benchmarks/bench_train.py                          # nnlm128 size: 973,771 x 128
    python benchmarks/bench_train.py --size wiki250           # 1,009,375 x 250
    python benchmarks/bench_train.py --max-steps 40 --max-epochs 2 --keep /tmp/bench
    python benchmarks/bench_train.py --runs keras-frozen,frozen,sparse

Data: the seed-fakenews split of `parity_train.py` (seeded, stratified, test 0.33, validation =
the test set). Module: SVD word vectors of the train texts (`svd_module.export_svd_module`),
padded with filler rows to the real module's row count, so table, gradient and optimizer costs
are those of the real table; converted with `scripts/convert_tfhub.py`. Runs, each in its own
process (peak RSS = `os.wait4` ru_maxrss of that process and any it waited for):

* keras-frozen     `keras_reference.py`, full epochs until EarlyStopping
* keras-finetune   `keras_reference.py --trainable --max-steps N --epochs 1`: one epoch cut to N
                   batches (a full one takes many minutes); its time is scaled to a full epoch
                   from the median step time (first, graph-tracing step left out) plus the
                   measured validation pass; its accuracy after N steps means nothing
* frozen           `train.py trainable=false` (pooled vectors cached once, then the head trains)
* exact            `train.py trainable=true` (the default: `TouchedRowAdam`, torch's Adam over
                   the whole table computed on the rows ever touched), until early stopping
* exact-1          as exact, at most `--max-epochs` epochs, with a digest of the final weights
* dense            `train.py trainable=true model.table_optimizer=dense` (torch's Adam over
                   every row every step), at most `--max-epochs` epochs (the output says when
                   that cap cut the run short), with a digest of the final weights: equal to
                   exact-1's, or the exact optimizer is not exact
* sparse           `train.py trainable=true model.table_optimizer=lazy` (SparseAdam)
* exact-ckpt       as exact, at most 2 epochs, with the default checkpoint callbacks (touched
                   rows and their moments only): checkpoint size and what saving costs
* sparse-ckpt      as sparse, at most 2 epochs, with the default checkpoint callback (one
                   checkpoint of table + optimizer state per epoch): what checkpointing costs
* sparse-tb        as sparse with `logger=tensorboard`: what TensorBoard's TF import costs

Timing source: per-epoch seconds are wall-clock epochs measured inside each process, the
validation pass included, median over the epochs run (robust to bursts of load from other work
on a shared machine): Keras from `on_epoch_begin` to `on_epoch_end`; ours by
`parity_train.EpochTimer`, from one `on_train_epoch_start` to the next (the last to
`on_train_end`). Our runs other than sparse-ckpt write no checkpoints and show no progress bar,
like the Keras reference. One-off costs (TF graph tracing, pooling the frozen cache, imports,
loading the table, the final report) are in `process wall s`, not in the epochs.

Targets (this machine): frozen epoch <= 0.1x Keras frozen; sparse epoch <= 1/300 of the Keras
fine-tuning epoch; exact epoch <= 1/50 of it and <= 3x the sparse epoch, with exact-1's final
weights equal to dense's; sparse and exact peak RSS <= 3 GB at nnlm128 size (<= 6 GB at
wiki250); dense epoch <= 0.5x Keras fine-tuning; test accuracy within 1 point of Keras (frozen;
fine-tuned only when `--max-steps 0` runs Keras's fine-tuning in full).
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

from bench_embedding import SIZES
from parity_train import (
    DATA,
    build_module,
    code_state,
    load_seed_data,
    run_keras,
    run_ours,
    write_split,
)

RUNS = (
    "keras-frozen",
    "keras-finetune",
    "frozen",
    "exact",
    "exact-1",
    "dense",
    "sparse",
    "exact-ckpt",
    "sparse-ckpt",
    "sparse-tb",
)
DIGESTED = ("exact-1", "dense")  # the same epochs: their final weights must be equal
RSS_LIMIT_GB = {"nnlm128": 3.0, "wiki250": 6.0}
COLUMNS = (
    ("epochs", "epochs", "{:.0f}"),
    ("epoch_s", "epoch s", "{:.2f}"),
    ("first_epoch_s", "1st epoch", "{:.2f}"),
    ("peak_rss_mb", "RSS MiB", "{:.0f}"),
    ("accuracy", "test acc", "{:.4f}"),
    ("wall_s", "wall s", "{:.0f}"),
)


def run_one(name: str, args: argparse.Namespace, module: Path, artifact: Path, work: Path) -> dict:
    """One benchmark run in a child process -> its row, with a `note` on how it was cut."""
    split, seed = work / "split", args.seed
    if name.startswith("keras"):
        trainable = name == "keras-finetune"
        steps = args.max_steps if trainable else 0
        epochs = 1 if steps else 100
        row = run_keras(module, split, work / f"{name}.json", trainable, seed, steps, epochs)
        raw = row["raw"]
        row["note"] = f"full epochs (early stopping); {raw['trainable_params']:,} trainable params"
        if row["cut_steps"]:
            step = statistics.median(raw["step_seconds"][1:] or raw["step_seconds"])
            row["note"] = (
                f"epoch cut to {steps} of {raw['steps_per_full_epoch']} steps: median step "
                f"{step:.3f} s x {raw['steps_per_full_epoch']} + validation "
                f"{raw['val_seconds'][0]:.1f} s; {raw['trainable_params']:,} trainable params; "
                f"accuracy after {steps} steps only"
            )
        return row
    extra = {
        "frozen": [],
        "exact": [],
        "exact-1": [f"trainer.max_epochs={args.max_epochs}"],
        "exact-ckpt": ["trainer.max_epochs=2"],
        "dense": [f"trainer.max_epochs={args.max_epochs}", "model.table_optimizer=dense"],
        "sparse": ["model.table_optimizer=lazy"],
        "sparse-ckpt": ["model.table_optimizer=lazy", "trainer.max_epochs=2"],
        "sparse-tb": ["model.table_optimizer=lazy", "logger=tensorboard"],
    }[name]
    if name in DIGESTED:
        extra += [
            "+callbacks.digest._target_=benchmarks.parity_train.WeightsDigest",
            f"+callbacks.digest.out={work / name / 'digest.json'}",
        ]
    row = run_ours(
        artifact,
        split,
        work / name,
        name != "frozen",
        seed,
        extra,
        checkpoints=name.endswith("-ckpt"),
    )
    cap = {"dense": args.max_epochs, "exact-1": args.max_epochs}.get(name)
    cap = 2 if name.endswith("-ckpt") else cap
    if name.endswith("-ckpt"):
        last = work / name / "checkpoints" / "last.ckpt"
        row["ckpt_mb"] = last.stat().st_size / 2**20 if last.is_file() else float("nan")
    history = json.loads((work / name / "metrics.json").read_text())
    stopped_early = history.get("val/best_epoch", 0) + 2 <= row["epochs"]
    if cap is not None and row["epochs"] >= cap and not stopped_early:
        row["note"] = f"CAPPED at {cap} epoch(s) before early stopping"
    else:
        row["note"] = "full epochs (early stopping)"
    if name.endswith("-ckpt"):
        row["note"] += f"; default checkpoint callbacks, last.ckpt {row['ckpt_mb']:.1f} MiB"
    if name == "frozen":
        row["note"] += f"; pooling cache {row['setup_s']:.2f} s"
    return row


def print_rows(rows: dict[str, dict]) -> None:
    """The side-by-side table: one line per run."""
    head = f"{'run':<16}" + "".join(f"{label:>11}" for _, label, _ in COLUMNS)
    print("\n" + head + f"{'load 1-min':>14}  note")
    for name, row in rows.items():
        cells = "".join(f"{spec.format(row[key]):>11}" for key, _, spec in COLUMNS)
        load = f"{row['load'][0]:.2f}->{row['load'][1]:.2f}"
        print(f"{name:<16}{cells}{load:>14}  {row['note']}")


def targets(rows: dict[str, dict], size: str, keras_ft_full: bool) -> list[tuple[str, bool | None]]:
    """(description, PASS/FAIL or None when a run it needs is missing) per target."""
    out: list[tuple[str, bool | None]] = []

    def ratio(ours: str, keras: str, limit: float, label: str) -> None:
        if ours not in rows or keras not in rows:
            out.append((f"{label}: needs runs {ours} and {keras}", None))
            return
        r = rows[ours]["epoch_s"] / rows[keras]["epoch_s"]
        out.append(
            (
                f"{label}: {rows[ours]['epoch_s']:.2f} s / {rows[keras]['epoch_s']:.2f} s = "
                f"{r:.4f}x (1/{1 / r:.3g}); limit {limit:.4f}x",
                r <= limit,
            )
        )

    ratio("frozen", "keras-frozen", 0.1, "frozen epoch <= 0.1x Keras frozen")
    ratio("sparse", "keras-finetune", 1 / 300, "sparse epoch <= 1/300 Keras fine-tune")
    ratio("dense", "keras-finetune", 0.5, "dense epoch <= 0.5x Keras fine-tune")
    ratio("exact", "keras-finetune", 1 / 50, "exact epoch <= 1/50 Keras fine-tune")
    ratio("exact", "sparse", 3.0, "exact epoch <= 3x sparse (lazy) epoch")
    if all(name in rows for name in DIGESTED):
        a, b = (rows[name]["digest"] for name in DIGESTED)
        differ = sorted(key for key in a if a[key] != b.get(key))
        label = f"exact-1 final weights == dense (same seed, {rows['dense']['epochs']} epoch(s))"
        out.append((label + (f"; differ: {differ}" if differ else ""), not differ and a == b))
    limit = RSS_LIMIT_GB[size]
    for name in ("sparse", "exact", "sparse-ckpt", "exact-ckpt", "dense", "frozen"):
        if name in rows:
            gb = rows[name]["peak_rss_mb"] * 1024 * 1024 / 1e9
            strict = name in ("sparse", "exact")
            label = f"{name} peak RSS {gb:.2f} GB <= {limit:g} GB"
            out.append((label if strict else f"{label} (information)", gb <= limit))
    pairs = [("frozen", "keras-frozen")]
    if keras_ft_full:
        pairs += [("dense", "keras-finetune"), ("sparse", "keras-finetune")]
    for ours, keras in pairs:
        if ours in rows and keras in rows:
            d = 100 * (rows[ours]["accuracy"] - rows[keras]["accuracy"])
            out.append((f"{ours} test accuracy within 1 point of {keras}: {d:+.2f}", abs(d) <= 1))
    if not keras_ft_full:
        out.append(
            (
                "fine-tuned accuracy vs Keras: not measured here (Keras fine-tuning cut to "
                "--max-steps; see parity_train.py, or run with --max-steps 0)",
                None,
            )
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(RSS_LIMIT_GB), default="nnlm128")
    parser.add_argument("--data-dir", type=Path, default=DATA)
    parser.add_argument("--seed", type=int, default=42, help="split and training seed")
    parser.add_argument("--max-steps", type=int, default=30, help="Keras fine-tune steps (0: all)")
    parser.add_argument("--max-epochs", type=int, default=1, help="cap on our dense run")
    parser.add_argument("--runs", default=",".join(RUNS), help=f"subset of {','.join(RUNS)}")
    parser.add_argument("--keep", type=Path, help="work dir to keep (default: a temp dir)")
    args = parser.parse_args(argv)
    runs = args.runs.split(",")
    if unknown := set(runs) - set(RUNS):
        parser.error(f"unknown runs {sorted(unknown)}; choose from {RUNS}")
    if not args.data_dir.is_dir():
        sys.exit(f"no seed-fakenews data at {args.data_dir}; this benchmark needs it")
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_train_"))
    work.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    rows_n, dim, buckets = SIZES[args.size]
    print(f"bench_train --size {args.size}: work dir {work}; {os.cpu_count()} CPUs")
    print(f"load average at start {os.getloadavg()}")
    print(code_state())
    texts, labels = load_seed_data(args.data_dir)
    train_texts = write_split(texts, labels, work / "split", args.seed)
    print(
        f"split (seed {args.seed}): {len(train_texts)} train, {len(texts) - len(train_texts)} test"
    )
    module, artifact = build_module(train_texts, work, dim, rows_n, buckets)
    meta = json.loads((artifact / "meta.json").read_text())
    print(
        f"module: {meta['num_rows']:,} x {meta['dim']} ({meta['vocab_size']:,} tokens + "
        f"{meta['oov_buckets']:,} OOV buckets), SVD vectors of the train texts + filler rows"
    )

    rows: dict[str, dict[str, Any]] = {}
    for name in RUNS:
        if name in runs:
            print(f"running {name} ...", flush=True)
            rows[name] = run_one(name, args, module, artifact, work)
            if name in DIGESTED:
                rows[name]["digest"] = json.loads((work / name / "digest.json").read_text())
            if name.endswith("-ckpt"):
                shutil.rmtree(work / name / "checkpoints", ignore_errors=True)
    print_rows(rows)
    keras_ft_full = "keras-finetune" in rows and not rows["keras-finetune"]["cut_steps"]
    print(f"\nTargets ({args.size} size):")
    checks = targets(rows, args.size, keras_ft_full)
    for label, ok in checks:
        print(f"  {'n/a ' if ok is None else 'PASS' if ok else 'FAIL'}  {label}")
    print(f"\nwall time {time.perf_counter() - began:.0f} s; load average {os.getloadavg()}")
    print(code_state())
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(ok is not False for label, ok in checks if "information" not in label) else 1


if __name__ == "__main__":
    sys.exit(main())
