"""What a run prints while it trains (fakenews_pl/training/progress.py): the run's description,
one line per epoch whose figures are the history's, `*` where val/loss improved, why it stopped;
and Lightning's lines a user cannot act on, dropped."""

import contextlib
import io
import logging
import math
import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from fakenews_pl.training import pipeline
from fakenews_pl.training.progress import HEADER, count, epoch_line

WITH_PROGRESS = [
    "+callbacks.progress._target_=fakenews_pl.training.progress.EpochProgress",
    "+callbacks.progress.embedding=demo",
    "trainer.enable_progress_bar=true",
    "trainer.limit_train_batches=null",
    "trainer.limit_val_batches=null",
]


@pytest.fixture(scope="module")
def full_run(compose_train, tmp_path_factory) -> dict:
    """The demo trained to early stopping (fused epochs: ~2 s), with what it printed."""
    out = tmp_path_factory.mktemp("progress")
    cfg = compose_train(out, *WITH_PROGRESS, "trainer.max_epochs=100")
    stream = io.StringIO()  # capsys is per test: capture by hand
    with contextlib.redirect_stdout(stream):
        metrics, objects = pipeline.train(cfg)
    return {"text": stream.getvalue(), "metrics": metrics, **objects}


def test_each_epoch_line_shows_the_historys_figures(full_run) -> None:
    lines = full_run["text"].splitlines()
    history = full_run["model"].history
    start = lines.index(HEADER) + 1
    rows = lines[start : start + len(history)]
    best = math.inf
    for line, row in zip(rows, history, strict=True):
        fields = line.split()
        assert int(fields[0]) == row["epoch"]
        shown = [float(f) for f in fields[3:7]]
        keys = ["train/loss", "train/accuracy", "val/loss", "val/accuracy"]
        assert shown == [round(row[k], 4) for k in keys], line
        assert float(fields[1]) >= 0 and float(fields[2].replace(",", "")) > 0  # seconds, rows/s
        improved = row["val/loss"] < best
        best = min(best, row["val/loss"])
        assert line.endswith(" *") == improved, line
    assert "v_num" not in full_run["text"] and "FLOPs" not in full_run["text"]


def test_the_run_says_why_it_stopped_and_which_epoch_was_best(full_run) -> None:
    history = full_run["model"].history
    last = history[-1]["epoch"]
    assert last < 100  # the demo stops early
    best = min(history, key=lambda row: row["val/loss"])
    text = full_run["text"]
    assert (
        f"stopped after epoch {last}: val/loss did not improve for 2 epochs (early stopping)\n"
        f"best val/loss {best['val/loss']:.4f} at epoch {best['epoch']}\n"
    ) in text
    assert full_run["metrics"]["fit/epochs"] == last


def test_the_run_is_described_before_the_first_epoch(full_run) -> None:
    datamodule, model = full_run["datamodule"], full_run["model"]
    rows, dim = model.net.embedding.weight.shape
    text = full_run["text"]
    head = text[: text.index(HEADER)]
    assert f"model  demo table {rows:,} x {dim} (frozen), sqrtn bag of token vectors" in head
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert f"dense 256 > 64 > 1; {trained:,} of" in head
    split = datamodule.rows
    assert f"data   {len(split['train']):,} train, {len(split['val']):,} validation" in head
    assert "early stopping: val/loss not improved for 2 epochs" in head
    assert max(len(line) for line in text.splitlines()) <= 80  # an 80-column terminal


def test_the_bar_over_minibatches_leaves_the_epoch_lines(compose_train, tmp_path, capsys) -> None:
    cfg = compose_train(
        tmp_path, *WITH_PROGRESS, "+callbacks.progress.bar=true", "trainer.max_epochs=2",
        "data.fuse_train_batches=false",
    )  # fmt: skip
    pipeline.train(cfg)
    # bar=true draws even here (a pipe): read the lines the terminal would show
    shown = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", capsys.readouterr().out)
    lines = [line.split("\r")[-1] for line in shown.splitlines()]
    assert "stopped after epoch 2: trainer.max_epochs=2" in lines
    epochs = [line.split()[0] for line in lines if line[:5].strip() in ("1", "2")]
    assert epochs == ["1", "2"]
    assert "minibatches" in shown  # the bar was drawn


def test_epoch_line_and_counts() -> None:
    row = {"epoch": 3, "train/loss": 0.5, "train/accuracy": 0.75, "val/loss": 0.25}
    line = epoch_line(row, 1.5, 3000, 1.0, improved=False)
    assert line.split() == ["3", "1.50", "3,000", "0.5000", "0.7500", "0.2500", "-"]
    assert epoch_line(row, 1.5, 0, 0.0, improved=True).split()[2] == "-"
    assert epoch_line(row, 1.5, 0, 0.0, improved=True).endswith(" *")
    assert [count(n) for n in (24_961, 124_600, 252_410_497)] == ["24,961", "124.6 K", "252.4 M"]


@pytest.mark.parametrize(
    ("message", "kept"),
    [
        ("GPU available: False, used: False", False),
        ("TPU available: False, using: 0 TPU cores", False),
        ("`Trainer.fit` stopped: `max_epochs=3` reached.", False),
        ("GPU available: True (cuda), used: True", True),
        ("ckpt_path=last: resuming /x/last.ckpt", True),
    ],
)
def test_lightnings_lines_a_user_cannot_act_on_are_dropped(message: str, kept: bool) -> None:
    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    record = logger.makeRecord(logger.name, logging.INFO, __file__, 1, message, (), None)
    assert logger.filter(record) == kept


def test_the_console_shows_messages_alone_and_the_log_file_everything() -> None:
    with initialize_config_dir(
        config_dir=str(Path(__file__).resolve().parents[1] / "conf"), version_base="1.3"
    ):
        cfg = compose("train", return_hydra_config=True)
    logging_cfg = cfg.hydra.job_logging
    console = logging_cfg.handlers.console.formatter
    assert logging_cfg.formatters[console].format == "%(message)s"
    assert "%(asctime)s" in logging_cfg.formatters[logging_cfg.handlers.file.formatter].format


def test_the_bar_setting_is_a_key_of_the_config() -> None:
    """`callbacks.progress.bar=false`, as documented, was refused (not in the config)."""
    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("train", overrides=["callbacks.progress.bar=false"])
    assert cfg.callbacks.progress.bar is False
