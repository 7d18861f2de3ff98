"""The playground with the second-order methods and SAM: they race (equal to the library's
own trajectories), the layer-wise methods are offered to the network trainer only, and the
trainer drives closure-based optimizers."""

import pytest
import torch

from descend import optim
from descend.analysis.testfunctions import TEST_FUNCTIONS

RACERS = ["newton", "newton_saddle_free", "cg", "bfgs", "lbfgs", "sam"]


def library_path(name, hyper, start, steps, fn):
    w = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    opt = optim.create(name, [w], **hyper)
    path = [w.detach().clone()]
    for _ in range(steps):
        def closure():
            opt.zero_grad()
            loss = fn(w[0], w[1])
            loss.backward()
            return loss
        opt.step(closure)
        path.append(w.detach().clone())
    return torch.stack(path)


def test_options_say_which_optimizers_race(client):
    o = client.get("/api/options")[1]
    race = {x["name"]: x["race"] for x in o["optimizers"]}
    assert set(race) == set(optim.OPTIMIZERS.names())
    assert {n for n, r in race.items() if not r} == set(optim.LAYERWISE)
    assert all(race[n] for n in RACERS)


def test_second_order_racers_equal_the_library(client):
    tf = TEST_FUNCTIONS.create("rosenbrock")
    start, steps = [-1.5, 2.0], 30
    racers = [{"name": "newton", "hyper": {"damping": "0.1"}},
              {"name": "newton_saddle_free", "hyper": {}},
              {"name": "cg", "hyper": {"max_iter": 1}},
              {"name": "bfgs", "hyper": {"max_iter": 1}},
              {"name": "lbfgs", "hyper": {"max_iter": 1, "max_eval": 5, "line_search_fn": "strong_wolfe"}},
              {"name": "sam", "hyper": {"lr": 1e-3, "rho": 0.05}}]
    status, r = client.post("/api/race", {"surface": "rosenbrock", "start": start, "steps": steps,
                                          "optimizers": racers})
    assert status == 200, r
    for racer, run in zip(racers, r["runs"]):
        hyper = {k: (float(v) if k == "damping" else v) for k, v in racer["hyper"].items()}
        want = library_path(racer["name"], hyper, start, steps, tf.fn)
        got = torch.tensor([run["x"], run["y"]], dtype=torch.float64).T
        assert torch.equal(got, want), racer["name"]
        assert run["stopped"] is None
    bfgs = r["runs"][3]
    assert bfgs["loss"][-1] < 1e-2 * bfgs["loss"][0]


def test_newton_reaches_the_quadratic_minimum_in_one_step(client):
    status, r = client.post("/api/race", {"surface": "quadratic", "start": [-3.5, 1.5], "steps": 1,
                                          "optimizers": [{"name": "newton", "hyper": {}}]})
    assert status == 200, r
    run = r["runs"][0]
    assert run["x"][1] == pytest.approx(0.0, abs=1e-12) and run["y"][1] == pytest.approx(0.0, abs=1e-12)
    assert run["distance"][1] == pytest.approx(0.0, abs=1e-12)


def test_layer_wise_methods_are_refused_in_the_race(client):
    status, r = client.post("/api/race", {"surface": "quadratic", "steps": 3,
                                          "optimizers": [{"name": "kfac", "hyper": {}}]})
    assert status == 400 and "Received: optimizer='kfac'" in r["error"]


@pytest.mark.parametrize("name,hyper", [
    ("kfac", {"lr": 0.05, "damping": 0.01}), ("shampoo", {"lr": 0.05}), ("lbfgs", {"lr": 0.5, "max_iter": 2}),
    ("sam", {"lr": 0.2, "momentum": 0.9}), ("hessian_free", {"damping": 1.0}), ("lamb", {"lr": 0.02}),
])
def test_the_network_trainer_runs_closure_based_and_layer_wise_methods(client, name, hyper):
    config = {"dataset": "circles", "n": 80, "seed": 1, "hidden": [8], "activation": "tanh",
              "optimizer": name, "hyper": hyper, "batch_size": 20, "grid": 6}
    status, c = client.post("/api/trainer", config)
    assert status == 200, c
    status, s = client.post(f"/api/trainer/{c['session']}/step", {"n": 30})
    assert status == 200 and s["steps"] == 30 and s["stopped"] is None, s
    assert s["history"][-1]["train_loss"] < c["history"][0]["train_loss"]
    assert len(s["stats"]["activations"]) == 1   # the first evaluation's activations only
