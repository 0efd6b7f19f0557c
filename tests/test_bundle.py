"""Exported bundles: the same probabilities as the checkpoint, loadable without Lightning,
Hydra or TensorFlow, and refused in one line when a file is altered or missing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fakenews_pl import Classifier
from fakenews_pl.hub import artifact
from fakenews_pl.serving import bundle
from fakenews_pl.serving.bundle import BundleError

REPO = Path(__file__).resolve().parents[1]
TEXTS = ["Did Miley Cyrus secretly get married?", "", "Senate passes the budget bill", "a a a"]

# Run in a fresh interpreter where importing Lightning, Hydra, OmegaConf or TensorFlow fails.
BLOCKED_IMPORTS = """
import importlib.abc, json, sys

BLOCKED = ("lightning", "pytorch_lightning", "lightning_fabric", "hydra", "omegaconf",
           "tensorflow", "tensorflow_hub", "tf_keras", "keras")

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked in this test")
        return None

sys.meta_path.insert(0, Block())
from fakenews_pl import Classifier

clf = Classifier.load(sys.argv[1])
texts = json.loads(sys.argv[2])
print(json.dumps({"p": clf.predict_proba(texts).tolist(), "labels": clf.predict(texts),
                  "loaded": sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)}))
"""


@pytest.fixture(scope="module")
def runs(trained_run, compose_train, root_script, tmp_path_factory) -> dict[str, Path]:
    """Checkpoints of a frozen (the session's) and a fine-tuned tiny demo run."""
    out = tmp_path_factory.mktemp("tuned")
    root_script("train").train(compose_train(out, "trainable=true"))
    return {"frozen": trained_run["ckpt"], "tuned": out / "checkpoints" / "last.ckpt"}


@pytest.mark.parametrize("kind", ["frozen", "tuned"])
def test_a_bundle_gives_the_checkpoints_probabilities(
    runs: dict[str, Path], kind: str, tmp_path: Path
) -> None:
    from_checkpoint = Classifier.load(runs[kind])
    info = from_checkpoint.export(tmp_path / "bundle")
    from_bundle = Classifier.load(tmp_path / "bundle")
    assert info["fine_tuned"] == (kind == "tuned") == from_bundle.fine_tuned
    assert np.array_equal(from_bundle.predict_proba(TEXTS), from_checkpoint.predict_proba(TEXTS))
    assert from_bundle.class_names == from_checkpoint.class_names
    assert (
        from_bundle.data
        == from_checkpoint.data
        == {"format": "notebook", "text_column": "for_glove"}
    )
    # A frozen bundle carries the artifact's own files; a fine-tuned one the trained table.
    source = artifact.read(from_checkpoint.embedding.meta["path"]).table
    exported = artifact.read(tmp_path / "bundle" / bundle.EMBEDDING_DIR).table
    assert torch.equal(exported, from_checkpoint.embedding.weight.detach())
    assert torch.equal(exported, source) == (kind == "frozen")
    assert set(info["sha256"]) == {
        "head.safetensors",
        "embedding/meta.json",
        "embedding/table.safetensors",
        "embedding/vocab.txt",
    }
    # A bundle exported from a bundle is the same bundle, file for file.
    again = from_bundle.export(tmp_path / "again")
    assert again["sha256"] == info["sha256"]


@pytest.mark.parametrize("source", ["bundle", "checkpoint"])
def test_a_model_loads_where_lightning_hydra_and_tensorflow_cannot_be_imported(
    source: str, runs: dict[str, Path], tmp_path: Path
) -> None:
    """A bundle, and a (fine-tuned) checkpoint too: serving rebuilds its network from the
    checkpoint's hyperparameters and weights without Lightning."""
    clf = Classifier.load(runs["tuned"])
    clf.export(tmp_path / "bundle")
    path = tmp_path / "bundle" if source == "bundle" else runs["tuned"]
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKED_IMPORTS, str(path), json.dumps(TEXTS)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["loaded"] == []
    assert np.array_equal(np.array(result["p"], dtype=np.float32), clf.predict_proba(TEXTS))
    assert result["labels"] == clf.predict(TEXTS)


def test_the_blocker_blocks(tmp_path: Path) -> None:
    # The check above means something only if a blocked import really fails.
    script = BLOCKED_IMPORTS.split("from fakenews_pl import")[0] + "import omegaconf\n"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 1 and "omegaconf is blocked" in proc.stderr


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("head.safetensors", "head.safetensors: sha256 .* does not match"),
        ("embedding/table.safetensors", "table.safetensors: sha256 .* does not match"),
        ("embedding/vocab.txt", "vocab.txt: sha256 .* does not match"),
        ("bundle.json", "bundle.json: not valid JSON"),
    ],
)
def test_an_altered_file_is_refused_naming_it(
    runs: dict[str, Path], tmp_path: Path, name: str, expected: str
) -> None:
    Classifier.load(runs["frozen"]).export(tmp_path / "bundle")
    path = tmp_path / "bundle" / name
    data = bytearray(path.read_bytes())
    data[-2] ^= 0xFF  # the last bytes: a weight, a vocabulary token, JSON's closing brace
    path.write_bytes(bytes(data))
    with pytest.raises(
        artifact.ArtifactError if "embedding/" in name else BundleError, match=expected
    ):
        Classifier.load(tmp_path / "bundle")


def test_a_missing_file_and_a_replaced_artifact_are_refused(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    Classifier.load(runs["frozen"]).export(tmp_path / "frozen")
    (tmp_path / "frozen" / "head.safetensors").unlink()
    with pytest.raises(BundleError, match="head.safetensors is missing"):
        Classifier.load(tmp_path / "frozen")
    # A valid artifact, but not the exported one: the tuned run's table in the frozen bundle.
    Classifier.load(runs["frozen"]).export(tmp_path / "a")
    Classifier.load(runs["tuned"]).export(tmp_path / "b")
    for name in ("table.safetensors", "meta.json"):
        src = tmp_path / "b" / "embedding" / name
        (tmp_path / "a" / "embedding" / name).write_bytes(src.read_bytes())
    with pytest.raises(BundleError, match="embedding/meta.json: sha256 .* does not match"):
        Classifier.load(tmp_path / "a")


def test_an_export_that_fails_leaves_nothing(
    runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clf = Classifier.load(runs["tuned"])

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(bundle, "save_file", fail)
    with pytest.raises(OSError, match="disk full"):
        clf.export(tmp_path / "bundle")
    assert list(tmp_path.iterdir()) == []


def test_export_model_py_writes_a_bundle_and_refuses_in_one_line(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    def export(*args: str | Path) -> subprocess.CompletedProcess:
        command = [sys.executable, "scripts/export_model.py", *map(str, args)]
        return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)

    done = export(runs["tuned"], tmp_path / "bundle")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == f"wrote {tmp_path / 'bundle'}: 4 files, fine-tuned embedding"
    assert bundle.is_bundle(tmp_path / "bundle")
    again = export(runs["tuned"], tmp_path / "bundle")
    assert again.returncode == 2
    assert again.stderr.strip() == (
        f"error: {tmp_path / 'bundle'} already exists (pass --overwrite to replace it)"
    )
    missing = export(tmp_path / "nothing.ckpt", tmp_path / "out")
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        f"error: {tmp_path / 'nothing.ckpt'}: expected a checkpoint file or an exported bundle"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.tf
@pytest.mark.slow
def test_export_model_py_tfhub_round_trips_the_fine_tuned_table(
    runs: dict[str, Path], tmp_path: Path, root_script
) -> None:
    """--tfhub and --keras, in this process (export_model.py's process is tested above)."""
    pytest.importorskip("tensorflow_hub")
    from fakenews_pl.hub.convert import convert

    tfhub, keras_dir = tmp_path / "module", tmp_path / "keras"
    argv = [str(runs["tuned"]), "--tfhub", str(tfhub), "--keras", str(keras_dir)]
    assert root_script("scripts/export_model").main(argv) == 0
    clf = Classifier.load(runs["tuned"])
    convert(str(tfhub), tmp_path / "again", show_progress=False)
    again = artifact.read(tmp_path / "again")
    assert torch.equal(again.table, clf.embedding.weight.detach())
    assert not torch.equal(again.table, artifact.read(clf.embedding.meta["path"]).table)
    import tensorflow as tf

    keras_model = tf.saved_model.load(str(keras_dir))
    p = keras_model(tf.constant(TEXTS)).numpy().reshape(-1)
    assert np.abs(p - clf.predict_proba(TEXTS)[:, 1]).max() < 1e-5


@pytest.mark.parametrize(
    "edit",
    [
        lambda info: info.update(class_names=info["class_names"][::-1]),  # every label inverted
        lambda info: info["data"].update(format="csv"),
        lambda info: info.pop("bundle_sha256"),
    ],
)
def test_an_edited_bundle_json_is_refused(runs: dict[str, Path], tmp_path: Path, edit) -> None:
    Classifier.load(runs["frozen"]).export(tmp_path / "bundle")
    path = tmp_path / "bundle" / "bundle.json"
    info = json.loads(path.read_text())
    edit(info)
    path.write_text(json.dumps(info, indent=2))  # valid JSON, every file's sha256 still right
    with pytest.raises(BundleError, match=r"bundle.json: its content hashes to .* edited since"):
        Classifier.load(tmp_path / "bundle")


def test_a_bundle_of_the_previous_format_is_refused_with_the_fix(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    Classifier.load(runs["frozen"]).export(tmp_path / "bundle")
    path = tmp_path / "bundle" / "bundle.json"
    info = json.loads(path.read_text())
    info = {k: v for k, v in info.items() if k != "bundle_sha256"} | {
        "format": "fakenews_pl.bundle/1"
    }
    path.write_text(json.dumps(info))
    with pytest.raises(BundleError, match="expected 'fakenews_pl.bundle/2' .*export_model.py"):
        Classifier.load(tmp_path / "bundle")


def _export(*args: str | Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "scripts/export_model.py", *map(str, args)]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_export_never_writes_over_or_deletes_its_inputs(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """`export_model.py CKPT RUN_DIR --overwrite` deleted the run dir and its checkpoint."""
    from importlib import util

    spec = util.spec_from_file_location("export_model", REPO / "scripts" / "export_model.py")
    export_model = util.module_from_spec(spec)
    spec.loader.exec_module(export_model)
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(runs["frozen"].read_bytes())
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("not an export")
    (tmp_path / "afile").write_text("not an export")
    Classifier.load(ckpt).export(tmp_path / "bundle")
    before = _tree(tmp_path)
    bundle_dir = str(tmp_path / "bundle")
    refused = [
        ([str(ckpt), str(run_dir), "--overwrite"], "overlaps"),  # holds the checkpoint
        ([str(ckpt), str(ckpt), "--overwrite"], "overlaps"),
        ([str(ckpt), str(tmp_path / "mine"), "--overwrite"], "replaces only a directory"),
        ([str(ckpt), str(tmp_path / "afile"), "--overwrite"], "replaces only a directory"),
        ([bundle_dir, bundle_dir, "--overwrite"], "overlaps"),
        ([bundle_dir, f"{bundle_dir}/x"], "overlaps"),
        ([str(ckpt), bundle_dir, "--tfhub", f"{bundle_dir}/m"], "overlaps"),
    ]
    for argv, message in refused:
        assert export_model.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert _tree(tmp_path) == before
    # Replacing an earlier export leaves nothing else behind (no `.old-*` file or directory).
    assert export_model.main([str(ckpt), bundle_dir, "--overwrite"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "bundle", "mine", "run"]
    Classifier.load(tmp_path / "bundle")


def test_export_refuses_the_models_artifact_as_output(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    clf = Classifier.load(runs["frozen"])
    source = Path(clf.embedding.meta["path"])
    done = _export(runs["frozen"], source / "bundle")
    assert done.returncode == 2 and "overlaps" in done.stderr and done.stderr.count("\n") == 1
    assert not (source / "bundle").exists()
