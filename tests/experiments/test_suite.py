"""compare --suite: every workload runs, targets are checked, profiles and the score are computed."""

import copy
import json

import pytest

from descend.experiments import recipe as recipes
from descend.experiments import suite
from descend.experiments.recipe import RecipeError

RECIPE = {"name": "s", "data": {"name": "digits"}, "model": {"name": "mlp"}, "optimizer": {"name": "sgd", "lr": 0.1},
          "epochs": 1, "seeds": [0, 1], "monitors": False,
          "variants": [{"name": "momentum", "optimizer": {"name": "momentum", "lr": 0.02}},
                       {"name": "adam", "optimizer": {"name": "adam", "lr": 0.01}}]}


def test_every_workload_is_a_valid_recipe_with_a_target_and_a_large_validation_set():
    for name, spec in suite.WORKLOADS.items():
        r = recipes.load(suite.workload_recipe(RECIPE, name))
        run = r.runs()[0]
        assert run.spec.eval_every and (run.spec.target_loss or spec.get("target_accuracy"))
        from descend.experiments.runner import load_data
        data = load_data(run, {})
        assert len(data.val) >= 360, name
    assert {"digits_mlp", "mnist1d_cnn", "mnist1d_gru", "noisy_quadratic", "toy2d_spirals",
            "friedman_regression"} <= set(suite.WORKLOADS)
    with pytest.raises(RecipeError, match="`workload` must be one of"):
        suite.workload_recipe(RECIPE, "imagenet")


def test_suite_on_two_small_workloads(tmp_path, monkeypatch):
    small = copy.deepcopy(suite.WORKLOADS)
    small["noisy_quadratic"].update(epochs=3)
    small["digits_mlp"].update(epochs=2, target_accuracy=0.5)
    monkeypatch.setattr(suite, "WORKLOADS", small)
    folder, res = suite.run_suite(RECIPE, out=tmp_path, workloads=["noisy_quadratic", "digits_mlp"], quiet=True)
    assert folder == tmp_path / "s-suite"
    assert set(res["times"]) == {"momentum", "adam"}
    assert set(res["times"]["adam"]) == {"noisy_quadratic", "digits_mlp"}
    scores = res["profiles"]["scores"]
    assert all(0.0 <= s <= 1.0 for s in scores.values())
    assert res["answer"][0].startswith("Suite score")
    on_disk = json.loads((folder / "results.json").read_text())
    nq = on_disk["workloads"]["noisy_quadratic"]
    assert nq["variants"][0]["runs"][0]["target"] == {"metric": "val_loss", "mode": "min", "value": 0.27}
    assert nq["variants"][0]["runs"][0]["target_checked"] == "probe"
    html = (folder / "report.html").read_text()
    assert "performance_profiles.png" in html and "Suite score" in html
    assert (folder / "performance_profiles.png").read_bytes()[:4] == b"\x89PNG"
