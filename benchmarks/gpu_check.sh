#!/usr/bin/env bash
# Our training figures on a GPU machine, in one short run (under 8 minutes on one GPU).
#
#   bash benchmarks/gpu_check.sh                       # nnlm128-size table, 32-true + 16-mixed
#   bash benchmarks/gpu_check.sh --precision bf16-mixed --epochs 3
#   bash benchmarks/gpu_check.sh --size wiki250 --no-ddp
#   bash benchmarks/gpu_check.sh --dry-run             # prepare data + table, print the plan
#   OUT=/some/dir bash benchmarks/gpu_check.sh         # also write gpu_check.{md,json} there
#
# Runs `train.py` (frozen / trainable exact / dense / sparse) with `trainer=gpu` at full
# precision and at the mixed precision given, and, when `nvidia-smi -L` lists more than one GPU,
# the same runs with `trainer=ddp` (all GPUs; NCCL, except sparse: gloo, the only backend with a
# sparse all-reduce, see conf/trainer/ddp.yaml). Each run trains at most --epochs epochs (plus
# Lightning's `max_time` guard) on the seed-fakenews split of benchmarks/parity_train.py, or, where
# ../shared/data/seed-fakenews is missing, on synthetic headlines of the same row count (the table
# says which). The table is SVD word vectors of the train texts padded to the real module's rows,
# written straight into our artifact format (svd_module.write_svd_artifact: no TensorFlow needed).
# Per run: epochs, median epoch seconds (EpochTimer: one on_train_epoch_start to the next, the
# validation pass included), first epoch, peak host RSS (os.wait4: the largest process, so one
# rank under DDP), peak GPU memory of rank 0 (torch.cuda.max_memory_allocated), test accuracy,
# process wall time. No checkpoints are written (as in bench_train.py).
#
# --dry-run needs no GPU: it parses the arguments, counts GPUs (--gpus N pretends N), prepares
# split and artifact (--size small for a quick one), and prints every command it would run.
# --cpu runs the same plan with trainer=cpu / trainer=ddp_cpu (bf16-mixed as the mixed precision)
# to test the whole script on a machine without GPUs. The machine's load and `nvidia-smi`
# summary are recorded beside the figures.
set -euo pipefail

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

SIZE=nnlm128
PRECISION=16-mixed
EPOCHS=2
BUDGET=420        # seconds: stop starting new runs after this
RUN_LIMIT=00:00:01:30  # Lightning max_time per run (DD:HH:MM:SS)
DRY_RUN=0
DDP=1
CPU=0
GPUS=""
WORK=""
DATA_DIR=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --size) SIZE="$2"; shift 2 ;;
    --precision) PRECISION="$2"; shift 2 ;;
    --epochs) EPOCHS="$2"; shift 2 ;;
    --budget) BUDGET="$2"; shift 2 ;;
    --work) WORK="$2"; shift 2 ;;
    --data-dir) DATA_DIR="$2"; shift 2 ;;
    --no-ddp) DDP=0; shift ;;
    --cpu) CPU=1; shift ;;
    --gpus) GPUS="$2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$SIZE" in nnlm128|wiki250|small) ;; *)
  echo "gpu_check.sh: --size must be nnlm128, wiki250 or small, got $SIZE" >&2; exit 2 ;; esac
case "$PRECISION" in none|16-mixed|bf16-mixed|32-true) ;; *)
  echo "gpu_check.sh: --precision must be 16-mixed, bf16-mixed, 32-true or none" >&2; exit 2 ;;
esac
[[ "$EPOCHS" =~ ^[1-9][0-9]*$ ]] || { echo "gpu_check.sh: --epochs must be >= 1" >&2; exit 2; }
[[ "$BUDGET" =~ ^[1-9][0-9]*$ ]] || { echo "gpu_check.sh: --budget must be seconds" >&2; exit 2; }

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
NGPU=0
if command -v nvidia-smi >/dev/null 2>&1; then
  NGPU=$(nvidia-smi -L 2>/dev/null | wc -l || echo 0)
fi
if [[ -n "$GPUS" ]]; then
  [[ "$GPUS" =~ ^[0-9]+$ ]] || { echo "gpu_check.sh: --gpus must be a count" >&2; exit 2; }
  NGPU=$GPUS
fi
if [[ $CPU -eq 1 && "$PRECISION" == 16-mixed ]]; then
  PRECISION=bf16-mixed  # Lightning's CPU mixed precision is bf16 only
fi
if [[ $DRY_RUN -eq 0 && $CPU -eq 0 && $NGPU -lt 1 ]]; then
  echo "gpu_check.sh: no GPU found (nvidia-smi -L lists none); use --dry-run to test the rest" >&2
  exit 1
fi
WORK="${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")}"
mkdir -p "$WORK"

export GPU_CHECK_SIZE="$SIZE" GPU_CHECK_PRECISION="$PRECISION" GPU_CHECK_EPOCHS="$EPOCHS"
export GPU_CHECK_BUDGET="$BUDGET" GPU_CHECK_RUN_LIMIT="$RUN_LIMIT" GPU_CHECK_DRY_RUN="$DRY_RUN"
export GPU_CHECK_DDP="$DDP" GPU_CHECK_NGPU="$NGPU" GPU_CHECK_WORK="$WORK" GPU_CHECK_CPU="$CPU"
export GPU_CHECK_DATA_DIR="$DATA_DIR" GPU_CHECK_OUT="${OUT:-}"
# benchmarks/ on the path for parity_train and svd_module (scripts, not package modules).
PYTHONPATH="$REPO/benchmarks${PYTHONPATH:+:$PYTHONPATH}" python - <<'PY'
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import parity_train as pt
from bench_embedding import SIZES

env = {k[len("GPU_CHECK_"):].lower(): v for k, v in os.environ.items() if k.startswith("GPU_CHECK_")}
work, dry, ngpu = Path(env["work"]), env["dry_run"] == "1", int(env["ngpu"])
began = time.perf_counter()
print(f"gpu_check: size {env['size']}, {ngpu} device(s), epochs <= {env['epochs']}, work {work}")
print(f"load average {os.getloadavg()}; {os.cpu_count()} CPUs; {pt.code_state()}")
cpu = env["cpu"] == "1"
single, multi = ("cpu", "ddp_cpu") if cpu else ("gpu", "ddp")
if shutil.which("nvidia-smi"):
    smi = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
        capture_output=True, text=True,
    ).stdout.strip()
    print(f"nvidia-smi: {smi}")

# ---- data: the parity split of the seed files, or synthetic headlines of the same size
data_dir = Path(env["data_dir"]) if env["data_dir"] else pt.DATA
if data_dir.is_dir() and len(list(data_dir.glob("*.csv.gz"))) == 6:
    texts, labels = pt.load_seed_data(data_dir)
    data_note = f"seed-fakenews ({data_dir})"
else:
    from fakenews_pl.data.demo import make_headlines

    frame = make_headlines(21_141, 42)
    texts = frame["text"].tolist()
    labels = (frame["label"] == "True").astype(int).tolist()
    data_note = f"SYNTHETIC headlines (no seed-fakenews at {data_dir})"
split = work / "split"
train_texts = pt.write_split(texts, labels, split, 42)
print(f"data: {data_note}: {len(train_texts)} train, {len(texts) - len(train_texts)} test")

# ---- table: SVD vectors padded to the real module's rows, written without TensorFlow
from svd_module import write_svd_artifact

rows, dim, buckets = SIZES[env["size"]] if env["size"] != "small" else (None, 64, 1)
artifact = work / f"artifact_{env['size']}"
if not (artifact / "meta.json").is_file():
    start = time.perf_counter()
    write_svd_artifact(train_texts, artifact, dim, rows=rows, oov_buckets=buckets)
    print(f"artifact written in {time.perf_counter() - start:.1f} s")
meta = json.loads((artifact / "meta.json").read_text())
print(f"table: {meta['num_rows']:,} x {meta['dim']} at {artifact}")

# ---- the plan: (name, trainable, overrides)
modes = [
    ("frozen", False, []),
    ("exact", True, []),  # TouchedRowAdam (sparse gradients; dense ones under NCCL DDP)
    ("dense", True, ["model.table_optimizer=dense"]),
    ("sparse", True, ["model.table_optimizer=lazy"]),
]
precisions = ["32-true"] + ([env["precision"]] if env["precision"] not in ("none", "32-true") else [])
common = [f"trainer.max_epochs={env['epochs']}", f"+trainer.max_time={env['run_limit']}"]
plan = []
for precision in precisions:
    for mode, trainable, extra in modes:
        plan.append((f"{single} {mode} {precision}", trainable,
                     [f"trainer={single}", f"trainer.precision={precision}", *extra, *common]))
if env["ddp"] == "1" and ngpu > 1:
    for mode, trainable, extra in modes:
        # Sparse gradients need gloo (check_strategy refuses NCCL for them).
        backend = ["trainer.strategy.process_group_backend=gloo"] if mode == "sparse" else []
        devices = [f"trainer.devices={ngpu}"]  # ddp.yaml says -1 (all); name the count
        plan.append((f"{multi}x{ngpu} {mode} 32-true", trainable,
                     [f"trainer={multi}", *devices, *backend, *extra, *common]))

rows_out = []
for name, trainable, extra in plan:
    run_dir = work / name.replace(" ", "_")
    cmd = pt.ours_command(artifact, split, run_dir, trainable, 42, extra)
    if dry:
        print("would run:", " ".join(cmd))
        continue
    if time.perf_counter() - began > float(env["budget"]):
        print(f"skipped {name}: over the {env['budget']} s budget")
        rows_out.append({"run": name, "note": "skipped (time budget)"})
        continue
    print(f"running {name} ...", flush=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    run = pt.run_child(cmd, run_dir.with_suffix(".log"), check=False)
    row = {"run": name, "peak_rss_mb": run["peak_rss_mb"], "wall_s": run["wall_s"],
           "load": run["load"], "rc": run["rc"], "note": ""}
    try:
        times = json.loads((run_dir / "epoch_times.json").read_text())
        metrics = json.loads((run_dir / "metrics.json").read_text())
        seconds = times["epoch_seconds"]
        row.update(epochs=len(seconds), epoch_s=statistics.median(seconds),
                   first_epoch_s=seconds[0], accuracy=metrics["test/accuracy"])
        if "gpu_peak_bytes" in times:
            row["gpu_peak_mb"] = times["gpu_peak_bytes"] / 2**20
    except (OSError, KeyError, ValueError, statistics.StatisticsError) as e:
        tail = run_dir.with_suffix(".log").read_text(errors="replace")[-1500:]
        row["note"] = f"FAILED rc={run['rc']} ({type(e).__name__})"
        print(f"{name} failed (rc {run['rc']}); log tail:\n{tail}")
    rows_out.append(row)

if dry:
    print(f"dry run: {len(plan)} runs planned, nothing trained")
    sys.exit(0)

cols = [("epochs", "{:.0f}"), ("epoch_s", "{:.2f}"), ("first_epoch_s", "{:.2f}"),
        ("peak_rss_mb", "{:.0f}"), ("gpu_peak_mb", "{:.0f}"), ("accuracy", "{:.4f}"),
        ("wall_s", "{:.0f}")]
header = "| run | " + " | ".join(c for c, _ in cols) + " | load 1-min | note |"
lines = [header, "|---" * (len(cols) + 3) + "|"]
for row in rows_out:
    cells = [spec.format(row[c]) if c in row else "-" for c, spec in cols]
    load = f"{row['load'][0]:.2f}->{row['load'][1]:.2f}" if "load" in row else "-"
    lines.append(f"| {row['run']} | " + " | ".join(cells) + f" | {load} | {row['note']} |")
table = "\n".join(lines)
summary = (f"gpu_check: {data_note}; table {meta['num_rows']:,} x {meta['dim']}; "
           f"{ngpu} device(s){' (CPU test mode)' if cpu else ''}; epochs <= {env['epochs']}; "
           f"wall {time.perf_counter() - began:.0f} s; load average {os.getloadavg()}; "
           f"{pt.code_state()}")
print("\n" + summary + "\n" + table)
if env["out"]:
    out = Path(env["out"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.md").write_text(summary + "\n\n" + table + "\n")
    (out / "gpu_check.json").write_text(json.dumps({"summary": summary, "rows": rows_out}, indent=2))
    print(f"wrote {out / 'gpu_check.md'} and gpu_check.json")
PY
