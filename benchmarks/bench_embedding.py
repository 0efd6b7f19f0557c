"""Conversion cost and embedding speed at the real TF-Hub table sizes, beside TensorFlow.

    python benchmarks/bench_embedding.py                      # all four sizes
    python benchmarks/bench_embedding.py --sizes nnlm128 --repeats 5

For each size it builds a TF-Hub-format module (the v2 exporter's recipe, random weights, the
seed-fakenews vocabulary padded with synthetic tokens to the real row count), converts it with
`scripts/convert_tfhub.py` in a fresh process (verification included) and records wall time and
peak RSS; then, in one process, it embeds the seed-fakenews texts (the notebook's input:
`" ".join(for_glove)`) with TensorFlow (`hub.load`) and with `HubEmbedding.embed_texts` at
batch 32 and 1024, best of `--repeats`, checks the two agree, and times our tokenizer alone
(`tokenizer.encode`: text to ids and offsets, the part TensorFlow does in its own graph).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "seed-fakenews"
# name -> (rows, dim, oov_buckets). Rows and dims are the published modules'; the bucket split
# is an assumption that changes nothing measurable.
SIZES = {
    "gnews20": (20_001, 20, 1),
    "nnlm50": (963_812, 50, 1),
    "nnlm128": (973_771, 128, 1),
    "wiki250": (1_009_375, 250, 9_375),
}


def seed_texts(data_dir: Path) -> list[str]:
    from fakenews_pl.data.corpus import read_labelled_csv

    files = sorted(data_dir.glob("*.csv.gz"))
    if not files:
        sys.exit(f"no seed-fakenews files in {data_dir}")
    return [t for f in files for t in read_labelled_csv(f, "for_glove", "label", notebook=True)[0]]


def build_module(name: str, texts: list[str], out: Path) -> None:
    """Export a module of the real size (run in a child process to keep TF memory apart)."""
    from fakenews_pl.hub.hub_module import export_text_embedding

    rows, dim, buckets = SIZES[name]
    words = list(dict.fromkeys(w for t in texts for w in t.split(" ") if w))
    vocab = words[: rows - buckets]
    vocab += [f"tok{i:07d}" for i in range(rows - buckets - len(vocab))]
    table = np.random.default_rng(0).standard_normal((rows, dim), dtype=np.float32)
    export_text_embedding(out, vocab, table, oov_buckets=buckets)


def timed_child(args: list[str]) -> tuple[float, float]:
    """Run a child process; its wall time (s) and peak RSS (bytes)."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(args)} failed:\n{proc.stderr.read().decode()[-3000:]}")
    return elapsed, usage.ru_maxrss * 1024


def throughput(
    module_dir: Path, artifact_dir: Path, texts: list[str], batch: int, repeats: int
) -> tuple[float, float, float]:
    """Sentences/s of TensorFlow and of ours over all texts, and their largest difference."""
    import tensorflow as tf
    import tensorflow_hub as hub

    from fakenews_pl.hub.embedding import HubEmbedding

    tf_module, ours = hub.load(str(module_dir)), HubEmbedding.load(artifact_dir)
    batches = [texts[i : i + batch] for i in range(0, len(texts), batch)]
    worst = max(
        float(np.abs(tf_module(tf.constant(b)).numpy() - ours.embed_texts(b).numpy()).max())
        for b in batches[:20]
    )

    def best(fn) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            for b in batches:
                fn(b)
            times.append(time.perf_counter() - start)
        return len(texts) / min(times)

    tf_rate = best(lambda b: tf_module(tf.constant(b)).numpy())
    our_rate = best(lambda b: ours.embed_texts(b).numpy())
    tokenize_rate = best(ours.tokenizer.encode)
    return tf_rate, our_rate, tokenize_rate, worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", default=",".join(SIZES), help="comma-separated of " + ",".join(SIZES)
    )
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--_build", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    texts = seed_texts(args.data)
    if args._build:
        build_module(args._build[0], texts, Path(args._build[1]))
        return
    print(f"{len(texts):,} seed-fakenews texts; torch threads: 2 cores machine")
    header = (
        f"{'size':8} {'table':>16} {'convert s':>9} {'peak RSS':>9} {'RSS/table':>9} "
        f"{'batch':>5} {'TF sent/s':>10} {'ours sent/s':>11} {'ours/TF':>7} {'max|diff|':>9}"
    )
    rows = []
    for name in args.sizes.split(","):
        n_rows, dim, _ = SIZES[name]
        table_bytes = n_rows * dim * 4
        with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
            module, out = Path(tmp) / "module", Path(tmp) / "artifact"
            timed_child(
                [sys.executable, __file__, "--data", str(args.data), "--_build", name, str(module)]
            )
            seconds, rss = timed_child(
                [sys.executable, str(REPO / "scripts" / "convert_tfhub.py"), str(module), str(out)]
            )
            for batch in (32, 1024):
                tf_rate, our_rate, tok_rate, worst = throughput(
                    module, out, texts, batch, args.repeats
                )
                rows.append(
                    f"{name:8} {f'{n_rows:,} x {dim}':>16} {seconds:9.1f} {rss / 2**30:8.2f}G "
                    f"{rss / table_bytes:9.2f} {batch:5d} {tf_rate:10,.0f} {our_rate:11,.0f} "
                    f"{our_rate / tf_rate:7.2f} {tok_rate:10,.0f} {worst:9.1e}"
                )
                print(rows[-1] if len(rows) > 1 else header + "\n" + rows[-1], flush=True)
    print("\n" + header + "\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
