"""serve.py and fakenews_pl/serving/server.py, for real: a server process on 127.0.0.1, an
HTTP client (httpx, or a raw socket where httpx cannot send the request), a bounded number of
requests."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from servers import Server, free_port, serving

from fakenews_pl import Classifier

REPO = Path(__file__).resolve().parents[1]
# Small limits, so that each one is reached with a small request.
LIMITS = {
    "max_texts": 8,
    "max_text_chars": 1000,
    "max_body_bytes": 16384,
    "explain_top": 5,
    "max_explain_work": 20000,
}


def serve_args(ckpt: Path, port: int, log_dir: Path, *overrides: str) -> list[str]:
    limits = [f"{key}={value}" for key, value in LIMITS.items()]
    return ["serve.py", f"ckpt_path={ckpt}", f"port={port}", f"paths.log_dir={log_dir}"] + [
        *limits,
        *overrides,
    ]


@pytest.fixture(scope="module")
def run(trained_run: dict, tmp_path_factory) -> dict:
    """The session's tiny demo run: its checkpoint and test texts; `out` for the server's
    files."""
    texts = trained_run["datamodule"].texts("test")[:6].tolist()
    return {"ckpt": trained_run["ckpt"], "texts": texts, "out": tmp_path_factory.mktemp("serve")}


@pytest.fixture(scope="module")
def server(run: dict) -> Iterator[Server]:
    """`python serve.py` on the tiny run's checkpoint, started once for the module."""
    port = free_port()
    args = serve_args(run["ckpt"], port, run["out"] / "logs")
    with serving(args, run["out"] / "serve.log", port) as started:
        yield started


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http


@pytest.fixture(scope="module")
def reference(run: dict) -> Classifier:
    """The same checkpoint loaded here, for the answers the server must give."""
    return Classifier.load(run["ckpt"])


@contextmanager
def one_thread() -> Iterator[None]:
    """The server runs torch on one thread (conf/serve.yaml: threads=1); MKL's products of
    some row counts round the last bit otherwise on two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------------ answers


def test_predict_gives_the_classifiers_probabilities_and_labels_in_order(
    client: httpx.Client, run: dict, reference: Classifier
) -> None:
    texts = [*run["texts"], "", "Ça va? 東京 🙂"]  # 8 = max_texts
    response = client.post("/predict", json={"texts": texts})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == len(texts)
    with one_thread():
        expected = reference.predict_proba(texts)
    served = np.array(
        [[p["probabilities"][name] for name in reference.class_names] for p in predictions],
        dtype=np.float32,
    )
    assert np.array_equal(served, expected)  # float32-exact, in input order
    assert [p["label"] for p in predictions] == reference.labels(expected)
    assert all("explanation" not in p for p in predictions)
    # Reversed input, reversed answer: order is the input's, not the model's or a cache's.
    again = client.post("/predict", json={"texts": texts[::-1], "explain": False}).json()
    assert again["predictions"] == predictions[::-1]


def test_explanations_are_the_classifiers(
    client: httpx.Client, run: dict, reference: Classifier
) -> None:
    # The last: the demo's tokens the model cannot tell apart (OOV buckets, equal vectors).
    texts = [*run["texts"][:3], "Miley Cyrus secretly married get in the senate"]
    response = client.post("/predict", json={"texts": texts, "explain": True})
    assert response.status_code == 200, response.text
    with one_thread():
        expected = reference.explain(texts, top=LIMITS["explain_top"])
    alike_seen = 0
    for prediction, tokens in zip(response.json()["predictions"], expected, strict=True):
        served = prediction["explanation"]
        assert [t["token"] for t in served] == [token for token, _ in tokens]
        assert [np.float32(t["effect"]) for t in served] == [np.float32(e) for _, e in tokens]
        same = reference.alike([token for token, _ in tokens])
        assert [t["oov_bucket"] for t in served] == [reference.oov_bucket(t) for t, _ in tokens]
        assert [t["alike"] for t in served] == [same.get(token, []) for token, _ in tokens]
        alike_seen += sum(bool(t["alike"]) for t in served)
        assert 0 < len(served) <= LIMITS["explain_top"]
        effects = [abs(t["effect"]) for t in served]
        assert effects == sorted(effects, reverse=True)
    assert alike_seen >= 2  # the last text's pairs


def test_a_keep_alive_client_is_not_held_by_nagle(client: httpx.Client) -> None:
    # Without TCP_NODELAY on the accepted sockets each response on a reused connection waits
    # for the client's delayed ACK: 40 ms or more, however fast the server is.
    times = []
    for _ in range(11):
        start = time.perf_counter()
        client.post("/predict", json={"texts": ["a"]}).raise_for_status()
        times.append(time.perf_counter() - start)
    assert sorted(times)[5] < 0.02, times


def test_an_empty_list_gets_no_predictions(client: httpx.Client) -> None:
    response = client.post("/predict", json={"texts": [], "explain": True})
    assert response.status_code == 200 and response.json() == {"predictions": []}


def test_health_names_the_model_and_its_classes(
    client: httpx.Client, run: dict, reference: Classifier
) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok"
    assert health["class_names"] == reference.class_names == ["Fake", "True"]
    assert health["model"] == "last.ckpt"  # the model's name, never a local path
    assert health["explain"] is True
    assert health["limits"] == {**LIMITS, "request_timeout_s": 5.0}


def test_the_page_is_self_contained(client: httpx.Client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    for element in ('id="text"', 'id="label"', 'id="probability"', 'id="tokens"'):
        assert element in page
    # Nothing from outside this server: no CDN, no absolute URL, no external file.
    assert "http://" not in page and "https://" not in page and "src=" not in page


# ------------------------------------------------------------------------------ bad requests

JSON = {"content-type": "application/json"}
BAD_REQUESTS = {
    "malformed JSON": (b'{"texts": ["a"', JSON, 400, "body: malformed JSON"),
    "not an object": (b'["a", "b"]', JSON, 422, "body: expected a JSON object"),
    "empty body": (b"", JSON, 422, "body: expected a JSON object"),
    "not sent as JSON": (b'{"texts": ["a"]}', {}, 422, "Content-Type: application/json"),
    "texts missing": (b'{"explain": true}', JSON, 422, "texts: missing; expected a list"),
    "texts not a list": (b'{"texts": "a"}', JSON, 422, "texts: expected a list of strings"),
    "a number among texts": (b'{"texts": ["a", 3]}', JSON, 422, "texts[1]: expected a string"),
    "null among texts": (b'{"texts": [null]}', JSON, 422, "texts[0]: expected a string, got null"),
    "explain not a bool": (
        b'{"texts": ["a"], "explain": "yes"}',
        JSON,
        422,
        'explain: expected true or false, got string "yes"',
    ),
    "explain a number": (b'{"texts": ["a"], "explain": 1}', JSON, 422, "explain: expected true"),
    "an unknown field": (b'{"texts": ["a"], "top": 3}', JSON, 422, "top: unknown field"),
    "a lone surrogate": (b'{"texts": ["\\ud83d"]}', JSON, 422, "texts[0]: not valid Unicode"),
    "too many texts": (
        json.dumps({"texts": ["a"] * 9}).encode(),
        JSON,
        413,
        "texts: 9 texts, at most 8 per request",
    ),
    "a text too long": (
        json.dumps({"texts": ["ok", "x" * 1001]}).encode(),
        JSON,
        422,
        "texts[1]: 1,001 characters, at most 1,000 per text",
    ),
    "a body too large": (
        json.dumps({"texts": ["x" * 900] * 20}).encode(),
        JSON,
        413,
        "at most 16,384 bytes (max_body_bytes)",
    ),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_a_bad_request_gets_its_4xx_and_one_json_line(
    case: str, client: httpx.Client, server: Server
) -> None:
    body, headers, status, message = BAD_REQUESTS[case]
    response = client.post("/predict", content=body, headers=headers)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert message in error and "\n" not in error
    assert set(response.json()) == {"error"}
    assert client.get("/health").status_code == 200 and server.proc.poll() is None


def test_a_chunked_body_is_counted_as_it_streams(client: httpx.Client) -> None:
    # No Content-Length: httpx sends a generator as chunked transfer encoding.
    chunks = [b'{"texts": ["'] + [b"x" * 1024] * 17 + [b'"]}']
    response = client.post("/predict", content=iter(chunks), headers=JSON)
    assert "content-length" not in response.request.headers
    assert response.status_code == 413, response.text
    assert "over 16,384 bytes" in response.json()["error"]


def _raw(port: int, head: bytes, body: bytes = b"") -> tuple[int, dict]:
    """One request written as given (headers that may lie), and the first response."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + b"\r\n\r\n" + body)
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        header, rest = data.split(b"\r\n\r\n", 1)
        lines = header.decode("latin-1").split("\r\n")
        fields = {
            k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])
        }
        while len(rest) < int(fields["content-length"]):
            rest += sock.recv(65536)
    return int(lines[0].split()[1]), json.loads(rest[: int(fields["content-length"])])


def test_content_length_is_refused_early_and_a_lie_is_not_believed(
    server: Server, client: httpx.Client
) -> None:
    post = b"POST /predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
    # 1 GB announced, nothing sent: refused at once, not after waiting for the body.
    status, answer = _raw(server.port, post + b"Content-Length: 1000000000")
    assert status == 413 and "1,000,000,000 bytes" in answer["error"]
    # A Content-Length shorter than the body: the body is what it declares (12 bytes: broken
    # JSON), the rest is not read as part of it.
    status, answer = _raw(server.port, post + b"Content-Length: 12", b'{"texts": ["a", "b"]}')
    assert status == 400 and "malformed JSON" in answer["error"]
    assert client.post("/predict", json={"texts": ["still here"]}).status_code == 200


def test_unknown_routes_and_methods_are_json_errors(client: httpx.Client) -> None:
    missing = client.get("/predictions")
    assert missing.status_code == 404
    assert missing.json()["error"] == (
        "GET /predictions: no such route; the routes are POST /predict, GET /v2/health/live, "
        "GET /v2/health/ready, GET /v2, GET /v2/models/{model}, GET /v2/models/{model}/ready, "
        "POST /v2/models/{model}/infer, GET /metrics, GET /health, GET /"
    )
    for schema in ("/openapi.json", "/docs", "/redoc"):  # every route served is listed
        assert client.get(schema).status_code == 404
    wrong = client.get("/predict")
    assert wrong.status_code == 405 and "POST /predict" in wrong.json()["error"]


# ------------------------------------------------------------------------------ the page


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_the_page_shows_a_label_and_the_tokens_in_headless_chromium(
    server: Server, run: dict, tmp_path: Path
) -> None:
    text = "Miley senate Cyrus get"  # two pairs of words in one OOV bucket each (the demo's)
    url = f"{server.url}/?{urllib.parse.urlencode({'text': text})}"
    proc = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000", "--dump-dom",
         url],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    label = dom.split('id="label"', 1)[1].split(">", 1)[1].split("<", 1)[0]
    assert label == Classifier.load(run["ckpt"]).predict([text])[0]
    assert 'class="chip c' in dom and 'id="toward0"' in dom and 'id="toward1"' in dom
    assert 'id="result" aria-live="polite" hidden' not in dom
    clf = Classifier.load(run["ckpt"])
    for word in text.split():
        assert f"{word}<sup>oov {clf.oov_bucket(word)}</sup>" in dom
    note = dom.split('id="effect-note"', 1)[1].split(">", 1)[1].split("</p>", 1)[0]
    for first, second in (("Miley", "senate"), ("Cyrus", "get")):
        bucket = clf.oov_bucket(first)
        assert bucket == clf.oov_bucket(second)
        assert f"share bucket {bucket} (one table row)" in note
        assert f"{first} and {second}" in note or f"{second} and {first}" in note


# ------------------------------------------------------------------------------ processes


@pytest.mark.slow
def test_an_exported_bundle_is_served_and_sigterm_stops_it_cleanly(
    run: dict, reference: Classifier, tmp_path: Path
) -> None:
    reference.export(tmp_path / "bundle")
    port = free_port()
    args = serve_args(tmp_path / "bundle", port, tmp_path / "logs")
    with serving(args, tmp_path / "log", port) as s:
        answer = httpx.post(f"{s.url}/predict", json={"texts": run["texts"]})
        served = [p["probabilities"]["True"] for p in answer.json()["predictions"]]
        with one_thread():
            expected = reference.predict_proba(run["texts"])[:, 1]
        assert np.array_equal(np.array(served, dtype=np.float32), expected)
        s.proc.send_signal(signal.SIGTERM)
        assert s.proc.wait(timeout=10) == 0, s.tail()
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # the port is free again
    assert "Traceback" not in s.tail()


@pytest.mark.parametrize(
    ("settings", "line"),
    [
        ({"workers": 0}, "workers=0: expected an integer >= 1"),
        ({"workers": 1.5}, "workers=1.5: expected an integer >= 1"),
        ({"threads": True}, "threads=True: expected an integer >= 1"),
    ],
)
def test_a_bad_worker_or_thread_count_is_refused(settings: dict, line: str) -> None:
    from fakenews_pl.errors import ConfigError
    from fakenews_pl.serving import server

    with pytest.raises(ConfigError) as refused:
        server.check_settings(settings)
    assert str(refused.value) == line


def test_workers_without_fork_are_refused_before_the_port_is_bound(
    reference: Classifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fakenews_pl.errors import ConfigError
    from fakenews_pl.serving import server

    monkeypatch.delattr(os, "fork")
    bound = []
    monkeypatch.setattr(server, "_listen", lambda *args: bound.append(args))
    with pytest.raises(ConfigError, match=r"^workers=2: several workers need fork\(\)"):
        server.serve(reference, "127.0.0.1", 0, workers=2)
    assert bound == []


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _two_workers(s: Server, without: int | None = None) -> list[int]:
    """The server's two worker processes once it has them (`without`: once that one has been
    replaced), within 30 s."""
    deadline = time.monotonic() + 30
    while True:
        workers = _children(s.proc.pid)
        if len(workers) == 2 and without not in workers:
            return workers
        assert time.monotonic() < deadline, (
            f"workers {workers}, not two without {without}:\n{s.tail()}"
        )
        time.sleep(0.1)


def _private_dirty_kb(pid: int, path: Path) -> int | None:
    """Private_Dirty kB of `path`'s mappings in process `pid` (None: not mapped)."""
    inside, dirty = False, None
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if not line[:1].isupper():  # a mapping's header: "start-end perms offset dev inode path"
            inside = line.rstrip().endswith(str(path))
            dirty = (dirty or 0) if inside else dirty
        elif inside and line.startswith("Private_Dirty:"):
            dirty += int(line.split()[1])
    return dirty


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc")
def test_two_workers_serve_share_the_table_add_up_metrics_and_stop_on_sigterm(
    run: dict, reference: Classifier, tmp_path: Path
) -> None:
    reference.export(tmp_path / "bundle")
    table = (tmp_path / "bundle" / "embedding" / "table.safetensors").resolve()
    port = free_port()
    args = serve_args(tmp_path / "bundle", port, tmp_path / "logs", "workers=2")
    with one_thread():
        expected = reference.predict_proba(run["texts"])[:, 1]
    with serving(args, tmp_path / "log", port) as s:
        workers = _two_workers(s)  # the first may answer before the second forks

        def served(_: int) -> np.ndarray:
            with httpx.Client(base_url=s.url) as client:  # a new connection each time
                answer = client.post("/predict", json={"texts": run["texts"]}).json()
            return np.array(
                [p["probabilities"]["True"] for p in answer["predictions"]], dtype=np.float32
            )

        # Requests until each worker has answered some (the kernel hands connections to
        # whichever worker accepts first), at most 30 rounds of 8 at once.
        from concurrent.futures import ThreadPoolExecutor

        sent, pids = 0, set()
        with ThreadPoolExecutor(8) as pool:
            for _ in range(30):
                for probabilities in pool.map(served, range(8)):
                    assert np.array_equal(probabilities, expected)
                sent += 8
                lines = [json.loads(line) for line in s.log.read_text().splitlines()
                         if line.startswith('{"time"')]  # fmt: skip
                pids = {line["pid"] for line in lines if line["route"] == "/predict"}
                if pids == set(workers):
                    break
        assert pids == set(workers), f"{sent} requests were all answered by {pids}"
        metrics = httpx.get(f"{s.url}/metrics").text
        counted = 'fakenews_requests_total{method="POST",route="/predict",status="200"}'
        assert f"{counted} {sent}.0" in metrics, metrics
        # Both map the table's file and neither has copied a page of it.
        assert [_private_dirty_kb(pid, table) for pid in workers] == [0, 0]
        # A worker that stops is replaced, and its exit leaves the others' metrics (and the
        # directory they live in) as they were: the one request more is counted with the rest.
        # SIGQUIT (what the arbiter sends on its SIGINT) stops a worker's server, which then
        # returns from gunicorn's loop rather than dying of the signal.
        os.kill(workers[0], signal.SIGQUIT)
        now = _two_workers(s, without=workers[0])
        assert np.array_equal(served(0), expected)
        metrics = httpx.get(f"{s.url}/metrics").text
        assert f"{counted} {sent + 1}.0" in metrics, metrics
        workers = now
        s.proc.send_signal(signal.SIGTERM)
        assert s.proc.wait(timeout=15) == 0, s.tail()
        assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # the port is free again
    assert "Traceback" not in s.tail() and "error" not in s.tail().lower(), s.tail()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc")
def test_workers_stop_when_serve_py_is_killed(
    reference: Classifier, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL (or the OOM killer) leaves the arbiter no time to stop its workers: they notice
    their parent is gone and stop themselves, freeing the port."""
    # Nor time to remove its metrics directory: one of the test's own, then.
    (tmp_path / "metrics").mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    reference.export(tmp_path / "bundle")
    port = free_port()
    args = serve_args(tmp_path / "bundle", port, tmp_path / "logs", "workers=2")
    with serving(args, tmp_path / "log", port) as s:
        workers = _two_workers(s)
        s.proc.kill()
        s.proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() for pid in workers):
            assert time.monotonic() < deadline, f"workers {workers} outlived serve.py"
            time.sleep(0.1)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # the port is free again


@pytest.mark.slow
def test_a_bad_checkpoint_or_a_taken_port_is_one_line(
    run: dict, server: Server, tmp_path: Path
) -> None:
    def serve(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "serve.py", f"paths.log_dir={tmp_path}", *args],
            cwd=REPO, capture_output=True, text=True, timeout=120,
            env={**os.environ, "PROJECT_ROOT": str(REPO)},
        )  # fmt: skip

    missing = serve(f"ckpt_path={tmp_path / 'none.ckpt'}", f"port={free_port()}")
    assert missing.returncode == 2
    assert missing.stderr.strip().startswith(
        f"error: ckpt_path={tmp_path / 'none.ckpt'}: expected a checkpoint file"
    )
    assert len(missing.stderr.strip().splitlines()) == 1
    taken = serve(f"ckpt_path={run['ckpt']}", f"port={server.port}")
    assert taken.returncode == 2, taken.stderr[-2000:]
    assert (
        taken.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: port={server.port}: cannot listen on 127.0.0.1:{server.port}")
    )
    assert "Traceback" not in taken.stderr


# ------------------------------------------------------------------------------ any predictor

PREDICTOR = """
import sys
import numpy as np
from fakenews_pl.serving import server

class Lengths:
    # Not a Classifier: class names of its own, no explain().
    class_names = ["real", "satire"]

    def predict_proba(self, texts):
        p = np.array([len(t) % 10 / 10 for t in texts], dtype=np.float32)
        return np.stack([1 - p, p], axis=1)

    def labels(self, probabilities):
        return [self.class_names[int(p > 0.5)] for p in probabilities[:, 1]]

server.serve(Lengths(), "127.0.0.1", int(sys.argv[1]), model_name="lengths", max_texts=4)
"""


def test_any_predictor_is_served_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    with serving(["-c", PREDICTOR, str(port)], tmp_path / "log", port, timeout=60) as s:
        health = httpx.get(f"{s.url}/health").json()
        assert health["model"] == "lengths" and health["explain"] is False
        assert health["class_names"] == ["real", "satire"]
        answer = httpx.post(f"{s.url}/predict", json={"texts": ["abcdefg", "ab"], "explain": True})
        assert answer.json() == {
            "predictions": [
                {
                    "label": "satire",
                    "probabilities": {"real": 0.3, "satire": 0.7},
                    "explanation": None,
                },
                {
                    "label": "real",
                    "probabilities": {"real": 0.8, "satire": 0.2},
                    "explanation": None,
                },
            ]
        }
        assert httpx.post(f"{s.url}/predict", json={"texts": ["a"] * 5}).status_code == 413
        s.proc.send_signal(signal.SIGTERM)
        assert s.proc.wait(timeout=10) == 0, s.tail()


# ------------------------------------------------------------------------------ bounded work


def test_an_explanation_over_the_work_budget_is_refused_before_any_work(
    client: httpx.Client, reference: Classifier
) -> None:
    """12 texts of 20,000 characters with explain cost ~30 s of CPU under a 1 MiB body."""
    words = [f"w{i}" for i in range(140)]
    texts = [" ".join(words[i:] + words[:i]) for i in range(8)]  # 140 distinct tokens each
    cost = reference.explain_cost(texts)
    assert cost > LIMITS["max_explain_work"]
    refused = client.post("/predict", json={"texts": texts, "explain": True})
    assert refused.status_code == 413
    assert refused.json()["error"] == (
        f"explain: 8 texts need {cost:,} token-vector additions (each text's tokens times its "
        f"distinct tokens + 1), at most 20,000 (max_explain_work) per request; explain fewer "
        "or shorter texts"
    )
    assert client.post("/predict", json={"texts": texts}).status_code == 200  # no explain: fine


def test_only_loopback_names_reach_a_loopback_server(server: Server) -> None:
    """A DNS-rebinding page reaches 127.0.0.1 under its own name: refused."""
    for host, status in (
        ("evil.example", 400),
        (f"evil.example:{server.port}", 400),
        (f"localhost:{server.port}", 200),
        (f"127.0.0.1:{server.port}", 200),
        (f"[::1]:{server.port}", 200),
    ):
        answer = httpx.get(f"{server.url}/health", headers={"Host": host})
        assert answer.status_code == status, host
    refused = httpx.post(
        f"{server.url}/predict", headers={"Host": "evil.example"}, json={"texts": ["a"]}
    )
    assert refused.json()["error"] == (
        "Host: evil.example is not a name this server answers to; expected one of 127.0.0.1, "
        "::1, localhost (allowed_hosts)"
    )


SLOW = """
import sys, time
import numpy as np
from fakenews_pl.serving import server

class Slow:
    # Explaining takes 0.25 s a text and says so on stdout: the test counts the work done.
    class_names = ["Fake", "True"]

    def predict_proba(self, texts):
        return np.tile(np.array([[0.25, 0.75]], dtype=np.float32), (len(texts), 1))

    def labels(self, probabilities):
        return ["True"] * len(probabilities)

    def explain(self, texts, top):
        time.sleep(0.25)
        print("explained", flush=True)
        return [[("w", 0.5)] for _ in texts]

server.serve(Slow(), "127.0.0.1", int(sys.argv[1]), model_name="slow",
             request_timeout_s=1.5, shutdown_grace_s=1.0)
"""


def _explained(log: Path) -> int:
    return log.read_text().count("explained\n")


@pytest.mark.slow
def test_explanations_stop_at_the_deadline_when_the_client_leaves_and_at_sigterm(
    tmp_path: Path,
) -> None:
    port, log = free_port(), tmp_path / "log"
    texts = {"texts": [f"text {i}" for i in range(40)], "explain": True}  # 10 s of work
    with serving(["-c", SLOW, str(port)], log, port, timeout=60) as s:
        with httpx.Client(base_url=s.url, timeout=30) as http:
            started = time.monotonic()
            late = http.post("/predict", json=texts)
            took = time.monotonic() - started
            assert late.status_code == 503 and 1.4 < took < 2.5, took
            assert late.json()["error"] == (
                "explain: not done within 1.5 s (request_timeout_s); explain fewer or shorter texts"
            )
            time.sleep(0.6)
            done = _explained(log)
            time.sleep(0.6)
            assert _explained(log) == done <= 8  # stopped, not the 40 texts
            # A client that leaves: its work stops too, and other requests are answered.
            with pytest.raises(httpx.ReadTimeout):
                http.post("/predict", json=texts, timeout=0.5)
            started = time.monotonic()
            assert http.get("/health").status_code == 200
            assert time.monotonic() - started < 0.5
            time.sleep(0.8)
            done = _explained(log)
            time.sleep(0.6)
            assert _explained(log) == done <= 8 + 5
            # SIGTERM with a request running: it gets the JSON 503 within the grace (1 s),
            # and the process exits within the grace + 1 s.
            pending = {}

            def ask() -> None:
                pending["answer"] = http.post("/predict", json=texts)

            import threading

            asking = threading.Thread(target=ask)
            asking.start()
            time.sleep(0.4)
            s.proc.send_signal(signal.SIGTERM)
            stopped = time.monotonic()
            assert s.proc.wait(timeout=10) == 0, s.tail()
            assert time.monotonic() - stopped <= 2.0
            asking.join(timeout=10)
            answer = pending["answer"]
            assert answer.status_code == 503, answer.text
            assert answer.json() == {"error": "server: shutting down; send the request again"}
    assert "Traceback" not in s.tail()
