"""The second-order benchmarks run end to end with --quick and write their results files
(no timing or accuracy is asserted here: the benchmarks measure, the tests check they run)."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_step_time_benchmark_runs_quick(tmp_path):
    assert _load("second_order_step").main(["--quick", "--out", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "second_order_step_cpu_quick.json").read_text())
    assert payload["quick"] and payload["load"]["before"] is not None
    names = {(r["model"], r["optimizer"]) for r in payload["rows"]}
    assert ("cnn", "kfac") in names and ("logistic", "newton") in names
    assert all(r["ratio_to_adam"] > 0 for r in payload["rows"])
    assert "x Adam" in (tmp_path / "second_order_step_cpu_quick.md").read_text()


@pytest.mark.slow
def test_mnist1d_tuning_benchmark_runs_quick(tmp_path):
    assert _load("second_order_mnist1d").main(["--quick", "--out", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "second_order_mnist1d_cpu_quick.json").read_text())
    assert set(payload["chosen_lr"]) == {"adam", "kfac", "shampoo"}
    assert len(payload["confirm"]) == 3 and len(payload["tuning"]) == 6
    for r in payload["tuning"]:
        assert r["lr"] in payload["grid"][r["optimizer"]]
