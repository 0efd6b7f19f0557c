"""Temporary files and directories beside their target, named after the process that owns them.

Every atomic writer here builds its output under a temporary name and renames it into place.
A writer killed by SIGKILL (the OOM killer, a preempted cluster job, `kill -9`) cannot remove
its temporary, and a converted table or a checkpoint is gigabytes. So temporaries are named

    .{name}.{kind}-{host}-{pid}-{started}-{token}     e.g. .last.ckpt.tmp-gpu01-41872-2kq9x-9f3a0c1d

`name` is the target's name, `kind` `tmp` (being written) or `old` (a directory's previous
version, moved aside while it is replaced), `host` the hostname with every character outside
[A-Za-z0-9] as `_`, `pid` the owner's process id, `started` its start time (clock ticks after
boot, base 36; `0` where unknown), `token` 8 random hex digits. The owner also holds an
exclusive `flock` on the temporary while it writes.

Writers: `atomic_file(target)` yields an open file, `atomic_path(target)` a path (for writers
that take one: pandas, numpy), `temp_dir(target)` with `replace_directory` build a directory
(`artifact.atomic_directory`). What they create gets the user's usual permissions (0o666 or
0o777 minus the umask, not mkstemp's 0o600); `give_usual_permissions` fixes up a tree.

`clean_stale(directory)` and `clean_tree(root)` remove a temporary only when its owner is
provably gone: it was made on this host, its process no longer runs (or is a zombie, or the pid
now belongs to a process started at another time), and nobody holds its lock. A concurrent
run's temporary is never touched, even one from another pid namespace (a container sharing the
hostname), and nothing else is: names of any other shape, other hosts' temporaries (a shared
filesystem) and temporaries left by earlier versions of this code (no owner recorded) stay.
On Windows nothing is cleaned.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from fakenews_pl.errors import UserError

try:
    import fcntl
except ImportError:  # Windows: liveness by pid alone
    fcntl = None

log = logging.getLogger(__name__)

KINDS = ("tmp", "old")
_PATTERN = re.compile(
    r"\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<host>[A-Za-z0-9_]+)-(?P<pid>[1-9][0-9]*)"
    r"-(?P<started>[0-9a-z]+)-(?P<token>[0-9a-f]{8})"
)
_SHOWN = 3  # paths named in the report line before "and N more"


# --------------------------------------------------------------------------- the owner


def _host() -> str:
    """This host's name as it appears in temporary names: [A-Za-z0-9_], at most 32 characters."""
    name = socket.gethostname() or "localhost"
    safe = re.sub(r"[^A-Za-z0-9]", "_", name)
    if len(safe) > 32:  # keep it readable and distinct from hosts sharing the prefix
        safe = f"{safe[:25]}_{hashlib.sha1(name.encode()).hexdigest()[:6]}"
    return safe


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks after boot) of a process from /proc, None if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # Fields after the command name, which is in parentheses and may hold spaces or ")":
    # field 3 is the state, field 22 the start time.
    fields = data[data.rindex(b")") + 2 :].split()
    try:
        return fields[0].decode(), int(fields[19])
    except (IndexError, ValueError):
        return None


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


def _started(pid: int) -> str:
    stat = _proc_stat(pid)
    return _base36(stat[1]) if stat else "0"


def temp_name(name: str, kind: str = "tmp") -> str:
    """A fresh temporary name for `name` owned by this process (see the module docstring)."""
    if kind not in KINDS:
        raise ValueError(f"temporary kind {kind!r}, expected one of {KINDS}")
    pid = os.getpid()
    return f".{name}.{kind}-{_host()}-{pid}-{_started(pid)}-{secrets.token_hex(4)}"


@dataclass(frozen=True)
class Temporary:
    """A path whose name follows `temp_name`'s scheme, with its owner."""

    path: Path
    name: str  # the target's name
    kind: str
    host: str
    pid: int
    started: str

    @property
    def target(self) -> Path:
        """The path this temporary stands for."""
        return self.path.with_name(self.name)


def parse(path: str | os.PathLike) -> Temporary | None:
    """The temporary `path` names, or None when its name is not one of ours."""
    path = Path(path)
    m = _PATTERN.fullmatch(path.name)
    if m is None:
        return None
    return Temporary(path, m["name"], m["kind"], m["host"], int(m["pid"]), m["started"])


def owner() -> str:
    """This process as `host:pid:started` (the fields of a temporary's name): what
    `owner_gone` checks, e.g. for a search worker's running trial."""
    pid = os.getpid()
    return f"{_host()}:{pid}:{_started(pid)}"


def owner_gone(token: str) -> bool:
    """True when the `owner()` token names a process of this host that no longer runs; False
    while it runs, and for another host's or an unreadable token (nothing can be told)."""
    host, _, rest = str(token).partition(":")
    pid, _, started = rest.partition(":")
    if host != _host() or not pid.isdigit() or int(pid) < 1:
        return False
    return not _owner_alive(int(pid), started or "0")


def _owner_alive(pid: int, started: str) -> bool:
    if pid == os.getpid():
        return started == _started(pid)  # else an earlier process that had our pid (a container)
    if os.name == "nt":
        return True  # os.kill(pid, 0) would terminate it: never clean there
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, another user's
    except OSError:
        return True  # cannot tell: keep
    stat = _proc_stat(pid)
    if stat is None:
        return True  # no /proc (macOS) or hidden (hidepid): the pid exists, keep
    state, start = stat
    if state in ("Z", "X"):
        return False  # killed, not yet reaped: it will never write again
    return started == "0" or int(started, 36) == start


def _locked(path: Path) -> bool:
    """Whether some process holds the owner's lock on `path` (True when it cannot be checked)."""
    if fcntl is None:
        return False
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)  # never block on a FIFO
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False  # a filesystem without flock: the pid check decided
    finally:
        os.close(fd)
    return False


def is_stale(temp: Temporary) -> bool:
    """Whether `temp` was left by a process of this host that is gone (see the module docstring)."""
    if temp.host != _host():
        return False  # another machine's process table is not ours to read
    return not _owner_alive(temp.pid, temp.started) and not _locked(temp.path)


# --------------------------------------------------------------------------- writing


def _lock(fd: int) -> None:
    if fcntl is not None:
        with contextlib.suppress(OSError):  # no flock here (some network filesystems): pid only
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _create_file(target: Path, kind: str = "tmp") -> tuple[Path, int]:
    """A new empty temporary beside `target`, mode 0o666 minus the umask; (path, locked fd)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        path = target.with_name(temp_name(target.name, kind))
        try:
            fd = os.open(path, flags, 0o666)
        except FileExistsError:  # 2^-32 per try
            continue
        _lock(fd)
        return path, fd


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike, mode: str = "wb", **open_kwargs: Any) -> Iterator[IO]:
    """Write `target` through a temporary sibling, renamed over `target` when the block succeeds.

    Yields the open file (`mode` "wb" or "w", `open_kwargs` as for `open`). The file gets the
    permissions a new file would (0o666 minus the umask); on any exception, Ctrl-C included,
    it is removed and `target` is left as it was.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_file mode {mode!r}, expected 'wb' or 'w'")
    target = Path(target)
    path, fd = _create_file(target)
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.replace(path, target)  # before closing: the lock is held until the rename
    except BaseException:
        path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Like `atomic_file`, for writers that take a path: yields the (empty) temporary's path."""
    target = Path(target)
    path, fd = _create_file(target)
    try:
        yield path
        os.replace(path, target)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def temp_dir(target: str | os.PathLike, kind: str = "tmp") -> Iterator[Path]:
    """A new temporary directory beside `target` (0o777 minus the umask), locked for the block.

    Whatever of it is still there when the block ends (normally or not) is removed: rename it
    into place inside the block to keep it.
    """
    target = Path(target)
    while True:
        path = target.with_name(temp_name(target.name, kind))
        try:
            os.mkdir(path, 0o777)
            break
        except FileExistsError:
            continue
    fd = os.open(path, os.O_RDONLY)
    _lock(fd)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(fd)


def replace_directory(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Rename directory `src` to `dst`, replacing an existing `dst` (moved aside, then removed).

    If the process is stopped between the two renames, the previous `dst` is under an `old`
    temporary name; `clean_stale` puts it back when `dst` is missing.
    """
    src, dst = Path(src), Path(dst)
    if not dst.exists():
        os.replace(src, dst)
        return
    old = dst.with_name(temp_name(dst.name, "old"))
    fd = os.open(dst, os.O_RDONLY)
    try:
        _lock(fd)  # the lock follows the directory to its `old` name
        os.replace(dst, old)
        try:
            os.replace(src, dst)
        except BaseException:
            if not os.path.lexists(dst):
                os.replace(old, dst)
            raise
        _discard(old)
    finally:
        os.close(fd)


def _discard(path: Path) -> bool:
    """Remove `path`, a directory tree or a file or link (rmtree alone would leave those
    behind); False when it is already gone. Other OSErrors propagate."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        return False
    return True


def refuse_input_as_output(
    out: str | os.PathLike, inputs: Sequence[str | os.PathLike | None], key: str
) -> None:
    """Refuse writing `out` (config key `key`) where it would replace a file the command reads:
    one of `inputs` itself (by path or as the same file through a link), or a path inside an
    input directory (an exported bundle, an embedding artifact)."""
    out = Path(out)
    resolved = out.resolve()
    for given in inputs:
        if given is None:
            continue
        source = Path(given)
        if not source.exists():
            continue
        same = resolved == source.resolve() or (out.exists() and os.path.samefile(out, source))
        inside = source.is_dir() and source.resolve() in resolved.parents
        if same or inside:
            where = "is" if same else "is inside"
            raise UserError(
                f"{key}={out} {where} {source}, which this command reads; expected a path "
                "that is not one of its inputs (inputs are never written over)"
            )


def write_json(path: str | os.PathLike, content: Any) -> None:
    """`content` as indented JSON at `path`, written atomically (`atomic_file`)."""
    with atomic_file(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(content, indent=2) + "\n")


def umask() -> int:
    """The process umask, read without changing it where /proc tells it (Linux 4.7+)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere the only way to read it is to set it
    os.umask(mask)
    return mask


def give_usual_permissions(root: str | os.PathLike) -> None:
    """Give `root` and everything below it the permissions a new file or directory gets.

    0o777 minus the umask for directories, 0o666 minus the umask for files (their execute bits
    kept): writers such as safetensors create 0o600 files, mkdtemp 0o700 directories.
    """
    mask = umask()
    for path in (Path(root), *Path(root).rglob("*")):
        st = path.lstat()
        if stat.S_ISDIR(st.st_mode):
            os.chmod(path, 0o777 & ~mask)
        elif stat.S_ISREG(st.st_mode):
            os.chmod(path, (0o666 | (st.st_mode & 0o111)) & ~mask)


# --------------------------------------------------------------------------- cleaning


def _size(path: Path) -> int:
    try:
        if not path.is_dir() or path.is_symlink():
            return path.lstat().st_size
        return sum(
            (Path(root) / f).lstat().st_size for root, _, files in os.walk(path) for f in files
        )
    except OSError:
        return 0


def _remove(temp: Temporary) -> int | None:
    """Remove (or, for an `old` directory whose target is missing, restore) a stale temporary.

    Returns the bytes removed, None when nothing was removed.
    """
    path = temp.path
    if temp.kind == "old" and not os.path.lexists(temp.target):
        # Killed between moving the previous version aside and renaming the new one in:
        # the previous version is the only complete one.
        try:
            os.rename(path, temp.target)
        except OSError:
            return None
        log.warning(
            "restored %s from %s, left by a run killed while replacing it", temp.target, path
        )
        return None
    size = _size(path)
    try:
        if not _discard(path):
            return None  # another cleaner got there first
    except OSError:
        return None  # not ours to remove (permissions): left alone
    return size


def _sweep(directory: Path, recurse: bool) -> list[tuple[Path, int]]:
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []
    removed = []
    for entry in entries:
        temp = parse(entry.path)
        if temp is not None:  # never descend into a temporary
            if is_stale(temp) and (size := _remove(temp)) is not None:
                removed.append((temp.path, size))
        elif recurse and entry.is_dir(follow_symlinks=False):
            removed += _sweep(Path(entry.path), recurse)
    return removed


def _format_bytes(n: int) -> str:
    if n < 1000:
        return f"{n} bytes"
    for unit in ("kB", "MB", "GB", "TB"):
        n /= 1000
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}"
    raise AssertionError


def report_cleaned(paths: Sequence[Path], nbytes: int | None = None) -> str | None:
    """Log (warning) and return one line naming the removed `paths`; nothing when empty."""
    if not paths:
        return None
    names = ", ".join(str(p) for p in paths[:_SHOWN])
    if len(paths) > _SHOWN:
        names += f" and {len(paths) - _SHOWN} more"
    noun = "temporary" if len(paths) == 1 else "temporaries"
    size = "" if nbytes is None else f" ({_format_bytes(nbytes)})"
    line = f"removed {len(paths)} stale {noun} left by killed runs: {names}{size}"
    log.warning(line)
    return line


def clean_stale(directory: str | os.PathLike, report: bool = True) -> list[Path]:
    """Remove the temporaries in `directory` (not below) whose owner is gone; see `is_stale`.

    Returns the removed paths; `report` logs them in one line (`report_cleaned`).
    """
    removed = _sweep(Path(directory), recurse=False)
    if report:
        report_cleaned([p for p, _ in removed], sum(n for _, n in removed))
    return [p for p, _ in removed]


def clean_tree(root: str | os.PathLike, report: bool = True) -> list[Path]:
    """`clean_stale` for `root` and every directory below it (symlinks not followed)."""
    removed = _sweep(Path(root), recurse=True)
    if report:
        report_cleaned([p for p, _ in removed], sum(n for _, n in removed))
    return [p for p, _ in removed]
