"""Training parity with the original: the notebook's Keras model beside our `train.py`.

    python benchmarks/parity_train.py                    # one seed, frozen + trainable
    python benchmarks/parity_train.py --seeds 3          # mean +- std of the differences
    python benchmarks/parity_train.py --dim 64 --keep /tmp/parity   # keep splits, logs, runs
    python benchmarks/parity_train.py --seeds 5 --optimizers adam,keras_adam  # both arithmetics

On the seed-fakenews files (`../shared/data/seed-fakenews` beside the repository) it makes one
seeded stratified train/test split (test 0.33, labels encoded like sklearn's LabelEncoder:
Fake=0, True=1), writes it as `text,label` CSVs, builds a TF-Hub-format module of SVD word
vectors from the TRAIN texts only (`svd_module.export_svd_module`) and converts it with
`scripts/convert_tfhub.py`. Then, per mode, both models train on the same rows with the
notebook's settings (batch 32, Adam 1e-4, EarlyStopping on the validation loss with patience 2,
validation = the test set, the final weights reported):

* frozen:            `keras_reference.py`  vs  `train.py trainable=false` (cached pooled vectors)
* trainable:         `keras_reference.py --trainable`  vs  `train.py trainable=true` (exact Adam)
* trainable-sparse:  the same Keras run  vs  `model.table_optimizer=lazy` (lazy SparseAdam;
                     not the notebook's optimizer, listed for information)

Each run is its own process; peak RSS is its `os.wait4` ru_maxrss. Per-epoch seconds are wall
time of a whole epoch, its validation pass included, on both sides (Keras: `on_epoch_begin` ->
`on_epoch_end`; ours: `EpochTimer` below, one `on_train_epoch_start` to the next, added to
`train.py` through a Hydra `+callbacks.epoch_timer` override); the table shows their median,
which a burst of load from other work on a shared machine moves less than the mean. Our runs
write no checkpoints (the checkpoint callback null, `trainer.enable_checkpointing=false`) and
show no progress bar: Keras does neither, and `report_on=last` needs no checkpoint.

Targets: test accuracy and per-class F1 within 1 point of Keras in both modes.
With `--seeds N` the training seed varies (split and module stay fixed), and the summary gives
mean +- std (and the standard error of the mean) of each difference next to Keras's own
seed-to-seed spread. `--optimizers adam,keras_adam` trains ours once per Adam arithmetic
(`model.optimizer`: torch's, or tf.keras's op for op) against the same Keras run.
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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytorch_lightning import Callback

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "seed-fakenews"
CLASSES = ("Fake", "True")  # label 0, label 1 (LabelEncoder order)
TOLERANCE = 0.01  # 1 point
ROWS = (
    ("epochs", "epochs run", "{:.0f}"),
    ("accuracy", "test accuracy", "{:.4f}"),
    ("precision_Fake", "precision Fake", "{:.4f}"),
    ("recall_Fake", "recall Fake", "{:.4f}"),
    ("f1_Fake", "F1 Fake", "{:.4f}"),
    ("precision_True", "precision True", "{:.4f}"),
    ("recall_True", "recall True", "{:.4f}"),
    ("f1_True", "F1 True", "{:.4f}"),
    ("macro_f1", "macro F1", "{:.4f}"),
    ("epoch_s", "per-epoch s (median)", "{:.2f}"),
    ("first_epoch_s", "first epoch s", "{:.2f}"),
    ("peak_rss_mb", "peak RSS MiB", "{:.0f}"),
    ("wall_s", "process wall s", "{:.1f}"),
)
CRITERIA = ("accuracy", "f1_Fake", "f1_True")


# ---------------------------------------------------------------- timing inside train.py


class EpochTimer(Callback):
    """Wall seconds of every training epoch, written to `out` (JSON) as training goes.

    An epoch runs from one `on_train_epoch_start` to the next (the last one to `on_train_end`),
    so it holds everything the epoch does: batches, the validation pass, every callback
    (checkpoints included when configured). `setup_seconds` spans the callbacks' `setup` to
    `on_fit_start`: the model's setup, where a frozen embedding pools every row once. Rank 0
    writes; on CUDA it synchronises first and records the peak allocated GPU memory.
    """

    def __init__(self, out: str) -> None:
        self.out = Path(out)
        self.record: dict[str, Any] = {"epoch_seconds": [], "setup_seconds": None}
        self._setup = 0.0
        self._start: float | None = None

    @staticmethod
    def _now() -> float:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        return time.perf_counter()

    def _close_epoch(self, trainer) -> None:
        import torch

        now = self._now()
        if self._start is not None:
            self.record["epoch_seconds"].append(now - self._start)
        self._start = now
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            self.record["gpu_peak_bytes"] = torch.cuda.max_memory_allocated()
        if trainer.is_global_zero:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.out.write_text(json.dumps(self.record) + "\n")

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._setup = self._now()

    def on_fit_start(self, trainer, pl_module) -> None:
        self.record["setup_seconds"] = self._now() - self._setup

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._close_epoch(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self._close_epoch(trainer)


class WeightsDigest(Callback):
    """At the end of fit, the sha256 of every tensor of the model's state (the embedding table
    included), written to `out` (JSON): two runs with equal digests ended with equal weights."""

    def __init__(self, out: str) -> None:
        self.out = Path(out)

    def on_train_end(self, trainer, pl_module) -> None:
        import hashlib

        if not trainer.is_global_zero:
            return
        digests = {
            key: hashlib.sha256(value.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
            for key, value in pl_module.state_dict().items()
        }
        self.out.write_text(json.dumps(digests, indent=1) + "\n")


class CheckpointTimer(Callback):
    """Wall seconds spent in `trainer.save_checkpoint` (what every ModelCheckpoint calls), per
    epoch (1-based keys), written to `out` (JSON) after every save: checkpointing's share of
    the epoch times `EpochTimer` records, without a second run to compare with."""

    def __init__(self, out: str) -> None:
        self.out = Path(out)
        self.record: dict[str, Any] = {"save_seconds": {}, "saves": []}

    def setup(self, trainer, pl_module, stage: str) -> None:
        save = trainer.save_checkpoint

        def timed_save(filepath, *args, **kwargs):
            start = time.perf_counter()
            try:
                return save(filepath, *args, **kwargs)
            finally:
                seconds = time.perf_counter() - start
                epoch = str(trainer.current_epoch + 1)
                per_epoch = self.record["save_seconds"]
                per_epoch[epoch] = per_epoch.get(epoch, 0.0) + seconds
                self.record["saves"].append([epoch, Path(str(filepath)).name, seconds])
                if trainer.is_global_zero:
                    self.out.parent.mkdir(parents=True, exist_ok=True)
                    self.out.write_text(json.dumps(self.record) + "\n")

        trainer.save_checkpoint = timed_save


def code_state() -> str:
    """A fingerprint of the code being measured (the package and its configs change often):
    sha256 over fakenews_pl/**/*.py, conf/**/*.yaml and train.py, and the newest file's time."""
    import hashlib

    files = sorted(
        [*(REPO / "fakenews_pl").rglob("*.py"), *(REPO / "conf").rglob("*.yaml"), REPO / "train.py"]
    )
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.relative_to(REPO).as_posix().encode() + b"\0" + f.read_bytes())
    newest = max(files, key=lambda f: f.stat().st_mtime)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(newest.stat().st_mtime))
    return (
        f"code sha256 {digest.hexdigest()[:12]} over {len(files)} package/conf files "
        f"(newest: {newest.relative_to(REPO)} {stamp})"
    )


# ---------------------------------------------------------------- data and module


def load_seed_data(data_dir: Path) -> tuple[list[str], list[int]]:
    """The notebook's texts (`" ".join(for_glove)`) and LabelEncoder labels of all six files."""
    import numpy as np
    from sklearn.preprocessing import LabelEncoder

    from fakenews_pl.data.corpus import read_labelled_csv

    files = sorted(data_dir.glob("*.csv.gz"))
    if len(files) != 6:
        sys.exit(
            f"expected the six seed-fakenews files (*.csv.gz) in {data_dir}, found {len(files)}; "
            "this benchmark needs ../shared/data/seed-fakenews beside the repository "
            "(or --data-dir)"
        )
    read = [read_labelled_csv(f, "for_glove", "label", notebook=True) for f in files]
    texts = np.concatenate([t for t, _ in read])
    encoder = LabelEncoder().fit(np.concatenate([y for _, y in read]))
    if list(encoder.classes_) != list(CLASSES):
        sys.exit(f"{data_dir}: labels {list(encoder.classes_)}, expected {list(CLASSES)}")
    labels = encoder.transform(np.concatenate([y for _, y in read]))
    return texts.tolist(), labels.tolist()


def write_split(
    texts: Sequence[str], labels: Sequence[int], out: Path, seed: int, test_size: float = 0.33
) -> list[str]:
    """Seeded stratified split into out/{train,val,test}.csv (val = test); the train texts."""
    import pandas as pd
    from sklearn.model_selection import train_test_split

    frame = pd.DataFrame({"text": texts, "label": labels})
    train, test = train_test_split(
        frame, test_size=test_size, stratify=frame["label"], random_state=seed
    )
    out.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", train), ("val", test), ("test", test)):
        part.to_csv(out / f"{name}.csv", index=False)
    return train["text"].tolist()


def build_module(
    train_texts: list[str], work: Path, dim: int, rows: int | None, oov_buckets: int = 1
) -> tuple[Path, Path]:
    """SVD SavedModel from the train texts and its converted artifact: (saved_model, artifact).

    Both are built in child processes, so this process never holds TensorFlow's memory."""
    texts_file = work / "train_texts.json"
    saved, artifact = work / "svd_module", work / "svd_artifact"
    if _built(texts_file, train_texts, artifact, dim, rows):  # a kept work dir (--keep)
        print(f"  reusing {saved} and {artifact}: same train texts and size")
        return saved, artifact
    shutil.rmtree(artifact, ignore_errors=True)
    texts_file.write_text(json.dumps(train_texts))
    code = (
        "import json, sys; from pathlib import Path; "
        f"sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        "from svd_module import export_svd_module; "
        f"export_svd_module(json.loads(Path({str(texts_file)!r}).read_text()), "
        f"Path({str(saved)!r}), {dim}, rows={rows!r}, oov_buckets={oov_buckets})"
    )
    for label, cmd in (
        ("export SVD module", [sys.executable, "-c", code]),
        ("convert", [sys.executable, str(REPO / "scripts" / "convert_tfhub.py"), saved, artifact]),
    ):
        run = run_child([str(c) for c in cmd], work / f"{label.replace(' ', '_')}.log")
        print(f"  {label}: {run['wall_s']:.1f} s, peak RSS {run['peak_rss_mb']:.0f} MiB")
    return saved, artifact


def _built(texts_file: Path, texts: list[str], artifact: Path, dim: int, rows: int | None) -> bool:
    """Whether `artifact` was converted from an SVD module of these texts at this size."""
    meta_file = artifact / "meta.json"
    if not (texts_file.is_file() and meta_file.is_file()):
        return False
    meta = json.loads(meta_file.read_text())
    same_size = meta["dim"] == dim and (rows is None or meta["num_rows"] == rows)
    return same_size and json.loads(texts_file.read_text()) == texts


# ---------------------------------------------------------------- child processes


# Seconds a child may run before it (and its process group) is killed; None: no limit.
# `bench_grid.py` sets it; the other benchmarks leave it None.
CHILD_TIMEOUT_S: float | None = None


def _wait4(proc: subprocess.Popen, timeout: float | None) -> tuple[int, Any]:
    """os.wait4 on `proc`; past `timeout` seconds its process group is killed (SIGKILL)."""
    if timeout is None:
        _, status, usage = os.wait4(proc.pid, 0)
        return status, usage
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            return status, usage
        if time.monotonic() > deadline:
            import signal

            print(f"  timeout: killing {proc.pid} after {timeout:.0f} s", flush=True)
            os.killpg(proc.pid, signal.SIGKILL)
            _, status, usage = os.wait4(proc.pid, 0)
            return status, usage
        time.sleep(0.2)


def run_child(
    cmd: list[str], log: Path, check: bool = True, timeout: float | None = None
) -> dict[str, Any]:
    """Run `cmd` (output to `log`): wall seconds, peak RSS (MB, os.wait4), load before/after.
    `timeout` (default `CHILD_TIMEOUT_S`, None: none) kills it, in its own process group."""
    timeout = CHILD_TIMEOUT_S if timeout is None else timeout
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=timeout is not None,
        )
        status, usage = _wait4(proc, timeout)
    result = {
        "wall_s": time.perf_counter() - start,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "load": (load_before, os.getloadavg()[0]),
        "rc": os.waitstatus_to_exitcode(status),
    }
    if check and result["rc"] != 0:
        tail = log.read_text(errors="replace")[-4000:]
        sys.exit(f"{' '.join(cmd)}\nfailed with exit code {result['rc']}; log {log}:\n{tail}")
    return result


def run_keras(
    module: Path,
    split: Path,
    out: Path,
    trainable: bool,
    seed: int,
    max_steps: int = 0,
    epochs: int = 100,
) -> dict[str, Any]:
    """keras_reference.py in a child process -> one row of the table."""
    cmd = [sys.executable, str(REPO / "benchmarks" / "keras_reference.py")]
    cmd += ["--module", str(module), "--split", str(split), "--out", str(out)]
    cmd += ["--seed", str(seed), "--epochs", str(epochs), "--max-steps", str(max_steps)]
    cmd += ["--trainable"] if trainable else []
    run = run_child(cmd, out.with_suffix(".log"))
    result = json.loads(out.read_text())
    test = result["test"]
    row = {"epochs": result["epochs"], "accuracy": test["accuracy"]}
    for name in CLASSES:
        for key, metric in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
            row[f"{key}_{name}"] = test[name][metric]
    row["macro_f1"] = test["macro avg"]["f1-score"]
    full = result["full_epoch_seconds"]
    row.update(epoch_s=statistics.median(full), first_epoch_s=full[0], raw=result, **run)
    row["cut_steps"] = result["steps_per_epoch_run"] < result["steps_per_full_epoch"]
    return row


def ours_command(
    artifact: Path,
    split: Path,
    run_dir: Path,
    trainable: bool,
    seed: int,
    extra: Sequence[str],
    checkpoints: bool = False,
) -> list[str]:
    """`train.py` on the split's CSVs, validation = test, timing callback, no progress bar;
    no checkpoints unless `checkpoints` (then the default checkpoint callbacks run)."""
    no_checkpoints = [
        "callbacks.model_checkpoint=null",
        "callbacks.last_checkpoint=null",
        "trainer.enable_checkpointing=false",  # else Lightning adds its own ModelCheckpoint
    ]
    return [
        sys.executable,
        str(REPO / "train.py"),
        "data=csv",
        f"data.train_csv={split / 'train.csv'}",
        f"data.test_csv={split / 'test.csv'}",
        "data.val_source=test",
        "data.label_names=[0,1]",
        f"embedding.path={artifact}",
        f"embedding.dim={json.loads((artifact / 'meta.json').read_text())['dim']}",
        f"trainable={str(trainable).lower()}",
        f"seed={seed}",
        "report_on=last",
        f"paths.log_dir={run_dir / 'logs'}",
        f"paths.cache_dir={run_dir.parent / 'cache'}",
        f"hydra.run.dir={run_dir}",
        *([] if checkpoints else no_checkpoints),
        "callbacks.progress=null",
        "trainer.enable_progress_bar=false",
        "+callbacks.epoch_timer._target_=benchmarks.parity_train.EpochTimer",
        f"+callbacks.epoch_timer.out={run_dir / 'epoch_times.json'}",
        *extra,
    ]


def run_ours(
    artifact: Path,
    split: Path,
    run_dir: Path,
    trainable: bool,
    seed: int,
    extra: Sequence[str] = (),
    checkpoints: bool = False,
) -> dict[str, Any]:
    """Our train.py in a child process -> one row of the table (classes named 0 and 1)."""
    cmd = ours_command(artifact, split, run_dir, trainable, seed, extra, checkpoints)
    run_dir.mkdir(parents=True, exist_ok=True)
    run = run_child(cmd, run_dir.with_suffix(".log"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    times = json.loads((run_dir / "epoch_times.json").read_text())
    row = {"epochs": metrics["fit/epochs"], "accuracy": metrics["test/accuracy"]}
    for label, name in enumerate(CLASSES):
        for key in ("precision", "recall", "f1"):
            row[f"{key}_{name}"] = metrics[f"test/{key}_{label}"]
    row["macro_f1"] = metrics["test/macro_f1"]
    seconds = times["epoch_seconds"]
    row.update(epoch_s=statistics.median(seconds), first_epoch_s=seconds[0], raw=times, **run)
    row["setup_s"] = times["setup_seconds"]
    return row


# ---------------------------------------------------------------- tables


def fmt(value: Any, spec: str) -> str:
    return "-" if value is None else spec.format(value)


def print_table(title: str, columns: dict[str, dict[str, Any]], diff: tuple[str, str]) -> None:
    """Rows of ROWS, one column per run, then `diff[1] - diff[0]`."""
    names = list(columns)
    width = max(len(label) for _, label, _ in ROWS) + 4
    cell = max(14, *(len(n) + 2 for n in names))
    print(f"\n{title}")
    print(f"{'':<{width}}" + "".join(f"{n:>{cell}}" for n in names) + f"{'diff':>12}")
    for key, label, spec in ROWS:
        cells = [fmt(columns[n].get(key), spec) for n in names]
        a, b = columns[diff[0]].get(key), columns[diff[1]].get(key)
        delta = "-" if a is None or b is None else fmt(b - a, "{:+" + spec[2:])
        print(f"{label:<{width}}" + "".join(f"{c:>{cell}}" for c in cells) + f"{delta:>12}")
    loads = [f"{columns[n]['load'][0]:.2f}->{columns[n]['load'][1]:.2f}" for n in names]
    print(f"{'load 1-min (start->end)':<{width}}" + "".join(f"{c:>{cell}}" for c in loads))


def verdicts(label: str, keras: dict, ours: dict) -> list[tuple[str, bool]]:
    """PASS/FAIL lines of one mode: |ours - keras| <= 1 point per criterion."""
    out = []
    for key in CRITERIA:
        delta = ours[key] - keras[key]
        ok = abs(delta) <= TOLERANCE
        print(f"  {'PASS' if ok else 'FAIL'}  {label}: {key} diff {delta * 100:+.2f} points")
        out.append((f"{label} {key}", ok))
    return out


def summarise_seeds(results: dict[str, list[tuple[dict, dict]]]) -> list[tuple[str, bool]]:
    """mean +- std of ours - keras over seeds, beside Keras's own seed-to-seed std."""
    n = len(next(iter(results.values())))
    print(f"\nOver {n} seeds, in points (PASS when |mean diff| <= 1; 'noise' when |mean diff| <=")
    print("2 standard errors, i.e. not distinguishable from zero with this many seeds):")
    print(
        f"{'mode / metric':<36}{'mean diff':>10}{'std diff':>10}{'SE':>7}{'2 SE':>8}"
        f"{'keras std':>11}{'ours std':>10}  verdict"
    )
    out = []
    for mode, pairs in results.items():
        for key in (*CRITERIA, "macro_f1"):
            diffs = [100 * (o[key] - k[key]) for k, o in pairs]
            k_std = statistics.stdev(100 * k[key] for k, _ in pairs)
            o_std = statistics.stdev(100 * o[key] for _, o in pairs)
            mean, std = statistics.mean(diffs), statistics.stdev(diffs)
            se2 = 2 * std / len(diffs) ** 0.5
            noise = "noise" if abs(mean) <= se2 else "systematic"
            print(
                f"{mode + ' ' + key:<36}{mean:>+10.2f}{std:>10.2f}{se2 / 2:>7.2f}{se2:>8.2f}"
                f"{k_std:>11.2f}{o_std:>10.2f}  {noise}"
            )
            if key in CRITERIA:
                out.append(
                    (f"{mode} {key} (mean of {len(pairs)} seeds)", abs(mean) <= 100 * TOLERANCE)
                )
    return out


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DATA)
    parser.add_argument("--dim", type=int, default=128, help="SVD module dimension")
    parser.add_argument("--seed", type=int, default=42, help="split seed and first train seed")
    parser.add_argument("--seeds", type=int, default=1, help="training seeds to run")
    parser.add_argument(
        "--modes", default="frozen,trainable,trainable-sparse", help="comma-separated subset"
    )
    parser.add_argument(
        "--optimizers",
        default="adam",
        help="comma-separated model.optimizer values for our runs (adam, keras_adam)",
    )
    parser.add_argument("--keep", type=Path, help="work dir to keep (default: a temp dir)")
    args = parser.parse_args(argv)
    modes, optimizers = args.modes.split(","), args.optimizers.split(",")
    if unknown := set(modes) - {"frozen", "trainable", "trainable-sparse"}:
        parser.error(f"unknown modes {sorted(unknown)}")
    if unknown := set(optimizers) - {"adam", "keras_adam"}:
        parser.error(f"unknown optimizers {sorted(unknown)}")
    # One row per mode and arithmetic; the mode alone when only torch's Adam runs.
    runs = [(m, o, m if optimizers == ["adam"] else f"{m} {o}") for m in modes for o in optimizers]
    if not args.data_dir.is_dir():
        sys.exit(f"no seed-fakenews data at {args.data_dir}; this benchmark needs it")
    work = args.keep or Path(tempfile.mkdtemp(prefix="parity_train_"))
    work.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    print(f"parity_train: work dir {work}; load average {os.getloadavg()}; {os.cpu_count()} CPUs")
    print(code_state())
    texts, labels = load_seed_data(args.data_dir)
    train_texts = write_split(texts, labels, work / "split", args.seed)
    print(
        f"split (seed {args.seed}): {len(train_texts)} train, {len(texts) - len(train_texts)} test"
    )
    saved, artifact = build_module(train_texts, work, args.dim, rows=None)
    meta = json.loads((artifact / "meta.json").read_text())
    print(f"module: {meta['num_rows']:,} x {meta['dim']} SVD vectors of the train texts")

    checks: list[tuple[str, bool]] = []
    per_seed: dict[str, list[tuple[dict, dict]]] = {label: [] for _, _, label in runs}
    for seed in range(args.seed, args.seed + args.seeds):
        keras: dict[bool, dict] = {}
        for mode, optimizer, label in runs:
            trainable = mode != "frozen"
            tag = label.replace(" ", "_") + f"_seed{seed}"
            if trainable not in keras:
                out = work / f"keras_{'trainable' if trainable else 'frozen'}_seed{seed}.json"
                keras[trainable] = run_keras(saved, work / "split", out, trainable, seed)
            extra = ["model.table_optimizer=lazy"] if mode == "trainable-sparse" else []
            extra.append(f"model.optimizer={optimizer}")
            ours = run_ours(artifact, work / "split", work / f"ours_{tag}", trainable, seed, extra)
            print_table(
                f"== {label}, seed {seed}",
                {"keras": keras[trainable], "ours": ours},
                ("keras", "ours"),
            )
            print(
                f"ours setup (model setup -> fit start, pooling cache if frozen): "
                f"{ours['setup_s']:.2f} s"
            )
            if args.seeds == 1:
                checks += verdicts(label, keras[trainable], ours)
            per_seed[label].append((keras[trainable], ours))
    if args.seeds > 1:
        checks = summarise_seeds(per_seed)
    print("\nTargets (test accuracy and per-class F1 within 1 point of Keras):")
    for name, ok in checks:
        info = (
            " (information: lazy SparseAdam, not the notebook's Adam)" if "sparse" in name else ""
        )
        print(f"  {'PASS' if ok else 'FAIL'}  {name}{info}")
    print(f"\nwall time {time.perf_counter() - began:.0f} s; load average {os.getloadavg()}")
    print(code_state())
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(ok for name, ok in checks if "sparse" not in name) else 1


if __name__ == "__main__":
    sys.exit(main())
