"""Checkpoints in one home, without Lightning: checking, reading, `last`, the keys Lightning
writes, what a checkpoint keeps of the embedding table, the network rebuilt from one (for
serving), and the atomic writer behind `callbacks.AtomicCheckpointIO`.

A checkpoint is what Lightning saves (`hyper_parameters`, `state_dict`, the data module's
`datamodule_hyper_parameters`, optimizer states, ...) plus the model's own keys: `history`,
`seed`, `embedding_sha256` and, for a fine-tuned table, the moved rows (`TOUCHED_ROWS`,
`TOUCHED_VALUES`). The table itself is never stored whole unless torch's dense Adam trained it:
a frozen model reloads it from its artifact (refusing one whose sha256 differs), a fine-tuned
one adds its moved rows to the artifact's.

Writing: Lightning's default `TorchCheckpointIO` serialises a whole checkpoint into memory
before it writes the file: for a fine-tuned 1M-row table with its two Adam moments that is
~1.5 GB of extra memory at every save. `save` streams `torch.save` into a temporary file beside
the target and renames it over the target when complete, so a crash or Ctrl-C never leaves a
truncated checkpoint, and a `last.ckpt` symlink (`save_last: link`) is replaced, never written
through.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pickle
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from fakenews_pl import temporaries
from fakenews_pl.errors import MissingInputError, UserError
from fakenews_pl.hub import artifact
from fakenews_pl.hub.embedding import HubEmbedding
from fakenews_pl.nn.net import FakeNewsNet, NetConfig

_BLOCK = 1 << 22  # bytes read at a time while checking a record's CRC-32

# Lightning's keys.
HPARAMS, DATA_HPARAMS, STATE = "hyper_parameters", "datamodule_hyper_parameters", "state_dict"
# The run's decision rule (`fakenews_pl.training.decision.Decision.as_dict()`), recorded in the
# checkpoint of the weights it was chosen for; absent: threshold 0.5.
DECISION = "decision"
# The LightningModule's network is `self.net`: its table's keys start with this.
NET_PREFIX = "net."
TABLE_PREFIX = NET_PREFIX + "embedding."
# A fine-tuned table in a checkpoint: the artifact's (by sha256) plus these rows.
TOUCHED_ROWS, TOUCHED_VALUES = "embedding_touched_rows", "embedding_touched_values"
# Model hyperparameters of checkpoints written before model.table_optimizer, and the value of
# table_optimizer they meant.
LEGACY_TABLE_KEYS = ("sparse_embedding", "dense_table_adam")


def verify(path: str | os.PathLike) -> None:
    """Refuse a checkpoint file that is not whole and unaltered, before anything reads it.

    `torch.save` writes a zip archive whose every record (the pickled structure and each
    tensor's bytes) carries a CRC-32 that `torch.load` never checks: one flipped bit in a
    weight would load silently. Reading every record through `zipfile` checks them all (about
    0.5 s for a 1.5 GB checkpoint from the page cache, measured); a truncated file or one that
    is not a zip archive is refused the same way.
    The result is remembered per file version (path, size, mtime, inode).
    """
    stat = os.stat(path)
    _verify(str(Path(path).absolute()), stat.st_size, stat.st_mtime_ns, stat.st_ino)


@functools.lru_cache(maxsize=64)
def _verify(path: str, size: int, mtime_ns: int, inode: int) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                with archive.open(info) as record:
                    while record.read(_BLOCK):
                        pass
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as e:
        reason = " ".join(str(e).split())[:200]
        raise UserError(
            f"{path}: not a whole, unaltered checkpoint written by train.py ({reason}); "
            "expected a checkpoint file whose every record matches its CRC-32 (a truncated, "
            "corrupted or altered file is refused; use another checkpoint or train again)"
        ) from None


@contextlib.contextmanager
def refusing_unsafe(path: str | os.PathLike | None) -> Iterator[None]:
    """Verify the checkpoint at `path` (every record's CRC-32: `verify`), then turn
    `torch.load(weights_only=True)`'s refusal of a checkpoint that holds code or arbitrary
    objects into one clear line naming the file."""
    if path is not None:
        verify(path)
    try:
        yield
    except pickle.UnpicklingError as e:
        reason = str(e).strip().splitlines()[0][:200]
        raise UserError(
            f"{path}: refused to load: a checkpoint holds tensors and plain data only, this one "
            f"holds other objects that would run code on load ({reason})"
        ) from e


def read(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's dict (verified, loaded with `weights_only=True`, tensors memory-mapped:
    cheap for a fine-tuned table), in today's form (`migrate`)."""
    with refusing_unsafe(path):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return migrate(checkpoint)


def migrate(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint written before the network became `net` and before
    `model.table_optimizer`, in today's form (in place; returned): its layers' keys under
    `net.`, and `sparse_embedding`/`dense_table_adam` as the `table_optimizer` they meant."""
    state = checkpoint.get(STATE)
    if state and not any(key.startswith(NET_PREFIX) for key in state):
        for key in list(state):
            if key.split(".")[0] in ("embedding", "encoder", "head"):
                state[NET_PREFIX + key] = state.pop(key)
    hparams = checkpoint.get(HPARAMS)
    if hparams is not None and any(key in hparams for key in LEGACY_TABLE_KEYS):
        lazy, dense = (bool(hparams.pop(key, False)) for key in LEGACY_TABLE_KEYS)
        hparams.setdefault("table_optimizer", "lazy" if lazy else "dense" if dense else "exact")
    return checkpoint


def resolve_last(runs: Path, here: Path) -> str:
    """`ckpt_path=last`: the newest `*/checkpoints/last.ckpt` under `runs` that is not in the
    run directory `here`."""
    found = [p for p in runs.glob("*/checkpoints/last.ckpt") if p.parents[1].resolve() != here]
    if not found:
        raise MissingInputError(
            f"ckpt_path=last: no earlier run under {runs} has checkpoints/last.ckpt; "
            "give the checkpoint's path instead"
        )
    return str(max(found, key=lambda p: p.stat().st_mtime))


def save(checkpoint: dict[str, Any], path: str | os.PathLike) -> None:
    """Stream `checkpoint` into a temporary beside `path`, then rename it over `path` (the
    file mode is 0o666 minus the umask, like torch.save's)."""
    target = Path(path).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    with temporaries.atomic_file(target) as file:
        torch.save(checkpoint, file)


def record_decision(path: str | os.PathLike, decision: dict[str, Any]) -> None:
    """Keep `decision` in checkpoint `path` (read, verified, rewritten atomically)."""
    checkpoint = read(path)
    checkpoint[DECISION] = dict(decision)
    save(checkpoint, path)


# ---------------------------------------------------------------------- the table


def keep_table(
    checkpoint: dict[str, Any],
    embedding: HubEmbedding,
    trainable: bool,
    touched_rows: torch.Tensor | None,
) -> None:
    """What a checkpoint keeps of the table (in place): nothing when frozen, the moved rows
    only after a row optimizer (exact or lazy), all of it after torch's dense Adam."""
    checkpoint["embedding_sha256"] = embedding.meta.get("sha256")
    if trainable and touched_rows is None:
        return
    state = checkpoint[STATE]
    for key in [k for k in state if k.startswith(TABLE_PREFIX)]:
        del state[key]
    if touched_rows is not None:
        checkpoint[TOUCHED_ROWS] = touched_rows.cpu().clone()
        checkpoint[TOUCHED_VALUES] = embedding.weight.detach()[touched_rows].cpu()


def restore_table(checkpoint: dict[str, Any], embedding: HubEmbedding, path: str) -> None:
    """Put the table back into the checkpoint's state dict (in place) from the artifact at
    `path` that `embedding` was loaded from, if it is the one trained with, and the moved
    rows; a checkpoint that holds its whole table is left as it is."""
    state = checkpoint[STATE]
    if any(k.startswith(TABLE_PREFIX) for k in state):
        return
    expected, actual = checkpoint.get("embedding_sha256"), embedding.meta.get("sha256")
    if expected != actual:
        raise UserError(
            f"{path} is not the embedding this checkpoint was trained with: sha256 {actual} != "
            f"{expected}"
        )
    table = embedding.state_dict()
    if TOUCHED_ROWS in checkpoint:
        # The artifact's table, as read from disk, with the moved rows written over it.
        original = artifact.read(path).table
        original[checkpoint[TOUCHED_ROWS]] = checkpoint[TOUCHED_VALUES].to(original.dtype)
        table = {key: original for key in table}
    for key, value in table.items():
        state[TABLE_PREFIX + key] = value


def check_table_rows(embedding: HubEmbedding, rows: int | None, path: str) -> None:
    """Refuse the embedding loaded from `path` when a checkpoint's model was built for another
    row count (`embedding_rows`, recorded in its hyperparameters; None: not recorded)."""
    if rows is not None and rows != embedding.num_rows:
        raise UserError(
            f"{path} has {embedding.num_rows} rows; this model was built for {rows}: it is not "
            "the embedding the checkpoint was trained with"
        )


def net_config(hparams: dict[str, Any], dim: int) -> NetConfig:
    """The network a model's hyperparameters describe, around a `dim`-wide embedding."""
    return NetConfig(
        dim=dim,
        encoder=hparams.get("encoder", "bag"),
        max_tokens=hparams.get("max_tokens", 256),
        cnn=hparams.get("cnn") or {},
        bilstm=hparams.get("bilstm") or {},
        hidden_sizes=hparams.get("hidden_sizes", (256, 64)),
        dropouts=hparams.get("dropouts", (0.3, 0.2)),
    )


def load_net(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[FakeNewsNet, dict[str, Any]]:
    """The network of checkpoint `path` in evaluation mode on `device`, and the checkpoint
    (verified, read with `weights_only=True`), without Lightning: what serving loads."""
    checkpoint = read(path)
    hparams = checkpoint.get(HPARAMS) or {}
    if "embedding_path" not in hparams:
        raise UserError(f"{path}: not a checkpoint of train.py (no embedding_path recorded)")
    embedding_path = hparams["embedding_path"]
    embedding = HubEmbedding.load(embedding_path)
    check_table_rows(embedding, hparams.get("embedding_rows"), embedding_path)
    net = FakeNewsNet.from_config(embedding, net_config(hparams, embedding.dim))
    restore_table(checkpoint, embedding, embedding_path)
    prefix = len(NET_PREFIX)
    state = {k[prefix:]: v for k, v in checkpoint[STATE].items() if k.startswith(NET_PREFIX)}
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1].strip()
        raise UserError(
            f"{path}: its weights do not fit the network it describes ({first})"
        ) from None
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    return net.to(device).eval(), checkpoint
