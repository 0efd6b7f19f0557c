"""Shared pytest fixtures."""

# =============================================================================================
# Training and evaluation fixtures (tests/test_data.py, test_model.py, test_reports.py,
# test_train.py, test_demo.py)
# =============================================================================================

import importlib.util
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from fakenews_pl.data import demo

REPO_ROOT = Path(__file__).resolve().parents[1]
SEED_DATA = REPO_ROOT.parent / "shared" / "data" / "seed-fakenews"
os.environ.setdefault("PROJECT_ROOT", str(REPO_ROOT))

# Small, quick runs: a few batches, no progress bar.
TINY_RUN = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=2",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "~callbacks.progress",
]


@pytest.fixture(scope="session")
def demo_assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The demo embedding and dataset, generated once per session; paths.* overrides for them."""
    root = tmp_path_factory.mktemp("assets")
    where = demo.inputs(root / "demo")
    demo.prepare(root / "demo", list(where.values()))
    return {
        "embeddings_dir": root / "embeddings",
        "data_dir": root / "data",
        "demo_dir": root / "demo",
        "cache_dir": root / "cache",
        **where,
    }


def path_overrides(assets: dict[str, Path], out_dir: Path) -> list[str]:
    """Command-line overrides that keep a run's inputs and outputs inside test folders."""
    return [
        f"paths.embeddings_dir={assets['embeddings_dir']}",
        f"paths.data_dir={assets['data_dir']}",
        f"paths.demo_dir={assets['demo_dir']}",
        f"paths.cache_dir={assets['cache_dir']}",
        f"paths.log_dir={out_dir / 'logs'}",
    ]


@pytest.fixture(scope="session")
def compose_train(demo_assets: dict[str, Path]) -> Callable[..., DictConfig]:
    """compose_train(out_dir, *overrides) -> the train.yaml config of a tiny run into out_dir."""

    def _compose(out_dir: Path, *overrides: str, config_name: str = "train") -> DictConfig:
        out_dir.mkdir(parents=True, exist_ok=True)
        args = path_overrides(demo_assets, out_dir) + [f"paths.output_dir={out_dir}"]
        if config_name == "train":
            args += TINY_RUN
        with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
            return compose(config_name, overrides=args + list(overrides))

    return _compose


@pytest.fixture(scope="session")
def trained_run(compose_train, root_script, tmp_path_factory) -> dict:
    """A tiny demo run, trained once per session (read it, never change it): its run dir,
    checkpoint, metrics and the objects train.py built."""
    out = tmp_path_factory.mktemp("session_run")
    metrics, objects = root_script("train").train(compose_train(out))
    return {"dir": out, "ckpt": out / "checkpoints" / "last.ckpt", "metrics": metrics, **objects}


@pytest.fixture(scope="session")
def exported_bundle(trained_run: dict, tmp_path_factory) -> Path:
    """`trained_run` exported as a bundle, once per session (read only)."""
    from fakenews_pl import Classifier

    out = tmp_path_factory.mktemp("exported") / "bundle"
    Classifier.load(trained_run["ckpt"]).export(out)
    return out


@pytest.fixture(scope="session")
def tiny_run() -> list[str]:
    """Overrides for a quick run: one epoch of 4 batches, no progress bar."""
    return list(TINY_RUN)


@pytest.fixture(scope="session")
def cli_overrides(demo_assets: dict[str, Path]) -> Callable[[Path], list[str]]:
    """cli_overrides(out_dir) -> `paths.*` overrides for a `python train.py ...` subprocess."""
    return lambda out_dir: path_overrides(demo_assets, out_dir)


@pytest.fixture(scope="session")
def root_script() -> Callable[[str], ModuleType]:
    """root_script("train") -> train.py imported from the repository root (sys.path untouched)."""

    def _load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(
            f"{Path(name).name}_script", REPO_ROOT / f"{name}.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return _load


@pytest.fixture(scope="session")
def run_python() -> Callable[..., subprocess.CompletedProcess]:
    """run_python([args...]) runs `python args...` in the repository root and checks it passed."""

    def _run(args: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [sys.executable, *args],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "PROJECT_ROOT": str(REPO_ROOT)},
        )
        assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        return proc

    return _run


@pytest.fixture
def tiny_csv(tmp_path: Path) -> Path:
    """A plain CSV (text,label) of 60 rows, 24 `fake` and 36 `real`, in `data=csv` format."""
    frame = demo.make_headlines(60, seed=7)
    frame["label"] = ["fake"] * 24 + ["real"] * 36
    path = tmp_path / "tiny.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def seed_data() -> Path:
    """../shared/data/seed-fakenews, or a clean skip where it is absent."""
    if not SEED_DATA.is_dir():
        pytest.skip(f"{SEED_DATA} is absent")
    return SEED_DATA


# =============================================================================================
# End of the training and evaluation fixtures
# =============================================================================================


@pytest.fixture
def hash_counter(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Counts `artifact.sha256_file` calls by file name from here on."""
    from fakenews_pl.hub import artifact

    counts: Counter = Counter()
    real = artifact.sha256_file

    def counting(path, *args, **kwargs):
        counts[Path(path).name] += 1
        return real(path, *args, **kwargs)

    monkeypatch.setattr(artifact, "sha256_file", counting)
    return counts
