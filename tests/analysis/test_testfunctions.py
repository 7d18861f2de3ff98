import pytest
import torch

from descend.analysis.testfunctions import TEST_FUNCTIONS, parse_expression


@pytest.mark.parametrize("name", TEST_FUNCTIONS.names())
def test_minima_are_stationary_with_zero_value(name):
    f = TEST_FUNCTIONS.create(name)
    for m in f.minima:
        w = torch.tensor(m, dtype=torch.float64, requires_grad=True)
        val = f(w)
        (g,) = torch.autograd.grad(val, w)
        assert float(val.detach()) == pytest.approx(0.0, abs=1e-9)
        assert g.abs().max() < 1e-4


def test_formulas_by_hand():
    w = torch.tensor([0.5, -1.0], dtype=torch.float64)
    x, y = 0.5, -1.0
    assert float(TEST_FUNCTIONS.create("rosenbrock")(w)) == pytest.approx((1 - x) ** 2 + 100 * (y - x * x) ** 2)
    assert float(TEST_FUNCTIONS.create("saddle")(w)) == pytest.approx(x * x - y * y)
    assert float(TEST_FUNCTIONS.create("quadratic")(w)) == pytest.approx(0.5 * (x * x + 20 * y * y))
    assert float(TEST_FUNCTIONS.create("himmelblau")(w)) == pytest.approx((x * x + y - 11) ** 2 + (x + y * y - 7) ** 2)
    assert float(TEST_FUNCTIONS.create("beale")(w)) == pytest.approx(
        (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2)
    X, Y, Z = TEST_FUNCTIONS.create("saddle").grid(5)
    assert torch.allclose(Z, X**2 - Y**2)


def test_parse_expression_values_and_gradients():
    f = parse_expression("x**2 + 3*sin(y) - -exp(0)/2 + sqrt(abs(x)) * tanh(y) + log(e) * pi")
    x = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    y = torch.tensor(0.5, dtype=torch.float64)
    import math
    ref = 4 + 3 * math.sin(0.5) + 0.5 + math.sqrt(2) * math.tanh(0.5) + math.pi
    v = f(x, y)
    assert float(v.detach()) == pytest.approx(ref)
    v.backward()
    assert float(x.grad) == pytest.approx(4 + 0.5 / math.sqrt(2) * math.tanh(0.5))
    c = parse_expression("3")
    assert c(torch.zeros(2, 2), torch.zeros(2, 2)).shape == (2, 2)


@pytest.mark.parametrize("bad, msg", [
    ("__import__('os').system('ls')", "may call only"),
    ("x.real", "may contain only"),
    ("z + 1", "unknown name 'z'"),
    ("[x for x in y]", "may contain only"),
    ("x +", "not a valid formula"),
    ("'a'", "only real numbers"),
    ("x // 2", "may contain only"),
    ("sin(x, y)", "exactly one argument"),
    ("", "non-empty"),
    ("x" * 600, "at most 500"),
])
def test_parse_expression_rejects(bad, msg):
    with pytest.raises(ValueError, match=msg):
        parse_expression(bad)


def test_parse_expression_type():
    with pytest.raises(TypeError, match="`expression` must be a string"):
        parse_expression(3)
