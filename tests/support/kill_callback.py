"""A callback the resume tests add to a real `train.py` run: SIGKILL itself mid-epoch."""

import os
import signal

import pytorch_lightning as pl


class KillAt(pl.Callback):
    """SIGKILL this process at the start of training batch `batch` of epoch `epoch` (1-based)."""

    def __init__(self, epoch: int, batch: int = 0) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.current_epoch + 1 == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGKILL)
