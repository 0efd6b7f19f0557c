"""A trained classifier over HTTP: FastAPI + uvicorn, one process, the model loaded once.

    from fakenews_pl import Classifier
    from fakenews_pl.serving import server
    app = server.create_app(Classifier.load("last.ckpt"), model_name="last.ckpt")
    server.serve(app, host="127.0.0.1", port=8000)      # returns on SIGTERM / Ctrl-C

`create_app` wraps any *predictor*: an object with `class_names` (two names),
`predict_proba(texts) -> (N, 2)` and `labels(probabilities) -> names`, and optionally
`explain(texts, top) -> [[(token, effect), ...], ...]` (without it, explanations are null).

Routes: `POST /predict` `{"texts": [...], "explain": false}` -> `{"predictions": [{"label",
"probabilities": {name: p}, "explanation"?}]}` in input order (an explanation: `[{"token",
"effect", "oov_bucket", "alike"}]`, the last two from a Classifier: the token's OOV bucket or
null, the shown tokens the model cannot tell apart from it); `GET /health`; `GET /` the page
(`static/index.html`); no schema routes. Every error is `{"error": "<one line naming the
field>"}`: 400 malformed JSON or a Host header not in `allowed_hosts`, 413 a body over
`max_body_bytes`, more than `max_texts` texts or an explanation over `max_explain_work`, 422 any
other bad field (a text over `max_text_chars`, a non-string, `explain` not a boolean, an unknown
field), 404 / 405 unknown routes (the text lists every route served), 503 an explanation
stopped at `request_timeout_s` or by the shutdown grace. An explanation runs in the threadpool
one text at a time and stops when its deadline passes, its client leaves or the server stops.
An empty `texts` list is valid: 200 with no predictions, the model uncalled.
"""

import asyncio
import contextlib
import errno
import ipaddress
import json
import math
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import AfterValidator, ConfigDict, Field, StringConstraints, create_model
from pydantic_core import PydanticCustomError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fakenews_pl.errors import ConfigError
from fakenews_pl.serving import observe, v2

# The defaults of conf/serve.yaml. 1 MiB holds 256 texts of 4,000 characters (~3.8 KiB each).
# max_explain_work: token-vector additions an explanation may cost (`Classifier.explain_cost`:
# each text's tokens times its distinct tokens + 1); 256 headlines of 15 tokens need 61,440,
# one 20,000-character text of distinct words ~10 million (seconds of CPU).
LIMITS = {
    "max_texts": 256,
    "max_body_bytes": 1 << 20,
    "max_text_chars": 20_000,
    "explain_top": 5,
    "max_explain_work": 2_000_000,
}
REQUEST_TIMEOUT_S = 5.0  # an explanation still running then is stopped: a 503
SHUTDOWN_GRACE_S = 10.0  # after SIGTERM, requests still running then get a 503
# The names a loopback-bound server answers to (Host header, any port): another name reaching
# it is a page that rebound its own DNS name to 127.0.0.1 (DNS rebinding).
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
# How often a running explanation checks its deadline and whether its client is still there.
_POLL_S = 0.02
# How often a worker checks that its arbiter (its parent process) is still there.
_ORPHAN_POLL_S = 0.5


# ------------------------------------------------------------------------------ settings


def check_settings(settings: Mapping[str, Any]) -> None:
    """Refuse a limit (`max_texts`, `max_body_bytes`, `max_text_chars`, `explain_top`,
    `max_explain_work`), `threads` or `workers` count that is not an integer >= 1, a `port` outside
    0-65535, an empty `host`, a timeout that is not a number of seconds > 0 or an
    `allowed_hosts` that is not a list of names, as a `ConfigError` naming the key."""
    for key, value in settings.items():
        integer = isinstance(value, int) and not isinstance(value, bool)
        number = (integer or isinstance(value, float)) and not isinstance(value, bool)
        if key in ("request_timeout_s", "shutdown_grace_s") and not (
            number and math.isfinite(value) and value > 0
        ):
            raise ConfigError(f"{key}={value}: expected a number of seconds > 0")
        if key == "allowed_hosts" and not (
            value is None
            or (
                isinstance(value, list | tuple)
                and value
                and all(isinstance(h, str) and h for h in value)
            )
        ):
            raise ConfigError(
                f"allowed_hosts={value}: expected a list of host names (e.g. [example.org]), "
                '["*"] for any, or null (loopback names on a loopback address, else any)'
            )
        if key == "port" and not (integer and 0 <= value <= 65535):
            raise ConfigError(f"port={value}: expected a TCP port, 0-65535 (0: any free port)")
        if (key in LIMITS or key in ("threads", "workers")) and not (integer and value >= 1):
            raise ConfigError(f"{key}={value}: expected an integer >= 1")
        if key == "host" and not (isinstance(value, str) and value):
            raise ConfigError(f"host={value}: expected an address, e.g. 127.0.0.1 or 0.0.0.0")


# ------------------------------------------------------------------------------ the app


def default_allowed_hosts(host: str) -> list[str] | None:
    """`allowed_hosts=null`: the loopback names when bound to a loopback address (nothing else
    can reach it by name but a rebinding page), any host otherwise (None)."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    return list(LOOPBACK_HOSTS) if loopback else None


def create_app(
    predictor: Any,
    *,
    max_texts: int = LIMITS["max_texts"],
    max_body_bytes: int = LIMITS["max_body_bytes"],
    max_text_chars: int = LIMITS["max_text_chars"],
    explain_top: int = LIMITS["explain_top"],
    max_explain_work: int = LIMITS["max_explain_work"],
    request_timeout_s: float = REQUEST_TIMEOUT_S,
    allowed_hosts: list[str] | None = None,
    model_name: str | None = None,
    access_log: bool = True,
) -> FastAPI:
    """The FastAPI app serving `predictor` (see the module docstring), with its limits.
    `allowed_hosts`: the Host header names it answers (any port; None or "*": any).
    `access_log`: one JSON line per request (`fakenews_pl.serving.observe`); `GET /metrics`
    and the Open Inference Protocol's `/v2` routes (`fakenews_pl.serving.v2`) are served too."""
    limits = {
        "max_texts": max_texts,
        "max_body_bytes": max_body_bytes,
        "max_text_chars": max_text_chars,
        "explain_top": explain_top,
        "max_explain_work": max_explain_work,
    }
    check_settings({**limits, "request_timeout_s": request_timeout_s})
    check_settings({"allowed_hosts": allowed_hosts})
    class_names = [str(name) for name in predictor.class_names]
    if len(class_names) != 2:
        raise ConfigError(f"predictor.class_names={class_names}: expected two class names")
    explain = getattr(predictor, "explain", None)
    # A Classifier also says which explained tokens it cannot tell apart (and why).
    oov_bucket, alike = getattr(predictor, "oov_bucket", None), getattr(predictor, "alike", None)
    # Without its own measure, a predictor's explanation is costed on whitespace tokens.
    explain_cost = getattr(predictor, "explain_cost", None) or (
        lambda texts: sum(len(t.split()) * (len(set(t.split())) + 1) for t in texts)
    )
    health = {
        "status": "ok",
        "model": model_name or type(predictor).__name__,
        "class_names": class_names,
        "explain": explain is not None,
        # The decision rule labels follow (a Classifier's: its run's threshold); None: 0.5.
        "decision": getattr(predictor, "decision", None),
        "limits": {**limits, "request_timeout_s": request_timeout_s},
    }
    # No schema routes: /docs and /redoc would load Swagger and ReDoc from a CDN, and every
    # route served is one the 404 text lists.
    app = FastAPI(title="fakenews_pl", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.health = health
    app.state.predictor = predictor
    app.state.stop_at = None  # set by `serve` on SIGTERM: the end of the shutdown grace
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    decision = getattr(predictor, "decision", None)
    embedding = getattr(getattr(predictor, "embedding", None), "meta", {}).get("path")
    metrics = observe.Metrics(
        health["model"], class_names, decision["threshold"] if decision else None,
        Path(embedding).name if embedding else "",
    )  # fmt: skip
    app.add_middleware(observe.Observe, metrics=metrics, access_log=access_log)
    if allowed_hosts is not None and "*" not in allowed_hosts:
        app.add_middleware(HostAllowList, hosts=allowed_hosts)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)
    # The body model is built here, with this app's limits; the endpoint's annotation must be
    # the class itself (not a string: no `from __future__ import annotations` in this module).
    PredictRequest = _request_model(max_texts, max_text_chars)  # noqa: N806 (a class)

    def respond(texts: list[str]) -> dict[str, Any]:
        # One batched predict_proba call for the whole request.
        probabilities = np.asarray(predictor.predict_proba(texts), dtype=np.float32)
        labels = predictor.labels(probabilities)
        predictions = [
            {
                "label": str(label),
                "probabilities": dict(zip(class_names, map(_number, row), strict=True)),
            }
            for label, row in zip(labels, probabilities.tolist(), strict=True)
        ]
        return {"predictions": predictions}

    def explain_each(texts: list[str], stop: threading.Event) -> list[Any] | None:
        # One text at a time, so that a stopped request stops within one text's work.
        explained = []
        for text in texts:
            if stop.is_set():
                return None
            explained += explain([text], top=explain_top)
        return explained

    async def explained(request: Request, texts: list[str]) -> JSONResponse:
        """`respond` with explanations: refused over the work budget before any work; run in
        the threadpool, stopped (503) at the deadline, at shutdown, or when the client left."""
        cost = explain_cost(texts)
        if cost > max_explain_work:
            return _error(413, (
                f"explain: {len(texts)} texts need {cost:,} token-vector additions (each "
                f"text's tokens times its distinct tokens + 1), at most {max_explain_work:,} "
                "(max_explain_work) per request; explain fewer or shorter texts"
            ))  # fmt: skip
        answer = respond(texts)
        stop = threading.Event()
        work = asyncio.ensure_future(run_in_threadpool(explain_each, texts, stop))
        deadline = time.monotonic() + request_timeout_s
        try:
            while not (await asyncio.wait({work}, timeout=_POLL_S))[0]:
                now, stop_at = time.monotonic(), app.state.stop_at
                if stop_at is not None and now >= stop_at:
                    return _error(503, "server: shutting down; send the request again")
                if now >= deadline:
                    return _error(503, (
                        f"explain: not done within {request_timeout_s:g} s (request_timeout_s); "
                        "explain fewer or shorter texts"
                    ))  # fmt: skip
                if await request.is_disconnected():
                    return _error(503, "client: disconnected")  # nobody reads it
        finally:
            stop.set()  # the worker stops at its next text
        for prediction, tokens in zip(answer["predictions"], work.result(), strict=True):
            prediction["explanation"] = [
                {"token": str(token), "effect": _number(effect)} for token, effect in tokens
            ]
            if oov_bucket is not None and alike is not None:  # a Classifier's: say why
                same = alike([token for token, _ in tokens])
                for item in prediction["explanation"]:
                    item["oov_bucket"] = oov_bucket(item["token"])
                    item["alike"] = same.get(item["token"], [])
        return JSONResponse(answer)

    # `async def`, and a plain prediction runs right here on the event loop: it is ~0.4 ms of
    # CPU, and a `def` endpoint's threadpool hop cost more than that on 2 cores: 515-520 vs
    # 294-413 requests/s one client at a time, 1.0-1.1 vs 1.3-1.7 ms of server CPU a request
    # (README, Serving). An explanation costs a bag per distinct token of each text (33 ms for
    # one text of 20,000 characters, more with a real vocabulary), so it goes to the threadpool
    # and the loop keeps answering meanwhile.
    @app.post("/predict")
    async def predict(request: Request, body: PredictRequest) -> JSONResponse:  # type: ignore[valid-type]
        """Labels and class probabilities of `texts` (and the tokens behind them)."""
        if not body.texts:
            return JSONResponse({"predictions": []})
        if body.explain and explain is not None:
            return await explained(request, body.texts)
        answer = respond(body.texts)
        if body.explain:  # a predictor without explain()
            for prediction in answer["predictions"]:
                prediction["explanation"] = None
        return JSONResponse(answer)

    v2.add_routes(app, health["model"], class_names, respond, max_texts, max_text_chars)

    @app.get("/metrics")
    async def get_metrics() -> Response:
        """Prometheus metrics (`observe.Metrics`), in its text format."""
        return Response(metrics.exposition(), media_type=observe.CONTENT_TYPE)

    @app.get("/health")
    async def get_health() -> JSONResponse:
        """The model being served, its class names, whether it explains, and the limits."""
        return JSONResponse(health)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        """The page: a text box, the predicted label, its probability and the tokens."""
        return HTMLResponse(_page())

    return app


def _request_model(max_texts: int, max_text_chars: int) -> type:
    """The `POST /predict` body as a pydantic model with this app's limits: `texts`, a list of
    at most `max_texts` strings of at most `max_text_chars` characters, and `explain`."""
    text = Annotated[
        str,
        StringConstraints(strict=True, max_length=max_text_chars),
        AfterValidator(_encodable),
    ]
    return create_model(
        "PredictRequest",
        __config__=ConfigDict(extra="forbid", strict=True),
        texts=(Annotated[list[text], Field(max_length=max_texts)], ...),
        explain=(bool, False),
    )


def _encodable(text: str) -> str:
    """A JSON `\\ud800` escape without its pair decodes to a lone surrogate, which no UTF-8
    tokenizer can take (it would be a 500); refused here as a 422."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise PydanticCustomError("unicode", "a lone surrogate") from exc
    return text


def _number(value: Any) -> float:
    """A float32 as its shortest decimal (0.93, not 0.9300000071525879); np.float32 of it
    is the model's value exactly."""
    return float(str(np.float32(value)))


@cache
def _page() -> str:
    return resources.files("fakenews_pl.serving").joinpath("static/index.html").read_text("utf-8")


# ------------------------------------------------------------------------------ errors


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 list of errors -> one line; malformed JSON is a 400, too many texts 413."""
    errors = list(exc.errors())
    first = next((e for e in errors if e["type"] in ("json_invalid", "too_long")), errors[0])
    status, message = _describe(first)
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
    return _error(status, message)


def _describe(error: Mapping[str, Any]) -> tuple[int, str]:
    """(status, one line) for one pydantic/FastAPI validation error of a /predict body."""
    loc = [part for part in error.get("loc", ()) if part != "body"]
    kind, given, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    expected = {
        "texts": "a list of strings",
        "explain": "true or false",
    }.get(where, "a string" if where.startswith("texts[") else "")
    if kind == "json_invalid":
        at = f" at character {loc[0]}" if loc and isinstance(loc[0], int) else ""
        return 400, f"body: malformed JSON{at}: {ctx.get('error', 'cannot be decoded')}"
    if not where or kind in ("model_type", "model_attributes_type", "dict_type"):
        if given in (None, b""):
            what = "an empty body"
        elif isinstance(given, bytes):
            what = "a body without Content-Type: application/json"
        else:
            what = f"a JSON {_json_type(given)}"
        return 422, (
            f'body: expected a JSON object {{"texts": ["..."], "explain": false}} with '
            f"Content-Type: application/json, got {what}"
        )
    if kind == "missing":
        return 422, f"{where}: missing; expected {expected}"
    if kind == "extra_forbidden":
        return 422, f"{where}: unknown field; expected texts and explain"
    if kind == "too_long" and where == "texts":
        return 413, (
            f"texts: {len(given)} texts, at most {ctx.get('max_length')} per request; "
            "send them in several requests"
        )
    if kind in ("unicode", "string_unicode"):
        return (
            422,
            f"{where}: not valid Unicode (a lone surrogate: \\ud800-\\udfff escapes come in pairs)",
        )
    if kind == "string_too_long":
        return 422, (
            f"{where}: {len(given):,} characters, at most {ctx.get('max_length'):,} per text"
        )
    if kind.endswith("_type") and expected:
        return 422, f"{where}: expected {expected}, got {_json_type(given)}"
    return 422, f"{where}: {error.get('msg', kind)}"


def _json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, as a client wrote it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {json.dumps(value)}"
    if isinstance(value, int | float):
        return f"number {json.dumps(value)}"
    if isinstance(value, str):
        return f"string {json.dumps(value[:40])}" + ("..." if len(value) > 40 else "")
    return {list: "array", dict: "object"}.get(type(value), type(value).__name__)


def routes(app: Any) -> str:
    """`POST /predict, GET /health, GET /`: every route the app serves, as a 404 lists them."""
    served = []
    for route in app.routes:
        for method in sorted(set(getattr(route, "methods", None) or ()) - {"HEAD"}):
            served.append(f"{method} {route.path}")
    return ", ".join(served)


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """404 and 405 (and any other HTTPException) as `{"error": ...}`."""
    target = f"{request.method} {request.url.path}"
    if exc.status_code == 404:
        message = f"{target}: no such route; the routes are {routes(request.app)}"
    elif exc.status_code == 405:
        message = f"{target}: method not allowed here; the routes are {routes(request.app)}"
    else:
        message = f"{target}: {exc.detail}"
    return _error(exc.status_code, message, getattr(exc, "headers", None))


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    """A bug, not bad input: still JSON (uvicorn logs the traceback)."""
    return _error(500, f"internal error: {type(exc).__name__}: {exc}")


class BodyLimit:
    """ASGI middleware: a request body over `max_bytes` gets a 413 JSON error, at once when its
    Content-Length says so, else as soon as the bytes received pass the limit (a chunked
    body, or a Content-Length that lies: the HTTP parser stops at the declared length).
    A body within the limit is read whole and handed on."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check, read and hand on one request."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send, f"{int(declared):,} bytes")
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send, f"over {self.max_bytes:,} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body: list[Message] = [{"type": "http.request", "body": b"".join(chunks)}]

        async def replay() -> Message:
            return body.pop() if body else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, size: str) -> None:
        # The unread rest of the body cannot be skipped over: close the connection after.
        response = _error(
            413,
            f"body: {size}, at most {self.max_bytes:,} bytes (max_body_bytes) per request",
            {"connection": "close"},
        )
        await response(scope, receive, send)


class HostAllowList:
    """ASGI middleware: a request whose Host header (port aside) is not one of `hosts` gets a
    400 JSON error before any route runs (a DNS-rebinding page calling a loopback server)."""

    def __init__(self, app: ASGIApp, hosts: list[str]) -> None:
        self.app = app
        self.hosts = {h.lower().strip("[]") for h in hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check one request's Host header, then hand it on."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
        name = given.rsplit(":", 1)[0] if given.count(":") == 1 else given
        if given.startswith("["):  # [::1]:8000
            name = given[1:].split("]", 1)[0]
        if name.lower() not in self.hosts:
            message = (
                f"Host: {given or '(none)'} is not a name this server answers to; expected one "
                f"of {', '.join(sorted(self.hosts))} (allowed_hosts)"
            )
            await _error(400, message)(scope, receive, send)
            return
        await self.app(scope, receive, send)


# ------------------------------------------------------------------------------ serving


class _Stopped(BaseException):
    """SIGTERM or SIGINT outside uvicorn's graceful shutdown (before it starts, or re-raised
    by uvicorn once it is done): ends `serve` quietly, with exit status 0."""


def _stop(signum: int, frame: Any) -> None:
    raise _Stopped


def serve(
    app_or_predictor: FastAPI | Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    workers: int = 1,
    access_log: bool = True,
    log_level: str = "info",
    model_name: str | None = None,
    shutdown_grace_s: float = SHUTDOWN_GRACE_S,
    **settings: Any,
) -> None:
    """Serve an app, or a predictor (wrapped by `create_app(predictor, **settings)`, whose
    `allowed_hosts` default to `default_allowed_hosts(host)`; `access_log` is the app's JSON
    log: an app passed in has its own), on host:port until SIGTERM or
    Ctrl-C; then the requests in flight get `shutdown_grace_s` to finish (those still running
    get a JSON 503), the port is released and this returns. A port that cannot be bound is a
    `ConfigError`. Port 0 takes a free one; the line `serving ... on http://HOST:PORT` names
    it. `workers` > 1: that many processes forked from this one after the model is loaded
    (`_serve_workers`), all on the one port."""
    check_settings(
        {"host": host, "port": port, "shutdown_grace_s": shutdown_grace_s, "workers": workers}
    )
    if isinstance(app_or_predictor, FastAPI):
        app = app_or_predictor
    else:
        settings.setdefault("allowed_hosts", default_allowed_hosts(host))
        settings.setdefault("access_log", access_log)
        app = create_app(app_or_predictor, model_name=model_name, **settings)
    if workers > 1:
        _check_workers(workers)
    sock = _listen(host, port)
    model = getattr(app.state, "health", {}).get("model", "an app")
    shown = f" with {workers} worker processes" if workers > 1 else ""
    print(f"serving {model} on http://{_url_host(host)}:{sock.getsockname()[1]}{shown}", flush=True)
    try:
        if workers > 1:
            _serve_workers(app, sock, workers, shutdown_grace_s, log_level)
        else:
            _serve_one(app, sock, shutdown_grace_s, log_level)
    finally:
        sock.close()


def _check_workers(workers: int) -> None:
    """Refuse `workers` > 1 where it cannot run, as a `ConfigError`, before the port is bound."""
    if not hasattr(os, "fork"):
        raise ConfigError(f"workers={workers}: several workers need fork() (Linux, macOS)")
    for module in ("gunicorn", "uvicorn_worker"):
        try:
            __import__(module)
        except ImportError as exc:
            raise ConfigError(
                f'workers={workers}: needs {module.replace("_", "-")} (pip install -e ".[serve]")'
            ) from exc


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket on host:port, or a `ConfigError` naming `port` or `host`.

    Bound here rather than by uvicorn: a taken port is one line naming `port`, and port 0's
    actual number is known before the first request. IPPROTO_TCP named: asyncio sets
    TCP_NODELAY only on sockets whose proto says TCP, and without it a keep-alive client waits
    40 ms (Nagle + delayed ACK) for every response."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        key = "port" if exc.errno in (errno.EADDRINUSE, errno.EACCES) else "host"
        value = port if key == "port" else host
        reason = exc.strerror or str(exc)
        raise ConfigError(f"{key}={value}: cannot listen on {host}:{port} ({reason})") from exc
    sock.listen(2048)
    return sock


def _uvicorn_settings(shutdown_grace_s: float) -> dict[str, Any]:
    """uvicorn's settings for this app, in one process and in each worker alike."""
    return {
        "access_log": False,  # the app logs each request as JSON itself (observe.Observe)
        "lifespan": "off",
        "timeout_graceful_shutdown": shutdown_grace_s,
    }


@cache
def _graceful_server() -> type:
    """uvicorn's Server, which on SIGTERM/SIGINT first tells the app when the grace ends:
    explanations still running just before then answer 503 themselves, so uvicorn never has
    to cancel a request (its plain-text 500)."""
    import uvicorn

    class GracefulServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            app, grace = self.config.app, self.config.timeout_graceful_shutdown
            if getattr(app.state, "stop_at", False) is None:
                app.state.stop_at = time.monotonic() + max(grace - 0.5, 0.0)
            super().handle_exit(sig, frame)

    return GracefulServer


def _serve_one(app: FastAPI, sock: socket.socket, shutdown_grace_s: float, log: str) -> None:
    """One process: uvicorn on `sock` until SIGTERM or Ctrl-C."""
    import uvicorn

    config = uvicorn.Config(app, log_level=log, **_uvicorn_settings(shutdown_grace_s))
    server = _graceful_server()(config)
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, restores the handlers it found and then
    # raises the signal again; with `until_stopped`'s handlers that ends here, status 0.
    with until_stopped():
        server.run(sockets=[sock])


@contextlib.contextmanager
def until_stopped() -> Iterator[None]:
    """Run the block until it ends or SIGTERM / SIGINT arrives; a signal ends it quietly (no
    KeyboardInterrupt traceback, no death by signal) and the code after the block runs. serve.py
    loads its model inside one, so a signal while it loads also exits with status 0. Only the
    main thread can set handlers; elsewhere the block runs as it is."""
    main = threading.current_thread() is threading.main_thread()
    previous = (
        {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)} if main else {}
    )
    try:
        yield
    except _Stopped:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _serve_workers(
    app: FastAPI, sock: socket.socket, workers: int, shutdown_grace_s: float, log_level: str
) -> None:
    """`workers` processes on `sock`, run by gunicorn's arbiter (`[serve]` extra): each a fork
    of this process made after the model is loaded (`preload_app`), serving with uvicorn
    (`uvicorn-worker`). The forks share this process's memory copy-on-write and the embedding
    table's pages (a read-only mapping of its safetensors file): an extra worker costs its own
    Python objects only (docs/serving.md, Workers). A worker that dies is replaced; SIGTERM
    stops them all gracefully (`shutdown_grace_s`, then a kill), and so does SIGINT (the
    arbiter's SIGQUIT stops a worker's server as SIGTERM does); either way this returns.
    Workers whose arbiter was killed stop themselves. Metrics add up across the workers when
    `PROMETHEUS_MULTIPROC_DIR` is set (serve.py sets it)."""
    import gc

    from gunicorn.app.base import BaseApplication
    from gunicorn.arbiter import Arbiter
    from uvicorn_worker import UvicornWorker

    class Worker(UvicornWorker):
        CONFIG_KWARGS = {**UvicornWorker.CONFIG_KWARGS, **_uvicorn_settings(shutdown_grace_s)}

        async def _serve(self) -> None:
            """uvicorn-worker's, with the graceful server above, which SIGQUIT (the arbiter's
            quick stop, after a SIGINT to it) stops too: uvicorn-worker's own SIGQUIT handler
            only marks the gunicorn worker, which uvicorn never reads. A worker whose arbiter
            is gone (killed: it could not stop them) stops itself as on SIGTERM."""
            self.config.app = self.wsgi
            server = _graceful_server()(config=self.config)
            asyncio.get_running_loop().add_signal_handler(
                signal.SIGQUIT, server.handle_exit, signal.SIGQUIT, None
            )
            watch = asyncio.ensure_future(self._stop_when_orphaned(server))
            try:
                await server.serve(sockets=self.sockets)
            finally:
                watch.cancel()
            if not server.started:
                sys.exit(Arbiter.WORKER_BOOT_ERROR)

        async def _stop_when_orphaned(self, server: Any) -> None:
            while os.getppid() == self.ppid:
                await asyncio.sleep(_ORPHAN_POLL_S)
            server.handle_exit(signal.SIGTERM, None)

    def child_exit(arbiter: Any, worker: Any) -> None:
        if os.environ.get(observe.MULTIPROC_ENV):
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(worker.pid)  # its in-flight gauge no longer counts

    listener = os.dup(sock.fileno())  # the arbiter closes the descriptor it is given
    options = {
        "bind": [f"fd://{listener}"],
        "workers": workers,
        "worker_class": Worker,
        "preload_app": True,
        # The arbiter kills a worker still running after this (whole seconds); the worker itself
        # ends its requests at `shutdown_grace_s`.
        "graceful_timeout": math.ceil(shutdown_grace_s),
        "keepalive": 5,  # uvicorn's default, as one process has it
        "loglevel": "warning" if log_level == "info" else log_level,
        "errorlog": "-",
        "accesslog": None,
        # gunicorn >= 25's control socket: none (~/.gunicorn/gunicorn.ctl, shared by servers).
        "control_socket_disable": True,
        "child_exit": child_exit,
        "proc_name": f"fakenews_pl serve {app.state.health['model']}",
    }

    class Application(BaseApplication):
        def load_config(self) -> None:
            for key, value in options.items():
                if key in self.cfg.settings:
                    self.cfg.set(key, value)

        def load(self) -> FastAPI:
            return app

    # What the forks inherit stays shared: the collector no longer touches (and so copies)
    # the pages of the objects made so far, the vocabulary's among them.
    gc.collect()
    gc.freeze()
    parent = os.getpid()
    try:
        Application().run()
    except BaseException as exc:
        if os.getpid() != parent:
            # A worker that returns from gunicorn's loop (one stopped by SIGQUIT, or whose
            # server could not start; one stopped by SIGTERM dies of the signal) raises
            # SystemExit in the fork, up through this process's stack: it ends here, before
            # serve.py's code after `serve` (the metrics directory's removal, Hydra's end of
            # job) runs in a worker.
            sys.stdout.flush()
            sys.stderr.flush()
            code = exc.code if isinstance(exc, SystemExit) else 1
            os._exit(code if isinstance(code, int) else 1)
        # The arbiter itself ends with sys.exit: 0 once every worker has stopped.
        if not (isinstance(exc, SystemExit) and exc.code in (0, None)):
            raise
    finally:
        gc.unfreeze()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
