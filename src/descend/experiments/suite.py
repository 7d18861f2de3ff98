"""A suite of workloads and AlgoPerf-style performance profiles: ``descend compare --suite``.

One workload says nothing about an optimizer in general; a suite of different ones, each
with a target and a step budget, does (AlgoPerf: Dahl et al. 2023, "Benchmarking Neural
Network Training Algorithms"). Every workload here is bundled or generated offline, has a
validation set large enough to tell optimizers apart (640-800 examples or more), and a
target set a little below what the default optimizers reach within its budget (measured
with Adam, momentum and SGD at their usual learning rates, one seed), so that the time to
reach it separates them:

=====================  =======================================================  ==========================
workload               data and model                                            target, budget
=====================  =======================================================  ==========================
``digits_mlp``         8x8 digits (360 validation), MLP 64-128-10                validation acc 94%, 20 epochs
``mnist1d_cnn``        MNIST-1D (800 validation), the paper's CNN 3x25           validation acc 70%, 20 epochs
``mnist1d_gru``        MNIST-1D, the paper's bidirectional GRU (hidden 6)        validation acc 50%, 15 epochs
``noisy_quadratic``    noisy quadratic model, 32 dims, condition 100, linear     validation MSE 0.27 (floor 0.25), 20 epochs
``toy2d_spirals``      two spirals (800 validation), MLP 2-64-64-2               validation acc 90%, 30 epochs
``friedman_regression``  Friedman #1 (960 validation), MLP 10-64-64-1          validation MSE 0.07 (floor 0.04), 30 epochs
=====================  =======================================================  ==========================

The target is checked every ``eval_every`` steps on the validation set. The recipe's
variants (optimizer, schedules, regularizers) run on every workload, whose data, model,
loss, metrics, batch size, epochs and target replace the recipe's. Per workload, a
variant's time is the Kaplan-Meier median over its seeds of the steps to the target
(never reached by half the seeds: infinite), the performance profile
``rho_v(tau)`` is the fraction of workloads on which it is within ``tau`` times the
fastest, and the score is the normalized area under it up to ``tau = 4``
(:func:`descend.analysis.stats.performance_profiles`).
"""

from __future__ import annotations

import copy
import html
import os
import time
from pathlib import Path
from typing import Any

from descend.experiments import recipe as recipes
from descend.experiments.recipe import RecipeError

WORKLOADS: dict[str, dict[str, Any]] = {
    "digits_mlp": {
        "description": "scikit-learn's 8x8 digits (1078 train, 360 validation, 359 test), MLP 64-128-10 ReLU",
        "data": {"name": "digits", "val_fraction": 0.25}, "model": {"name": "mlp", "hidden": [128]},
        "loss": {"name": "cross_entropy"}, "metrics": ["accuracy"], "batch_size": 32, "epochs": 20,
        "target_accuracy": 0.94, "eval_every": 10},
    "mnist1d_cnn": {
        "description": "MNIST-1D (3200 train, 800 validation, 1000 test), the paper's CNN (3 x 25 channels)",
        "data": {"name": "mnist1d", "val_fraction": 0.2},
        "model": {"name": "cnn", "channels": [25, 25, 25], "kernel_size": 3, "pool": None},
        "loss": {"name": "cross_entropy"}, "metrics": ["accuracy"], "batch_size": 100, "epochs": 20,
        "target_accuracy": 0.7, "eval_every": 8},
    "mnist1d_gru": {
        "description": "MNIST-1D, the paper's GRU (bidirectional, hidden 6, all 40 states to the classifier)",
        "data": {"name": "mnist1d", "val_fraction": 0.2},
        "model": {"name": "gru", "hidden_size": 6, "bidirectional": True, "readout": "all"},
        "loss": {"name": "cross_entropy"}, "metrics": ["accuracy"], "batch_size": 100, "epochs": 15,
        "target_accuracy": 0.5, "eval_every": 16},
    "noisy_quadratic": {
        "description": "noisy quadratic model: least squares, 32 dimensions, condition number 100, noise floor "
                       "0.25 (5120 train, 1280 validation, 1600 test), linear model",
        "data": {"name": "noisy_quadratic", "val_fraction": 0.2}, "model": {"name": "mlp", "hidden": []},
        "loss": {"name": "mse"}, "metrics": [], "batch_size": 100, "epochs": 20, "target_loss": 0.27,
        "eval_every": 10},
    "toy2d_spirals": {
        "description": "two interleaved spirals, 5000 points (3200 train, 800 validation, 1000 test), MLP 2-64-64-2",
        "data": {"name": "toy2d", "kind": "spirals", "n_samples": 5000, "val_fraction": 0.2},
        "model": {"name": "mlp", "hidden": [64, 64]}, "loss": {"name": "cross_entropy"},
        "metrics": ["accuracy"], "batch_size": 64, "epochs": 30, "target_accuracy": 0.9, "eval_every": 10},
    "friedman_regression": {
        "description": "Friedman #1 regression, 6000 points (3840 train, 960 validation, 1200 test), y "
                       "standardized (noise floor 0.04), MLP 10-64-64-1",
        "data": {"name": "friedman", "val_fraction": 0.2}, "model": {"name": "mlp", "hidden": [64, 64]},
        "loss": {"name": "mse"}, "metrics": [], "batch_size": 64, "epochs": 30, "target_loss": 0.07,
        "eval_every": 10},
}

#: What a workload sets; the recipe's values of these fields (and its variants') are replaced.
WORKLOAD_FIELDS = ("data", "model", "init", "loss", "metrics", "batch_size", "epochs", "target_accuracy",
                   "target_loss", "eval_every")


def workload_recipe(recipe: dict[str, Any], name: str) -> dict[str, Any]:
    """The recipe mapping with workload ``name``'s fields in place of its own.

    >>> raw = {"name": "r", "data": {"name": "digits"}, "model": {"name": "mlp"}, "optimizer": {"name": "sgd"},
    ...        "epochs": 3, "variants": [{"name": "adam", "optimizer": {"name": "adam"}, "epochs": 9}]}
    >>> w = workload_recipe(raw, "noisy_quadratic")
    >>> w["name"], w["data"]["name"], w["loss"], w["variants"][0]
    ('r-noisy_quadratic', 'noisy_quadratic', {'name': 'mse'}, {'name': 'adam', 'optimizer': {'name': 'adam'}})
    """
    if name not in WORKLOADS:
        raise RecipeError(f"--suite: `workload` must be one of {', '.join(map(repr, WORKLOADS))}. "
                          f"Received: workload={name!r}")
    spec = WORKLOADS[name]
    out = {k: copy.deepcopy(v) for k, v in recipe.items() if k not in WORKLOAD_FIELDS and k != "grid"}
    out["name"] = f"{recipe.get('name', 'suite')}-{name}"
    out["description"] = spec["description"]
    for k in WORKLOAD_FIELDS:
        if k in spec:
            out[k] = copy.deepcopy(spec[k])
    out["variants"] = [{k: copy.deepcopy(v) for k, v in var.items() if k not in WORKLOAD_FIELDS}
                       for var in recipe.get("variants") or []]
    if recipe.get("grid"):
        out["grid"] = {k: v for k, v in recipe["grid"].items() if k.split(".")[0] not in WORKLOAD_FIELDS}
    return out


def run_suite(recipe, *, out: str | os.PathLike = "runs", device: str | None = None, seeds: list[int] | None = None,
              quiet: bool = False, overwrite: bool = False, workloads: list[str] | None = None,
              progress: bool | None = None, tau_max: float = 4.0) -> tuple[Path, dict[str, Any]]:
    """Run the recipe's variants on every workload (or those named); write ``out/<name>-suite``.

    Writes ``results.json`` (per workload: the statistics and summaries; the profiles
    and scores), ``performance_profiles.png`` and ``report.html`` whose first lines rank
    the variants by score and give each workload's answer.

    Returns:
        ``(folder, results)``.

    Example (minutes on two cores)::

        folder, results = run_suite("default", workloads=["digits_mlp", "noisy_quadratic"], seeds=[0, 1, 2])
    """
    from descend.analysis.stats import performance_profiles
    from descend.experiments import runner, verdicts
    from descend.experiments.output import _meta, _path_name, _recipe_dict, _Staging, _write_json
    from descend.io import load_yaml

    names = list(workloads) if workloads else list(WORKLOADS)
    for n in names:
        if n not in WORKLOADS:
            raise RecipeError(f"--suite: `workload` must be one of {', '.join(map(repr, WORKLOADS))}. "
                              f"Received: workload={n!r}")
    base = recipes.load(recipe, overrides={"seeds": list(seeds)} if seeds else None)
    raw = copy.deepcopy(recipe) if isinstance(recipe, dict) else load_yaml(recipes.find(recipe))
    raw = {**raw, "name": base.name}
    if seeds:
        raw["seeds"] = list(seeds)
        for v in raw.get("variants") or []:
            v.pop("seeds", None)
    dev = runner.check_device(device or base.device)
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    per = {n: recipes.load(workload_recipe(raw, n)) for n in names}  # every recipe checked before training
    for n, r in per.items():
        for run in r.runs():
            runner.build(run, run.spec.seeds[0], device=dev)
    say(f"descend compare --suite: {base.name}: {len(base.runs())} variants on {len(names)} workloads")
    t0 = time.perf_counter()
    results: dict[str, Any] = {}
    times: dict[str, dict[str, Any]] = {}
    for n, r in per.items():
        say(f"  workload {n}: {WORKLOADS[n]['description']}")

        def on_result(run, res, n=n):
            say(f"    {run.name:<16} seed {res['seed']:<3} steps to target "
                f"{res['steps_to_target'] if res['steps_to_target'] is not None else 'never'} of {res['steps_run']}")
        variants = runner.run_all(r.runs(), device=dev, on_result=on_result)
        stats = runner.clean(verdicts.analyse(variants))
        for v in variants:
            times.setdefault(v["name"], {})[n] = v["summary"]["steps_to_target"]["median"]
            for x in v["runs"]:
                x.pop("monitors", None)
                x.pop("steps", None)
        results[n] = {"description": WORKLOADS[n]["description"], "spec": WORKLOADS[n], "statistics": stats,
                      "summary": [v["summary"] for v in variants], "variants": variants}
    profiles = performance_profiles(times, tau_max=tau_max)
    elapsed = time.perf_counter() - t0
    ranking = sorted(profiles["scores"], key=lambda v: -profiles["scores"][v])
    answer = [f"Suite score (area under the performance profile up to tau={tau_max:g}; 1 = fastest on every "
              f"workload): " + ", ".join(f"{v} {profiles['scores'][v]:.2f}" for v in ranking) + "."]
    for v in ranking:
        solved = sum(1 for w in names if profiles["ratios"][v].get(w) is not None)
        fastest = sum(1 for w in names if profiles["ratios"][v].get(w) == 1.0)
        answer.append(f"{v}: reached the target (median over seeds) on {solved} of {len(names)} workloads, "
                      f"fastest on {fastest}.")
    for n in names:
        first = results[n]["statistics"]["answer"]
        answer.append(f"[{n}] " + " ".join(first[:1]))
    out_res = {"name": base.name, "meta": _meta(dev, elapsed), "recipe": _recipe_dict(base),
               "workloads": results, "times": times, "profiles": profiles, "answer": answer}
    staging = _Staging(Path(out), f"{_path_name(base.source, 'name', base.name)}-suite", overwrite)
    with staging as tmp:
        figs = write_profile_plot(profiles, str(tmp))
        _write_json(tmp / "results.json", runner.clean(out_res))
        _write_report(tmp / "report.html", base, out_res, figs, _meta(dev, elapsed))
    final = staging.final
    for line in answer:
        say(line)
    print(f"wrote {final}/report.html and results.json ({elapsed:.1f}s)" if not quiet else str(final))
    return final, out_res


def write_profile_plot(profiles: dict[str, Any], out_dir: str) -> list[tuple[str, str]]:
    """``performance_profiles.png``: ``rho_v(tau)`` of every variant (a step function in tau)."""
    from descend.experiments.plots import STYLES, _figure
    fig, (ax,) = _figure(1)
    for i, (v, rho) in enumerate(profiles["profiles"].items()):
        ax.step(profiles["taus"], rho, where="post", linestyle=STYLES[i % len(STYLES)],
                label=f"{v} (score {profiles['scores'][v]:.2f})")
    ax.set_xlabel("tau (steps to the target / fastest variant's)")
    ax.set_ylabel("fraction of workloads")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Performance profiles (Dolan & More 2002)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fname = "performance_profiles.png"
    fig.savefig(os.path.join(out_dir, fname))
    return [(fname, "Performance profiles: fraction of workloads reached within tau times the fastest")]


def _write_report(path: Path, base, res: dict[str, Any], figs, meta) -> None:
    from descend.experiments.report import _CSS, _html_figures, _html_table, table_rows
    from descend.io import write_text
    e = html.escape
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>descend compare --suite: "
             f"{e(base.name)}</title><style>{_CSS}</style></head><body>",
             f"<h1>descend compare --suite: {e(base.name)}</h1>",
             "<h2>Answer</h2><ul class='answer'>" + "".join(f"<li>{e(x)}</li>" for x in res["answer"]) + "</ul>",
             "<p class='sub'>" + " · ".join(f"{e(str(k))}: {e(str(v))}" for k, v in meta.items()) + "</p>",
             _html_figures(figs)]
    rows = [["variant"] + list(res["workloads"]) + ["score"]]
    for v, ws in res["times"].items():
        rows.append([v] + [("never" if ws.get(w) is None else f"{ws[w]:.0f}") for w in res["workloads"]]
                    + [f"{res['profiles']['scores'][v]:.2f}"])
    parts.append("<h2>Steps to the target</h2>" + _html_table(rows)
                 + "<p class='sub'>Kaplan-Meier median over seeds of the steps to each workload's target; "
                   "never: fewer than half the seeds reached it within the budget.</p>")
    for w, r in res["workloads"].items():
        spec = r["spec"]
        tgt = (f"validation loss <= {spec['target_loss']:g}" if "target_loss" in spec
               else f"validation accuracy >= {100 * spec['target_accuracy']:g}%")
        parts.append(f"<h2>{e(w)}</h2><p>{e(r['description'])}; target {e(tgt)}, {spec['epochs']} epochs, checked "
                     f"every {spec['eval_every']} steps.</p><ul>"
                     + "".join(f"<li>{e(x)}</li>" for x in r["statistics"]["answer"]) + "</ul>"
                     + _html_table(table_rows(r["summary"], r["statistics"])))
    parts.append("</body></html>")
    write_text(path, "\n".join(parts))


__all__ = ["WORKLOADS", "WORKLOAD_FIELDS", "run_suite", "workload_recipe", "write_profile_plot"]
