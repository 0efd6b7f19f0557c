"""The converted-embedding artifact on disk: one directory, written atomically.

    DIR/table.safetensors  "table": (vocab_size + oov_buckets, dim) float32
    DIR/vocab.txt          the module's vocabulary, one token per line (UTF-8, "\\n"-terminated)
    DIR/meta.json          source, sizes, hash, text recipe, combiner, sha256 of both files,
                           and the parity figure measured against TensorFlow

`write_artifact` writes the format and `read` reads it back (verified). Nothing here imports
TensorFlow.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fakenews_pl import temporaries
from fakenews_pl.tokenizer import HubTokenizer, TextRecipe

FORMAT = "fakenews_pl.hub_embedding/1"
TABLE_FILE = "table.safetensors"
VOCAB_FILE = "vocab.txt"
META_FILE = "meta.json"
TABLE_KEY = "table"


class ArtifactError(ValueError):
    """A converted embedding directory is missing, incomplete or has been altered."""


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 24) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_vocab(path: str | os.PathLike, vocab: list[str]) -> None:
    """One token per line, UTF-8; refuses empty tokens and newlines."""
    for i, token in enumerate(vocab):
        if "\n" in token or not token:
            raise ArtifactError(f"vocabulary token {i} ({token!r}) is empty or holds a newline")
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.writelines(f"{token}\n" for token in vocab)


def read_vocab(path: str | os.PathLike) -> list[str]:
    """The tokens `write_vocab` wrote, or an `ArtifactError`."""
    data = Path(path).read_bytes()
    if data and not data.endswith(b"\n"):
        raise ArtifactError(f"{path}: the last vocabulary line is not newline-terminated")
    try:
        return data.decode("utf-8").split("\n")[:-1] if data else []
    except UnicodeDecodeError as e:
        raise ArtifactError(f"{path}: not UTF-8 at byte {e.start}") from None


def read_meta(directory: str | os.PathLike) -> dict[str, Any]:
    """meta.json of an artifact directory, or an `ArtifactError` naming the fix."""
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise ArtifactError(
            f"{directory} is not a converted embedding: {META_FILE} is missing "
            "(make one with scripts/convert_tfhub.py SOURCE OUT_DIR)"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from None
    if meta.get("format") != FORMAT:
        raise ArtifactError(f"{path}: format is {meta.get('format')!r}, expected {FORMAT!r}")
    return meta


def verify_checksums(directory: str | os.PathLike, meta: dict[str, Any]) -> None:
    """Refuse a table or vocabulary whose sha256 differs from the one recorded at conversion."""
    for name, expected in meta["sha256"].items():
        path = Path(directory) / name
        if not path.is_file():
            raise ArtifactError(f"{path} is missing")
        actual = sha256_file(path)
        if actual != expected:
            raise ArtifactError(
                f"{path}: sha256 {actual} does not match {expected} recorded in {META_FILE}; "
                "the file is truncated or altered, convert the module again"
            )


@dataclass
class Artifact:
    """A converted embedding read from disk: its table, tokenizer and metadata."""

    table: Any  # (vocab_size + oov_buckets, dim) float32 torch.Tensor
    tokenizer: HubTokenizer
    meta: dict[str, Any]


def read(directory: str | os.PathLike, verify: bool = True) -> Artifact:
    """Read an artifact directory; `verify` checks every file against meta.json's sha256."""
    from safetensors.torch import load_file

    path = Path(directory)
    meta = read_meta(path)
    if verify:
        verify_checksums(path, meta)
    tensors = load_file(path / TABLE_FILE)
    if TABLE_KEY not in tensors:
        raise ArtifactError(f"{path / TABLE_FILE} has no tensor {TABLE_KEY!r}")
    return Artifact(tensors[TABLE_KEY], read_tokenizer(path, meta), {**meta, "path": str(path)})


def read_tokenizer(
    directory: str | os.PathLike, meta: dict[str, Any] | None = None
) -> HubTokenizer:
    """The tokenizer of an artifact (vocabulary, OOV buckets, text recipe), without its table."""
    path = Path(directory)
    meta = meta or read_meta(path)
    vocab = read_vocab(path / VOCAB_FILE)
    if len(vocab) != meta["vocab_size"]:
        raise ArtifactError(
            f"{path / VOCAB_FILE} has {len(vocab)} tokens, meta.json says {meta['vocab_size']}"
        )
    return HubTokenizer(vocab, meta["oov_buckets"], TextRecipe.from_dict(meta["recipe"]))


def write_artifact(
    directory: str | os.PathLike, table: Any, vocab: list[str], meta: dict[str, Any]
) -> None:
    """Write table, vocabulary and meta.json (with checksums) into `directory`.

    `table` is a (vocab + oov_buckets, dim) float tensor; `meta` holds at least `source`,
    `oov_buckets`, `recipe` (a `TextRecipe.to_dict()`) and `combiner`.
    """
    import torch
    from safetensors.torch import save_file

    table = table.detach().to(torch.float32).contiguous()
    if table.shape[0] != len(vocab) + meta["oov_buckets"]:
        raise ArtifactError(
            f"table has {table.shape[0]} rows, expected vocab {len(vocab)} + "
            f"OOV buckets {meta['oov_buckets']}"
        )
    save_file({TABLE_KEY: table}, str(Path(directory) / TABLE_FILE))
    write_vocab(Path(directory) / VOCAB_FILE, vocab)
    write_meta(
        directory,
        {
            **meta,
            "dim": int(table.shape[1]),
            "vocab_size": len(vocab),
            "num_rows": int(table.shape[0]),
            "hash": "farmhash.fingerprint64",
        },
    )


def write_meta(directory: str | os.PathLike, meta: dict[str, Any]) -> None:
    """Write meta.json with the sha256 of the table and vocabulary."""
    meta = {"format": FORMAT, **meta}
    meta["sha256"] = {
        name: sha256_file(Path(directory) / name) for name in (TABLE_FILE, VOCAB_FILE)
    }
    (Path(directory) / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def update_meta(directory: str | os.PathLike, extra: dict[str, Any]) -> None:
    """Add keys to meta.json, keeping the recorded checksums."""
    meta = read_meta(directory) | extra
    (Path(directory) / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


@contextlib.contextmanager
def atomic_directory(out_dir: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `out_dir`; rename it into place only if the block succeeds.

    On any exception, Ctrl-C included, the temporary directory is removed and `out_dir` is
    left as it was. The directory and everything written into it get the user's usual
    permissions (0o777 or 0o666 minus the umask; safetensors writes 0o600 files).
    Temporaries beside it left by killed runs are removed first, in one line of output
    (`fakenews_pl.temporaries`).
    """
    out = Path(out_dir).absolute()
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists (pass overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    temporaries.clean_stale(out.parent)
    with temporaries.temp_dir(out) as tmp:
        yield tmp
        if out.exists() and not overwrite:
            raise FileExistsError(f"{out} appeared while it was being written (another process?)")
        temporaries.give_usual_permissions(tmp)
        temporaries.replace_directory(tmp, out)
