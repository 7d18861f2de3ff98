"""Example ordering (notes 003, "Shuffling Input"; LeCun et al., "Efficient BackProp"):
seeded ``torch.utils.data`` samplers for ``DataLoader(sampler=...)``.

* :class:`ShuffleSampler`: a fresh permutation every epoch.
* :class:`ClassInterleavedSampler`: successive examples (almost) never share a class.
* :class:`LossProportionalSampler`: present high-error examples more often,
  ``P(i) = (1 - mix) l_i / sum_j l_j + mix / n`` from recent per-example losses.
  :class:`LossFeedback` (the ``loss_feedback`` callback) feeds it the losses during a fit.
* :class:`BootstrapSampler`: ``n`` draws with replacement (bagging).
* :class:`GrowingBatchSampler` and :func:`growing_batch_size`: start with small
  minibatches and grow them as training proceeds (notes 003).

Every sampler draws from its own ``torch.Generator`` seeded with ``seed + epoch``, so
epoch ``e`` gives the same order on every run and machine; the epoch advances at each
``iter()`` or is set with ``set_epoch(e)`` (as ``DistributedSampler``; the Trainer does
it before each epoch). ``state_dict()`` / ``load_state_dict()`` carry the epoch and, for
:class:`LossProportionalSampler`, the recorded losses; the ``SampledBatches`` and
``loss_feedback`` callbacks put them in a checkpoint, so a resumed run draws the same
examples.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator, Sequence

import torch
from torch.utils.data import Sampler

from descend._registry import Registry
from descend._validation import check_bool, check_int, check_range, fail
from descend.callbacks import CALLBACKS, Callback

SAMPLERS = Registry("sampler")


def _size(n) -> int:
    if isinstance(n, int) and not isinstance(n, bool):
        return check_int("n", n, ge=1)
    try:
        return check_int("n", len(n), ge=1)
    except TypeError:
        fail("n", "a dataset size (int) or a sized dataset", n, TypeError)


class _Epochs:
    def __init__(self, seed: int):
        self.seed = check_int("seed", seed)
        self.epoch = 0
        self._next = 0

    def set_epoch(self, epoch: int) -> None:
        self._next = check_int("epoch", epoch, ge=0)

    def _generator(self) -> torch.Generator:
        self.epoch = self._next
        self._next += 1
        return torch.Generator().manual_seed(self.seed + self.epoch)

    def state_dict(self) -> dict:
        """The epoch counters (the order of an epoch depends only on them and the seed)."""
        return {"epoch": self.epoch, "next": self._next}

    def load_state_dict(self, state: dict) -> None:
        epoch, nxt = check_int("epoch", state["epoch"], ge=0), check_int("next", state["next"], ge=0)
        self.epoch, self._next = epoch, nxt


@SAMPLERS.register("shuffle")
class ShuffleSampler(_Epochs, Sampler[int]):
    """A new random permutation of ``range(n)`` every epoch.

    Args:
        n: dataset size or a sized dataset. seed: base seed (default 0).

    Example:
        >>> s = ShuffleSampler(5, seed=0)
        >>> sorted(list(s)) == list(range(5)), list(s) != list(s)
        (True, True)
    """

    def __init__(self, n, seed: int = 0):
        _Epochs.__init__(self, seed)
        self.n = _size(n)

    def __iter__(self) -> Iterator[int]:
        return iter(torch.randperm(self.n, generator=self._generator()).tolist())

    def __len__(self) -> int:
        return self.n


@SAMPLERS.register("class_interleaved")
class ClassInterleavedSampler(_Epochs, Sampler[int]):
    """Spread every class evenly over the epoch so successive examples rarely share a class.

    Each epoch, the ``n_c`` examples of class ``c`` are shuffled and given the positions
    ``(k + u_c) / n_c``, ``k = 0..n_c-1``, with a random offset ``u_c ~ U(0, 1)``; the
    epoch is all examples sorted by position. Balanced classes never repeat back to back;
    with imbalanced classes a class of ``n_c`` examples comes in runs of at most
    ``ceil(n_c / n_min)`` (the fewest repeats the counts allow, spread over the epoch).

    Args:
        labels: ``(n,)`` integer class labels. seed: base seed (default 0).

    Example:
        >>> y = torch.tensor([0, 0, 0, 1, 1, 1])
        >>> order = list(ClassInterleavedSampler(y))
        >>> [int(y[i]) for i in order] in ([0, 1, 0, 1, 0, 1], [1, 0, 1, 0, 1, 0])
        True
    """

    def __init__(self, labels, seed: int = 0):
        _Epochs.__init__(self, seed)
        labels = torch.as_tensor(labels)
        if labels.dim() != 1 or labels.numel() == 0 or labels.is_floating_point():
            fail("labels", "a non-empty 1-D tensor of integer class labels", tuple(labels.shape), TypeError)
        self.labels = labels.cpu()

    def __iter__(self) -> Iterator[int]:
        g = self._generator()
        idx_all, pos_all = [], []
        for c in torch.unique(self.labels).tolist():
            idx = torch.nonzero(self.labels == c).flatten()
            n_c = idx.numel()
            idx_all.append(idx[torch.randperm(n_c, generator=g)])
            u = torch.rand((), generator=g, dtype=torch.float64)
            pos_all.append((torch.arange(n_c, dtype=torch.float64) + u) / n_c)
        idx, pos = torch.cat(idx_all), torch.cat(pos_all)
        return iter(idx[torch.argsort(pos, stable=True)].tolist())

    def __len__(self) -> int:
        return self.labels.numel()


@SAMPLERS.register("loss_proportional")
class LossProportionalSampler(_Epochs, Sampler[int]):
    """Emphasize high-error examples: draw ``i`` with probability proportional to its recent loss.

    ``P(i) = (1 - mix) l_i / sum_j l_j + mix / n``; ``num_samples`` draws with replacement
    per epoch. :meth:`update` folds new per-example losses into ``l`` with
    ``l_i <- beta l_i + (1 - beta) loss_i`` (``beta=0``: the latest loss). Before any
    update every ``l_i = 1`` (uniform). The ``mix`` with the uniform distribution keeps
    every example reachable and bounds the weight of outliers, the risk notes 003 warn of.

    Args:
        n: dataset size or sized dataset. num_samples: draws per epoch (default n).
        mix: uniform share in [0, 1] (default 0.1). beta: loss smoothing in [0, 1) (default 0).
        seed: base seed (default 0).

    Example:
        >>> s = LossProportionalSampler(3, mix=0.0)
        >>> s.update([0, 1, 2], torch.tensor([0.0, 1.0, 3.0]))
        >>> s.probabilities()
        tensor([0.0000, 0.2500, 0.7500])

    Reference: LeCun, Bottou, Orr, Mueller, "Efficient BackProp" (1998), section 4.2.
    """

    def __init__(self, n, num_samples: int | None = None, mix: float = 0.1, beta: float = 0.0,
                 seed: int = 0):
        _Epochs.__init__(self, seed)
        self.n = _size(n)
        self.num_samples = check_int("num_samples", num_samples, ge=1, allow_none=True) or self.n
        self.mix = float(check_range("mix", mix, ge=0, le=1))
        self.beta = float(check_range("beta", beta, ge=0, lt=1))
        self.losses = torch.ones(self.n, dtype=torch.float64)

    def update(self, indices, losses) -> None:
        """Record per-example losses (``indices`` into the dataset, ``losses`` >= 0)."""
        idx = torch.as_tensor(indices, dtype=torch.long).cpu().flatten()
        new = torch.as_tensor(losses).detach().double().cpu().flatten()
        if idx.numel() != new.numel():
            fail("losses", f"one value per index ({idx.numel()})", new.numel())
        if new.numel() and (not torch.isfinite(new).all() or (new < 0).any()):
            fail("losses", "finite and >= 0", new)
        self.losses[idx] = self.beta * self.losses[idx] + (1 - self.beta) * new

    def state_dict(self) -> dict:
        """The epoch counters and the recorded losses ``l``.

        >>> s = LossProportionalSampler(3); s.update([0], torch.tensor([5.0]))
        >>> t = LossProportionalSampler(3); t.load_state_dict(s.state_dict())
        >>> t.losses.tolist(), list(t) == list(s)
        ([5.0, 1.0, 1.0], True)
        """
        return {**super().state_dict(), "losses": self.losses.clone()}

    def load_state_dict(self, state: dict) -> None:
        losses = torch.as_tensor(state["losses"], dtype=torch.float64)
        if losses.shape != self.losses.shape:
            fail("losses", f"a tensor of shape {tuple(self.losses.shape)} (one loss per example)",
                 tuple(losses.shape))
        super().load_state_dict(state)
        self.losses = losses.clone()

    @torch.no_grad()
    def update_from_model(self, model, x: torch.Tensor, y: torch.Tensor,
                          loss_fn: Callable | None = None, batch_size: int = 1024) -> None:
        """Evaluate every example's loss (``reduction="none"``, eval mode) and :meth:`update`."""
        loss_fn = loss_fn or torch.nn.functional.cross_entropy
        losses = _example_losses(model, x, y, lambda o, t: loss_fn(o, t, reduction="none"), batch_size)
        self.update(torch.arange(x.shape[0]), losses)

    def probabilities(self) -> torch.Tensor:
        total = float(self.losses.sum())
        p = self.losses / total if total > 0 else torch.full_like(self.losses, 1.0 / self.n)
        return ((1 - self.mix) * p + self.mix / self.n).float()

    def __iter__(self) -> Iterator[int]:
        g = self._generator()
        return iter(torch.multinomial(self.probabilities().double(), self.num_samples,
                                      replacement=True, generator=g).tolist())

    def __len__(self) -> int:
        return self.num_samples


@torch.no_grad()
def _example_losses(model, x, y, batch_losses: Callable, batch_size: int, device=None) -> torch.Tensor:
    """``(N,)`` losses ``batch_losses(model(x_b), y_b)`` batch by batch, in ``eval()`` mode
    without gradients (the model's mode is restored), on ``device`` when given."""
    was = model.training
    model.eval()
    try:
        move = (lambda t: t) if device is None else (lambda t: t.to(device))
        out = [batch_losses(model(move(x[i:i + batch_size])), move(y[i:i + batch_size]))
               for i in range(0, x.shape[0], batch_size)]
    finally:
        model.train(was)
    return torch.cat(out)


def per_example_loss(loss_fn: Callable, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``(N,)`` losses of ``loss_fn``: with ``reduction="none"`` when the loss module has a
    ``reduction`` attribute (torch's losses and :mod:`descend.losses`), else one call per
    example.

    Example:
        >>> out, y = torch.tensor([[2.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 0])
        >>> per_example_loss(torch.nn.CrossEntropyLoss(), out, y).round(decimals=4)
        tensor([0.1269, 2.1269])
    """
    if isinstance(getattr(loss_fn, "reduction", None), str):
        import copy
        fn = copy.copy(loss_fn)
        fn.reduction = "none"
        out = fn(outputs, targets)
        return out.reshape(out.shape[0], -1).mean(1) if out.dim() > 1 else out
    return torch.stack([loss_fn(outputs[i:i + 1], targets[i:i + 1]).reshape(()) for i in
                        range(outputs.shape[0])])


@CALLBACKS.register("loss_feedback")
class LossFeedback(Callback):
    """Feed a :class:`LossProportionalSampler` the per-example training losses during a fit.

    Every ``every`` epochs (at the epoch's end, so the next epoch's draws use them) the
    model is evaluated on the whole training set in ``eval()`` mode without gradients,
    and ``sampler.update(range(n), l)`` folds the losses ``l_i = loss(f(x_i), y_i)`` in.
    Before the first update the sampler draws uniformly. Cost: one evaluation pass over
    the training set per update.

    Args:
        sampler: the :class:`LossProportionalSampler` (or anything with ``update``).
            ``descend compare`` / ``descend train`` bind it to a recipe's ``data.sampler``
            when left None.
        data: the training ``TensorDataset`` or ``(x, y)`` the sampler indexes (bound by
            the recipe runner when None).
        every: update every ``every`` epochs (default 1).
        batch_size: evaluation batch size (default 1024).

    Example:
        >>> x = torch.randn(32, 2); y = (x[:, 0] > 0).long()
        >>> s = LossProportionalSampler(32, mix=0.0)
        >>> from descend.train import Trainer
        >>> model = torch.nn.Linear(2, 2)
        >>> loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), sampler=s,
        ...                                      batch_size=8)
        >>> t = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1),
        ...             callbacks=[LossFeedback(s, (x, y))], progress=False)
        >>> _ = t.fit(loader, epochs=1)
        >>> bool((s.losses != 1).any())
        True

    Reference: LeCun, Bottou, Orr, Mueller, "Efficient BackProp" (1998), section 4.2
    (present examples that produce a large error more often).
    """

    def __init__(self, sampler=None, data=None, every: int = 1, batch_size: int = 1024):
        if sampler is not None and not callable(getattr(sampler, "update", None)):
            fail("sampler", "a sampler with an update(indices, losses) method", type(sampler).__name__,
                 TypeError)
        self.sampler = sampler
        self.data = data
        self.every = check_int("every", every, ge=1)
        self.batch_size = check_int("batch_size", batch_size, ge=1)

    def bind(self, sampler, data) -> "LossFeedback":
        """Set the sampler and the data where they were left None; return self."""
        self.sampler = self.sampler if self.sampler is not None else sampler
        self.data = self.data if self.data is not None else data
        return self

    def _tensors(self):
        d = self.data
        if isinstance(d, torch.utils.data.TensorDataset):
            return d.tensors[0], d.tensors[1]
        if isinstance(d, (tuple, list)) and len(d) == 2:
            return d[0], d[1]
        fail("data", "a TensorDataset or an (x, y) pair of tensors", type(d).__name__, TypeError)

    def state_dict(self) -> dict:
        """The sampler's state (its recorded losses), so a resumed fit draws the same examples."""
        sd = getattr(self.sampler, "state_dict", None)
        return {"sampler": sd()} if callable(sd) else {}

    def load_state_dict(self, state: dict) -> None:
        if "sampler" in state and self.sampler is not None:
            self.sampler.load_state_dict(state["sampler"])

    def on_fit_begin(self, trainer) -> None:
        if self.sampler is None or self.data is None:
            fail("sampler", "a sampler and its training data (loss_feedback needs both; a recipe "
                 "binds them with data.sampler: {name: loss_proportional})",
                 f"sampler={self.sampler!r}, data={type(self.data).__name__}")

    def on_epoch_end(self, trainer, logs) -> None:
        if trainer.epoch % self.every:
            return
        x, y = self._tensors()
        losses = _example_losses(trainer.model, x, y,
                                 lambda o, t: per_example_loss(trainer.loss_fn, o, t),
                                 self.batch_size, trainer.device).clamp_min(0)
        if bool(torch.isfinite(losses).all()):  # a diverged model leaves the old losses
            self.sampler.update(torch.arange(x.shape[0]), losses)


class SampledBatches(Callback):
    """Minibatches of a ``TensorDataset`` in the order a sampler draws: data a Trainer fits on.

    ``iter()`` draws one epoch from ``sampler`` (indices, or lists of indices from a batch
    sampler such as :class:`GrowingBatchSampler`) and yields ``(x[idx], y[idx])`` slices,
    ``batch_size`` indices at a time (an int, or ``epoch -> int``). As a callback of the same
    Trainer it sets the sampler's epoch (``set_epoch(trainer.epoch)``) and the batch size
    at each epoch start, so the order depends only on the seed and the epoch (and a
    resumed fit sees the same batches). Indexing the tensors directly avoids the
    per-example collate of a ``DataLoader``.

    Args:
        dataset: a ``TensorDataset`` of ``(x, y)``. sampler: a sampler over ``range(len(dataset))``.
        batch_size: int or ``epoch -> int`` (ignored for a batch sampler; default 64).

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> ds = TensorDataset(torch.arange(6.0)[:, None], torch.arange(6))
        >>> [y.tolist() for _, y in SampledBatches(ds, BootstrapSampler(6, seed=0), 4)]
        [[2, 3, 5, 0], [1, 3]]
    """

    def __init__(self, dataset, sampler, batch_size=64):
        tensors = getattr(dataset, "tensors", None)
        if tensors is None or len(tensors) != 2:
            fail("dataset", "a TensorDataset of (inputs, targets)", type(dataset).__name__, TypeError)
        if not hasattr(sampler, "__iter__"):
            fail("sampler", "a torch.utils.data Sampler", type(sampler).__name__, TypeError)
        if not callable(batch_size):
            check_int("batch_size", batch_size, ge=1)
        self.x, self.y = tensors
        self.sampler, self.batch_size = sampler, batch_size
        self._epoch = 0

    def on_epoch_begin(self, trainer) -> None:
        self._epoch = trainer.epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(trainer.epoch)

    def state_dict(self) -> dict:
        """The epoch and the sampler's state (e.g. a loss-proportional sampler's losses)."""
        sd = getattr(self.sampler, "state_dict", None)
        return {"epoch": self._epoch, **({"sampler": sd()} if callable(sd) else {})}

    def load_state_dict(self, state: dict) -> None:
        if "sampler" in state:
            self.sampler.load_state_dict(state["sampler"])
        self._epoch = int(state.get("epoch", 0))

    def _batch_size(self) -> int:
        bs = self.batch_size(self._epoch) if callable(self.batch_size) else self.batch_size
        return check_int("batch_size", int(round(float(bs))), ge=1)

    def __iter__(self):
        drawn = list(self.sampler)
        if drawn and isinstance(drawn[0], (list, tuple)):  # a batch sampler
            batches = [torch.as_tensor(b, dtype=torch.long) for b in drawn]
        else:
            order, bs = torch.as_tensor(drawn, dtype=torch.long), self._batch_size()
            batches = list(order.split(bs)) if order.numel() else []
        for idx in batches:
            yield self.x[idx], self.y[idx]

    def __len__(self) -> int:
        if isinstance(self.sampler, GrowingBatchSampler):
            return len(self.sampler)
        return math.ceil(len(self.sampler) / self._batch_size())


def bootstrap_indices(n: int, num_samples: int | None = None, seed: int = 0) -> torch.Tensor:
    """``num_samples`` (default ``n``) indices drawn uniformly with replacement from ``range(n)``.

    Example:
        >>> bootstrap_indices(4, seed=0).shape
        torch.Size([4])
    """
    n = check_int("n", n, ge=1)
    m = check_int("num_samples", num_samples, ge=1, allow_none=True) or n
    return torch.randint(0, n, (m,), generator=torch.Generator().manual_seed(check_int("seed", seed)))


@SAMPLERS.register("bootstrap")
class BootstrapSampler(_Epochs, Sampler[int]):
    """A bootstrap resample: ``num_samples`` (default n) uniform draws with replacement.

    About ``1 - 1/e = 63.2%`` of the examples appear in a resample of size ``n``.

    Args:
        n: dataset size or sized dataset. num_samples: draws (default n).
        resample_each_epoch: a new resample every epoch (default False: the same
            resample, one bagging member's training set). seed: base seed (default 0).

    Example:
        >>> s = BootstrapSampler(100, seed=1)
        >>> list(s) == list(s)
        True
    """

    def __init__(self, n, num_samples: int | None = None, resample_each_epoch: bool = False,
                 seed: int = 0):
        _Epochs.__init__(self, seed)
        self.n = _size(n)
        self.num_samples = check_int("num_samples", num_samples, ge=1, allow_none=True) or self.n
        self.resample_each_epoch = check_bool("resample_each_epoch", resample_each_epoch)

    def __iter__(self) -> Iterator[int]:
        g = self._generator() if self.resample_each_epoch else torch.Generator().manual_seed(self.seed)
        return iter(torch.randint(0, self.n, (self.num_samples,), generator=g).tolist())

    def __len__(self) -> int:
        return self.num_samples


def growing_batch_size(start: int = 16, factor: float = 2.0, every: int = 1,
                       max_batch_size: int | None = None) -> Callable[[int], int]:
    """Batch-size schedule ``b(e) = min(round(start * factor^floor(e / every)), max_batch_size)``.

    Pass it as ``Trainer(batch_size=growing_batch_size(...))`` (epoch ``e`` is 0-based).
    Notes 003: small batches early (noise helps, fast progress), larger later (less
    gradient noise near convergence), like lowering the learning rate.

    Example:
        >>> b = growing_batch_size(16, factor=2, every=2, max_batch_size=100)
        >>> [b(e) for e in range(8)]
        [16, 16, 32, 32, 64, 64, 100, 100]
    """
    check_int("start", start, ge=1)
    check_range("factor", factor, ge=1)
    check_int("every", every, ge=1)
    check_int("max_batch_size", max_batch_size, ge=start, allow_none=True)

    def schedule(epoch: int) -> int:
        b = int(round(start * float(factor) ** (epoch // every)))
        return b if max_batch_size is None else min(b, max_batch_size)

    return schedule


@SAMPLERS.register("growing_batch")
class GrowingBatchSampler(_Epochs, Sampler[list]):
    """Batch sampler whose batch size follows :func:`growing_batch_size`, one epoch per ``iter()``.

    Args:
        sampler: the index order (e.g. :class:`ShuffleSampler`), or a dataset size for a
            fresh permutation every epoch.
        start, factor, every, max_batch_size: the schedule. drop_last: drop a last
            incomplete batch (default False). seed: base seed when ``sampler`` is a size.

    Example:
        >>> s = GrowingBatchSampler(10, start=2, factor=2)
        >>> [len(b) for b in s], [len(b) for b in s]
        ([2, 2, 2, 2, 2], [4, 4, 2])
    """

    def __init__(self, sampler, start: int = 16, factor: float = 2.0, every: int = 1,
                 max_batch_size: int | None = None, drop_last: bool = False, seed: int = 0):
        _Epochs.__init__(self, seed)
        if isinstance(sampler, int) and not isinstance(sampler, bool):
            sampler = ShuffleSampler(sampler, seed=seed)
        if not hasattr(sampler, "__iter__") or not hasattr(sampler, "__len__"):
            fail("sampler", "a Sampler or a dataset size", sampler, TypeError)
        self.sampler = sampler
        self.schedule = growing_batch_size(start, factor, every, max_batch_size)
        self.drop_last = check_bool("drop_last", drop_last)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def state_dict(self) -> dict:
        sd = getattr(self.sampler, "state_dict", None)
        return {**super().state_dict(), **({"sampler": sd()} if callable(sd) else {})}

    def load_state_dict(self, state: dict) -> None:
        if "sampler" in state:
            self.sampler.load_state_dict(state["sampler"])
        super().load_state_dict(state)

    def batch_size(self, epoch: int | None = None) -> int:
        return self.schedule(self._next if epoch is None else epoch)

    def __iter__(self) -> Iterator[list]:
        bs = self.batch_size()
        self._generator()  # advance the epoch
        batch: list = []
        for i in self.sampler:
            batch.append(i)
            if len(batch) == bs:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def __len__(self) -> int:
        n, bs = len(self.sampler), self.batch_size()
        return n // bs if self.drop_last else math.ceil(n / bs)


__all__ = [
    "SAMPLERS", "ShuffleSampler", "ClassInterleavedSampler", "LossProportionalSampler",
    "BootstrapSampler", "bootstrap_indices", "GrowingBatchSampler", "growing_batch_size",
    "LossFeedback", "SampledBatches", "per_example_loss",
]
