"""compare --tune: search spaces, equal quasirandom budgets, selection on validation, fresh seeds."""

import json

import numpy as np
import pytest

from descend.experiments import recipe as recipes
from descend.experiments.recipe import RecipeError
from descend.experiments.tuning import Dimension, best_so_far, configure, parse_space, sample, settings, tune

RECIPE = {
    "name": "tu", "data": {"name": "digits", "val_fraction": 0.2}, "model": {"name": "mlp", "hidden": [8]},
    "optimizer": {"name": "sgd", "lr": 0.1}, "batch_size": 256, "epochs": 1, "seeds": [0, 1],
    "target_accuracy": 0.2, "monitors": False,
    "search": {"optimizer.lr": {"log_uniform": [1.0e-3, 1.0]}},
    "tune": {"trials": 2},
    "variants": [{"name": "sgd"},
                 {"name": "nadam", "optimizer": {"name": "torch.optim.NAdam", "lr": 0.01},
                  "search": {"optimizer.lr": {"log_uniform": [1.0e-4, 1.0e-1]}, "optimizer.momentum_decay":
                             {"fixed": 0.004}}}],
}


def test_space_kinds_and_errors():
    r = recipes.load({**RECIPE, "search": {"optimizer.lr": {"uniform": [0.1, 0.2]}, "batch_size": {"int_uniform": [32, 64]},
                                           "optimizer.momentum": {"choice": [0.0, 0.9]}}})
    dims = parse_space(r.runs()[0])
    assert [d.kind for d in dims] == ["uniform", "int_uniform", "choice"]
    for bad, msg in [({"optimizer.lr": {"log_uniform": [0.0, 1.0]}}, "`log_uniform` must be [low, high] with 0 < low"),
                     ({"optimizer.lr": {"log_uniform": ["1e-4", 1.0]}}, "YAML reads 1e-4 as a string"),
                     ({"optimizer.lr": {"normal": [0, 1]}}, "a dimension must be one of"),
                     ({"nothing.lr": {"fixed": 1}}, "a search key must be a dotted path"),
                     ({"optimizer.lr": {"choice": []}}, "`choice` must be a non-empty list")]:
        with pytest.raises(RecipeError, match=msg.replace("[", r"\[")):
            parse_space(recipes.load({**RECIPE, "search": bad}).runs()[0])


def test_sobol_points_are_stratified_seeded_and_shared():
    d = [Dimension("optimizer.lr", "uniform", [0.0, 1.0])]
    pts = [p["optimizer.lr"] for p in sample(d, 8, seed=3)]
    # the first 2^m points of a scrambled Sobol sequence put one point in each 1/2^m interval
    assert sorted(int(8 * x) for x in pts) == list(range(8))
    assert pts == [p["optimizer.lr"] for p in sample(d, 8, seed=3)]
    assert pts != [p["optimizer.lr"] for p in sample(d, 8, seed=4)]
    halton = [p["optimizer.lr"] for p in sample(d, 8, sampler="halton", seed=3)]
    assert all(0 <= x < 1 for x in halton) and halton != pts
    lr = Dimension("optimizer.lr", "log_uniform", [1e-4, 1e-1])
    logs = np.log10([p["optimizer.lr"] for p in sample([lr], 16)])
    assert sorted(int((x + 4) / 3 * 16) for x in logs) == list(range(16))  # uniform in log space
    assert sample([Dimension("x", "fixed", 3)], 2) == [{"x": 3}, {"x": 3}]


def test_configure_and_settings():
    r = recipes.load(RECIPE)
    run = configure(r.runs()[1], {"optimizer.lr": 0.003, "optimizer.momentum_decay": 0.004})
    assert run.spec.optimizer.name == "torch.optim.NAdam" and run.spec.optimizer.kwargs["lr"] == 0.003
    s = settings(r)
    assert (s["trials"], s["final_seeds"], s["trial_seed"], s["mode"]) == (2, [0, 1], 1000, "max")
    assert settings(r, final_seeds=[7, 8])["final_seeds"] == [7, 8]  # --seeds with --tune
    with pytest.raises(RecipeError, match="tune.final_seeds: the final runs need fresh seeds"):
        settings(recipes.load({**RECIPE, "tune": {"final_seeds": [1000, 1]}}))
    with pytest.raises(RecipeError, match="tune.trails: unknown key 'trails'"):
        settings(recipes.load({**RECIPE, "tune": {"trails": 3}}))
    with pytest.raises(RecipeError, match="tune.trials: `trials` must be"):
        settings(recipes.load(RECIPE), trials=0)
    assert best_so_far([0.2, None, 0.5, 0.4], "max") == [0.2, 0.2, 0.5, 0.5]


def test_local_tuning_end_to_end(tmp_path, capsys):
    folder, res = tune(RECIPE, out=tmp_path, executor="local")
    assert folder == tmp_path / "tu-tuned"
    t = res["tuning"]
    assert [v["variant"] for v in t["variants"]] == ["sgd", "nadam"]
    for v in t["variants"]:
        assert len(v["trials"]) == 2  # the same budget for every variant
        scores = [x["score"] for x in v["trials"]]
        assert v["chosen_score"] == max(s for s in scores if s is not None)
        assert v["chosen"] == v["trials"][v["chosen_trial"] - 1]["assignment"]
    nadam = res["variants"][1]
    assert nadam["config"]["optimizer"]["lr"] == t["variants"][1]["chosen"]["optimizer.lr"]
    assert [x["seed"] for x in nadam["runs"]] == [0, 1]  # the fresh final seeds, reported on test
    assert all(x["final_test_acc"] is not None for x in nadam["runs"])
    assert res["statistics"]["answer"]
    html = (folder / "report.html").read_text()
    assert "<h2>Tuning</h2>" in html and "tuning_best_so_far.png" in html and "<h2>Answer</h2>" in html
    assert (folder / "tuning_best_so_far.png").read_bytes()[:4] == b"\x89PNG"
    on_disk = json.loads((folder / "results.json").read_text())
    assert on_disk["tuning"]["settings"]["sampler"] == "sobol"
    out = capsys.readouterr().out
    assert "trial nadam" in out and "chosen:" in out
    with pytest.raises(RecipeError, match="early stopping of trials needs Ray Tune"):
        tune(RECIPE, out=tmp_path, executor="local", early_stopping=True)


def test_cli_flags():
    from descend.cli import build_parser
    a = build_parser().parse_args(["compare", "tiny", "--tune", "--trials", "4", "--early-stopping", "--address", "x:1"])
    assert a.tune and a.trials == 4 and a.early_stopping is True and a.address == "x:1"
    a = build_parser().parse_args(["sweep", "tiny", "--no-early-stopping"])
    assert a.early_stopping is False and callable(a.func)


@pytest.mark.slow
def test_ray_executor_with_asha_trains_as_the_local_one(tmp_path):
    pytest.importorskip("ray.tune", reason="Ray Tune is the optional 'sweep' extra: pip install 'descend[sweep]'")
    from descend.experiments.tuning import _Executor, _job
    recipe = {**RECIPE, "epochs": 2}
    jobs = [{"recipe": recipe, "variant": 1, "trial": k + 1, "assignment": {"optimizer.lr": lr}, "seed": 1000,
             "device": "cpu", "keep_curves": False} for k, lr in enumerate([0.01, 1.0e-6])]
    asha = {"metric": "val_acc", "mode": "max", "max_t": 2, "grace_epochs": 1, "reduction_factor": 2}
    seen = []
    with _Executor("ray", address=None, max_concurrent=1, storage=tmp_path) as ex:
        out = ex.run("t", jobs, asha=asha, on_done=lambda i, res: seen.append(i))
    assert sorted(seen) == [0, 1] and len(out) == 2
    # one trial at a time in order: the first always continues and equals the same job run in-process
    local = _job(jobs[0])
    assert out[0]["epochs"]["val_acc"] == pytest.approx(local["epochs"]["val_acc"], abs=1e-12)
    # lr 1e-6 stays near chance: below the first trial at the first rung, so ASHA stops it
    assert out[1].get("stopped_early") and out[1]["epochs_run"] == 1
