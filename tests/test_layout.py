"""The house rules a newcomer relies on, checked: subpackages as layers (each imports only
those below it, no import circle), one place that builds layers, private torch and Lightning
names each in one module, serving without Lightning, a test file per module, lint clean."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "fakenews_pl"
LIGHTNING = ("pytorch_lightning", "lightning", "lightning_fabric", "lightning_utilities")
# Lowest first: a module may import its own layer and those before it. errors and temporaries
# sit at the package's top, under everything.
LAYERS = ("", "hub", "data", "nn", "training", "serving")


def _modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the package."""
    return {
        ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): path
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def _imports(path: Path, top_level_only: bool = False) -> list[tuple[str, str]]:
    """(module, name) of every import in a file (at any depth unless `top_level_only`, where
    function-level imports are left out); name is "" for `import module`."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            found += [(module, alias.name) for alias in node.names]
    return found


def _package_imports(path: Path, top_level_only: bool = False) -> set[str]:
    """The package's modules a file imports (`from fakenews_pl.hub import artifact` names
    fakenews_pl.hub.artifact)."""
    modules = _modules()
    found = set()
    for module, name in _imports(path, top_level_only):
        if not module.startswith("fakenews_pl"):
            continue
        found.add(f"{module}.{name}" if f"{module}.{name}" in modules else module)
    return found - {"fakenews_pl"}


def _layer(module: str) -> int:
    if module == "fakenews_pl":  # the package's face: `fakenews_pl.Classifier`, lazily
        return len(LAYERS)
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 2 and parts[1] in LAYERS else 0


def test_each_layer_imports_only_the_layers_below_it() -> None:
    offenders = [
        f"{module} imports {target}"
        for module, path in _modules().items()
        for target in _package_imports(path)
        if _layer(target) > _layer(module)
    ]
    assert offenders == []


def test_no_import_circle() -> None:
    graph = {module: _package_imports(path) - {module} for module, path in _modules().items()}
    seen: dict[str, int] = {}  # 1: on the current path, 2: done
    circles = []

    def visit(module: str, path: list[str]) -> None:
        seen[module] = 1
        for target in sorted(graph.get(module, ())):
            if seen.get(target) == 1:
                circles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in seen:
                visit(target, [*path, target])
        seen[module] = 2

    for module in graph:
        if module not in seen:
            visit(module, [module])
    assert circles == []


def test_the_layout_test_catches_what_it_checks(tmp_path: Path) -> None:
    """The checks above fail on a violation (a check that cannot fail proves nothing)."""
    assert _layer("fakenews_pl.serving.bundle") > _layer("fakenews_pl.training.model")
    assert _layer("fakenews_pl.errors") == 0 < _layer("fakenews_pl.hub.artifact")
    bad = tmp_path / "bad.py"
    bad.write_text("from fakenews_pl.serving import bundle\nimport fakenews_pl.nn.head\n")
    assert _package_imports(bad) == {"fakenews_pl.serving.bundle", "fakenews_pl.nn.head"}


def test_only_the_net_builds_layers() -> None:
    """nn.Linear, the head and the encoders are constructed in fakenews_pl/nn/ only, and
    outside the layer modules themselves only by `FakeNewsNet.from_config`."""
    builders = {"Linear", "DenseHead", "build_encoder", "CnnEncoder", "BiLstmEncoder",
                "SequenceEncoder", "LSTM", "Conv1d"}  # fmt: skip
    own = {"head.py", "encoders.py", "net.py"}
    offenders = []
    for module, path in _modules().items():
        if path.parent.name == "nn" and path.name in own:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name in builders:
                    offenders.append(f"{module}:{node.lineno} {name}(...)")
    assert offenders == []


def _private_names(path: Path, roots: tuple[str, ...]) -> list[str]:
    """Private names (a part starting with `_`) a file imports from, or reads off, `roots`."""
    bad = []
    for module, name in _imports(path):
        if module.split(".")[0] in roots:
            parts = [*module.split("."), name] if name else module.split(".")
            if any(part.startswith("_") for part in parts):
                bad.append(f"{module}:{name}")
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not (node.attr.startswith("__") and node.attr.endswith("__"))
        ):
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in roots:
                bad.append(ast.unparse(node))
    return bad


@pytest.mark.parametrize(
    ("roots", "home"),
    [
        (("torch",), "fakenews_pl/nn/optim.py"),
        ((*LIGHTNING, "pl"), "fakenews_pl/training/fused.py"),
    ],
)
def test_private_names_live_in_one_module(roots: tuple[str, ...], home: str) -> None:
    found = {
        path.relative_to(REPO).as_posix(): bad
        for path in _modules().values()
        if (bad := _private_names(path, roots))
    }
    assert set(found) <= {home}, found
    if roots[0] == "pytorch_lightning":  # Lightning's step hooks, called on its optimizers
        for path in _modules().values():
            if path.relative_to(REPO).as_posix() != home:
                assert "_on_before_step" not in path.read_text(), path


def test_serving_and_the_network_import_no_lightning() -> None:
    """Serving a bundle or a checkpoint, and the network itself, need no Lightning (a test in
    test_bundle.py runs a bundle with Lightning blocked)."""
    offenders = {
        module: sorted(m for m, _ in _imports(path) if m.split(".")[0] in LIGHTNING)
        for module, path in _modules().items()
        if module.split(".")[1:2] in (["serving"], ["nn"], ["hub"], ["data"])
        and not module.endswith("datamodule")
    }
    assert {m: bad for m, bad in offenders.items() if bad} == {}


def test_every_module_has_a_test_file() -> None:
    modules = {p.stem for p in PACKAGE.rglob("*.py") if p.stem != "__init__"}
    tests = {p.stem.removeprefix("test_") for p in (REPO / "tests").glob("test_*.py")}
    assert sorted(modules - tests) == []


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is not installed ([dev] extra)")
def test_lint_and_docstrings_on_every_public_function() -> None:
    """ruff with pyproject.toml's rules; D101-D103 (public classes, methods, functions) on
    the package and the root entry points."""
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "."],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:]
