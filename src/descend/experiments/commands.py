"""``descend compare`` and ``descend train``: run a recipe from the command line.

Results are written to a temporary folder next to the target and renamed into place
only when complete, so a failed or interrupted run never leaves a half-written run
folder, and an existing ``runs/<name>`` is never touched: the new run goes to
``runs/<name>-2`` (``-3``, ...) unless ``--overwrite`` is given, in which case the old
folder is replaced only after the new one is complete.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from descend._extras import require
from descend.experiments import recipe as recipes
from descend.experiments.output import (_meta, _path_name, _pct, _recipe_dict, _Staging, _write_json,
                                        _writing, load_with_overrides, write_comparison)
from descend.experiments.recipe import RecipeError


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", nargs="?", default="default", metavar="RECIPE",
                   help="a recipe YAML file, or the name of a bundled recipe "
                        f"({', '.join(recipes.bundled_names())}); default: %(default)s")
    p.add_argument("--out", default="runs", metavar="DIR",
                   help="parent folder of the run folder DIR/<name> (default: %(default)s)")
    p.add_argument("--device", default=None, metavar="DEVICE",
                   help="cpu, cuda or cuda:N (default: the recipe's device, else cpu)")
    p.add_argument("--epochs", type=int, default=None, metavar="N",
                   help="override the recipe's epochs (every variant)")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="CPU threads for torch (default: %(default)s; small models train fastest "
                        "single-threaded, raise it for large models)")
    p.add_argument("--quiet", action="store_true", help="print only errors and the output folder")
    p.add_argument("--overwrite", action="store_true",
                   help="replace DIR/<name> if it exists (after the new run completes) instead "
                        "of writing DIR/<name>-2")
    p.add_argument("--check", action="store_true",
                   help="validate the recipe and build its runs (data, model, optimizer, schedules, "
                        "callbacks), then stop: nothing is trained or written")
    p.add_argument("--no-monitors", action="store_true",
                   help="attach no monitors (the recipe's `monitors: false`); by default the "
                        "per-layer gradient norms and the dead/saturated unit fractions are "
                        "sampled every 20 steps and written for the report and `descend doctor`")


def tuning_options(p: argparse.ArgumentParser, *, always: bool = False) -> None:
    """The options of fair tuning (``compare --tune`` and ``descend sweep``)."""
    if not always:
        p.add_argument("--tune", action="store_true",
                       help="tune every variant first: the same number of quasirandom (scrambled Sobol) "
                            "trials from its `search` space on Ray Tune, chosen on validation, then the "
                            "chosen configuration on fresh seeds (`tune.final_seeds`) reported on test "
                            "(needs the 'sweep' extra: pip install 'descend[sweep]')")
    p.add_argument("--trials", type=int, default=None, metavar="N",
                   help="trials per variant (default: the recipe's tune.trials, else 8)")
    p.add_argument("--address", default=None,
                   help="an existing Ray cluster (default: $RAY_ADDRESS, else a local one)")
    p.add_argument("--early-stopping", dest="early_stopping", action="store_true", default=None,
                   help="stop hopeless trials early with ASHA (per variant; default: the recipe's "
                        "tune.early_stopping)")
    p.add_argument("--no-early-stopping", dest="early_stopping", action="store_false",
                   help="run every trial to the end")
    p.add_argument("--max-concurrent", type=int, default=None, metavar="N",
                   help="trials at once (default: the CPU count)")


def register(subparsers) -> None:
    """Add the ``compare`` and ``train`` subcommands."""
    p = subparsers.add_parser(
        "compare", help="train every variant of a recipe over several seeds and write a report",
        description="Train every variant of RECIPE (variants x grid) for each seed on the same "
                    "data split, then write DIR/<name>/results.json (curves and summary), PNG "
                    "plots (loss and accuracy vs steps and vs seconds, learning rate, gradient "
                    "norm, per-layer gradient norm), monitors/<variant>-seed<seed>.json (what the "
                    "monitors sampled: per-layer gradient norms, dead and saturated units; read "
                    "by `descend doctor DIR/<name>`), report.html embedding them with a table of "
                    "dead/saturated unit fractions, and print the answer in words (who won, by "
                    "how much, with 95% intervals and Holm-corrected paired tests over seeds, or "
                    "that the data cannot separate the variants) and the summary table (mean "
                    "[95% CI] over seeds, rank, difference to the best; steps to the target with "
                    "runs that never reached it counted). --tune tunes every variant with an equal "
                    "budget first; --suite runs the variants on a suite of workloads. With no "
                    "RECIPE: the bundled default, an MLP on the bundled 8x8 digits with SGD, "
                    "momentum, Nesterov, AdaGrad, RMSProp and Adam, 5 seeds.")
    _common(p)
    p.add_argument("--seeds", type=int, nargs="+", default=None, metavar="SEED",
                   help="override the recipe's seeds, e.g. --seeds 0 1 2 (with --tune: the fresh seeds of the "
                        "chosen configurations)")
    tuning_options(p)
    p.add_argument("--suite", nargs="*", default=None, metavar="WORKLOAD",
                   help="run the variants on every workload of the bundled suite (or the ones named: "
                        "digits_mlp, mnist1d_cnn, mnist1d_gru, noisy_quadratic, toy2d_spirals, "
                        "friedman_regression) and draw performance profiles with a score")
    p.set_defaults(func=compare_main)

    p = subparsers.add_parser(
        "train", help="train one variant of a recipe with one seed",
        description="Train one variant of RECIPE with one seed, print one line per epoch, and "
                    "write DIR/<name>-<variant>/: steps.csv and epochs.csv (per-step loss, lr, "
                    "momentum, gradient norm; per-epoch metrics), results.json, monitors.json "
                    "(the monitors' tables, read by `descend doctor`), the trained weights "
                    "(model.safetensors) and, with --tensorboard, TensorBoard events.")
    _common(p)
    p.add_argument("--variant", default=None, metavar="NAME",
                   help="which variant (default: the first); names are listed on error")
    p.add_argument("--seed", type=int, default=None, metavar="SEED",
                   help="the seed (default: the variant's first seed)")
    p.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard event files to <run folder>/tensorboard")
    p.add_argument("--checkpoint-every", type=int, default=None, metavar="STEPS",
                   help="checkpoint every epoch and every STEPS optimizer steps to "
                        "DIR/<name>-<variant>-seed<seed>.checkpoints (last 2 kept)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint of this run, exactly (checkpoints "
                        "every epoch, or as --checkpoint-every says); SIGTERM/SIGINT save first")
    p.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="data parallel: run N processes with torchrun (gloo on CPU, NCCL on GPU); "
                        "the recipe's batch_size is per process. Also works under torchrun itself")
    p.add_argument("--sync-batchnorm", action="store_true",
                   help="with data parallel, convert BatchNorm layers to SyncBatchNorm")
    p.set_defaults(func=train_main)


def _overrides(args) -> dict[str, Any]:
    o: dict[str, Any] = {}
    if args.epochs is not None:
        o["epochs"] = args.epochs
    if getattr(args, "seeds", None):
        o["seeds"] = list(args.seeds)
    if getattr(args, "no_monitors", False):
        o["monitors"] = False
    return o


def _fail(msg: str) -> int:
    print(f"descend: error: {msg}", file=sys.stderr)
    return 2


class ResumeError(ValueError):
    """``--resume`` could not restore the newest checkpoint (the message names it).

    >>> str(resume_error(Path("ck"), KeyError("callbacks")))  # doctest: +ELLIPSIS
    "--resume: ck: the checkpoint cannot be restored into this run: it is damaged or ... (KeyError: 'callbacks'). Move it away to start fresh"
    """


def resume_error(where: Path, e: BaseException) -> ResumeError:
    """A :class:`ResumeError` for ``e``, raised while restoring the checkpoint ``where``."""
    from descend.io import FileSafetyError
    text = repr(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    if isinstance(e, (FileSafetyError, ValueError, TypeError, OSError)) and text:
        return ResumeError(f"--resume: {text}" if str(where) in text else f"--resume: {where}: {text}")
    return ResumeError(f"--resume: {where}: the checkpoint cannot be restored into this run: it is "
                       f"damaged or was written by another version or recipe ({type(e).__name__}: "
                       f"{text}). Move it away to start fresh")


def _in_recipe(r: recipes.Recipe, e: Exception) -> Exception:
    """Errors raised while training name the recipe they came from."""
    if isinstance(e, (RecipeError, ResumeError)) or not isinstance(e, (ValueError, TypeError)):
        return e
    return RecipeError(f"{r.source}: {e}")


def check(recipe, *, device: str | None = None, overrides: dict[str, Any] | None = None,
          variant: str | None = None) -> list:
    """Validate ``recipe`` and build its runs (every variant, or only ``variant``) with their
    first seed, training nothing and writing nothing (``--check``); return the runs. The
    ``tune`` section and every ``search`` space are checked too, by building each run at
    both ends of its searched ranges.

    >>> [run.name for run in check("tiny", overrides={"epochs": 1})]
    ['sgd', 'momentum', 'adam']
    """
    from descend.experiments import runner
    r = recipes.load(recipe, overrides=overrides)
    _device(r, device)
    runs = r.runs()
    if variant is not None:
        runs = [_pick(runs, variant)]
    cache: dict[str, Any] = {}
    for run in runs:
        runner.build(run, run.spec.seeds[0], device="cpu", cache=cache)
    if r.tune or any(run.spec.search for run in runs):  # what `--tune` would sample, checked too
        from descend.experiments import tuning
        tuning.settings(r)
        for run in runs:
            dims = tuning.parse_space(run)
            for u in (0.0, 1.0):  # both ends of every searched range
                a = {d.path: d.value(u) if d.searched else d.value() for d in dims}
                if a:
                    runner.build(tuning.configure(run, a), run.spec.seeds[0], device="cpu", cache=cache)
    return runs


def _device(r: recipes.Recipe, device: str | None):
    from descend.experiments import runner
    try:
        return runner.check_device(device or r.device)
    except ValueError as e:
        raise RecipeError(f"{'--device' if device else r.source + ': device'}: {e}") from None


def _pick(runs: list, variant: str):
    names = [x.name for x in runs]
    if variant not in names:
        raise RecipeError(f"--variant: `variant` must be one of {', '.join(map(repr, names))}. "
                          f"Received: variant={variant!r}")
    return runs[names.index(variant)]


# --------------------------------------------------------------------------- compare
def compare(recipe, *, out: str | os.PathLike = "runs", device: str | None = None,
            epochs: int | None = None, seeds: list[int] | None = None, quiet: bool = False,
            overwrite: bool = False, progress: bool | None = None,
            monitors: bool | None = None, tune: bool = False, trials: int | None = None,
            address: str | None = None, early_stopping: bool | None = None,
            max_concurrent: int | None = None, suite: bool | list[str] = False) -> tuple[Path, dict[str, Any]]:
    """Run a comparison and write its folder; return ``(folder, results)``.

    ``monitors=False`` turns the recipe's monitors off (``--no-monitors``); each run's
    monitor tables go to ``monitors/<variant>-seed<seed>.json`` (named in results.json as
    the run's ``monitors_file``), not into results.json. The results carry
    ``statistics`` (:func:`descend.experiments.verdicts.analyse`: intervals, paired
    tests, ranks, the answer in words), printed first and shown first in report.html.

    ``tune=True`` (``--tune``) tunes every variant with an equal budget of quasirandom
    trials on Ray Tune, then runs the chosen configurations on fresh seeds
    (:func:`descend.experiments.tuning.tune`; ``trials``, ``address``,
    ``early_stopping``, ``max_concurrent`` go there; ``seeds`` become the fresh final seeds). ``suite=True`` (``--suite``) runs
    the variants on every workload of :mod:`descend.experiments.suite` (or the names
    given) and draws performance profiles.

    Example (a tiny run, a few seconds)::

        folder, results = compare("tiny", out="runs", epochs=2, seeds=[0])
    """
    if tune:
        from descend.experiments.tuning import tune as run_tune
        return run_tune(recipe, out=out, device=device, epochs=epochs, quiet=quiet, overwrite=overwrite,
                        trials=trials, address=address, early_stopping=early_stopping,
                        max_concurrent=max_concurrent, monitors=monitors, seeds=seeds)
    if suite:
        from descend.experiments.suite import run_suite
        return run_suite(recipe, out=out, device=device, seeds=seeds, quiet=quiet, overwrite=overwrite,
                         workloads=None if suite is True else list(suite), progress=progress)
    from descend.experiments import runner

    require("matplotlib", "descend compare's plots and report need", "compare")  # before training
    r, _ = load_with_overrides(recipe, epochs=epochs, seeds=seeds, monitors=monitors)
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    dev = _device(r, device)
    runs = r.runs()
    n_total = sum(len(x.spec.seeds) for x in runs)
    say(f"descend compare: {r.name}: {len(runs)} variants x seeds = {n_total} runs on {dev}")
    show = (not quiet and sys.stderr.isatty()) if progress is None else progress
    bar = None
    if show:
        from tqdm.auto import tqdm
        bar = tqdm(total=n_total, unit="run", leave=False, dynamic_ncols=True)

    def on_result(run, res):
        line = (f"  {run.name:<16} seed {res['seed']:<3} val acc {_pct(res['final_val_acc'])}  "
                f"test acc {_pct(res['final_test_acc'])}  {res['train_seconds']:.1f}s")
        if res.get("diverged"):
            line += "  " + res["diverged"].split(":")[0]  # "non-finite loss (nan) at step N (epoch E)"
        if bar is not None:
            bar.update(1)
            bar.write(line)
        else:
            say(line)

    for run in runs:  # the same names as `descend train`, which makes folders of them
        _path_name(r.source, run.origin.path(["name"]), run.name)
    staging = _Staging(Path(out), _path_name(r.source, "name", r.name), overwrite)
    t0 = time.perf_counter()
    try:
        variants = runner.run_all(runs, device=dev, on_result=on_result, out=out)
    except BaseException as e:
        staging.release()
        if isinstance(e, (ValueError, TypeError)):
            err = _in_recipe(r, e)
            if err is not e:
                raise err from e
        raise
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - t0
    return write_comparison(staging, r, variants, dev, elapsed, quiet=quiet, title="descend compare")


def _threads(args) -> int | None:
    if args.threads < 1:
        return _fail(f"--threads: `threads` must be an integer >= 1. Received: threads={args.threads}")
    import torch
    torch.set_num_threads(args.threads)
    return None


def compare_main(args) -> int:
    """Run ``descend compare`` with parsed ``args``; return the exit status."""
    if _threads(args):
        return 2
    if args.check:
        return _check_main(args)
    compare(args.recipe, out=args.out, device=args.device, epochs=args.epochs,
            seeds=args.seeds, quiet=args.quiet, overwrite=args.overwrite,
            monitors=False if args.no_monitors else None, tune=args.tune, trials=args.trials,
            address=args.address, early_stopping=args.early_stopping,
            max_concurrent=args.max_concurrent,
            suite=(args.suite or True) if args.suite is not None else False)
    return 0


def _check_main(args) -> int:
    if getattr(args, "seed", None) is not None:
        recipes.check_seed("--seed", args.seed)
    runs = check(args.recipe, device=args.device, overrides=_overrides(args),
                 variant=getattr(args, "variant", None))
    n = sum(len(x.spec.seeds) for x in runs)
    print(f"{runs[0].recipe.source}: ok ({len(runs)} variant{'s' * (len(runs) != 1)}, "
          f"{n} run{'s' * (n != 1)})")
    return 0


# --------------------------------------------------------------------------- train
def train(recipe, *, variant: str | None = None, seed: int | None = None, out: str | os.PathLike = "runs",
          device: str | None = None, epochs: int | None = None, quiet: bool = False, overwrite: bool = False,
          monitors: bool | None = None, tensorboard: bool = False, checkpoint_every: int | None = None,
          resume: bool = False, sync_batchnorm: bool = False,
          progress: bool | None = None) -> tuple[Path | None, dict[str, Any]]:
    """Train one variant of a recipe with one seed and write its folder; return ``(folder, result)``.

    The library function under ``descend train`` (as :func:`compare` is under ``descend
    compare``): writes ``out/<name>-<variant>/`` with ``steps.csv``, ``epochs.csv``,
    ``results.json``, ``monitors.json``, ``model.safetensors`` and, with ``tensorboard``,
    TensorBoard events. ``variant`` defaults to the first, ``seed`` to its first seed.
    ``checkpoint_every`` / ``resume`` checkpoint to ``out/<name>-<variant>-seed<seed>.checkpoints``
    and continue exactly. Under ``torchrun`` it trains data parallel; processes other
    than the first write nothing and return ``(None, result)``.

    Example (a few seconds)::

        folder, result = train("tiny", variant="adam", epochs=1, out="runs")
    """
    from descend.experiments import runner
    from descend.train import Callback, CSVLogger, TensorBoardLogger

    from descend._filelock import FolderInUseError
    from descend.train import distributed as ddp
    from descend.train.checkpoint import CheckpointCallback, latest_checkpoint

    r, _ = load_with_overrides(recipe, epochs=epochs, monitors=monitors)
    ckpt: list = []
    try:
        dev = _device(r, device)
        if ddp.launched_by_torchrun():  # one process of a data-parallel run
            dev = ddp.setup(device=dev.type)
        runs = r.runs()
        sampled = [x for x in runs if x.spec.data.kwargs.get("sampler") is not None]
        if ddp.launched_by_torchrun() and sampled:
            raise RecipeError(f"{r.source}: data.sampler: a sampler is not supported with data "
                              "parallel (each process reads its shard in a seeded order). "
                              f"Received: sampler={sampled[0].spec.data.kwargs['sampler']!r}")
        run = runs[0] if variant is None else _pick(runs, variant)
        if seed is not None:
            recipes.check_seed("--seed", seed)
        seed = run.spec.seeds[0] if seed is None else seed
        name = f"{_path_name(r.source, 'name', r.name)}-{_path_name(r.source, run.origin.path(['name']), run.name)}"
        ckpt_dir = Path(out) / f"{name}-seed{seed}.checkpoints"
        ckpt = [CheckpointCallback(ckpt_dir, every_n_steps=checkpoint_every)] \
            if resume or checkpoint_every else []
        main = ddp.is_main_process()

        def prepare(built):  # data parallel and resume, after the build, before the fit
            last = latest_checkpoint(ckpt_dir) if resume else None
            try:
                data = ddp.prepare_fit(built.trainer, built.data.train, checkpoint_dir=ckpt_dir,
                                       resume=resume, sync_batchnorm=sync_batchnorm, seed=seed)
            except Exception as e:  # a damaged or hostile checkpoint: one line naming it
                if not resume:
                    raise
                raise resume_error(last or ckpt_dir, e) from e
            if resume and main and not quiet:
                t = built.trainer
                print(f"resumed from {last} (epoch {t.epoch}, step {t.global_step}, "
                      f"{t.batches_done} batches into epoch {t.epoch + 1})" if last is not None else
                      f"no checkpoint in {ckpt_dir}: starting fresh", flush=True)
            return data

        if not main:  # other ranks train and write nothing
            res = runner.train_one(run, seed, device=dev, callbacks=ckpt, prepare=prepare, out=out)
            ddp.cleanup()
            res.pop("model", None)
            return None, runner.clean(res)
        if ckpt:  # owned by this run from now on: two runs never share one
            try:
                ckpt[0].acquire()
            except FolderInUseError as e:
                raise RecipeError(f"--out: {e}") from None
        try:
            staging = _Staging(Path(out), name, overwrite)
        except BaseException:
            for c in ckpt:
                c.release()
            raise
        final = staging.final

        class Printer(Callback):
            def on_epoch_end(self, trainer, logs):
                print("  " + "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                       for k, v in logs.items()), flush=True)

        with _writing(final), staging as tmp:
            cbs = [CSVLogger(tmp), *ckpt]
            if tensorboard:
                cbs.append(TensorBoardLogger(tmp / "tensorboard"))
            if not quiet:
                print(f"descend train: {r.name} / {run.name}, seed {seed}, on {dev}", flush=True)
                cbs.append(Printer())
            t0 = time.perf_counter()
            show = (not quiet and sys.stderr.isatty()) if progress is None else progress
            res = runner.train_one(run, seed, device=dev, callbacks=cbs, prepare=prepare,
                                   progress=show, out=out)
            ddp.cleanup()
            for c in cbs:
                if hasattr(c, "close"):
                    c.close()
            model = res.pop("model")
            tables = res.pop("monitors", None)
            if tables:
                _write_json(tmp / "monitors.json", tables)
            from descend.io import save_weights
            save_weights(tmp / "model.safetensors", model)
            res = runner.clean(res)
            _write_json(tmp / "results.json", {
                "name": r.name, "variant": run.name, "config": run.spec.model_dump(),
                "meta": _meta(dev, time.perf_counter() - t0), "result": res})
            (tmp / "recipe.yaml").write_text(yaml.safe_dump(_recipe_dict(r), sort_keys=False))
    except (ValueError, TypeError) as e:
        err = _in_recipe(r, e)
        if err is e:
            raise
        raise err from e
    finally:
        for c in ckpt:
            c.release()
    final = staging.final
    if not quiet:
        print(f"test acc {_pct(res['final_test_acc'])}  final val acc {_pct(res['final_val_acc'])}")
    print(f"wrote {final}" if not quiet else str(final))
    return final, res


def train_main(args) -> int:
    """Run ``descend train`` with parsed ``args``; return the exit status."""
    from descend.train import distributed as ddp

    if _threads(args):
        return 2
    if args.nproc is not None and not ddp.launched_by_torchrun():
        if "--nproc" not in " ".join(sys.argv):
            return _fail("--nproc re-runs the command line; from Python, start torchrun yourself")
        return ddp.relaunch(args.nproc, sys.argv[1:])
    if args.check:
        return _check_main(args)
    train(args.recipe, variant=args.variant, seed=args.seed, out=args.out, device=args.device,
          epochs=args.epochs, quiet=args.quiet, overwrite=args.overwrite,
          monitors=False if args.no_monitors else None, tensorboard=args.tensorboard,
          checkpoint_every=args.checkpoint_every, resume=args.resume,
          sync_batchnorm=args.sync_batchnorm)
    return 0
