"""Shared pieces of the ``reproduce`` claims: result type, sizes, data, models, training."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from descend._extras import require
from descend._validation import check_choice

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


def mlp(d_in: int, widths, d_out: int, *, act: Callable[[], nn.Module] = nn.ReLU,
        batchnorm: bool = False, dropout: float = 0.0) -> nn.Sequential:
    """``Linear -> [BN] -> act -> [Dropout]`` blocks, then a linear head.

    >>> [type(m).__name__ for m in mlp(4, [8], 2, batchnorm=True, dropout=0.5)]
    ['Linear', 'BatchNorm1d', 'ReLU', 'Dropout', 'Linear']
    """
    layers, w = [], d_in
    for h in widths:
        layers.append(nn.Linear(w, h))
        if batchnorm:
            layers.append(nn.BatchNorm1d(h))
        layers.append(act())
        if dropout:
            layers.append(nn.Dropout(dropout))
        w = h
    layers.append(nn.Linear(w, d_out))
    return nn.Sequential(*layers)


def init_linear(model: nn.Module, scheme: str, *, std: float = 0.01) -> nn.Module:
    """``"naive"`` N(0, std^2), ``"xavier"`` U(+-sqrt(6/(fan_in+fan_out))), ``"he"``
    N(0, 2/fan_in); biases 0 (notes 000/002).

    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> m = init_linear(nn.Linear(1000, 100), "he")
    >>> round(m.weight.std().item() / (2 / 1000) ** 0.5, 1), m.bias.abs().max().item()
    (1.0, 0.0)
    """
    for m in model.modules():
        if isinstance(m, nn.Linear):
            fan_out, fan_in = m.weight.shape
            with torch.no_grad():
                if scheme == "naive":
                    m.weight.normal_(0, std)
                elif scheme == "xavier":
                    a = math.sqrt(6.0 / (fan_in + fan_out))
                    m.weight.uniform_(-a, a)
                elif scheme == "he":
                    m.weight.normal_(0, math.sqrt(2.0 / fan_in))
                else:
                    raise ValueError(f"`scheme` must be one of 'naive', 'xavier', 'he'. Received: scheme={scheme!r}")
                m.bias.zero_()
    return model


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
