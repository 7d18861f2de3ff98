"""Shared pieces of the ``reproduce`` claims: result type, sizes, data, models, training."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from descend._extras import require
from descend._validation import check_choice, check_int

SIZES = ("tiny", "full")


@dataclass
class ClaimResult:
    """What a claim measured.

    Attributes:
        name: registry name.
        claim: the claim of the notes, in words.
        source: where the notes make it.
        setup: what was run (data, model, optimizer, budget).
        measured: one sentence with the measured figures.
        held: whether the claim held in this measurement.
        criterion: the test that decides ``held``.
        table: rows (dicts) shown in the report.
        figures: ``filename -> caption`` of the PNGs written next to the report.
        numbers: every measured number (JSON-ready).
        seeds: the seeds the figures are over (at least 5 at full size).
        margin: the margin of the criterion, fixed before the run, in words.
        origin: ``"notes"``, or ``"elsewhere"`` for a claim the notes do not make (its
            ``source`` says where it comes from).

    Example:
        >>> r = ClaimResult(name="demo", claim="momentum is faster", source="note 001", setup="a quadratic",
        ...                 measured="120 vs 1200 steps", held=True, criterion="at least 5x fewer steps")
        >>> r.held, r.size, r.table
        (True, 'tiny', [])
    """

    name: str
    claim: str
    source: str
    setup: str
    measured: str
    held: bool
    criterion: str
    table: list[dict[str, Any]] = field(default_factory=list)
    figures: dict[str, str] = field(default_factory=dict)
    numbers: dict[str, Any] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)
    margin: str = ""
    origin: str = "notes"
    size: str = "tiny"
    seconds: float = 0.0


def pick(size: str, tiny, full):
    """``tiny`` when ``size`` is ``"tiny"``, else ``full`` (the claim-size switch).

    >>> pick("tiny", 100, 5000), pick("full", 100, 5000)
    (100, 5000)
    """
    check_choice("size", size, list(SIZES))
    return tiny if size == "tiny" else full


def flat(ds) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` of a TensorDataset with inputs flattened to vectors.

    >>> from torch.utils.data import TensorDataset
    >>> x, y = flat(TensorDataset(torch.zeros(5, 1, 2, 3), torch.arange(5)))
    >>> x.shape, y.tolist()
    (torch.Size([5, 6]), [0, 1, 2, 3, 4])
    """
    x, y = ds.tensors
    return x.reshape(len(x), -1), y


def digits(val_fraction: float = 0.1, seed: int = 0):
    """The ``digits`` dataset (:func:`descend.data.load`) with a validation split."""
    from descend.data import load

    return load("digits", val_fraction=val_fraction, seed=seed)


def subset(xy, n: int | None, seed: int = 0):
    """At most ``n`` random rows of ``(x, y)`` (all of them if ``n`` is None), seeded.

    >>> x, y = subset((torch.arange(10.0), torch.arange(10)), 3)
    >>> len(x), bool((x == y.float()).all())
    (3, True)
    """
    x, y = xy
    if n is None or n >= len(x):
        return x, y
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(x), generator=g)[:n]
    return x[idx], y[idx]


def seeds(size: str, n: int = 5) -> list[int]:
    """The seeds of a claim: two for a tiny smoke test, ``n`` (at least 5) at full size.

    >>> seeds("tiny"), seeds("full")
    ([0, 1], [0, 1, 2, 3, 4])
    """
    check_int("n", n, ge=5)
    return pick(size, [0, 1], list(range(n)))


def build(name: str, *, input_shape, num_classes: int, init: str | None = None, seed: int = 0,
          init_kwargs: dict | None = None, **kwargs) -> nn.Module:
    """A model of :data:`descend.nn.MODELS`, initialized by :func:`descend.init.apply`.

    The same builders and initializers as ``descend compare``: the claims test the
    library's code, not copies of it. ``seed`` seeds torch before the build (default
    initialization) and the generator of ``init``.

    >>> m = build("mlp", input_shape=(64,), num_classes=10, hidden=[32], init="he_normal", seed=0)
    >>> [type(x).__name__ for x in m], float(m[1][0].bias.detach().abs().sum())
    (['Flatten', 'Sequential', 'Linear'], 0.0)
    """
    from descend.init import apply
    from descend.nn import MODELS

    torch.manual_seed(seed)
    model = MODELS.create(name, input_shape=tuple(input_shape), num_classes=num_classes, **kwargs)
    if init is not None:
        apply(model, init, generator=torch.Generator().manual_seed(seed), **(init_kwargs or {}))
    return model


def interval(ci: dict, scale: float = 1.0, digits: int = 3) -> str:
    """``mean [lo, hi]`` of a :func:`descend.analysis.stats.mean_ci` result, as text.

    >>> from descend.analysis.stats import mean_ci
    >>> interval(mean_ci([0.1, 0.2, 0.3]))
    '0.2 [-0.0484, 0.448]'
    >>> interval(mean_ci([0.9, 0.92]), scale=100, digits=3)
    '91 [78.3, 104]'
    """
    def f(v):
        return "n/a" if v is None else f"{v * scale:.{digits}g}"
    return f"{f(ci['mean'])} [{f(ci['lo'])}, {f(ci['hi'])}]"


def ratio_ci(ratios, level: float = 0.95) -> dict:
    """Geometric mean of positive ratios with the t-interval of the mean log ratio.

    ``exp(mean(log r) +- t s / sqrt(n))``: the natural interval for "how many times
    faster", symmetric on the log scale. Infinite ratios are kept out and counted.

    >>> r = ratio_ci([2.0, 2.0, 8.0])
    >>> round(r["mean"], 3), r["n"], r["lo"] < 2 < r["hi"]
    (3.175, 3, True)
    """
    from descend.analysis.stats import mean_ci

    logs = [math.log(r) for r in ratios if r is not None and 0 < r < math.inf]
    ci = mean_ci(logs, level)
    out = {k: (math.exp(ci[k]) if ci[k] is not None else None) for k in ("mean", "lo", "hi")}
    out.update(n=ci["n"], infinite=sum(1 for r in ratios if r == math.inf), level=level)
    return out


def fit(model: nn.Module, opt, train, val=None, *, epochs: int, batch_size: int = 64,
        seed: int = 0, callbacks=(), loss_fn=nn.functional.cross_entropy):
    """Train with :class:`descend.train.Trainer`; return the trainer.

    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> from torch.utils.data import TensorDataset
    >>> x = torch.randn(64, 2); y = (x[:, 0] > 0).long()
    >>> model = nn.Linear(2, 2)
    >>> t = fit(model, torch.optim.SGD(model.parameters(), lr=0.5), TensorDataset(x, y), epochs=10, batch_size=16)
    >>> t.epoch, t.global_step, accuracy(model, (x, y)) > 0.9
    (10, 40, True)
    """
    from descend.train import Trainer

    t = Trainer(model, opt, loss_fn=loss_fn, batch_size=batch_size, seed=seed,
                callbacks=list(callbacks), progress=False,
                on_nonfinite="ignore")  # LR sweeps diverge on purpose: a NaN run just misses the target
    t.fit(train, val, epochs=epochs)
    return t


@torch.no_grad()
def accuracy(model: nn.Module, xy) -> float:
    """Fraction of ``xy`` classified right by ``model`` (in eval mode; its mode is restored).

    >>> m = torch.nn.Linear(2, 2)
    >>> with torch.no_grad():
    ...     _ = m.weight.copy_(torch.eye(2)); _ = m.bias.zero_()
    >>> accuracy(m, (torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0])))
    0.5
    """
    was = model.training
    model.eval()
    x, y = xy
    acc = float((model(x).argmax(-1) == y).float().mean())
    model.train(was)
    return acc


@torch.no_grad()
def mean_loss(model: nn.Module, xy, loss_fn=nn.functional.cross_entropy) -> float:
    """``loss_fn(model(x), y)`` on ``xy`` as a float (in eval mode; its mode is restored).

    >>> mean_loss(torch.nn.Identity(), (torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)))  # log 2
    0.693...
    """
    was = model.training
    model.eval()
    out = float(loss_fn(model(xy[0]), xy[1]))
    model.train(was)
    return out


def first_reach(values, target: float, steps) -> int | None:
    """The step at which ``values`` first reach ``target`` (None if never).

    >>> first_reach([0.5, 0.8, None, 0.95], 0.9, steps=[10, 20, 30, 40])
    40
    >>> first_reach([0.5, 0.8], 0.9, steps=[10, 20]) is None
    True
    """
    for v, s in zip(values, steps):
        if v is not None and math.isfinite(v) and v >= target:
            return int(s)
    return None


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A deep copy of ``model.state_dict()`` (later training does not change it)."""
    return copy.deepcopy(model.state_dict())


def plt():
    """``matplotlib.pyplot`` with the non-interactive Agg backend."""
    matplotlib = require("matplotlib", "plots need", "plots")

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def save(fig, out_dir, name: str) -> str:
    """Write ``fig`` as ``out_dir/name`` (90 dpi), close it and return ``name``."""
    from pathlib import Path

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    fig.savefig(Path(out_dir) / name, dpi=90, bbox_inches="tight")
    plt().close(fig)
    return name
