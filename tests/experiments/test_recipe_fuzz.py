"""A bounded run of the recipe fuzz (tests/experiments/fuzz_recipes.py; the full 1,000-mutant run
is ``python tests/experiments/fuzz_recipes.py --n 1000``) and checks of its oracle."""

import math

import pytest

import fuzz_recipes as F

TINY = {"name": "t", "data": {"name": "digits"}, "model": {"name": "mlp", "hidden": [16]},
        "optimizer": {"name": "sgd", "lr": 0.1}, "epochs": 2, "seeds": [0, 1],
        "variants": [{"name": "sgd"}, {"name": "adam", "optimizer": {"name": "adam", "lr": 0.01}}]}


@pytest.mark.slow
def test_bounded_fuzz_no_traceback_no_nonsense_accepted(monkeypatch):
    monkeypatch.delenv("DESCEND_TRACEBACK", raising=False)
    results = F.fuzz(60, seed=12, train=2)
    checks = [r for r in results if not r.mutant.kind.startswith("train")]
    assert len(checks) == 60
    bad = [f"{r.mutant.kind} {r.mutant.where}: rc {r.rc} {r.stderr[-400:]}" for r in results
           if r.traceback or r.nonsense_accepted]
    assert not bad, "\n".join(bad)
    assert sum(r.mutant.nonsense is True for r in checks) >= 30  # the fuzz does try nonsense
    assert any(r.accepted for r in checks)                       # and valid mutants pass
    assert any(r.mutant.kind.startswith("train") and r.rc == 0 for r in results)


@pytest.mark.parametrize("change, nonsense", [
    ({}, False),
    ({"epochs": 0}, True), ({"epochs": 10**6}, False), ({"epochs": 10**6 + 1}, True), ({"epochs": 2.0}, True),
    ({"seeds": [0, 0]}, True), ({"seeds": [2**32]}, True), ({"seeds": []}, True),
    ({"optimizer": {"name": "sgd", "lr": -0.1}}, True), ({"optimizer": {"name": "sgd", "lr": math.nan}}, True),
    ({"schedule": {"lr": -1}}, True), ({"schedule": {"lr": {"name": "cosine"}}}, None),
    ({"model": {"name": "mlp", "hidden": [2**40]}}, True), ({"model": {"name": "mlp", "hidden": [64, 64]}}, False),
    ({"variants": [{"name": "../x"}]}, True), ({"variants": [{"name": "a"}, {"name": "a"}]}, True),
    ({"variants": -1}, True), ({"description": 2**60}, True), ({"device": "cuda:0"}, None),
    ({"precision": "bf16-mixed"}, False), ({"precision": "fp8"}, True), ({"precision": 16}, True),
    ({"accumulate": 4}, False), ({"accumulate": 0}, True), ({"accumulate": 2**16 + 1}, True),
    ({"accumulate": 2.0}, True), ({"compile": True}, False), ({"compile": "yes"}, True),
    ({"compile": {"mode": "reduce-overhead"}}, None),
])
def test_the_oracle_reads_the_documented_ranges(change, nonsense):
    assert F.judge({**TINY, **change}) is nonsense


def test_the_oracle_judges_the_runs_as_merged():
    # a shared optimizer every variant replaces is not used: its value does not count ...
    doc = {**TINY, "optimizer": {"name": "sgd", "lr": -1.0},
           "variants": [{"name": "a", "optimizer": {"name": "adam", "lr": 0.1}}]}
    assert F.judge(doc) is False
    # ... but a variant that only changes the rate keeps it
    doc["variants"] = [{"name": "a", "optimizer": {"momentum": 0.5}}]
    assert F.judge(doc) is True
