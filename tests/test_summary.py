"""Sweep summaries: a 2 x 2 multirun on tiny modules, a failing run, missing embeddings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from fakenews_pl.data import demo
from fakenews_pl.hub import artifact
from fakenews_pl.training import summary

REPO = Path(__file__).resolve().parents[1]


def _second_embedding(assets: dict, out: Path) -> Path:
    """Another tiny artifact: the demo's vocabulary with other vectors."""
    source = artifact.read(assets["embedding"])
    vocab = artifact.read_vocab(Path(assets["embedding"]) / artifact.VOCAB_FILE)
    table = torch.randn(source.table.shape, generator=torch.Generator().manual_seed(5))
    meta = {k: source.meta[k] for k in ("oov_buckets", "recipe", "combiner")}
    with artifact.atomic_directory(out) as tmp:
        artifact.write_artifact(tmp, table, vocab, {**meta, "source": "test"})
    return out


def _multirun(args: list[str], cli: list[str], sweep: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "train.py", "-m", *args, *cli, f"hydra.sweep.dir={sweep}"]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_a_two_by_two_multirun_writes_a_summary_of_its_runs(
    demo_assets: dict, cli_overrides, tiny_run, tmp_path: Path
) -> None:
    other = _second_embedding(demo_assets, tmp_path / "other")
    paths = f"embedding.path={demo_assets['embedding']},{other}"
    proc = _multirun(
        [paths, "trainable=false,true", *tiny_run], cli_overrides(tmp_path), tmp_path / "s"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = tmp_path / "s"
    frame = pd.read_csv(sweep / "summary.csv")
    assert len(frame) == 4 and frame["error"].isna().all()
    assert summary.expected_jobs(sweep) == 4  # read from the multirun.yaml Hydra wrote
    assert (frame["status"] == "finished").all()
    for _, row in frame.iterrows():
        metrics = json.loads((sweep / str(row["run"]) / "metrics.json").read_text())
        for key in ("test/accuracy", "test/f1_Fake", "test/auroc", "train/accuracy", "fit/epochs"):
            assert row[key] == pytest.approx(metrics[key], rel=1e-12), key
    assert frame["trainable"].tolist() == [False, True, False, True]
    assert frame["encoder"].tolist() == ["bag"] * 4
    assert frame["best"].sum() == 1  # by val/best_loss, the lowest
    assert frame.loc[frame["best"], "val/best_loss"].item() == frame["val/best_loss"].min()
    assert (sweep / "summary.png").stat().st_size > 0
    assert "**best**" in (sweep / "summary.md").read_text()
    # scripts/summarize.py rebuilds the same table, here picking by test accuracy
    (sweep / "summary.csv").unlink()
    subprocess.run(
        [sys.executable, "scripts/summarize.py", str(sweep), "--metric", "test/accuracy"],
        cwd=REPO, check=True, capture_output=True,
    )  # fmt: skip
    rebuilt = pd.read_csv(sweep / "summary.csv")
    assert rebuilt.drop(columns="best").equals(frame.drop(columns="best"))
    assert rebuilt.loc[rebuilt["best"], "test/accuracy"].item() == rebuilt["test/accuracy"].max()


@pytest.mark.slow
def test_a_failing_run_is_a_row_and_the_sweep_goes_on(cli_overrides, tiny_run, tmp_path) -> None:
    proc = _multirun(["model.lr=-1,1e-3", *tiny_run], cli_overrides(tmp_path), tmp_path / "s")
    assert proc.returncode == 0, proc.stderr[-3000:]
    frame = pd.read_csv(tmp_path / "s" / "summary.csv")
    assert len(frame) == 2
    assert frame.loc[0, "error"].startswith("error: model.lr=-1: expected a learning rate > 0")
    assert pd.isna(frame.loc[1, "error"]) and frame.loc[1, "test/accuracy"] > 0


def test_a_sweep_over_unconverted_embeddings_stops_before_any_run(cli_overrides, tmp_path) -> None:
    cli = cli_overrides(tmp_path) + [f"paths.embeddings_dir={tmp_path / 'none'}"]
    proc = _multirun(["embedding=gnews20,nnlm128"], cli, tmp_path / "s")
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert "(gnews20, nnlm128)" in line and f"convert_tfhub.py nnlm128 {tmp_path / 'none'}" in line
    assert not list((tmp_path / "s").glob("*/metrics.json"))


def test_summary_of_files_alone(tmp_path: Path) -> None:
    """Rows from run dirs (metrics.json, run.json, overrides, error.txt), best marked."""
    for run, (acc, loss) in enumerate([(0.8, 0.5), (0.9, 0.4)]):
        d = tmp_path / str(run)
        (d / ".hydra").mkdir(parents=True)
        (d / ".hydra" / "overrides.yaml").write_text(f"- trainable={bool(run)}\n")
        metrics = {"test/accuracy": acc, "val/best_loss": loss, "test/support_Fake": 3}
        (d / "metrics.json").write_text(json.dumps(metrics))
        (d / "run.json").write_text(json.dumps({"embedding": "demo", "trainable": bool(run)}))
    (tmp_path / "2").mkdir()
    (tmp_path / "2" / "error.txt").write_text("error: boom\n")
    summary.write_summary(tmp_path)
    frame = pd.read_csv(tmp_path / "summary.csv")
    assert frame["run"].tolist() == [0, 1, 2] and frame["best"].tolist() == [False, True, False]
    assert frame.loc[2, "error"] == "error: boom" and frame.loc[0, "overrides"] == "trainable=False"
    assert demo.NOTE not in (tmp_path / "summary.md").read_text()


@pytest.mark.slow
def test_joblib_launcher_runs_a_sweeps_jobs_in_parallel(cli_overrides, tiny_run, tmp_path) -> None:
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    args = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model.lr=1e-4,1e-3", *tiny_run]
    proc = _multirun(args, cli_overrides(tmp_path), tmp_path / "s")
    assert proc.returncode == 0, proc.stderr[-3000:]
    frame = pd.read_csv(tmp_path / "s" / "summary.csv")
    assert len(frame) == 2 and frame["error"].isna().all()
    assert "JoblibLauncher" in (tmp_path / "s" / "multirun.yaml").read_text()


def _job(sweep: Path, number: int, files: dict[str, str]) -> None:
    job = sweep / str(number)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(f"- model.lr={number}e-4\n")
    for name, text in files.items():
        (job / name).write_text(text)


def test_a_killed_sweep_shows_every_job_and_what_became_of_it(tmp_path: Path, capsys) -> None:
    """A 4-job sweep killed in job 1: the summary said '1 runs ... 0 failed'."""
    sweep = tmp_path / "s"
    sweep.mkdir()
    sweeper = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
    hydra = {
        "sweeper": {"_target_": sweeper, "params": None},
        "overrides": {"task": ["model.lr=1e-4,2e-4", "trainable=false,true"]},
    }
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": hydra}))
    metrics = {"test/accuracy": 0.8, "val/best_loss": 0.5, "test/support_Fake": 3}
    _job(sweep, 0, {"metrics.json": json.dumps(metrics)})
    _job(sweep, 1, {})  # killed while it ran: Hydra's files only
    assert summary.expected_jobs(sweep) == 4
    line = summary.write_summary(sweep)
    assert line == "4 runs: 1 finished, 0 failed, 3 not finished"
    frame = pd.read_csv(sweep / "summary.csv")
    assert frame["run"].tolist() == [0, 1, 2, 3]
    assert frame["status"].tolist() == ["finished", "not finished", "not finished", "not finished"]
    assert (
        "4 runs: 1 finished, 0 failed, 3 not finished (the sweep has 4 jobs)"
        in (sweep / "summary.md").read_text()
    )
    from importlib import util

    spec = util.spec_from_file_location("summarize", REPO / "scripts" / "summarize.py")
    summarize = util.module_from_spec(spec)
    spec.loader.exec_module(summarize)
    assert summarize.main([str(sweep)]) == 0
    assert capsys.readouterr().out.startswith("4 runs: 1 finished, 0 failed, 3 not finished;")


def test_a_damaged_or_diverged_run_is_a_failed_row(tmp_path: Path) -> None:
    metrics = {"test/accuracy": 0.8, "val/best_loss": 0.5, "test/support_Fake": 3}
    _job(tmp_path, 0, {"metrics.json": json.dumps(metrics)})
    _job(tmp_path, 1, {"metrics.json": json.dumps(metrics)[:20]})  # truncated
    _job(tmp_path, 2, {"metrics.json": json.dumps({"status": "diverged", "diverged_epoch": 3})})
    assert summary.write_summary(tmp_path) == "3 runs: 1 finished, 2 failed, 0 not finished"
    frame = pd.read_csv(tmp_path / "summary.csv")
    assert frame["status"].tolist() == ["finished", "failed", "failed"]
    assert frame.loc[1, "error"].startswith("error: metrics.json is not readable JSON")
    assert frame.loc[2, "error"] == "error: the run diverged at epoch 3"
    assert frame["best"].tolist() == [True, False, False]


def test_an_unknown_metric_is_refused_in_one_line(tmp_path: Path, capsys) -> None:
    """`--metric bogus/key` exited 0 and marked nothing."""
    metrics = {"test/accuracy": 0.8, "val/best_loss": 0.5}
    _job(tmp_path, 0, {"metrics.json": json.dumps(metrics)})
    from importlib import util

    spec = util.spec_from_file_location("summarize", REPO / "scripts" / "summarize.py")
    summarize = util.module_from_spec(spec)
    spec.loader.exec_module(summarize)
    assert summarize.main([str(tmp_path), "--metric", "bogus/key"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "error: --metric bogus/key: no finished run's metrics.json has it; expected one of "
        "test/accuracy, val/best_loss\n"
    )
    assert not (tmp_path / "summary.csv").exists()


def _sweep_of_files(root: Path, note: str | None) -> Path:
    """Four finished runs of `model.lr x model.hidden_sizes` (`hparams_search=lr_width` in
    every one, as that sweep records it), run 3 the best by val/best_loss; one failed run."""
    grid = [("1e-4", "[256,64]"), ("1e-4", "[128,32]"), ("1e-3", "[256,64]"), ("1e-3", "[128,32]")]
    for run, (lr, width) in enumerate(grid):
        d = root / str(run)
        (d / ".hydra").mkdir(parents=True)
        overrides = [f"model.lr={lr}", f"model.hidden_sizes={width}", "hparams_search=lr_width"]
        (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        metrics = {
            "test/accuracy": 0.8 + run / 100, "val/best_loss": 0.5 - run / 100,
            "test/f1_Fake": 0.7 + run / 100, "test/recall_Fake": 0.6 + run / 100,
            "test/f1_True": 0.9, "test/support_Fake": 3, "test/support_True": 4,
            "test/macro_f1": 0.75, "fit/epochs": 10 + run, **({"note": note} if note else {}),
        }  # fmt: skip
        (d / "metrics.json").write_text(json.dumps(metrics))
        info = {"embedding": "demo", "trainable": False, "wall_s": 1.5 + run}
        (d / "run.json").write_text(json.dumps(info))
    return root


def _compact_header(markdown: str) -> list[str]:
    header = next(line for line in markdown.splitlines() if line.startswith("| run |"))
    return [cell.strip() for cell in header.strip("|").split("|")]


def test_the_compact_table_lists_exactly_the_overrides_that_differ(tmp_path: Path) -> None:
    sweep = _sweep_of_files(tmp_path, note=None)
    summary.write_summary(sweep)
    text = (sweep / "summary.md").read_text()
    assert _compact_header(text) == [
        "run", "`model.lr`", "`model.hidden_sizes`", "test accuracy", "F1 Fake", "recall Fake",
        "macro F1", "epochs", "wall s", "",
    ]  # fmt: skip
    compact = text[: text.index("## Every column")]
    assert "hparams_search" not in compact  # the same in every run
    assert "| **3** | **1e-3** | **[128,32]** | **0.8300** |" in compact and "**best**" in compact
    assert (
        "Recommended: run 3 (`model.lr=1e-3`, `model.hidden_sizes=[128,32]`), the lowest "
        "`val/best_loss` of the 4 finished runs (0.4700); on the test set, accuracy 0.8300 and "
        "recall of Fake 0.6300."
    ) in compact
    assert "SYNTHETIC" not in text
    frame = pd.read_csv(sweep / "summary.csv")  # every column stays there
    assert "hparams_search=lr_width" in frame.loc[0, "overrides"]
    assert summary.SETTINGS not in frame


def test_varying_counts_a_missing_override_as_a_value() -> None:
    settings = [{"a": "1", "b": "x"}, {"a": "1"}, {"a": "1", "b": "x", "~c": "(deleted)"}, None]
    assert summary.varying(settings) == ["b", "~c"]
    assert summary.override_values(["+a=1", "~b", "c=x=y"]) == {
        "a": "1", "b": summary.DELETED, "c": "x=y",
    }  # fmt: skip


@pytest.mark.parametrize("note", [None, demo.NOTE])
def test_the_figures_bars_are_labelled_by_their_overrides(tmp_path: Path, note) -> None:
    from fakenews_pl.training.reports import SYNTHETIC_BANNER

    sweep = _sweep_of_files(tmp_path, note)
    frame = summary.mark_best(summary.collect(sweep), "val/best_loss", "min")
    figure = summary.summary_figure(frame, "val/best_loss")
    labels = [tick.get_text() for tick in figure.axes[-1].get_xticklabels()]  # shared x axis
    assert labels == [
        "run 0\nlr=1e-4\nhidden_sizes=[256,64]", "run 1\nlr=1e-4\nhidden_sizes=[128,32]",
        "run 2\nlr=1e-3\nhidden_sizes=[256,64]", "run 3\nlr=1e-3\nhidden_sizes=[128,32]",
    ]  # fmt: skip
    (legend,) = figure.legends
    assert [t.get_text() for t in legend.get_texts()] == ["frozen", "best by val/best_loss"]
    title = figure._suptitle.get_text() if figure._suptitle else None
    assert title == (SYNTHETIC_BANNER if note else None)
    assert [axes.get_title() for axes in figure.axes] == ["Test accuracy", "Test F1 of Fake"]


def _seed_sweep(root: Path) -> dict[tuple[str, int], float]:
    """3 models (the baseline, two embeddings) x 3 seeds; val/best_loss chosen so that model b
    is best by mean, model a is within noise of it and the baseline is not."""
    losses = {
        ("baseline", 1): 0.50, ("baseline", 2): 0.52, ("baseline", 3): 0.51,
        ("a", 1): 0.41, ("a", 2): 0.38, ("a", 3): 0.42,
        ("b", 1): 0.40, ("b", 2): 0.39, ("b", 3): 0.40,
    }  # fmt: skip
    for job, ((model, seed), loss) in enumerate(losses.items()):
        d = root / str(job)
        (d / ".hydra").mkdir(parents=True)
        (d / ".hydra" / "overrides.yaml").write_text(
            yaml.safe_dump([f"cell={model}", f"seed={seed}"])
        )
        metrics = {"val/best_loss": loss, "test/accuracy": 1 - loss, "test/recall_Fake": 0.9,
                   "test/f1_Fake": 0.8 - loss / 10, "test/support_Fake": 3}  # fmt: skip
        (d / "metrics.json").write_text(json.dumps(metrics))
        info = {
            "trainable": None if model == "baseline" else False,
            "baseline": model == "baseline",
        }
        (d / "run.json").write_text(json.dumps(info))
    return losses


def test_seeds_aggregate_per_model_with_the_noise_rule(tmp_path: Path) -> None:
    import numpy as np

    losses = _seed_sweep(tmp_path)
    frame = summary.mark_best(summary.collect(tmp_path), "val/best_loss", "min")
    table = summary.over_seeds(frame, "val/best_loss", "min")
    assert table["model"].tolist() == ["cell=baseline", "cell=a", "cell=b"]  # baseline first
    for _, row in table.iterrows():
        values = [v for (m, _), v in losses.items() if f"cell={m}" == row["model"]]
        assert row["seeds"] == 3
        assert row["val/best_loss mean"] == pytest.approx(np.mean(values), abs=1e-12)
        assert row["val/best_loss std"] == pytest.approx(np.std(values, ddof=1), abs=1e-12)
        assert row["test/accuracy mean"] == pytest.approx(1 - np.mean(values), abs=1e-12)
    assert table["best"].tolist() == [False, False, True]
    # a - b per seed: 0.01, -0.01, 0.02 -> mean 0.0067, SE 0.0088: within 2 SE
    # baseline - b: 0.10, 0.13, 0.11 -> mean 0.113, SE 0.0088: not
    assert table["within_noise"].tolist() == [False, True, True]
    summary.write_summary(tmp_path)
    text = (tmp_path / "summary.md").read_text()
    assert text.count("Recommended:") == 1
    assert "Recommended: `cell=b`, the lowest mean `val/best_loss` over its 3 seeds" in text
    assert "within noise of it: `cell=a`." in text
    assert "| cell=baseline (baseline) | 3 | 0.5100 ± 0.0100 |" in text
    figure = summary.summary_figure(frame, "val/best_loss")
    labels = [t.get_text() for t in figure.axes[-1].get_xticklabels()]
    assert labels == [
        "cell=baseline\n(3 seeds)\nbaseline",
        "cell=a\n(3 seeds)",
        "cell=b\n(3 seeds)",
    ]
    (legend,) = figure.legends
    texts = [t.get_text() for t in legend.get_texts()]
    assert texts == ["baseline (TF-IDF)", "frozen", "best mean val/best_loss"]


def test_expected_jobs_lets_the_command_line_replace_a_swept_key(tmp_path: Path) -> None:
    sweeper = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
    hydra = {
        "sweeper": {"_target_": sweeper, "params": {"cell": "a,b,c", "seed": "1,2"}},
        "overrides": {"task": ["cell=a,b", "model.lr=1e-3"]},
    }
    (tmp_path / "multirun.yaml").write_text(yaml.safe_dump({"hydra": hydra}))
    assert summary.expected_jobs(tmp_path) == 4  # cell a,b (the command line's) x seed 1,2


def test_a_metric_without_a_direction_must_be_given_one(tmp_path: Path, capsys) -> None:
    """--metric test/confusion_True_Fake recommended the run with the most false alarms."""
    assert summary.default_mode("val/best_loss") == "min"
    assert summary.default_mode("test/recall_Fake") == "max"
    assert summary.default_mode("test/average_precision_Fake") == "max"
    with pytest.raises(summary.SummaryError, match="--mode min or --mode max"):
        summary.default_mode("test/confusion_True_Fake")
    metrics = {"test/accuracy": 0.8, "val/best_loss": 0.5, "note": "text", "fit/epochs": 3}
    _job(tmp_path, 0, {"metrics.json": json.dumps(metrics)})
    with pytest.raises(summary.SummaryError, match="--metric note: not a number"):
        summary.write_summary(tmp_path, metric="note", mode="max")
    summary.write_summary(tmp_path, metric="fit/epochs", mode="min")  # told: fine
    summary.write_summary(tmp_path, metric="fit/epochs", strict=False)  # no direction: no best
    assert not pd.read_csv(tmp_path / "summary.csv")["best"].any()


def test_summarize_refuses_a_directory_without_runs(trained_run: dict, capsys) -> None:
    from importlib import util

    spec = util.spec_from_file_location("summarize", REPO / "scripts" / "summarize.py")
    summarize = util.module_from_spec(spec)
    spec.loader.exec_module(summarize)
    run_dir = trained_run["dir"]  # one run's dir, not a sweep's
    assert summarize.main([str(run_dir)]) == 2
    assert "no run directories in it" in capsys.readouterr().err
    assert not (run_dir / "summary.md").exists()


def test_the_command_line_replaces_a_swept_key_when_checking_embeddings(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    config = OmegaConf.create({
        "paths": {"embeddings_dir": str(tmp_path / "none")},
        "hydra": {"overrides": {"task": ["cell=baseline"]},
                  "sweeper": {"params": {"cell": "baseline,gnews20_frozen,nnlm128_finetune"}}},
    })  # fmt: skip
    assert summary.sweep_choices(config, "cell") == ["baseline"]
    assert summary.missing_embeddings(config) == []
    config.hydra.overrides.task = ["cell=baseline,gnews20_frozen"]
    assert [name for name, _ in summary.missing_embeddings(config)] == ["gnews20"]
