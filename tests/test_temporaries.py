"""Temporaries: named after their owner, removed after it is killed, never while it runs."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakenews_pl import temporaries
from fakenews_pl.hub import artifact

LOGGER = "fakenews_pl.temporaries"

# Writes a 1,000-byte temporary file and a temporary directory holding 500 bytes, says so and
# waits to be killed.
WRITER = """
import sys, time
from pathlib import Path
from fakenews_pl import temporaries

d = Path(sys.argv[1])
with temporaries.atomic_file(d / "table.bin") as f, temporaries.temp_dir(d / "artifact") as t:
    f.write(b"x" * 1000)
    f.flush()
    (t / "part").write_bytes(b"y" * 500)
    print("ready", flush=True)
    time.sleep(120)
"""


def start(script: str, *args: str) -> subprocess.Popen:
    """A child python process; returns once it printed its first line (it is then mid-write)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        pytest.fail(f"child exited early: {proc.communicate(timeout=30)[1].decode()[-3000:]}")
    return proc


def kill(proc: subprocess.Popen) -> None:
    proc.kill()  # SIGKILL: no finally, no atexit
    proc.wait(timeout=30)
    proc.stdout.close()
    proc.stderr.close()


@pytest.fixture(scope="module")
def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=60)
    return proc.pid


def name_for(target: str, pid: int, started: str = "0", host: str | None = None, kind="tmp"):
    return f".{target}.{kind}-{host or temporaries._host()}-{pid}-{started}-0123abcd"


@pytest.fixture(params=[0o022, 0o027], ids=["umask022", "umask027"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def test_names_record_the_owner_and_parse_back() -> None:
    for target in ("last.ckpt", "epoch=3-step=10.ckpt", "a.tmp-b", "nnlm128"):
        for kind in temporaries.KINDS:
            temp = temporaries.parse(Path("/d") / temporaries.temp_name(target, kind))
            assert temp is not None and (temp.name, temp.kind) == (target, kind)
            assert (temp.pid, temp.host) == (os.getpid(), temporaries._host())
            assert temp.target == Path("/d") / target
    # Unrelated dotfiles and the temporaries of earlier versions (no owner recorded) are not ours.
    for name in (".bashrc", ".x.tmp-1234", ".nnlm128.tmp-k2j4_x9a", ".last.ckpt.a1b2c3.partial"):
        assert temporaries.parse(name) is None


def test_a_killed_writers_temporaries_are_removed_at_the_next_start_in_one_line(
    tmp_path: Path,
) -> None:
    (tmp_path / ".bashrc").write_text("keep")
    (tmp_path / ".table.bin.tmp-999999").write_text("an earlier version's: owner unknown")
    writer = start(WRITER, str(tmp_path))
    try:
        temps = sorted(p for p in tmp_path.iterdir() if temporaries.parse(p))
        assert [temporaries.parse(p).pid for p in temps] == [writer.pid, writer.pid]
        assert temporaries.clean_stale(tmp_path) == []  # its owner runs: kept
        assert all(p.exists() for p in temps)
    finally:
        kill(writer)
    assert all(p.exists() for p in temps)  # SIGKILL left them behind

    next_start = (
        "import sys; from fakenews_pl import temporaries; temporaries.clean_stale(sys.argv[1])"
    )
    cleaner = subprocess.run(
        [sys.executable, "-c", next_start, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cleaner.returncode == 0, cleaner.stderr
    lines = cleaner.stderr.splitlines()
    assert len(lines) == 1, cleaner.stderr
    assert lines[0].startswith("removed 2 stale temporaries left by killed runs: ")
    assert all(str(p) in lines[0] for p in temps) and lines[0].endswith(" (1.5 kB)")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".bashrc", ".table.bin.tmp-999999"]


def test_a_temporary_whose_owner_holds_its_lock_is_kept(tmp_path: Path, dead_pid: int) -> None:
    # A writer in another pid namespace (a container with this hostname) has a pid that means
    # nothing here: the lock it holds is what keeps its temporary.
    import fcntl

    path = tmp_path / name_for("last.ckpt", dead_pid)
    path.write_bytes(b"x")
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert temporaries.clean_stale(tmp_path) == [] and path.exists()
    finally:
        os.close(fd)
    assert temporaries.clean_stale(tmp_path) == [path] and not path.exists()


def test_this_process_keeps_its_own_temporaries(tmp_path: Path) -> None:
    with temporaries.atomic_file(tmp_path / "a.bin") as f, temporaries.temp_dir(tmp_path / "d"):
        f.write(b"x")
        assert temporaries.clean_tree(tmp_path) == []
        assert len(list(tmp_path.iterdir())) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_a_reused_pid_does_not_keep_a_temporary(tmp_path: Path) -> None:
    # After a container restart the new run often has the killed one's pid (even pid 1): the
    # recorded start time tells them apart.
    own = temporaries._started(os.getpid())
    ours = tmp_path / name_for("a.ckpt", os.getpid(), own)
    earlier = tmp_path / name_for("b.ckpt", os.getpid(), "1" + own)
    for path in (ours, earlier):
        path.write_bytes(b"x")
    assert temporaries.clean_stale(tmp_path) == [earlier]
    assert ours.exists()


def test_other_hosts_temporaries_are_left_alone(tmp_path: Path, dead_pid: int) -> None:
    path = tmp_path / name_for("last.ckpt", dead_pid, host="another_machine")
    path.write_bytes(b"x")
    assert temporaries.clean_stale(tmp_path) == [] and path.exists()


def test_clean_tree_sweeps_every_level_in_one_line(
    tmp_path: Path, dead_pid: int, caplog: pytest.LogCaptureFixture
) -> None:
    deep = tmp_path / "train" / "runs" / "r1" / "checkpoints"
    deep.mkdir(parents=True)
    stale = [
        tmp_path / name_for("cache.npz", dead_pid),
        deep / name_for("last.ckpt", dead_pid),
        tmp_path / "train" / name_for("nnlm128", dead_pid),
    ]
    stale[0].write_bytes(b"x" * 10)
    stale[1].write_bytes(b"x" * 20)
    stale[2].mkdir()
    (stale[2] / name_for("inner", dead_pid)).write_bytes(b"x" * 30)  # goes with its directory
    (deep / "last.ckpt").write_bytes(b"keep")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        removed = temporaries.clean_tree(tmp_path)
    assert sorted(removed) == sorted(stale) and not any(p.exists() for p in stale)
    assert (deep / "last.ckpt").read_bytes() == b"keep"
    [line] = records(caplog)
    assert line.startswith("removed 3 stale temporaries left by killed runs: ")
    assert line.endswith(" (60 bytes)")
    assert temporaries.clean_tree(tmp_path / "missing") == []


def test_report_names_a_few_and_counts_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert temporaries.report_cleaned([]) is None
        line = temporaries.report_cleaned([Path(f"/d/.t{i}") for i in range(5)], 1_300_000_000)
    assert line == (
        "removed 5 stale temporaries left by killed runs: /d/.t0, /d/.t1, /d/.t2 and 2 more "
        "(1.3 GB)"
    )
    assert records(caplog) == [line]


def test_atomic_file_and_path_replace_the_target_with_the_users_permissions(
    tmp_path: Path, umask: int
) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    os.chmod(target, 0o600)
    with temporaries.atomic_file(target) as f:
        f.write(b"new")
    assert target.read_bytes() == b"new" and mode(target) == 0o666 & ~umask
    with temporaries.atomic_path(tmp_path / "b.csv") as path:
        path.write_text("a,b\n")
    assert mode(tmp_path / "b.csv") == 0o666 & ~umask
    with pytest.raises(KeyboardInterrupt), temporaries.atomic_file(target, "w") as f:
        f.write("partial")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"new" and sorted(tmp_path.iterdir()) == [
        tmp_path / "b.csv",
        target,
    ]


def test_atomic_directory_has_the_users_permissions(tmp_path: Path, umask: int) -> None:
    import torch

    from fakenews_pl.hub.tokenizer import TextRecipe

    out = tmp_path / "embeddings" / "nnlm128"
    meta = {"source": "t", "oov_buckets": 1, "combiner": "sqrtn", "recipe": TextRecipe().to_dict()}
    with artifact.atomic_directory(out) as tmp:
        assert mode(tmp) == 0o777 & ~umask
        artifact.write_artifact(tmp, torch.zeros(3, 2), ["a", "b"], meta)  # safetensors: 0o600
    assert mode(out) == 0o777 & ~umask
    assert {p.name: mode(p) for p in out.iterdir()} == {
        name: 0o666 & ~umask for name in (artifact.TABLE_FILE, artifact.VOCAB_FILE, "meta.json")
    }
    with artifact.atomic_directory(out, overwrite=True) as tmp:
        (tmp / "vocab.txt").write_text("b\n")
    assert mode(out) == 0o777 & ~umask and (out / "vocab.txt").read_text() == "b\n"
    assert [p.name for p in out.parent.iterdir()] == ["nnlm128"]


def test_atomic_directory_removes_a_killed_conversions_temporary_first(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    converter = start(
        "import sys, time\nfrom fakenews_pl.hub import artifact\n"
        "with artifact.atomic_directory(sys.argv[1]) as tmp:\n"
        "    (tmp / 'table.safetensors').write_bytes(b'x' * 2000)\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(120)\n",
        str(tmp_path / "nnlm128"),
    )
    try:
        [left] = list(tmp_path.iterdir())
        with artifact.atomic_directory(tmp_path / "wiki250"):  # a concurrent conversion
            pass
        assert left.exists()  # its owner runs
    finally:
        kill(converter)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        with artifact.atomic_directory(tmp_path / "nnlm128") as tmp:
            (tmp / "meta.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nnlm128", "wiki250"]
    assert records(caplog) == [f"removed 1 stale temporary left by killed runs: {left} (2.0 kB)"]


def test_a_directory_moved_aside_by_a_killed_replace_is_restored(
    tmp_path: Path, dead_pid: int, caplog: pytest.LogCaptureFixture
) -> None:
    # Killed between `out -> .out.old-...` and `.out.tmp-... -> out`: the old version is the only
    # complete one, so it goes back; the half-placed new one goes.
    old = tmp_path / name_for("nnlm128", dead_pid, kind="old")
    new = tmp_path / name_for("nnlm128", dead_pid)
    for path in (old, new):
        path.mkdir()
        (path / "meta.json").write_text(path.name)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert temporaries.clean_stale(tmp_path) == [new]
    assert [p.name for p in tmp_path.iterdir()] == ["nnlm128"]
    assert (tmp_path / "nnlm128" / "meta.json").read_text() == old.name
    assert records(caplog)[0].startswith(f"restored {tmp_path / 'nnlm128'} from {old}")


def test_atomic_directory_refuses_a_directory_that_appeared_meanwhile(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    with pytest.raises(FileExistsError, match="appeared while"):
        with artifact.atomic_directory(out) as tmp:
            (tmp / "a").write_text("mine")
            out.mkdir()  # another rank finished first
            (out / "a").write_text("theirs")
    assert (out / "a").read_text() == "theirs" and [p.name for p in tmp_path.iterdir()] == ["demo"]
