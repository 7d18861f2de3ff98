import re

import pytest

from descend.experiments.recipe import RecipeError, load, merge

BASE = {
    "name": "t",
    "data": {"name": "digits"},
    "model": {"name": "mlp", "hidden": [8]},
    "optimizer": {"name": "sgd", "lr": 0.1},
    "epochs": 1,
}


def rec(**changes):
    d = {**BASE, **changes}
    return {k: v for k, v in d.items() if v is not None}


def error_of(recipe, **kw) -> str:
    with pytest.raises(RecipeError) as e:
        load(recipe, **kw)
    return str(e.value)


def test_bundled_recipes_expand():
    assert [r.name for r in load("default").runs()] == [
        "sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"]
    runs = load("default").runs()
    assert runs[1].spec.optimizer.as_dict() == {"name": "momentum", "lr": 0.01, "momentum": 0.9}
    assert runs[0].spec.seeds == [0, 1, 2, 3, 4] and runs[0].spec.epochs == 20


@pytest.mark.parametrize("recipe, expected", [
    # unknown keys, at the top, in a variant, with a suggestion
    (rec(optimzer={"name": "sgd"}),
     "optimzer: unknown key 'optimzer' (allowed: "),
    (rec(variants=[{"name": "a"}, {"name": "b", "epochz": 3}]),
     "variants[1].epochz: unknown key 'epochz'"),
    # wrong types
    (rec(epochs="ten"), "epochs: `epochs` must be an integer. Received: epochs='ten'"),
    (rec(variants=[{"name": "a", "epochs": 2.5}]),
     "variants[0].epochs: `epochs` must be an integer. Received: epochs=2.5"),
    (rec(optimizer="sgd"),
     "optimizer: `optimizer` must be a mapping with a `name` key. Received: optimizer='sgd'"),
    (rec(seeds=[0, "one"]), "seeds[1]: `seeds[1]` must be an integer. Received: seeds[1]='one'"),
    (rec(variants=[{"name": "a", "optimizer": {"lr": 0.1, "name": 3}}]),
     "variants[0].optimizer.name: `name` must be a string. Received: name=3"),
    # bad values
    (rec(epochs=0), "epochs: `epochs` must be greater than or equal to 1. Received: epochs=0"),
    (rec(target_accuracy=1.5), "target_accuracy: `target_accuracy` must be less than or equal to 1"),
    (rec(batch_size=0), "batch_size: `batch_size` must be an integer in [1, 16777216] or a schedule mapping. "
                        "Received: batch_size=0"),
    (rec(schedule_unit="batch"), "schedule_unit: `schedule_unit` must be 'step' or 'epoch'"),
    (rec(name="no spaces"), "name: `name` must match pattern"),
    # missing fields
    (rec(model=None), "model: `model` is required but missing."),
    (rec(variants=[{"optimizer": {"name": "adam"}}]), "variants[0].name: `name` is required"),
    # grids
    (rec(grid={"optimzer.lr": [0.1]}), "grid.optimzer.lr: a grid key must be a dotted path"),
    (rec(grid={"epochs": ["x"]}), "grid.epochs: `epochs` must be an integer. Received: epochs='x'"),
    (rec(variants=[{"name": "a"}, {"name": "a"}]), "variant names must be unique"),
])
def test_validation_errors_name_the_field(recipe, expected):
    msg = error_of(recipe)
    assert msg.startswith("<recipe>: ")
    assert expected in msg, msg


def test_missing_files(tmp_path):
    msg = error_of(str(tmp_path / "nope.yaml"))
    assert "recipe file not found" in msg and "nope.yaml" in msg and "default" in msg
    p = tmp_path / "r.yaml"
    p.write_text("name: r\ndata: {name: mnist, root: no_such_dir}\nmodel: {name: mlp}\n"
                 "optimizer: {name: sgd}\nepochs: 1\n")
    msg = error_of(str(p))
    assert msg.startswith(f"{p}: data.root: the folder does not exist: {tmp_path / 'no_such_dir'}")
    assert "Received: root='no_such_dir'" in msg
    (tmp_path / "no_such_dir").mkdir()  # relative to the recipe's folder, not the cwd
    assert load(str(p)).runs()[0].resolve("no_such_dir") == tmp_path / "no_such_dir"


def test_yaml_problems(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: [unclosed\n")
    assert "not valid YAML" in error_of(str(p))
    p.write_text("!!python/object/apply:os.system ['echo hi']\n")
    assert "refused" in error_of(str(p))
    p.write_text("- just\n- a list\n")
    assert "a recipe must be a mapping" in error_of(str(p))


def test_grid_expands_every_variant():
    r = load(rec(variants=[{"name": "sgd"}, {"name": "adam", "optimizer": {"name": "adam", "lr": 0.001}}],
                 grid={"optimizer.lr": [0.01, 0.1], "batch_size": [16, 32]}))
    runs = r.runs()
    assert [x.name for x in runs] == [
        "sgd-lr=0.01-batch_size=16", "sgd-lr=0.01-batch_size=32",
        "sgd-lr=0.1-batch_size=16", "sgd-lr=0.1-batch_size=32",
        "adam-lr=0.01-batch_size=16", "adam-lr=0.01-batch_size=32",
        "adam-lr=0.1-batch_size=16", "adam-lr=0.1-batch_size=32"]
    assert runs[5].spec.optimizer.as_dict() == {"name": "adam", "lr": 0.01}
    assert runs[5].spec.batch_size == 32
    # the field-path of a grid value points at the grid, of an override at the variant
    assert runs[5].origin.path(["optimizer", "lr"]) == "grid.optimizer.lr"
    assert runs[5].origin.path(["optimizer", "name"]) == "variants[1].optimizer.name"
    assert runs[5].origin.path(["model", "hidden"]) == "model.hidden"


def test_merge_replaces_a_component_whose_name_changes():
    base = {"optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.5}, "model": {"name": "mlp", "hidden": [8]}}
    out = merge(base, {"optimizer": {"name": "adam"}, "model": {"dropout": 0.1}})
    assert out["optimizer"] == {"name": "adam"}
    assert out["model"] == {"name": "mlp", "hidden": [8], "dropout": 0.1}
    assert merge({"optimizer": {"name": "sgd", "lr": 0.1}}, {"optimizer": {"lr": 0.2}}) == \
        {"optimizer": {"name": "sgd", "lr": 0.2}}


def test_overrides_win_over_variants():
    r = load(rec(variants=[{"name": "a", "epochs": 5}]), overrides={"epochs": 2, "seeds": [7]})
    assert r.runs()[0].spec.epochs == 2 and r.runs()[0].spec.seeds == [7]
    msg = error_of(rec(), overrides={"epochs": -1})
    assert re.search(r"epochs: `epochs` must be greater than or equal to 1. Received: epochs=-1", msg)


# ------------------------------------------------------------------ limits (issue 12)

@pytest.mark.parametrize("recipe, expected", [
    (rec(seeds=[10**30]), "seeds[0]: `seeds[0]` must be less than or equal to 4294967295. Received: seeds[0]=10000"),
    (rec(seeds=[-1]), "seeds[0]: `seeds[0]` must be greater than or equal to 0"),
    (rec(seeds=[3, 3]), "seeds: `seeds` must be distinct"),
    (rec(seeds=list(range(1001))), "seeds: `seeds` must have at most 1000 items"),
    (rec(split_seed=2**32), "split_seed: `split_seed` must be less than or equal to 4294967295"),
    (rec(epochs=10**6 + 1), "epochs: `epochs` must be less than or equal to 1000000"),
    (rec(batch_size=2**24 + 1), "batch_size: `batch_size` must be an integer in [1, 16777216]"),
    (rec(eval_batch_size=2**30), "eval_batch_size: `eval_batch_size` must be less than or equal to 16777216"),
    (rec(monitors=2**40), "monitors: `monitors` must be true, false, an interval in [1, 2147483648]"),
    (rec(variants=-1), "variants: `variants` must be a list of variants. Received: variants=-1"),
    (rec(variants={"a": 1}), "variants: `variants` must be a list of variants"),
    (rec(grid=[1]), "grid: `grid` must be a mapping of dotted paths to lists"),
    (rec(grid={"optimizer.lr": 0.1}), "grid.optimizer.lr: `optimizer.lr` must be a non-empty list of values"),
    (rec(grid={"name": ["a", "b"]}), "grid.name: a grid key must be a dotted path into a variant field"),
    (rec(variants=[{"name": {"a": 1}}]), "variants[0].name: `name` must be a string. Received: name={'a': 1}"),
    (rec(variants=[{"name": "../../victim"}]), "variants[0].name: `name` must be a plain name"),
    (rec(variants=[{"name": "a/b"}]), "variants[0].name: `name` must be a plain name"),
    (rec(variants=[{"name": ".."}]), "variants[0].name: `name` must be a plain name"),
    (rec(variants=[{"name": "x\u202eexe.yaml"}]), "variants[0].name: `name` must be a plain name"),
    (rec(variants=[{"name": "x" * 129}]), "variants[0].name: `name` must have 1 to 128 characters"),
    (rec(variants=[{"name": "a"}], grid={"optimizer.lr": ["/x"]}), "variants[0].name: `name` must be a plain name"),
    (rec(variants=[{"name": f"v{i}"} for i in range(101)], grid={"optimizer.lr": [0.1] * 100}),
     "grid: the recipe expands to 10100 variants, more than the limit of 10000"),
    (rec(grid={f"optimizer.x{i}": [1] * 10 for i in range(10)}), "grid: the recipe expands to 10000000000 variants"),
    (rec(optimizer={"name": "sgd", "lr": float("nan")}), "optimizer.lr: `lr` must be finite. Received: lr=nan"),
    (rec(description=float("inf")), "description: `description` must be finite"),
    (rec(variants=[{"name": "a", "optimizer": {"lr": -float("inf")}}]), "variants[0].optimizer.lr: `lr` must be finite"),
    (rec(optimizer={"name": "sgd", "lr": 2**60}), "optimizer.lr: `lr` must be an integer between -2**53 and 2**53"),
    (rec(model={"name": "mlp", 3: 4}), "model: keys must be strings. Received: key 3 (int)"),
    (rec(optimizer={"name": ["sgd"]}, variants=[{"name": "a", "optimizer": {"name": "adam"}}]),
     "optimizer.name: `name` must be a string. Received: name=['sgd']"),
    (rec(optimizer="sgd"), "optimizer: `optimizer` must be a mapping with a `name` key"),
    (rec(callbacks=[5]), "callbacks[0]: `callbacks` must be a mapping with a `name` key"),
])
def test_limits_name_the_field_and_the_value(recipe, expected):
    msg = error_of(recipe)
    assert msg.startswith("<recipe>: ") and expected in msg, msg
    assert "\n" not in msg and len(msg) < 700


def test_the_model_is_counted_before_it_is_allocated():
    import torch

    from descend.experiments import runner
    from descend.experiments.recipe import LIMITS, check_model_size
    run = load(rec(model={"name": "mlp", "hidden": [2**40]})).runs()[0]
    with pytest.raises(RecipeError, match=r"<recipe>: model: the model would have more than 100,000,000 parameters"):
        runner.build(run, 0)
    run = load(rec(model={"name": "mlp", "hidden": [100_000, 100_000]})).runs()[0]
    with pytest.raises(RecipeError, match="more than 100,000,000 parameters"):
        check_model_size(run, lambda: torch.nn.Sequential(torch.nn.Linear(64, 100_000), torch.nn.Linear(100_000, 100_000)))
    LIMITS["parameter_tensors"], saved = 50, LIMITS["parameter_tensors"]
    try:
        with pytest.raises(RecipeError, match="more than 50 parameter tensors"):
            check_model_size(run, lambda: torch.nn.ModuleList(torch.nn.Linear(1, 1) for _ in range(10**6)))
    finally:
        LIMITS["parameter_tensors"] = saved
    # the count runs on the meta device: the real build after it draws the same weights
    run = load(rec()).runs()[0]
    torch.manual_seed(0)
    a = runner.build(run, 0).model.state_dict()
    old = LIMITS["parameters"]
    try:
        LIMITS["parameters"] = 10**12
        b = runner.build(run, 0).model.state_dict()
    finally:
        LIMITS["parameters"] = old
    assert all(torch.equal(a[k], b[k]) for k in a)
    LIMITS["parameters"], saved = 100, LIMITS["parameters"]
    try:
        with pytest.raises(RecipeError, match="more than 100 parameters"):
            runner.build(run, 0)
    finally:
        LIMITS["parameters"] = saved


def test_recipe_files_that_are_not_recipes(tmp_path):
    for data, expected in [(b"\x89PNG\r\n\x1a\n", "is not UTF-8 text"), (b"a: 1\na: 2\n", "found the key 'a' twice"),
                           (b"- 1\n", "a recipe must be a mapping of fields. Received: list [1]")]:
        p = tmp_path / "r.yaml"
        p.write_bytes(data)
        msg = error_of(str(p))
        assert msg.startswith(str(p)) and expected in msg, msg
    x = dict(BASE)
    x["model"] = {"name": "mlp", "self": x}  # refers to itself
    assert "nested more than 64 levels deep" in error_of(x)


def test_precision_accumulate_compile_reach_the_trainer():
    from descend.experiments import runner
    run = load(rec(precision="16-mixed", accumulate=4, compile={"dynamic": False})).runs()[0]
    t = runner.build(run, 0).trainer
    assert (t.precision, t.accumulate, t.compile_kwargs) == ("16-mixed", 4, {"dynamic": False})
    assert t.scaler is not None
    t = runner.build(load(rec()).runs()[0], 0).trainer
    assert (t.precision, t.accumulate, t.compile_kwargs, t.scaler) == ("32", 1, None, None)
    # a variant and a grid set them like any run field
    runs = load(rec(grid={"accumulate": [1, 2]}, variants=[{"name": "bf16", "precision": "bf16-mixed"}])).runs()
    assert [(r.spec.precision, r.spec.accumulate) for r in runs] == [("bf16-mixed", 1), ("bf16-mixed", 2)]


@pytest.mark.parametrize("change, expected", [
    ({"precision": "fp8"}, "precision: `precision` must be '32', '32-true', 'bf16-mixed' or '16-mixed'. "
                           "Received: precision='fp8'"),
    ({"accumulate": 0}, "accumulate: `accumulate` must be greater than or equal to 1. Received: accumulate=0"),
    ({"accumulate": 2**16 + 1}, "accumulate: `accumulate` must be less than or equal to 65536"),
    ({"compile": "yes"}, "compile: `compile` must be true, false or a mapping of torch.compile keyword arguments (mode, dynamic, ...). Received: compile='yes'"),
    ({"compile": 1}, "compile: `compile` must be true, false or a mapping"),
])
def test_precision_accumulate_compile_errors(change, expected):
    msg = error_of(rec(**change))
    assert msg.startswith("<recipe>: ") and expected in msg, msg
    assert "\n" not in msg


def test_compile_keyword_errors_name_the_field():
    from descend.experiments import runner
    run = load(rec(compile={"modes": "max-autotune"})).runs()[0]
    with pytest.raises(RecipeError, match=r"^<recipe>: compile: `compile` must be a dict of torch.compile "
                                          r"keyword arguments \(.*\)\. Received: compile=\{'modes': 'max-autotune'\}$"):
        runner.build(run, 0)
