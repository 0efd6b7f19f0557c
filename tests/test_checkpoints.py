"""AtomicCheckpointIO: checkpoints appear whole or not at all, and links are replaced."""

import logging
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from fakenews_pl import temporaries
from fakenews_pl.training import checkpoints
from fakenews_pl.training.callbacks import AtomicCheckpointIO

REPO = Path(__file__).resolve().parents[1]

# Starts saving a checkpoint, says so from inside torch.save (the temporary file is open) and
# waits there to be killed.
SAVER = """
import sys, time, torch
from fakenews_pl.training.callbacks import AtomicCheckpointIO

class Blocks:
    def __reduce__(self):
        print("saving", flush=True)
        time.sleep(120)
        raise SystemExit(1)

AtomicCheckpointIO().save_checkpoint({"w": torch.zeros(1000), "b": Blocks()}, sys.argv[1])
"""


def test_save_then_load_round_trips(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    state = {"state_dict": {"w": torch.arange(6.0).view(2, 3)}, "epoch": 3}
    io.save_checkpoint(state, tmp_path / "sub" / "a.ckpt")
    loaded = io.load_checkpoint(tmp_path / "sub" / "a.ckpt", weights_only=False)
    assert loaded["epoch"] == 3 and torch.equal(loaded["state_dict"]["w"], state["state_dict"]["w"])
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["a.ckpt"]


def test_a_failed_save_keeps_the_old_file_and_leaves_nothing(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"epoch": 1}, target)
    before = target.read_bytes()

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot serialise this")

    with pytest.raises(RuntimeError, match="cannot serialise"):
        io.save_checkpoint({"epoch": 2, "big": torch.zeros(1000), "bad": Unpicklable()}, target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_saving_over_a_link_replaces_the_link_not_its_target(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    best, last = tmp_path / "epoch_000.ckpt", tmp_path / "last.ckpt"
    io.save_checkpoint({"epoch": 0}, best)
    last.symlink_to(best.name)
    io.save_checkpoint({"epoch": 1}, last)
    assert not last.is_symlink()
    assert io.load_checkpoint(best, weights_only=False)["epoch"] == 0
    assert io.load_checkpoint(last, weights_only=False)["epoch"] == 1


@pytest.mark.parametrize("umask", [0o022, 0o077], ids=["umask022", "umask077"])
def test_checkpoint_files_get_the_users_permissions(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        AtomicCheckpointIO().save_checkpoint({"epoch": 0}, tmp_path / "last.ckpt")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "last.ckpt").stat().st_mode) == 0o666 & ~umask


def test_a_killed_save_is_removed_before_the_next_runs_first_save(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    saver = subprocess.Popen(
        [sys.executable, "-c", SAVER, str(tmp_path / "last.ckpt")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        if saver.stdout.readline() != b"saving\n":
            pytest.fail(f"saver exited early: {saver.communicate(timeout=30)[1].decode()[-3000:]}")
        [partial] = tmp_path.iterdir()
        assert temporaries.parse(partial).pid == saver.pid
        # A concurrent run saving into the same directory leaves a live save alone.
        AtomicCheckpointIO().save_checkpoint({"epoch": 0}, tmp_path / "epoch_000.ckpt")
        assert partial.exists()
    finally:
        saver.kill()  # SIGKILL: torch.save never returns, nothing cleans up
        saver.communicate(timeout=30)
    assert partial.exists()

    io = AtomicCheckpointIO()
    with caplog.at_level(logging.WARNING, logger="fakenews_pl.temporaries"):
        io.save_checkpoint({"epoch": 1}, tmp_path / "last.ckpt")
        io.save_checkpoint({"epoch": 2}, tmp_path / "last.ckpt")
    lines = [r.getMessage() for r in caplog.records if r.name == "fakenews_pl.temporaries"]
    assert len(lines) == 1 and lines[0].startswith(
        f"removed 1 stale temporary left by killed runs: {partial} ("
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_000.ckpt", "last.ckpt"]
    assert io.load_checkpoint(tmp_path / "last.ckpt", weights_only=False)["epoch"] == 2


# ------------------------------------------------------------ every checkpoint is verified


@pytest.fixture(scope="module")
def trained(trained_run: dict) -> Path:
    return trained_run["ckpt"]


def _damaged(source: Path, target: Path, how: str) -> Path:
    data = bytearray(source.read_bytes())
    with zipfile.ZipFile(source) as archive:
        records = {info.filename.split("/", 1)[1]: info for info in archive.infolist()}
    if how in ("weight", "pickle"):
        info = records["data/0" if how == "weight" else "data.pkl"]
        # A stored record's bytes start after its 30-byte local header, name and extra field.
        with source.open("rb") as f:
            f.seek(info.header_offset + 28)
            extra = int.from_bytes(f.read(2), "little")  # the local header's own extra length
        start = info.header_offset + 30 + len(info.filename.encode()) + extra
        data[start + info.file_size // 2] ^= 0x40  # one bit, mid-record
    elif how == "truncated":
        data = data[: len(data) // 2]
    else:
        data = bytearray(os.urandom(len(data)))
    target.write_bytes(bytes(data))
    return target


@pytest.mark.parametrize("how", ["weight", "pickle", "truncated", "random"])
def test_a_damaged_checkpoint_is_refused_by_every_reader(
    trained: Path, compose_train, root_script, tmp_path: Path, how: str
) -> None:
    from fakenews_pl import Classifier
    from fakenews_pl.errors import UserError

    bad = _damaged(trained, tmp_path / "bad.ckpt", how)
    expected = r"bad.ckpt: not a whole, unaltered checkpoint written by train.py"
    with pytest.raises(UserError, match=expected):
        Classifier.load(bad)  # predict.py, serve.py, export_model.py
    cfg = compose_train(tmp_path / "eval", f"ckpt_path={bad}", config_name="eval")
    with pytest.raises(UserError, match=expected):
        root_script("evaluate").evaluate(cfg)
    with pytest.raises(UserError, match=expected):
        root_script("train").train(compose_train(tmp_path / "train", f"ckpt_path={bad}"))
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_export_model_py_refuses_a_flipped_bit_and_writes_nothing(
    trained: Path, tmp_path: Path
) -> None:
    bad = _damaged(trained, tmp_path / "bad.ckpt", "weight")
    command = [sys.executable, "scripts/export_model.py", str(bad), str(tmp_path / "bundle")]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr[-2000:]
    assert done.stderr.startswith(f"error: {bad}: not a whole, unaltered checkpoint")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.ckpt"]


def test_verify_accepts_what_train_writes_and_the_flip_is_real(
    trained: Path, tmp_path: Path
) -> None:
    checkpoints.verify(trained)
    bad = _damaged(trained, tmp_path / "bad.ckpt", "weight")
    a = torch.load(trained, weights_only=True)["state_dict"]
    b = torch.load(bad, weights_only=True)["state_dict"]  # torch itself loads it silently
    assert sum(not torch.equal(a[k], b[k]) for k in a) == 1
