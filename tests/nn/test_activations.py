"""Scaled tanh and maxout: formulas, gradcheck, registry."""

import pytest
import torch
from torch import nn

from descend.nn import ACTIVATIONS, Maxout, MaxoutLinear, ScaledTanh


def test_scaled_tanh_formula_and_fixed_points():
    x = torch.linspace(-4, 4, 101, dtype=torch.float64)
    torch.testing.assert_close(ScaledTanh()(x), 1.7159 * torch.tanh(2 * x / 3))
    out = ScaledTanh()(torch.tensor([1.0, -1.0], dtype=torch.float64))
    torch.testing.assert_close(out, torch.tensor([1.0, -1.0], dtype=torch.float64), atol=1e-4, rtol=0)
    # unit-variance inputs give outputs of roughly unit variance (note 003: "zero mean and unit variance")
    y = ScaledTanh()(torch.randn(200_000, generator=torch.Generator().manual_seed(0)))
    assert abs(y.mean().item()) < 0.01 and 0.75 < y.var().item() < 1.0  # E[f(z)^2] = 0.8 for z ~ N(0,1)


def test_scaled_tanh_gradcheck():
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ScaledTanh(), (x,))


def test_maxout_formula():
    z = torch.randn(6, 12, dtype=torch.float64)
    out = Maxout(3)(z)
    expect = torch.stack([torch.stack([z[:, 3 * j + i] for i in range(3)]).max(dim=0).values for j in range(4)], dim=1)
    torch.testing.assert_close(out, expect)
    conv = torch.randn(2, 8, 5, 5)
    assert Maxout(2)(conv).shape == (2, 4, 5, 5)
    # notes' form: max(w1 x + b1, w2 x + b2)
    layer = MaxoutLinear(3, 2, pieces=2).double()
    x = torch.randn(7, 3, dtype=torch.float64)
    W, b = layer.linear.weight, layer.linear.bias
    pieces = [x @ W[[2 * j + i for j in range(2)]].T + b[[2 * j + i for j in range(2)]] for i in range(2)]
    torch.testing.assert_close(layer(x), torch.maximum(*pieces))


def test_maxout_gradcheck():
    z = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)  # ties have probability zero
    assert torch.autograd.gradcheck(Maxout(3), (z,))
    layer = MaxoutLinear(3, 2, pieces=3).double()
    assert torch.autograd.gradcheck(layer, (torch.randn(4, 3, dtype=torch.float64, requires_grad=True),))


def test_maxout_errors():
    with pytest.raises(ValueError, match="`pieces` must divide"):
        Maxout(4)(torch.randn(2, 6))
    with pytest.raises(ValueError, match="`pieces` must be an integer >= 2"):
        Maxout(1)


def test_registry():
    assert {"relu", "leaky_relu", "prelu", "elu", "gelu", "sigmoid", "tanh", "scaled_tanh", "maxout"} <= set(ACTIVATIONS)
    assert ACTIVATIONS.create("leaky_relu").negative_slope == 0.01
    assert isinstance(ACTIVATIONS.create("prelu"), nn.PReLU)
    with pytest.raises(ValueError, match="`negative_slope` must be >= 0"):
        ACTIVATIONS.create("leaky_relu", negative_slope=-1)
    with pytest.raises(TypeError):
        ACTIVATIONS.create("relu", slope=1)
