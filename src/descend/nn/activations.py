"""Activations by name, including the two torch lacks: LeCun's scaled tanh and maxout.

``ACTIVATIONS.create(name, **kwargs) -> nn.Module``. Names: ``relu``, ``leaky_relu``
(``negative_slope=0.01``, the notes' 0.01x), ``prelu`` (``num_parameters=1``,
``init=0.25``), ``elu`` (``alpha=1.0``), ``gelu`` (``approximate="none"``),
``sigmoid``, ``tanh``, ``scaled_tanh`` (1.7159 tanh(2x/3)), ``maxout`` (``pieces=2``),
``identity``.
"""

from __future__ import annotations

import torch
from torch import nn

from descend._registry import Registry
from descend._validation import check_choice, check_int, check_range

ACTIVATIONS = Registry("activation")


class ScaledTanh(nn.Module):
    """LeCun's scaled hyperbolic tangent ``f(x) = 1.7159 tanh(2x/3)``.

    The constants make ``f(1) = 1`` and ``f(-1) = -1``, so for inputs of unit variance the
    output keeps roughly zero mean and unit variance (note 003, "Which of the sigmoids";
    LeCun et al., "Efficient BackProp", 1998). ``amplitude=1.7159`` and ``slope=2/3`` can
    be changed. torch has no such module.

    >>> round(ScaledTanh()(torch.tensor(1.0)).item(), 4)
    1.0
    """

    def __init__(self, amplitude: float = 1.7159, slope: float = 2.0 / 3.0):
        super().__init__()
        self.amplitude = float(check_range("amplitude", amplitude, gt=0))
        self.slope = float(check_range("slope", slope, gt=0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.amplitude * torch.tanh(self.slope * x)

    def extra_repr(self) -> str:
        return f"amplitude={self.amplitude}, slope={self.slope:.6g}"


class Maxout(nn.Module):
    """Maxout: the maximum over ``pieces`` consecutive groups of features.

    With ``z = W x + b`` of ``pieces * d`` features (channel dim ``dim``), output unit
    ``j`` is ``max_{i<pieces} z[j * pieces + i]`` — the notes' ``max(w_1^T x + b_1,
    w_2^T x + b_2)`` for ``pieces=2`` (note 003; Goodfellow et al., "Maxout Networks",
    ICML 2013). It divides the size of ``dim`` by ``pieces``; the model builders give the
    layer before it ``pieces`` times the width. ReLU is the special case
    ``max(w^T x + b, 0)``.

    Args: ``pieces=2`` (k >= 2), ``dim=1`` (the feature / channel dimension).

    >>> Maxout(2)(torch.tensor([[1.0, -2.0, 0.5, 3.0]]))
    tensor([[1., 3.]])
    """

    def __init__(self, pieces: int = 2, dim: int = 1):
        super().__init__()
        self.pieces = check_int("pieces", pieces, ge=2)
        self.dim = check_int("dim", dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dim = self.dim % x.dim()
        size = x.shape[dim]
        if size % self.pieces:
            raise ValueError(
                f"`pieces` must divide the size of dimension {dim} ({size}). Received: pieces={self.pieces}"
            )
        shape = x.shape[:dim] + (size // self.pieces, self.pieces) + x.shape[dim + 1:]
        return x.reshape(shape).amax(dim=dim + 1)

    def extra_repr(self) -> str:
        return f"pieces={self.pieces}, dim={self.dim}"


class MaxoutLinear(nn.Module):
    """A fully connected maxout layer: ``y_j = max_i (W_i x + b_i)_j`` with ``pieces`` affine maps.

    Equivalent to ``nn.Linear(in_features, pieces * out_features)`` followed by
    :class:`Maxout`; kept as one module for readability.

    >>> MaxoutLinear(3, 4, pieces=2)(torch.zeros(5, 3)).shape
    torch.Size([5, 4])
    """

    def __init__(self, in_features: int, out_features: int, pieces: int = 2, bias: bool = True):
        super().__init__()
        check_int("in_features", in_features, ge=1)
        check_int("out_features", out_features, ge=1)
        self.linear = nn.Linear(in_features, out_features * check_int("pieces", pieces, ge=2), bias=bias)
        self.maxout = Maxout(pieces, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxout(self.linear(x))


def _simple(name: str, cls, doc: str):
    def factory():
        return cls()

    factory.__doc__ = doc
    ACTIVATIONS.register(name, factory)


_simple("relu", nn.ReLU, "ReLU max(0, x).")
_simple("sigmoid", nn.Sigmoid, "Logistic sigmoid 1 / (1 + e^-x).")
_simple("tanh", nn.Tanh, "Hyperbolic tangent.")
_simple("identity", nn.Identity, "No non-linearity (a linear network).")


@ACTIVATIONS.register("leaky_relu")
def leaky_relu(negative_slope: float = 0.01) -> nn.Module:
    """Leaky ReLU: x for x >= 0, negative_slope * x otherwise (notes: 0.01).

    >>> leaky_relu(0.1)(torch.tensor([-2.0, 3.0]))
    tensor([-0.2000,  3.0000])
    """
    return nn.LeakyReLU(float(check_range("negative_slope", negative_slope, ge=0)))


@ACTIVATIONS.register("prelu")
def prelu(num_parameters: int = 1, init: float = 0.25) -> nn.Module:
    """Parametric ReLU: the negative slope is learned (He et al. 2015).

    >>> act = prelu(init=0.25)
    >>> act(torch.tensor([-4.0, 1.0])).tolist(), [p.numel() for p in act.parameters()]
    ([-1.0, 1.0], [1])
    """
    return nn.PReLU(check_int("num_parameters", num_parameters, ge=1), float(check_range("init", init)))


@ACTIVATIONS.register("elu")
def elu(alpha: float = 1.0) -> nn.Module:
    """ELU: x for x > 0, alpha (e^x - 1) otherwise.

    >>> elu(1.0)(torch.tensor([-1.0, 2.0]))  # e^-1 - 1 = -0.6321
    tensor([-0.6321,  2.0000])
    """
    return nn.ELU(float(check_range("alpha", alpha, gt=0)))


@ACTIVATIONS.register("gelu")
def gelu(approximate: str = "none") -> nn.Module:
    """GELU x * Phi(x) (``approximate="tanh"`` for the tanh approximation).

    >>> gelu()(torch.tensor([-1.0, 0.0, 1.0]))  # x Phi(x)
    tensor([-0.1587,  0.0000,  0.8413])
    """
    return nn.GELU(approximate=check_choice("approximate", approximate, ["none", "tanh"]))


@ACTIVATIONS.register("scaled_tanh")
def scaled_tanh(amplitude: float = 1.7159, slope: float = 2.0 / 3.0) -> nn.Module:
    """LeCun's scaled tanh 1.7159 tanh(2x/3).

    >>> scaled_tanh()(torch.tensor([0.0, 1.5]))  # 1.7159 tanh(1) = 1.3068
    tensor([0.0000, 1.3068])
    """
    return ScaledTanh(amplitude, slope)


@ACTIVATIONS.register("maxout")
def maxout(pieces: int = 2, dim: int = 1) -> nn.Module:
    """Maxout over ``pieces`` groups of features (divides the width by ``pieces``).

    >>> maxout(pieces=2)(torch.tensor([[1.0, 5.0, 3.0, 2.0]]))  # max(1, 5), max(3, 2)
    tensor([[5., 3.]])
    """
    return Maxout(pieces, dim)
