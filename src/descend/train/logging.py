"""Log writers for :class:`descend.train.Trainer`: CSV files and TensorBoard.

Both are callbacks that write at the end of every epoch (the steps of that epoch in
one go), so that logging adds no host work to the training step itself.
"""

from __future__ import annotations

import csv
import math
import os
from typing import Any

from descend._extras import require
from descend.callbacks import CALLBACKS, Callback


@CALLBACKS.register("csv_logger")
class CSVLogger(Callback):
    """Write ``steps.csv`` (one row per optimizer step) and ``epochs.csv`` (one row per epoch).

    Columns are those of :class:`descend.train.trainer.History` (``step, epoch, loss, lr,
    momentum, grad_norm, time`` and ``epoch, step, time, batch_size, lr, train_loss,
    train_acc, val_loss, val_acc``). Files are appended to when training continues.

    Args:
        directory: folder for the two files (created if missing).

    Example:
        >>> import tempfile, torch
        >>> from descend.train import Trainer
        >>> d = tempfile.mkdtemp()
        >>> m = torch.nn.Linear(2, 2)
        >>> t = Trainer(m, torch.optim.SGD(m.parameters(), lr=0.1), callbacks=[CSVLogger(d)])
        >>> _ = t.fit((torch.randn(8, 2), torch.zeros(8, dtype=torch.long)), epochs=2)
        >>> open(os.path.join(d, "epochs.csv")).readline().strip()
        'epoch,step,time,batch_size,lr,train_loss,train_acc'
    """

    def __init__(self, directory: str | os.PathLike):
        if not isinstance(directory, (str, os.PathLike)) or not str(directory):
            raise TypeError(f"`directory` must be a path. Received: directory={directory!r}")
        self.directory = os.fspath(directory)
        self._steps_written = 0
        self._epochs_written = 0
        self._columns: dict[str, list[str]] = {}

    def on_fit_begin(self, trainer) -> None:
        os.makedirs(self.directory, exist_ok=True)

    def _write(self, fname: str, table: dict[str, list], start: int) -> int:
        if not table:
            return start
        cols = list(table)
        n = len(table[cols[0]])
        path = os.path.join(self.directory, fname)
        fresh = start == 0 or fname not in self._columns
        if not fresh and cols != self._columns[fname]:
            start, fresh = 0, True  # a new column appeared: rewrite the file whole
        with open(path, "w" if fresh else "a", newline="") as f:
            w = csv.writer(f)
            if fresh:
                w.writerow(cols)
            for i in range(start, n):
                w.writerow([_fmt(table[c][i]) for c in cols])
        self._columns[fname] = cols
        return n

    def on_epoch_end(self, trainer, logs: dict[str, Any]) -> None:
        h = trainer.history
        self._steps_written = self._write("steps.csv", h.steps, self._steps_written)
        self._epochs_written = self._write("epochs.csv", h.epochs, self._epochs_written)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(v)
    return str(v)


@CALLBACKS.register("tensorboard")
class TensorBoardLogger(Callback):
    """Write every step's ``loss/lr/momentum/grad_norm`` and every epoch's metrics to TensorBoard.

    Tags: ``step/<name>`` against the global step, ``epoch/<name>`` against the epoch.
    Needs the ``tensorboard`` package (``pip install 'descend[tensorboard]'``); a clear
    ``ImportError`` says so when it is missing.

    Args:
        log_dir: the event-file folder (``tensorboard --logdir`` points at it or a parent).

    Example:
        >>> import pathlib, tempfile, torch
        >>> from descend.train import Trainer
        >>> d = tempfile.mkdtemp(); m = torch.nn.Linear(2, 2)
        >>> t = Trainer(m, torch.optim.SGD(m.parameters(), lr=0.1), callbacks=[TensorBoardLogger(d)])
        >>> _ = t.fit((torch.randn(8, 2), torch.zeros(8, dtype=torch.long)), epochs=1)
        >>> [f.name.startswith("events.out.tfevents") for f in pathlib.Path(d).iterdir()]
        [True]
    """

    def __init__(self, log_dir: str | os.PathLike):
        if not isinstance(log_dir, (str, os.PathLike)) or not str(log_dir):
            raise TypeError(f"`log_dir` must be a path. Received: log_dir={log_dir!r}")
        self.log_dir = os.fspath(log_dir)
        self._writer = None
        self._steps_written = 0

    def on_fit_begin(self, trainer) -> None:
        if self._writer is None:
            require("tensorboard", "TensorBoard logging needs", "tensorboard")
            from torch.utils.tensorboard import SummaryWriter
            self._writer = SummaryWriter(log_dir=self.log_dir)

    def on_epoch_end(self, trainer, logs: dict[str, Any]) -> None:
        steps = trainer.history.steps
        n = len(steps.get("step", []))
        for i in range(self._steps_written, n):
            s = steps["step"][i]
            for k in ("loss", "lr", "momentum", "grad_norm"):
                v = steps.get(k, [math.nan] * n)[i]
                if not math.isnan(v):
                    self._writer.add_scalar(f"step/{k}", v, s)
        self._steps_written = n
        for k, v in logs.items():
            if k != "epoch" and isinstance(v, (int, float)) and not math.isnan(float(v)):
                self._writer.add_scalar(f"epoch/{k}", v, logs["epoch"])
        self._writer.flush()

    def on_fit_end(self, trainer) -> None:
        if self._writer is not None:
            self._writer.flush()

    def on_fit_error(self, trainer, error) -> None:
        self.on_fit_end(trainer)  # what was logged so far reaches the event file

    def close(self) -> None:
        """Close the event file."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
