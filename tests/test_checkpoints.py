"""AtomicCheckpointIO: checkpoints appear whole or not at all, and links are replaced."""

from pathlib import Path

import pytest
import torch

from fakenews_pl.checkpoints import AtomicCheckpointIO


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
