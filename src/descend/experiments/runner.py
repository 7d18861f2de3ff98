"""Build and train the runs of a recipe; summarise them over seeds.

For every variant and seed: ``torch.manual_seed(seed)``, build the model (and apply the
initializer), the loss, the optimizer, the schedules, callbacks and regularizers
through their registries, train with :class:`descend.train.Trainer` (shuffling seeded
with the same seed), evaluate on the test split. The data split depends only on
``split_seed``, so every variant and seed sees the same train / validation / test sets.

``data.preprocess`` is fitted on the training split and applied to every split (cached
with the data); ``data.augment`` becomes an ``augment`` callback and ``data.sampler`` the
order of the training batches (:class:`descend.data.samplers.SampledBatches`), both
seeded with the run's seed. ``monitors`` (default: gradient norms and activation
statistics every 20 steps) are attached before the recipe's callbacks; their tables come
back in ``monitors``.

Summary per variant (over seeds: mean, sample standard deviation and 95% t-interval,
:func:`descend.analysis.stats.mean_ci`): final and best validation accuracy, final test
accuracy and losses, and the steps and seconds to reach the target on the validation set
(``target_accuracy``, or ``target_loss``; checked at each epoch end or every
``eval_every`` steps) as restricted means in which a run that never reached the target
counts as its budget (:func:`summarize`), with ``reached = k/n``. Every run records the
machine's load average, so that seconds measured on a busy machine are flagged.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from descend.callbacks import Callback
from descend.experiments.recipe import (DATA_PIPELINE_KEYS, Component, RecipeError, Run,
                                        check_model_size, field_of)


@dataclass
class Built:
    """The objects a run trains with."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    trainer: Any
    data: Any
    train: Any = None  # what the fit trains on: data.train, or batches in a sampler's order


def _guard(run: Run, parts: list[Any], section: dict[str, Any], fn: Callable[[], Any]) -> Any:
    """Call ``fn``; re-raise a constructor's ValueError/TypeError with the recipe field path."""
    try:
        return fn()
    except RecipeError:
        raise
    except (ValueError, TypeError, KeyError, OSError, ImportError, AttributeError) as e:
        msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        field = field_of(msg, section)
        value = section.get(field) if field else None
        if isinstance(value, str) and _FLOAT_LIKE.match(value.strip()):
            msg += (f" (YAML reads {value} as a string: write it with a decimal point, "
                    f"e.g. {float(value):.1e})")
        raise run.error(parts + [field] if field else parts, msg) from None


_FLOAT_LIKE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _components(run: Run, parts: list[Any], value: Any, *, many: bool) -> list[tuple[list[Any], str, dict]]:
    """``[(path, name, kwargs)]`` of a name, a ``{name: ...}`` mapping or (``many``) a list of them."""
    items = value if many and isinstance(value, list) else [value]
    out = []
    for i, item in enumerate(items):
        path = parts + [i] if many and isinstance(value, list) else parts
        if isinstance(item, str):
            out.append((path, item, {}))
        elif isinstance(item, dict) and isinstance(item.get("name"), str):
            kw = dict(item)
            out.append((path, kw.pop("name"), kw))
        else:
            what = "a name, a {name: ..., ...} mapping" + (" or a list of them" if many else "")
            raise run.error(path, f"`{parts[-1]}` must be {what}. Received: {parts[-1]}={item!r}")
    return out


def load_data(run: Run, cache: dict[str, Any]):
    """The data splits of ``run``, preprocessed (cached by data spec and split seed)."""
    spec = run.spec
    kwargs = {k: v for k, v in spec.data.kwargs.items() if k not in DATA_PIPELINE_KEYS}
    section = spec.data.as_dict()
    key = json.dumps([{k: v for k, v in section.items() if k not in ("augment", "sampler")},
                      spec.split_seed], sort_keys=True, default=str)
    if key not in cache:
        if "root" in kwargs and kwargs["root"] is not None:
            kwargs["root"] = str(run.resolve(kwargs["root"]))
        import descend.data as data
        splits = _guard(run, ["data"], section,
                        lambda: data.load(spec.data.name, seed=spec.split_seed, **kwargs))
        pre = spec.data.kwargs.get("preprocess")
        if pre is not None:
            from descend.data.preprocess import PREPROCESSORS, fit_splits
            for path, name, kw in _components(run, ["data", "preprocess"], pre, many=True):
                splits = _guard(run, path, kw, lambda name=name, kw=kw, splits=splits: fit_splits(
                    PREPROCESSORS.create(name, **kw), splits))
        cache[key] = splits
    return cache[key]


def _sampler(run: Run, seed: int, train, batch_size):
    """``SampledBatches`` over ``train`` in the order of ``data.sampler``, seeded with ``seed``."""
    import inspect

    from descend.data.samplers import SAMPLERS, SampledBatches
    (path, name, kw), = _components(run, ["data", "sampler"], run.spec.data.kwargs["sampler"], many=False)

    def make():
        cls = SAMPLERS.get(name)
        first = next(iter(inspect.signature(cls).parameters))
        source = {"n": len(train), "labels": train.tensors[1], "sampler": len(train)}.get(first)
        if source is None:  # pragma: no cover - a sampler with another first argument
            raise TypeError(f"sampler {name!r} takes {first!r} first; a recipe can build samplers "
                            f"that take n, labels or sampler. Received: {first}")
        if name == "growing_batch" and isinstance(run.spec.batch_size, int):
            kw.setdefault("start", run.spec.batch_size)
        return SampledBatches(train, cls(source, **{"seed": seed, **kw}), batch_size)
    return _guard(run, path, kw, make)


def build(run: Run, seed: int, *, device: str | torch.device = "cpu",
          cache: dict[str, Any] | None = None, callbacks: list | None = None,
          progress: bool = False, out: Any = None) -> Built:
    """Construct everything ``run`` needs for ``seed``; errors name the recipe field.

    Folders that recipe callbacks write to (``checkpoint``'s ``directory``, ``csv_logger``'s
    ``directory``, ``tensorboard``'s ``log_dir``) must be relative paths without ``..``;
    they are taken inside ``out`` (the command's ``--out``; default: the working folder).
    """
    from descend import schedules
    from descend.train import Callback, Trainer

    spec = run.spec
    cache = {} if cache is None else cache
    data = load_data(run, cache)
    torch.manual_seed(seed)
    from descend.nn import MODELS

    def make_model():
        return MODELS.create(spec.model.name, input_shape=tuple(data.input_shape),
                             num_classes=data.num_classes, **spec.model.kwargs)
    _guard(run, ["model"], spec.model.as_dict(), lambda: check_model_size(run, make_model))
    model = _guard(run, ["model"], spec.model.as_dict(), make_model)
    if spec.init is not None:
        from descend import init
        _guard(run, ["init"], spec.init.as_dict(),
               lambda: init.apply(model, spec.init.name, **spec.init.kwargs))
    from descend.losses import LOSSES
    loss_fn = _guard(run, ["loss"], spec.loss.as_dict(),
                     lambda: LOSSES.create(spec.loss.name, **spec.loss.kwargs))
    from descend.experiments.components import create_lr_scheduler, create_optimizer, is_import_path
    opt = _guard(run, ["optimizer"], spec.optimizer.as_dict(),
                 lambda: create_optimizer(spec.optimizer.name, model.parameters(), **spec.optimizer.kwargs))

    cbs: list = []
    aug = spec.data.kwargs.get("augment")
    if aug is not None:
        def make_aug():
            from descend.data.augment import Augment
            return Augment(aug if isinstance(aug, list) else [aug], seed=seed)
        cbs.append(_guard(run, ["data", "augment"], {}, make_aug))
    scheds: dict[str, Any] = {}
    schedulers = []
    for key, s in spec.schedule.items():
        section = s if isinstance(s, dict) else {}
        if isinstance(s, dict) and is_import_path(s.get("name")):  # a torch LR scheduler class
            if key != "lr":
                raise run.error(["schedule", key], "a torch LR scheduler (import path) schedules the "
                                f"learning rate: write it under `lr`. Received: schedule key {key!r}")
            kw = {k: v for k, v in s.items() if k != "name"}
            schedulers.append(_guard(run, ["schedule", key], section, lambda s=s, kw=kw: create_lr_scheduler(
                s["name"], opt, unit=spec.schedule_unit, **kw)))
            continue
        scheds[key] = _guard(run, ["schedule", key], section, lambda s=s: schedules.create(s))
        if isinstance(scheds[key], Callback):  # metric-driven (plateau): fed by the epoch logs
            cbs.append(scheds[key])
    if scheds:
        schedulers.insert(0, _guard(run, ["schedule"], dict(spec.schedule), lambda: schedules.Scheduler(
            opt, scheds, unit=spec.schedule_unit, scale=spec.schedule_scale)))

    batch_size: Any = spec.batch_size
    if isinstance(batch_size, dict):
        bs_sched = _guard(run, ["batch_size"], batch_size, lambda: schedules.create(spec.batch_size))
        _guard(run, ["batch_size"], {}, lambda: schedules.batch_size_at(bs_sched, 0))
        batch_size = lambda epoch: schedules.batch_size_at(bs_sched, epoch)  # noqa: E731

    first_named = len(cbs)  # the monitors go here, before the recipe's callbacks (below)
    for i, c in enumerate(spec.callbacks):
        cbs.append(_callback(run, ["callbacks", i], c, out))
    for i, r in enumerate(spec.regularizers):
        def make(r=r):
            from descend.regularize import REGULARIZERS
            obj = REGULARIZERS.create(r.name, **r.kwargs)
            if not isinstance(obj, Callback):
                raise TypeError(f"regularizer {r.name!r} is not a training callback and cannot be "
                                f"used in a recipe. Received: {type(obj).__name__}")
            return obj
        cbs.append(_guard(run, ["regularizers", i], r.as_dict(), make))
    cbs.extend(callbacks or [])

    train = data.train
    if spec.data.kwargs.get("sampler") is not None:
        train = _sampler(run, seed, data.train, batch_size)
        cbs.insert(0, train)  # sets the sampler's epoch before the epoch's batches are drawn
        from descend.data.samplers import LossFeedback
        feedback = [c for c in cbs if isinstance(c, LossFeedback)]
        for c in feedback:
            c.bind(train.sampler, data.train)
        if not feedback and callable(getattr(train.sampler, "update", None)):
            cbs.append(LossFeedback(train.sampler, data.train))
    # before every callback the recipe or the command names: they see the gradients before
    # any clipping in on_after_backward, and a checkpoint taken after the step has their rows
    cbs[first_named:first_named] = monitors(run, cbs, out=out)

    trainer = _guard(run, [], {"batch_size": 1, "metrics": 1, "eval_batch_size": 1, "precision": spec.precision,
                               "accumulate": spec.accumulate, "compile": spec.compile}, lambda: Trainer(
        model, opt, loss_fn=loss_fn, schedulers=schedulers, callbacks=cbs, metrics=tuple(spec.metrics),
        batch_size=batch_size, eval_batch_size=spec.eval_batch_size, device=device, seed=seed,
        progress=progress, grad_norm=spec.grad_norm, precision=spec.precision,
        accumulate=spec.accumulate, compile=spec.compile))
    return Built(model=model, optimizer=opt, trainer=trainer, data=data, train=train)


#: Callback arguments that name a folder the callback writes to.
PATH_ARGS = {"checkpoint": "directory", "csv_logger": "directory", "tensorboard": "log_dir"}


def _callback(run: Run, path: list[Any], c: Component, out: Any = None):
    """``CALLBACKS.create`` of the recipe component ``c``; errors name ``path``. A folder
    it writes to (:data:`PATH_ARGS`) must be relative, without ``..``, and lies in ``out``."""
    from pathlib import Path

    from descend._validation import check_relative_path
    from descend.train import CALLBACKS
    kwargs = dict(c.kwargs)
    key = PATH_ARGS.get(c.name)
    if key is not None and key in kwargs:
        _guard(run, path, {key: kwargs[key]}, lambda: check_relative_path(key, kwargs[key]))
        kwargs[key] = str(Path(out if out is not None else ".") / kwargs[key])
    return _guard(run, path, c.as_dict(), lambda: CALLBACKS.create(c.name, **kwargs))


def monitors(run: Run, existing: list | None = None, *, out: Any = None) -> list:
    """The monitors ``run.spec.monitors`` asks for, less those of a type already in ``existing``.

    ``true``: :func:`descend.train.monitors.light_monitors` every 20 steps; an integer: the
    same every that many steps; ``false``: none; a list: those components of ``CALLBACKS``.

    >>> from descend.experiments.recipe import load
    >>> [type(m).__name__ for m in monitors(load("tiny").runs()[0])]
    ['GradientNormMonitor', 'ActivationMonitor']
    >>> monitors(load("tiny", overrides={"monitors": False}).runs()[0])
    []
    """
    from descend.train.monitors import light_monitors
    spec = run.spec.monitors
    if spec is False:
        return []
    if spec is True or isinstance(spec, int):
        made = light_monitors() if spec is True else _guard(
            run, ["monitors"], {}, lambda: light_monitors(spec))
    else:
        made = [_callback(run, ["monitors", i], Component(**m), out)  # dicts: checked by the recipe
                for i, m in enumerate(spec)]
    have = {type(c) for c in existing or []}
    return [m for m in made if type(m) not in have]


def check_device(device: str) -> torch.device:
    """``torch.device(device)``, with a clear error when CUDA is asked for but absent.

    >>> check_device("cpu")
    device(type='cpu')
    """
    from descend.train import Trainer
    return Trainer._check_device(device)


def clean(v: Any) -> Any:
    """JSON-safe: NaN / inf -> None, recursively.

    >>> clean({"a": [1.0, float("nan")], "b": float("inf")})
    {'a': [1.0, None], 'b': None}
    """
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [clean(x) for x in v]
    return v


_clean = clean  # the former private name


class TargetProbe(Callback):
    """Check the target on the validation set every ``every`` steps (``eval_every``).

    Records ``{"step", "time", "value"}`` rows of the validation metric (accuracy, or the
    loss with ``target_loss``); the first row meeting the target gives the steps to it.
    ``time`` is training seconds: the probe's own evaluations are subtracted (``spent``).
    """

    def __init__(self, val, every: int, key: str):
        self.val, self.every, self.key = val, every, key
        self.rows: dict[str, list] = {"step": [], "time": [], "value": []}
        self.spent, self._epoch_start = 0.0, 0.0

    def on_epoch_begin(self, trainer):
        self._epoch_start = time.perf_counter()

    def on_batch_end(self, trainer, logs):
        if trainer.global_step % self.every == 0:
            t0 = time.perf_counter()
            value = trainer.evaluate(self.val).get(self.key)
            self.rows["step"].append(trainer.global_step)
            self.rows["time"].append(trainer.train_seconds + (t0 - self._epoch_start) - self.spent)
            self.rows["value"].append(value)
            self.spent += time.perf_counter() - t0


def target_of(spec) -> dict[str, Any]:
    """The run's target: ``{"metric", "mode", "value"}`` (``target_loss`` wins over ``target_accuracy``).

    >>> from descend.experiments.recipe import RunSpec
    >>> s = RunSpec(data={"name": "digits"}, model={"name": "mlp"}, optimizer={"name": "sgd"}, epochs=1)
    >>> target_of(s), target_of(s.model_copy(update={"target_loss": 0.1}))
    ({'metric': 'val_acc', 'mode': 'max', 'value': 0.9}, {'metric': 'val_loss', 'mode': 'min', 'value': 0.1})
    """
    if spec.target_loss is not None:
        return {"metric": "val_loss", "mode": "min", "value": float(spec.target_loss)}
    return {"metric": "val_acc", "mode": "max", "value": float(spec.target_accuracy)}


def _met(value, target) -> bool:
    if value is None or not math.isfinite(value):
        return False
    return value >= target["value"] if target["mode"] == "max" else value <= target["value"]


def load_now() -> list[float] | None:
    """The 1, 5 and 15-minute load averages of the machine (None where unknown).

    >>> load_now() is None or len(load_now()) == 3
    True
    """
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):  # pragma: no cover - Windows
        return None


def train_one(run: Run, seed: int, *, device="cpu", cache=None, callbacks=None,
              progress: bool = False, prepare: Callable[[Built], Any] | None = None,
              out: Any = None, diverged_ok: bool = False) -> dict[str, Any]:
    """Train ``run`` with ``seed``; return its curves and final numbers (JSON-ready).

    ``prepare(built)``, if given, runs after the build and before the fit: it may restore
    a checkpoint (the fit then runs the remaining epochs), wrap the model for data
    parallel, and return replacement training data (a sharded loader), or None.

    With ``diverged_ok`` a fit stopped by a non-finite loss (``FloatingPointError``) is a
    result, not an error: ``diverged`` holds the message, the curves end at the last
    finished epoch and the test split is evaluated on the last finite weights (how
    ``descend compare`` keeps the other runs of a comparison). Otherwise it is raised.

    Steps (and seconds) to the target are those of the first check that meets it: at each
    epoch end, or every ``eval_every`` steps; ``None`` when the run never meets it, with
    ``steps_run`` the budget it had (a censored time, see
    :func:`descend.analysis.stats.time_to_target`). ``load`` is the machine's load
    average when the run ended, for judging its seconds.
    """
    spec = run.spec
    target = target_of(spec)
    cache = {} if cache is None else cache
    data = load_data(run, cache)
    probe = None
    if spec.eval_every is not None and len(data.val):
        probe = TargetProbe(data.val, spec.eval_every, "acc" if target["metric"] == "val_acc" else "loss")
    built = build(run, seed, device=device, cache=cache, callbacks=list(callbacks or []) + ([probe] if probe else []),
                  progress=progress, out=out)
    t, data = built.trainer, built.data
    train = built.train
    if prepare is not None:
        train = prepare(built) or train
    val = data.val if len(data.val) else None
    t0 = time.perf_counter()
    diverged = None
    try:
        hist = t.fit(train, val, epochs=spec.epochs - t.epoch)
    except FloatingPointError as e:
        if not diverged_ok:
            raise
        diverged, hist = str(e), t.history
    wall = time.perf_counter() - t0
    test = t.evaluate(data.test) if len(data.test) else {}
    ep = hist.epochs
    key = target["metric"] if target["metric"] in ep else target["metric"].replace("val_", "train_")
    if probe is not None:
        rows, where = probe.rows, "probe"
    else:
        rows, where = {"step": ep.get("step", []), "time": ep.get("time", []), "value": ep.get(key, [])}, "epoch"
    reached = next((i for i, v in enumerate(rows["value"]) if _met(v, target)), None)

    def last(k):
        return ep[k][-1] if ep.get(k) else None

    def best(k, fn):
        xs = [v for v in ep.get(k, []) if v is not None and math.isfinite(v)]
        return fn(xs) if xs else None
    result = {
        "seed": seed,
        "steps": hist.steps,
        "epochs": hist.epochs,
        "test": test,
        "final_val_acc": last("val_acc"),
        "best_val_acc": best("val_acc", max),
        "final_test_acc": test.get("acc"),
        "final_val_loss": last("val_loss"),
        "best_val_loss": best("val_loss", min),
        "final_test_loss": test.get("loss"),
        "final_train_loss": last("train_loss"),
        "target": target,
        "target_metric": key,
        "target_checked": where,
        "target_checks": rows if probe is not None else None,
        "steps_to_target": rows["step"][reached] if reached is not None else None,
        "seconds_to_target": rows["time"][reached] if reached is not None else None,
        "train_seconds": t.train_seconds - (probe.spent if probe is not None else 0.0),
        "wall_seconds": wall,
        "epochs_run": t.epoch,
        "steps_run": t.global_step,
        "load": load_now(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
    }
    if diverged is not None:
        result["diverged"] = diverged
    from descend.analysis.labels import layer_labels
    result["layer_names"] = layer_labels(built.model)
    result["monitors"] = clean({k: {c: list(v) for c, v in table.items()}
                                for k, table in (getattr(hist, "monitors", None) or {}).items()})
    result["model"] = built.model
    return result


def mean_std(values: list[Any]) -> dict[str, Any]:
    """``{"mean", "std", "n"}`` over the finite values (sample std, ddof=1; 0 for one value).

    >>> mean_std([1.0, 3.0, float("nan")])                 # NaN is left out
    {'mean': 2.0, 'std': 1.4142135623730951, 'n': 2}
    >>> mean_std([None])
    {'mean': None, 'std': None, 'n': 0}
    """
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not xs:
        return {"mean": None, "std": None, "n": 0}
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return {"mean": m, "std": sd, "n": len(xs)}


SUMMARY_KEYS = ["final_val_acc", "best_val_acc", "final_test_acc", "final_val_loss", "final_test_loss",
                "final_train_loss", "train_seconds"]


def busy(load: list[float] | None, cpus: int | None, threads: int = 1) -> bool:
    """Whether the machine was busy: a 1-minute load average above its CPU count.

    Above that, some runnable threads waited for a core, so wall-clock seconds measured
    then are inflated by the other jobs and do not compare with seconds measured on an
    idle machine (steps do).

    >>> busy([3.5, 2.0, 1.0], 2), busy([0.9, 1.0, 1.0], 2), busy(None, 2)
    (True, False, False)
    """
    return bool(load and cpus and load[0] > cpus)


def summarize(variant: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One summary row over seeds: mean, std and 95% t-interval of :data:`SUMMARY_KEYS`;
    the steps and seconds to the target with runs that never reached it counted.

    Each cell is :func:`descend.analysis.stats.mean_ci` (``mean, std, n, lo, hi``).
    ``steps_to_target`` / ``seconds_to_target``: the restricted mean ``E[min(T, B)]``
    (a run that never reached the target counts as its budget ``B``, the steps it ran;
    seconds: its training seconds) with its interval, plus the Kaplan-Meier ``median``
    and ``reached`` (k of n); never the mean of the lucky runs only. ``busy``: some run
    ended on a machine whose load exceeded its cores (its seconds are not comparable).

    >>> runs = [{"seed": 0, "final_val_acc": 0.8, "steps_to_target": 10, "steps_run": 40},
    ...         {"seed": 1, "final_val_acc": 0.9, "steps_to_target": None, "steps_run": 40}]
    >>> row = summarize("sgd", runs)
    >>> row["seeds"], round(row["final_val_acc"]["mean"], 4), row["steps_to_target"]["mean"], row["reached"]
    ([0, 1], 0.85, 25.0, '1/2')
    >>> row["steps_to_target"]["median"], row["steps_to_target"]["censored_at"]
    (10.0, [40])
    """
    from descend.analysis.stats import mean_ci, time_to_target
    row: dict[str, Any] = {"variant": variant, "seeds": [r["seed"] for r in runs]}
    for k in SUMMARY_KEYS:
        row[k] = mean_ci([r.get(k) for r in runs], bounds=(0.0, 1.0) if k.endswith("acc") else None)
    for k, budget in (("steps_to_target", "steps_run"), ("seconds_to_target", "train_seconds")):
        budgets = [r.get(budget) if r.get(budget) is not None else math.inf for r in runs]
        tt = time_to_target([r.get(k) for r in runs], budgets)
        row[k] = {**tt["rmst"], "median": tt["median"], "reached": tt["reached"],
                  "censored_at": [b for r, b in zip(runs, budgets) if r.get(k) is None],
                  "capped": tt["capped"]}
    row["reached"] = f"{sum(r.get('steps_to_target') is not None for r in runs)}/{len(runs)}"
    loads = [r.get("load") for r in runs if r.get("load")]
    row["load_max"] = max(x[0] for x in loads) if loads else None
    row["busy"] = any(busy(r.get("load"), r.get("cpus")) for r in runs)
    return row


def run_all(runs: list[Run], *, device="cpu", on_result: Callable[[Run, dict], None] | None = None,
            progress: bool = False, out: Any = None) -> list[dict[str, Any]]:
    """Train every run for every seed; return ``[{"name", "config", "runs": [...]}]``.

    All runs are built once with their first seed before any training, so that a
    recipe error surfaces in a second, not after minutes of training.
    """
    cache: dict[str, Any] = {}
    for run in runs:
        build(run, run.spec.seeds[0], device=device, cache=cache, out=out)
    done = []
    for run in runs:
        results = []
        for seed in run.spec.seeds:
            r = train_one(run, seed, device=device, cache=cache, out=out, diverged_ok=True)
            r.pop("model", None)
            results.append(clean(r))
            if on_result is not None:
                on_result(run, r)
        done.append({"name": run.name, "config": run.spec.model_dump(), "runs": results,
                     "summary": clean(summarize(run.name, results))})
    return done
