"""What a run prints while it trains: `EpochProgress`, the trainer's progress bar.

At the start, what is trained on what (`describe_run`); then one line per epoch (`epoch_line`:
its seconds, training rows per second, train and validation loss and accuracy, `*` where
val/loss improved, which is what early stopping and the best checkpoint watch); at the end, why
training stopped (`stop_line`). On a terminal, a bar over the epoch's minibatches while it
runs, where an epoch is more than one Lightning step (a fused epoch is one: it takes a fraction
of a second). Epochs are numbered from 1, as Keras and every file a run writes number them.

An epoch's line is printed when its history row is complete (the model appends it after the
callbacks' `on_train_epoch_end`): at the next epoch's start, or when training ends.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import EarlyStopping
from pytorch_lightning.callbacks.progress import ProgressBar

HEADER = "epoch   seconds     rows/s   train loss  accuracy   val loss  accuracy"


def count(n: int) -> str:
    """A parameter count people read at a glance: 24,961; 124.6 K; 252.4 M."""
    if n < 100_000:
        return f"{n:,}"
    return f"{n / 1e3:.1f} K" if n < 1_000_000 else f"{n / 1e6:.1f} M"


def describe_run(model: Any, datamodule: Any, trainer: pl.Trainer, embedding: str | None) -> str:
    """The lines printed before the first epoch: what is trained (`embedding`: the table's
    name; None: its directory's), on which rows, how and until when (each within 80 columns)."""
    hp = model.hparams
    rows, dim = model.net.embedding.weight.shape
    name = embedding or Path(str(hp.embedding_path)).name
    how = f"fine-tuned, {hp.table_optimizer} table optimizer" if hp.trainable else "frozen"
    encoder = "sqrtn bag of token vectors"
    if hp.encoder != "bag":
        encoder = f"{hp.encoder.upper()} over the first {hp.max_tokens} tokens"
    params = list(model.parameters())
    total = sum(p.numel() for p in params)
    trained = sum(p.numel() for p in params if p.requires_grad)
    head = " > ".join(str(size) for size in [*hp.hidden_sizes, 1])
    lines = [
        f"model  {name} table {rows:,} x {dim} ({how}), {encoder}",
        f"       dense {head}; {count(trained)} of {count(total)} parameters trained",
    ]
    if datamodule is not None and getattr(datamodule, "rows", None) is not None:
        dh, split = datamodule.hparams, datamodule.rows
        val = "the test set" if dh.get("val_source") == "test" else "from train"
        lines.append(
            f"data   {len(split['train']):,} train, {len(split['val']):,} validation ({val}), "
            f"{len(split['test']):,} test rows"
        )
        lines.append(f"train  batches of {dh.batch_size}, Adam lr {hp.lr:g}, "
                     f"at most {trainer.max_epochs} epochs")  # fmt: skip
    stopper = trainer.early_stopping_callback
    if stopper is not None:
        lines.append(
            f"       early stopping: {stopper.monitor} not improved for {stopper.patience} epochs "
            "(*: improved)"
        )
    return "\n".join(lines)


def epoch_line(row: dict[str, float], seconds: float, rows: int, train_seconds: float,
               improved: bool) -> str:  # fmt: skip
    """One epoch, under `HEADER`: `rows` training rows took `train_seconds` of the epoch's
    `seconds` (validation and checkpoints are the rest)."""
    rate = rows / train_seconds if train_seconds > 0 and rows else math.nan

    def value(key: str) -> str:
        return f"{row[key]:.4f}" if key in row else "-"

    return (
        f"{row['epoch']:>5} {seconds:>9.2f} {rate:>10,.0f} {value('train/loss'):>12} "
        f"{value('train/accuracy'):>9} {value('val/loss'):>10} {value('val/accuracy'):>9}"
        + (" *" if improved else "")
    ).replace(" nan", "   -")


def stop_line(trainer: pl.Trainer, history: list[dict[str, float]]) -> str:
    """Why fit ended (early stopping, max_epochs, or another stop) and the best epoch."""
    epochs = history[-1]["epoch"] if history else 0
    stopper = trainer.early_stopping_callback
    if isinstance(stopper, EarlyStopping) and stopper.stopped_epoch > 0:
        why = (f": {stopper.monitor} did not improve for {stopper.patience} epochs "
               "(early stopping)")  # fmt: skip
    elif trainer.max_epochs is not None and epochs >= trainer.max_epochs:
        why = f": trainer.max_epochs={trainer.max_epochs}"
    else:
        why = ""
    lines = [f"stopped after epoch {epochs}{why}"]
    scored = [row for row in history if math.isfinite(row.get("val/loss", math.nan))]
    if scored:
        best = min(scored, key=lambda row: row["val/loss"])
        lines.append(f"best val/loss {best['val/loss']:.4f} at epoch {best['epoch']}")
    return "\n".join(lines)


class EpochProgress(ProgressBar):
    """The trainer's progress display (see the module's docstring). `bar`: show a live bar over
    each epoch's minibatches; None: when standard output is a terminal. `embedding`: the
    table's name, as the run header shows it."""

    def __init__(self, bar: bool | None = None, embedding: str | None = None) -> None:
        super().__init__()
        self._enabled = True
        self._bar_wanted = bar
        self._embedding = embedding
        self._progress: Any = None  # rich.progress.Progress while fit runs on a terminal
        self._task: Any = None
        self._printed = 0  # history rows printed
        self._best = math.inf
        self._epoch_started = self._train_ended = 0.0
        self._rows = 0

    # ProgressBar's interface: Lightning disables the bar on ranks other than 0.
    def disable(self) -> None:
        """Print nothing (Lightning calls this on every rank but 0)."""
        self._enabled = False

    def enable(self) -> None:
        """Print again."""
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        """Whether this process prints."""
        return self._enabled

    def print(self, *args: Any, **kwargs: Any) -> None:
        """Print above the live bar, if one is shown."""
        if not self._enabled:
            return
        text = kwargs.get("sep", " ").join(str(a) for a in args)
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
        else:
            print(text, flush=True)

    # ------------------------------------------------------------------ hooks

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Describe the run, start the bar (on a terminal), print the table's header."""
        if not self._enabled:
            return
        history = getattr(pl_module, "history", [])
        self._printed = len(history)  # a resumed run's earlier epochs were printed then
        self._best = min((row.get("val/loss", math.inf) for row in history), default=math.inf)
        self.print(describe_run(pl_module, trainer.datamodule, trainer, self._embedding))
        self.print("\n" + HEADER)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Print the epoch before, now complete; start timing this one."""
        self._print_epochs(pl_module, time.perf_counter())
        self._epoch_started = self._train_ended = time.perf_counter()
        self._rows = 0
        batches = trainer.num_training_batches
        if self._enabled and 1 < batches < math.inf and self._start_bar():
            self._task = self._progress.add_task(
                "", total=batches, epoch=trainer.current_epoch + 1, rate=""
            )

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Count the rows trained (a fused epoch's batch holds all of them)."""
        self._train_ended = time.perf_counter()
        self._rows += len(batch["labels"])
        if self._task is not None:
            elapsed = self._train_ended - self._epoch_started
            rate = f", {self._rows / elapsed:,.0f} rows/s" if elapsed > 0 else ""
            self._progress.update(self._task, advance=1, rate=rate)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The epoch's training is over: drop its bar."""
        self._drop_task()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Print the last epoch and why training stopped; stop the bar."""
        self._drop_task()
        self._print_epochs(pl_module, time.perf_counter())
        if self._enabled:
            self.print(stop_line(trainer, getattr(pl_module, "history", [])) + "\n")
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Never leave a live bar behind (an interrupted fit)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    # ------------------------------------------------------------------ helpers

    def _print_epochs(self, pl_module: pl.LightningModule, now: float) -> None:
        history = getattr(pl_module, "history", [])
        if not self._enabled:
            self._printed = len(history)
            return
        for row in history[self._printed :]:
            loss = row.get("val/loss", math.nan)
            improved = loss < self._best
            self._best = min(self._best, loss) if math.isfinite(loss) else self._best
            seconds, train = now - self._epoch_started, self._train_ended - self._epoch_started
            self.print(epoch_line(row, seconds, self._rows, train, improved))
        self._printed = len(history)

    def _start_bar(self) -> bool:
        """Start the live bar (on a terminal, or as `bar` says) unless it runs; whether it does."""
        wanted = sys.stdout.isatty() if self._bar_wanted is None else self._bar_wanted
        if self._progress is None and wanted:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._progress = Progress(
                TextColumn("epoch {task.fields[epoch]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("minibatches{task.fields[rate]}"),
                transient=True,
                console=Console(force_terminal=True) if self._bar_wanted else None,
            )
            self._progress.start()
        return self._progress is not None

    def _drop_task(self) -> None:
        if self._task is not None:
            self._progress.remove_task(self._task)
            self._progress.refresh()  # lines printed next must not redraw the removed bar
            self._task = None
