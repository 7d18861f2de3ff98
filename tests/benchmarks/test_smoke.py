"""Each benchmark runs end to end with --quick and writes its results files (no timings
are asserted: speed is measured by the benchmarks themselves, not by tests)."""

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


@pytest.mark.parametrize("name,stem,keys", [
    ("optimizer_step", "optimizer_step_cpu_quick",
     {"set", "algorithm", "implementation", "ms", "gb_s", "pct_copy", "vs_torch_fastest"}),
    ("trainer_overhead", "trainer_overhead_cpu_quick", {"variant", "samples_s", "vs_hand"}),
    ("time_to_accuracy", "time_to_accuracy_cpu_quick",
     {"optimizer", "steps", "reached_s", "final_test_acc", "steps_per_s"}),
    ("compare_verdicts", "compare_verdicts_quick", {"case", "repetition", "as_expected", "answer"}),
])
def test_benchmark_runs_quick_and_writes_results(name, stem, keys, tmp_path):
    assert _load(name).main(["--device", "cpu", "--quick", "--out", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / f"{stem}.json").read_text())
    assert payload["quick"] and payload["rows"]
    for row in payload["rows"]:
        assert keys <= set(row)
    md = (tmp_path / f"{stem}.md").read_text()
    assert md.startswith("# ") and "|" in md


def test_optimizer_step_compares_every_implementation(tmp_path):
    mod = _load("optimizer_step")
    mod.main(["--quick", "--out", str(tmp_path), "--algorithms", "adam"])
    rows = json.loads((tmp_path / "optimizer_step_cpu_quick.json").read_text())["rows"]
    labels = {r["implementation"] for r in rows if r["set"] == "gpt2_tiny"}
    from descend.optim.backends import cpu
    # Adam on CPU: auto calls torch's fused kernel (faster than the generated one here)
    kernel = ({"descend kernel"} if cpu.available() else set()) | {"descend auto (fused)"}
    assert {"torch single", "torch foreach", "torch fused", "descend reference",
            "descend tiled", "descend foreach", "descend fused"} | kernel == labels
    assert sum(s.numel() for s in map(__import__("torch").Size, mod.gpt2_shapes())) == 124_439_808
    assert len(mod.gpt2_shapes()) == 148 and len(mod.resnet50_shapes()) == 161


@pytest.mark.slow  # compiles the model (seconds on CPU)
def test_trainer_options_benchmark_runs_quick(tmp_path):
    assert _load("trainer_options").main(["--device", "cpu", "--quick", "--out", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "trainer_options_cpu_quick.json").read_text())
    assert [r["variant"] for r in payload["rows"]] == ["32", "bf16-mixed", "16-mixed",
                                                        "accumulate=4 (batch/4)", "compile=True"]
    assert payload["rows"][0]["vs_32"] == 1.0 and all(r["samples_s"] > 0 for r in payload["rows"])
    assert payload["load_average_1min"]["before"] is not None
    assert "vs 32" in (tmp_path / "trainer_options_cpu_quick.md").read_text()
