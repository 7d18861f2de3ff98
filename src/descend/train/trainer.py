"""The Trainer: minibatch SGD around any model, loss and torch optimizer.

One training step on a minibatch ``B`` of ``m`` examples (notes 000, "Mini-Batch
Gradient Descent")::

    g = (1/m) sum_{i in B} grad_theta L(f(x_i; theta), y_i)       # forward + backward
    theta <- optimizer.step(g)                                      # any update rule
    schedules step                                                  # lr, momentum, ...

An epoch visits every training example once, in a fresh random order drawn from a
seeded generator (notes 003, "Shuffling Input": successive examples rarely share a
class). Evaluation runs the model in ``eval()`` mode under ``torch.no_grad()``.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import torch
from torch.utils.data import DataLoader, RandomSampler, SubsetRandomSampler, TensorDataset, WeightedRandomSampler

from descend._validation import check_bool, check_choice, check_int, fail
from descend.callbacks import Callback
from descend.train.metrics import METRICS, Mean

_INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)

#: Steps of per-tensor gradient norms kept before they are reduced to global norms.
_REDUCE_EVERY = 64

#: Batches whose outputs are kept and given to the metrics at once (their sums add up),
#: unless the kept outputs reach ``_METRIC_ELEMS`` elements first.
_METRIC_EVERY = 16
_METRIC_ELEMS = 1 << 20

#: ``precision=`` names (Lightning's) -> autocast dtype (None: no autocast).
PRECISIONS = {"32": None, "32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def _with_last(items: Iterable) -> Iterable[tuple[Any, bool]]:
    """``(item, is_last)`` pairs (reads one item ahead)."""
    it = iter(items)
    try:
        prev = next(it)
    except StopIteration:
        return
    for item in it:
        yield prev, False
        prev = item
    yield prev, True


def _compile_kwargs(compile) -> dict[str, Any] | None:
    """``torch.compile`` keyword arguments of ``compile=`` (None: not compiled)."""
    if compile is False:
        return None
    if compile is True:
        return {}
    if not isinstance(compile, dict):
        fail("compile", "False, True or a dict of torch.compile keyword arguments", compile, TypeError)
    allowed = [k for k in inspect.signature(torch.compile).parameters if k != "model"]
    for k in compile:
        if k not in allowed:
            fail("compile", f"a dict of torch.compile keyword arguments ({', '.join(allowed)})",
                 compile)
    return dict(compile)


def _grad_scaler(device: torch.device):
    """A ``torch.amp.GradScaler`` for ``device``; a clear error where torch has none for it."""
    try:
        return torch.amp.GradScaler(device.type)
    except (AttributeError, TypeError, RuntimeError, AssertionError) as e:
        fail("precision", f"'32' or 'bf16-mixed' on {device.type}: '16-mixed' needs a "
             f"torch.amp.GradScaler for {device.type}, which this torch ({torch.__version__}) lacks "
             f"({e}); use CUDA", "16-mixed")


@dataclass
class History:
    """What a fit recorded, as plain Python lists (JSON-ready).

    ``steps``: one entry per optimizer step — ``step`` (1-based global step), ``epoch``,
    ``loss`` (the back-propagated objective, after ``on_loss`` terms), ``lr``,
    ``momentum`` (``momentum`` or ``betas[0]`` of the first param group; NaN if none),
    ``grad_norm`` (global L2 norm of all gradients before the step; NaN when off),
    ``time`` (training seconds since the first fit, evaluation excluded).

    ``epochs``: one entry per epoch — ``epoch`` (1-based), ``step``, ``time``,
    ``batch_size``, ``lr``, ``train_loss`` (mean data loss over the epoch's batches,
    without ``on_loss`` terms, so it compares with ``val_loss``), ``train_<metric>``,
    and ``val_loss`` / ``val_<metric>`` when validation data is given.

    Example:
        >>> m = torch.nn.Linear(2, 2)
        >>> t = Trainer(m, torch.optim.SGD(m.parameters(), lr=0.1), batch_size=4)
        >>> h = t.fit((torch.randn(8, 2), torch.zeros(8, dtype=torch.long)), epochs=2)
        >>> h.steps["step"], h.epochs["epoch"], h.epochs["lr"]
        ([1, 2, 3, 4], [1, 2], [0.1, 0.1])
    """

    steps: dict[str, list] = field(default_factory=dict)
    epochs: dict[str, list] = field(default_factory=dict)
    monitors: dict[str, dict[str, list]] = field(default_factory=dict)

    def _append(self, table: dict[str, list], row: dict[str, Any]) -> None:
        """Append one row (a key missing on either side is NaN in that row)."""
        self._extend(table, {k: [v] for k, v in row.items()})

    def _extend(self, table: dict[str, list], cols: dict[str, list]) -> None:
        """Append several rows given as columns of equal length; a key missing on either
        side is NaN in those rows."""
        if not cols:
            return
        k = len(next(iter(cols.values())))
        n = len(next(iter(table.values()))) if table else 0
        for key, col in cols.items():
            table.setdefault(key, [math.nan] * n).extend(col)
        for col in table.values():
            if len(col) < n + k:
                col.extend([math.nan] * (n + k - len(col)))

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """``{"steps", "epochs", "monitors"}`` (the same list objects; copy to keep)."""
        return {"steps": self.steps, "epochs": self.epochs, "monitors": self.monitors}


def _as_tensors(data, name: str):
    """(x, y) tensors for a TensorDataset or a pair of tensors; None for other iterables."""
    if isinstance(data, TensorDataset):
        if len(data.tensors) != 2:
            fail(name, "a TensorDataset of (inputs, targets)", f"{len(data.tensors)} tensors")
        return data.tensors
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        if data[0].shape[0] != data[1].shape[0]:
            fail(name, "inputs and targets with the same first dimension",
                 f"{tuple(data[0].shape)} and {tuple(data[1].shape)}")
        return tuple(data)
    if isinstance(data, Iterable):
        return None
    fail(name, "a TensorDataset, an (x, y) pair of tensors or an iterable of batches",
         type(data).__name__, TypeError)


def _metric_key(name: str) -> str:
    return "acc" if name == "accuracy" else name


def _add_metrics(metric_items, sums: dict[str, list], outs: list, ys: list) -> None:
    """Each metric's sum over the kept batches, computed once on them together; clears them."""
    if not outs or not metric_items:
        return
    if len(outs) == 1:
        out, y = outs[0], ys[0]
    else:
        out, y = torch.cat(outs), torch.cat(ys)
    for name, fn in metric_items:
        sums[name].append(fn(out, y))
    outs.clear()
    ys.clear()


def _weighted_mean(values: list[torch.Tensor], counts: list[int]) -> float:
    """sum_i values[i] * counts[i] / sum_i counts[i] for per-batch mean losses (one host read)."""
    total = sum(counts)
    if not values or not total:
        return math.nan
    v = torch.stack(values).double()
    w = torch.tensor(counts, dtype=torch.float64, device=v.device)
    return float((v * w).sum()) / total


def _derived_seed(seed: int) -> int:
    """A second seed from ``seed`` (one LCG step, 63 bits), for a second generator."""
    return (seed * 6364136223846793005 + 1442695040888963407) % (1 << 63)


_TORCH_RANDOM_SAMPLERS = (RandomSampler, SubsetRandomSampler, WeightedRandomSampler)


def _samplers(loader: DataLoader) -> list[Any]:
    """A DataLoader's sampler, batch sampler and the batch sampler's sampler (distinct)."""
    found: list[Any] = []
    for s in (loader.sampler, loader.batch_sampler, getattr(loader.batch_sampler, "sampler", None)):
        if s is not None and all(s is not t for t in found):
            found.append(s)
    return found


class Trainer:
    """Fit, evaluate and predict with any ``nn.Module`` and ``torch.optim.Optimizer``.

    Per step: draw the next minibatch (seeded shuffling), call the callbacks'
    ``on_batch_begin`` (which may replace the batch), then ``optimizer.step(closure)``
    where the closure zeroes the gradients, runs the forward pass, the loss,
    ``on_loss`` (which may add terms), ``backward`` and ``on_after_backward``; then the
    per-step schedulers, and ``on_batch_end``. The closure is what lets optimizers that
    re-evaluate the loss (look-ahead Nesterov, L-BFGS) work; an optimizer whose
    ``step`` takes no argument is called as ``closure(); optimizer.step()``. When the
    optimizer calls the closure several times in one step, the first call's loss and
    gradient norm are logged and the hooks run on every call.

    Args:
        model: the ``nn.Module``; moved to ``device``.
        optimizer: a ``torch.optim.Optimizer`` (``descend.optim`` or ``torch.optim``).
        loss_fn: ``loss_fn(outputs, targets) -> mean loss`` (default cross-entropy).
        schedulers: objects with ``.step()`` (``descend.schedules.Scheduler``, torch LR
            schedulers). Each steps once per optimizer step, or once per epoch when its
            ``unit`` attribute (else ``scheduler_unit``) is ``"epoch"``;
            ``ReduceLROnPlateau`` gets the epoch's ``val_loss`` (else ``train_loss``).
        scheduler_unit: ``"step"`` (default) or ``"epoch"``.
        callbacks: :class:`~descend.callbacks.Callback` instances, called in order.
        metrics: names in ``descend.train.metrics.METRICS`` (default ``("accuracy",)``);
            logged as ``train_acc`` / ``val_acc`` for accuracy; skipped for float targets.
        batch_size: int, or a callable ``epoch -> int`` (a batch-size schedule; epoch is
            0-based), default 64.
        eval_batch_size: batch size for evaluate/predict (default 1024).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a ``torch.device`` (default cpu).
            Tensor data is moved to the device once per fit, not once per step.
        seed: seed of the shuffling generator (default 0).
        shuffle: reshuffle every epoch (default True).
        drop_last: drop the last incomplete batch (default False).
        progress: show a tqdm bar; None (default) shows it only on a terminal.
        grad_norm: log the global gradient norm per step (default True).
        on_nonfinite: ``"raise"`` (default): stop with ``FloatingPointError`` at the first
            step whose loss is NaN or infinite, before the optimizer applies it (the
            model keeps its last finite weights; earlier checkpoints are intact);
            ``"ignore"``: train on. A :class:`~descend.train.NanGuard` among the
            callbacks takes over (it skips or rolls back such steps) and the default
            check is off. The check reads the loss back to the host once per step.
        precision: Lightning's names. ``"32"`` (default; ``"32-true"`` is the same):
            float32 throughout. ``"bf16-mixed"``: the forward pass and the loss (with the
            ``on_loss`` terms) run under ``torch.autocast(device.type, torch.bfloat16)``
            (in training, evaluate and predict); parameters, gradients and optimizer state
            stay float32. ``"16-mixed"``: float16 autocast and a ``torch.amp.GradScaler``
            (on CPU where the installed torch has one): the loss is scaled before
            ``backward``, the gradients are unscaled before the gradient norm and
            ``on_after_backward`` (so monitors, clipping and ``NanGuard`` see true
            gradients), and a step whose gradients hold an Inf/NaN is skipped by the
            scaler: it is not an optimizer step (``global_step``, the per-step schedulers,
            ``History.steps`` and ``on_batch_end`` leave it out; its batches still count
            in ``train_loss``; ``skipped_steps`` counts them). The scaler's state is in
            :meth:`state_dict`. ``16-mixed`` calls ``optimizer.step()`` without a closure
            (the GradScaler cannot pass one), so optimizers that need a closure (L-BFGS,
            SAM, Newton...) do not run under it.
        accumulate: ``k >= 1`` (default 1): the gradients of ``k`` consecutive batches
            are summed, each batch's loss scaled by ``1/k`` (Lightning's
            ``accumulate_grad_batches``), before one optimizer step; ``global_step``,
            per-step schedulers, ``History.steps`` (``loss`` is the mean objective of
            the ``k`` batches), ``on_after_backward`` and ``on_batch_end`` count optimizer
            steps, ``on_batch_begin`` and ``on_loss`` see every batch. An epoch whose
            batches do not divide by ``k`` steps on its last, partial accumulation (its
            losses still scaled by ``1/k``, as Lightning does). An optimizer that
            re-evaluates the closure re-runs all ``k`` batches. Checkpoints
            (``CheckpointCallback``) are taken at optimizer steps, where no partial
            accumulation exists, so a resume is exact.
        compile: ``False`` (default), ``True`` or a dict of ``torch.compile`` keyword
            arguments (``{"mode": "max-autotune", "dynamic": False}``): training,
            evaluate and predict call ``torch.compile(model, **compile)``; ``trainer.model``
            stays the uncompiled module, so its ``state_dict`` (and checkpoints, and
            ``model.safetensors``) has the model's own keys, without ``_orig_mod.``.

    A ``DataLoader`` given as ``train_data`` draws its order and its workers' seeds from
    generators that the trainer owns and checkpoints (set on the loader and on a torch
    ``RandomSampler`` / ``SubsetRandomSampler`` / ``WeightedRandomSampler`` whose
    ``generator`` is None), never from the global RNG; a generator the user gave is
    kept and its state checkpointed too. A sampler with ``set_epoch`` (descend's
    samplers, ``DistributedSampler``) is told the epoch before each epoch. So a run
    resumed mid-epoch redraws the same order.

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> x = torch.randn(64, 2); y = (x[:, 0] > 0).long()
        >>> model = torch.nn.Linear(2, 2)
        >>> t = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.5), batch_size=16)
        >>> h = t.fit((x, y), epochs=20)
        >>> t.evaluate((x, y))["acc"] > 0.95
        True

    Differences from a hand-written loop: none in the math; the loss is read back to the
    host once per epoch (``History`` is filled at epoch end), so callbacks receive the
    per-step ``loss`` and ``grad_norm`` as 0-d tensors (call ``float()`` when needed).
    Per step, the trainer adds to a hand-written loop only the per-tensor gradient
    norms; the metrics run on the outputs of 16 batches at once (their sums add up), the
    global gradient norms are reduced every 64 steps and the epoch's sums at its end, a
    few operations each time.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, *,
                 loss_fn: Callable = torch.nn.functional.cross_entropy,
                 schedulers: Sequence[Any] = (), scheduler_unit: str = "step",
                 callbacks: Sequence[Callback] = (), metrics: Sequence[str] = ("accuracy",),
                 batch_size: int | Callable[[int], int] = 64, eval_batch_size: int = 1024,
                 device: str | torch.device = "cpu", seed: int = 0, shuffle: bool = True,
                 drop_last: bool = False, progress: bool | None = None, grad_norm: bool = True,
                 on_nonfinite: str = "raise", precision: str = "32", accumulate: int = 1,
                 compile: bool | dict[str, Any] = False):
        if not isinstance(model, torch.nn.Module):
            fail("model", "a torch.nn.Module", type(model).__name__, TypeError)
        if not hasattr(optimizer, "step") or not hasattr(optimizer, "param_groups"):
            fail("optimizer", "a torch.optim.Optimizer", type(optimizer).__name__, TypeError)
        if not callable(loss_fn):
            fail("loss_fn", "callable", loss_fn, TypeError)
        self.scheduler_unit = check_choice("scheduler_unit", scheduler_unit, ["step", "epoch"])
        for s in schedulers:
            if not hasattr(s, "step"):
                fail("schedulers", "objects with a .step() method", s, TypeError)
        for c in callbacks:
            if not isinstance(c, Callback):
                fail("callbacks", "descend.train.Callback instances", c, TypeError)
        self.metric_fns = {m: METRICS.get(m) for m in metrics}
        if not callable(batch_size):
            check_int("batch_size", batch_size, ge=1)
        self.batch_size = batch_size
        self.eval_batch_size = check_int("eval_batch_size", eval_batch_size, ge=1)
        self.device = self._check_device(device)
        self.seed = check_int("seed", seed)
        self.shuffle = check_bool("shuffle", shuffle)
        self.drop_last = check_bool("drop_last", drop_last)
        if progress is not None:
            check_bool("progress", progress)
        self.progress = progress
        self.log_grad_norm = check_bool("grad_norm", grad_norm)
        self.on_nonfinite = check_choice("on_nonfinite", on_nonfinite, ["raise", "ignore"])
        if isinstance(precision, int) and not isinstance(precision, bool):
            precision = str(precision)
        self.precision = check_choice("precision", precision, list(PRECISIONS))
        self.accumulate = check_int("accumulate", accumulate, ge=1)
        self.compile_kwargs = _compile_kwargs(compile)
        self.scaler = _grad_scaler(self.device) if self.precision == "16-mixed" else None
        self.skipped_steps = 0  # steps the GradScaler skipped (Inf/NaN gradients)

        self.model = model.to(self.device)
        self._compiled: tuple[torch.nn.Module, Any] | None = None  # (model, its compiled wrapper)
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.schedulers = list(schedulers)
        self.callbacks = list(callbacks)
        self.history = History()
        self.stop_training = False
        self.epoch = 0          # epochs completed
        self.global_step = 0    # optimizer steps completed
        self.batch_index = 0
        self.last_loss: torch.Tensor | None = None
        self._last_norm: torch.Tensor | list | None = None
        self.train_seconds = 0.0
        self.generator = torch.Generator(device=self.device).manual_seed(self.seed)
        # Exact resume (see state_dict): the shuffle state when the current epoch began,
        # the batches of that epoch already done, and how many a resumed fit skips.
        self.epoch_generator_state = self.generator.get_state()
        self.batches_done = 0
        self._resume_skip = 0
        self._pending: dict[str, Any] = {}  # per-step records of the running epoch
        self._epoch_acc: dict[str, Any] = {}  # the running epoch's sums (train_loss, metrics)
        self._resume_acc: dict[str, Any] | None = None
        # A DataLoader's order and worker seeds come from these (see the class docstring),
        # so the global RNG is never drawn from behind a checkpoint's back.
        self.sampler_generator = torch.Generator().manual_seed(self.seed)
        self.worker_generator = torch.Generator().manual_seed(_derived_seed(self.seed))
        self._loader_gens: list[torch.Generator] = []
        self._loader_epoch_states: list[torch.Tensor] = []
        self._resume_loader_states: list[torch.Tensor] | None = None
        #: True between a :meth:`load_state_dict` and the next fit's ``on_fit_begin``:
        #: callbacks keep their restored state instead of starting afresh.
        self.resuming = False
        self._takes_closure = self._step_takes_closure(optimizer)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _check_device(device) -> torch.device:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError):
            fail("device", "'cpu', 'cuda' or 'cuda:N'", device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            fail("device", "'cpu' when CUDA is not available (torch.cuda.is_available() is False)", str(device))
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        return dev

    @staticmethod
    def _step_takes_closure(optimizer) -> bool:
        try:
            return len(inspect.signature(optimizer.step).parameters) > 0
        except (TypeError, ValueError):
            return True

    def _batch_size_at(self, epoch: int) -> int:
        if not callable(self.batch_size):
            return self.batch_size
        bs = self.batch_size(epoch)
        bs = int(round(float(bs)))
        return check_int("batch_size", bs, ge=1)

    def _iter_batches(self, data, tensors, batch_size: int, shuffle: bool, drop_last: bool,
                      skip: int = 0):
        if tensors is None:
            for i, batch in enumerate(data):
                if i < skip:
                    continue
                x, y = batch[0], batch[1]
                yield (x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True))
            return
        x, y = tensors
        n = x.shape[0]
        stop = n - n % batch_size if drop_last else n
        if shuffle:
            perm = torch.randperm(n, generator=self.generator, device=self.device)
            for i in range(skip * batch_size, stop, batch_size):
                idx = perm[i:i + batch_size]
                yield (x[idx], y[idx])
        else:
            for i in range(skip * batch_size, stop, batch_size):
                yield (x[i:i + batch_size], y[i:i + batch_size])

    @property
    def _forward(self):
        """What runs the forward pass: ``self.model`` (which ``prepare_fit`` may replace by
        its DDP wrapper), or its compiled wrapper, whose ``state_dict`` keys carry an
        ``_orig_mod.`` prefix and which is therefore never what is saved."""
        if self.compile_kwargs is None:
            return self.model
        if self._compiled is None or self._compiled[0] is not self.model:
            self._compiled = (self.model, torch.compile(self.model, **self.compile_kwargs))
        return self._compiled[1]

    def _autocast(self):
        """The precision's autocast context (a no-op for ``"32"``)."""
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _to_device(self, tensors):
        return None if tensors is None else tuple(t.to(self.device) for t in tensors)

    def _hyper(self) -> tuple[float, float]:
        g = self.optimizer.param_groups[0]
        lr = float(g.get("lr", math.nan))
        mom = g.get("momentum")
        if mom is None and "betas" in g:
            mom = g["betas"][0]
        return lr, (math.nan if mom is None else float(mom))

    def _grad_norms(self) -> list[torch.Tensor]:
        """The per-tensor L2 norms of the gradients (one multi-tensor op)."""
        grads = [p.grad for p in self._params if p.grad is not None]
        return list(torch._foreach_norm(grads)) if grads else []

    def _global_norm(self, parts: list[torch.Tensor]) -> torch.Tensor:
        if not parts:
            return torch.zeros((), device=self.device)
        return torch.linalg.vector_norm(torch.stack(parts))

    @property
    def last_grad_norm(self) -> torch.Tensor | None:
        """Global gradient norm of the last step (a 0-d tensor; None when not logged)."""
        if isinstance(self._last_norm, list):
            self._last_norm = self._global_norm(self._last_norm)
        return self._last_norm

    def _scheduler_unit(self, s) -> str:
        return getattr(s, "unit", self.scheduler_unit)

    def _setup_loader(self, data) -> None:
        """Give a DataLoader the trainer's generators where it would use the global RNG;
        collect the generators to checkpoint and the samplers to tell the epoch."""
        self._epoch_samplers: list[Any] = []
        gens: list[torch.Generator] = []
        if isinstance(data, DataLoader):
            if data.generator is None:  # its workers' base seed
                data.generator = self.worker_generator
            gens.append(data.generator)
            for s in _samplers(data):
                g = getattr(s, "generator", None)
                if g is None and isinstance(s, _TORCH_RANDOM_SAMPLERS):
                    s.generator = g = self.sampler_generator
                if isinstance(g, torch.Generator) and all(g is not h for h in gens):
                    gens.append(g)
                if callable(getattr(s, "set_epoch", None)):
                    self._epoch_samplers.append(s)
        self._loader_gens = gens
        if self._resume_loader_states is not None:
            states, self._resume_loader_states = self._resume_loader_states, None
            if states and gens and len(states) != len(gens):
                fail("train_data", f"a DataLoader with {len(states)} generators, as in the checkpoint "
                     "(the loader changed since it was saved)", f"{len(gens)} generators")
            for g, st in zip(gens, states):
                g.set_state(st)

    def _restored_acc(self, metric_items) -> dict[str, Any]:
        """The running epoch's sums saved by :meth:`state_dict`, back on the device."""
        saved = self._resume_acc or {}
        dev = self.device

        def tensors(t):
            return [] if t is None else list(t.to(dev).unbind())

        sums = saved.get("metric_sums", {})
        return {"data_losses": tensors(saved.get("data_losses")), "counts": list(saved.get("counts", [])),
                "metric_sums": {name: tensors(sums.get(name)) for name, _ in metric_items},
                "kept_out": [t.to(dev) for t in saved.get("kept_out", [])],
                "kept_y": [t.to(dev) for t in saved.get("kept_y", [])],
                "kept_elems": int(saved.get("kept_elems", 0))}

    def _raise_nonfinite(self, loss: torch.Tensor) -> None:
        value = float(loss.detach().float().reshape(-1)[0]) if loss.numel() else math.nan
        raise FloatingPointError(
            f"non-finite loss ({value}) at step {self.global_step + 1} (epoch {self.epoch + 1}): "
            "stopped before the optimizer applied it, so the weights are those of step "
            f"{self.global_step} and earlier checkpoints are intact. Add a NanGuard callback "
            "(descend.train.NanGuard('skip') or NanGuard('rollback')) to skip or undo such steps, "
            "or pass Trainer(on_nonfinite='ignore') to train on")

    # ------------------------------------------------------------------ fit
    def fit(self, train_data, val_data=None, *, epochs: int = 1) -> History:
        """Train for ``epochs`` more epochs and return the :class:`History`.

        Args:
            train_data: a ``TensorDataset`` of ``(x, y)``, an ``(x, y)`` pair of tensors
                (both moved to the device once), or any iterable of ``(x, y)`` batches
                such as a ``DataLoader`` (moved per batch; shuffling is then its job).
            val_data: same forms, evaluated at the end of every epoch (optional).
            epochs: number of epochs (>= 0).
        """
        check_int("epochs", epochs, ge=0)
        train_t = self._to_device(_as_tensors(train_data, "train_data"))
        val_t = None
        if val_data is not None:
            val_t = self._to_device(_as_tensors(val_data, "val_data"))
            val_data = val_t if val_t is not None else val_data
        targets = train_t[1] if train_t is not None else None
        self._classify = targets is None or targets.dtype in _INT_DTYPES
        self._params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self._setup_loader(train_data)
        self._check_nonfinite = self.on_nonfinite == "raise" and not any(
            getattr(c, "handles_nonfinite", False) for c in self.callbacks)
        self.stop_training = False
        cbs = self.callbacks
        show = self.progress if self.progress is not None else sys.stderr.isatty()
        bar = None
        if show:
            from tqdm.auto import tqdm
            bar = tqdm(total=epochs, unit="epoch", leave=False, dynamic_ncols=True)
        try:
            for cb in cbs:
                cb.on_fit_begin(self)
            self.resuming = False  # a failed start keeps the restored state for the next try
            for _ in range(epochs):
                if self.stop_training:
                    break
                logs = self._fit_epoch(train_data, train_t, val_data)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items()
                                     if k.startswith(("train_", "val_"))})
        except BaseException as error:
            for cb in cbs:
                try:
                    cb.on_fit_error(self, error)
                except Exception as cleanup_error:  # the original error is the one to see
                    warnings.warn(f"{type(cb).__name__}.on_fit_error failed: {cleanup_error!r}",
                                  RuntimeWarning, stacklevel=2)
            raise
        finally:
            if bar is not None:
                bar.close()
        for cb in cbs:
            cb.on_fit_end(self)
        return self.history

    def _fit_epoch(self, train_data, train_t, val_data) -> dict[str, Any]:
        model, opt, cbs = self.model, self.optimizer, self.callbacks
        step_scheds = [s for s in self.schedulers if self._scheduler_unit(s) == "step"]
        epoch_scheds = [s for s in self.schedulers if self._scheduler_unit(s) == "epoch"]
        metric_items = list(self.metric_fns.items()) if self._classify else []
        bs = self._batch_size_at(self.epoch)
        model.train()
        for cb in cbs:
            cb.on_epoch_begin(self)
        # resumed mid-epoch: the generators are as this epoch began; skip the batches done
        self.epoch_generator_state = self.generator.get_state()
        self._loader_epoch_states = [g.get_state() for g in self._loader_gens]
        skip, self._resume_skip = self._resume_skip, 0
        self.batches_done = skip
        for s in self._epoch_samplers:
            s.set_epoch(self.epoch)
        # per-step records stay on the device; summed/reduced at epoch end (or in chunks).
        # A resumed epoch starts from the sums of the batches done before the checkpoint.
        acc = self._epoch_acc = self._restored_acc(metric_items) if skip else {
            "data_losses": [], "counts": [], "metric_sums": {name: [] for name, _ in metric_items},
            "kept_out": [], "kept_y": [], "kept_elems": 0}
        self._resume_acc = None
        data_losses, counts, metric_sums = acc["data_losses"], acc["counts"], acc["metric_sums"]
        kept_out, kept_y = acc["kept_out"], acc["kept_y"]  # outputs not yet given to the metrics
        losses, norm_parts, lrs, moms, times = [], [], [], [], []
        self._pending = {"losses": losses, "norm_parts": norm_parts, "norm_chunks": [],
                         "lrs": lrs, "moms": moms, "times": times,
                         "first_step": self.global_step}
        norm_chunks = self._pending["norm_chunks"]
        log_norm = self.log_grad_norm
        t0 = time.perf_counter()
        rec: dict[str, Any] = {}
        check_nonfinite = self._check_nonfinite

        fwd, k, scaler, autocast = self._forward, self.accumulate, self.scaler, self._autocast

        def closure():
            # the window's batches: one, or ``accumulate`` (fewer at an epoch's end)
            opt.zero_grad(set_to_none=True)
            first = "loss" not in rec
            objectives, micro = [], []
            for x, y, batch in rec["window"]:
                with autocast():
                    out = fwd(x)
                    loss = self.loss_fn(out, y)
                    objective = loss
                    for cb in cbs:
                        new_loss = cb.on_loss(self, objective, batch)
                        if new_loss is not None:
                            objective = new_loss
                backprop = objective / k if k > 1 else objective
                (scaler.scale(backprop) if scaler is not None else backprop).backward()
                objectives.append(objective)
                if first:
                    micro.append((objective.detach() if objective is loss else loss.detach(),
                                  out.detach(), y))
            if scaler is not None:
                scaler.unscale_(opt)  # true gradients for the norm, the callbacks, clipping
            if first:
                rec["loss"] = objectives[0].detach() if len(objectives) == 1 else \
                    torch.stack([o.detach() for o in objectives]).mean()
                rec["micro"] = micro
                rec["norm"] = self._grad_norms() if log_norm else None
            for cb in cbs:
                cb.on_after_backward(self)
            if first and check_nonfinite and not bool(torch.isfinite(rec["loss"]).all()):
                self._raise_nonfinite(rec["loss"])  # before the optimizer applies the step
            if len(objectives) == 1:
                return objectives[0]
            return torch.stack([o.detach() for o in objectives]).sum() / k

        window: list[tuple[Any, Any, Any]] = []
        batches = self._iter_batches(train_data, train_t, bs, self.shuffle, self.drop_last, skip)
        for self.batch_index, (batch, last) in enumerate(_with_last(batches), start=skip):
            for cb in cbs:
                new = cb.on_batch_begin(self, batch)
                if new is not None:
                    batch = new
            x, y = batch
            window.append((x, y, batch))
            if len(window) < k and not last:
                continue  # accumulating: the step comes with the window's last batch
            rec.clear()
            rec["window"], window = window, []

            lr, mom = self._hyper()
            stepped = True
            if scaler is not None:
                closure()
                before = scaler.get_scale()
                scaler.step(opt)
                scaler.update()
                stepped = scaler.get_scale() >= before  # the scale backs off on Inf/NaN
            elif self._takes_closure:
                opt.step(closure)
            else:
                closure()
                opt.step()
            self.batches_done = self.batch_index + 1
            for data_loss, out, y in rec["micro"]:
                counts.append(y.shape[0])
                data_losses.append(data_loss)
                if metric_items:
                    kept_out.append(out)
                    kept_y.append(y)
                    acc["kept_elems"] += out.numel()
                    if len(kept_out) >= _METRIC_EVERY or acc["kept_elems"] >= _METRIC_ELEMS:
                        _add_metrics(metric_items, metric_sums, kept_out, kept_y)
                        acc["kept_elems"] = 0
            if not stepped:  # not an optimizer step: no counter, schedule or step record
                self.skipped_steps += 1
                if self.stop_training:
                    break
                continue
            self.global_step += 1
            for s in step_scheds:
                s.step()

            self.last_loss = rec["loss"]
            losses.append(rec["loss"])
            parts = rec["norm"]
            self._last_norm = parts
            if parts is not None:
                norm_parts.append(parts)
                if len(norm_parts) >= _REDUCE_EVERY:
                    norm_chunks.append(self._reduce_norms(norm_parts))
                    norm_parts.clear()
            lrs.append(lr)
            moms.append(mom)
            times.append(self.train_seconds + time.perf_counter() - t0)
            if cbs:
                logs = {"step": self.global_step, "batch": self.batch_index, "loss": rec["loss"],
                        "lr": lr, "momentum": mom, "grad_norm": self.last_grad_norm}
                for cb in cbs:
                    cb.on_batch_end(self, logs)
            if self.stop_training:
                break

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.train_seconds += time.perf_counter() - t0
        self._flush_steps(self.epoch + 1)
        self.epoch += 1
        self.batches_done = 0
        self._epoch_acc = {}

        _add_metrics(metric_items, metric_sums, kept_out, kept_y)
        total = sum(counts)
        logs: dict[str, Any] = {"epoch": self.epoch, "step": self.global_step,
                                "time": self.train_seconds, "batch_size": bs,
                                "lr": self._hyper()[0],
                                "train_loss": _weighted_mean(data_losses, counts)}
        for name, sums in metric_sums.items():
            logs["train_" + _metric_key(name)] = (
                float(torch.stack(sums).sum()) / total if total else math.nan)
        if val_data is not None:
            for k, v in self.evaluate(val_data).items():
                logs["val_" + k] = v
        self.history._append(self.history.epochs, logs)
        for cb in cbs:
            cb.on_epoch_end(self, logs)
        for s in epoch_scheds:
            if isinstance(s, torch.optim.lr_scheduler.ReduceLROnPlateau):
                s.step(logs.get("val_loss", logs["train_loss"]))
            else:
                s.step()
        return logs

    def _reduce_norms(self, parts: list[list[torch.Tensor]]) -> torch.Tensor:
        """Global norms (1-D tensor) of steps given as lists of per-tensor norms."""
        k = len(parts[0])
        if k and all(len(p) == k for p in parts):
            flat = [t for p in parts for t in p]
            return torch.linalg.vector_norm(torch.stack(flat).view(len(parts), k), dim=1)
        return torch.stack([self._global_norm(p) for p in parts])

    def _flush_steps(self, epoch: int) -> None:
        """Move the pending per-step records into ``history.steps`` (one host read)."""
        p = self._pending
        if not p:
            return
        n_steps = len(p["lrs"])
        if not n_steps:
            return
        loss_list = torch.stack(p["losses"]).tolist()
        chunks = p["norm_chunks"] + ([self._reduce_norms(p["norm_parts"])] if p["norm_parts"] else [])
        norm_list = torch.cat(chunks).tolist() if chunks else [math.nan] * n_steps
        first = p["first_step"]
        self.history._extend(self.history.steps, {
            "step": list(range(first + 1, first + n_steps + 1)), "epoch": [epoch] * n_steps,
            "loss": loss_list, "lr": list(p["lrs"]), "momentum": list(p["moms"]),
            "grad_norm": norm_list, "time": list(p["times"])})
        for k in ("losses", "norm_parts", "norm_chunks", "lrs", "moms", "times"):
            p[k].clear()
        p["first_step"] += n_steps

    # ------------------------------------------------------------------ run state
    def state_dict(self) -> dict[str, Any]:
        """The trainer's run state, for exact resume (``descend.train.checkpoint``).

        Counters, history, training time, and the shuffle generator (and a DataLoader's
        generators) *as they were when the current epoch began* with ``batches_done``
        (batches of that epoch already done) and the epoch's running sums (``train_loss``
        and the metrics of those batches): a fit resumed from it redraws the same order,
        skips those batches and logs the epoch's means as if it had not stopped.
        Model, optimizer, schedulers, callbacks and global RNGs are saved by the caller.
        Taken mid-epoch, the steps done so far in the epoch are moved into the history first.
        """
        mid = bool(self.batches_done)
        if mid:
            self._flush_steps(self.epoch + 1)
        gen = self.epoch_generator_state if mid else self.generator.get_state()
        loader = self._loader_epoch_states if mid else [g.get_state() for g in self._loader_gens]
        state = {"epoch": self.epoch, "global_step": self.global_step,
                 "batches_done": self.batches_done, "generator": gen.clone(),
                 "loader_generators": [st.clone() for st in loader],
                 "train_seconds": self.train_seconds,
                 "history": copy.deepcopy(self.history.to_dict())}
        if self.scaler is not None:
            state["grad_scaler"] = self.scaler.state_dict()
            state["skipped_steps"] = self.skipped_steps
        if mid and self._epoch_acc:
            state["epoch_partial"] = self._partial_state()
        return state

    def _partial_state(self) -> dict[str, Any]:
        acc = self._epoch_acc

        def stacked(ts):
            return torch.stack(ts).cpu() if ts else None

        return {"data_losses": stacked(acc["data_losses"]), "counts": list(acc["counts"]),
                "metric_sums": {k: stacked(v) for k, v in acc["metric_sums"].items()},
                "kept_out": [t.cpu() for t in acc["kept_out"]],
                "kept_y": [t.cpu() for t in acc["kept_y"]], "kept_elems": int(acc["kept_elems"])}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; the next ``fit`` continues where it was taken.

        Everything is checked before anything is changed: a bad state raises
        ``ValueError`` naming the entry and leaves the trainer as it was.
        """
        if not isinstance(state, dict):
            fail("state", "a dict from Trainer.state_dict()", type(state).__name__, TypeError)
        missing = [k for k in ("epoch", "global_step", "batches_done", "generator", "train_seconds",
                               "history") if k not in state]
        if missing:
            fail("state", f"a Trainer.state_dict() (missing: {', '.join(missing)})", sorted(state))
        for k in ("epoch", "global_step", "batches_done"):
            if isinstance(state[k], bool) or not isinstance(state[k], int) or state[k] < 0:
                fail(f"state['{k}']", "an integer >= 0", state[k])
        hist = state["history"]
        if not isinstance(hist, dict) or not isinstance(hist.get("steps"), dict) \
                or not isinstance(hist.get("epochs"), dict):
            fail("state['history']", "a dict with 'steps' and 'epochs' tables", type(hist).__name__)
        gens = [state["generator"], *state.get("loader_generators", [])]
        for i, st in enumerate(gens):
            probe = torch.Generator(device=self.generator.device) if i == 0 else torch.Generator()
            try:
                probe.set_state(st)
            except (RuntimeError, TypeError) as e:
                fail("state['generator']" if i == 0 else f"state['loader_generators'][{i - 1}]",
                     "a torch.Generator state", f"{type(st).__name__} ({e})")
        partial = state.get("epoch_partial")
        if partial is not None and not isinstance(partial, dict):
            fail("state['epoch_partial']", "a dict", type(partial).__name__)
        scaler_state = state.get("grad_scaler")
        if self.scaler is not None and scaler_state is not None:
            try:  # on a probe: a bad state leaves this trainer's scaler as it was
                torch.amp.GradScaler(self.device.type).load_state_dict(scaler_state)
            except (RuntimeError, TypeError, KeyError, AttributeError) as e:
                fail("state['grad_scaler']", "a torch.amp.GradScaler state_dict",
                     f"{type(scaler_state).__name__} ({e})")
        hist = copy.deepcopy(hist)
        # checked: apply
        self.epoch = int(state["epoch"])
        self.global_step = int(state["global_step"])
        self.batches_done = self._resume_skip = int(state["batches_done"])
        self.generator.set_state(state["generator"])
        self.epoch_generator_state = state["generator"].clone()
        self._resume_loader_states = [st.clone() for st in state.get("loader_generators", [])]
        self._resume_acc = partial if self.batches_done else None
        self.train_seconds = float(state["train_seconds"])
        if self.scaler is not None and scaler_state is not None:  # else a fresh scale (32 -> 16)
            self.scaler.load_state_dict(scaler_state)
            self.skipped_steps = int(state.get("skipped_steps", 0))
        self.history = History(steps=hist["steps"], epochs=hist["epochs"],
                               monitors=hist.get("monitors", {}))
        self.resuming = True

    _RUN_STATE = ("epoch", "global_step", "batches_done", "_resume_skip", "train_seconds", "history",
                  "_resume_loader_states", "_resume_acc", "resuming", "_pending", "_epoch_acc",
                  "skipped_steps")

    def _snapshot(self) -> dict[str, Any]:
        """A copy of the run state (not the model or optimizer), for :meth:`_rollback`."""
        snap = {k: copy.deepcopy(getattr(self, k)) for k in self._RUN_STATE}
        snap["_gens"] = [g.get_state() for g in (self.generator, self.sampler_generator,
                                                  self.worker_generator)]
        snap["epoch_generator_state"] = self.epoch_generator_state.clone()
        snap["_scaler"] = copy.deepcopy(self.scaler.state_dict()) if self.scaler is not None else None
        return snap

    def _rollback(self, snap: dict[str, Any]) -> None:
        for k in self._RUN_STATE:
            setattr(self, k, snap[k])
        for g, st in zip((self.generator, self.sampler_generator, self.worker_generator), snap["_gens"]):
            g.set_state(st)
        self.epoch_generator_state = snap["epoch_generator_state"]
        if snap.get("_scaler") is not None:
            self.scaler.load_state_dict(snap["_scaler"])

    # ------------------------------------------------------------------ eval
    def evaluate(self, data, *, batch_size: int | None = None) -> dict[str, float]:
        """Mean loss and metrics over ``data`` in ``eval()`` mode under ``no_grad``.

        Returns ``{"loss": ..., "acc": ...}`` (one key per metric; metrics are skipped
        for float targets). The model's train/eval mode is restored afterwards.
        """
        bs = check_int("batch_size", batch_size, ge=1) if batch_size is not None else self.eval_batch_size
        tensors = self._to_device(_as_tensors(data, "data"))
        was_training = self.model.training
        self.model.eval()
        loss_mean = Mean()
        metric_means: dict[str, Mean] = {}
        try:
            with torch.no_grad():
                for x, y in self._iter_batches(data, tensors, bs, shuffle=False, drop_last=False):
                    with self._autocast():
                        out = self._forward(x)
                        loss = self.loss_fn(out, y)
                    n = y.shape[0]
                    loss_mean.add(loss * n, n)
                    if y.dtype in _INT_DTYPES:
                        for name, fn in self.metric_fns.items():
                            metric_means.setdefault(name, Mean()).add(fn(out, y), n)
        finally:
            self.model.train(was_training)
        result = {"loss": loss_mean.value()}
        for name, m in metric_means.items():
            result[_metric_key(name)] = m.value()
        return result

    def predict(self, data, *, batch_size: int | None = None) -> torch.Tensor:
        """Model outputs for ``data`` (a tensor of inputs, ``(x, y)``, a dataset or
        batches), concatenated on the CPU, computed in ``eval()`` mode under ``no_grad``."""
        bs = check_int("batch_size", batch_size, ge=1) if batch_size is not None else self.eval_batch_size
        if isinstance(data, torch.Tensor):
            data = (data, torch.zeros(data.shape[0], dtype=torch.long))
        tensors = self._to_device(_as_tensors(data, "data"))
        was_training = self.model.training
        self.model.eval()
        outs = []
        try:
            with torch.no_grad():
                for x, _ in self._iter_batches(data, tensors, bs, shuffle=False, drop_last=False):
                    with self._autocast():
                        out = self._forward(x)
                    outs.append(out.cpu())
        finally:
            self.model.train(was_training)
        return torch.cat(outs) if outs else torch.empty(0)
