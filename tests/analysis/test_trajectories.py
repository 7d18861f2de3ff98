import pytest
import torch

from descend.analysis.trajectories import animate_trajectories, plot_trajectories, race, run_trajectory


def test_gd_trajectory_matches_the_update_by_hand():
    path = run_trajectory("quadratic", torch.optim.SGD, steps=5, lr=0.04, start=(2.0, 1.0))
    w = torch.tensor([2.0, 1.0], dtype=torch.float64)
    for t in range(5):
        w = w - 0.04 * torch.tensor([w[0], 20 * w[1]], dtype=torch.float64)
        assert torch.allclose(path[t + 1], w)


def test_momentum_trajectory_matches_the_notes_form():
    # v <- a v - eps g ; w <- w + v  (the notes) equals torch's SGD(momentum) for constant lr
    lr, a = 1e-3, 0.9
    path = run_trajectory("rosenbrock", torch.optim.SGD, steps=20, lr=lr, momentum=a, start=(-1.0, 1.0))
    w = torch.tensor([-1.0, 1.0], dtype=torch.float64)
    v = torch.zeros(2, dtype=torch.float64)
    for t in range(20):
        x, y = w
        g = torch.stack([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])
        v = a * v - lr * g
        w = w + v
        assert torch.allclose(path[t + 1], w, atol=1e-12)


def test_divergence_stops_recording():
    path = run_trajectory("quadratic", torch.optim.SGD, steps=100, lr=1.0)
    assert len(path) < 101 and torch.isfinite(path).all()


def test_saddle_escape_and_known_minima():
    p = run_trajectory("saddle", torch.optim.SGD, steps=60, lr=0.05)
    assert abs(float(p[-1, 1])) > abs(float(p[0, 1])) * 10  # leaves along the negative-curvature axis
    p = run_trajectory("himmelblau", torch.optim.Adam, steps=500, lr=0.05)
    mins = torch.tensor([(3.0, 2.0), (-2.805118, 3.131312), (-3.779310, -3.283186), (3.584428, -1.848126)],
                        dtype=torch.float64)
    assert (mins - p[-1]).norm(dim=1).min() < 1e-2


def test_plots(tmp_path):
    paths = race("beale", {"sgd": (torch.optim.SGD, {"lr": 0.005}), "adam": (torch.optim.Adam, {"lr": 0.05})},
                 steps=20)
    assert plot_trajectories("beale", paths, tmp_path / "b.png").stat().st_size > 0
    gif = animate_trajectories("beale", paths, tmp_path / "b.gif", frames=3)
    assert gif.read_bytes()[:3] == b"GIF"


def test_validation():
    with pytest.raises(ValueError, match="`test_function` must be one of"):
        run_trajectory("nope", torch.optim.SGD)
    with pytest.raises(ValueError, match="`lr` must be >= 0"):
        run_trajectory("quadratic", torch.optim.SGD, lr=-1)


def test_every_registry_optimizer_races_on_every_function():
    from descend.analysis.testfunctions import TEST_FUNCTIONS
    from descend.optim import LAYERWISE, OPTIMIZERS

    for fname in TEST_FUNCTIONS.names():
        paths = race(fname, steps=30)
        assert set(paths) == set(OPTIMIZERS.names()) - LAYERWISE
        for p in paths.values():
            assert p.shape[1] == 2 and len(p) >= 2 and torch.isfinite(p).all()


def test_registry_name_matches_torch_class():
    a = run_trajectory("rosenbrock", "adam", steps=25, lr=0.05)
    b = run_trajectory("rosenbrock", torch.optim.Adam, steps=25, lr=0.05)
    assert torch.allclose(a, b, atol=1e-10)
