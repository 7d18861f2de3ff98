"""``descend sweep``: a recipe's runs (variants x grid x seeds) as Ray Tune trials.

Each trial trains one ``(run, seed)`` of the recipe, exactly as ``descend compare``
would, and reports its epoch metrics to Tune after every epoch. With ``asha`` (the
default) the asynchronous successive-halving scheduler (Li et al. 2020, "A System for
Massively Parallel Hyperparameter Tuning") stops the trials whose ``metric`` is in the
bottom ``1 - 1/reduction_factor`` at each rung (``grace_epochs`` x reduction_factor^k
epochs) early. ``search="grid"`` runs every pair; ``search="random"`` a seeded random
subset of ``num_samples`` pairs (random search over the recipe's discrete grid).

Ray runs locally (a fresh single-node cluster of ``max_concurrent`` CPUs) or on an
existing cluster (``address``, else the ``RAY_ADDRESS`` environment variable). The
results are written like ``descend compare``'s: ``results.json`` (plus a ``sweep``
section: trials, which stopped early), PNG plots, ``report.html``. A trial stopped
early contributes its epochs so far (no per-step curves, no test accuracy).

Ray is an optional extra: ``pip install 'descend[sweep]'``.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from descend._extras import require
from descend._validation import check_choice, check_int
from descend.experiments import recipe as recipes
from descend.experiments.recipe import RecipeError


def _require_ray():
    require("ray.tune", "descend sweep needs", "sweep", package="ray[tune]")
    require("matplotlib", "descend sweep's plots and report need", "sweep")


def _trial(config: dict[str, Any]) -> None:
    """One Tune trial: train run ``config['run']`` of the recipe with ``config['seed']``."""
    import torch
    from ray import tune

    from descend.experiments import runner
    from descend.train import Callback

    torch.set_num_threads(1)
    r = recipes.load(config["recipe"])
    run = r.runs()[config["run"]]

    class Report(Callback):
        def on_epoch_end(self, trainer, logs):
            if trainer.epoch >= run.spec.epochs:  # the last epoch: the final report carries it
                return
            tune.report({k: float(v) for k, v in logs.items()
                         if isinstance(v, (int, float)) and math.isfinite(float(v))})

    res = runner.train_one(run, config["seed"], device=config["device"], callbacks=[Report()])
    res.pop("model", None)
    last = {k: v[-1] for k, v in res["epochs"].items() if v and isinstance(v[-1], (int, float))}
    tune.report({**last, "result": json.dumps(runner._clean(res))})


def _partial(seed: int, rows: list[dict[str, Any]], target: float) -> dict[str, Any]:
    """The result of a trial stopped early, from the epoch metrics it reported."""
    keys = [k for k in rows[0] if k in ("epoch", "step", "time", "lr", "batch_size")
            or k.startswith(("train_", "val_"))] if rows else []
    epochs = {k: [row.get(k) for row in rows] for k in keys}
    acc_key = "val_acc" if "val_acc" in epochs else "train_acc"
    accs = [a for a in epochs.get(acc_key, []) if a is not None]
    reached = next((i for i, a in enumerate(accs) if a >= target), None)
    return {"seed": seed, "steps": {}, "epochs": epochs, "test": {},
            "final_val_acc": epochs["val_acc"][-1] if epochs.get("val_acc") else None,
            "best_val_acc": max(accs) if "val_acc" in epochs and accs else None,
            "final_test_acc": None,
            "final_train_loss": epochs["train_loss"][-1] if epochs.get("train_loss") else None,
            "target_metric": acc_key,
            "steps_to_target": epochs["step"][reached] if reached is not None and "step" in epochs else None,
            "seconds_to_target": epochs["time"][reached] if reached is not None and "time" in epochs else None,
            "train_seconds": epochs["time"][-1] if epochs.get("time") else None,
            "epochs_run": len(rows), "stopped_early": True}


def sweep(recipe, *, out: str | os.PathLike = "runs", search: str = "grid", num_samples: int | None = None,
          sample_seed: int = 0, asha: bool = True, metric: str = "val_acc", mode: str = "max",
          grace_epochs: int = 1, reduction_factor: int = 2, address: str | None = None,
          max_concurrent: int | None = None, device: str | None = None, epochs: int | None = None,
          seeds: list[int] | None = None, quiet: bool = False, overwrite: bool = False):
    """Run a recipe's ``(run, seed)`` pairs as Ray Tune trials; write a compare-style folder.

    Args:
        recipe: a recipe file or bundled name.
        out: parent folder of ``out/<name>-sweep`` (default ``"runs"``).
        search: ``"grid"`` (every pair, default) or ``"random"`` (``num_samples`` pairs
            drawn without replacement with ``sample_seed``).
        asha: stop bad trials early with ASHA on ``metric`` / ``mode`` (default True),
            first rung after ``grace_epochs``, keeping 1/``reduction_factor`` per rung.
        address: an existing Ray cluster (default: ``RAY_ADDRESS``, else a local one).
        max_concurrent: trials at once (default: the local CPU count).
        device, epochs, seeds: as ``descend compare``.

    Returns:
        ``(folder, results)``, as :func:`descend.experiments.commands.compare`.
    """
    _require_ray()
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from descend.experiments import plots, report, runner
    from descend.experiments.commands import _meta, _recipe_dict, _Staging, _write_json, _write_monitors
    from descend.io import load_yaml

    check_choice("search", search, ["grid", "random"])
    check_choice("mode", mode, ["min", "max"])
    check_int("grace_epochs", grace_epochs, ge=1)
    check_int("reduction_factor", reduction_factor, ge=2)
    check_int("max_concurrent", max_concurrent, ge=1, allow_none=True)
    overrides: dict[str, Any] = {}
    if epochs is not None:
        overrides["epochs"] = epochs
    if seeds:
        overrides["seeds"] = list(seeds)
    r = recipes.load(recipe, overrides=overrides)
    raw = load_yaml(recipes.find(recipe)) if not isinstance(recipe, dict) else dict(recipe)
    raw = {**raw, "name": r.name, **overrides}
    dev = runner.check_device(device or r.device)
    runs = r.runs()
    pairs = [(i, s) for i, run in enumerate(runs) for s in run.spec.seeds]
    if search == "random":
        check_int("num_samples", num_samples, ge=1)
        pairs = sorted(random.Random(sample_seed).sample(pairs, min(num_samples, len(pairs))))
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    address = address or os.environ.get("RAY_ADDRESS")
    say(f"descend sweep: {r.name}: {len(pairs)} trials ({search}{', ASHA' if asha else ''}) on "
        f"{'Ray cluster ' + address if address else 'a local Ray'}")

    started = not ray.is_initialized()
    if started:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=max_concurrent or os.cpu_count(), include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
    Path(out).mkdir(parents=True, exist_ok=True)
    storage = Path(tempfile.mkdtemp(prefix=".sweep-", dir=Path(out).resolve()))
    t0 = time.perf_counter()
    try:
        scheduler = None
        if asha:
            scheduler = ASHAScheduler(time_attr="epoch", metric=metric, mode=mode,
                                      max_t=max(run.spec.epochs for run in runs),
                                      grace_period=grace_epochs, reduction_factor=reduction_factor)
        space = {"recipe": raw, "device": str(dev),
                 "pair": tune.grid_search([list(p) for p in pairs])}

        def trainable(config):
            run_index, seed = config["pair"]
            _trial({**config, "run": run_index, "seed": seed})

        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}), param_space=space,
            tune_config=tune.TuneConfig(scheduler=scheduler, max_concurrent_trials=max_concurrent),
            run_config=tune.RunConfig(name=r.name, storage_path=str(storage), verbose=0))
        grid = tuner.fit()
        by_run: dict[int, list[dict[str, Any]]] = {}
        stopped = []
        for res in grid:
            if res.error is not None:
                raise RuntimeError(f"sweep trial {res.config['pair']} failed: {res.error}")
            run_index, seed = res.config["pair"]
            if "result" in (res.metrics or {}):
                out_res = json.loads(res.metrics["result"])
            else:
                df = res.metrics_dataframe
                rows = [] if df is None else [{k: (None if isinstance(v, float) and math.isnan(v) else v)
                                               for k, v in row.items()} for row in df.to_dict("records")]
                out_res = _partial(seed, rows, runs[run_index].spec.target_accuracy)
                stopped.append(f"{runs[run_index].name}/seed{seed}")
            by_run.setdefault(run_index, []).append(out_res)
    finally:
        if started:
            ray.shutdown()
        shutil.rmtree(storage, ignore_errors=True)
    elapsed = time.perf_counter() - t0
    variants = []
    for i in sorted(by_run):
        results = sorted(by_run[i], key=lambda x: x["seed"])
        variants.append({"name": runs[i].name, "config": runs[i].spec.model_dump(), "runs": results,
                         "summary": runner._clean(runner.summarize(runs[i].name, results))})
    summary = [v["summary"] for v in variants]
    target = runs[0].spec.target_accuracy
    results = {"name": r.name, "description": r.description, "meta": _meta(dev, elapsed),
               "target_accuracy": target, "recipe": _recipe_dict(r), "summary": summary,
               "variants": variants,
               "sweep": {"search": search, "trials": [f"{runs[i].name}/seed{s}" for i, s in pairs],
                         "asha": asha, "metric": metric, "mode": mode, "stopped_early": sorted(stopped),
                         "address": address}}
    staging = _Staging(Path(out), f"{r.name}-sweep", overwrite)
    recipe_text = json.dumps(_recipe_dict(r), indent=1)
    with staging as tmp:
        written = plots.write_plots(variants, str(tmp))
        mon_plots, mon_table = _write_monitors(tmp, variants)
        _write_json(tmp / "results.json", results)
        report.write_html(str(tmp / "report.html"), title=f"descend sweep: {r.name}",
                          description=r.description, summary=summary, plots=written,
                          meta=_meta(dev, elapsed), recipe_text=recipe_text, target=target,
                          monitor_table=mon_table, monitor_plots=mon_plots)
        written += mon_plots
    final = staging.final
    say("")
    say(report.text_table(summary, target))
    say(f"stopped early: {', '.join(sorted(stopped)) or 'none'}")
    print(f"wrote {final}/report.html, results.json and {len(written)} plots ({elapsed:.1f}s)"
          if not quiet else str(final))
    return final, results


def register(subparsers) -> None:
    """Add the ``sweep`` subcommand."""
    p = subparsers.add_parser(
        "sweep", help="run a recipe's variants x seeds as Ray Tune trials (optional extra 'sweep')",
        description="Run every (variant, seed) of RECIPE (variants x grid x seeds) as a Ray Tune "
                    "trial, locally or on a Ray cluster, stopping bad trials early with ASHA, and "
                    "write the same results.json, plots and report.html as `descend compare` to "
                    "DIR/<name>-sweep. Needs: pip install 'descend[sweep]'.")
    p.add_argument("recipe", nargs="?", default="default", metavar="RECIPE")
    p.add_argument("--out", default="runs", metavar="DIR")
    p.add_argument("--search", choices=["grid", "random"], default="grid")
    p.add_argument("--num-samples", type=int, default=None, metavar="N",
                   help="with --search random: how many (variant, seed) pairs")
    p.add_argument("--no-asha", action="store_true", help="run every trial to the end")
    p.add_argument("--metric", default="val_acc", help="what ASHA compares (default: %(default)s)")
    p.add_argument("--mode", choices=["min", "max"], default="max")
    p.add_argument("--grace-epochs", type=int, default=1, metavar="N")
    p.add_argument("--address", default=None,
                   help="an existing Ray cluster (default: $RAY_ADDRESS, else a local one)")
    p.add_argument("--max-concurrent", type=int, default=None, metavar="N")
    p.add_argument("--device", default=None)
    p.add_argument("--epochs", type=int, default=None, metavar="N")
    p.add_argument("--seeds", type=int, nargs="+", default=None, metavar="SEED")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_main)


def _main(args) -> int:
    try:
        sweep(args.recipe, out=args.out, search=args.search, num_samples=args.num_samples,
              asha=not args.no_asha, metric=args.metric, mode=args.mode, grace_epochs=args.grace_epochs,
              address=args.address, max_concurrent=args.max_concurrent, device=args.device,
              epochs=args.epochs, seeds=args.seeds, quiet=args.quiet, overwrite=args.overwrite)
    except (RecipeError, ImportError, ValueError, TypeError) as e:
        print(f"descend: error: {e}", file=sys.stderr)
        return 2
    return 0
