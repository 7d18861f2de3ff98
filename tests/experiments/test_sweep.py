"""descend sweep: a name for compare --tune (one recipe format, one tuning procedure)."""

import pytest

RECIPE = {"name": "sw", "data": {"name": "digits"}, "model": {"name": "mlp", "hidden": [8]},
          "optimizer": {"name": "sgd", "lr": 0.1}, "epochs": 1, "seeds": [0],
          "search": {"optimizer.lr": {"log_uniform": [1.0e-3, 1.0]}}, "tune": {"trials": 2}}


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


def test_sweep_cli_is_compare_tune():
    from descend.cli import build_parser

    args = build_parser().parse_args(["sweep", "tiny", "--trials", "4", "--early-stopping", "--max-concurrent", "2"])
    assert args.trials == 4 and args.early_stopping and args.max_concurrent == 2 and callable(args.func)


def test_sweep_runs_the_tuning(tmp_path, monkeypatch):
    from descend.experiments import sweep as sw
    from descend.experiments import tuning

    seen = {}
    monkeypatch.setattr(tuning, "tune", lambda recipe, **kw: seen.update(recipe=recipe, **kw) or ("f", {}))
    assert sw.sweep(RECIPE, out=tmp_path, trials=3) == ("f", {})
    assert seen["recipe"] is RECIPE and seen["trials"] == 3
