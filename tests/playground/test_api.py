"""The playground's HTTP API: routes, numbers equal to the library's, validation, sessions."""

import math
import re
import threading

import pytest
import torch
from torch.nn import functional as F

from descend import init, optim, schedules
from descend.analysis.testfunctions import TEST_FUNCTIONS
from descend.data import load
from descend.nn import ACTIVATIONS, MODELS, ResidualBlock
from descend.playground.trainer import TrainerRun

from descend.playground.server import url_of
from playground_client import Client, start_server


# ---------------------------------------------------------------- page and options

def test_page_and_static_files_are_self_contained(client):
    status, html = client.get("/")
    assert status == 200 and "<canvas" in html
    for name in ("app.js", "style.css"):
        status, text = client.get(f"/static/{name}")
        assert status == 200 and len(text) > 100
    for text in (html, client.get("/static/app.js")[1], client.get("/static/style.css")[1]):
        # works offline: nothing is fetched from another host
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
        assert "@import" not in text and "url(http" not in text
    assert client.get("/static/../server.py")[0] == 404
    assert client.get("/static/nope.js")[0] == 404


def test_options_list_the_registries(client):
    status, o = client.get("/api/options")
    assert status == 200
    assert [x["name"] for x in o["optimizers"]] == optim.OPTIMIZERS.names()
    assert [s["name"] for s in o["surfaces"]] == TEST_FUNCTIONS.names()
    sgd = next(x for x in o["optimizers"] if x["name"] == "nesterov")
    hyper = {h["name"]: h["default"] for h in sgd["hyper"]}
    assert hyper["momentum"] == 0.9 and hyper["nesterov"] is True  # the registry's preset
    assert {"none", "cosine", "exponential"} <= {s["name"] for s in o["schedules"]}


# ---------------------------------------------------------------- surfaces and races

def test_surface_grid_is_the_test_function(client):
    status, g = client.post("/api/surface", {"surface": "rosenbrock", "grid": 20})
    assert status == 200
    tf = TEST_FUNCTIONS.create("rosenbrock")
    x0, x1, y0, y1 = tf.bounds
    assert g["bounds"] == list(tf.bounds) and g["minima"] == [[1.0, 1.0]]
    xs, ys = torch.linspace(x0, x1, 20, dtype=torch.float64), torch.linspace(y0, y1, 20, dtype=torch.float64)
    z = torch.stack([tf.fn(xs, y.expand(20)) for y in ys])  # row i = i-th y
    shade = torch.log(z - z.min() + 1e-3).flatten()
    assert torch.allclose(torch.tensor(g["shade"], dtype=torch.float64), shade, atol=1e-5)
    assert g["contours"] and all(len(p) > 1 for c in g["contours"] for p in c["paths"])


def test_race_sgd_follows_the_formula(client):
    """Plain GD on 0.5 (x^2 + 20 y^2): w <- w - lr (x, 20 y), written out step by step."""
    lr, steps = 0.04, 25
    body = {"surface": "quadratic", "start": [-3.5, 1.5], "steps": steps,
            "optimizers": [{"name": "sgd", "hyper": {"lr": str(lr)}}]}
    status, r = client.post("/api/race", body)
    assert status == 200, r
    run = r["runs"][0]
    x, y = -3.5, 1.5
    for k in range(steps + 1):
        assert run["x"][k] == pytest.approx(x, rel=1e-12, abs=1e-15)
        assert run["y"][k] == pytest.approx(y, rel=1e-12, abs=1e-15)
        assert run["loss"][k] == pytest.approx(0.5 * (x * x + 20 * y * y), rel=1e-12, abs=1e-15)
        assert run["distance"][k] == pytest.approx(math.hypot(x, y), rel=1e-12)
        x, y = x - lr * x, y - lr * 20 * y
    assert run["stopped"] is None and run["lr"] == [lr] * steps


def _library_path(name, hyper, start, steps, fn, schedule=None):
    w = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    opt = optim.create(name, [w], **hyper)
    sch = schedules.Scheduler(opt, {"lr": schedule}) if schedule else None
    path = [w.detach().clone()]
    for _ in range(steps):
        def closure():
            opt.zero_grad()
            loss = fn(w[0], w[1])
            loss.backward()
            return loss
        opt.step(closure)
        if sch:
            sch.step()
        path.append(w.detach().clone())
    return torch.stack(path)


def test_race_equals_the_library_and_torch(client):
    tf = TEST_FUNCTIONS.create("rosenbrock")
    start, steps = [-1.5, 2.5], 60
    racers = [
        {"name": "adam", "hyper": {"lr": 0.05, "betas": "0.9, 0.99"}},
        {"name": "nesterov", "hyper": {"lr": "1e-4"}},
        {"name": "sgd", "hyper": {"lr": 1e-4, "momentum": 0.9},
         "schedule": {"name": "cosine", "hyper": {"total": "60", "e_min": "1e-5"}}},
    ]
    status, r = client.post("/api/race", {"surface": "rosenbrock", "start": start,
                                          "steps": steps, "optimizers": racers})
    assert status == 200, r
    got = [torch.tensor([run["x"], run["y"]], dtype=torch.float64).T for run in r["runs"]]
    want = [
        _library_path("adam", {"lr": 0.05, "betas": (0.9, 0.99)}, start, steps, tf.fn),
        _library_path("nesterov", {"lr": 1e-4}, start, steps, tf.fn),
        _library_path("sgd", {"lr": 1e-4, "momentum": 0.9}, start, steps, tf.fn,
                      schedules.cosine(1e-4, total=60, e_min=1e-5)),
    ]
    for g, w in zip(got, want):
        assert torch.equal(g, w)
    # and the reference implementation agrees with the library's Adam
    w = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    ref = torch.optim.Adam([w], lr=0.05, betas=(0.9, 0.99))
    for k in range(steps):
        ref.zero_grad()
        tf.fn(w[0], w[1]).backward()
        ref.step()
    assert torch.allclose(got[0][-1], w.detach(), rtol=1e-12, atol=1e-14)
    lrs = r["runs"][2]["lr"]
    cos = schedules.cosine(1e-4, total=60, e_min=1e-5)
    assert lrs == [cos(k) for k in range(steps)]
    assert lrs[30] == pytest.approx(1e-5 + (1e-4 - 1e-5) * (1 + math.cos(math.pi * 30 / 60)) / 2)


def test_expression_surface_and_divergence(client):
    status, r = client.post("/api/race", {
        "surface": "expression", "expression": "x^2 + 2*y^2", "start": [1, 1], "steps": 40,
        "optimizers": [{"name": "sgd", "hyper": {"lr": 0.1}},
                       {"name": "sgd", "hyper": {"lr": "1e300"}}]})
    assert status == 200, r
    ok, bad = r["runs"]
    assert ok["stopped"] is None and ok["x"][1] == pytest.approx(0.8) and ok["distance"] is None
    assert bad["stopped"].startswith("diverged at step 1")
    assert len(bad["x"]) == 1  # the diverged point is not drawn


BAD_REQUESTS = [
    ({"optimizers": [{"name": "sgd", "hyper": {"lr": "nan"}}]}, "`lr` must be finite. Received: lr=nan"),
    ({"optimizers": [{"name": "sgd", "hyper": {"lr": "inf"}}]}, "`lr` must be finite. Received: lr=inf"),
    ({"optimizers": [{"name": "sgd", "hyper": {"lr": -1}}]}, "`lr` must be >= 0"),
    ({"optimizers": [{"name": "adam", "hyper": {"betas": "0.9, 1.5"}}]}, "`betas`"),
    ({"optimizers": [{"name": "adamm"}]}, "Received: optimizer='adamm'"),
    ({"optimizers": [{"name": "sgd", "hyper": {"lr": 0.1, "speed": 3}}]}, "speed"),
    ({"optimizers": [{"name": "sgd", "hyper": {"lr": 0.1}, "schedule": {"name": "cosine"}}]}, "total"),
    ({"optimizers": []}, "`optimizers` must be a list of 1 to 8"),
    ({"optimizers": [{"name": "sgd"}], "steps": 10**6}, "`steps` must be an integer >= 1 and <= 2000. Received: steps=1000000"),
    ({"optimizers": [{"name": "sgd"}], "start": [0, "nan"]}, "`start[1]` must be finite"),
    ({"optimizers": [{"name": "sgd"}], "surface": "moon"}, "Received: surface='moon'"),
    ({"optimizers": [{"name": "sgd"}], "colour": "red"}, "colour"),
    ({"optimizers": [{"name": "sgd"}], "surface": "expression", "expression": "__import__('os')"},
     "`expression`"),
    ({"optimizers": [{"name": "sgd"}], "surface": "expression", "expression": "x.real"}, "`expression`"),
    ({"optimizers": [{"name": "sgd"}], "surface": "expression", "expression": "x +"}, "`expression`"),
    ({"optimizers": [{"name": "sgd"}], "surface": "expression", "expression": "x" * 600}, "`expression`"),
]


@pytest.mark.parametrize("body,message", BAD_REQUESTS)
def test_bad_race_requests_get_400_naming_the_field(client, body, message):
    status, r = client.post("/api/race", {"surface": "quadratic", "steps": 5, **body})
    assert status == 400
    assert message in r["error"]


def test_protocol_errors(client):
    assert client.post("/api/race", raw=b"{not json")[0] == 400
    assert client.post("/api/race", raw=b"[1, 2]")[0] == 400
    status, r = client.post("/api/race", raw=b"[" * 100_000)  # nested too deeply for json
    assert status == 400 and "valid JSON" in r["error"]
    status, r = client.post("/api/race", {}, headers={"Content-Type": "text/plain"})
    assert status == 415 and "Content-Type" in r["error"]
    status, r = client.get("/api/options", headers={"Host": "evil.example:80"})
    assert status == 403
    assert client.get("/api/nothing")[0] == 404
    status, r = client.post("/api/trainer/0123abcd/step", {"n": 1})
    assert status == 404 and "session" in r["error"]


# ---------------------------------------------------------------- network trainer

CONFIG = {"dataset": "circles", "classes": 2, "n": 60, "noise": 0.1, "test_fraction": 0.5, "seed": 3,
          "hidden": [8, 8], "activation": "tanh", "init": "xavier_uniform", "norm": "none",
          "residual": False, "dropout": 0.0, "l1": 0.0, "l2": 0.001, "optimizer": "sgd",
          "hyper": {"lr": 0.2, "momentum": 0.9}, "batch_size": 10, "grid": 12}


def by_hand(config, steps):
    """The trainer's loop, recomputed with descend.data, descend.nn.MODELS, descend.init
    and descend.optim directly: (metrics, model, per-Linear gradient norms, activation stds)."""
    d = load("toy2d", kind=config["dataset"], n_samples=config["n"], noise=config["noise"],
             classes=config["classes"], data_seed=config["seed"],
             test_fraction=config["test_fraction"], val_fraction=0.0)
    (xtr, ytr), (xte, yte) = d.train.tensors, d.test.tensors
    torch.manual_seed(config["seed"])
    model = MODELS.create("mlp", input_shape=(2,), num_classes=config["classes"], hidden=config["hidden"],
                          activation=config["activation"],
                          norm=None if config["norm"] == "none" else config["norm"],
                          dropout=config["dropout"], residual=config["residual"])
    gen = torch.Generator().manual_seed(config["seed"])
    if config["init"] == "lsuv":
        init.lsuv(model, xtr, generator=gen)
    else:
        init.apply(model, config["init"], generator=gen)
    hyper = {k: tuple(v) if isinstance(v, list) else v for k, v in config["hyper"].items()}
    opt = optim.create(config["optimizer"], model.parameters(), **hyper)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    acts = {}
    not_act = (torch.nn.Linear, torch.nn.Dropout, torch.nn.modules.batchnorm._NormBase, torch.nn.LayerNorm)
    hidden = [b for b in model if isinstance(b, (torch.nn.Sequential, ResidualBlock))]
    for i, b in enumerate(hidden):  # the activation after each hidden layer (after the sum if residual)
        act = b.post if isinstance(b, ResidualBlock) else next(m for m in b if not isinstance(m, not_act))
        act.register_forward_hook(lambda m, i_, o, i=i: acts.__setitem__(i, o.detach()))
    gen = torch.Generator().manual_seed(config["seed"])
    order, bs = [], config["batch_size"]
    model.train()
    for _ in range(steps):
        if len(order) < bs:
            order = torch.randperm(len(xtr), generator=gen).tolist()
        idx, order = order[:bs], order[bs:]
        opt.zero_grad()
        penalty = sum(config["l2"] * m.weight.pow(2).sum() for m in linears)
        (F.cross_entropy(model(xtr[idx]), ytr[idx]) + penalty).backward()
        opt.step()
    act_std = [float(acts[i].std(unbiased=False)) for i in sorted(acts)] if steps else []
    grads = [float(m.weight.grad.norm()) for m in linears] if steps else []
    model.eval()
    with torch.no_grad():
        metrics = {}
        for split, x, y in (("train", xtr, ytr), ("test", xte, yte)):
            logits = model(x)
            metrics[f"{split}_loss"] = float(F.cross_entropy(logits, y))
            metrics[f"{split}_acc"] = float((logits.argmax(1) == y).float().mean())
    return metrics, model, grads, act_std


@pytest.mark.parametrize("change", [
    {},
    {"dataset": "spirals", "classes": 3, "activation": "relu", "init": "lsuv", "norm": "batch",
     "hidden": [16, 8], "optimizer": "adam", "hyper": {"lr": 0.01}},
    {"dataset": "blobs", "classes": 4, "activation": "relu", "init": "fixup", "residual": True,
     "hidden": [8, 8, 8]},
])
def test_trainer_numbers_equal_the_library(client, change):
    config = {**CONFIG, **change}
    status, c = client.post("/api/trainer", config)
    assert status == 200, c
    assert c["steps"] == 0 and len(c["data"]["train"]["x"]) == 30 and c["classes"] == config["classes"]
    assert sorted(set(c["data"]["train"]["y"])) == list(range(config["classes"]))
    start, *_ = by_hand(config, 0)
    assert c["history"][0]["train_loss"] == pytest.approx(start["train_loss"], rel=1e-6)  # the init
    sid = c["session"]
    status, s = client.post(f"/api/trainer/{sid}/step", {"n": 7})
    status, s = client.post(f"/api/trainer/{sid}/step", {"n": 8, "since": 2})
    assert status == 200 and s["steps"] == 15 and s["history_from"] == 2
    metrics, model, grads, act_std = by_hand(config, 15)
    last = s["history"][-1]
    assert last["step"] == 15
    for key, value in metrics.items():
        assert last[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key
    assert [g["norm"] for g in s["stats"]["gradients"]] == pytest.approx(grads, rel=1e-5)
    assert [a["std"] for a in s["stats"]["activations"]] == pytest.approx(act_std, rel=1e-5)
    assert len(s["stats"]["activations"]) == len(config["hidden"])
    # decision boundary: the K class probabilities of the same model on the grid
    b = s["bounds"][1]
    g = torch.linspace(-b, b, 12)
    yy, xx = torch.meshgrid(g, g, indexing="ij")
    with torch.no_grad():
        p = torch.softmax(model(torch.stack([xx.flatten(), yy.flatten()], 1)), 1).flatten()
    assert torch.allclose(torch.tensor(s["boundary"]), p, atol=2e-5)
    # reset: back to the creation state
    status, z = client.post(f"/api/trainer/{sid}/reset", {})
    assert z["steps"] == 0 and z["history"] == c["history"] and z["boundary"] == c["boundary"]
    assert client.get(f"/api/trainer/{sid}?since=0")[1]["steps"] == 0


def test_trainer_offers_the_library_models_and_initializers(client):
    o = client.get("/api/options")[1]
    assert o["activations"] == ACTIVATIONS.names()
    offered = set(o["inits"])
    assert {"lsuv", "fixup"} <= offered
    for name in init.INITIALIZERS.names():  # every scheme, once: an alias shares a function
        assert name in offered or any(init.INITIALIZERS.get(name) is init.INITIALIZERS.get(n)
                                      for n in offered - {"lsuv", "fixup"})
    assert len(offered - {"lsuv", "fixup"}) == len({id(init.INITIALIZERS.get(n)) for n in init.INITIALIZERS.names()})
    assert o["max_classes"]["blobs"] == o["max_classes"]["spirals"] == 8 and o["max_classes"]["xor"] == 2
    assert o["backends"]["models"].startswith("descend.nn.MODELS") and o["backends"]["init"] == "descend.init"
    assert o["backends"]["optimizers"] == "descend.optim"


def test_every_init_and_activation_trains():
    """Each offered scheme and activation builds, steps and reports per-layer statistics."""
    from descend.playground.api import options, trainer_config

    o = options()
    cases = [{"init": s, "residual": s == "fixup"} for s in o["inits"]]
    cases += [{"activation": a} for a in o["activations"]] + [{"norm": n} for n in o["norms"]]
    for case in cases:
        run = TrainerRun(trainer_config({**CONFIG, "n": 20, "grid": 5, **case}))
        s = run.step(2)
        assert s["stopped"] is None and s["steps"] == 2, case
        assert len(s["stats"]["activations"]) == 2 and len(s["stats"]["gradients"]) >= 3, case
    # sparse: exactly min(15, fan_in) non-zero incoming weights per unit, in every layer
    run = TrainerRun(trainer_config({**CONFIG, "init": "sparse", "hidden": [32, 20]}))
    for m in run.model.modules():
        if isinstance(m, torch.nn.Linear):
            assert ((m.weight != 0).sum(1) == min(15, m.in_features)).all()


@pytest.mark.parametrize("change,message", [
    ({"hidden": [8, 999]}, "`hidden[1]` must be an integer >= 1 and <= 64. Received: hidden[1]=999"),
    ({"dropout": 1.0}, "`dropout` must be"),
    ({"l2": "nan"}, "`l2` must be finite"),
    ({"hyper": {"lr": "nan"}}, "`lr` must be finite"),
    ({"optimizer": "sgx"}, "Received: optimizer='sgx'"),
    ({"dataset": "moon"}, "Received: dataset='moon'"),
    ({"activation": "swish"}, "Received: activation='swish'"),
    ({"layers": 3}, "layers"),
    ({"dataset": "circles", "classes": 3}, "Received: classes=3"),
    ({"dataset": "blobs", "classes": 9}, "`classes` must be an integer >= 2 and <= 8"),
    ({"init": "fixup"}, "init 'fixup': `model` must be a residual network"),
    ({"init": "kaiming"}, "Received: init='kaiming'"),
    ({"activation": "maxout", "residual": True}, "Received: activation='maxout'"),
    ({"residual": "maybe"}, "`residual`"),
])
def test_bad_trainer_settings(client, change, message):
    status, r = client.post("/api/trainer", {**CONFIG, **change})
    assert status == 400 and message in r["error"], r


def test_trainer_step_limits_and_divergence(client):
    status, c = client.post("/api/trainer", {**CONFIG, "hyper": {"lr": 1e38}})
    sid = c["session"]
    assert client.post(f"/api/trainer/{sid}/step", {"n": 501})[0] == 400
    assert client.post(f"/api/trainer/{sid}/step", {"n": 0})[0] == 400
    status, s = client.post(f"/api/trainer/{sid}/step", {"n": 50})
    assert status == 200 and s["stopped"].startswith("diverged at step")
    stopped_at = s["steps"]
    status, s = client.post(f"/api/trainer/{sid}/step", {"n": 5})
    assert s["steps"] == stopped_at  # a stopped run stays stopped until reset
    assert all(math.isfinite(v) for v in s["boundary"])


def test_two_sessions_in_parallel_equal_each_alone():
    srv = start_server(max_sessions=2)
    try:
        client = Client(url_of(srv))
        configs = [{**CONFIG, "dropout": 0.3, "seed": 1},
                   {**CONFIG, "dataset": "xor", "hyper": {"lr": 0.05}, "dropout": 0.2, "seed": 2}]
        sids = [client.post("/api/trainer", c)[1]["session"] for c in configs]
        results = {}

        def drive(i):
            for _ in range(6):
                status, s = client.post(f"/api/trainer/{sids[i]}/step", {"n": 5})
                assert status == 200
            results[i] = s

        threads = [threading.Thread(target=drive, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        from descend.playground.api import trainer_config
        for i, c in enumerate(configs):
            alone = TrainerRun(trainer_config(c))
            for _ in range(6):
                alone.step(5)
            assert results[i]["history"] == alone.history
            assert results[i]["boundary"] == alone.boundary()
        # bounded: a third run drops the least recently used one
        assert client.get(f"/api/trainer/{sids[1]}")[0] == 200  # now sids[0] is the oldest
        client.post("/api/trainer", CONFIG)
        assert len(srv.api.store) == 2
        assert client.get(f"/api/trainer/{sids[0]}")[0] == 404
    finally:
        srv.shutdown()
        srv.server_close()
