"""Layers the notes use that torch lacks: DropConnect, Gaussian noise on units, Fixup's scalar bias."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from descend._validation import check_bool, check_choice, check_range, fail


def dropconnect_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, mask: torch.Tensor,
                       p: float, scaling: str = "inverted") -> torch.Tensor:
    """``y = ((M * W) / (1-p)) x + b`` (``scaling="inverted"``) or ``(M * W) x + b`` (``"test"``).

    ``mask`` M is 0/1 with the weight's shape (one mask for the minibatch) or with a
    leading batch dimension (one mask per sample: ``y_n = (M_n * W) x_n``). A plain
    function of its inputs, so its gradient can be checked with a fixed mask.

    >>> w = torch.ones(2, 3); m = torch.tensor([[1., 0., 1.], [0., 0., 1.]])
    >>> dropconnect_linear(torch.ones(1, 3), w, None, m, 0.5, "test")
    tensor([[2., 1.]])
    """
    scale = 1.0 / (1.0 - p) if scaling == "inverted" else 1.0
    if mask.dim() == weight.dim() + 1:  # per-sample masks (N, out, in)
        y = torch.einsum("noi,ni->no", mask * weight * scale, x)
        return y if bias is None else y + bias
    return F.linear(x, mask * weight * scale, bias)


class DropConnectLinear(nn.Linear):
    """A Linear layer whose *weights* are dropped at train time (Wan et al., ICML 2013; note 003).

    Train: each weight is kept with probability ``1 - p`` (mask ``M ~ Bernoulli(1-p)``,
    one mask per minibatch, or per sample with ``per_sample=True``), ``y = (M * W) x + b``.
    Dropout zeroes a unit's whole row of outgoing activations; DropConnect zeroes single
    connections. Test (the mean-field rule, as for dropout in the notes: use all
    connections, scaled by the keep probability): ``y = (1-p) W x + b``. With
    ``scaling="inverted"`` (default) the train-time weights are divided by ``1-p``
    instead and test time uses ``W`` unchanged; both give ``E[y] = W x + b``. (The paper
    also proposes a Gaussian moment-matching inference, not implemented here.)

    Args: ``in_features``, ``out_features``, ``p=0.5`` drop probability, ``bias=True``,
    ``scaling="inverted"`` | "test", ``per_sample=False``, ``generator=None``.

    >>> layer = DropConnectLinear(4, 3, p=0.5).eval()
    >>> torch.allclose(layer(torch.ones(1, 4)), nn.functional.linear(torch.ones(1, 4), layer.weight, layer.bias))
    True
    """

    def __init__(self, in_features: int, out_features: int, p: float = 0.5, bias: bool = True,
                 scaling: str = "inverted", per_sample: bool = False, generator: torch.Generator | None = None):
        super().__init__(in_features, out_features, bias=bias)
        self.p = float(check_range("p", p, ge=0, lt=1))
        self.scaling = check_choice("scaling", scaling, ["inverted", "test"])
        self.per_sample = check_bool("per_sample", per_sample)
        self.generator = generator

    def sample_mask(self, batch: int | None = None) -> torch.Tensor:
        """A 0/1 keep mask (probability ``1-p``) of the weight's shape (with a batch dim if given)."""
        shape = self.weight.shape if batch is None else (batch, *self.weight.shape)
        u = torch.rand(shape, generator=self.generator, device=self.weight.device, dtype=self.weight.dtype)
        return (u >= self.p).to(self.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            w = self.weight if self.scaling == "inverted" else (1.0 - self.p) * self.weight
            return F.linear(x, w, self.bias)
        if self.per_sample:
            if x.dim() != 2:
                fail("input", "of shape (batch, features) for per_sample=True", tuple(x.shape))
            mask = self.sample_mask(x.shape[0])
        else:
            mask = self.sample_mask()
        return dropconnect_linear(x, self.weight, self.bias, mask, self.p, self.scaling)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", p={self.p}, scaling={self.scaling!r}, per_sample={self.per_sample}"


class GaussianNoise(nn.Module):
    """Add Gaussian noise to inputs or hidden units at train time; identity at eval.

    ``mode="additive"``: ``x + sigma eps``; ``"multiplicative"``: ``x (1 + sigma eps)``
    (Gaussian dropout), ``eps ~ N(0, 1)``. Noise on the inputs of a least-squares model
    equals an L2-type penalty (Bishop 1995; notes 001, 003: data / noise injection).
    Placed first it perturbs inputs; after an activation, hidden units.

    Args: ``std=0.1`` (>= 0), ``mode="additive"``, ``generator=None``.

    >>> GaussianNoise(0.5).eval()(torch.ones(2)).tolist()
    [1.0, 1.0]
    """

    def __init__(self, std: float = 0.1, mode: str = "additive", generator: torch.Generator | None = None):
        super().__init__()
        self.std = float(check_range("std", std, ge=0))
        self.mode = check_choice("mode", mode, ["additive", "multiplicative"])
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.std == 0.0:
            return x
        eps = torch.randn(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)
        return x + self.std * eps if self.mode == "additive" else x * (1.0 + self.std * eps)

    def extra_repr(self) -> str:
        return f"std={self.std}, mode={self.mode!r}"


class ScalarBias(nn.Module):
    """One learned scalar added to every entry: ``y = x + b``, ``b`` initialized at 0 (Fixup).

    >>> ScalarBias()(torch.ones(2)).tolist()
    [1.0, 1.0]
    """

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias
