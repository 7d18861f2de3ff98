"""Fair tuning: every variant gets the same budget of quasirandom trials from its own search
space, is chosen on validation, and is then run on fresh seeds and reported on test.

Optimizer comparisons flip when one contender is tuned harder than another (Sivaprasad et
al. 2020, "Optimizer benchmarking needs to account for hyperparameter tuning"; Schmidt et
al. 2021, "Descending through a crowded valley"). AlgoPerf's external-tuning ruleset
(Dahl et al. 2023) gives every submission the same number of quasirandom trials from the
search space it declares. ``descend compare RECIPE --tune`` does the same:

1. **Search space** per variant (``search:``; shared keys in the recipe's top level,
   per-variant keys in each variant), dotted paths into the variant as in ``grid``::

       search:
         optimizer.lr: {log_uniform: [1.0e-4, 1.0e-1]}     # exp(U(log lo, log hi))
         optimizer.momentum: {uniform: [0.8, 0.99]}        # U(lo, hi)
         batch_size: {int_uniform: [32, 128]}              # an integer in [lo, hi]
         optimizer.nesterov: {choice: [true, false]}       # one of the values
         optimizer.weight_decay: {fixed: 0.0}              # not searched

2. **Equal budget**: ``tune.trials`` trials (default 8) for every variant, the points of a
   scrambled Sobol sequence (``tune.sampler: sobol``; or ``halton``) seeded with
   ``tune.seed`` (default 0), so the draw is reproducible and spreads evenly over the
   space; coordinate ``u`` in [0, 1) maps to each dimension as written above (a choice of
   ``k`` values takes ``floor(k u)``). Variants with search spaces of the same dimension
   see the same points.
3. **Selection on validation**: each trial trains with ``tune.trial_seed`` (default 1000)
   and is scored by ``tune.metric`` (default ``val_acc``, or ``val_loss`` with
   ``target_loss``) at the end of its budget (``tune.select: final``; ``best``: the best
   epoch). A trial that diverged scores worst.
4. **Fresh seeds, test split**: the chosen configuration of every variant is trained on
   ``tune.final_seeds`` (default: the recipe's ``seeds``; they must differ from the trial
   seed) and reported like ``descend compare`` (test accuracy, paired tests, ranks, the
   answer in words), plus the tuning: each variant's best-so-far curve against the
   number of trials (how hard it is to tune) and the chosen hyperparameters.

Trials run on Ray Tune (local by default, one CPU and one thread each, or an existing
cluster with ``address`` / ``RAY_ADDRESS``); ``tune.early_stopping: true`` (or
``--early-stopping``) stops hopeless trials with ASHA (Li et al. 2020), run per variant so
that one variant's trials never stop another's. ``executor="local"`` runs the trials one
after another in this process, without Ray and without early stopping.
Ray is an optional extra: ``pip install 'descend[sweep]'``.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from descend._validation import check_choice, check_int
from descend.experiments import recipe as recipes
from descend.experiments.recipe import RecipeError, Run, RunSpec, set_path

KINDS = ("log_uniform", "uniform", "int_uniform", "choice", "fixed")
TUNE_KEYS = {"trials", "sampler", "seed", "trial_seed", "final_seeds", "metric", "select", "early_stopping",
             "grace_epochs", "reduction_factor", "max_concurrent"}


@dataclass
class Dimension:
    """One searched hyperparameter: its dotted ``path``, ``kind`` (:data:`KINDS`) and ``args``.

    :meth:`value` maps a quasirandom coordinate ``u`` in [0, 1) to a value.

    >>> Dimension("optimizer.lr", "log_uniform", [1e-4, 1e-2]).value(0.5)
    0.001
    >>> Dimension("batch_size", "int_uniform", [32, 35]).value(0.99), Dimension("x", "choice", ["a", "b"]).value(0.5)
    (35, 'b')
    """

    path: str
    kind: str
    args: Any

    @property
    def searched(self) -> bool:
        return self.kind != "fixed"

    def value(self, u: float = 0.0) -> Any:
        if self.kind == "fixed":
            return copy.deepcopy(self.args)
        if self.kind == "log_uniform":
            lo, hi = (math.log(float(a)) for a in self.args)
            return float(f"{math.exp(lo + u * (hi - lo)):.6g}")
        if self.kind == "uniform":
            lo, hi = (float(a) for a in self.args)
            return float(f"{lo + u * (hi - lo):.6g}")
        if self.kind == "int_uniform":
            lo, hi = (int(a) for a in self.args)
            return min(hi, lo + int(math.floor(u * (hi - lo + 1))))
        options = list(self.args)
        return copy.deepcopy(options[min(len(options) - 1, int(math.floor(u * len(options))))])


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def parse_space(run: Run) -> list[Dimension]:
    """The search space of ``run`` (its merged ``search`` field), validated.

    Errors name the field where the recipe wrote it:
    ``variants[1].search.optimizer.lr: `log_uniform` must be [low, high] with 0 < low < high. Received: ...``.

    >>> r = recipes.load({"name": "r", "data": {"name": "digits"}, "model": {"name": "mlp"},
    ...                   "optimizer": {"name": "sgd"}, "epochs": 1,
    ...                   "search": {"optimizer.lr": {"log_uniform": [1.0e-3, 1.0]}}})
    >>> parse_space(r.runs()[0])
    [Dimension(path='optimizer.lr', kind='log_uniform', args=[0.001, 1.0])]
    """
    dims = []
    for path, spec in (run.spec.search or {}).items():
        where = ["search", path]
        if not isinstance(path, str) or path.split(".")[0] not in recipes.RUN_KEYS - {"search"}:
            raise run.error(["search"], "a search key must be a dotted path into a variant field (e.g. "
                                        f"optimizer.lr). Received: search key {path!r}")
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in KINDS:
            raise run.error(where, f"a dimension must be one of {{{': ..., '.join(KINDS)}: ...}} (one key). "
                                   f"Received: {path}={spec!r}")
        kind, args = next(iter(spec.items()))
        if kind in ("log_uniform", "uniform", "int_uniform"):
            ok = isinstance(args, list) and len(args) == 2 and all(_number(a) for a in args) and args[0] < args[1]
            if kind == "log_uniform":
                ok = ok and args[0] > 0
            if kind == "int_uniform":
                ok = ok and all(isinstance(a, int) for a in args)
            need = {"log_uniform": "[low, high] with 0 < low < high", "uniform": "[low, high] with low < high",
                    "int_uniform": "[low, high], integers with low < high"}[kind]
            if not ok:
                hint = ""
                if isinstance(args, list) and any(isinstance(a, str) for a in args):
                    hint = " (YAML reads 1e-4 as a string: write 1.0e-4)"
                raise run.error(where, f"`{kind}` must be {need}{hint}. Received: {kind}={args!r}")
        elif kind == "choice" and not (isinstance(args, list) and args):
            raise run.error(where, f"`choice` must be a non-empty list of values. Received: choice={args!r}")
        dims.append(Dimension(path, kind, args))
    return dims


def sample(dims: list[Dimension], n: int, *, sampler: str = "sobol", seed: int = 0) -> list[dict[str, Any]]:
    """``n`` assignments ``{path: value}``: the first ``n`` points of a scrambled, seeded
    Sobol (Owen scrambling; Sobol 1967) or Halton sequence over the searched dimensions.

    Sobol points are balanced in blocks of powers of two: ``n = 8, 16, ...`` fill the space
    most evenly. With no searched dimension every trial is the recipe's own configuration.

    >>> dims = [Dimension("optimizer.lr", "log_uniform", [1e-4, 1e-1])]
    >>> pts = sample(dims, 4, seed=0)
    >>> len(pts), all(1e-4 <= p["optimizer.lr"] <= 1e-1 for p in pts), pts == sample(dims, 4, seed=0)
    (4, True, True)
    """
    check_int("n", n, ge=1)
    check_choice("sampler", sampler, ["sobol", "halton"])
    searched = [d for d in dims if d.searched]
    if searched:
        from scipy.stats import qmc
        engine = (qmc.Sobol if sampler == "sobol" else qmc.Halton)(d=len(searched), scramble=True, seed=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "balance properties need n = 2^m": documented above
            points = engine.random(n)
    else:
        points = [[] for _ in range(n)]
    out = []
    for row in points:
        a = {d.path: d.value() for d in dims if not d.searched}
        a.update({d.path: d.value(float(u)) for d, u in zip(searched, row)})
        out.append(a)
    return out


def configure(run: Run, assignment: dict[str, Any]) -> Run:
    """``run`` with the values of ``assignment`` (``{dotted path: value}``) set, validated.

    >>> r = recipes.load({"name": "r", "data": {"name": "digits"}, "model": {"name": "mlp"},
    ...                   "optimizer": {"name": "sgd", "lr": 0.1}, "epochs": 1})
    >>> configure(r.runs()[0], {"optimizer.lr": 0.01, "batch_size": 32}).spec.optimizer.kwargs["lr"]
    0.01
    """
    d = run.spec.model_dump()
    for path, value in assignment.items():
        set_path(d, path, copy.deepcopy(value))
    try:
        spec = RunSpec(**d)
    except Exception as e:  # pydantic's error, with the path
        raise run.error(["search"], f"a sampled configuration is invalid: {e}. Received: {assignment!r}") from None
    new = Run(spec=spec, origin=run.origin, recipe=run.recipe)
    new.check_static()
    return new


def settings(r: recipes.Recipe, *, trials: int | None = None, early_stopping: bool | None = None,
             max_concurrent: int | None = None, final_seeds: list[int] | None = None) -> dict[str, Any]:
    """The recipe's ``tune`` section with defaults filled in and every value checked.

    >>> r = recipes.load({"name": "r", "data": {"name": "digits"}, "model": {"name": "mlp"},
    ...                   "optimizer": {"name": "sgd"}, "epochs": 1, "seeds": [0, 1]})
    >>> s = settings(r)
    >>> s["trials"], s["sampler"], s["trial_seed"], s["final_seeds"], s["metric"], s["mode"]
    (8, 'sobol', 1000, [0, 1], 'val_acc', 'max')
    """
    raw = dict(r.tune or {})
    src = r.source
    unknown = sorted(set(raw) - TUNE_KEYS)
    if unknown:
        raise RecipeError(f"{src}: tune.{unknown[0]}: unknown key {unknown[0]!r} (allowed: "
                          f"{', '.join(sorted(TUNE_KEYS))}). Received: {unknown[0]}={raw[unknown[0]]!r}")
    runs = r.runs()
    regression = runs[0].spec.target_loss is not None
    s = {"trials": 8, "sampler": "sobol", "seed": 0, "trial_seed": 1000, "final_seeds": list(runs[0].spec.seeds),
         "metric": "val_loss" if regression else "val_acc", "select": "final", "early_stopping": False,
         "grace_epochs": 1, "reduction_factor": 2, "max_concurrent": None, **raw}
    if trials is not None:
        s["trials"] = trials
    if early_stopping is not None:
        s["early_stopping"] = early_stopping
    if max_concurrent is not None:
        s["max_concurrent"] = max_concurrent
    if final_seeds:
        s["final_seeds"] = list(final_seeds)

    def check(key, fn):
        try:
            fn()
        except (ValueError, TypeError) as e:
            raise RecipeError(f"{src}: tune.{key}: {e}") from None
    check("trials", lambda: check_int("trials", s["trials"], ge=1))
    check("sampler", lambda: check_choice("sampler", s["sampler"], ["sobol", "halton"]))
    check("seed", lambda: check_int("seed", s["seed"], ge=0))
    check("trial_seed", lambda: check_int("trial_seed", s["trial_seed"], ge=0))
    check("select", lambda: check_choice("select", s["select"], ["final", "best"]))
    check("metric", lambda: check_choice("metric", s["metric"], ["val_acc", "val_loss", "train_loss", "train_acc"]))
    check("grace_epochs", lambda: check_int("grace_epochs", s["grace_epochs"], ge=1))
    check("reduction_factor", lambda: check_int("reduction_factor", s["reduction_factor"], ge=2))
    check("max_concurrent", lambda: check_int("max_concurrent", s["max_concurrent"], ge=1, allow_none=True))
    if not isinstance(s["early_stopping"], bool):
        raise RecipeError(f"{src}: tune.early_stopping: `early_stopping` must be true or false. "
                          f"Received: early_stopping={s['early_stopping']!r}")
    fs = s["final_seeds"]
    if not (isinstance(fs, list) and fs and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in fs)):
        raise RecipeError(f"{src}: tune.final_seeds: `final_seeds` must be a non-empty list of seeds >= 0. "
                          f"Received: final_seeds={fs!r}")
    if s["trial_seed"] in fs:
        raise RecipeError(f"{src}: tune.final_seeds: the final runs need fresh seeds, not the trial seed "
                          f"{s['trial_seed']}. Received: final_seeds={fs!r}")
    s["mode"] = "max" if s["metric"].endswith("acc") else "min"
    return s


def _score(result: dict[str, Any], metric: str, select: str, mode: str) -> float | None:
    """A trial's validation score: the metric at the last epoch (``final``) or its best."""
    values = [v for v in (result.get("epochs") or {}).get(metric, [])]
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not values or (select == "final" and (values[-1] is None or not math.isfinite(values[-1]))):
        return None
    if select == "final":
        return float(values[-1])
    return float(max(finite) if mode == "max" else min(finite)) if finite else None


def best_so_far(scores: list[float | None], mode: str) -> list[float | None]:
    """The best score among the first ``k`` trials, for ``k = 1..n`` (``None`` counts as worst).

    >>> best_so_far([0.5, None, 0.7, 0.6], "max"), best_so_far([None, 2.0, 1.0], "min")
    ([0.5, 0.5, 0.7, 0.7], [None, 2.0, 1.0])
    """
    out, best = [], None
    for s in scores:
        if s is not None and (best is None or (s > best if mode == "max" else s < best)):
            best = s
        out.append(best)
    return out


# ----------------------------------------------------------------------- execution
def _require_ray():
    from descend._extras import require
    require("ray.tune", "tuning on Ray Tune (descend sweep, compare --tune) needs", "sweep",
            package="ray[tune]")


def _job(config: dict[str, Any], report: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Train one job: variant ``config['variant']`` with ``config['assignment']`` and ``config['seed']``."""
    import torch

    from descend.experiments import runner
    from descend.train import Callback

    torch.set_num_threads(1)
    r = recipes.load(config["recipe"])
    run = configure(r.runs()[config["variant"]], config["assignment"])
    cbs = []
    if report is not None:
        class Report(Callback):
            def on_epoch_end(self, trainer, logs):
                if trainer.epoch < run.spec.epochs:  # the last epoch: the final report carries it
                    report({k: float(v) for k, v in logs.items()
                            if isinstance(v, (int, float)) and math.isfinite(float(v))})
        cbs.append(Report())
    res = runner.train_one(run, config["seed"], device=config["device"], callbacks=cbs)
    res.pop("model", None)
    if not config.get("keep_curves", True):
        res["steps"] = {}
        res["monitors"] = {}
    return runner.clean(res)


def _ray_trainable(config: dict[str, Any]) -> None:
    from ray import tune

    res = _job(config, report=tune.report)
    last = {k: v[-1] for k, v in res["epochs"].items() if v and isinstance(v[-1], (int, float))}
    tune.report({**last, "result": json.dumps(res)})


def _partial(rows: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    """What a trial stopped early by ASHA leaves: its epoch metrics so far."""
    keys = [k for k in (rows[0] if rows else {}) if k in ("epoch", "step", "time", "lr")
            or k.startswith(("train_", "val_"))]
    return {"seed": seed, "epochs": {k: [row.get(k) for row in rows] for k in keys}, "stopped_early": True,
            "epochs_run": len(rows)}


class _Executor:
    """Runs jobs (dicts for :func:`_job`) on Ray Tune or in this process."""

    def __init__(self, kind: str, *, address: str | None, max_concurrent: int | None, storage: Path):
        self.kind, self.address, self.max_concurrent, self.storage = kind, address, max_concurrent, storage
        self.started = False

    def __enter__(self):
        if self.kind == "ray":
            _require_ray()
            os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no tables on the terminal
            import ray
            if not ray.is_initialized():
                if self.address:
                    ray.init(address=self.address, log_to_driver=False)
                else:
                    ray.init(num_cpus=self.max_concurrent or os.cpu_count(), include_dashboard=False,
                             log_to_driver=False, configure_logging=False)
                self.started = True
        return self

    def __exit__(self, *exc):
        if self.started:
            import ray
            ray.shutdown()

    def run(self, name: str, jobs: list[dict[str, Any]], *, asha: dict[str, Any] | None = None,
            on_done: Callable[[int, dict], None] | None = None) -> list[dict[str, Any]]:
        """The results of ``jobs`` in order (a job stopped early: its partial result)."""
        if self.kind == "local":
            out = []
            for i, job in enumerate(jobs):
                out.append(_job(job))
                if on_done:
                    on_done(i, out[-1])
            return out
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler
        scheduler = None
        if asha:
            scheduler = ASHAScheduler(time_attr="epoch", metric=asha["metric"], mode=asha["mode"],
                                      max_t=asha["max_t"], grace_period=asha["grace_epochs"],
                                      reduction_factor=asha["reduction_factor"])
        space = {"index": tune.grid_search(list(range(len(jobs))))}

        def trainable(config):
            _ray_trainable(jobs[config["index"]])

        reported: set[int] = set()

        class Progress(tune.Callback):  # say each trial's result as it completes, not all at the end
            def on_trial_complete(self, iteration, trials, trial, **info):
                i = trial.config["index"]
                last = trial.last_result or {}
                if on_done and "result" in last:
                    reported.add(i)
                    on_done(i, json.loads(last["result"]))

        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}), param_space=space,
            tune_config=tune.TuneConfig(scheduler=scheduler, max_concurrent_trials=self.max_concurrent,
                                        reuse_actors=True),
            run_config=tune.RunConfig(name=name, storage_path=str(self.storage), verbose=0,
                                      callbacks=[Progress()]))
        grid = tuner.fit()
        out: list[dict[str, Any] | None] = [None] * len(jobs)
        for res in grid:
            i = res.config["index"]
            if res.error is not None:
                raise RuntimeError(f"trial {name}/{i} failed: {res.error}")
            if "result" in (res.metrics or {}):
                out[i] = json.loads(res.metrics["result"])
            else:
                df = res.metrics_dataframe
                rows = [] if df is None else [{k: (None if isinstance(v, float) and math.isnan(v) else v)
                                               for k, v in row.items()} for row in df.to_dict("records")]
                out[i] = _partial(rows, jobs[i]["seed"])
            if on_done and i not in reported:
                on_done(i, out[i])
        return out  # type: ignore[return-value]


def tune(recipe, *, out: str | os.PathLike = "runs", device: str | None = None, epochs: int | None = None,
         quiet: bool = False, overwrite: bool = False, trials: int | None = None, address: str | None = None,
         early_stopping: bool | None = None, max_concurrent: int | None = None, monitors: bool | None = None,
         executor: str = "ray", seeds: list[int] | None = None) -> tuple[Path, dict[str, Any]]:
    """Tune every variant with an equal quasirandom budget, then run the chosen configurations
    on fresh seeds; write a ``descend compare`` folder ``out/<name>-tuned`` with a tuning section.

    Args:
        recipe: a recipe file, a bundled name or a mapping; its ``search`` and ``tune``
            fields say what to tune (module docstring).
        out: the parent folder (default ``runs``).
        device, epochs, monitors: as ``descend compare`` (``epochs`` is the budget of every
            trial and final run).
        trials, early_stopping, max_concurrent, seeds: override ``tune.trials`` /
            ``tune.early_stopping`` / ``tune.max_concurrent`` / ``tune.final_seeds``.
        address: an existing Ray cluster (default ``RAY_ADDRESS``, else a local one).
        executor: ``"ray"`` (default) or ``"local"`` (in this process, one job at a time,
            no early stopping).

    Returns:
        ``(folder, results)``; ``results["tuning"]`` holds every trial, the chosen
        configurations and the best-so-far curves.

    Example (minutes on two cores; needs the 'sweep' extra)::

        folder, results = tune("mnist1d-tuned", out="runs")
    """
    from descend.experiments import runner
    from descend.experiments.output import _path_name, _Staging, load_with_overrides, write_comparison

    check_choice("executor", executor, ["ray", "local"])
    r, overrides = load_with_overrides(recipe, epochs=epochs, monitors=monitors)
    s = settings(r, trials=trials, early_stopping=early_stopping, max_concurrent=max_concurrent,
                 final_seeds=seeds)
    if s["early_stopping"] and executor == "local":
        raise RecipeError(f"{r.source}: tune.early_stopping: early stopping of trials needs Ray Tune "
                          "(executor='ray'). Received: early_stopping=True")
    if executor == "ray":
        _require_ray()
    try:
        dev = runner.check_device(device or r.device)
    except ValueError as e:
        raise RecipeError(f"{'--device' if device else r.source + ': device'}: {e}") from None
    runs = r.runs()
    spaces = [parse_space(run) for run in runs]
    for run, dims in zip(runs, spaces):
        if not any(d.searched for d in dims):
            print(f"descend: warning: {r.source}: {run.origin.vpath or 'search'}: variant {run.name!r} has no "
                  f"search space (`search:`), so its {s['trials']} trials all train the recipe's own "
                  "configuration", file=sys.stderr, flush=True)
    for run in runs:  # fail in a second on a bad recipe, not after the trials
        runner.build(run, s["trial_seed"], device=dev)
    raw = _raw(recipe, r, overrides)
    assignments = [sample(dims, s["trials"], sampler=s["sampler"], seed=s["seed"]) for dims in spaces]
    for run, points in zip(runs, assignments):
        for a in points:
            configure(run, a)
    address = address or os.environ.get("RAY_ADDRESS")
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    where = "in this process" if executor == "local" else (f"on Ray cluster {address}" if address else "on a local Ray")
    say(f"descend compare --tune: {r.name}: {len(runs)} variants x {s['trials']} trials "
        f"({s['sampler']}, seed {s['seed']}{', ASHA' if s['early_stopping'] else ''}), then "
        f"{len(s['final_seeds'])} fresh seeds each, {where}")
    Path(out).mkdir(parents=True, exist_ok=True)
    storage = Path(tempfile.mkdtemp(prefix=".tune-", dir=Path(out).resolve()))
    t0 = time.perf_counter()
    trials_out: list[dict[str, Any]] = []
    try:
        with _Executor(executor, address=address, max_concurrent=s["max_concurrent"], storage=storage) as ex:
            jobs = [{"recipe": raw, "variant": vi, "trial": k + 1, "assignment": a, "seed": s["trial_seed"],
                     "device": str(dev), "keep_curves": False}
                    for vi in range(len(runs)) for k, a in enumerate(assignments[vi])]

            def done(i, res):
                job = jobs[i]
                sc = _score(res, s["metric"], s["select"], s["mode"])
                say(f"  trial {runs[job['variant']].name:<14} {job['trial']:>2}/{s['trials']}  {s['metric']} "
                    f"{'diverged' if sc is None else f'{sc:.4g}'}"
                    f"{'  (stopped early)' if res.get('stopped_early') else ''}  {job['assignment']}")
            results: list[dict[str, Any] | None] = [None] * len(jobs)
            if s["early_stopping"]:  # ASHA per variant: one variant's trials never stop another's
                for vi, run in enumerate(runs):
                    idx = [i for i, j in enumerate(jobs) if j["variant"] == vi]
                    asha = {"metric": s["metric"], "mode": s["mode"], "max_t": run.spec.epochs,
                            "grace_epochs": s["grace_epochs"], "reduction_factor": s["reduction_factor"]}
                    part = ex.run(f"{r.name}-{vi}-trials", [jobs[i] for i in idx], asha=asha,
                                  on_done=lambda k, res, idx=idx: done(idx[k], res))
                    for i, res in zip(idx, part):
                        results[i] = res
            else:  # one Tuner for every trial: its workers are reused across variants
                results = ex.run(f"{r.name}-trials", jobs, on_done=done)
            for vi, run in enumerate(runs):
                own = [res for j, res in zip(jobs, results) if j["variant"] == vi]
                scores = [_score(x, s["metric"], s["select"], s["mode"]) for x in own]
                valid = [i for i, sc in enumerate(scores) if sc is not None]
                if not valid:
                    raise RecipeError(f"{r.source}: {run.origin.vpath or 'variants'}: every trial of "
                                      f"{run.name!r} diverged; narrow its search space. Received: "
                                      f"{len(scores)} trials")
                best = (max if s["mode"] == "max" else min)(valid, key=lambda i: scores[i])
                trials_out.append({
                    "variant": run.name, "space": {d.path: {d.kind: d.args} for d in spaces[vi]},
                    "trials": [{"trial": i + 1, "assignment": assignments[vi][i], "score": scores[i],
                                "stopped_early": bool(own[i].get("stopped_early")),
                                "epochs_run": own[i].get("epochs_run")} for i in range(len(own))],
                    "best_so_far": best_so_far(scores, s["mode"]), "chosen": assignments[vi][best],
                    "chosen_trial": best + 1, "chosen_score": scores[best]})
            chosen = [configure(run, t["chosen"]) for run, t in zip(runs, trials_out)]
            say("  chosen: " + "; ".join(f"{t['variant']} {t['chosen']}" for t in trials_out))
            finals = [{"recipe": raw, "variant": vi, "assignment": t["chosen"], "seed": seed, "device": str(dev)}
                      for vi, t in enumerate(trials_out) for seed in s["final_seeds"]]

            def final_done(i, res):
                job = finals[i]
                say(f"  final {runs[job['variant']].name:<14} seed {job['seed']:<5} test acc "
                    f"{_pct(res.get('final_test_acc'))}  test loss {res.get('final_test_loss')}")
            final_results = ex.run(f"{r.name}-final", finals, on_done=final_done)
    finally:
        shutil.rmtree(storage, ignore_errors=True)
    elapsed = time.perf_counter() - t0
    variants = []
    for vi, run in enumerate(chosen):
        res = [x for job, x in zip(finals, final_results) if job["variant"] == vi]
        res.sort(key=lambda x: x["seed"])
        variants.append({"name": run.name, "config": run.spec.model_dump(), "chosen": trials_out[vi]["chosen"],
                         "runs": res, "summary": runner.clean(runner.summarize(run.name, res))})
    tuning = {"settings": {k: v for k, v in s.items()}, "executor": executor, "address": address,
              "variants": trials_out}
    staging = _Staging(Path(out), f"{_path_name(r.source, 'name', r.name)}-tuned", overwrite)
    return write_comparison(staging, r, variants, dev, elapsed, quiet=quiet, title="descend compare --tune",
                            extra={"tuning": runner.clean(tuning)}, sections=[("Tuning", _tuning_html(tuning))],
                            write_extra=lambda folder: _plot_only(tuning, folder))


def _plot_only(tuning: dict[str, Any], folder) -> list:
    """Write the tuning figure; it is shown in the report's tuning section, not among the curves."""
    write_tuning_plot(tuning, str(folder))
    return []


def _pct(v) -> str:
    return "  -   " if v is None else f"{100 * v:6.2f}%"


def _raw(recipe, r: recipes.Recipe, overrides: dict[str, Any]) -> dict[str, Any]:
    """The recipe as a mapping a trial process can load (no file needed on a cluster node)."""
    from descend.io import load_yaml
    raw = copy.deepcopy(recipe) if isinstance(recipe, dict) else load_yaml(recipes.find(recipe))
    raw = {**raw, "name": r.name}
    for k, v in overrides.items():
        raw[k] = v
        for variant in raw.get("variants") or []:
            if isinstance(variant, dict):
                variant.pop(k, None)
    root = (raw.get("data") or {}).get("root")
    if isinstance(root, str) and not Path(os.path.expanduser(root)).is_absolute():
        raw["data"] = {**raw["data"], "root": str(Path(r.folder) / root)}
    return raw


def write_tuning_plot(tuning: dict[str, Any], out_dir: str) -> list[tuple[str, str]]:
    """``tuning_best_so_far.png``: each variant's best validation score after ``k`` trials."""
    from descend.experiments.plots import _figure
    s = tuning["settings"]
    fig, (ax,) = _figure(1, row_height=4.2)
    scale = 100.0 if s["metric"].endswith("acc") else 1.0
    from matplotlib import colormaps
    cmap = colormaps["tab10"]
    for i, t in enumerate(tuning["variants"]):
        ys = [None if v is None else scale * v for v in t["best_so_far"]]
        xs = list(range(1, len(ys) + 1))
        ax.plot(xs, [math.nan if y is None else y for y in ys], marker="o", linestyle=["-", "--", "-.", ":"][i % 4],
                color=cmap(i % 10), label=t["variant"])
        raw = [None if x["score"] is None else scale * x["score"] for x in t["trials"]]
        ax.scatter(xs, [math.nan if y is None else y for y in raw], s=12, alpha=0.4, color=cmap(i % 10))
    ax.set_xlabel("trials")
    ax.set_ylabel(f"{s['metric'].replace('_', ' ')}{' (%)' if scale == 100 else ''}, best so far")
    ax.set_title(f"best so far (lines) and each trial (dots); {s['sampler']}, seed {s['seed']}", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fname = "tuning_best_so_far.png"
    fig.savefig(os.path.join(out_dir, fname))
    return [(fname, "Tuning: best validation score so far against the number of trials")]


def _tuning_html(tuning: dict[str, Any]) -> str:
    import html
    e = html.escape
    s = tuning["settings"]
    rows = ["<table><thead><tr><th>variant</th><th>search space</th><th>chosen (trial)</th>"
            f"<th>validation {e(s['metric'])}</th></tr></thead><tbody>"]
    for t in tuning["variants"]:
        space = "; ".join(f"{k}: {e(json.dumps(v))}" for k, v in t["space"].items()) or "(none: the recipe's values)"
        chosen = ", ".join(f"{k}={v!r}" for k, v in t["chosen"].items()) or "-"
        rows.append(f"<tr><td>{e(t['variant'])}</td><td>{space}</td><td>{e(chosen)} ({t['chosen_trial']})</td>"
                    f"<td>{t['chosen_score']:.4g}</td></tr>")
    rows.append("</tbody></table>")
    trial_rows = ["<table><thead><tr><th>variant</th><th>trial</th><th>configuration</th><th>score</th>"
                  "<th>stopped early</th></tr></thead><tbody>"]
    for t in tuning["variants"]:
        for x in t["trials"]:
            conf = ", ".join(f"{k}={v!r}" for k, v in x["assignment"].items())
            score = "diverged" if x["score"] is None else f"{x['score']:.4g}"
            trial_rows.append(f"<tr><td>{e(t['variant'])}</td><td>{x['trial']}</td><td>{e(conf)}</td>"
                              f"<td>{score}</td><td>{'yes' if x['stopped_early'] else ''}</td></tr>")
    trial_rows.append("</tbody></table>")
    return ("<p>Every variant had the same budget: "
            f"{s['trials']} trials, the points of a scrambled {e(s['sampler'])} sequence (seed {s['seed']}) in its "
            f"search space, each trained with seed {s['trial_seed']} and scored on the validation split "
            f"({e(s['metric'])}, {e(s['select'])}{'; ASHA stopped hopeless trials early' if s['early_stopping'] else ''}). "
            f"The chosen configuration was then trained on the fresh seeds {s['final_seeds']}; the figures "
            "above are those runs, on the test split.</p>"
            + "".join(rows) + "<details><summary>Every trial</summary>" + "".join(trial_rows) + "</details>"
            + '<figure><img src="tuning_best_so_far.png" alt="best so far"><figcaption>Best validation score '
              "after k trials: a curve that rises late means a variant that is hard to tune.</figcaption></figure>")


__all__ = ["Dimension", "KINDS", "best_so_far", "configure", "parse_space", "sample", "settings", "tune",
           "write_tuning_plot"]
