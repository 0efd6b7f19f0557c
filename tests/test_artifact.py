"""The artifact format: what write_artifact writes, read gives back, verified."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

from fakenews_pl.hub import artifact
from fakenews_pl.hub.tokenizer import TextRecipe

VOCAB = ["the", "fake", "news", "ünïcode"]
META = {"source": "test", "oov_buckets": 2, "combiner": "mean", "recipe": TextRecipe().to_dict()}


def test_atomic_directory_leaves_nothing_on_failure(tmp_path):
    with pytest.raises(RuntimeError), artifact.atomic_directory(tmp_path / "out") as tmp:
        (tmp / "partial").write_text("x")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_write_artifact_checks_row_count(tmp_path):
    meta = {**META, "oov_buckets": 5}
    with pytest.raises(artifact.ArtifactError, match="expected vocab 4 \\+ OOV buckets 5"):
        artifact.write_artifact(tmp_path, torch.zeros(3, 2), VOCAB, meta)


def test_read_gives_back_what_was_written(tmp_path):
    table = torch.randn(len(VOCAB) + 2, 5)
    with artifact.atomic_directory(tmp_path / "emb") as tmp:
        artifact.write_artifact(tmp, table, VOCAB, META)
    loaded = artifact.read(tmp_path / "emb")
    assert torch.equal(loaded.table, table)
    assert loaded.meta["combiner"] == "mean" and loaded.meta["path"] == str(tmp_path / "emb")
    assert (loaded.meta["vocab_size"], loaded.meta["num_rows"], loaded.meta["dim"]) == (4, 6, 5)
    ids, _ = loaded.tokenizer.encode(["the ünïcode news", "unknown"])
    assert ids[:3].tolist() == [0, 3, 2] and ids[3] >= len(VOCAB)  # vocab hits, an OOV bucket
    tokenizer = artifact.read_tokenizer(tmp_path / "emb")  # without the table
    assert tokenizer.encode(["the ünïcode news"])[0].tolist() == [0, 3, 2]
    (tmp_path / "emb" / artifact.VOCAB_FILE).write_text("the\n", encoding="utf-8")
    with pytest.raises(artifact.ArtifactError, match="vocab.txt: sha256"):
        artifact.read(tmp_path / "emb")
    with pytest.raises(artifact.ArtifactError, match="vocab.txt: sha256"):
        artifact.read_tokenizer(tmp_path / "emb")  # checks the bytes it builds from
    with pytest.raises(artifact.ArtifactError, match="has 1 tokens, meta.json says 4"):
        artifact.read_tokenizer(tmp_path / "emb", verify=False)


def write(path: Path) -> Path:
    with artifact.atomic_directory(path) as tmp:
        artifact.write_artifact(tmp, torch.randn(len(VOCAB) + 2, 3), VOCAB, META)
    return path


def edit_meta(path: Path, **changes) -> None:
    """Change meta.json by hand, as a user might."""
    meta_file = path / artifact.META_FILE
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    meta_file.write_text(json.dumps(meta, indent=2), encoding="utf-8")


def swap_first_vocab_lines(path: Path) -> None:
    """Swap two vocabulary lines: the same size, other ids."""
    vocab_file = path / artifact.VOCAB_FILE
    lines = vocab_file.read_bytes().split(b"\n")
    lines[0], lines[1] = lines[1], lines[0]
    vocab_file.write_bytes(b"\n".join(lines))


def test_meta_json_is_covered_by_a_checksum(tmp_path: Path) -> None:
    emb = write(tmp_path / "emb")
    artifact.read(emb)
    edit_meta(emb, combiner="sqrtn")  # written "mean": every output would change silently
    for read in (artifact.read, artifact.read_meta, artifact.verified_meta):
        with pytest.raises(artifact.ArtifactError) as info:
            read(emb)
        message = str(info.value)
        assert str(emb / artifact.META_FILE) in message and "meta_sha256" in message
        assert "\n" not in message
    with pytest.raises(artifact.ArtifactError, match="meta.json"):
        artifact.read(emb, verify=False)  # skipping the table's hash does not skip meta.json's


def test_old_format_is_refused_with_the_command_that_converts_it_again(tmp_path: Path) -> None:
    emb = write(tmp_path / "emb")
    edit_meta(emb, format="fakenews_pl.hub_embedding/1", meta_sha256=None)
    with pytest.raises(artifact.ArtifactError) as info:
        artifact.read(emb)
    message = str(info.value)
    assert message.startswith(f"{emb / artifact.META_FILE}: format 'fakenews_pl.hub_embedding/1'")
    assert f"python scripts/convert_tfhub.py SOURCE {emb} --overwrite" in message
    assert "'test'" in message and "\n" not in message  # the source meta.json recorded


def test_update_meta_keeps_the_checksum_valid(tmp_path: Path) -> None:
    emb = write(tmp_path / "emb")
    before = artifact.read_meta(emb)[artifact.META_SHA256]
    artifact.update_meta(emb, {"parity": {"max_abs_diff": 0.0, "tolerance": 1e-5}})
    meta = artifact.read(emb).meta
    assert meta["parity"]["tolerance"] == 1e-5 and meta["format"] == "fakenews_pl.hub_embedding/2"
    assert meta[artifact.META_SHA256] != before  # the new key is covered too
    edit_meta(emb, parity={"max_abs_diff": 0.0, "tolerance": 1.0})
    with pytest.raises(artifact.ArtifactError, match="meta_sha256"):
        artifact.read_meta(emb)


def test_verification_is_memoized_until_a_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hash_counter: Counter
) -> None:
    monkeypatch.setattr(artifact, "SETTLED_NS", 20_000_000)  # 20 ms instead of 2 s
    emb = write(tmp_path / "emb")
    time.sleep(0.05)  # the files have settled
    counts = hash_counter
    counts.clear()  # count from here, not the writing
    first = artifact.verified_meta(emb)
    assert artifact.verified_meta(emb) == first and artifact.read(emb).meta["sha256"]
    assert counts == {artifact.TABLE_FILE: 1, artifact.VOCAB_FILE: 1}
    swap_first_vocab_lines(emb)  # same size; a new ctime
    with pytest.raises(artifact.ArtifactError, match="vocab.txt: sha256"):
        artifact.verified_meta(emb)


def test_files_changed_just_before_hashing_are_hashed_again(
    tmp_path: Path, hash_counter: Counter
) -> None:
    # Written, verified and altered at once, possibly within one timestamp tick: size, mtime
    # and ctime may all be unchanged, so a fresh directory is never trusted from the memo.
    emb = write(tmp_path / "emb")
    counts = hash_counter
    counts.clear()  # count from here, not the writing
    artifact.verified_meta(emb)
    swap_first_vocab_lines(emb)
    with pytest.raises(artifact.ArtifactError, match="vocab.txt: sha256"):
        artifact.verified_meta(emb)
    assert counts[artifact.VOCAB_FILE] == 2
