"""Servers started by the tests: a free port of 127.0.0.1, and a `python serve.py ...` process
waited for until it answers (test_server.py, test_predictors.py, test_v2.py, postgres.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Server:
    """A server process and its address; `log` holds its stdout and stderr."""

    proc: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serving(args: list[str], log: Path, port: int, timeout: float = 120) -> Iterator[Server]:
    """Start `python args...` in the repository root, wait until GET /health answers, and kill
    the process and any it started (its process group) at the end whatever happened."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PROJECT_ROOT": str(REPO)},
            start_new_session=True,  # its own process group: its workers, if any, go with it
        )
    server = Server(proc, port, log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert proc.poll() is None, f"the server exited ({proc.returncode}):\n{server.tail()}"
            assert time.monotonic() < deadline, f"no answer in {timeout} s:\n{server.tail()}"
            try:
                if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
