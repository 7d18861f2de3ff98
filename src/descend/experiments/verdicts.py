"""Who won a comparison, in numbers and in words: the statistics of a ``descend compare`` run.

For each measure, one value per seed and variant goes to
:func:`descend.analysis.stats.compare_variants` (paired over seeds when the variants ran
the same seeds: same initial weights and data order; Holm-corrected; shared ranks), and
:func:`descend.analysis.stats.verdict` says the answer:

* test accuracy (higher is better; in %), or the test loss for a regression recipe
  (``target_loss``);
* steps to the target on the validation set, each run that never reached it counted as
  its budget (the restricted mean, lower is better): steps, not seconds, are the measure
  of speed, since seconds depend on the machine and on what else ran on it;
* the machine's load: when a run ended with a 1-minute load average above the number of
  CPUs, the seconds columns are flagged as measured on a busy machine.

:func:`analyse` returns the JSON-ready results (``results.json["statistics"]``) and the
answer's lines, which open the terminal summary and ``report.html``.
"""

from __future__ import annotations

from typing import Any

from descend.analysis.stats import ALPHA, compare_variants, verdict


def _values(variants: list[dict[str, Any]], key: str) -> dict[str, list]:
    return {v["name"]: [r.get(key) for r in v["runs"]] for v in variants}


def _capped(variants: list[dict[str, Any]], key: str) -> dict[str, list]:
    return {v["name"]: list((v["summary"].get(key) or {}).get("capped") or []) for v in variants}


def target_words(target: dict[str, Any] | None) -> str:
    """The target as a phrase.

    >>> target_words({"metric": "val_acc", "mode": "max", "value": 0.95})
    'validation accuracy >= 95%'
    >>> target_words({"metric": "val_loss", "mode": "min", "value": 0.3})
    'validation loss <= 0.3'
    """
    if not target:
        return "the target"
    if target["metric"].endswith("acc"):
        return f"validation accuracy >= {100 * target['value']:g}%"
    return f"validation loss <= {target['value']:g}"


def analyse(variants: list[dict[str, Any]], *, alpha: float = ALPHA) -> dict[str, Any]:
    """Statistics and the answer in words for the ``variants`` of a comparison.

    Args:
        variants: ``[{"name", "runs": [result per seed], "summary"}]`` as
            :func:`descend.experiments.runner.run_all` returns them.
        alpha: family-wise error rate of each measure's tests (Holm), default 0.05.

    Returns:
        ``{"measures": {key: {"label", "result", "lines"}}, "answer": [lines], "busy",
        "load_max", "seeds"}``.

    Example:
        >>> runs = lambda accs: [{"seed": i, "final_test_acc": a, "steps_to_target": 100, "steps_run": 200}
        ...                      for i, a in enumerate(accs)]
        >>> from descend.experiments.runner import summarize
        >>> vs = [{"name": n, "runs": runs(a)} for n, a in (("adam", [.97, .975, .98]), ("sgd", [.90, .91, .905]))]
        >>> for v in vs: v["summary"] = summarize(v["name"], v["runs"])
        >>> print(analyse(vs)["answer"][0])
        adam best: test accuracy 97.5% [96.3, 98.7] (mean [95% CI] over 3 seeds).
    """
    seeds = {v["name"]: list(v["summary"].get("seeds") or [r.get("seed") for r in v["runs"]]) for v in variants}
    target = next((r.get("target") for v in variants for r in v["runs"] if r.get("target")), None)
    measures: dict[str, Any] = {}
    answer: list[str] = []
    n_max = max((len(v["runs"]) for v in variants), default=0)
    regression = bool(target and target["metric"] == "val_loss")
    has_acc = any(r.get("final_test_acc") is not None for v in variants for r in v["runs"])
    primary = ("final_test_loss", "test loss", False, 1.0, "", 3) if regression or not has_acc else \
        ("final_test_acc", "test accuracy", True, 100.0, "%", 1)
    key, label, higher, scale, unit, digits = primary
    if len(variants) >= 1 and any(x is not None for xs in _values(variants, key).values() for x in xs):
        res = compare_variants(_values(variants, key), seeds=seeds, higher_is_better=higher, alpha=alpha,
                               bounds=(0.0, 1.0) if key.endswith("acc") else None)
        lines = verdict(res, what=label, scale=scale, unit=unit, digits=digits)
        measures[key] = {"label": label, "result": res, "lines": lines}
        answer += lines
    reached = any(r.get("steps_to_target") is not None for v in variants for r in v["runs"])
    words = target_words(target)
    if reached:
        res = compare_variants(_capped(variants, "steps_to_target"), seeds=seeds, higher_is_better=False,
                               alpha=alpha)
        lines = verdict(res, what=f"steps to {words}", unit="steps", digits=0, best_word="fastest")
        reach = {v["name"]: v["summary"].get("reached") for v in variants}
        lines.append("Reached the target (runs): " + ", ".join(f"{k} {x}" for k, x in reach.items())
                     + "; a run that never reached it counts as its whole budget (restricted mean).")
        measures["steps_to_target"] = {"label": f"steps to {words}", "result": res, "lines": lines}
        answer += lines
    elif variants:
        answer.append(f"No run of any variant reached {words}: no time-to-target comparison.")
    if n_max < 2:
        answer.insert(0, "One seed per variant: no interval or test is possible, so these are single "
                         "runs, not a verdict (use --seeds 0 1 2 3 4).")
    loads = [v["summary"].get("load_max") for v in variants if v["summary"].get("load_max") is not None]
    busy = any(v["summary"].get("busy") for v in variants)
    if busy:
        answer.append(f"Seconds were measured on a busy machine (load average up to {max(loads):.1f}); "
                      "they are flagged and do not compare across runs: steps are the measure.")
    return {"measures": measures, "answer": answer, "busy": busy, "load_max": max(loads) if loads else None,
            "seeds": seeds, "alpha": alpha}


__all__ = ["analyse", "target_words"]
