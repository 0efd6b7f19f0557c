"""Single-text latency of `Classifier.predict_proba`: the batch path beside the lean path.

    python benchmarks/bench_predict.py --keep /tmp/bench_predict   # once: builds the module
    python benchmarks/bench_single_text.py                          # p50/p99, profile
    python benchmarks/bench_single_text.py --sizes 1,4,16,64        # the lean cut-off

Model: `bench_predict.py`'s (its converted nnlm128-size artifact, 973,771 x 128, from
`--artifact`; the notebook's head, seeded as there), on the Classifier's default of one
intra-op thread. Texts: the seed-fakenews texts in `bench_predict.py`'s seeded order.

Each of `--calls` texts is scored by both paths in turn (which goes first alternates), after
warm-up calls: the batch path (`Classifier._predict_batches`: Arrow tokenizer, numpy pooling
plan, the network's forward, torch.cat and np.stack) and `predict_proba`, which takes the lean
path (`Classifier._predict_few`) for up to `LEAN_TEXTS` texts; their outputs must be equal bit
for bit. Then the lean path's parts, median µs per call: tokenizer (`encode_few`), pooling
(`HubEmbedding.pool_lists`), head (`DenseHead.eval_logits` and the sigmoid) and the glue (the
rest of `predict_proba`: thread count, no_grad, the (N, 2) array). `--sizes` times both paths
on batches of those sizes, of all texts and of texts of 200+ tokens (where the plain-Python
tokenizer is slowest), which is how `LEAN_TEXTS` was chosen. The load average is printed at
the start and the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from bench_predict import ours_classifier, seeded_head
from parity_train import DATA, load_seed_data

ARTIFACT = Path("/tmp/bench_predict/svd_artifact")
WARMUP = 20
LONG_TOKENS = 200  # --sizes also times texts of at least this many tokens


def load_line(label: str) -> str:
    """The load average, labelled."""
    one, five, fifteen = os.getloadavg()
    return f"load average {label}: {one:.2f} {five:.2f} {fifteen:.2f}"


def p50_p99(seconds: list[float]) -> str:
    """p50 and p99 of per-call times, in ms."""
    ms = np.asarray(seconds) * 1000
    return f"p50 {np.percentile(ms, 50):.3f} ms, p99 {np.percentile(ms, 99):.3f} ms"


def side_by_side(clf: Any, texts: list[str]) -> dict[str, list[float]]:
    """Seconds per single-text call of each path, in turn; checks the outputs' bits."""
    paths: dict[str, Callable[[list[str]], np.ndarray]] = {
        "batch": lambda batch: clf._predict_batches(batch, 1024),
        "lean": clf.predict_proba,
    }
    for text in texts[-WARMUP:]:
        for fn in paths.values():
            fn([text])
    seconds: dict[str, list[float]] = {name: [] for name in paths}
    for i, text in enumerate(texts):
        order = list(paths) if i % 2 == 0 else list(paths)[::-1]
        out = {}
        for name in order:
            start = time.perf_counter()
            out[name] = paths[name]([text])
            seconds[name].append(time.perf_counter() - start)
        if not np.array_equal(out["lean"].view(np.uint32), out["batch"].view(np.uint32)):
            sys.exit(f"the lean path differs from the batch path on {text!r}")
    return seconds


def lean_profile(clf: Any, texts: list[str]) -> dict[str, float]:
    """Median µs per call of the lean path's parts, called as `_predict_few` calls them."""
    import torch

    from fakenews_pl import threads

    net, tokenizer = clf.net, clf.embedding.tokenizer
    parts: dict[str, list[float]] = {"tokenizer": [], "pooling": [], "head": [], "total": []}
    for text in texts[-WARMUP:] + texts:
        t0 = time.perf_counter()
        ids, offsets = tokenizer.encode_few([text])
        t1 = time.perf_counter()
        with threads.intra_op(clf.threads), torch.no_grad():
            features = net.embedding.pool_lists(ids, offsets)
            t2 = time.perf_counter()
            torch.sigmoid(net.head.eval_logits(features.to(net.head[0].weight.dtype))).float()
            t3 = time.perf_counter()
        clf.predict_proba([text])
        t4 = time.perf_counter()
        for name, seconds in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            parts[name].append(seconds)
    median = {name: 1e6 * statistics.median(s[WARMUP:]) for name, s in parts.items()}
    median["glue"] = median["total"] - median["tokenizer"] - median["pooling"] - median["head"]
    return median


def by_size(clf: Any, pool: list[str], sizes: list[int], calls: int) -> list[str]:
    """p50 per call of both paths on `calls` batches of each size, all texts and long ones."""
    ids, offsets = clf.embedding.tokenizer.encode(pool)
    lengths = np.diff(np.append(offsets, len(ids)))
    long = [t for t, n in zip(pool, lengths, strict=True) if n >= LONG_TOKENS]
    lines = ["| texts | tokens | batch path p50 ms | lean path p50 ms |", "|---|---|---|---|"]
    print("\n".join(lines))
    for kind, texts in (("all", pool), (f">= {LONG_TOKENS}", long)):
        for size in sizes:
            starts = [(i * size) % len(texts) for i in range(calls)]
            batches = [texts[s : s + size] for s in starts if s + size <= len(texts)]
            p50 = {}
            for name, fn in (("batch", lambda b: clf._predict_batches(b, 1024)),
                             ("lean", clf._predict_few)):  # fmt: skip
                for batch in batches[:3]:
                    fn(batch)
                seconds = []
                for batch in batches:
                    start = time.perf_counter()
                    fn(batch)
                    seconds.append(time.perf_counter() - start)
                p50[name] = 1000 * statistics.median(seconds)
            lines.append(f"| {size} | {kind} | {p50['batch']:.3f} | {p50['lean']:.3f} |")
            print(lines[-1], flush=True)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", type=Path, default=ARTIFACT)
    parser.add_argument("--data-dir", type=Path, default=DATA)
    parser.add_argument("--seed", type=int, default=42, help="head and text order")
    parser.add_argument("--calls", type=int, default=300, help="single-text calls per path")
    parser.add_argument("--sizes", help="comma-separated batch sizes to time both paths at")
    args = parser.parse_args(argv)
    if not (args.artifact / "meta.json").is_file():
        sys.exit(
            f"no artifact at {args.artifact}: run "
            "`python benchmarks/bench_predict.py --keep /tmp/bench_predict` first"
        )
    print(load_line("at start"), flush=True)
    import torch

    from fakenews_pl.serving.classifier import LEAN_TEXTS

    texts, _ = load_seed_data(args.data_dir)
    pool = [texts[i] for i in np.random.default_rng(args.seed).permutation(len(texts))]
    clf = ours_classifier(args.artifact, seeded_head(args.seed))
    meta = clf.embedding.meta
    print(
        f"table {meta['num_rows']:,} x {meta['dim']}; Classifier threads {clf.threads}, torch "
        f"{torch.get_num_threads()} threads outside; LEAN_TEXTS {LEAN_TEXTS}; "
        f"{os.cpu_count()} CPUs"
    )
    single = pool[: args.calls]
    seconds = side_by_side(clf, single)
    print(f"\nsingle text, {args.calls} calls each, outputs equal bit for bit:")
    for name, s in seconds.items():
        print(f"  {name} path: {p50_p99(s)}")
    ratio = np.median(seconds["batch"]) / np.median(seconds["lean"])
    print(f"  p50 batch / lean: {ratio:.1f}x")
    parts = lean_profile(clf, single)
    print(
        "lean path, median µs per call: "
        + ", ".join(f"{name} {us:.0f}" for name, us in parts.items())
    )
    if args.sizes:
        print()
        by_size(clf, pool, [int(s) for s in args.sizes.split(",")], 100)
    print("\n" + load_line("at end"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
