"""The house rules a newcomer relies on, checked: one room per concern, private Lightning
names in one module, a docstring on every public function, lint clean."""

from __future__ import annotations

import ast
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "fakenews_pl"
LIGHTNING = ("pytorch_lightning", "lightning", "lightning_fabric", "lightning_utilities")


def _imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) of every import in a file; name is "" for `import module`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            found += [(module, alias.name) for alias in node.names]
    return found


def _private_lightning(path: Path) -> list[str]:
    bad = []
    for module, name in _imports(path):
        if module.split(".")[0] not in LIGHTNING:
            continue
        parts = [*module.split("."), name] if name else module.split(".")
        if any(part.startswith("_") for part in parts):
            bad.append(f"{module}:{name}")
    return bad


def test_only_the_fused_module_imports_private_lightning_names() -> None:
    offenders = {
        path.name: _private_lightning(path)
        for path in sorted(PACKAGE.glob("*.py"))
        if path.name != "fused.py"
    }
    assert {name: bad for name, bad in offenders.items() if bad} == {}
    for other in PACKAGE.glob("*.py"):
        if other.name != "fused.py":
            assert "_on_before_step" not in other.read_text(), other.name


def test_model_and_data_do_not_reach_into_each_other_or_the_demo() -> None:
    data_imports = {module for module, _ in _imports(PACKAGE / "data.py")}
    assert not any(m.endswith(("demo", "model")) for m in data_imports), data_imports
    data_names = {name for _, name in _imports(PACKAGE / "data.py")}
    assert "demo" not in data_names and "model" not in data_names
    model = (PACKAGE / "model.py").read_text()
    assert "datamodule" not in model.lower() and "FakeNewsDataModule" not in model
    for entry in ("evaluate.py",):
        text = (REPO / entry).read_text()
        assert "write_dataset" not in text and "write_embedding" not in text


def test_every_module_has_a_test_file() -> None:
    modules = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    tests = {p.stem.removeprefix("test_") for p in (REPO / "tests").glob("test_*.py")}
    assert sorted(modules - tests) == []


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is not installed ([dev] extra)")
def test_lint_and_docstrings_on_every_public_function() -> None:
    """ruff with pyproject.toml's rules; D101-D103 (public classes, methods, functions) on
    the package and the root entry points."""
    proc = subprocess.run(
        ["ruff", "check", "--no-cache", "."], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-4000:]
