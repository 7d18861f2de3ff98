import pytest
import torch
import torch.nn.functional as F

from descend.analysis.connectivity import BezierCurve, barrier, path_losses, train_bezier
from descend.analysis.landscape import (evaluate, filter_normalized_direction, get_vector,
                                        loss_along_line, loss_surface_2d, plot_lines, plot_surface)


def _mlp():
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


def _data(n=64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()


def test_line_on_a_linear_model_is_the_quadratic_by_hand():
    m = torch.nn.Linear(2, 1, bias=False)
    x = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    y = torch.tensor([[1.0], [0.0]])
    a, b = torch.tensor([0.0, 0.0]), torch.tensor([1.0, 1.0])
    alphas, losses = loss_along_line(m, F.mse_loss, (x, y), a, b, points=5, extend=0.5)
    for al, lo in zip(alphas, losses):
        w = (1 - al) * a + al * b
        pred = x @ w.float()
        assert float(lo) == pytest.approx(float(((pred - y[:, 0]) ** 2).mean()), rel=1e-5)
    assert alphas[0] == -0.5 and alphas[-1] == 1.5


def test_line_endpoints_and_model_restored():
    m1, m2 = _mlp(), _mlp()
    data = _data()
    before = get_vector(m1)
    _, losses = loss_along_line(m1, F.cross_entropy, data, m1, m2.state_dict(), points=4)
    assert torch.equal(get_vector(m1), before)
    assert float(losses[0]) == pytest.approx(evaluate(m1, F.cross_entropy, data), rel=1e-6)
    assert float(losses[-1]) == pytest.approx(evaluate(m2, F.cross_entropy, data), rel=1e-6)


def test_filter_normalization():
    m = torch.nn.Sequential(torch.nn.Conv1d(2, 3, 3), torch.nn.BatchNorm1d(3), torch.nn.Flatten(),
                            torch.nn.Linear(3 * 4, 2))
    d = filter_normalized_direction(m, seed=1)
    i = 0
    for p in m.parameters():
        part = d[i:i + p.numel()].view_as(p)
        i += p.numel()
        if p.dim() <= 1:
            assert torch.all(part == 0)
        else:
            assert torch.allclose(part.reshape(p.shape[0], -1).norm(dim=1),
                                  p.detach().reshape(p.shape[0], -1).norm(dim=1), rtol=1e-5)


def test_surface_center_is_the_loss_and_plots(tmp_path):
    m = _mlp()
    data = _data()
    a, b, Z = loss_surface_2d(m, F.cross_entropy, data, points=5, span=0.5)
    assert Z.shape == (5, 5)
    assert float(Z[2, 2]) == pytest.approx(evaluate(m, F.cross_entropy, data), rel=1e-6)
    assert plot_surface(a, b, Z, tmp_path / "s.png").stat().st_size > 0
    assert plot_lines({"l": (a, Z[2])}, tmp_path / "l.png").stat().st_size > 0


def test_bezier_endpoints_equal_the_two_solutions_after_training():
    m1, m2 = _mlp(), _mlp()
    w1, w2 = get_vector(m1), get_vector(m2)
    model = _mlp()
    curve = train_bezier(model, F.cross_entropy, _data(), m1, m2, steps=30, lr=0.05)
    assert torch.equal(curve.point(0.0), w1)
    assert torch.equal(curve.point(1.0), w2)
    assert not torch.allclose(curve.bend, (w1 + w2) / 2)  # the bend moved
    ts, line, bent = path_losses(model, F.cross_entropy, _data(), curve, points=5)
    assert float(line[0]) == pytest.approx(float(bent[0]))
    assert float(line[-1]) == pytest.approx(float(bent[-1]))


def test_bezier_formula_and_training_lowers_the_curve_loss():
    c = BezierCurve(torch.tensor([0.0]), torch.tensor([4.0]), bend=torch.tensor([1.0]))
    t = 0.3
    assert float(c.point(t)) == pytest.approx((1 - t) ** 2 * 0 + 2 * t * (1 - t) * 1 + t * t * 4)
    torch.manual_seed(0)
    data = _data(256)
    ends = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        m = _mlp()
        opt = torch.optim.Adam(m.parameters(), lr=0.03)
        for _ in range(150):
            opt.zero_grad()
            F.cross_entropy(m(data[0]), data[1]).backward()
            opt.step()
        ends.append(m)
    model = _mlp()
    straight = BezierCurve(ends[0], ends[1])
    _, line, _ = path_losses(model, F.cross_entropy, data, straight, points=11)
    curve = train_bezier(model, F.cross_entropy, data, ends[0], ends[1], steps=300, lr=0.02, batch_size=256)
    _, _, bent = path_losses(model, F.cross_entropy, data, curve, points=11)
    assert barrier(bent) < barrier(line)


def test_barrier_validation_and_mismatch():
    assert barrier(torch.tensor([2.0, 1.0, 0.0])) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="`end` must have as many parameters"):
        BezierCurve(torch.zeros(2), torch.zeros(3))
    with pytest.raises(ValueError, match="`points` must be"):
        loss_along_line(_mlp(), F.cross_entropy, _data(), _mlp(), _mlp(), points=1)
