"""scripts/convert_tfhub.py: every failure a user can cause is one line on stderr, with no
TensorFlow logging around it; a download that cannot happen points at the local alternative."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# `.invalid` never resolves (RFC 2606), with or without network: the download fails the way
# it does offline, and a machine with network downloads nothing.
UNREACHABLE = "https://tfhub.invalid/google/nnlm-en-dim128/2"


def convert_cli(*args: str | Path, cache: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["TFHUB_CACHE_DIR"] = str(cache)  # no cached module, no other run's lock file
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "convert_tfhub.py"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,  # TF-Hub's own waits are minutes long; a hang fails here
        env=env,
    )


def one_line(run: subprocess.CompletedProcess) -> str:
    lines = run.stderr.splitlines()
    assert run.returncode == 1 and len(lines) == 1, run.stderr[-3000:]
    return lines[0]


@pytest.mark.tf
@pytest.mark.slow
def test_an_unreachable_handle_is_one_line_naming_it_and_the_local_alternative(
    tmp_path: Path,
) -> None:
    pytest.importorskip("tensorflow_hub")
    run = convert_cli(UNREACHABLE, tmp_path / "out", cache=tmp_path / "cache")
    line = one_line(run)  # TensorFlow's start-up lines are gone
    assert line.startswith(f"error: could not download {UNREACHABLE}: no network, or TF-Hub is ")
    assert "a local SavedModel directory works too" in line and "as SOURCE" in line
    assert "Traceback" not in run.stdout and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "source, expected",
    [
        ("missing", "is neither a SavedModel directory (no such directory), a short name"),
        ("notes.txt", "is neither a SavedModel directory (a file; extract a .tar.gz"),
        ("nnlm12", "'nnlm12' is neither a SavedModel directory, a short name (gnews20, "),
        ("empty_dir", "not a SavedModel directory, saved_model.pb is missing"),
    ],
)
def test_a_bad_source_is_one_line_before_tensorflow_is_imported(
    tmp_path: Path, source: str, expected: str
) -> None:
    (tmp_path / "notes.txt").write_text("not a module")
    (tmp_path / "empty_dir").mkdir()
    arg = source if source == "nnlm12" else str(tmp_path / source)
    line = one_line(convert_cli(arg, tmp_path / "out", cache=tmp_path / "cache"))
    assert line.startswith(f"error: SOURCE {arg!r}" if source != "empty_dir" else "error: SOURCE")
    assert expected in line and arg in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty_dir", "notes.txt"]


def test_an_existing_output_is_refused_up_front(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    line = one_line(convert_cli(UNREACHABLE, tmp_path / "out", cache=tmp_path / "cache"))
    assert line == f"error: {tmp_path / 'out'} already exists (pass --overwrite to replace it)"


@pytest.mark.tf
@pytest.mark.slow
def test_a_conversion_writes_nothing_to_stderr(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    pytest.importorskip("tensorflow_hub")
    from fakenews_pl.hub.hub_module import export_text_embedding

    table = np.random.default_rng(0).normal(size=(6, 8)).astype(np.float32)
    module = export_text_embedding(tmp_path / "module", ["the", "a", "news", "fake", "true"], table)
    run = convert_cli(module, tmp_path / "out", cache=tmp_path / "cache")
    assert run.returncode == 0 and run.stderr == "", run.stderr[-3000:]
    assert "max |TF - torch| = 0 over" in run.stdout


@pytest.mark.tf
@pytest.mark.parametrize(
    "error, why",
    [
        (TimeoutError("timed out"), "no network, or TF-Hub is unreachable (timed out)"),
        (
            urllib.error.HTTPError(UNREACHABLE, 404, "Not Found", None, None),
            "TF-Hub answered HTTP 404 (Not Found), check the handle",
        ),
        (ValueError("a\nmulti-line\nmessage"), "ValueError: a multi-line message"),
    ],
)
def test_download_failures_are_one_line_and_downloads_time_out(
    monkeypatch: pytest.MonkeyPatch, error: Exception, why: str
) -> None:
    hub = pytest.importorskip("tensorflow_hub")
    from fakenews_pl.hub import convert

    timeouts = []

    def fail(handle: str) -> str:
        timeouts.append(socket.getdefaulttimeout())
        raise error

    monkeypatch.setattr(hub, "resolve", fail)
    with pytest.raises(convert.ConversionError) as info:
        convert.resolve_source(UNREACHABLE)
    message = str(info.value)
    assert message.startswith(f"could not download {UNREACHABLE}: {why}; a local SavedModel")
    assert "\n" not in message
    # A stalled connection gives up instead of hanging; the process default is restored.
    assert timeouts == [convert.DOWNLOAD_TIMEOUT_S] and socket.getdefaulttimeout() is None


def test_all_converts_the_four_modules_into_their_embedding_dirs(tmp_path: Path) -> None:
    """`all` walks gnews20, nnlm50, nnlm128, wiki250 into OUT_DIR/<name>; converted ones are
    kept, so a re-run after a failure goes on where it stopped (here all four exist)."""
    for name in ("gnews20", "nnlm50", "nnlm128", "wiki250"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "meta.json").write_text("{}")
    proc = convert_cli("all", tmp_path, cache=tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    kept = [line for line in proc.stdout.splitlines() if "kept (--overwrite" in line]
    assert len(kept) == 4 and str(tmp_path / "wiki250") in kept[-1]
