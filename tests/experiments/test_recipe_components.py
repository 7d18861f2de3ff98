"""Every example recipe parses and builds; every monitor, data option and the loss feedback
can be named from a recipe and reaches the Trainer."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from descend.experiments import recipe as recipes
from descend.experiments import runner
from descend.experiments.recipe import RecipeError

ROOT = Path(__file__).resolve().parents[2]
BASE = {"name": "t", "data": {"name": "digits", "val_fraction": 0.1}, "model": {"name": "mlp", "hidden": [8]},
        "optimizer": {"name": "sgd", "lr": 0.1}, "batch_size": 128, "epochs": 2, "seeds": [0]}


def with_data(**data):
    return {**BASE, "data": {**BASE["data"], **data}}


def built(recipe, seed=0):
    run = recipes.load(recipe).runs()[0]
    return run, runner.build(run, seed)


# ---------------------------------------------------------------- examples cannot rot
def _examples():
    """(label, text) of every recipe example: the recipe module's docstring block and the
    ```yaml blocks of docs/main-job.md."""
    doc = recipes.__doc__
    block = doc.split("::\n\n", 1)[1].split("\n\n", 1)[0]
    out = [("recipe.py docstring", "\n".join(line[4:] for line in block.splitlines()))]
    md = (ROOT / "docs" / "main-job.md").read_text()
    for i, text in enumerate(re.findall(r"```yaml\n(.*?)```", md, re.S)):
        out.append((f"docs/main-job.md yaml block {i}", text))
    return out


def test_there_are_examples_to_check():
    labels = [label for label, _ in _examples()]
    assert labels[0] == "recipe.py docstring" and len(labels) >= 2, labels


@pytest.mark.parametrize("label, text", _examples(), ids=[label for label, _ in _examples()])
def test_every_example_recipe_loads_and_builds(label, text):
    from descend.io import load_yaml
    raw = load_yaml(text, text=True)  # as `descend compare` reads a recipe file
    assert isinstance(raw, dict), label
    r = recipes.load(raw)
    runs = r.runs()
    assert runs
    cache = {}
    for run in runs:  # the registries resolve every name and keyword of the example
        b = runner.build(run, run.spec.seeds[0], cache=cache)
        assert b.trainer is not None


def test_bundled_recipes_build():
    for name in recipes.bundled_names():
        cache = {}
        for run in recipes.load(name).runs():
            runner.build(run, run.spec.seeds[0], cache=cache)


# ---------------------------------------------------------------- monitors
MONITORS = ["grad_norm_monitor", "activation_monitor", "update_ratio_monitor", "hyperparameter_monitor"]


def test_importing_descend_train_registers_every_monitor_and_data_callback():
    code = ("import descend.train as t; names = t.CALLBACKS.names(); "
            f"missing = [n for n in {MONITORS + ['augment', 'loss_feedback']!r} if n not in names]; "
            "print(missing); assert not missing, missing")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)


@pytest.mark.parametrize("name", MONITORS)
def test_every_monitor_can_be_named_in_callbacks_and_in_monitors(name):
    from descend.train import CALLBACKS
    cls = type(CALLBACKS.create(name))
    _, b = built({**BASE, "callbacks": [{"name": name, "interval": 3}], "monitors": False})
    mons = [c for c in b.trainer.callbacks if isinstance(c, cls)]
    assert len(mons) == 1 and mons[0].interval == 3
    _, b = built({**BASE, "monitors": [{"name": name, "interval": 4}]})
    mons = [c for c in b.trainer.callbacks if isinstance(c, cls)]
    assert len(mons) == 1 and mons[0].interval == 4


def test_default_monitors_interval_and_off():
    from descend.train.monitors import ActivationMonitor, GradientNormMonitor
    kinds = lambda b: sorted(type(c).__name__ for c in b.trainer.callbacks)  # noqa: E731
    _, b = built(BASE)
    assert kinds(b) == ["ActivationMonitor", "GradientNormMonitor"]
    assert all(c.interval == 20 for c in b.trainer.callbacks)
    assert [c.bins for c in b.trainer.callbacks if isinstance(c, ActivationMonitor)] == [0]
    _, b = built({**BASE, "monitors": 7})
    assert {c.interval for c in b.trainer.callbacks} == {7}
    _, b = built({**BASE, "monitors": False})
    assert b.trainer.callbacks == []
    # a monitor named in callbacks is not attached twice
    _, b = built({**BASE, "callbacks": [{"name": "grad_norm_monitor", "interval": 2}]})
    assert [c.interval for c in b.trainer.callbacks if isinstance(c, GradientNormMonitor)] == [2]


def test_monitor_tables_come_back_from_a_run():
    run = recipes.load({**BASE, "monitors": 5}).runs()[0]
    res = runner.train_one(run, 0)
    steps = res["steps_run"]
    assert res["monitors"]["grad_norm"]["step"] == list(range(0, steps, 5))
    assert {"grad_norm", "grad_norm/1.0.weight", "grad_norm/2.weight"} <= set(res["monitors"]["grad_norm"])
    assert "dead/1.1" in res["monitors"]["activations"]
    run = recipes.load({**BASE, "monitors": False}).runs()[0]
    assert runner.train_one(run, 0)["monitors"] == {}


@pytest.mark.parametrize("monitors, expected", [
    (0, "monitors: `monitors` must be true, false, an interval in [1, 2147483648] or a list"),
    ("yes", "Received: monitors='yes'"),
    ([{"interval": 3}], "Received: monitors=[{'interval': 3}]"),
])
def test_monitor_field_errors(monitors, expected):
    with pytest.raises(RecipeError, match=re.escape(expected)):
        recipes.load({**BASE, "monitors": monitors})


def test_yaml_float_without_a_point_gets_a_hint():
    run = recipes.load({**BASE, "regularizers": [{"name": "l2_penalty", "alpha": "1e-4"}]}).runs()[0]
    with pytest.raises(RecipeError, match=re.escape("regularizers[0].alpha: `alpha` must be a real number. "
                                                    "Received: alpha='1e-4' (YAML reads 1e-4 as a string: "
                                                    "write it with a decimal point, e.g. 1.0e-04)")):
        runner.build(run, 0)


def test_unknown_monitor_names_the_field():
    run = recipes.load({**BASE, "monitors": [{"name": "grad_norm_monitor"}, {"name": "nope"}]}).runs()[0]
    with pytest.raises(RecipeError, match=r"monitors\[1\]"):
        runner.build(run, 0)


# ---------------------------------------------------------------- data pipeline (item: data.*)
def test_preprocess_reaches_the_data():
    _, plain = built(BASE)
    _, b = built(with_data(preprocess="standardize"))
    x = b.data.train.tensors[0]
    assert plain.data.train.tensors[0].mean().abs() > 0.1  # raw pixels in [0, 1]
    flat = x.reshape(x.shape[0], -1).double()
    assert torch.allclose(flat.mean(0), torch.zeros(64, dtype=torch.float64), atol=1e-5)
    ok = flat.std(0, unbiased=False) > 1e-6  # constant border pixels are only centred
    assert torch.allclose(flat.std(0, unbiased=False)[ok], torch.ones(int(ok.sum()), dtype=torch.float64),
                          atol=1e-4)
    # statistics from the training split only, applied to every split
    from descend.data.preprocess import Standardize
    ref = Standardize().fit(plain.data.train.tensors[0])
    assert torch.equal(b.data.test.tensors[0], ref.transform(plain.data.test.tensors[0]))
    assert b.train is b.data.train
    # a chain, and a shape change reaching the model
    _, b = built(with_data(preprocess=["standardize", {"name": "pca_whiten", "n_components": 12}]))
    assert b.data.input_shape == (12,) and b.model(b.data.test.tensors[0][:2]).shape == (2, 10)


def test_augment_reaches_the_training_batches():
    from descend.data.augment import Augment
    aug = [{"name": "gaussian_noise", "sigma": 0.5}]
    _, b = built(with_data(augment=aug), seed=3)
    (cb,) = [c for c in b.trainer.callbacks if isinstance(c, Augment)]
    assert cb.pipeline.ops[0].sigma == 0.5 and cb.pipeline.ops[0].seed == 3  # the run's seed
    run_a = recipes.load(with_data(augment=aug)).runs()[0]
    run_p = recipes.load(BASE).runs()[0]
    la = runner.train_one(run_a, 0)["steps"]["loss"]
    lp = runner.train_one(run_p, 0)["steps"]["loss"]
    assert la[0] != lp[0]  # the first batch is the same examples, with noise added
    assert runner.train_one(run_a, 0)["steps"]["loss"] == la  # and seeded


def test_sampler_sets_the_order_of_the_training_examples():
    from descend.data.samplers import ClassInterleavedSampler, SampledBatches
    from descend.train import Callback

    run, b = built(with_data(sampler="class_interleaved"), seed=5)
    assert isinstance(b.train, SampledBatches) and b.train in b.trainer.callbacks
    seen = []

    class Record(Callback):
        def on_batch_begin(self, trainer, batch):
            seen.append(batch[1].clone())

    b.trainer.callbacks.append(Record())
    b.trainer.fit(b.train, epochs=2)
    y = b.data.train.tensors[1]
    ref = ClassInterleavedSampler(y, seed=5)
    expected = [y[list(ref)] for _ in range(2)]  # epochs 0 and 1, seeded with the run's seed
    assert torch.equal(torch.cat(seen), torch.cat(expected))
    assert [len(s) for s in seen[:2]] == [128, 128]
    # the Trainer's own shuffle would give another order
    assert not torch.equal(torch.cat(seen)[:len(y)], y[torch.randperm(len(y), generator=torch.Generator().manual_seed(5))])


def test_bootstrap_and_growing_batch_samplers():
    run, b = built(with_data(sampler={"name": "bootstrap", "num_samples": 300}))
    hist = b.trainer.fit(b.train, epochs=1)
    assert hist.steps["step"][-1] == 3  # 300 draws, batches of 128
    run, b = built(with_data(sampler={"name": "growing_batch", "factor": 2, "max_batch_size": 512}))
    hist = b.trainer.fit(b.train, epochs=3)
    assert hist.epochs["step"] == [11, 11 + 6, 11 + 6 + 3]  # 128, 256, 512 of 1294 examples


def test_loss_proportional_sampler_is_fed_the_losses():
    from descend.data.samplers import LossFeedback, LossProportionalSampler, per_example_loss
    run, b = built(with_data(sampler={"name": "loss_proportional", "mix": 0.2}))
    s = b.train.sampler
    assert isinstance(s, LossProportionalSampler) and s.mix == 0.2
    (fb,) = [c for c in b.trainer.callbacks if isinstance(c, LossFeedback)]
    assert fb.sampler is s
    assert torch.equal(s.losses, torch.ones(len(b.data.train), dtype=torch.float64))
    b.trainer.fit(b.train, epochs=1)
    x, y = b.data.train.tensors
    with torch.no_grad():
        b.model.eval()
        expected = per_example_loss(b.trainer.loss_fn, b.model(x), y).double()
    torch.testing.assert_close(s.losses, expected, rtol=1e-6, atol=1e-7)
    # named in callbacks with its own period, it is bound to the recipe's sampler
    run, b = built({**with_data(sampler="loss_proportional"), "callbacks": [{"name": "loss_feedback", "every": 2}]})
    (fb,) = [c for c in b.trainer.callbacks if isinstance(c, LossFeedback)]
    assert fb.every == 2 and fb.sampler is b.train.sampler and fb.data is b.data.train


@pytest.mark.parametrize("data, where", [
    ({"preprocess": [{"name": "nope"}]}, "data.preprocess[0]"),
    ({"preprocess": [{"name": "standardize", "per": "pixel"}]}, "data.preprocess[0].per"),
    ({"augment": [{"name": "gaussian_noise", "sigma": -1}]}, "data.augment"),
    ({"sampler": {"name": "loss_proportional", "mix": 2}}, "data.sampler.mix"),
    ({"sampler": 3}, "data.sampler: `sampler` must be a name"),
])
def test_data_pipeline_errors_name_the_field(data, where):
    run = recipes.load(with_data(**data)).runs()[0]
    with pytest.raises(RecipeError, match=re.escape(f"<recipe>: {where}")):
        runner.build(run, 0)
