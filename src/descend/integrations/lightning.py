"""descend's callbacks in a Lightning ``Trainer``: :class:`DescendCallback`.

Needs ``lightning`` (``pip install 'descend[lightning]'``).

Hooks, Lightning's -> descend's (automatic optimization, the first optimizer)::

    on_train_start                   on_fit_begin (then a resumed run's state is loaded)
    on_train_epoch_start             on_epoch_begin
    on_train_batch_start             on_batch_begin (a callback may not replace the batch)
    on_before_backward(loss)         on_loss (read only: terms go in training_step)
    on_before_optimizer_step         on_after_backward (gradients complete, before
                                     Lightning's gradient clipping and the step)
    on_train_batch_end               on_batch_end, once per optimizer step
    on_train_epoch_end               on_epoch_end (logs: train_loss, the logged metrics,
                                     val_loss when validation ran)
    on_train_end / on_exception      on_fit_end / on_fit_error

A callback that sets ``stop_training`` (early stopping) sets Lightning's ``should_stop``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

from descend._extras import require
from descend.callbacks import Callback
from descend.integrations._bridge import Bridge, hyper, number

_pl = require("lightning.pytorch", "the Lightning integration needs", "lightning", package="lightning")


class DescendCallback(_pl.Callback):
    """Run descend callbacks (monitors, NaN guard, EMA, early stopping...) in Lightning.

    At the end of every training epoch, at the end of the fit and when it fails, writes
    ``steps.csv`` (``step, epoch, loss, lr, momentum`` per optimizer step: ``loss`` is
    the loss given to ``backward``, summed over accumulated batches), ``epochs.csv``
    (``epoch, step, lr, train_loss`` and every float metric Lightning holds, e.g.
    ``val_loss``) and ``monitors.json`` to ``directory``, so that
    ``descend doctor DIRECTORY`` diagnoses the run. Only global rank 0 writes. The
    callbacks' state and the logs so far go into Lightning's checkpoints
    (``state_dict``), so a fit resumed with ``ckpt_path`` continues them exactly.

    Args:
        callbacks: descend callbacks (default: :func:`descend.train.monitors.light_monitors`
            every ``interval`` steps, the per-layer gradient norms and dead or saturated
            units that ``descend doctor`` reads). Callbacks that replace the batch
            (augmentation, input noise) or add loss terms (penalties) are refused at
            the first step: do that in ``training_step``. Gradient clipping and noise
            are optimizer arguments in descend (``clip_norm=``, ``grad_noise=``) and
            need no callback.
        directory: where the files go (default: ``trainer.log_dir``, else
            ``trainer.default_root_dir``).
        interval: the default monitors' sampling interval (default 20).
        loss_fn: ``loss_fn(outputs, targets)`` for callbacks that evaluate the loss
            themselves (:class:`~descend.data.samplers.LossFeedback`).

    Example:
        >>> import os, tempfile, torch, lightning.pytorch as pl
        >>> import descend.optim as do
        >>> from descend.train import GradientNormMonitor
        >>> class Net(pl.LightningModule):
        ...     def __init__(self):
        ...         super().__init__(); self.lin = torch.nn.Linear(4, 2)
        ...     def training_step(self, batch, i):
        ...         x, y = batch
        ...         return torch.nn.functional.cross_entropy(self.lin(x), y)
        ...     def configure_optimizers(self):
        ...         return do.SGD(self.parameters(), lr=0.1)
        >>> data = torch.utils.data.TensorDataset(torch.randn(16, 4), torch.randint(0, 2, (16,)))
        >>> run = tempfile.mkdtemp()
        >>> cb = DescendCallback([GradientNormMonitor(interval=1)], directory=run)
        >>> trainer = pl.Trainer(max_epochs=1, callbacks=[cb], default_root_dir=run, logger=False,
        ...                      enable_checkpointing=False, enable_progress_bar=False,
        ...                      enable_model_summary=False)
        >>> trainer.fit(Net(), torch.utils.data.DataLoader(data, batch_size=8))
        >>> cb.history.steps["step"], cb.history.monitors["grad_norm"]["step"]
        ([1, 2], [0, 1])
        >>> sorted(f for f in os.listdir(run) if not f.startswith("."))
        ['epochs.csv', 'monitors.json', 'steps.csv']
    """

    def __init__(self, callbacks: Sequence[Callback] | None = None, *, directory=None,
                 interval: int = 20, loss_fn: Callable | None = None):
        self.bridge = Bridge(callbacks, directory, interval, loss_fn)
        self._loss = None
        self._step_hyper: tuple[float, float] = (math.nan, math.nan)
        self._batch = None

    @property
    def callbacks(self) -> list[Callback]:
        return self.bridge.callbacks

    @property
    def history(self):
        """The run's ``steps``, ``epochs`` and ``monitors`` tables (what the files hold)."""
        return self.bridge.history

    def _directory(self, trainer):
        if self.bridge.directory is not None:
            return self.bridge.directory
        return getattr(trainer, "log_dir", None) or trainer.default_root_dir

    def _write(self, trainer) -> None:
        if trainer.is_global_zero:
            self.bridge.write(self._directory(trainer))

    def _sync(self, trainer) -> None:
        loop = self.bridge.loop
        loop.global_step = int(trainer.global_step)
        loop.epoch = int(trainer.current_epoch)

    # -- Lightning hooks ----------------------------------------------------------------
    def on_train_start(self, trainer, pl_module) -> None:
        opt = trainer.optimizers[0] if trainer.optimizers else None
        scheds = [c.scheduler for c in getattr(trainer, "lr_scheduler_configs", [])]
        self.bridge.begin(pl_module, opt, global_step=trainer.global_step,
                          epoch=trainer.current_epoch, device=pl_module.device, schedulers=scheds)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._sync(trainer)
        self.bridge.loop.call("on_epoch_begin")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._sync(trainer)
        self.bridge.loop.batch_index = batch_idx
        self._batch = batch
        if self.bridge.loop.call("on_batch_begin", batch) is not batch:
            raise RuntimeError("a descend callback replaced the batch (augmentation or input "
                               "noise); Lightning's callbacks cannot: apply it in training_step")

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        if self.bridge.loop.call("on_loss", loss, self._batch) is not loss:
            raise RuntimeError("a descend callback added a term to the loss (a penalty or an "
                               "adversarial loss); Lightning's callbacks cannot: add it in "
                               "training_step")
        d = loss.detach()
        self._loss = d if self._loss is None else self._loss + d

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self._sync(trainer)
        loop = self.bridge.loop
        loop.optimizer = getattr(optimizer, "_optimizer", optimizer)  # LightningOptimizer
        self._step_hyper = hyper(loop.optimizer)
        loop.call("on_after_backward")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loop = self.bridge.loop
        if int(trainer.global_step) == loop.global_step:
            return  # accumulating: no optimizer step yet
        self._sync(trainer)
        loss = math.nan if self._loss is None else float(self._loss)
        self._loss = None
        lr, mom = self._step_hyper
        self.bridge.step_row({"step": loop.global_step, "epoch": loop.epoch + 1, "loss": loss,
                              "lr": lr, "momentum": mom})
        loop.call("on_batch_end", {"step": loop.global_step, "batch": batch_idx, "loss": loss,
                                   "lr": lr, "momentum": mom})
        if loop.stop_training:
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._sync(trainer)
        loop = self.bridge.loop
        epoch = loop.epoch + 1
        logs: dict[str, Any] = {"epoch": epoch, "step": loop.global_step,
                                "lr": hyper(loop.optimizer)[0],
                                "train_loss": self.bridge.epoch_train_loss(epoch)}
        for k, v in trainer.callback_metrics.items():
            v = number(v)
            if v is not None:
                logs[k] = v
        self.bridge.epoch_row(logs)
        loop.epoch = epoch  # epochs completed, as descend's callbacks count them
        loop.call("on_epoch_end", logs)
        if loop.stop_training:
            trainer.should_stop = True
        self._write(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self._sync(trainer)
        self.bridge.loop.call("on_fit_end")
        self._write(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if self.bridge.loop is None:
            return
        self.bridge.loop.call("on_fit_error", exception)
        self._write(trainer)

    # -- checkpoints --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return self.bridge.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.bridge.load_state_dict(state_dict)


__all__ = ["DescendCallback"]
