"""descend's callbacks in a Hugging Face ``Trainer``: :class:`DescendCallback`.

Needs ``transformers`` (``pip install 'descend[transformers]'``).

Hooks, Hugging Face's -> descend's::

    on_train_begin                   on_fit_begin (then a resumed run's state is loaded)
    on_epoch_begin                   on_epoch_begin
    on_step_begin                    on_batch_begin (batch None: the inputs are not shown)
    on_pre_optimizer_step            on_after_backward (gradients complete, after
                                     Hugging Face's clipping by max_grad_norm)
    on_step_end                      on_batch_end (after the step and the scheduler)
    on_epoch_end (+ on_evaluate)     on_epoch_end (logs: train_loss, val_* from eval_*;
                                     with eval_strategy="epoch" it waits for the evaluation)
    on_train_end                     on_fit_end

Hugging Face has no hook for the loss tensor or for a failed fit: ``on_loss`` and
``on_fit_error`` are not called (the NaN guard checks the gradients only).
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any, Sequence

import torch

from descend._extras import require
from descend.callbacks import Callback
from descend.data.samplers import LossFeedback
from descend.integrations._bridge import Bridge, hyper, number
from descend.train.checkpoint import NanGuard
from descend.train.monitors import ActivationMonitor

_tf = require("transformers", "the Hugging Face integration needs", "transformers")

STATE_FILE = "descend_state.pt"
log = logging.getLogger("descend.integrations")


def _unwrap(optimizer):
    """The optimizer inside accelerate's ``AcceleratedOptimizer`` (or the optimizer)."""
    inner = getattr(optimizer, "optimizer", None)
    return inner if inner is not None and hasattr(inner, "param_groups") else optimizer


#: Timing columns of the Trainer's evaluation metrics, left out of epochs.csv.
_THROUGHPUT = ("_runtime", "_samples_per_second", "_steps_per_second")

#: Callbacks whose on_batch_begin / on_loss only read (attach hooks, record the loss).
_READS_ONLY = (ActivationMonitor, NanGuard)


def _overrides(cb: Callback, hook: str) -> bool:
    return getattr(type(cb), hook) is not getattr(Callback, hook)


class DescendCallback(_tf.TrainerCallback):
    """Run descend callbacks (monitors, NaN guard, EMA, early stopping...) in a HF ``Trainer``.

    Writes ``steps.csv`` (``step, epoch, lr, momentum`` per optimizer step, plus what
    Hugging Face logs at that step: ``loss``, ``grad_norm``; set ``logging_steps=1`` for
    a loss at every step), ``epochs.csv`` (``epoch, step, lr, train_loss`` and
    ``val_*`` from the evaluation's ``eval_*``) and ``monitors.json`` to ``directory``
    at every epoch end, checkpoint and at the end of training, so that
    ``descend doctor DIRECTORY`` diagnoses the run. Only the main process writes.

    The callbacks' state and the logs so far are saved with every checkpoint as
    ``checkpoint-<step>/descend_state.pt`` (plain data, read with
    ``torch.load(weights_only=True)``) and loaded when the Trainer resumes from that
    checkpoint (``trainer.train(resume_from_checkpoint=...)``, a checkpoint of
    ``output_dir``).

    Args:
        callbacks: descend callbacks (default: :func:`descend.train.monitors.light_monitors`
            every ``interval`` steps). Callbacks that replace the batch or add loss terms
            (augmentation, penalties) and the loss-feedback sampler are refused: Hugging
            Face shows callbacks neither the batch nor the loss. Gradient clipping and
            noise are descend optimizer arguments (``clip_norm=``, ``grad_noise=``; set
            ``max_grad_norm=0`` to let the optimizer clip).
        directory: where the files go (default: ``args.output_dir``).
        interval: the default monitors' sampling interval (default 20).

    Example:
        >>> import tempfile, torch, transformers
        >>> import descend.optim as do
        >>> from descend import schedules
        >>> from descend.train import GradientNormMonitor
        >>> cfg = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=32, n_positions=16,
        ...                               bos_token_id=0, eos_token_id=0)
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = transformers.GPT2LMHeadModel(cfg)
        >>> ids = torch.randint(0, 32, (8, 16))
        >>> data = [{"input_ids": x, "labels": x} for x in ids]
        >>> opt = do.AdamW(model.parameters(), lr=1e-3)
        >>> sched = schedules.LRScheduler(opt, schedules.cosine(1e-3, total=4))
        >>> run = tempfile.mkdtemp()
        >>> args = transformers.TrainingArguments(run, max_steps=4, per_device_train_batch_size=2,
        ...     logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True)
        >>> cb = DescendCallback([GradientNormMonitor(interval=2)])
        >>> trainer = transformers.Trainer(model=model, args=args, train_dataset=data,
        ...                                optimizers=(opt, sched), callbacks=[cb])
        >>> trainer.remove_callback(transformers.PrinterCallback)   # no log lines on stdout
        >>> _ = trainer.train()
        >>> cb.history.steps["step"], cb.history.monitors["grad_norm"]["step"]
        ([1, 2, 3, 4], [0, 2])
    """

    def __init__(self, callbacks: Sequence[Callback] | None = None, *, directory=None,
                 interval: int = 20):
        self.bridge = Bridge(callbacks, directory, interval)
        for cb in self.bridge.callbacks:
            name = type(cb).__name__
            if isinstance(cb, LossFeedback):
                raise ValueError("`callbacks` must not hold LossFeedback under the Hugging Face "
                                 "Trainer, which builds its own sampler and computes the loss "
                                 f"inside the model. Received: {name}")
            if not isinstance(cb, _READS_ONLY) and (_overrides(cb, "on_loss")
                                                    or _overrides(cb, "on_batch_begin")):
                raise ValueError("`callbacks` must not change the batch or the loss under the "
                                 "Hugging Face Trainer, which shows callbacks neither (add the "
                                 "term in a compute_loss override, the augmentation in the data "
                                 f"collator). Received: {name}")
        self._step_hyper: tuple[float, float] = (math.nan, math.nan)
        self._epoch_logs: dict[str, Any] | None = None

    @property
    def callbacks(self) -> list[Callback]:
        return self.bridge.callbacks

    @property
    def history(self):
        """The run's ``steps``, ``epochs`` and ``monitors`` tables (what the files hold)."""
        return self.bridge.history

    def _directory(self, args):
        return self.bridge.directory if self.bridge.directory is not None else args.output_dir

    def _write(self, args, state) -> None:
        if state.is_world_process_zero:
            self.bridge.write(self._directory(args))

    def _sync(self, state) -> None:
        self.bridge.loop.global_step = int(state.global_step)

    def _stop(self, control) -> None:
        if self.bridge.loop.stop_training:
            control.should_training_stop = True

    # -- Hugging Face hooks -------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, optimizer=None, lr_scheduler=None,
                       **kwargs):
        if state.global_step > 0:
            path = os.path.join(args.output_dir, f"checkpoint-{state.global_step}", STATE_FILE)
            if os.path.isfile(path):
                self.bridge.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            else:
                log.warning("resumed at step %d without %s: descend's callbacks and logs start "
                            "again from here", state.global_step, path)
        epoch = int(state.epoch or 0)
        device = getattr(model, "device", None)
        self.bridge.begin(model, _unwrap(optimizer), global_step=state.global_step, epoch=epoch,
                          device=device, schedulers=[lr_scheduler] if lr_scheduler is not None else [])

    def on_epoch_begin(self, args, state, control, **kwargs):
        self._sync(state)
        self.bridge.loop.call("on_epoch_begin")

    def on_step_begin(self, args, state, control, **kwargs):
        self._sync(state)
        self.bridge.loop.call("on_batch_begin", None)

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        self._sync(state)
        loop = self.bridge.loop
        if optimizer is not None:
            loop.optimizer = _unwrap(optimizer)
        self._step_hyper = hyper(loop.optimizer)
        loop.call("on_after_backward")

    def on_step_end(self, args, state, control, **kwargs):
        self._sync(state)
        loop = self.bridge.loop
        lr, mom = self._step_hyper
        epoch = loop.epoch + 1
        self.bridge.step_row({"step": loop.global_step, "epoch": epoch, "lr": lr, "momentum": mom})
        loop.call("on_batch_end", {"step": loop.global_step, "lr": lr, "momentum": mom})
        self._stop(control)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        row = {k: number(logs[k]) for k in ("loss", "grad_norm") if k in logs}
        row = {k: v for k, v in row.items() if v is not None}
        steps = self.bridge.history.steps
        if row and steps.get("step") and steps["step"][-1] == state.global_step:
            self.bridge.update_last_step(row)

    def on_epoch_end(self, args, state, control, **kwargs):
        self._sync(state)
        loop = self.bridge.loop
        epoch = loop.epoch + 1
        self._epoch_logs = {"epoch": epoch, "step": loop.global_step,
                            "lr": hyper(loop.optimizer)[0],
                            "train_loss": self.bridge.epoch_train_loss(epoch)}
        if str(getattr(args, "eval_strategy", "no")).lower().endswith("epoch"):
            return  # the evaluation comes next (on_evaluate)
        self._end_epoch(args, state, control)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self._epoch_logs is None:
            return  # an evaluation within the epoch
        for k, v in (metrics or {}).items():
            v = number(v)
            if v is not None and k != "epoch" and not k.endswith(_THROUGHPUT):
                self._epoch_logs["val_" + k[5:] if k.startswith("eval_") else k] = v
        self._end_epoch(args, state, control)

    def _end_epoch(self, args, state, control) -> None:
        logs, self._epoch_logs = self._epoch_logs, None
        loop = self.bridge.loop
        self.bridge.epoch_row(logs)
        loop.epoch = logs["epoch"]
        loop.call("on_epoch_end", logs)
        self._stop(control)
        self._write(args, state)

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        if os.path.isdir(folder):
            torch.save(self.bridge.state_dict(), os.path.join(folder, STATE_FILE))
        self._write(args, state)

    def on_train_end(self, args, state, control, **kwargs):
        self._sync(state)
        if self._epoch_logs is not None:  # the epoch's evaluation did not come
            self._end_epoch(args, state, control)
        self.bridge.loop.call("on_fit_end")
        self._write(args, state)


__all__ = ["DescendCallback", "STATE_FILE"]
