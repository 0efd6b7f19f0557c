"""What an operator sees of a running server: Prometheus metrics at `GET /metrics` and one JSON
access-log line per request.

Metrics (prometheus-client): `fakenews_requests_total{route,method,status}`,
`fakenews_request_seconds{route}` (a latency histogram), `fakenews_texts_per_request{route}`,
`fakenews_requests_in_flight`, and `fakenews_model_info{name,embedding,class_names,threshold}`. With
`PROMETHEUS_MULTIPROC_DIR` set (several worker processes), each process writes its values there
and `/metrics` adds them up (prometheus-client's multiprocess mode); otherwise they live in the
app's own registry.

Access log: logger `fakenews_pl.access`, one JSON object per request: time (UTC, ISO 8601),
method, route, path, status, texts, latency_ms, request_id and pid (the worker process); the
request id is the client's `X-Request-ID` when given (at most 128 printable ASCII characters,
no spaces), else a new one, and every response echoes it in `X-Request-ID`.
"""

import json
import logging
import os
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fakenews_pl.errors import ConfigError

ACCESS_LOGGER = "fakenews_pl.access"
CONTENT_TYPE = CONTENT_TYPE_LATEST  # what GET /metrics answers with
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
TEXT_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """The server's metrics, registered in `registry` (one per app: tests build many apps)."""

    def __init__(
        self, model: str, class_names: list[str], threshold: float | None, embedding: str = ""
    ) -> None:
        if os.environ.get(MULTIPROC_ENV) and not getattr(values.ValueClass, "_multiprocess", 0):
            raise ConfigError(
                f"{MULTIPROC_ENV} was set after prometheus_client was imported: the workers' "
                "metrics would not add up (set it before the server module is imported)"
            )
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "fakenews_requests", "Requests answered, by route, method and status",
            ["route", "method", "status"], registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "fakenews_request_seconds", "Seconds from request to response, by route",
            ["route"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.texts = Histogram(
            "fakenews_texts_per_request", "Texts in a prediction request, by route",
            ["route"], buckets=TEXT_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.in_flight = Gauge(
            "fakenews_requests_in_flight", "Requests being answered",
            registry=self.registry, multiprocess_mode="livesum",
        )  # fmt: skip
        self.info = Gauge(
            "fakenews_model_info", "The served model (value 1)",
            ["name", "embedding", "class_names", "threshold"], registry=self.registry,
            multiprocess_mode="max",
        )  # fmt: skip
        shown = "0.5" if threshold is None else f"{threshold:.6g}"
        self.info.labels(model, embedding, ",".join(class_names), shown).set(1)

    def exposition(self) -> bytes:
        """The text format `/metrics` returns: this process's values, or every worker's in
        multiprocess mode."""
        if os.environ.get(MULTIPROC_ENV):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


def _route(scope: Scope) -> str:
    """The route's template (`/v2/models/{model}/infer`), not the path: bounded label values."""
    route = scope.get("route")
    return getattr(route, "path", None) or "(no route)"


def _texts(body: bytes, json_length: bytes | None = None) -> int | None:
    """How many texts a prediction request carried (`texts`, or a v2 `text` tensor's data or
    shape); `json_length`: the binary extension's Inference-Header-Content-Length."""
    if json_length is not None and json_length.isdigit():
        body = body[: int(json_length)]
    try:
        decoded = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # the route has refused it
        return None
    if isinstance(decoded, dict) and isinstance(decoded.get("texts"), list):
        return len(decoded["texts"])
    inputs = decoded.get("inputs") if isinstance(decoded, dict) else None
    if isinstance(inputs, list) and inputs and isinstance(inputs[0], dict):
        data, shape = inputs[0].get("data"), inputs[0].get("shape")
        if isinstance(data, list):
            return len(data)
        if isinstance(shape, list) and len(shape) == 1 and isinstance(shape[0], int):
            return shape[0]  # binary data
    return None


def request_id(given: bytes | None) -> str:
    """The client's X-Request-ID when it is a sane token, else a new one."""
    if given:
        text = given.decode("latin-1")
        if len(text) <= 128 and text.isascii() and text.isprintable() and " " not in text:
            return text
    return uuid.uuid4().hex


class Observe:
    """ASGI middleware: counts, times and logs every HTTP request (see the module docstring)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, access_log: bool = True) -> None:
        self.app, self.metrics, self.access_log = app, metrics, access_log
        self.logger = logging.getLogger(ACCESS_LOGGER)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass one request on, measuring it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = request_id(dict(scope["headers"]).get(b"x-request-id"))
        status, body = 500, bytearray()
        self.metrics.in_flight.inc()

        async def receiving() -> Message:
            message = await receive()
            if message["type"] == "http.request" and len(body) < 1 << 21:
                body.extend(message.get("body", b""))
            return message

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []),
                                      (b"x-request-id", rid.encode("latin-1"))]  # fmt: skip
            await send(message)

        try:
            await self.app(scope, receiving, sending)
        finally:
            self.metrics.in_flight.dec()
            self._record(scope, status, bytes(body), time.perf_counter() - started, rid)

    def _record(self, scope: Scope, status: int, body: bytes, seconds: float, rid: str) -> None:
        route = _route(scope)
        self.metrics.requests.labels(route, scope["method"], str(status)).inc()
        self.metrics.latency.labels(route).observe(seconds)
        json_length = dict(scope["headers"]).get(b"inference-header-content-length")
        texts = _texts(body, json_length) if scope["method"] == "POST" and body else None
        if texts is not None and status < 400:  # texts answered, not texts refused
            self.metrics.texts.labels(route).observe(texts)
        if self.access_log:
            line: dict[str, Any] = {
                "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "method": scope["method"], "route": route, "path": scope["path"],
                "status": status, "texts": texts, "latency_ms": round(1000 * seconds, 3),
                "request_id": rid, "pid": os.getpid(),
            }  # fmt: skip
            self.logger.info(json.dumps(line))
