"""Statistics that say who won: intervals over seeds, paired tests, corrections, rankings,
time-to-target with censored runs, and performance profiles.

Used by ``descend compare`` (the report of every comparison) and ``descend reproduce``
(the verdict of every claim), so both answer "is this difference real?" the same way.
Everything works on plain lists of floats, one value per seed, and returns JSON-ready
dicts. ``None`` and non-finite values are left out (their count is reported).

The math, in one place (references at each function):

* **Mean and interval** over ``n`` seeds: ``m = (1/n) sum x_i``,
  ``s^2 = (1/(n-1)) sum (x_i - m)^2``, the Student-t interval
  ``m +- t_{1-a/2, n-1} s / sqrt(n)`` (:func:`mean_ci`), or a percentile bootstrap
  (:func:`bootstrap_ci`) for statistics without a closed form.
* **Paired comparison** (same seed = same initial weights and data order for both
  variants): the differences ``d_i = a_i - b_i`` and the paired t-test
  ``t = mean(d) / (sd(d) / sqrt(n))`` with ``n - 1`` degrees of freedom, or the
  Wilcoxon signed-rank test (:func:`paired_test`). Variants run on different seeds are
  compared with Welch's unpaired t-test (:func:`unpaired_test`).
* **Multiple comparisons**: Holm's step-down correction of the ``m`` p-values
  (:func:`holm`), which controls the family-wise error rate at ``alpha``.
* **Ranking**: ``rank(v) = 1 + #{variants significantly better than v}``; variants that
  no other variant beats significantly share rank 1 (:func:`compare_variants`).
* **Time to target** with runs that never reach it (censored at their step budget):
  the Kaplan-Meier estimate of ``P(T > t)``, its median, and the restricted mean
  ``E[min(T, B)]`` (:func:`time_to_target`); censored runs count as "at least B", never
  dropped.
* **Performance profiles** over workloads (Dolan & More 2002) and the AlgoPerf score,
  the normalized area under the profile (:func:`performance_profiles`).

The words of a report come from :func:`verdict`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from descend._validation import check_choice, check_range, fail

LEVEL = 0.95
ALPHA = 0.05


def finite(values: Sequence[Any]) -> list[float]:
    """The finite values of ``values`` as floats (``None``, NaN and inf left out).

    >>> finite([1, None, float("nan"), 2.5, float("inf")])
    [1.0, 2.5]
    """
    out = []
    for v in values:
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out.append(f)
    return out


def _t(level: float, df: float) -> float:
    from scipy import stats
    return float(stats.t.ppf(0.5 + level / 2, df))


def mean_ci(values: Sequence[Any], level: float = LEVEL,
            bounds: tuple[float, float] | None = None) -> dict[str, Any]:
    """Mean, sample standard deviation and the Student-t confidence interval of the mean.

    ``m +- t_{(1+level)/2, n-1} * s / sqrt(n)`` with ``s`` the sample standard deviation
    (``ddof=1``). Exact when the values are normal; over 5-10 seeds of a training run it
    is the usual approximation (Student 1908). With one value the interval is undefined
    (``lo = hi = None``).

    Args:
        values: one number per seed (``None``/non-finite values are left out).
        level: confidence level in (0, 1) (default 0.95).
        bounds: the range the quantity cannot leave (``(0, 1)`` for an accuracy): the
            interval is clipped to it (the t-interval knows nothing of the range; with
            few seeds it can reach past 100%).

    Returns:
        ``{"mean", "std", "n", "lo", "hi", "level"}`` (``None`` where undefined).

    Example:
        >>> r = mean_ci([0.90, 0.92, 0.94])
        >>> round(r["mean"], 4), round(r["lo"], 4), round(r["hi"], 4), r["n"]
        (0.92, 0.8703, 0.9697, 3)
        >>> mean_ci([1.0])["lo"] is None
        True
    """
    check_range("level", level, gt=0, lt=1)
    xs = finite(values)
    n = len(xs)
    if n == 0:
        return {"mean": None, "std": None, "n": 0, "lo": None, "hi": None, "level": level}
    m = sum(xs) / n
    if n == 1:
        return {"mean": m, "std": 0.0, "n": 1, "lo": None, "hi": None, "level": level}
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1))
    half = _t(level, n - 1) * sd / math.sqrt(n)
    lo, hi = m - half, m + half
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return {"mean": m, "std": sd, "n": n, "lo": lo, "hi": hi, "level": level}


def bootstrap_ci(values: Sequence[Any], stat: Callable[[np.ndarray], float] = np.mean, *,
                 level: float = LEVEL, resamples: int = 10000, seed: int = 0) -> tuple[float, float] | None:
    """Percentile bootstrap interval of ``stat`` (Efron & Tibshirani 1993, ch. 13).

    Draws ``resamples`` samples of size ``n`` with replacement (seeded), computes ``stat``
    on each and returns the ``(1-level)/2`` and ``(1+level)/2`` quantiles. For statistics
    without a t-interval (a median, a ratio); with 5 seeds it is rough: prefer
    :func:`mean_ci` for means.

    Example:
        >>> lo, hi = bootstrap_ci([1.0, 2.0, 3.0, 4.0, 10.0], np.median)
        >>> lo <= 3.0 <= hi
        True
        >>> bootstrap_ci([]) is None
        True
    """
    check_range("level", level, gt=0, lt=1)
    xs = np.asarray(finite(values), dtype=float)
    if len(xs) == 0:
        return None
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(xs), size=(int(resamples), len(xs)))
    stats_ = np.array([stat(xs[i]) for i in idx], dtype=float)
    lo, hi = np.quantile(stats_, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def _pairs(a: Sequence[Any], b: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    if len(a) != len(b):
        fail("b", f"as long as `a` ({len(a)} values, one per seed)", f"{len(b)} values")
    keep = [(float(x), float(y)) for x, y in zip(a, b)
            if x is not None and y is not None and math.isfinite(float(x)) and math.isfinite(float(y))]
    if not keep:
        return np.zeros(0), np.zeros(0)
    xa, xb = zip(*keep)
    return np.asarray(xa), np.asarray(xb)


def paired_test(a: Sequence[Any], b: Sequence[Any], *, method: str = "t",
                level: float = LEVEL) -> dict[str, Any]:
    """Paired comparison of ``a`` and ``b`` (one value per seed, the same seeds in order).

    The differences ``d_i = a_i - b_i`` (pairs with a missing value are left out):

    * ``method="t"``: paired t-test, ``t = mean(d) / (s_d / sqrt(n))``, ``n - 1`` degrees
      of freedom, two-sided p-value, and the t-interval of ``mean(d)``. When every
      difference is the same (``s_d = 0``) the test is degenerate: ``p = 1`` if they are
      all zero, else ``p = 0`` (the same difference on every seed).
    * ``method="wilcoxon"``: Wilcoxon signed-rank test (Wilcoxon 1945), exact for small
      ``n`` (zero differences dropped, as Wilcoxon did); the interval is still the
      t-interval of the mean difference. With 5 seeds its smallest two-sided p-value is
      0.0625, so it can never reject at 5%: use 6 or more seeds with it.

    Pairing removes the variance that both runs of a seed share (the initialization and
    the order of the data), so it detects smaller differences than an unpaired test.

    Returns:
        ``{"diff", "lo", "hi", "p", "n", "method", "paired": True}``.

    Example:
        >>> r = paired_test([0.91, 0.93, 0.92, 0.94, 0.92], [0.90, 0.91, 0.91, 0.92, 0.91])
        >>> round(r["diff"], 3), r["p"] < 0.01, r["lo"] > 0
        (0.014, True, True)
        >>> paired_test([0.9, 0.8], [0.9, 0.8])["p"]          # identical runs
        1.0
        >>> paired_test([3, 4, 5, 6, 7], [2, 3, 4, 5, 6])["p"]  # the same difference on 5 seeds: 2/2^5
        0.0625
    """
    check_choice("method", method, ["t", "wilcoxon"])
    xa, xb = _pairs(a, b)
    d = xa - xb
    n = len(d)
    ci = mean_ci(d.tolist(), level)
    out = {"diff": ci["mean"], "lo": ci["lo"], "hi": ci["hi"], "p": None, "n": n,
           "method": "paired t-test" if method == "t" else "Wilcoxon signed-rank", "paired": True}
    if n < 2:
        return out
    if np.all(d == d[0]):
        out["p"] = 1.0 if d[0] == 0 else min(1.0, 2.0 ** (1 - n))
        return out
    from scipy import stats
    if method == "t":
        t = d.mean() / (d.std(ddof=1) / math.sqrt(n))
        out["p"] = float(min(1.0, 2 * stats.t.sf(abs(t), n - 1)))
    else:
        nz = d[d != 0]
        out["p"] = 1.0 if len(nz) == 0 else float(stats.wilcoxon(nz).pvalue)
    return out


def unpaired_test(a: Sequence[Any], b: Sequence[Any], *, level: float = LEVEL) -> dict[str, Any]:
    """Welch's t-test for two groups run on different seeds (Welch 1947).

    ``t = (m_a - m_b) / sqrt(s_a^2/n_a + s_b^2/n_b)`` with the Welch-Satterthwaite degrees
    of freedom ``(v_a + v_b)^2 / (v_a^2/(n_a-1) + v_b^2/(n_b-1))``, ``v = s^2/n``; the
    interval of ``m_a - m_b`` uses the same ``t`` quantile.

    Example:
        >>> r = unpaired_test([1.0, 1.1, 0.9, 1.05], [2.0, 2.1, 1.9, 2.05])
        >>> round(r["diff"], 3), r["p"] < 1e-4, r["paired"]
        (-1.0, True, False)
    """
    xa, xb = np.asarray(finite(a)), np.asarray(finite(b))
    na, nb = len(xa), len(xb)
    out = {"diff": None, "lo": None, "hi": None, "p": None, "n": min(na, nb),
           "method": "Welch t-test", "paired": False}
    if na == 0 or nb == 0:
        return out
    out["diff"] = float(xa.mean() - xb.mean())
    if na < 2 or nb < 2:
        return out
    va, vb = xa.var(ddof=1) / na, xb.var(ddof=1) / nb
    if va + vb == 0:  # constant groups: the exact permutation p-value, 2 / C(na + nb, na)
        out["lo"] = out["hi"] = out["diff"]
        out["p"] = 1.0 if out["diff"] == 0 else min(1.0, 2.0 / math.comb(na + nb, na))
        return out
    df = (va + vb) ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1))
    half = _t(level, df) * math.sqrt(va + vb)
    from scipy import stats
    out.update(lo=out["diff"] - half, hi=out["diff"] + half,
               p=float(stats.ttest_ind(xa, xb, equal_var=False).pvalue))
    return out


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (Holm 1979): family-wise error rate <= alpha.

    Sort the ``m`` p-values, ``p_(1) <= ... <= p_(m)``; the adjusted value of the ``i``-th
    is ``max_{j <= i} min(1, (m - j + 1) p_(j))``. Reject where the adjusted value is
    ``< alpha``. Uniformly more powerful than Bonferroni, valid under any dependence.
    ``None`` entries (no test possible) stay ``None`` and do not count in ``m``.

    Example:
        >>> holm([0.01, 0.04, 0.03])
        [0.03, 0.06, 0.06]
        >>> holm([None, 0.2])
        [None, 0.2]
    """
    idx = [i for i, p in enumerate(pvalues) if p is not None]
    m = len(idx)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for k, i in enumerate(sorted(idx, key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - k) * float(pvalues[i])))
        out[i] = round(running, 15)
    return out


def compare_variants(values: Mapping[str, Sequence[Any]], *, seeds: Mapping[str, Sequence[int]] | None = None,
                     higher_is_better: bool = True, alpha: float = ALPHA, level: float = LEVEL,
                     method: str = "t", bounds: tuple[float, float] | None = None) -> dict[str, Any]:
    """Who won: intervals, every pairwise test (Holm-corrected), a ranking and the best.

    Each variant has one value per seed. Two variants that ran the same seeds are compared
    paired (:func:`paired_test`, ``method``); otherwise unpaired (:func:`unpaired_test`).
    All ``k(k-1)/2`` pairwise p-values form one family, adjusted with :func:`holm`.
    ``rank(v) = 1 + #{w : w significantly better than v}``: variants no one beats share
    rank 1. ``best`` is the variant with the best mean; every row carries its difference
    to the best with the interval and the adjusted p-value.

    Args:
        values: ``variant -> values over seeds``.
        seeds: ``variant -> seeds`` (same order as ``values``); pairs need equal seed lists.
            ``None``: every variant ran the same seeds (paired).
        higher_is_better: True for accuracy, False for a loss or steps.
        alpha: the family-wise error rate (default 0.05). level: of the intervals.
        method: ``"t"`` or ``"wilcoxon"`` for the paired tests.
        bounds: the range of the values (``(0, 1)`` for accuracies), clips their intervals.

    Returns:
        ``{"best", "rows", "pairs", "separable", "alpha", "level", "correction",
        "higher_is_better"}``; ``rows`` in ranking order, each ``{"variant", "mean", "lo",
        "hi", "n", "rank", "diff", "diff_lo", "diff_hi", "p", "p_adj", "method",
        "distinguishable"}`` (difference = this variant minus the best);
        ``separable``: at least one pairwise difference is significant.

    Example:
        >>> res = compare_variants({"a": [0.90, 0.91, 0.92, 0.90, 0.91],
        ...                         "b": [0.90, 0.91, 0.92, 0.91, 0.90],
        ...                         "c": [0.80, 0.82, 0.81, 0.80, 0.83]})
        >>> res["best"], [(r["variant"], r["rank"]) for r in res["rows"]]
        ('a', [('a', 1), ('b', 1), ('c', 3)])
        >>> res["separable"], res["rows"][2]["distinguishable"]
        (True, True)
    """
    check_range("alpha", alpha, gt=0, lt=1)
    names = list(values)
    if not names:
        fail("values", "a mapping of at least one variant to its values", values)
    sign = 1.0 if higher_is_better else -1.0
    cis = {v: mean_ci(values[v], level, bounds) for v in names}
    score = {v: (sign * cis[v]["mean"] if cis[v]["mean"] is not None else -math.inf) for v in names}
    order = sorted(names, key=lambda v: -score[v])  # stable: ties keep recipe order
    pairs = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            same = seeds is None or list(seeds.get(a, [])) == list(seeds.get(b, []))
            res = paired_test(values[a], values[b], method=method, level=level) if same else \
                unpaired_test(values[a], values[b], level=level)
            pairs.append({"a": a, "b": b, **res})
    for pr, adj in zip(pairs, holm([p["p"] for p in pairs])):
        pr["p_adj"] = adj
        pr["significant"] = adj is not None and adj < alpha

    def pair(a, b):
        for pr in pairs:
            if (pr["a"], pr["b"]) == (a, b):
                return pr, 1.0
            if (pr["a"], pr["b"]) == (b, a):
                return pr, -1.0
        return None, 1.0

    def better(w, v):  # w significantly better than v
        pr, s = pair(w, v)
        return bool(pr and pr["significant"] and pr["diff"] is not None and sign * s * pr["diff"] > 0)

    best = order[0]
    rows = []
    for v in order:
        row = {"variant": v, **{k: cis[v][k] for k in ("mean", "lo", "hi", "n")},
               "rank": 1 + sum(better(w, v) for w in names if w != v)}
        if v == best:
            row.update(diff=0.0, diff_lo=None, diff_hi=None, p=None, p_adj=None, method=None,
                       distinguishable=False)
        else:
            pr, s = pair(v, best)
            lo, hi = (pr["lo"], pr["hi"]) if s > 0 else (
                None if pr["hi"] is None else 0.0 - pr["hi"], None if pr["lo"] is None else 0.0 - pr["lo"])
            row.update(diff=None if pr["diff"] is None else s * pr["diff"] + 0.0, diff_lo=lo, diff_hi=hi,
                       p=pr["p"], p_adj=pr["p_adj"], method=pr["method"],
                       distinguishable=bool(pr["significant"]))
        rows.append(row)
    rows.sort(key=lambda r: (r["rank"], order.index(r["variant"])))
    return {"best": best, "rows": rows, "pairs": pairs, "separable": any(p["significant"] for p in pairs),
            "alpha": alpha, "level": level, "correction": "Holm", "higher_is_better": higher_is_better}


def kaplan_meier(times: Sequence[Any], budgets: Sequence[Any]) -> list[tuple[float, float]]:
    """Kaplan-Meier estimate of ``S(t) = P(T > t)`` from runs that may never reach the target.

    Run ``i`` reached the target at ``times[i]`` steps, or never (``None``: censored at
    its budget ``budgets[i]``). With ``d_j`` runs reaching it at ``t_j`` and ``n_j`` runs
    still "at risk" (neither reached nor censored before ``t_j``),
    ``S(t) = prod_{t_j <= t} (1 - d_j / n_j)`` (Kaplan & Meier 1958). Returns the steps of
    the curve, ``[(t_j, S(t_j))]``, starting at ``(0, 1)``.

    Example:
        >>> kaplan_meier([100, 200, None, None], [500, 500, 500, 500])
        [(0.0, 1.0), (100.0, 0.75), (200.0, 0.5)]
    """
    if len(times) != len(budgets):
        fail("budgets", f"one budget per run ({len(times)})", f"{len(budgets)} values")
    events = []
    for t, b in zip(times, budgets):
        if t is None or not math.isfinite(float(t)):
            events.append((float(b), 0))
        else:
            events.append((float(t), 1))
    curve, s, at_risk = [(0.0, 1.0)], 1.0, len(events)
    for t in sorted({e[0] for e in events}):
        d = sum(1 for e in events if e[0] == t and e[1] == 1)
        c = sum(1 for e in events if e[0] == t and e[1] == 0)
        if d:
            s *= 1 - d / at_risk
            curve.append((t, s))
        at_risk -= d + c
    return curve


def time_to_target(times: Sequence[Any], budgets: Sequence[Any], level: float = LEVEL) -> dict[str, Any]:
    """Steps (or seconds) to a target over seeds, with the runs that never reach it counted.

    * ``reached``: how many of the ``n`` runs reached it;
    * ``median``: the Kaplan-Meier median, the first ``t`` with ``S(t) <= 1/2``
      (:func:`kaplan_meier`); ``None`` when fewer than half the runs reached it (then the
      median is "more than the budget");
    * ``rmst``: the restricted mean ``E[min(T, B)]`` (Royston & Parmar 2013), a run that
      never reached the target counting as its budget ``B``, with its t-interval (the
      mean of ``min(T_i, B_i)``; equal to the area under the Kaplan-Meier curve when
      every run has the same budget). A lower bound on the mean time when some runs
      did not reach it, never an average of the lucky runs only.

    Example:
        >>> r = time_to_target([100, 200, None], [400, 400, 400])
        >>> r["reached"], r["n"], r["median"], round(r["rmst"]["mean"], 1)
        (2, 3, 200.0, 233.3)
    """
    curve = kaplan_meier(times, budgets)
    median = next((t for t, s in curve if s <= 0.5), None)
    capped = [float(b) if t is None or not math.isfinite(float(t)) else min(float(t), float(b))
              for t, b in zip(times, budgets)]
    return {"reached": sum(t is not None and math.isfinite(float(t)) for t in times), "n": len(times),
            "median": median, "rmst": mean_ci(capped, level), "capped": capped}


def performance_profiles(times: Mapping[str, Mapping[str, Any]], *, tau_max: float = 4.0,
                         points: int = 61) -> dict[str, Any]:
    """Performance profiles over workloads (Dolan & More 2002) and the AlgoPerf score.

    ``times[variant][workload]`` is the time (steps) the variant needed to reach the
    workload's target (``None``: never, within the budget). Per workload the ratio
    ``r_{w,v} = t_{w,v} / min_v t_{w,v}`` (inf when not reached); the profile of ``v`` is
    ``rho_v(tau) = |{w : r_{w,v} <= tau}| / |W|``, the fraction of workloads it solves
    within ``tau`` times the fastest. The score is the normalized area
    ``(1/(tau_max - 1)) int_1^tau_max rho_v(tau) dtau`` (AlgoPerf, Dahl et al. 2023, with
    ``tau_max = 4``): 1 means fastest everywhere, 0 means never within ``tau_max``.

    Returns:
        ``{"taus", "profiles": {v: [rho(tau)]}, "scores": {v: score}, "ratios": {v: {w: r}}}``.

    Example:
        >>> res = performance_profiles({"a": {"w1": 100, "w2": 300}, "b": {"w1": 200, "w2": 150}})
        >>> res["ratios"]["a"], res["ratios"]["b"]
        ({'w1': 1.0, 'w2': 2.0}, {'w1': 2.0, 'w2': 1.0})
        >>> round(res["scores"]["a"], 3), round(res["scores"]["b"], 3)
        (0.833, 0.833)
    """
    check_range("tau_max", tau_max, gt=1)
    variants = list(times)
    workloads = sorted({w for v in variants for w in times[v]})
    ratios: dict[str, dict[str, float]] = {v: {} for v in variants}
    for w in workloads:
        ts = {v: times[v].get(w) for v in variants}
        ok = [float(t) for t in ts.values() if t is not None and math.isfinite(float(t)) and float(t) > 0]
        fastest = min(ok) if ok else None
        for v, t in ts.items():
            good = t is not None and math.isfinite(float(t)) and float(t) > 0 and fastest
            ratios[v][w] = float(t) / fastest if good else math.inf
    taus = np.linspace(1.0, tau_max, points)
    profiles, scores = {}, {}
    for v in variants:
        rs = np.array([ratios[v][w] for w in workloads], dtype=float)
        rho = np.array([(rs <= t).mean() if len(rs) else 0.0 for t in taus])
        profiles[v] = rho.tolist()
        # exact area of the step function rho(tau) = mean_w [r_w <= tau] over [1, tau_max]
        area = float(np.mean([max(0.0, tau_max - r) if r <= tau_max else 0.0 for r in rs])) if len(rs) else 0.0
        scores[v] = area / (tau_max - 1)
    return {"taus": taus.tolist(), "profiles": profiles, "scores": scores,
            "ratios": {v: {w: (r if math.isfinite(r) else None) for w, r in rs_.items()}
                       for v, rs_ in ratios.items()}}


def _num(v: float | None, scale: float, digits: int) -> str:
    return "n/a" if v is None else f"{v * scale:.{digits}f}"


def fmt_p(p: float | None) -> str:
    """A p-value as a report shows it.

    >>> fmt_p(0.31234), fmt_p(0.0004), fmt_p(None)
    ('p=0.31', 'p<0.001', 'no test')
    """
    if p is None:
        return "no test"
    if p < 0.001:
        return "p<0.001"
    return f"p={p:.2g}" if p < 0.1 else f"p={p:.2f}"


def verdict(result: dict[str, Any], *, what: str, scale: float = 1.0, unit: str = "", diff_unit: str | None = None,
            digits: int = 1, best_word: str = "best") -> list[str]:
    """The answer of :func:`compare_variants` in words, first line first.

    ``what`` names the measure ("test accuracy"); values are shown times ``scale`` with
    ``unit`` ("%" for accuracies, whose differences are "points"); ``best_word`` is what
    the leader is called ("best", "fastest"). When no pairwise difference is significant,
    the first line says the data cannot separate the variants.

    Example:
        >>> res = compare_variants({"adam": [0.97, 0.975, 0.98, 0.972, 0.978],
        ...                         "sgd": [0.96, 0.965, 0.97, 0.962, 0.97]})
        >>> print("\\n".join(verdict(res, what="test accuracy", scale=100, unit="%")))
        adam best: test accuracy 97.5% [97.0, 98.0] (mean [95% CI] over 5 seeds).
        sgd lower by 1.0 points [0.8, 1.1] (paired t-test, Holm-adjusted p<0.001).
        >>> res = compare_variants({"a": [0.9, 0.92, 0.91], "b": [0.91, 0.9, 0.92]})
        >>> verdict(res, what="test accuracy", scale=100, unit="%")[0]
        'Not distinguishable: no difference in test accuracy between a and b is significant (Holm-corrected, alpha 0.05, 3 seeds).'
    """
    du = diff_unit if diff_unit is not None else (" points" if unit == "%" else (f" {unit}" if unit else ""))
    u = unit if unit in ("%",) else (f" {unit}" if unit else "")
    rows = result["rows"]
    best = rows[0] if rows[0]["variant"] == result["best"] else next(r for r in rows if r["variant"] == result["best"])
    ns = sorted({r["n"] for r in rows})
    seeds = f"{ns[0]} seeds" if len(ns) == 1 else f"{ns[0]}-{ns[-1]} seeds"
    level = int(round(100 * result["level"]))

    def interval(r, lo="lo", hi="hi", sign=1.0):
        a, b = r[lo], r[hi]
        if a is None or b is None:
            return "[no interval]"
        a, b = sorted((sign * a, sign * b))
        return f"[{_num(a, scale, digits)}, {_num(b, scale, digits)}]"

    lines = []
    if len(rows) > 1 and not result["separable"]:
        names = [r["variant"] for r in rows]
        listed = " and ".join(names) if len(names) == 2 else ", ".join(names[:-1]) + " and " + names[-1]
        lines.append(f"Not distinguishable: no difference in {what} between {listed} is significant "
                     f"(Holm-corrected, alpha {result['alpha']:g}, {seeds}).")
        spread = [max(abs(r["diff_lo"]), abs(r["diff_hi"])) for r in rows[1:]
                  if r["diff_lo"] is not None and r["diff_hi"] is not None]
        tail = (f"; differences up to {_num(max(spread), scale, digits)}{du} are within the {level}% "
                f"intervals, so more seeds or a larger validation/test set are needed to tell them apart"
                if spread else "")
        lines.append(f"{'Highest' if result['higher_is_better'] else 'Lowest'} mean: {best['variant']}, {what} {_num(best['mean'], scale, digits)}{u} "
                     f"{interval(best)}{tail}.")
        return lines
    lines.append(f"{best['variant']} {best_word}: {what} {_num(best['mean'], scale, digits)}{u} {interval(best)} "
                 f"(mean [{level}% CI] over {seeds}).")
    for r in rows:
        if r["variant"] == best["variant"]:
            continue
        if r["distinguishable"]:
            word = "lower" if r["diff"] < 0 else "higher"
            mag = abs(r["diff"])
            sign = -1.0 if r["diff"] < 0 else 1.0
            lines.append(f"{r['variant']} {word} by {_num(mag, scale, digits)}{du} "
                         f"{interval(r, 'diff_lo', 'diff_hi', sign)} ({r['method']}, Holm-adjusted "
                         f"{fmt_p(r['p_adj'])}).")
        else:
            lines.append(f"{r['variant']} not distinguishable from {best['variant']} "
                         f"({_num(r['diff'], scale, digits)}{du} {interval(r, 'diff_lo', 'diff_hi')}, "
                         f"Holm-adjusted {fmt_p(r['p_adj'])}).")
    return lines


__all__ = ["ALPHA", "LEVEL", "bootstrap_ci", "compare_variants", "finite", "fmt_p", "holm", "kaplan_meier",
           "mean_ci", "paired_test", "performance_profiles", "time_to_target", "unpaired_test", "verdict"]
