"""Any optimizer (and torch LR scheduler) in a recipe, by import path, checked against its signature."""

import textwrap

import pytest
import torch

from descend.experiments import recipe as recipes
from descend.experiments import runner
from descend.experiments.components import check_arguments, create_optimizer, resolve
from descend.experiments.recipe import RecipeError

BASE = {"name": "c", "data": {"name": "digits"}, "model": {"name": "mlp", "hidden": [8]},
        "optimizer": {"name": "sgd", "lr": 0.1}, "epochs": 1, "batch_size": 256, "monitors": False}


def build(variant):
    r = recipes.load({**BASE, "variants": [{"name": "v", **variant}]})
    return runner.build(r.runs()[0], 0)


def test_torch_optimizer_by_import_path_trains():
    b = build({"optimizer": {"name": "torch.optim.NAdam", "lr": 0.01, "momentum_decay": 0.004}})
    assert type(b.optimizer) is torch.optim.NAdam and b.optimizer.defaults["lr"] == 0.01
    b2 = build({"optimizer": {"name": "torch.optim:RAdam", "lr": 0.01}})
    assert type(b2.optimizer) is torch.optim.RAdam
    res = runner.train_one(recipes.load({**BASE, "optimizer": {"name": "torch.optim.NAdam", "lr": 0.01}}).runs()[0], 0)
    assert res["final_test_acc"] is not None and res["steps_run"] == 6


@pytest.mark.parametrize("opt, message", [
    ({"name": "torch.optim.NAdam", "lrate": 0.1},
     "variants[0].optimizer.lrate: `lrate` must be an argument of torch.optim.nadam.NAdam (accepted: "),
    ({"name": "torch.optim.NAdam", "lr": -1.0},
     "variants[0].optimizer.lr: `lr` is invalid for torch.optim.nadam.NAdam: Invalid learning rate: -1.0. Received: lr=-1.0"),
    ({"name": "not_a_package_xyz:Opt"}, "variants[0].optimizer: `optimizer` must be importable: No module named"),
    ({"name": "torch.optim:NAdamm"}, "it has no 'NAdamm'). Did you mean torch.optim:NAdam?"),
    ({"name": "torch.nn.Linear"}, "`optimizer` must be a subclass of torch.optim.optimizer.Optimizer. "
                                   "Received: optimizer='torch.nn.Linear'"),
])
def test_clear_errors_name_the_field(opt, message):
    with pytest.raises(RecipeError) as e:
        build({"optimizer": opt})
    assert message in str(e.value) and "\n" not in str(e.value)


def test_own_optimizer_from_a_module(tmp_path, monkeypatch):
    (tmp_path / "my_opts.py").write_text(textwrap.dedent('''
        import torch
        class Halved(torch.optim.SGD):
            def __init__(self, params, lr, scale=0.5):
                super().__init__(params, lr=lr * scale)
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    b = build({"optimizer": {"name": "my_opts:Halved", "lr": 0.2}})
    assert b.optimizer.defaults["lr"] == pytest.approx(0.1)
    with pytest.raises(RecipeError, match="`lr` is required by my_opts.Halved and missing"):
        build({"optimizer": {"name": "my_opts:Halved"}})


def test_pytorch_optimizer_lion_when_installed():
    pytest.importorskip("pytorch_optimizer", reason="optional extra 'contenders': pip install pytorch-optimizer")
    b = build({"optimizer": {"name": "pytorch_optimizer:Lion", "lr": 1.0e-4}})
    assert type(b.optimizer).__name__ == "Lion"


def test_torch_lr_scheduler_by_import_path():
    r = recipes.load({**BASE, "epochs": 2, "schedule_unit": "epoch",
                      "schedule": {"lr": {"name": "torch.optim.lr_scheduler.StepLR", "step_size": 1, "gamma": 0.5}}})
    res = runner.train_one(r.runs()[0], 0)
    assert res["epochs"]["lr"] == [pytest.approx(0.1), pytest.approx(0.05)]
    with pytest.raises(RecipeError, match=r"schedule.lr.step_sizee: `step_sizee` must be an argument of"):
        runner.build(recipes.load({**BASE, "schedule": {"lr": {"name": "torch.optim.lr_scheduler.StepLR",
                                                                "step_sizee": 1}}}).runs()[0], 0)
    with pytest.raises(RecipeError, match="write it under `lr`"):
        runner.build(recipes.load({**BASE, "schedule": {"momentum": {"name": "torch.optim.lr_scheduler.StepLR",
                                                                      "step_size": 1}}}).runs()[0], 0)


def test_helpers():
    assert resolve("torch.optim.Adam") is torch.optim.Adam
    check_arguments(torch.optim.SGD, {"lr": 0.1, "momentum": 0.9})
    w = [torch.nn.Parameter(torch.zeros(1))]
    assert type(create_optimizer("torch.optim.Adagrad", w, lr=0.1)) is torch.optim.Adagrad
