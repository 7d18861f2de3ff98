"""DropConnect (gradcheck with a fixed mask, train/test rule), Gaussian noise layers, scalar bias."""

import pytest
import torch

from descend.nn import DropConnectLinear, GaussianNoise, ScalarBias, dropconnect_linear


def test_dropconnect_formula_and_gradcheck_with_fixed_mask():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    mask = (torch.rand(3, 4, generator=g) > 0.4).double()
    torch.testing.assert_close(dropconnect_linear(x, w, b, mask, 0.4, "test"), x @ (mask * w).T + b)
    torch.testing.assert_close(dropconnect_linear(x, w, b, mask, 0.4), x @ (mask * w / 0.6).T + b)
    assert torch.autograd.gradcheck(lambda x, w, b: dropconnect_linear(x, w, b, mask, 0.4), (x, w, b))
    per = (torch.rand(5, 3, 4, generator=g) > 0.5).double()
    expect = torch.stack([per[n] * w @ x[n] for n in range(5)]) + b
    torch.testing.assert_close(dropconnect_linear(x, w, b, per, 0.5, "test"), expect)
    assert torch.autograd.gradcheck(lambda x, w, b: dropconnect_linear(x, w, b, per, 0.5, "test"), (x, w, b))


def test_dropconnect_layer_train_and_test_rules():
    layer = DropConnectLinear(50, 40, p=0.3, generator=torch.Generator().manual_seed(1)).double()
    mask = layer.sample_mask()
    assert abs(1 - mask.mean().item() - 0.3) < 5 * (0.3 * 0.7 / 2000) ** 0.5  # drop fraction ~ p
    x = torch.randn(8, 50, dtype=torch.float64)
    exact = torch.nn.functional.linear(x, layer.weight, layer.bias)
    layer.eval()
    torch.testing.assert_close(layer(x), exact)  # inverted: W at test
    test_rule = DropConnectLinear(50, 40, p=0.3, scaling="test").double().eval()
    test_rule.load_state_dict(layer.state_dict())
    torch.testing.assert_close(test_rule(x), torch.nn.functional.linear(x, 0.7 * layer.weight, layer.bias))
    # train: averaging over many masks recovers the test-time output (E[M]/(1-p) = 1)
    layer.train()
    with torch.no_grad():
        avg = torch.stack([layer(x) for _ in range(2000)]).mean(0)
    assert (avg - exact).abs().max().item() < 0.15
    assert not torch.allclose(layer(x), exact)
    per = DropConnectLinear(4, 3, p=0.5, per_sample=True)
    assert per(torch.randn(6, 4)).shape == (6, 3)
    with pytest.raises(ValueError, match="`p` must be >= 0 and < 1"):
        DropConnectLinear(2, 2, p=1.0)


def test_gaussian_noise_layers():
    g = torch.Generator().manual_seed(0)
    x = torch.full((100_000,), 2.0)
    add = GaussianNoise(0.5, generator=g)
    y = add(x)
    assert abs(y.mean().item() - 2) < 5 * 0.5 / 316 and abs(y.std().item() - 0.5) < 0.01
    mul = GaussianNoise(0.5, mode="multiplicative", generator=g)
    y = mul(x)
    assert abs(y.mean().item() - 2) < 5 * 1.0 / 316 and abs(y.std().item() - 1.0) < 0.02
    add.eval()
    assert torch.equal(add(x), x)
    with pytest.raises(ValueError, match="`std` must be >= 0"):
        GaussianNoise(-1)


def test_scalar_bias():
    sb = ScalarBias()
    assert sb.bias.shape == (1,) and torch.equal(sb(torch.ones(3)), torch.ones(3))
