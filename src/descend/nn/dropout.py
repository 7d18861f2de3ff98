"""Dropout as the notes teach it: per-layer keep probabilities, and the two test-time
rules — weight scaling and Monte-Carlo averaging over masks — side by side.

Training (notes 001, Srivastava et al., JMLR 2014): for every example a fresh binary
mask ``mu ~ Bernoulli(p)`` multiplies each input/hidden unit, ``p`` being the *keep*
probability (0.8 for inputs, 0.5 for hidden units).

Test time, two rules:

* weight scaling: use every unit, scaled by ``p`` so that the expected input to the
  next layer matches training. With *inverted* dropout (torch's; notes 001: "divide
  the output of each unit by the probability") the ``1/p`` factor is applied during
  training and ``eval()`` uses the weights as they are — the same rule.
* Monte-Carlo averaging: keep the masks on and average ``S`` stochastic forward
  passes; it estimates the arithmetic mean over the ``2^H`` sub-networks, to which the
  weight-scaling output is exact for a linear layer after the dropout and a good
  approximation otherwise.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from descend._validation import check_bool, check_choice, check_int, check_range, fail

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


class Dropout(nn.Module):
    """Dropout parameterized by the keep probability ``p``.

    ``mode="inverted"`` (default, torch's): train ``y = x * mu / p``; eval ``y = x``.
    ``mode="scale_at_test"`` (notes 003's wording): train ``y = x * mu``; eval ``y = p x``.
    Both have ``E[y_train] = y_eval``.

    Args:
        keep: keep probability ``p`` in (0, 1], default 0.5 (``torch.nn.Dropout(p=1-keep)``).
        mode: ``"inverted"`` or ``"scale_at_test"``.

    Example:
        >>> d = Dropout(keep=0.8).eval()
        >>> d(torch.ones(3))
        tensor([1., 1., 1.])

    Differs from torch: the argument is the keep probability of the notes, not the drop
    probability; ``mode="inverted"`` calls ``torch.nn.functional.dropout`` (same masks
    for the same seed).
    """

    stochastic = True

    def __init__(self, keep: float = 0.5, mode: str = "inverted"):
        super().__init__()
        self.keep = float(check_range("keep", keep, gt=0, le=1))
        self.mode = check_choice("mode", mode, ["inverted", "scale_at_test"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "inverted":
            return F.dropout(x, p=1.0 - self.keep, training=self.training)
        if not self.training:
            return x * self.keep
        mask = torch.empty_like(x).bernoulli_(self.keep)
        return x * mask

    def extra_repr(self) -> str:
        return f"keep={self.keep}, mode={self.mode!r}"


class DropoutMLP(nn.Sequential):
    """A fully connected network with dropout on its input and on every hidden layer.

    ``Dropout(keep_input) -> Linear -> act -> Dropout(keep_hidden) -> ... -> Linear``
    (no dropout on the output units, as in the notes).

    Args:
        sizes: layer widths ``[in, hidden..., out]`` (at least two entries).
        keep_input: keep probability of the inputs, default 0.8.
        keep_hidden: keep probability of hidden units, default 0.5.
        activation: ``"relu"`` (default), ``"tanh"`` or ``"sigmoid"``.
        mode: see :class:`Dropout`.

    Example:
        >>> DropoutMLP([4, 8, 2])(torch.zeros(5, 4)).shape
        torch.Size([5, 2])
    """

    def __init__(self, sizes, keep_input: float = 0.8, keep_hidden: float = 0.5,
                 activation: str = "relu", mode: str = "inverted"):
        if not isinstance(sizes, (list, tuple)) or len(sizes) < 2:
            fail("sizes", "a list of at least two layer widths", sizes, TypeError)
        for i, s in enumerate(sizes):
            check_int(f"sizes[{i}]", s, ge=1)
        check_choice("activation", activation, list(_ACTIVATIONS))
        layers: list[nn.Module] = [Dropout(keep_input, mode)]
        for i in range(len(sizes) - 1):
            layers.append(nn.Linear(sizes[i], sizes[i + 1]))
            if i < len(sizes) - 2:
                layers += [_ACTIVATIONS[activation](), Dropout(keep_hidden, mode)]
        super().__init__(*layers)


def is_stochastic(module: nn.Module) -> bool:
    """Whether ``module`` samples masks in train mode: torch's dropout layers, :class:`Dropout`,
    DropConnect layers (``descend.nn.DropConnectLinear``), and any layer with a true
    ``stochastic`` attribute.

    >>> is_stochastic(torch.nn.Dropout(0.5)), is_stochastic(Dropout(0.8)), is_stochastic(torch.nn.ReLU())
    (True, True, False)
    """
    return (isinstance(module, nn.modules.dropout._DropoutNd) or bool(getattr(module, "stochastic", False))
            or type(module).__name__.startswith("DropConnect"))


def weight_scaling_predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Test-time output by the weight-scaling rule: one deterministic pass in ``eval()`` mode.

    The model's train/eval mode is restored afterwards.

    Example:
        >>> weight_scaling_predict(DropoutMLP([3, 4, 2]), torch.zeros(1, 3)).shape
        torch.Size([1, 2])
    """
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(x)
    finally:
        model.train(was)


def mc_predict(model: nn.Module, x: torch.Tensor, samples: int = 100, seed: int | None = None,
               probs: bool = False) -> torch.Tensor:
    """Monte-Carlo dropout: average ``samples`` forward passes with fresh masks.

    ``(1/S) sum_s f(x; mu_s)``. Only the stochastic layers (see :func:`is_stochastic`) are
    put in train mode; batch norm and the rest stay in eval mode. With ``probs=True`` the
    softmax probabilities are averaged (the ensemble's predictive distribution) instead
    of the raw outputs.

    Args:
        model: the network. x: a batch. samples: ``S`` (>= 1), default 100.
        seed: seed for the masks (default None: the global generator, advanced). The
            global RNG state is restored afterwards when a seed is given.
        probs: average ``softmax(f)`` instead of ``f`` (default False).

    Reference: Gal & Ghahramani, "Dropout as a Bayesian approximation", ICML 2016.

    Example:
        >>> mc_predict(DropoutMLP([3, 4, 2]), torch.zeros(1, 3), samples=10, seed=0).shape
        torch.Size([1, 2])
    """
    check_int("samples", samples, ge=1)
    check_int("seed", seed, allow_none=True)
    check_bool("probs", probs)
    modes = {m: m.training for m in model.modules()}
    model.eval()
    for m in model.modules():
        if is_stochastic(m):
            m.train()
    devices = [x.device] if x.device.type == "cuda" else []
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=devices, enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            total = None
            for _ in range(samples):
                out = model(x)
                out = out.softmax(dim=-1) if probs else out
                total = out if total is None else total + out
        return total / samples
    finally:
        for m, was in modes.items():
            m.train(was)


__all__ = ["Dropout", "DropoutMLP", "is_stochastic", "mc_predict", "weight_scaling_predict"]
