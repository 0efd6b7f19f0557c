"""Prediction speed at a real table size: our `Classifier` beside the notebook's Keras model,
in process and behind the same HTTP server.

    python benchmarks/bench_predict.py                             # nnlm128 size
    python benchmarks/bench_predict.py --keep /tmp/bench_predict   # keep (and reuse) the module
    python benchmarks/bench_predict.py --keep /tmp/bench_predict --threads 1

Data: the seed-fakenews texts (the notebook's input, `" ".join(for_glove)`), in one seeded
order. Module: as `bench_train.py` builds it: SVD word vectors of the train texts of
`parity_train.py`'s split, padded with filler rows to the nnlm128 size (973,771 x 128,
`bench_embedding.SIZES`), exported as a TF-Hub SavedModel and converted with
`scripts/convert_tfhub.py` (a few minutes the first time; `--keep DIR` reuses it).

The two models compute the same function: ours is a `Classifier` of the `FakeNewsNet` over
`HubEmbedding.load(artifact)` with the notebook's head (128 -> 256 -> 64 -> 1), seeded (random
biases too, so copying them is checked); the notebook's is `keras_reference.build_model(module, 128,
trainable=False)` with that head's weights copied into its Dense layers (kernel = weight.T).
Before any timing, max |P(True) ours - Keras| over all texts must be <= 1e-4 (expected ~1e-7).

(a) In process, both models in this one process, measured in turn per batch size: throughput
(texts / summed call time) at batch 1, 32 and 1024 of ours `predict_proba` (for up to
`LEAN_TEXTS` texts its lean path), ours through the batch path alone (`_predict_batches`: what
`predict_proba` did for every size before the lean path), Keras
`model.predict(x, batch_size=len(x), verbose=0)` (the notebook's way) and a direct Keras call
`model(tf.constant(x))`; batch 1 is `--calls` single-text calls (default 300), whose per-call
times also give the single-text latency p50/p99; batch 32 is 100 calls and batch 1024 20 calls
of full batches. Every way gets warm-up calls first (graph tracing is not timed).

(b) Server: `fakenews_pl.serving.server.create_app` + `serve` (the same code for both, access
log off, default limits) around ours, and around `KerasPredictor` (the direct
`model(tf.constant(x))` call), each in its own process on 127.0.0.1 (this file's
`--serve-child` mode, port 0), plus ours with `workers=2` (as `serve.py workers=2` runs it),
all three up at once and measured in turn. An httpx async client in this process sends a
fixed number of `POST /predict` requests, one text each (500 at concurrency 1, 2,000 at 16 and
64; after `4 x concurrency` warm-up requests on the same connections): requests/s, latency
p50/p99 (send to parsed response), errors (must be 0), and the CPU seconds per request of the
server's processes and of the client. At concurrency 16 also: ours with `workers=2`, and ours
through the Open Inference Protocol route (`POST /v2/models/<name>/infer`, JSON tensors).
`GET /health` at concurrency 16 on our server (no model) shows what HTTP alone costs here.
Where the machine has 3 or more cores the servers are pinned to all but the last and the
client to the last (`sched_setaffinity`, as `taskset`); on fewer, client and servers share
the cores. After the requests: RSS, PSS and USS (private pages, /proc/PID/smaps_rollup) of our
servers' processes. Threads: in process, torch's and TF's defaults; our servers as `serve.py`
runs them (conf/serve.yaml's `threads`, torch on 1 thread), Keras's with TF's defaults;
`--threads N` sets torch and TF to N everywhere.

Targets (this 2-core machine): ours single-text latency p50 <= 1/10 of Keras's `model(x)`;
ours batch-1024 throughput >= 1.5x the faster Keras way; our `workers=2` server's requests/s
>= 3x the Keras server's at concurrency 16; each extra worker adds <= 150 MB (its USS); every
server stops on SIGTERM with status 0; and, as before, our one-process server's requests/s
>= 3x Keras's at concurrency 16 with p99 <= 50 ms; no request errors. Exit status 1 when one
fails. The load average is printed at the start, around each phase and at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tensorflow_hub's KerasLayer needs Keras 2
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench_embedding import SIZES  # noqa: E402
from parity_train import (  # noqa: E402
    DATA,
    REPO,
    build_module,
    code_state,
    load_seed_data,
    write_split,
)

SIZE = "nnlm128"
CLASS_NAMES = ("Fake", "True")
HIDDEN, DROPOUTS = (256, 64), (0.3, 0.2)
PARITY_TOLERANCE = 1e-4
BATCH_CALLS = {1: 300, 32: 100, 1024: 20}  # timed calls per batch size (batch 1: --calls)
WARMUP_CALLS = {1: 20, 32: 3, 1024: 2}
CONCURRENCY_REQUESTS = {1: 500, 16: 2000, 64: 2000}
LATENCY_RATIO = 1 / 10  # ours single-text p50 <= this x Keras model(x)
BATCH_RATIO = 1.5  # ours batch-1024 texts/s >= this x the faster Keras way
SERVER_RATIO = 3.0  # our server's requests/s >= this x Keras's at concurrency 16
SERVER_P99_MS = 50.0
WORKER_MB = 150.0  # what each extra worker may add (its USS) at the nnlm128 size
WAYS = ("ours", "ours_batch", "keras_predict", "keras_call")
WAY_NAMES = {
    "ours": "ours `predict_proba`",
    "ours_batch": "ours, batch path only",
    "keras_predict": "Keras `model.predict`",
    "keras_call": "Keras `model(x)`",
}


# ---------------------------------------------------------------- the two models


def configure_threads(threads: int | None) -> None:
    """`threads` intra- and inter-op threads for torch and TensorFlow alike (None: defaults).
    Must run before TensorFlow executes anything."""
    if threads is None:
        return
    import tensorflow as tf
    import torch

    torch.set_num_threads(threads)
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def seeded_head(seed: int) -> Any:
    """The notebook's head with Keras's initialisation and, for the copy check, random biases."""
    import torch

    from fakenews_pl.nn.head import DenseHead

    torch.manual_seed(seed)
    head = DenseHead(SIZES[SIZE][1], HIDDEN, DROPOUTS)
    with torch.no_grad():
        for layer in head.linears:
            layer.bias.normal_(0, 0.1)
    return head.eval()


def load_head(path: Path) -> Any:
    """The head saved by the parent (`head.pt`, a state dict)."""
    import torch

    from fakenews_pl.nn.head import DenseHead

    head = DenseHead(SIZES[SIZE][1], HIDDEN, DROPOUTS)
    head.load_state_dict(torch.load(path, weights_only=True))
    return head.eval()


def ours_classifier(artifact: Path, head: Any) -> Any:
    """Our model: the converted table and the head, in evaluation mode."""
    from fakenews_pl.hub.embedding import HubEmbedding
    from fakenews_pl.nn.net import FakeNewsNet, NetConfig
    from fakenews_pl.serving.classifier import Classifier

    embedding = HubEmbedding.load(artifact)
    config = NetConfig(embedding.dim, hidden_sizes=HIDDEN, dropouts=DROPOUTS)
    net = FakeNewsNet.from_config(embedding, config)
    net.head.load_state_dict(head.state_dict())
    return Classifier(net, CLASS_NAMES)


def keras_model(module: Path, head: Any) -> Any:
    """The notebook's model over the SavedModel, its Dense layers holding `head`'s weights."""
    import tf_keras as keras
    from keras_reference import build_model

    model = build_model(str(module), SIZES[SIZE][1], trainable=False)
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    if len(dense) != len(head.linears):
        sys.exit(f"Keras model has {len(dense)} Dense layers, our head {len(head.linears)}")
    for layer, linear in zip(dense, head.linears, strict=True):
        # torch Linear: (out, in) weight; Keras Dense: (in, out) kernel.
        layer.set_weights([linear.weight.detach().numpy().T, linear.bias.detach().numpy()])
    return model


class KerasPredictor:
    """The notebook's Keras model as a `server.create_app` predictor: the direct
    `model(tf.constant(texts))` call, labels by the notebook's `np.rint`."""

    def __init__(self, model: Any, class_names: Sequence[str] = CLASS_NAMES) -> None:
        self.model, self.class_names = model, list(class_names)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """(N, 2) float32 probabilities, columns in `class_names` order."""
        import tensorflow as tf

        p = self.model(tf.constant(list(texts), dtype=tf.string)).numpy()[:, 0]
        return np.stack([1 - p, p], axis=1)

    def labels(self, probabilities: np.ndarray) -> list[str]:
        """Class 1 when its probability is above 0.5."""
        return [self.class_names[int(p > 0.5)] for p in probabilities[:, 1]]


def ways(clf: Any, model: Any) -> dict[str, Callable[[list[str]], Any]]:
    """The three in-process ways to get probabilities of a batch of texts."""
    import tensorflow as tf

    return {
        "ours": clf.predict_proba,
        # What predict_proba did for every size before its lean path for a few texts.
        "ours_batch": lambda x: clf._predict_batches(list(x), 1024),
        "keras_predict": lambda x: model.predict(
            np.asarray(x, dtype=object), batch_size=len(x), verbose=0
        ),
        "keras_call": lambda x: model(tf.constant(x, dtype=tf.string)).numpy(),
    }


def parity(clf: Any, model: Any, texts: list[str]) -> float:
    """max |P(True) ours - Keras| over `texts` (batches of 1024); exits when over tolerance."""
    ours = clf.predict_proba(texts)[:, 1]
    keras = model.predict(np.asarray(texts, dtype=object), batch_size=1024, verbose=0)[:, 0]
    diff = float(np.max(np.abs(ours.astype(np.float64) - keras)))
    if not diff <= PARITY_TOLERANCE:
        sys.exit(
            f"ours and Keras differ by {diff:.3g} (> {PARITY_TOLERANCE:g}) on the same head: "
            "the two models do not compute the same function, so timing them means nothing"
        )
    return diff


# ---------------------------------------------------------------- (a) in process


def timed_calls(fn: Callable[[list[str]], Any], batches: Sequence[list[str]]) -> list[float]:
    """Seconds of each `fn(batch)` call."""
    seconds = []
    for batch in batches:
        start = time.perf_counter()
        fn(batch)
        seconds.append(time.perf_counter() - start)
    return seconds


def batches_of(pool: list[str], size: int, calls: int, start: int = 0) -> list[list[str]]:
    """`calls` batches of `size` consecutive texts of `pool` from `start`, wrapping around."""
    n = len(pool)
    return [[pool[(start + i * size + j) % n] for j in range(size)] for i in range(calls)]


def in_process(
    fns: dict[str, Callable], pool: list[str], calls: dict[int, int]
) -> dict[int, dict[str, dict[str, float]]]:
    """Per batch size and way: texts/s and per-call p50/p99 ms, after warm-up calls. The ways
    run in turn on the same batches; warm-up batches come from the other end of the pool."""
    out: dict[int, dict[str, dict[str, float]]] = {}
    for size, count in calls.items():
        batches = batches_of(pool, size, count)
        warmup = batches_of(pool, size, WARMUP_CALLS[size], start=len(pool) - 1 - size)
        out[size] = {}
        for way, fn in fns.items():
            timed_calls(fn, warmup)
            load = os.getloadavg()[0]
            seconds = timed_calls(fn, batches)
            out[size][way] = summarise(seconds, size * count) | {"load": load}
            print(
                f"  batch {size:>4} {way:<14} {out[size][way]['per_s']:>10,.0f} texts/s   "
                f"p50 {out[size][way]['p50_ms']:.3f} ms  p99 {out[size][way]['p99_ms']:.3f} ms"
                f"  (load {load:.2f})",
                flush=True,
            )
    return out


def summarise(seconds: Sequence[float], items: int) -> dict[str, float]:
    """Items per second over the summed times, and p50/p99 of the times in ms."""
    ms = np.asarray(seconds) * 1000
    return {
        "per_s": items / float(np.sum(seconds)),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(np.mean(ms)),
        "count": len(seconds),
    }


def ours_breakdown(clf: Any, batches: Sequence[list[str]]) -> dict[str, float]:
    """Median µs per call of our prediction's parts over `batches`: the tokenizer (texts ->
    ids, offsets) and the model (pooling + head), called as `predict_proba` calls them: the
    lean path (`encode_few`, `lean_probabilities`) for up to `LEAN_TEXTS` texts, else
    `encode` and the network's forward, on the classifier's threads."""
    import torch

    from fakenews_pl import threads
    from fakenews_pl.serving.classifier import LEAN_TEXTS

    tokenize, model = [], []
    tokenizer = clf.embedding.tokenizer
    with torch.no_grad():
        for batch in batches:
            lean = len(batch) <= LEAN_TEXTS
            start = time.perf_counter()
            ids, offsets = tokenizer.encode_few(batch) if lean else tokenizer.encode(batch)
            mid = time.perf_counter()
            with threads.intra_op(clf.threads):
                if lean:
                    clf.net.lean_probabilities(ids, offsets).numpy()
                else:
                    clf.net.probabilities(torch.from_numpy(ids), torch.from_numpy(offsets))
            end = time.perf_counter()
            tokenize.append(mid - start)
            model.append(end - mid)
    return {
        "tokenize_us": 1e6 * statistics.median(tokenize),
        "model_us": 1e6 * statistics.median(model),
    }


def breakdown_line(parts: dict[int, dict[str, float]]) -> str:
    """`ours_breakdown` per batch size, as one line."""
    return "ours, median per call: " + "; ".join(
        f"batch {size:,}: tokenizer {p['tokenize_us']:,.0f} µs, pooling + head "
        f"{p['model_us']:,.0f} µs"
        for size, p in parts.items()
    )


# ---------------------------------------------------------------- (b) the servers


def serve_yaml_threads() -> int | None:
    """torch's threads as `serve.py` sets them by default (`threads` in conf/serve.yaml; None
    when the config has no such key)."""
    import yaml

    return yaml.safe_load((REPO / "conf" / "serve.yaml").read_text()).get("threads")


def serve_child(kind: str, setup_file: Path) -> None:
    """`--serve-child`: load one model and serve it on 127.0.0.1, a free port, until SIGTERM.
    `fakenews_pl.serving.server.serve` prints the line with the port. Threads: `--threads` for both;
    without it, ours as `serve.py` runs it (conf/serve.yaml's `threads`), Keras TF's own.
    `ours_w2`: ours with `workers=2`, as `serve.py workers=2` runs it (the metrics directory
    set before the server module is imported; this process loads on one thread, then forks)."""
    setup = json.loads(setup_file.read_text())
    workers = 2 if kind == "ours_w2" else 1
    if workers > 1:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="bench_metrics_")
        import torch

        torch.set_num_threads(1)
    else:
        configure_threads(setup["threads"])
    if kind == "ours" and setup["threads"] is None and serve_yaml_threads() is not None:
        import torch

        torch.set_num_threads(serve_yaml_threads())
    head = load_head(Path(setup["head"]))
    if kind.startswith("ours"):
        predictor = ours_classifier(Path(setup["artifact"]), head)
        # The workers' forward passes: `--threads`, else serve.yaml's `threads`.
        predictor.threads = setup["threads"] or serve_yaml_threads()
        predictor.embedding.tokenizer.encode(["warm up"])  # as serve.py does before serving
    else:
        predictor = KerasPredictor(keras_model(Path(setup["module"]), head))
    from fakenews_pl.serving import server

    app = server.create_app(predictor, model_name=f"bench_predict_{kind}", access_log=False)
    server.serve(app, "127.0.0.1", 0, workers=workers, log_level="warning")


class ServerProcess:
    """One `--serve-child` process: its port once /health answers; SIGTERM on `stop`."""

    def __init__(
        self,
        kind: str,
        setup_file: Path,
        log: Path,
        timeout: float = 300,
        cores: set[int] | None = None,
    ) -> None:
        self.kind, self.log = kind, log
        cmd = [sys.executable, __file__, "--serve-child", kind, "--setup", str(setup_file)]
        pin = (lambda: os.sched_setaffinity(0, cores)) if cores else None
        with open(log, "w") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, preexec_fn=pin)
        self.port = self._wait_for_port(timeout)
        self._wait_for_health(timeout)

    def _wait_for_port(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(
                r" on http://127\.0\.0\.1:(\d+)", self.log.read_text(errors="replace")
            )
            if found:
                return int(found.group(1))
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        self.stop()
        tail = self.log.read_text(errors="replace")[-3000:]
        sys.exit(
            f"the {self.kind} server did not start (exit {self.proc.returncode}); "
            f"{self.log}:\n{tail}"
        )

    def _wait_for_health(self, timeout: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        sys.exit(f"the {self.kind} server on {self.url} never answered /health; see {self.log}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        """The server process and its worker processes (live children)."""
        pid = self.proc.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return [pid, *map(int, children)]

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the server process and its workers so far
        (/proc/PID/stat)."""
        total = 0
        for pid in self.pids():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def memory_mb(self) -> list[dict[str, float]]:
        """Per process (the server, then each worker): RSS, PSS (shared pages split between
        the processes mapping them) and USS (its private pages: what its exit would free), MB,
        from /proc/PID/smaps_rollup."""
        out = []
        for pid in self.pids():
            kb = {}
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
                key, value = line.split(":", 1)
                kb[key] = int(value.split()[0])
            uss = kb["Private_Clean"] + kb["Private_Dirty"]
            out.append({"pid": pid, "rss": kb["Rss"] / 1024, "pss": kb["Pss"] / 1024,
                        "uss": uss / 1024})  # fmt: skip
        return out

    def stop(self) -> int | None:
        """SIGTERM, then wait (SIGKILL after 30 s); the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


async def _load(
    url: str,
    method: str,
    path: str,
    bodies: Sequence[bytes],
    n: int,
    concurrency: int,
    server_cpu: Callable[[], float],
) -> dict[str, Any]:
    """`n` requests from `concurrency` workers on one connection pool (after `4 x concurrency`
    warm-up requests): wall seconds, per-request latencies, errors, and the CPU seconds of
    this process and of the server (`server_cpu()`) over the timed requests."""
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:

        async def one(i: int) -> tuple[float, str | None]:
            """One request: (seconds, None or what went wrong)."""
            start = time.perf_counter()
            try:
                if method == "GET":
                    response = await client.get(path)
                    ok = response.status_code == 200 and response.json()["status"] == "ok"
                else:
                    response = await client.post(
                        path, content=bodies[i % len(bodies)], headers=headers
                    )
                    answer = response.json() if response.status_code == 200 else {}
                    if "outputs" in answer:  # the v2 infer route: probabilities and label
                        ok = [t["shape"] for t in answer["outputs"]] == [[1, 2], [1]]
                    else:
                        ok = len(answer.get("predictions", ())) == 1
                error = None if ok else f"HTTP {response.status_code}: {response.text[:80]}"
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                error = type(exc).__name__ + (f": {str(exc)[:80]}" if str(exc) else "")
            return time.perf_counter() - start, error

        async def run(count: int, offset: int) -> tuple[list[float], Counter[str]]:
            todo = iter(range(offset, offset + count))
            latencies: list[float] = []
            errors: Counter[str] = Counter()

            async def worker() -> None:
                for i in todo:  # one shared iterator: exactly `count` requests in all
                    seconds, error = await one(i)
                    latencies.append(seconds)
                    if error:
                        errors[error] += 1

            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return latencies, errors

        _, warm_errors = await run(4 * concurrency, n)
        cpu, served = time.process_time(), server_cpu()
        start = time.perf_counter()
        latencies, errors = await run(n, 0)
        wall = time.perf_counter() - start
        return {
            "wall_s": wall,
            "latencies": latencies,
            "errors": dict(warm_errors + errors),  # warm-up requests count too
            "client_cpu_s": time.process_time() - cpu,
            "server_cpu_s": server_cpu() - served,
        }


def load_test(
    server: ServerProcess,
    bodies: Sequence[bytes],
    n: int,
    concurrency: int,
    method: str = "POST",
    path: str = "/predict",
) -> dict[str, Any]:
    """One bounded load test of `server`: requests/s, p50/p99 ms, errors, CPU per request."""
    load = os.getloadavg()[0]
    result = asyncio.run(
        _load(server.url, method, path, bodies, n, concurrency, server.cpu_seconds)
    )
    ms = np.asarray(result["latencies"]) * 1000
    return {
        "requests": n,
        "concurrency": concurrency,
        "per_s": n / result["wall_s"],
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "errors": sum(result["errors"].values()),
        "error_kinds": result["errors"],
        "server_cpu_ms": 1000 * result["server_cpu_s"] / n,
        "client_cpu_ms": 1000 * result["client_cpu_s"] / n,
        "wall_s": result["wall_s"],
        "load": load,
    }


def cores_apart() -> tuple[set[int] | None, set[int] | None]:
    """(server cores, client cores): the client on the last core, the servers on the others,
    where there are at least 3; (None, None) on fewer: nothing is pinned."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cores) < 3:
        return None, None
    return set(cores[:-1]), {cores[-1]}


def servers(
    setup_file: Path, work: Path, texts: list[str], requests: dict[int, int]
) -> dict[str, Any]:
    """The three servers up at once (ours, ours with workers=2, Keras); per concurrency ours
    then Keras; at concurrency 16 ours with workers=2 and ours's v2 infer route; /health on
    ours; then each server's memory."""
    from fakenews_pl.serving.server import LIMITS

    # The served limit on text length (a few seed-fakenews texts are longer): skipped here.
    fit = [t for t in texts if len(t) <= LIMITS["max_text_chars"]]
    bodies = [json.dumps({"texts": [t]}).encode() for t in fit]
    v2_bodies = [
        json.dumps(
            {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [t]}]}
        ).encode()
        for t in fit
    ]
    server_cores, client_cores = cores_apart()
    out: dict[str, Any] = {"skipped_texts": len(texts) - len(fit), "runs": {}, "memory": {}}
    out["pinned"] = (
        f"servers on cores {sorted(server_cores)}, the client on {sorted(client_cores)}"
        if server_cores
        else f"not pinned: {len(os.sched_getaffinity(0))} cores, fewer than 3"
    )
    print(f"  {out['pinned']}", flush=True)
    started: dict[str, ServerProcess] = {}
    before = os.sched_getaffinity(0)
    try:
        if client_cores:
            os.sched_setaffinity(0, client_cores)
        for kind in ("ours", "ours_w2", "keras"):
            begin = time.perf_counter()
            started[kind] = ServerProcess(
                kind, setup_file, work / f"server_{kind}.log", cores=server_cores
            )
            print(
                f"  {kind} server up on {started[kind].url} in {time.perf_counter() - begin:.1f} s",
                flush=True,
            )

        def measure(key: str, server: ServerProcess, *args: Any, **kwargs: Any) -> dict:
            row = load_test(server, *args, **kwargs)
            print(
                f"  {key:<14} {row['per_s']:>7,.0f} req/s  "
                f"p50 {row['p50_ms']:.2f} ms  p99 {row['p99_ms']:.2f} ms  "
                f"errors {row['errors']}  server CPU {row['server_cpu_ms']:.2f} ms/req  "
                f"client CPU {row['client_cpu_ms']:.2f} ms/req  (load {row['load']:.2f})",
                flush=True,
            )
            if row["error_kinds"]:
                print(f"    errors: {row['error_kinds']}", flush=True)
            return row

        for concurrency, n in requests.items():
            for kind in ("ours", "keras"):
                key = f"{kind}_{concurrency}"
                out["runs"][key] = measure(key, started[kind], bodies, n, concurrency)
        n16 = requests.get(16, 2000)
        out["runs"]["ours_w2_16"] = measure("ours_w2_16", started["ours_w2"], bodies, n16, 16)
        infer = "/v2/models/bench_predict_ours/infer"
        out["runs"]["ours_v2_16"] = measure(
            "ours_v2_16", started["ours"], v2_bodies, n16, 16, path=infer
        )
        out["health_16"] = measure(
            "ours /health 16", started["ours"], [], n16, 16, method="GET", path="/health"
        )
        for kind in ("ours", "ours_w2"):
            out["memory"][kind] = started[kind].memory_mb()
            print(f"  {kind} memory (MB): " + "; ".join(
                f"pid {m['pid']} RSS {m['rss']:,.0f} PSS {m['pss']:,.0f} USS {m['uss']:,.0f}"
                for m in out["memory"][kind]
            ), flush=True)  # fmt: skip
    finally:
        os.sched_setaffinity(0, before)
        for kind, server in started.items():
            out[f"{kind}_exit"] = server.stop()
    return out


# ---------------------------------------------------------------- tables and targets


def in_process_table(rows: dict[int, dict[str, dict[str, float]]]) -> list[str]:
    """Markdown: texts/s per batch size and single-text latency, one column per way."""
    lines = [
        "| in process | " + " | ".join(WAY_NAMES[w] for w in WAYS) + " | ours / faster Keras |",
        "| --- | " + " | ".join("---:" for _ in WAYS) + " | ---: |",
    ]
    for size, row in rows.items():
        best = max(row["keras_predict"]["per_s"], row["keras_call"]["per_s"])
        cells = " | ".join(f"{row[w]['per_s']:,.0f}" for w in WAYS)
        lines.append(f"| batch {size:,}: texts/s | {cells} | {row['ours']['per_s'] / best:.2f}x |")
    single = rows[1]
    for stat in ("p50_ms", "p99_ms"):
        best = min(single["keras_predict"][stat], single["keras_call"][stat])
        cells = " | ".join(f"{single[w][stat]:.3f}" for w in WAYS)
        label = f"single text {stat[:3]} ms"
        lines.append(f"| {label} | {cells} | 1/{best / single['ours'][stat]:.1f} |")
    return lines


def server_table(result: dict[str, Any], requests: dict[int, int]) -> list[str]:
    """Markdown: one line per concurrency, ours beside Keras."""
    lines = [
        "| concurrency | requests | ours req/s | Keras req/s | ours / Keras | ours p50 / p99 ms "
        "| Keras p50 / p99 ms | errors ours / Keras | server CPU ms/req ours / Keras "
        "| client CPU ms/req |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for concurrency, n in requests.items():
        o, k = result["runs"][f"ours_{concurrency}"], result["runs"][f"keras_{concurrency}"]
        lines.append(
            f"| {concurrency} | {n:,} | {o['per_s']:,.0f} | {k['per_s']:,.0f} | "
            f"{o['per_s'] / k['per_s']:.2f}x | {o['p50_ms']:.2f} / {o['p99_ms']:.2f} | "
            f"{k['p50_ms']:.2f} / {k['p99_ms']:.2f} | {o['errors']} / {k['errors']} | "
            f"{o['server_cpu_ms']:.2f} / {k['server_cpu_ms']:.2f} | "
            f"{o['client_cpu_ms']:.2f} / {k['client_cpu_ms']:.2f} |"
        )
    k = result["runs"].get("keras_16")
    for key, label in (("ours_w2_16", "16, `workers=2`"), ("ours_v2_16", "16, v2 infer route")):
        if key not in result["runs"] or k is None:
            continue
        o = result["runs"][key]
        lines.append(
            f"| {label} | {o['requests']:,} | {o['per_s']:,.0f} | {k['per_s']:,.0f} | "
            f"{o['per_s'] / k['per_s']:.2f}x | {o['p50_ms']:.2f} / {o['p99_ms']:.2f} | "
            f"{k['p50_ms']:.2f} / {k['p99_ms']:.2f} | {o['errors']} / {k['errors']} | "
            f"{o['server_cpu_ms']:.2f} / {k['server_cpu_ms']:.2f} | "
            f"{o['client_cpu_ms']:.2f} / {k['client_cpu_ms']:.2f} |"
        )
    h = result["health_16"]
    lines.append(
        f"| 16, `GET /health` (no model) | {h['requests']:,} | {h['per_s']:,.0f} | | | "
        f"{h['p50_ms']:.2f} / {h['p99_ms']:.2f} | | {h['errors']} | {h['server_cpu_ms']:.2f} | "
        f"{h['client_cpu_ms']:.2f} |"
    )
    return lines


def memory_table(result: dict[str, Any]) -> list[str]:
    """Markdown: RSS, PSS and USS of each server process after its requests."""
    lines = ["| server process | RSS MB | PSS MB | USS MB |", "| --- | ---: | ---: | ---: |"]
    names = {"ours": "ours, one process", "ours_w2": "ours `workers=2`"}
    for kind, processes in result["memory"].items():
        for i, m in enumerate(processes):
            role = "" if kind == "ours" else (": the arbiter" if i == 0 else f": worker {i}")
            lines.append(
                f"| {names[kind]}{role} | {m['rss']:,.0f} | {m['pss']:,.0f} | {m['uss']:,.0f} |"
            )
    return lines


def targets(rows: dict[int, dict], served: dict[str, Any], requests: dict[int, int]) -> list:
    """(description, PASS/FAIL) per target."""
    out = []
    ours, call = rows[1]["ours"]["p50_ms"], rows[1]["keras_call"]["p50_ms"]
    out.append(
        (
            f"single-text latency p50 <= 1/10 of Keras model(x): {ours:.3f} ms / {call:.3f} ms "
            f"= 1/{call / ours:.1f}",
            ours <= LATENCY_RATIO * call,
        )
    )
    big = max(rows)
    k_best = max(rows[big]["keras_predict"]["per_s"], rows[big]["keras_call"]["per_s"])
    ratio = rows[big]["ours"]["per_s"] / k_best
    vs_predict = rows[big]["ours"]["per_s"] / rows[big]["keras_predict"]["per_s"]
    out.append(
        (
            f"batch-{big} throughput >= {BATCH_RATIO}x the faster Keras way: "
            f"{rows[big]['ours']['per_s']:,.0f} / {k_best:,.0f} texts/s = {ratio:.2f}x "
            f"(vs model.predict: {vs_predict:.2f}x)",
            ratio >= BATCH_RATIO,
        )
    )

    def rate(key: str, label: str) -> tuple[str, bool]:
        o, k = served["runs"][key], served["runs"]["keras_16"]
        ratio = o["per_s"] / k["per_s"]
        return (
            f"{label} requests/s >= {SERVER_RATIO:g}x Keras's at concurrency 16: "
            f"{o['per_s']:,.0f} / {k['per_s']:,.0f} = {ratio:.2f}x",
            ratio >= SERVER_RATIO,
        )

    if "ours_w2_16" in served["runs"]:
        out.append(rate("ours_w2_16", f"workers=2 server ({served['pinned']})"))
    if served.get("memory", {}).get("ours_w2"):
        extra = max(m["uss"] for m in served["memory"]["ours_w2"][1:])
        out.append(
            (
                f"each extra worker adds <= {WORKER_MB:g} MB (its USS, private pages): "
                f"at most {extra:,.0f} MB",
                extra <= WORKER_MB,
            )
        )
    stopped = {k: v for k, v in served.items() if k.endswith("_exit")}
    out.append((f"every server stops on SIGTERM with status 0: {stopped}",
                all(v == 0 for v in stopped.values())))  # fmt: skip
    if 16 in requests:
        out.append(rate("ours_16", "one-process server"))
        p99 = served["runs"]["ours_16"]["p99_ms"]
        out.append(
            (
                f"our server's p99 <= {SERVER_P99_MS:g} ms at concurrency 16: {p99:.2f} ms",
                p99 <= SERVER_P99_MS,
            )
        )
    errors = {
        kind: sum(run["errors"] for key, run in served["runs"].items() if key.startswith(kind))
        for kind in ("ours", "keras")
    }
    errors["ours"] += served["health_16"]["errors"]
    kinds = sorted({e for run in served["runs"].values() for e in run["error_kinds"]})
    out.append(
        (
            f"no request errors: ours {errors['ours']}, Keras {errors['keras']}"
            + (f" ({'; '.join(kinds)})" if kinds else ""),
            not any(errors.values()),
        )
    )
    return out


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DATA)
    parser.add_argument("--seed", type=int, default=42, help="split, head and text order")
    parser.add_argument("--keep", type=Path, help="work dir to keep and reuse (the module)")
    parser.add_argument("--calls", type=int, default=BATCH_CALLS[1], help="single-text calls")
    parser.add_argument("--threads", type=int, help="torch and TF threads (default: theirs)")
    parser.add_argument("--scale", type=float, default=1.0, help="x call and request counts")
    parser.add_argument("--out", type=Path, help="write the results JSON here")
    parser.add_argument(
        "--serve-child", choices=("ours", "ours_w2", "keras"), help=argparse.SUPPRESS
    )
    parser.add_argument("--setup", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_child:
        serve_child(args.serve_child, args.setup)
        return 0
    if not args.data_dir.is_dir():
        sys.exit(f"no seed-fakenews data at {args.data_dir}; this benchmark needs it")
    calls = {**BATCH_CALLS, 1: args.calls}
    calls = {size: max(1, round(n * args.scale)) for size, n in calls.items()}
    requests = {c: max(1, round(n * args.scale)) for c, n in CONCURRENCY_REQUESTS.items()}
    work = (args.keep or Path(tempfile.mkdtemp(prefix="bench_predict_"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    loads = {"start": os.getloadavg()}
    print(f"bench_predict --size {SIZE}: work dir {work}; {os.cpu_count()} CPUs")
    print(f"load average at start {loads['start']}")
    print(code_state(), flush=True)

    texts, labels = load_seed_data(args.data_dir)
    rows_n, dim, buckets = SIZES[SIZE]
    train_texts = write_split(texts, labels, work / "split", args.seed)
    saved, artifact = build_module(train_texts, work, dim, rows_n, buckets)
    pool = [texts[i] for i in np.random.default_rng(args.seed).permutation(len(texts))]

    import tensorflow as tf
    import torch

    configure_threads(args.threads)
    threads = (
        f"torch {torch.get_num_threads()} threads, TF intra/inter "
        f"{tf.config.threading.get_intra_op_parallelism_threads()}/"
        f"{tf.config.threading.get_inter_op_parallelism_threads()} (0: TF's default, the cores); "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )
    print(threads)
    head = seeded_head(args.seed)
    torch.save(head.state_dict(), work / "head.pt")
    clf = ours_classifier(artifact, head)
    model = keras_model(saved, head)
    meta = clf.embedding.meta
    print(f"module: {meta['num_rows']:,} x {meta['dim']}, {len(texts):,} seed-fakenews texts")
    diff = parity(clf, model, texts)
    print(f"max |P(True) ours - Keras| over {len(texts):,} texts: {diff:.2e}", flush=True)

    loads["a_start"] = os.getloadavg()
    print(f"\n(a) in process (load {loads['a_start'][0]:.2f}):", flush=True)
    rows = in_process(ways(clf, model), pool, calls)
    parts = {size: ours_breakdown(clf, batches_of(pool, size, calls[size])) for size in (1, 1024)}
    print(f"  {breakdown_line(parts)}")
    del clf, model  # the servers load their own
    loads["b_start"] = os.getloadavg()
    setup_file = work / "serve_setup.json"
    setup = {"artifact": str(artifact), "module": str(saved), "head": str(work / "head.pt")}
    setup_file.write_text(json.dumps(setup | {"threads": args.threads}))
    server_threads = (
        f"servers: {threads}"
        if args.threads is not None
        else f"servers: ours torch {serve_yaml_threads() or 'default'} thread(s) as serve.py "
        "(conf/serve.yaml threads), Keras TF's default"
    )
    print(f"\n(b) servers (load {loads['b_start'][0]:.2f}); {server_threads};")
    print("  the client and both servers share the cores")
    served = servers(setup_file, work, pool, requests)
    loads["end"] = os.getloadavg()

    print(f"\nPrediction speed, {SIZE} size ({rows_n:,} x {dim}); in process: {threads}")
    print(server_threads)
    print(
        "\n".join(
            ["", *in_process_table(rows), "", *server_table(served, requests), "",
             *memory_table(served)]
        )
    )  # fmt: skip
    print(
        f"\n{breakdown_line(parts)}; {served['skipped_texts']} texts over the "
        "server's max_text_chars left out of the requests"
    )
    print("\nTargets:")
    checks = targets(rows, served, requests)
    for label, ok in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {label}")
    print(
        "\nload average (1, 5, 15 min): "
        + "; ".join(f"{k} {v[0]:.2f} {v[1]:.2f} {v[2]:.2f}" for k, v in loads.items())
    )
    print(f"wall time {time.perf_counter() - began:.0f} s")
    print(code_state())
    if args.out:
        result = {
            "size": SIZE,
            "threads": threads,
            "server_threads": server_threads,
            "parity_max_abs_diff": diff,
            "in_process": rows,
            "ours_breakdown": parts,
            "server": served,
            "checks": checks,
            "loads": loads,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
        args.out.write_text(json.dumps(result, indent=1, default=str) + "\n")
        print(f"wrote {args.out}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
