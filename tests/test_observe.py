"""What an operator sees (fakenews_pl/serving/observe.py): /metrics counts what the server
answered; one JSON access-log line per request, its id echoed."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from fakenews_pl import Classifier
from fakenews_pl.serving.observe import ACCESS_LOGGER, MULTIPROC_ENV
from fakenews_pl.serving.server import create_app


def _samples(client: TestClient) -> dict[tuple, float]:
    text = client.get("/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.fixture(scope="module")
def app(trained_run: dict):
    return create_app(Classifier.load(trained_run["ckpt"]), model_name="demo")


def test_metrics_count_what_was_served(app, trained_run: dict) -> None:
    texts = trained_run["datamodule"].texts("test")[:3].tolist()
    with TestClient(app) as client:
        before = _samples(client)
        for _ in range(2):
            assert client.post("/predict", json={"texts": texts}).status_code == 200
        assert client.post("/predict", json={"texts": "a"}).status_code == 422
        body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}
        assert client.post("/v2/models/demo/infer", json=body).status_code == 200
        after = _samples(client)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    ok = {"route": "/predict", "method": "POST", "status": "200"}
    assert delta("fakenews_requests_total", **ok) == 2
    assert delta("fakenews_requests_total", **{**ok, "status": "422"}) == 1
    v2 = {"route": "/v2/models/{model}/infer", "method": "POST", "status": "200"}
    assert delta("fakenews_requests_total", **v2) == 1
    assert delta("fakenews_texts_per_request_count", route="/predict") == 2  # the 422 had none
    assert delta("fakenews_texts_per_request_sum", route="/predict") == 6
    assert delta("fakenews_request_seconds_count", route="/predict") == 3
    assert after[("fakenews_requests_in_flight", ())] == 1  # the scrape itself
    assert delta("fakenews_requests_total", route="/metrics", method="GET", status="200") == 1
    info = [k for k in after if k[0] == "fakenews_model_info"]
    assert len(info) == 1 and dict(info[0][1])["threshold"] == "0.5"
    assert dict(info[0][1])["name"] == "demo" and dict(info[0][1])["class_names"] == "Fake,True"


def test_each_request_is_one_json_line_with_its_id(app, caplog) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    with TestClient(app) as client:
        answer = client.post(
            "/predict", json={"texts": ["a", "b"]}, headers={"X-Request-ID": "r-42"}
        )
        fresh = client.get("/health")
    assert answer.headers["x-request-id"] == "r-42"
    assert len(fresh.headers["x-request-id"]) == 32  # a new one
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == ACCESS_LOGGER]
    first, second = lines[-2:]
    assert {k: first[k] for k in ("method", "route", "status", "texts", "request_id")} == {
        "method": "POST", "route": "/predict", "status": 200, "texts": 2, "request_id": "r-42",
    }  # fmt: skip
    assert first["latency_ms"] > 0 and first["time"].endswith("+00:00")
    assert second["route"] == "/health" and second["texts"] is None


def test_access_log_false_logs_nothing(trained_run: dict, caplog) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    quiet = create_app(Classifier.load(trained_run["ckpt"]), access_log=False)
    with TestClient(quiet) as client:
        client.get("/health")
    assert not [r for r in caplog.records if r.name == ACCESS_LOGGER]


def test_worker_processes_add_up_in_multiprocess_mode(tmp_path: Path) -> None:
    """Two processes count requests into one PROMETHEUS_MULTIPROC_DIR; a third exposes them."""
    code = (
        "from fakenews_pl.serving.observe import Metrics\n"
        "m = Metrics('demo', ['Fake', 'True'], 0.5)\n"
        "m.requests.labels('/predict', 'POST', '200').inc({n})\n"
        "print(m.exposition().decode())\n"
    )
    env = {**os.environ, MULTIPROC_ENV: str(tmp_path)}
    for n in (2, 3):
        subprocess.run([sys.executable, "-c", code.format(n=n)], env=env, check=True, timeout=60)
    out = subprocess.run(
        [sys.executable, "-c", code.format(n=0)], env=env, check=True, timeout=60,
        capture_output=True, text=True,
    ).stdout  # fmt: skip
    totals = [
        s.value for f in text_string_to_metric_families(out) for s in f.samples
        if s.name == "fakenews_requests_total" and s.labels.get("status") == "200"
    ]  # fmt: skip
    assert totals == [5]
