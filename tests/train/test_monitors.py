import math

import pytest
import torch

from descend.train import CALLBACKS, Trainer
from descend.train.monitors import (ActivationMonitor, GradientNormMonitor, HyperparameterMonitor,
                                    UpdateRatioMonitor, default_monitors, plot_activation_histograms,
                                    plot_monitors, save_monitors)


def _data(n=64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    return x, (x[:, 0] > 0).long()


def _mlp(act=torch.nn.ReLU):
    return torch.nn.Sequential(torch.nn.Linear(4, 6), act(), torch.nn.Linear(6, 2))


def test_registered():
    for name in ("grad_norm_monitor", "activation_monitor", "update_ratio_monitor", "hyperparameter_monitor"):
        assert name in CALLBACKS


def test_dead_unit_fraction_of_units_dead_by_construction():
    model = _mlp()
    with torch.no_grad():
        model[0].bias[:3] = -100.0  # units 0..2 can never be positive for |x| small
        model[0].weight[:3] = 0.01
        model[0].bias[3:] = 100.0   # units 3..5 always alive
    mon = ActivationMonitor(interval=1)
    mon.attach(model)
    model(_data()[0])
    stats = mon.detach()
    assert stats["dead/1"] == pytest.approx(0.5)
    assert not model[1]._forward_hooks  # hooks removed


def test_saturation_fraction_by_construction():
    for act, half in ((torch.nn.Tanh, 1), (torch.nn.Sigmoid, 1)):
        model = _mlp(act)
        with torch.no_grad():
            model[0].weight.zero_()
            model[0].bias.copy_(torch.tensor([50.0, -50.0, 50.0, 0.0, 0.0, 0.0]))
        mon = ActivationMonitor(interval=1)
        mon.attach(model)
        model(_data()[0])
        assert mon.detach()["saturated/1"] == pytest.approx(0.5)


def test_monitors_in_a_trainer_run_match_direct_computation():
    torch.manual_seed(0)
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    mons = default_monitors(interval=3)
    t = Trainer(model, opt, callbacks=mons, batch_size=16, grad_norm=True)
    t.fit(_data(), epochs=3)  # 4 steps per epoch -> steps 0..11 -> sampled 0, 3, 6, 9
    g, a, u, h = mons
    assert g.history["step"] == [0, 3, 6, 9]
    # global norm at sampled steps equals the trainer's own per-step grad norm
    for s, v in zip(g.history["step"], g.history["grad_norm"]):
        assert v == pytest.approx(t.history.steps["grad_norm"][s], rel=1e-5)
    # global norm is the root of the sum of squared per-parameter norms
    per = [k for k in g.history if k.startswith("grad_norm/")]
    assert len(per) == 4
    for i in range(4):
        assert math.sqrt(sum(g.history[k][i] ** 2 for k in per)) == pytest.approx(g.history["grad_norm"][i], rel=1e-5)
    assert a.history["step"] == [0, 3, 6, 9] and "dead/1" in a.history and a.histograms
    assert len(a.histograms[0]["counts"]) == 30 and sum(a.histograms[0]["counts"]) == 16 * 6
    assert u.history["step"] == [0, 3, 6, 9] and all(v > 0 for v in u.history["update_ratio/0.weight"])
    assert h.history["lr/0"] == [0.1] * 4 and h.history["momentum/0"] == [0.9] * 4
    assert set(t.history.monitors) == {"grad_norm", "activations", "update_ratio", "hyperparameters"}
    assert not model[1]._forward_hooks


def test_update_ratio_matches_sgd_formula():
    # plain SGD: w' - w = -lr g, so ratio = lr |g| / |w|
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    x, y = _data(16)
    w0 = model.weight.detach().clone()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    (gw, _) = torch.autograd.grad(loss, [model.weight, model.bias])
    mon = UpdateRatioMonitor(interval=1)
    t = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.5), callbacks=[mon], batch_size=16, shuffle=False)
    t.fit((x, y), epochs=1)
    assert mon.history["update_ratio/weight"][0] == pytest.approx(float(0.5 * gw.norm() / w0.norm()), rel=1e-5)


def test_nothing_recorded_between_samples_and_plot(tmp_path):
    mons = [GradientNormMonitor(interval=100), ActivationMonitor(interval=100), HyperparameterMonitor(interval=100)]
    model = _mlp()
    t = Trainer(model, torch.optim.Adam(model.parameters()), callbacks=mons, batch_size=8)
    t.fit(_data(), epochs=2)  # 16 steps: only step 0 sampled
    assert all(m.history["step"] == [0] for m in mons)
    assert mons[2].history["momentum/0"] == [0.9]
    assert plot_monitors(t.history.monitors, tmp_path / "m.png")
    assert plot_activation_histograms(mons[1], tmp_path / "h.png")
    import json
    saved = json.loads(open(save_monitors(t, tmp_path)).read())
    assert saved["grad_norm"]["step"] == [0]
    with pytest.raises(ValueError, match="`step` must be a sampled step"):
        plot_activation_histograms(mons[1], tmp_path / "h.png", step=5)


def test_validation():
    with pytest.raises(ValueError, match="`interval` must be an integer >= 1"):
        GradientNormMonitor(interval=0)
    with pytest.raises(ValueError, match="`saturation` must be"):
        ActivationMonitor(saturation=2.0)


def test_light_monitors_are_the_recipe_default_and_importing_descend_train_registers_them():
    import subprocess
    import sys

    from descend.train.monitors import light_monitors
    mons = light_monitors(7)
    assert [type(m) for m in mons] == [GradientNormMonitor, ActivationMonitor]
    assert [m.interval for m in mons] == [7, 7] and mons[1].bins == 0
    code = ("import descend.train as t; "
            "assert {'grad_norm_monitor', 'activation_monitor', 'update_ratio_monitor', "
            "'hyperparameter_monitor'} <= set(t.CALLBACKS.names())")
    subprocess.run([sys.executable, "-c", code], check=True)
    torch.manual_seed(0)
    model = _mlp()
    t = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), callbacks=light_monitors(2),
                batch_size=16, progress=False)
    t.fit(_data(), epochs=1)
    assert t.history.monitors["grad_norm"]["step"] == [0, 2]
    assert t.history.monitors["activations"]["step"] == [0, 2] and t.callbacks[1].histograms == []
