"""Ensembles and shared representations: bagging (notes 001) and multitask learning.

Bagging (Breiman, 1994): train ``k`` models on ``k`` bootstrap resamples of the
training set (each the size of the original, drawn with replacement) and let them vote
or average on test examples. Members make partly independent errors, so the ensemble
is on average at least as good as its members, and better when their errors differ.

Multitask learning: a trunk of generic parameters shared by all tasks, one head of
task-specific parameters per task, trained on the weighted sum of the task losses
``J = sum_t w_t J_t`` (a form of parameter sharing).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from descend._validation import check_bool, check_choice, check_int, check_range, fail
from descend.data.samplers import bootstrap_indices


def _xy(data, name: str):
    if hasattr(data, "tensors") and len(data.tensors) == 2:
        return data.tensors
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        return tuple(data)
    fail(name, "a TensorDataset of (x, y) or an (x, y) pair of tensors", type(data).__name__, TypeError)


class Ensemble(nn.Module):
    """Combine classifiers: average their softmax probabilities or take a majority vote.

    ``method="average"``: ``P(c | x) = (1/k) sum_j softmax(f_j(x))_c``.
    ``method="vote"``: the fraction of members whose arg-max is ``c`` (ties go to the
    lowest class index on ``argmax``).

    Args:
        models: the members (``nn.Module`` classifiers returning logits).
        method: ``"average"`` (default) or ``"vote"``.

    Example:
        >>> e = Ensemble([nn.Linear(3, 2), nn.Linear(3, 2)])
        >>> e(torch.zeros(4, 3)).sum(dim=1)
        tensor([1., 1., 1., 1.], grad_fn=<SumBackward1>)
    """

    def __init__(self, models: Sequence[nn.Module], method: str = "average"):
        super().__init__()
        if not models or not all(isinstance(m, nn.Module) for m in models):
            fail("models", "a non-empty list of torch.nn.Module", models, TypeError)
        self.members = nn.ModuleList(models)
        self.method = check_choice("method", method, ["average", "vote"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [m(x) for m in self.members]
        if self.method == "average":
            return torch.stack([o.softmax(dim=-1) for o in outs]).mean(0)
        c = outs[0].shape[-1]
        votes = torch.stack([F.one_hot(o.argmax(dim=-1), c) for o in outs]).to(outs[0].dtype)
        return votes.mean(0)


class Bagging:
    """Bootstrap aggregating: ``k`` trainers, each fit on its own bootstrap resample.

    Args:
        make_trainer: ``i -> Trainer`` returning a trainer with a *new* model for member
            ``i`` (seed it with ``i`` for reproducible yet different initializations).
        k: number of members (>= 1, default 5).
        method: how members combine, ``"average"`` (default) or ``"vote"``.
        seed: base seed of the resamples; member ``i`` uses ``seed + i`` (default 0).

    Example:
        >>> from descend.train import Trainer
        >>> def make(i):
        ...     torch.manual_seed(i); m = nn.Linear(2, 2)
        ...     return Trainer(m, torch.optim.SGD(m.parameters(), lr=0.5), progress=False)
        >>> x = torch.randn(64, 2); y = (x[:, 0] > 0).long()
        >>> bag = Bagging(make, k=3).fit((x, y), epochs=5)
        >>> sorted(bag.evaluate((x, y)))
        ['ensemble', 'mean_member', 'members']

    Reference: Breiman, "Bagging predictors", Machine Learning 24 (1996).
    """

    def __init__(self, make_trainer: Callable[[int], Any], k: int = 5, method: str = "average",
                 seed: int = 0):
        if not callable(make_trainer):
            fail("make_trainer", "callable", make_trainer, TypeError)
        self.make_trainer = make_trainer
        self.k = check_int("k", k, ge=1)
        self.method = check_choice("method", method, ["average", "vote"])
        self.seed = check_int("seed", seed)
        self.trainers: list[Any] = []
        self.resamples: list[torch.Tensor] = []

    def fit(self, train_data, val_data=None, *, epochs: int = 1) -> "Bagging":
        """Train every member on a bootstrap resample of ``train_data`` (size n, with replacement)."""
        x, y = _xy(train_data, "train_data")
        n = x.shape[0]
        self.trainers, self.resamples = [], []
        for i in range(self.k):
            idx = bootstrap_indices(n, seed=self.seed + i).to(x.device)
            trainer = self.make_trainer(i)
            if any(trainer.model is t.model for t in self.trainers):
                fail("make_trainer", "a factory returning a new model for each member", self.make_trainer)
            trainer.fit((x[idx], y[idx]), val_data, epochs=epochs)
            self.trainers.append(trainer)
            self.resamples.append(idx)
        return self

    @property
    def models(self) -> list[nn.Module]:
        return [t.model for t in self.trainers]

    def ensemble(self) -> Ensemble:
        """The members as one :class:`Ensemble` module."""
        if not self.trainers:
            raise RuntimeError("Bagging is not fitted: call .fit(train_data) first")
        return Ensemble(self.models, self.method)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Combined class scores ``(N, C)`` (probabilities or vote fractions), members in eval mode."""
        ens = self.ensemble()
        was = [m.training for m in ens.members]
        ens.eval()
        try:
            return ens(x)
        finally:
            for m, w in zip(ens.members, was):
                m.train(w)

    @torch.no_grad()
    def evaluate(self, data) -> dict[str, Any]:
        """Accuracy of every member, their mean, and the ensemble's, on ``data``."""
        x, y = _xy(data, "data")
        members = []
        for m in self.models:
            was = m.training
            m.eval()
            members.append(float((m(x).argmax(-1) == y).double().mean()))
            m.train(was)
        ens = float((self.predict(x).argmax(-1) == y).double().mean())
        return {"members": members, "mean_member": sum(members) / len(members), "ensemble": ens}


class MultiTaskModel(nn.Module):
    """A shared trunk and one head per task: ``out[t] = head_t(trunk(x))``.

    Args:
        trunk: the generic, shared layers.
        heads: ``{task name: head module}`` (task-specific layers).
        concat: return one tensor, the heads' outputs concatenated along the last
            dimension in the order of ``heads`` (default False: a dict). Use it with
            :class:`descend.train.Trainer`, which expects one output tensor, and give
            :class:`MultiTaskLoss` the ``sizes``.

    Example:
        >>> m = MultiTaskModel(nn.Linear(4, 8), {"digit": nn.Linear(8, 10), "parity": nn.Linear(8, 2)})
        >>> {k: v.shape for k, v in m(torch.zeros(3, 4)).items()}
        {'digit': torch.Size([3, 10]), 'parity': torch.Size([3, 2])}
    """

    def __init__(self, trunk: nn.Module, heads: Mapping[str, nn.Module], concat: bool = False):
        super().__init__()
        self.concat = check_bool("concat", concat)
        if not isinstance(trunk, nn.Module):
            fail("trunk", "a torch.nn.Module", type(trunk).__name__, TypeError)
        if not isinstance(heads, Mapping) or not heads or not all(isinstance(h, nn.Module) for h in heads.values()):
            fail("heads", "a non-empty dict of task name -> torch.nn.Module", heads, TypeError)
        self.trunk = trunk
        self.heads = nn.ModuleDict(dict(heads))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.trunk(x)
        if self.concat:
            return torch.cat([head(h) for head in self.heads.values()], dim=-1)
        return {name: head(h) for name, head in self.heads.items()}


class MultiTaskLoss:
    """Weighted sum of per-task losses: ``J = sum_t w_t J_t(out[t], y[:, t])``.

    Targets are one column per task, in the order of ``tasks`` (so a Trainer can batch
    them as one tensor); each ``J_t`` is cross-entropy unless given.

    Args:
        tasks: task names, matching the model's heads.
        weights: one weight >= 0 per task (default all 1).
        losses: optional ``{task: loss_fn(outputs, targets)}`` (default cross-entropy).
        sizes: output width of each task, to split a concatenated output tensor
            (``MultiTaskModel(concat=True)``); not needed for dict outputs.

    Example:
        >>> loss = MultiTaskLoss(["a", "b"], weights=[1.0, 0.5])
        >>> out = {"a": torch.zeros(2, 3), "b": torch.zeros(2, 2)}
        >>> round(float(loss(out, torch.tensor([[0, 1], [2, 0]]))), 4)
        1.4452

    With a Trainer: ``MultiTaskModel(..., concat=True)``,
    ``Trainer(..., loss_fn=MultiTaskLoss(tasks, sizes=...), metrics=())`` (the default
    accuracy metric expects single-task targets).
    """

    def __init__(self, tasks: Sequence[str], weights: Sequence[float] | None = None,
                 losses: Mapping[str, Callable] | None = None, sizes: Sequence[int] | None = None):
        if not isinstance(tasks, (list, tuple)) or not tasks or not all(isinstance(t, str) for t in tasks):
            fail("tasks", "a non-empty list of task names", tasks, TypeError)
        self.tasks = list(tasks)
        weights = [1.0] * len(tasks) if weights is None else list(weights)
        if len(weights) != len(tasks):
            fail("weights", f"one weight per task ({len(tasks)})", weights)
        self.weights = [float(check_range(f"weights[{i}]", w, ge=0)) for i, w in enumerate(weights)]
        losses = dict(losses or {})
        unknown = set(losses) - set(tasks)
        if unknown:
            fail("losses", f"keyed by task names {self.tasks}", sorted(unknown))
        self.losses = {t: losses.get(t, F.cross_entropy) for t in self.tasks}
        if sizes is not None:
            if not isinstance(sizes, (list, tuple)) or len(sizes) != len(tasks):
                fail("sizes", f"one output width per task ({len(tasks)})", sizes)
            sizes = [check_int(f"sizes[{i}]", s, ge=1) for i, s in enumerate(sizes)]
        self.sizes = sizes

    def per_task(self, outputs: Mapping[str, torch.Tensor], targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{task: J_t}`` unweighted."""
        if isinstance(outputs, torch.Tensor):
            if self.sizes is None or outputs.shape[-1] != sum(self.sizes):
                fail("outputs", f"a dict, or a tensor of width sum(sizes) with `sizes` given",
                     tuple(outputs.shape))
            outputs = dict(zip(self.tasks, outputs.split(self.sizes, dim=-1)))
        missing = [t for t in self.tasks if t not in outputs]
        if missing:
            fail("outputs", f"a dict with the tasks {self.tasks}", sorted(outputs))
        if targets.dim() != 2 or targets.shape[1] != len(self.tasks):
            fail("targets", f"of shape (N, {len(self.tasks)}), one column per task", tuple(targets.shape))
        return {t: self.losses[t](outputs[t], targets[:, i]) for i, t in enumerate(self.tasks)}

    def __call__(self, outputs: Mapping[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        parts = self.per_task(outputs, targets)
        return sum(w * parts[t] for t, w in zip(self.tasks, self.weights))


__all__ = ["Ensemble", "Bagging", "MultiTaskModel", "MultiTaskLoss"]
