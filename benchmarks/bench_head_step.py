"""One frozen epoch of the dense head three ways, in one process: where its time goes.

    python benchmarks/bench_head_step.py [--rows 14164] [--dim 128] [--epochs 5] [--no-compile]

A frozen epoch trains the head alone on cached (N, D) pooled vectors, 32 rows at a time
(443 minibatches for the seed-fakenews training split). Timed, alternately, per epoch:

* autograd     `head(x)`, BCE-with-logits, `loss.backward()`, `Adam.step()`, `zero_grad()`
* hand         `HeadStep` + `AdamStep`, what `FakeNewsClassifier` runs on one device
* compiled     the autograd step under `torch.compile` (the first epoch, which compiles, timed
               apart; dropout's chunked mask draws break the graph); skipped with --no-compile

Prints the median epoch seconds of each and the compile time. Synthetic vectors and labels:
speed does not depend on their values.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

import torch
import torch.nn.functional as F

from fakenews_pl.nn.head import DenseHead
from fakenews_pl.nn.optim import stepper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=14164)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    torch._logging.set_logs(dynamo=logging.ERROR)  # graph-break notes (the mask draws)
    torch.manual_seed(0)
    x = torch.randn(args.rows, args.dim)
    y = (torch.rand(args.rows) > 0.5).float()

    def fresh() -> tuple[DenseHead, torch.optim.Adam]:
        head = DenseHead(args.dim, (256, 64), (0.3, 0.2))
        return head, torch.optim.Adam(head.parameters(), lr=1e-4, eps=1e-7, fused=True)

    def autograd_step(head, optimizer, xb, yb):
        loss = F.binary_cross_entropy_with_logits(head(xb), yb)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    def make_epoch(kind: str):
        head, optimizer = fresh()
        step = torch.compile(autograd_step) if kind == "compiled" else autograd_step

        def epoch() -> None:
            order = torch.randperm(args.rows)
            head.masks.reset()
            if kind == "hand":
                head_step, adam = head.stepper(), None
                for xb, yb in zip(x[order].split(32), y[order].split(32), strict=True):
                    head_step(xb, yb)
                    if adam is None:
                        optimizer.step()
                        adam = stepper(optimizer)
                    else:
                        adam()
                return
            for xb, yb in zip(x[order].split(32), y[order].split(32), strict=True):
                step(head, optimizer, xb, yb)

        return epoch

    kinds = ["autograd", "hand"] + ([] if args.no_compile else ["compiled"])
    epochs = {kind: make_epoch(kind) for kind in kinds}
    if "compiled" in epochs:
        began = time.perf_counter()
        epochs["compiled"]()  # compiles on its first minibatches
        print(f"torch.compile: first epoch (compiling) {time.perf_counter() - began:.1f} s")
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    for _ in range(args.epochs):
        for kind in kinds:  # alternately: load from other work hits all three alike
            began = time.perf_counter()
            epochs[kind]()
            times[kind].append(time.perf_counter() - began)
    minibatches = -(-args.rows // 32)
    print(f"{args.rows} rows x {args.dim}, {minibatches} minibatches of 32, {args.epochs} epochs")
    for kind in kinds:
        median = statistics.median(times[kind])
        print(f"  {kind:9s} {median:.3f} s/epoch  ({median / minibatches * 1e6:.0f} us/minibatch)")


if __name__ == "__main__":
    main()
