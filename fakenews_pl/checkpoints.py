"""Checkpoint files written as they are serialised, and atomically.

Lightning's default `TorchCheckpointIO` serialises a whole checkpoint into memory before it
writes the file: for a fine-tuned 1M-row table with its two Adam moments that is ~1.5 GB of
extra memory at every save. `AtomicCheckpointIO` streams `torch.save` into a temporary file
beside the target and renames it over the target when complete, so a crash or Ctrl-C never
leaves a truncated checkpoint, and a `last.ckpt` symlink (`save_last: link`) is replaced, never
written through.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.utilities.cloud_io import get_filesystem
from pytorch_lightning.plugins.io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` whose local saves stream into a temporary file, then rename it."""

    def save_checkpoint(
        self,
        checkpoint: dict[str, Any],
        path: str | os.PathLike,
        storage_options: Any | None = None,
    ) -> None:
        """Stream `checkpoint` into a temporary file beside `path`, then rename it to `path`."""
        if storage_options is not None or "file" not in get_filesystem(path).protocol:
            super().save_checkpoint(checkpoint, path, storage_options)  # remote: Lightning's
            return
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as file:
                torch.save(checkpoint, file)
            os.replace(temp, target)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
