"""The converted-embedding artifact on disk: one directory, written atomically.

    DIR/table.safetensors  "table": (vocab_size + oov_buckets, dim) float32 or float64
    DIR/vocab.txt          the module's vocabulary, one token per line (UTF-8, "\\n"-terminated)
    DIR/meta.json          source, sizes, the table's `dtype`, hash, text recipe, combiner,
                           sha256 of both files, the parity figure measured against TensorFlow,
                           and `meta_sha256`: the sha256 of meta.json's own canonical content
                           (`meta_checksum`)

`write_artifact` writes the format and `read` reads it back (verified). Every file is covered:
an edited meta.json (a `combiner` changed by hand) is refused like an altered table.
`verified_meta` checks a whole directory once per process while its files stay unchanged, so the
token cache (`fakenews_pl.data.corpus`) and `HubEmbedding.load` in one run hash a 1 GB table once.
A meta.json without `dtype` (written before tables could be float64) means float32.
Nothing here imports TensorFlow.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fakenews_pl import temporaries
from fakenews_pl.errors import UserError
from fakenews_pl.hub.tokenizer import HubTokenizer, TextRecipe

FORMAT = "fakenews_pl.hub_embedding/2"
OLD_FORMATS = ("fakenews_pl.hub_embedding/1",)  # no checksum over meta.json: convert again
TABLE_FILE = "table.safetensors"
VOCAB_FILE = "vocab.txt"
META_FILE = "meta.json"
TABLE_KEY = "table"
META_SHA256 = "meta_sha256"
DTYPES = ("float32", "float64")  # a table's dtype as meta.json records it
DEFAULT_DTYPE = "float32"  # artifacts that do not record one
# Files changed this recently before they were hashed are hashed again next time: two writes
# within one timestamp tick (FAT's is 2 s) could leave size, mtime and ctime all unchanged.
SETTLED_NS = 2_000_000_000
_VERIFIED: dict[tuple, dict[str, Any]] = {}  # `verified_meta`'s memo: stat key -> meta


class ArtifactError(UserError, ValueError):
    """A converted embedding directory is missing, incomplete or has been altered."""


def reconvert_hint(directory: str | os.PathLike, meta: dict[str, Any]) -> str:
    """The command that writes `directory` again, naming the source meta.json records."""
    command = f"python scripts/convert_tfhub.py SOURCE {directory} --overwrite"
    if meta.get("source"):
        return f"convert it again: {command} (SOURCE: the module, recorded as {meta['source']!r})"
    return f"convert it again: {command}"


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


def read_vocab(path: str | os.PathLike, sha256: str | None = None) -> list[str]:
    """The tokens `write_vocab` wrote, or an `ArtifactError`.

    With `sha256`, the bytes read are checked against it before they are used.
    """
    data = Path(path).read_bytes()
    if sha256 is not None and (actual := hashlib.sha256(data).hexdigest()) != sha256:
        raise ArtifactError(_mismatch(path, actual, sha256))
    if data and not data.endswith(b"\n"):
        raise ArtifactError(f"{path}: the last vocabulary line is not newline-terminated")
    try:
        return data.decode("utf-8").split("\n")[:-1] if data else []
    except UnicodeDecodeError as e:
        raise ArtifactError(f"{path}: not UTF-8 at byte {e.start}") from None


def meta_checksum(meta: dict[str, Any], key: str = META_SHA256) -> str:
    """sha256 of meta's canonical JSON (sorted keys, compact, UTF-8) without the checksum's own
    `key` (`meta_sha256`; bundle.json's is `bundle_sha256`)."""
    content = {k: v for k, v in meta.items() if k != key}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def read_sealed(
    path: Path,
    error: type[UserError],
    fmt: str,
    key: str,
    redo: Callable[[dict[str, Any]], str],
    older: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The JSON object in `path` that records its own checksum (`meta_checksum` under `key`):
    meta.json, a bundle's bundle.json, a baseline's baseline.json. Refused as `error`, in one
    line ending with `redo(content)` (how to write it again), when it is not UTF-8 JSON, not an
    object, of a format other than `fmt` (one of `older`: a format without the checksum), or
    its content no longer hashes to the checksum it records. `path` must exist: its callers
    say what its absence means."""
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise error(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    except UnicodeDecodeError as e:
        raise error(f"{path}: not valid JSON (not UTF-8 at byte {e.start})") from None
    if not isinstance(content, dict):
        raise error(f"{path}: expected a JSON object, found {type(content).__name__}")
    found = content.get("format")
    if found in older:
        raise error(
            f"{path}: format {found!r} is an older format without a checksum over {path.name} "
            f"(expected {fmt!r}); {redo(content)}"
        )
    if found != fmt:
        raise error(f"{path}: format is {found!r}, expected {fmt!r} ({redo(content)})")
    actual, recorded = meta_checksum(content, key), content.get(key)
    if actual != recorded:
        raise error(
            f"{path}: its content hashes to {actual}, not the {key} {recorded} recorded in it "
            f"when it was written; it was edited since: {redo(content)}"
        )
    return content


def read_meta(directory: str | os.PathLike) -> dict[str, Any]:
    """meta.json of an artifact directory, checked against its own `meta_sha256`, or an
    `ArtifactError` naming the fix. The table and vocabulary are checked by `verified_meta`."""
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise ArtifactError(
            f"{directory} is not a converted embedding: {META_FILE} is missing "
            "(make one with scripts/convert_tfhub.py SOURCE OUT_DIR)"
        )
    return read_sealed(
        path, ArtifactError, FORMAT, META_SHA256, lambda meta: reconvert_hint(directory, meta),
        older=OLD_FORMATS,
    )  # fmt: skip


def verify_checksums(directory: str | os.PathLike, meta: dict[str, Any]) -> None:
    """Refuse a table or vocabulary whose sha256 differs from the one recorded at conversion."""
    for name, expected in meta["sha256"].items():
        path = Path(directory) / name
        if not path.is_file():
            raise ArtifactError(f"{path} is missing")
        actual = sha256_file(path)
        if actual != expected:
            raise ArtifactError(_mismatch(path, actual, expected))


def _mismatch(path: str | os.PathLike, actual: str, expected: str) -> str:
    return (
        f"{path}: sha256 {actual} does not match {expected} recorded in {META_FILE}; "
        "the file is truncated or altered, convert the module again"
    )


def verified_meta(directory: str | os.PathLike) -> dict[str, Any]:
    """meta.json of `directory` once it and every file it lists are checked; else an
    `ArtifactError`. Afterwards meta's `sha256` are the hashes of the files on disk.

    Memoized per process: while no file of the directory changes (same device, inode, size,
    mtime and ctime) it is not hashed again. Files changed within `SETTLED_NS` before hashing
    are not memoized, since a second write in the same timestamp tick would go unnoticed.
    """
    path = Path(directory).absolute()
    before = _stat_key(path)
    if before is not None and before in _VERIFIED:
        return copy.deepcopy(_VERIFIED[before])
    started = time.time_ns()
    meta = read_meta(path)
    verify_checksums(path, meta)
    after = _stat_key(path)
    if after is not None and after == before:
        newest = max(t for *_, mtime, ctime in after[1:] for t in (mtime, ctime))
        if newest < started - SETTLED_NS:
            _VERIFIED[after] = copy.deepcopy(meta)
    return meta


def _stat_key(path: Path) -> tuple | None:
    """(path, then per file: device, inode, size, mtime_ns, ctime_ns), or None if one is gone."""
    try:
        stats = [os.stat(path / name) for name in (META_FILE, TABLE_FILE, VOCAB_FILE)]
    except OSError:
        return None
    return (
        str(path),
        *((s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns) for s in stats),
    )


@dataclass
class Artifact:
    """A converted embedding read from disk: its table, tokenizer and metadata."""

    table: Any  # (vocab_size + oov_buckets, dim) float32 or float64 torch.Tensor
    tokenizer: HubTokenizer
    meta: dict[str, Any]


def read(directory: str | os.PathLike, verify: bool = True) -> Artifact:
    """Read an artifact directory; `verify` checks every file against meta.json's sha256
    (`verified_meta`, memoized) before any is used. meta.json is checked either way."""
    from safetensors.torch import load_file

    path = Path(directory)
    meta = verified_meta(path) if verify else read_meta(path)
    tensors = load_file(path / TABLE_FILE)
    if TABLE_KEY not in tensors:
        raise ArtifactError(f"{path / TABLE_FILE} has no tensor {TABLE_KEY!r}")
    table, dtype = tensors[TABLE_KEY], table_dtype(meta)
    if str(table.dtype).removeprefix("torch.") != dtype:
        raise ArtifactError(
            f"{path / TABLE_FILE} holds a {str(table.dtype).removeprefix('torch.')} table, "
            f"{META_FILE} says {dtype}; {reconvert_hint(path, meta)}"
        )
    tokenizer = read_tokenizer(path, meta, verify=verify)
    return Artifact(table, tokenizer, {**meta, "dtype": dtype, "path": str(path)})


def table_dtype(meta: dict[str, Any]) -> str:
    """The table's dtype meta.json records ("float32" when it records none), or an
    `ArtifactError`."""
    dtype = meta.get("dtype", DEFAULT_DTYPE)
    if dtype not in DTYPES:
        raise ArtifactError(f"{META_FILE}: dtype {dtype!r} is not one of {list(DTYPES)}")
    return dtype


def read_tokenizer(
    directory: str | os.PathLike, meta: dict[str, Any] | None = None, verify: bool = True
) -> HubTokenizer:
    """The tokenizer of an artifact (vocabulary, OOV buckets, text recipe), without its table.

    `verify`: the vocabulary bytes it is built from are checked against meta.json's sha256.
    """
    path = Path(directory)
    meta = meta or read_meta(path)
    vocab = read_vocab(path / VOCAB_FILE, meta["sha256"][VOCAB_FILE] if verify else None)
    if len(vocab) != meta["vocab_size"]:
        raise ArtifactError(
            f"{path / VOCAB_FILE} has {len(vocab)} tokens, meta.json says {meta['vocab_size']}"
        )
    return HubTokenizer(vocab, meta["oov_buckets"], TextRecipe.from_dict(meta["recipe"]))


def write_artifact(
    directory: str | os.PathLike, table: Any, vocab: list[str], meta: dict[str, Any]
) -> None:
    """Write table, vocabulary and meta.json (with checksums) into `directory`.

    `table` is a (vocab + oov_buckets, dim) float tensor, stored as float64 if it is float64
    and as float32 otherwise (meta.json's `dtype` says which); `meta` holds at least `source`,
    `oov_buckets`, `recipe` (a `TextRecipe.to_dict()`) and `combiner`.
    """
    import torch
    from safetensors.torch import save_file

    dtype = torch.float64 if table.dtype == torch.float64 else torch.float32
    table = table.detach().to(dtype).contiguous()
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
            "dtype": str(dtype).removeprefix("torch."),
            "hash": "farmhash.fingerprint64",
        },
    )


def write_meta(directory: str | os.PathLike, meta: dict[str, Any]) -> None:
    """Write meta.json with the sha256 of the table and vocabulary, and its own checksum."""
    meta = dict(meta)
    meta["sha256"] = {
        name: sha256_file(Path(directory) / name) for name in (TABLE_FILE, VOCAB_FILE)
    }
    _write_meta_file(directory, meta)


def update_meta(directory: str | os.PathLike, extra: dict[str, Any]) -> None:
    """Add keys to meta.json, keeping the recorded file checksums; its own is renewed."""
    _write_meta_file(directory, read_meta(directory) | extra)


def _write_meta_file(directory: str | os.PathLike, meta: dict[str, Any]) -> None:
    meta = {"format": FORMAT, **{k: v for k, v in meta.items() if k not in ("format", "path")}}
    meta[META_SHA256] = meta_checksum(meta)
    text = json.dumps(meta, indent=2, ensure_ascii=False) + "\n"
    (Path(directory) / META_FILE).write_text(text, encoding="utf-8")


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
