"""descend.analysis.stats: intervals, tests, corrections, rankings, censoring, profiles.

Each function is checked against its formula written out here, against scipy where scipy
has the computation, and for its error rates by simulation with fixed seeds and bounds
from the binomial distribution (not tuned to pass)."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from descend.analysis import stats


def test_mean_ci_is_the_student_t_interval():
    x = [0.91, 0.93, 0.90, 0.95, 0.92]
    r = stats.mean_ci(x)
    m, s, n = np.mean(x), np.std(x, ddof=1), len(x)
    half = sps.t.ppf(0.975, n - 1) * s / math.sqrt(n)
    assert r["mean"] == pytest.approx(m, abs=1e-15)
    assert r["std"] == pytest.approx(s, rel=1e-12)
    assert (r["lo"], r["hi"]) == pytest.approx((m - half, m + half), rel=1e-12)
    lo, hi = sps.t.interval(0.9, n - 1, loc=m, scale=s / math.sqrt(n))
    assert (stats.mean_ci(x, 0.9)["lo"], stats.mean_ci(x, 0.9)["hi"]) == pytest.approx((lo, hi), rel=1e-12)
    assert stats.mean_ci([None, float("nan")])["n"] == 0
    with pytest.raises(ValueError, match="`level` must be > 0"):
        stats.mean_ci(x, level=0)


def test_t_interval_coverage_by_simulation():
    # 2000 samples of 5 normal values: the 95% interval covers the mean in 95% of them;
    # binomial sd sqrt(.95 * .05 / 2000) = 0.0049, so 4 sd = 0.0195.
    rng = np.random.default_rng(0)
    cover = 0
    for _ in range(2000):
        r = stats.mean_ci(rng.normal(3.0, 2.0, 5).tolist())
        cover += r["lo"] <= 3.0 <= r["hi"]
    assert abs(cover / 2000 - 0.95) < 0.0195


def test_paired_t_test_is_the_formula_and_scipy():
    a = [0.91, 0.93, 0.92, 0.94, 0.92]
    b = [0.90, 0.91, 0.91, 0.92, 0.915]
    d = np.subtract(a, b)
    t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    p = 2 * sps.t.sf(abs(t), len(d) - 1)
    r = stats.paired_test(a, b)
    assert r["p"] == pytest.approx(p, rel=1e-10)
    assert r["p"] == pytest.approx(sps.ttest_rel(a, b).pvalue, rel=1e-12)
    assert r["diff"] == pytest.approx(d.mean())
    assert r["lo"] < r["diff"] < r["hi"]
    w = stats.paired_test(a, b, method="wilcoxon")
    assert w["p"] == pytest.approx(sps.wilcoxon(d).pvalue)
    # missing values drop the pair; degenerate cases
    assert stats.paired_test([1.0, None, 3.0], [1.0, 2.0, 2.0])["n"] == 2
    # the same difference on every seed: the exact sign-flip p-value 2 / 2^n, not 0
    assert stats.paired_test([1.0, 2.0], [0.0, 1.0])["p"] == 0.5
    assert stats.paired_test([1.0] * 6, [0.0] * 6)["p"] == pytest.approx(2 / 64)
    assert stats.paired_test([1.0], [0.0])["p"] is None
    with pytest.raises(ValueError, match="`b` must be as long as `a`"):
        stats.paired_test([1.0, 2.0], [1.0])


def test_welch_is_scipy():
    a, b = [1.0, 1.2, 0.9, 1.05, 1.3], [1.5, 1.7, 1.2, 1.4]
    r = stats.unpaired_test(a, b)
    assert r["p"] == pytest.approx(sps.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-12)
    ci = sps.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (r["lo"], r["hi"]) == pytest.approx((ci.low, ci.high), rel=1e-9)


def test_holm_by_hand():
    # m = 4: sorted 0.01, 0.02, 0.03, 0.5 -> 0.04, max(0.04, 0.06), max(.06, .06), max(.06, 0.5)
    assert stats.holm([0.03, 0.5, 0.01, 0.02]) == pytest.approx([0.06, 0.5, 0.04, 0.06])
    assert stats.holm([0.9, 0.9]) == [1.0, 1.0]
    assert stats.holm([]) == []


def test_false_positive_rate_of_the_whole_procedure():
    # Four variants drawn from one distribution, paired over 5 seeds (a shared seed
    # effect plus noise): the family-wise error rate of "some difference is significant"
    # stays at or below alpha. 1000 repetitions: binomial sd 0.0069 at 0.05, bound 0.05 + 3 sd.
    rng = np.random.default_rng(1)
    false = 0
    for _ in range(1000):
        seed_effect = rng.normal(0, 0.02, 5)
        values = {v: (0.9 + seed_effect + rng.normal(0, 0.005, 5)).tolist() for v in "abcd"}
        false += stats.compare_variants(values)["separable"]
    assert false / 1000 <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 1000)


def test_power_on_a_large_difference():
    rng = np.random.default_rng(2)
    hits = 0
    for _ in range(200):
        e = rng.normal(0, 0.01, 5)
        res = stats.compare_variants({"good": (0.95 + e + rng.normal(0, 0.003, 5)).tolist(),
                                      "bad": (0.90 + e + rng.normal(0, 0.003, 5)).tolist()})
        hits += res["best"] == "good" and res["rows"][1]["distinguishable"]
    assert hits == 200  # a 5-point gap with 0.4-point noise: t is about 25


def test_ranking_shares_ranks_and_orients_differences():
    res = stats.compare_variants({"slow": [300, 310, 305, 320, 300], "fast": [100, 110, 105, 100, 95],
                                  "fast2": [101, 108, 107, 99, 97]}, higher_is_better=False)
    assert res["best"] == "fast"
    ranks = {r["variant"]: r["rank"] for r in res["rows"]}
    assert ranks == {"fast": 1, "fast2": 1, "slow": 3}
    slow = next(r for r in res["rows"] if r["variant"] == "slow")
    assert slow["diff"] == pytest.approx(205.0) and slow["diff_lo"] > 0 and slow["distinguishable"]
    lines = stats.verdict(res, what="steps to target", unit="steps", digits=0)
    assert lines[0].startswith("fast best: steps to target 102 steps")
    assert "fast2 not distinguishable from fast" in lines[1]
    assert lines[2].startswith("slow higher by 205 steps [")


def test_unpaired_when_seeds_differ():
    res = stats.compare_variants({"a": [1.0, 2.0, 3.0], "b": [1.5, 2.5, 3.5]},
                                 seeds={"a": [0, 1, 2], "b": [3, 4, 5]})
    assert res["pairs"][0]["method"] == "Welch t-test" and not res["pairs"][0]["paired"]


def test_verdict_says_when_nothing_separates():
    res = stats.compare_variants({"a": [0.9, 0.92, 0.91], "b": [0.91, 0.9, 0.92], "c": [0.9, 0.91, 0.91]})
    lines = stats.verdict(res, what="test accuracy", scale=100, unit="%")
    assert lines[0].startswith("Not distinguishable: no difference in test accuracy between a, b and c")
    assert "more seeds" in lines[1]


def test_kaplan_meier_and_restricted_mean_by_hand():
    # 5 runs: reached at 10, 20, 20; censored at 15 and 30.
    times, budgets = [10, None, 20, 20, None], [30, 15, 30, 30, 30]
    curve = stats.kaplan_meier(times, budgets)
    # t=10: 5 at risk, 1 event -> 0.8; t=15 censored (4 -> 3 at risk); t=20: 2 of 3 -> 0.8/3
    assert curve == [(0.0, 1.0), (10.0, 0.8), (20.0, pytest.approx(0.8 / 3))]
    r = stats.time_to_target(times, budgets)
    assert r["reached"] == 3 and r["median"] == 20.0
    assert r["capped"] == [10.0, 15.0, 20.0, 20.0, 30.0]
    assert r["rmst"]["mean"] == pytest.approx(19.0)
    # fewer than half reached: the median is beyond the budget
    assert stats.time_to_target([None, None, 5], [9, 9, 9])["median"] is None
    # common budget: the restricted mean is the area under the Kaplan-Meier curve up to B
    t, b = [3, 7, None, 5], [10] * 4
    curve = stats.kaplan_meier(t, b) + [(10.0, None)]
    area = sum((curve[i + 1][0] - curve[i][0]) * curve[i][1] for i in range(len(curve) - 1))
    assert stats.time_to_target(t, b)["rmst"]["mean"] == pytest.approx(area)


def test_performance_profiles_by_hand():
    times = {"a": {"w1": 100, "w2": 400, "w3": None}, "b": {"w1": 200, "w2": 100, "w3": 50}}
    res = stats.performance_profiles(times, tau_max=4.0, points=4)  # taus 1, 2, 3, 4
    assert res["ratios"]["a"] == {"w1": 1.0, "w2": 4.0, "w3": None}
    assert res["profiles"]["a"] == pytest.approx([1 / 3, 1 / 3, 1 / 3, 2 / 3])
    assert res["profiles"]["b"] == pytest.approx([2 / 3, 1.0, 1.0, 1.0])
    # score = mean over workloads of (tau_max - r)_+ / (tau_max - 1)
    assert res["scores"]["a"] == pytest.approx((3 + 0 + 0) / 3 / 3)
    assert res["scores"]["b"] == pytest.approx((2 + 3 + 3) / 3 / 3)
    # the score is the area under the profile: check against a fine numerical integral
    fine = stats.performance_profiles(times, tau_max=4.0, points=30001)
    for v in times:
        assert np.trapezoid(fine["profiles"][v], fine["taus"]) / 3 == pytest.approx(res["scores"][v], abs=1e-3)


def test_bootstrap_interval_is_seeded():
    x = [1.0, 2.0, 2.5, 3.0, 9.0]
    assert stats.bootstrap_ci(x, np.median, seed=3) == stats.bootstrap_ci(x, np.median, seed=3)
    lo, hi = stats.bootstrap_ci(x)
    assert lo < np.mean(x) < hi
