"""descend sweep: a recipe's (variant, seed) pairs as Ray Tune trials, written like compare."""

import json

import pytest

from descend.experiments import recipe as recipes

RECIPE = {
    "name": "sw",
    "data": {"name": "digits", "val_fraction": 0.1},
    "model": {"name": "mlp", "hidden": [8]},
    "optimizer": {"name": "sgd", "lr": 0.1},
    "batch_size": 64,
    "epochs": 3,
    "seeds": [0, 1],
    "target_accuracy": 0.3,
    "variants": [{"name": "good", "optimizer": {"name": "adam", "lr": 0.01}},
                 {"name": "bad", "optimizer": {"name": "sgd", "lr": 1e-6}}],
}


def test_sweep_without_ray_says_how_to_install(monkeypatch):
    import builtins

    from descend.experiments import sweep as sw

    real = builtins.__import__

    def no_ray(name, *a, **k):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ImportError, match=r"pip install 'descend\[sweep\]'"):
        sw.sweep(RECIPE)


def test_sweep_cli_is_registered():
    from descend.cli import build_parser

    args = build_parser().parse_args(["sweep", "tiny", "--search", "random", "--num-samples", "2"])
    assert args.search == "random" and args.num_samples == 2 and callable(args.func)


@pytest.mark.slow
def test_four_trial_local_sweep_writes_compare_results(tmp_path):
    pytest.importorskip("ray.tune", reason="Ray Tune is the optional 'sweep' extra: pip install 'descend[sweep]'")
    from descend.experiments.sweep import sweep

    # One trial at a time, in grid order: deterministic ASHA decisions.
    folder, res = sweep(RECIPE, out=tmp_path, max_concurrent=1, grace_epochs=1, reduction_factor=2,
                        quiet=True)
    assert folder == tmp_path / "sw-sweep"
    on_disk = json.loads((folder / "results.json").read_text())
    assert on_disk["sweep"]["trials"] == ["good/seed0", "good/seed1", "bad/seed0", "bad/seed1"]
    for f in ("report.html", "loss_vs_steps.png"):
        assert (folder / f).is_file()
    # Same structure as compare: a summary row per variant, one result per seed.
    assert sorted(v["name"] for v in on_disk["variants"]) == ["bad", "good"]
    for v in on_disk["variants"]:
        assert [r["seed"] for r in v["runs"]] == [0, 1]
        assert set(v["summary"]) >= {"variant", "final_val_acc", "final_test_acc"}
    # ASHA: the first trial to reach a rung always continues, so good/seed0 runs to the end
    # and equals plain training of the same run and seed (the compare code path).
    good0 = next(v for v in on_disk["variants"] if v["name"] == "good")["runs"][0]
    assert "stopped_early" not in good0 and good0["epochs_run"] == 3
    from descend.experiments import runner

    direct = runner.train_one(recipes.load(RECIPE).runs()[0], 0)
    assert good0["final_val_acc"] == pytest.approx(direct["final_val_acc"], abs=1e-12)
    assert good0["final_test_acc"] == pytest.approx(direct["final_test_acc"], abs=1e-12)
    # lr=1e-6 leaves the "bad" variant near chance; at the first rung it is below the median
    # of the good trials (reduction factor 2), so both of its trials stop after one epoch.
    bad = next(v for v in on_disk["variants"] if v["name"] == "bad")["runs"]
    assert [r.get("stopped_early") for r in bad] == [True, True]
    assert [r["epochs_run"] for r in bad] == [1, 1]
    assert on_disk["sweep"]["stopped_early"][:2] == ["bad/seed0", "bad/seed1"]
