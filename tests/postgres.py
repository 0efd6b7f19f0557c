"""A throwaway PostgreSQL server on 127.0.0.1 for the tests and benchmarks that need a real one.

`server()` runs `initdb` and `pg_ctl` from PATH or Debian's /usr/lib/postgresql/<version>/bin,
as the unprivileged user `nobody` when this process is root (initdb refuses root), in a fresh
directory under the system's temporary directory (pytest's are private to root), on a free port;
yields the URL of an empty database and stops the server and removes the directory at the end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from servers import free_port

UNPRIVILEGED = "nobody"


def find_bindir() -> Path | None:
    """The directory of `initdb` and `pg_ctl`: PATH's, else Debian's newest; None if absent."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).parent
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    return found[-1].parent if found else None


def _as_owner(args: list[str]) -> list[str]:
    """`args` run as `nobody` when this process is root (PostgreSQL refuses to run as root)."""
    if os.geteuid() != 0:
        return args
    return ["runuser", "-u", UNPRIVILEGED, "--", *args]


@contextlib.contextmanager
def server(database: str = "search") -> Iterator[str]:
    """A running server with an empty `database`: yields `postgresql+psycopg://...` to it."""
    bindir = find_bindir()
    if bindir is None:
        raise FileNotFoundError("PostgreSQL's initdb is not installed (Debian: postgresql)")
    root = Path(tempfile.mkdtemp(prefix="pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, UNPRIVILEGED)
    data, port = root / "data", free_port()

    def run(*args: str) -> None:
        proc = subprocess.run(
            _as_owner([str(bindir / args[0]), *args[1:]]),
            capture_output=True, text=True, timeout=120, cwd=root,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed: {proc.stderr[-2000:]}")

    try:
        run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        run("pg_ctl", "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start")
        try:
            import psycopg  # the [sweep] extra's driver; not every install has createdb

            dsn = f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{database}"')
            yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/{database}"
        finally:
            run("pg_ctl", "-D", str(data), "stop", "-m", "fast")
    finally:
        shutil.rmtree(root, ignore_errors=True)
