"""Sequence encoders against the notebook's bag: accuracy on the seed-fakenews slice, speed at size.

    python benchmarks/bench_encoders.py                          # grid + four real sizes
    python benchmarks/bench_encoders.py --seeds 3 --skip-sizes   # the accuracy grid only
    python benchmarks/bench_encoders.py --keep /tmp/enc --sizes nnlm128 --limit-batches 100

Data and module: `parity_train.py`'s (one seeded stratified split of the seed-fakenews files,
test 0.33, validation = the test set as in the notebook; an SVD word-vector module of the train
texts, 14,834 x 128, exported as a TF-Hub SavedModel and converted with
`scripts/convert_tfhub.py`). Every run is `train.py` in its own process, as a user types it
(`parity_train.ours_command`: `data=csv` on the split's files, `embedding.path=ARTIFACT`,
`trainable=...`, `seed=...`, no checkpoints, no progress bar) plus `model.encoder=bag|cnn|bilstm`
and the encoders' default sizes (conf/model/default.yaml: cnn widths 3,4,5 x 100 filters; bilstm
128 hidden, max over time; `data.max_tokens` 256).

Accuracy grid: encoder x {frozen, fine-tuned (`trainable=true`: the default exact row Adam)} x
`--seeds` training seeds (the split stays fixed), default early stopping (val/loss, patience 2),
`max_epochs` from the config unless `--max-epochs` caps it (a run the cap stopped before early
stopping would have is marked CAPPED; with a cap the bag, which is cheap, also runs uncapped
as `bag (no cap)`). Read from each run: metrics.json (test accuracy, F1 per class, epochs),
peak RSS (`os.wait4` ru_maxrss of the process), epoch seconds (`parity_train.EpochTimer`, one
`on_train_epoch_start` to the next, validation included) and train seconds (the epoch's
minibatches alone, `StepTimer` below: validation and the report run on torch's thread count and
swing with the machine's load, the minibatches on `model.step_threads`); a run's figure is the
median of its epochs. The summary gives, per (encoder, mode), the mean and the sample standard
deviation (n - 1) over seeds; the best mean test accuracy is marked.

Speed at the real table sizes (`--sizes`, `bench_embedding.SIZES`; `--skip-sizes` to skip):
the stand-in modules `bench_grid.py` builds (the SVD vectors padded with filler rows to each
TF-Hub module's row count), one epoch (`trainer.max_epochs=1`, seed `--seed`) per encoder,
frozen and fine-tuned: epoch seconds and peak RSS. One epoch is the first, the slowest for
exact fine-tuning (rows join the touched set as new tokens appear). Full epochs by default;
`--limit-batches N` cuts a sequence encoder's epoch to N minibatches
(`trainer.limit_train_batches`; the bag's always runs in full) and scales it to a full one:
measured epoch (its minibatches, the full validation pass, the epoch's hooks) + (full - run) /
run x the run minibatches' seconds (`StepTimer`: each from the previous one's end, fetching
included). Length buckets sort 50 minibatches at a time, so a multiple of 50 covers whole
buckets: short and long texts in their proportions.

Each child has a timeout (`--timeout`); a failed or killed run is a row with its error. `--keep
DIR` keeps modules and runs and reuses a finished run whose command is unchanged. The JSON of
every row goes to `--out`. No targets: exit status 0 whichever encoder wins.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pytorch_lightning import Callback

try:  # run as a script: benchmarks/ is on sys.path
    import parity_train
    from bench_embedding import SIZES
except ModuleNotFoundError:  # imported by train.py for `StepTimer` (cwd: the repository root)
    from benchmarks import parity_train
    from benchmarks.bench_embedding import SIZES

ENCODERS = ("bag", "cnn", "bilstm")
MODES = ("frozen", "fine-tuned")
SUMMARY = (  # key, column, format of a mean (points for fractions)
    ("accuracy", "test accuracy", "{:.4f}"),
    ("f1_Fake", "F1 Fake", "{:.4f}"),
    ("f1_True", "F1 True", "{:.4f}"),
    ("epochs", "epochs", "{:.1f}"),
    ("epoch_s", "epoch s", "{:.1f}"),
    ("train_s", "train s", "{:.1f}"),
    ("peak_rss_mb", "peak RSS MiB", "{:.0f}"),
)


# ---------------------------------------------------------------- timing inside train.py


class StepTimer(Callback):
    """Measurement only: wall seconds of every training minibatch (from the previous one's end,
    or the epoch's start, to its `on_train_batch_end`: fetching included), of every validation
    pass (sanity check left out), the minibatches of a full epoch and of the epochs run, and
    the wall-clock time fit ended; written to `out` (JSON)."""

    def __init__(self, out: str) -> None:
        self.out = Path(out)
        self.record: dict[str, Any] = {"batch_seconds": [], "val_seconds": []}
        self._last = 0.0
        self._val = 0.0

    def _write(self) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps(self.record) + "\n")

    def on_train_start(self, trainer, pl_module) -> None:
        self.record["run_batches"] = trainer.num_training_batches
        try:
            self.record["full_batches"] = len(trainer.train_dataloader)
        except TypeError:  # no length: the parent counts the split's rows instead
            self.record["full_batches"] = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.record["batch_seconds"].append([])
        self._last = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        self.record["batch_seconds"][-1].append(now - self._last)
        self._last = now

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._val = time.perf_counter()

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.record["val_seconds"].append(time.perf_counter() - self._val)

    def on_train_end(self, trainer, pl_module) -> None:
        self.record["fit_end_time"] = time.time()
        if trainer.is_global_zero:
            self._write()


# ---------------------------------------------------------------- one run


def run_train(
    artifact: Path,
    split: Path,
    run_dir: Path,
    encoder: str,
    trainable: bool,
    seed: int,
    extra: list[str],
    timeout: float,
) -> dict[str, Any]:
    """`train.py` with `model.encoder=encoder` in a child process -> its row (reused from
    run_dir/bench.json when the command is the same)."""
    extra = [
        f"model.encoder={encoder}",
        "+callbacks.step_timer._target_=benchmarks.bench_encoders.StepTimer",
        f"+callbacks.step_timer.out={run_dir / 'step_times.json'}",
        *extra,
    ]
    cmd = parity_train.ours_command(artifact, split, run_dir, trainable, seed, extra)
    saved = run_dir / "bench.json"
    if saved.is_file():
        row = json.loads(saved.read_text())
        if row.get("cmd") == cmd[1:] and not row.get("error"):
            row["reused"] = True
            return row
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    log = run_dir.with_suffix(".log")
    run = parity_train.run_child(cmd, log, check=False, timeout=timeout)
    row: dict[str, Any] = {"cmd": cmd[1:], "encoder": encoder, "trainable": trainable}
    row.update(seed=seed, log=str(log), **run)
    try:
        row.update(read_run(run_dir))
    except (OSError, KeyError, ValueError) as exc:  # failed, killed, or an unreadable output
        tail = log.read_text(errors="replace")[-1500:] if log.is_file() else ""
        row["error"] = f"exit {run['rc']}: {type(exc).__name__}: {exc}\n{tail}"
    if run["rc"] != 0 and "error" not in row:
        row["error"] = f"exit {run['rc']}"
    saved.write_text(json.dumps(row, indent=1) + "\n")
    return row


def read_run(run_dir: Path) -> dict[str, Any]:
    """Metrics, epoch and minibatch times of a finished run dir."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    epochs = json.loads((run_dir / "epoch_times.json").read_text())["epoch_seconds"]
    steps = json.loads((run_dir / "step_times.json").read_text())
    stopped_early = metrics["val/best_epoch"] + 2 <= metrics["fit/epochs"]
    after_fit = (run_dir / "run.json").stat().st_mtime - steps["fit_end_time"]
    return {
        "epochs": metrics["fit/epochs"],
        "best_epoch": metrics["val/best_epoch"],
        "stopped_early": stopped_early,
        "accuracy": metrics["test/accuracy"],
        "f1_Fake": metrics["test/f1_0"],
        "f1_True": metrics["test/f1_1"],
        "macro_f1": metrics["test/macro_f1"],
        "epoch_seconds": epochs,
        "epoch_s": statistics.median(epochs),
        "batch_seconds": steps["batch_seconds"],
        "val_seconds": steps["val_seconds"],
        "run_batches": steps["run_batches"],
        "full_batches": steps["full_batches"],
        "after_fit_s": after_fit,  # the report: train and test predicted, tables, plots
        "run_json_wall_s": json.loads((run_dir / "run.json").read_text())["wall_s"],
    }


def step_median_ms(steps: list[float]) -> float:
    """Median minibatch milliseconds; NaN for the bag's fused epochs (one step an epoch)."""
    return 1000 * statistics.median(steps) if len(steps) > 1 else float("nan")


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


# ---------------------------------------------------------------- the accuracy grid


def grid_label(encoder: str, trainable: bool) -> str:
    return f"{encoder} {'fine-tuned' if trainable else 'frozen'}"


def run_grid(args: argparse.Namespace, artifact: Path, work: Path) -> list[dict[str, Any]]:
    """Every (seed, encoder, mode) run of the accuracy grid, printed as it finishes."""
    cap = [] if args.max_epochs is None else [f"trainer.max_epochs={args.max_epochs}"]
    plan = [(e, t, cap, "") for e in args.encoders for t in args.trainable]
    if cap and "bag" in args.encoders:  # cheap: what the cap costs the bag
        plan += [("bag", t, [], " (no cap)") for t in args.trainable]
    rows = []
    print(
        f"\n{'run':<28}{'epochs':>7}{'test acc':>9}{'F1 Fake':>8}{'F1 True':>8}"
        f"{'epoch s':>8}{'step ms':>8}{'val s':>6}{'report s':>9}{'RSS MiB':>8}{'load':>11}"
    )
    for seed in range(args.seed, args.seed + args.seeds):
        for encoder, trainable, extra, suffix in plan:
            tag = f"{encoder}_{'ft' if trainable else 'frozen'}{'_nocap' if suffix else ''}"
            run_dir = work / "grid" / f"{tag}_seed{seed}"
            row = run_train(
                artifact, work / "split", run_dir, encoder, trainable, seed, extra, args.timeout
            )
            row["label"] = grid_label(encoder, trainable) + suffix
            capped = extra and not row.get("error") and not row["stopped_early"]
            row["capped"] = bool(capped and row["epochs"] >= args.max_epochs)
            rows.append(row)
            print_grid_row(row)
    return rows


def print_grid_row(row: dict[str, Any]) -> None:
    label = f"{row['label']} s{row['seed']}"
    if row.get("error"):
        print(f"{label:<28}FAILED: {row['error'].splitlines()[0]}", flush=True)
        return
    step_ms = step_median_ms([s for epoch in row["batch_seconds"] if len(epoch) > 1 for s in epoch])
    val_s = statistics.median(row["val_seconds"]) if row["val_seconds"] else float("nan")
    note = (" CAPPED" if row["capped"] else "") + (" (reused)" if row.get("reused") else "")
    print(
        f"{label:<28}{row['epochs']:>7}{row['accuracy']:>9.4f}{row['f1_Fake']:>8.4f}"
        f"{row['f1_True']:>8.4f}{row['epoch_s']:>8.2f}{step_ms:>8.1f}{val_s:>6.1f}"
        f"{row['after_fit_s']:>9.1f}{row['peak_rss_mb']:>8.0f}"
        f"{row['load'][0]:>5.2f}->{row['load'][1]:<5.2f}{note}",
        flush=True,
    )


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (encoder, mode): mean and sample std over seeds of every SUMMARY key."""
    out = []
    for label in dict.fromkeys(r["label"] for r in rows):
        done = [r for r in rows if r["label"] == label and not r.get("error")]
        entry: dict[str, Any] = {"label": label, "runs": len(done)}
        entry["failed"] = sum(1 for r in rows if r["label"] == label and r.get("error"))
        entry["capped"] = sum(1 for r in done if r.get("capped"))
        for r in done:
            r["train_s"] = statistics.median(sum(epoch) for epoch in r["batch_seconds"])
        for key, _, _ in SUMMARY:
            entry[key] = mean_std([r[key] for r in done]) if done else None
        out.append(entry)
    return out


def print_summary(summary: list[dict[str, Any]]) -> None:
    """A Markdown table: mean ± std per (encoder, mode), the best mean accuracy in bold."""
    scored = [s for s in summary if s["accuracy"] is not None]
    best = max(scored, key=lambda s: s["accuracy"][0])["label"] if scored else None
    head = ["encoder, mode", "runs", *(column for _, column, _ in SUMMARY)]
    print("\n| " + " | ".join(head) + " |\n|" + " --- |" * len(head))
    for s in summary:
        runs = f"{s['runs']}" + (f" ({s['capped']} capped)" if s["capped"] else "")
        runs += f", {s['failed']} failed" if s["failed"] else ""
        cells = [s["label"], runs]
        for key, _, spec in SUMMARY:
            if s[key] is None:
                cells.append("-")
                continue
            mean, std = s[key]
            text = f"{spec.format(mean)} ± {spec.format(std)}"
            cells.append(f"**{text}**" if key == "accuracy" and s["label"] == best else text)
        print("| " + " | ".join(cells) + " |")
    if best:
        print(f"\nbest mean test accuracy: {best}")


# ---------------------------------------------------------------- speed at the real sizes


def build_sizes(train_texts: list[str], work: Path, names: list[str]) -> dict[str, Path]:
    """Per size name: the converted stand-in artifact (built as bench_grid builds them)."""
    out = {}
    for name in names:
        rows, dim, buckets = SIZES[name]
        mdir = work / "sizes" / name
        mdir.mkdir(parents=True, exist_ok=True)
        print(f"module {name}: {rows:,} x {dim} ({buckets:,} OOV buckets)", flush=True)
        _, artifact = parity_train.build_module(train_texts, mdir, dim, rows, buckets)
        meta = json.loads((artifact / "meta.json").read_text())
        assert (meta["num_rows"], meta["dim"]) == (rows, dim), (name, meta)
        out[name] = artifact
    return out


def full_epoch(row: dict[str, Any], train_rows: int, batch_size: int = 32) -> tuple[float, str]:
    """(epoch seconds, how): measured, or scaled from the minibatches run to a full epoch."""
    full = row["full_batches"] or math.ceil(train_rows / batch_size)
    steps = row["batch_seconds"][0]
    measured = row["epoch_seconds"][0]
    if len(steps) >= full:
        return measured, "full epoch"
    scaled = measured + (full - len(steps)) / len(steps) * sum(steps)
    return scaled, f"{len(steps)} of {full} minibatches, scaled"


def run_sizes(
    args: argparse.Namespace, artifacts: dict[str, Path], work: Path, train_rows: int
) -> list[dict[str, Any]]:
    """One epoch per (size, encoder, mode): epoch seconds (scaled when cut) and peak RSS."""
    rows = []
    print(
        f"\n{'size':<9}{'run':<20}{'epoch s':>9}{'step ms':>8}{'val s':>7}{'RSS MiB':>8}"
        f"{'wall s':>7}{'load':>11}  how"
    )
    for name, artifact in artifacts.items():
        for encoder in args.encoders:
            for trainable in args.trainable:
                extra = ["trainer.max_epochs=1"]
                if encoder != "bag" and args.limit_batches:
                    extra.append(f"trainer.limit_train_batches={args.limit_batches}")
                tag = f"{encoder}_{'ft' if trainable else 'frozen'}"
                row = run_train(
                    artifact,
                    work / "split",
                    work / "sizes" / name / "runs" / tag,
                    encoder,
                    trainable,
                    args.seed,
                    extra,
                    args.timeout,
                )
                row.update(size=name, label=grid_label(encoder, trainable))
                rows.append(row)
                label = f"{name:<9}{row['label']:<20}"
                if row.get("error"):
                    print(f"{label}FAILED: {row['error'].splitlines()[0]}", flush=True)
                    continue
                row["full_epoch_s"], row["how"] = full_epoch(row, train_rows)
                step_ms = step_median_ms(row["batch_seconds"][0])
                print(
                    f"{label}{row['full_epoch_s']:>9.1f}{step_ms:>8.1f}"
                    f"{row['val_seconds'][0]:>7.1f}{row['peak_rss_mb']:>8.0f}{row['wall_s']:>7.0f}"
                    f"{row['load'][0]:>5.2f}->{row['load'][1]:<5.2f}  {row['how']}"
                    + (" (reused)" if row.get("reused") else ""),
                    flush=True,
                )
    return rows


def print_speed(rows: list[dict[str, Any]]) -> None:
    """A Markdown table: per size, epoch seconds and peak RSS of each encoder and mode."""
    labels = list(dict.fromkeys(r["label"] for r in rows))
    print("\n| size | " + " | ".join(labels) + " |\n|" + " --- |" * (len(labels) + 1))
    for size in dict.fromkeys(r["size"] for r in rows):
        rows_n, dim, _ = SIZES[size]
        cells = [f"{size} ({rows_n:,} x {dim})"]
        for label in labels:
            row = next((r for r in rows if r["size"] == size and r["label"] == label), None)
            if row is None or row.get("error"):
                cells.append("failed" if row else "-")
                continue
            mark = "*" if "scaled" in row["how"] else ""
            cells.append(f"{row['full_epoch_s']:.1f}{mark} s, {row['peak_rss_mb']:.0f} MiB")
        print("| " + " | ".join(cells) + " |")
    if any("scaled" in r.get("how", "") for r in rows):
        print("(* a full epoch scaled from the minibatches run; see the per-run lines above)")


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=parity_train.DATA)
    parser.add_argument("--dim", type=int, default=128, help="SVD module dimension (the grid)")
    parser.add_argument("--seed", type=int, default=42, help="split seed and first train seed")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds of the grid")
    parser.add_argument("--encoders", default=",".join(ENCODERS), help="comma-separated subset")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset")
    parser.add_argument("--max-epochs", type=int, help="cap on the grid's epochs (default: none)")
    parser.add_argument("--sizes", default=",".join(SIZES), help="real sizes for the speed part")
    parser.add_argument("--skip-sizes", action="store_true", help="no speed part")
    parser.add_argument("--skip-grid", action="store_true", help="no accuracy grid")
    parser.add_argument(
        "--limit-batches",
        type=int,
        default=0,
        help="cut a sequence encoder's speed epoch to N minibatches, scaled (0: full epoch)",
    )
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per child process")
    parser.add_argument("--keep", type=Path, help="work dir to keep and reuse (modules, runs)")
    parser.add_argument("--out", type=Path, help="JSON of every row (default: WORK or /tmp)")
    args = parser.parse_args(argv)
    args.encoders = args.encoders.split(",")
    modes = args.modes.split(",")
    sizes = [] if args.skip_sizes else args.sizes.split(",")
    if unknown := set(args.encoders) - set(ENCODERS):
        parser.error(f"unknown encoders {sorted(unknown)}; choose from {ENCODERS}")
    if unknown := set(modes) - set(MODES):
        parser.error(f"unknown modes {sorted(unknown)}; choose from {MODES}")
    if unknown := set(sizes) - set(SIZES):
        parser.error(f"unknown sizes {sorted(unknown)}; choose from {tuple(SIZES)}")
    args.trainable = [m == "fine-tuned" for m in MODES if m in modes]
    if not args.data_dir.is_dir():
        sys.exit(
            f"no seed-fakenews data at {args.data_dir}: this benchmark needs the six *.csv.gz "
            "files there (../shared/data/seed-fakenews beside the repository, or --data-dir)"
        )
    work = (args.keep or Path(tempfile.mkdtemp(prefix="bench_encoders_"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    out = args.out or (work if args.keep else Path(tempfile.gettempdir())) / "bench_encoders.json"
    began, load_start = time.perf_counter(), os.getloadavg()
    print(f"bench_encoders: work dir {work}; {os.cpu_count()} CPUs; load average {load_start}")
    print(parity_train.code_state(), flush=True)
    texts, labels = parity_train.load_seed_data(args.data_dir)
    train_texts = parity_train.write_split(texts, labels, work / "split", args.seed)
    print(
        f"split (seed {args.seed}): {len(train_texts)} train, {len(texts) - len(train_texts)} test"
    )

    grid_rows: list[dict[str, Any]] = []
    summary: list[dict[str, Any]] = []
    if not args.skip_grid:
        _, artifact = parity_train.build_module(train_texts, work, args.dim, rows=None)
        meta = json.loads((artifact / "meta.json").read_text())
        cap = "config's" if args.max_epochs is None else f"CAPPED at {args.max_epochs}"
        print(
            f"grid: module {meta['num_rows']:,} x {meta['dim']} SVD vectors of the train texts; "
            f"seeds {args.seed}..{args.seed + args.seeds - 1}; max_epochs {cap}",
            flush=True,
        )
        grid_rows = run_grid(args, artifact, work)
        summary = summarise(grid_rows)
        print(
            "\nAccuracy grid: mean ± sample std over seeds; epoch s = a run's median epoch "
            "(validation included), train s = its median epoch's minibatches alone; peak RSS = "
            "os.wait4 ru_maxrss"
        )
        print_summary(summary)

    size_rows: list[dict[str, Any]] = []
    if sizes:
        artifacts = build_sizes(train_texts, work, sizes)
        limit = "full epochs"
        if args.limit_batches:
            limit = f"cnn/bilstm epochs cut to {args.limit_batches} minibatches and scaled"
        print(f"speed at real sizes: one epoch each, seed {args.seed}; {limit}", flush=True)
        size_rows = run_sizes(args, artifacts, work, len(train_texts))
        print_speed(size_rows)

    wall, load_end = time.perf_counter() - began, os.getloadavg()
    print(f"\nwall time {wall:.0f} s; load average at start {load_start}, at end {load_end}")
    print(parity_train.code_state())
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "grid": grid_rows,
        "summary": summary,
        "sizes": size_rows,
        "wall_s": wall,
        "load": [load_start, load_end],
        "code": parity_train.code_state(),
    }
    out.write_text(json.dumps(record, indent=1, default=str) + "\n")
    print(f"rows written to {out}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
