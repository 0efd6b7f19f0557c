"""The pieces train.py and evaluate.py wire: demo inputs, embedding lookup, config groups."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from pytorch_lightning.loggers import CSVLogger

from fakenews_pl.data import demo
from fakenews_pl.training import pipeline


def test_missing_embedding_names_the_convert_command(compose_train, tmp_path: Path) -> None:
    cfg = compose_train(tmp_path, "embedding=nnlm128")
    with pytest.raises(FileNotFoundError) as info:
        pipeline.ensure_embedding(cfg.embedding)
    assert f"python scripts/convert_tfhub.py nnlm128 {cfg.embedding.path}" in str(info.value)
    typo = tmp_path / "typo"
    cfg = compose_train(tmp_path, f"embedding.path={typo}")
    with pytest.raises(FileNotFoundError, match=f"convert_tfhub.py SOURCE {typo}"):
        pipeline.ensure_embedding(cfg.embedding)


def test_demo_inputs_are_written_only_where_the_demo_lives(compose_train, tmp_path: Path) -> None:
    fresh = tmp_path / "fresh_demo"
    cfg = compose_train(tmp_path, f"paths.demo_dir={fresh}")
    assert pipeline.prepare_demo(cfg)  # embedding=demo data=demo: synthetic
    assert sorted(p.name for p in fresh.iterdir()) == ["embedding", "test.csv", "train.csv"]
    typo = tmp_path / "typo"
    cfg = compose_train(tmp_path, f"paths.demo_dir={fresh}", f"embedding.path={typo}")
    assert pipeline.prepare_demo(cfg)  # the data is still the demo's
    assert not typo.exists()  # never generated at a mistyped embedding.path
    other = tmp_path / "other"
    cfg = compose_train(
        tmp_path,
        f"paths.demo_dir={other}",
        "data=csv",
        f"data.train_csv={fresh / 'train.csv'}",
        f"data.test_csv={fresh / 'test.csv'}",
        f"embedding.path={fresh / 'embedding'}",
    )
    assert not pipeline.prepare_demo(cfg) and not other.exists()


def test_demo_is_recognised_without_writing(tmp_path: Path) -> None:
    where = demo.inputs(tmp_path / "d")
    assert demo.uses_demo(tmp_path / "d", [tmp_path / "x", where["test_csv"]])
    assert not demo.uses_demo(tmp_path / "d", [tmp_path / "d" / "other.csv"])
    assert not (tmp_path / "d").exists()


def test_data_files_are_the_files_or_the_pair(compose_train, tmp_path: Path) -> None:
    cfg = compose_train(tmp_path, "data=seed_fakenews")
    assert [Path(f).name for f in pipeline.data_files(cfg.data)][0] == "gos_1.csv.gz"
    cfg = compose_train(tmp_path)
    assert pipeline.data_files(cfg.data) == [cfg.data.train_csv, cfg.data.test_csv]


def test_tensorboard_is_opt_in(compose_train, tmp_path: Path) -> None:
    default = pipeline.instantiate_group(compose_train(tmp_path).logger)
    assert [type(logger) for logger in default] == [CSVLogger]
    both = pipeline.instantiate_group(compose_train(tmp_path, "logger=tensorboard").logger)
    assert sorted(type(logger).__name__ for logger in both) == ["CSVLogger", "TensorBoardLogger"]


def test_report_on_must_be_last_or_best() -> None:
    with pytest.raises(ValueError, match="report_on must be one of"):
        pipeline.weights_for_report(None, None, "first")


def test_a_killed_runs_temporaries_are_removed_at_the_next_start(
    compose_train, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = compose_train(tmp_path)
    target = Path(cfg.paths.log_dir) / "train" / "runs" / "old" / "checkpoints" / "last.ckpt"
    target.parent.mkdir(parents=True)
    code = (
        "import os, sys\n"
        "from fakenews_pl import temporaries\n"
        "with temporaries.atomic_file(sys.argv[1]) as f:\n"
        "    f.write(b'half a checkpoint'); f.flush(); os._exit(9)\n"  # dies mid-write
    )
    subprocess.run([sys.executable, "-c", code, str(target)], check=False)
    (left,) = list(target.parent.iterdir())
    assert left.name.startswith(".last.ckpt.tmp-")
    with caplog.at_level(logging.WARNING):
        pipeline.clean_stale_temporaries(cfg)
    assert list(target.parent.iterdir()) == []
    (line,) = [r.getMessage() for r in caplog.records if "stale" in r.getMessage()]
    assert str(left) in line and line.startswith("removed 1 stale temporary")


@pytest.mark.slow
def test_runs_started_together_get_their_own_dirs_and_share_caches_safely(tmp_path: Path) -> None:
    """Two runs at the same instant, both generating the demo and the token cache into the
    same (fresh) folders: distinct run dirs, identical results, no temporaries left. What
    each prints has no adverts, library deprecations or CPU-run device lines, and its epoch
    lines count from 1, like every file."""
    repo = Path(__file__).resolve().parents[1]
    shared = [
        f"paths.log_dir={tmp_path / 'logs'}",
        f"paths.demo_dir={tmp_path / 'demo'}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "trainer.max_epochs=1",
    ]
    procs = [
        subprocess.Popen(
            [sys.executable, "train.py", *shared],
            cwd=repo,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outputs]
    for out, err in outputs:
        assert "litlogger" not in out + err and "deprecated" not in (out + err).lower()
        assert "stopped after epoch 1: trainer.max_epochs=1" in out
        assert "GPU available: False" not in out + err and "FLOPs" not in out
        assert "][INFO] - " not in out + err  # the console shows messages alone
        table = out.split("epoch   seconds", 1)[1].splitlines()[1:]
        assert table[0].split()[0] == "1" and table[1].startswith("stopped after epoch 1")
    runs = sorted((tmp_path / "logs" / "train" / "runs").iterdir())
    assert len(runs) == 2
    results = [json.loads((run / "metrics.json").read_text()) for run in runs]
    assert results[0] == results[1]
    leftovers = [p for p in tmp_path.rglob(".*") if ".tmp-" in p.name or ".old-" in p.name]
    assert leftovers == []


def test_isot_data_names_its_two_files(compose_train, tmp_path: Path) -> None:
    cfg = compose_train(tmp_path, "data=isot", f"data.dir={tmp_path / 'isot'}")
    assert [Path(p).name for p in pipeline.data_files(cfg.data)] == ["Fake.csv", "True.csv"]
    assert pipeline.prepare_demo(cfg)  # the demo embedding is still selected; no crash on ISOT
