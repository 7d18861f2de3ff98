"""Recipes: YAML files that name the data, model, optimizer, schedule, epochs and seeds.

A recipe is a mapping (read with ``yaml.safe_load``)::

    name: digits-optimizers           # the run folder: runs/<name>
    data:                                            # descend.data.load(name, **kwargs), then:
      name: digits
      val_fraction: 0.1
      preprocess: [{name: standardize}]              #   descend.data.PREPROCESSORS, fit on train
      augment: [{name: gaussian_noise, sigma: 0.05}] #   descend.data.AUGMENTATIONS, train batches
      sampler: {name: class_interleaved}             #   descend.data.SAMPLERS, the example order
    model: {name: mlp, hidden: [128]}                # descend.nn.MODELS
    init: {name: he_normal}                          # descend.init.apply (optional)
    loss: {name: cross_entropy}                      # descend.losses.LOSSES
    optimizer: {name: sgd, lr: 0.1}                  # descend.optim.create, or an import path:
                                                     #   {name: torch.optim.NAdam, lr: 0.002}
    schedule: {lr: {name: cosine, e0: 0.1, total: 600}}   # descend.schedules, per hyperparameter
    batch_size: 64                                   # or a schedule of the epoch
    epochs: 20
    seeds: [0, 1, 2]
    callbacks: [{name: early_stopping, patience: 5}] # descend.train.CALLBACKS
    regularizers: [{name: l2_penalty, alpha: 1.0e-4}]  # descend.regularize.REGULARIZERS
    monitors: true                                   # or false, an interval, or a list
    variants:                                        # each overrides the fields above
      - {name: sgd}
      - {name: adam, optimizer: {name: adam, lr: 0.001}}
    grid: {optimizer.lr: [0.01, 0.1]}                # every variant x every value
    search: {optimizer.lr: {log_uniform: [1.0e-4, 1.0e-1]}}   # what `compare --tune` samples
    tune: {trials: 8, final_seeds: [100, 101, 102, 103, 104]}  # (experiments/tuning.py)

Every component is ``{name: ..., <keyword arguments>}`` resolved through a registry,
so a new optimizer, schedule, callback or regularizer needs no change here. Errors
name the field path and the value (``variants[2].optimizer.lr: `lr` must be >= 0.
Received: lr=-1``): unknown keys, wrong types, bad values and missing files. YAML 1.1
(PyYAML) reads ``1e-4`` as a string: write ``1.0e-4`` (the error says so).

``data`` takes three keys besides those of the dataset: ``preprocess`` (a preprocessor
or a list, fitted on the training split and applied to every split), ``augment`` (a list
of augmentations applied to every training batch, seeded with the run's seed) and
``sampler`` (the order of the training examples, seeded with the run's seed;
``loss_proportional`` is fed the per-example losses each epoch by the ``loss_feedback``
callback, added for it). ``monitors``: ``true`` (default) attaches
:func:`descend.train.monitors.light_monitors` (per-layer gradient norms, activation
statistics, dead and saturated units, every 20 steps), an integer sets that interval,
``false`` attaches none, and a list of components (``[{name: update_ratio_monitor,
interval: 5}]``) attaches exactly those.

``optimizer`` and the schedules may name a class by import path instead of a registry
name (``torch.optim.NAdam``, ``pytorch_optimizer:Lion``, ``torch.optim.lr_scheduler.OneCycleLR``;
:mod:`descend.experiments.components`). ``target_loss`` makes the target "validation
loss at most this" (regression) instead of ``target_accuracy``; ``eval_every: N`` checks
the target every N steps on the validation set (default: at each epoch end). ``search``
(per variant) and ``tune`` (top level) describe fair tuning
(:mod:`descend.experiments.tuning`); ``descend compare`` without ``--tune`` ignores them.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import math
import os
import re
import unicodedata
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from descend._validation import short_repr

RECIPES_DIR = Path(__file__).parent / "recipes"

# The documented ranges of a recipe's own fields (docs/main-job.md, "Limits"). They keep a
# typo or a hostile file from asking for more memory or time than any real run needs;
# arguments of components (optimizer.lr, model.hidden, ...) are checked by the components.
MAX_SEED = 2**32 - 1          # numpy's seeds are 32-bit; torch and random take these too
MAX_INT = 2**53               # any integer anywhere in a recipe: exact as a float
LIMITS: dict[str, int] = {
    "epochs": 1_000_000,
    "batch_size": 1 << 24,     # also eval_batch_size
    "seeds": 1000,             # seeds of one variant
    "runs": 10_000,            # variants x grid values x seeds
    "monitors": 1 << 31,       # a monitor interval, in steps
    "accumulate": 1 << 16,     # batches whose gradients sum into one step
    "name": 128,               # characters of a recipe or variant name
    "parameters": int(os.environ.get("DESCEND_MAX_PARAMETERS", 100_000_000)),  # of one model
    "parameter_tensors": 10_000,                                               # of one model
}


class RecipeError(ValueError):
    """A recipe is invalid; the message names the file, the field path and the value.

    >>> try:
    ...     load({"name": "r", "data": {"name": "digits"}, "model": {"name": "mlp"},
    ...           "optimizer": {"name": "sgd"}, "epochs": 0}).runs()
    ... except RecipeError as e:
    ...     print(e)
    <recipe>: epochs: `epochs` must be greater than or equal to 1. Received: epochs=0
    """


class Component(BaseModel):
    """``{name: ..., **kwargs}``: a registry name and the keyword arguments of its factory.

    >>> c = Component(name="sgd", lr=0.1, momentum=0.9)
    >>> c.name, c.kwargs, c.as_dict()
    ('sgd', {'lr': 0.1, 'momentum': 0.9}, {'name': 'sgd', 'lr': 0.1, 'momentum': 0.9})
    """

    model_config = ConfigDict(extra="allow", strict=True)
    name: str

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.kwargs}


class RunSpec(BaseModel):
    """One fully resolved variant: everything needed to train it.

    >>> spec = RunSpec(data={"name": "digits"}, model={"name": "mlp"}, optimizer={"name": "sgd", "lr": 0.1},
    ...                epochs=2)
    >>> spec.loss.name, spec.batch_size, spec.seeds, spec.optimizer.kwargs     # the defaults filled in
    ('cross_entropy', 64, [0], {'lr': 0.1})
    """

    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = "base"
    data: Component
    model: Component
    init: Component | None = None
    loss: Component = Component(name="cross_entropy")
    optimizer: Component
    schedule: dict[str, Any] = Field(default_factory=dict)
    schedule_unit: Literal["step", "epoch"] = "step"
    schedule_scale: Literal["absolute", "relative"] = "absolute"
    batch_size: Any = 64
    eval_batch_size: int = Field(default=1024, ge=1, le=LIMITS["batch_size"])
    epochs: int = Field(ge=1, le=LIMITS["epochs"])
    seeds: list[Annotated[int, Field(ge=0, le=MAX_SEED)]] = Field(
        default_factory=lambda: [0], min_length=1, max_length=LIMITS["seeds"])
    split_seed: int = Field(default=0, ge=0, le=MAX_SEED)
    target_accuracy: float = Field(default=0.9, gt=0, le=1)
    target_loss: float | None = Field(default=None, gt=0)
    eval_every: int | None = Field(default=None, ge=1)
    callbacks: list[Component] = Field(default_factory=list)
    regularizers: list[Component] = Field(default_factory=list)
    metrics: list[str] = Field(default_factory=lambda: ["accuracy"])
    grad_norm: bool = True
    precision: Literal["32", "32-true", "bf16-mixed", "16-mixed"] = "32"  # Trainer(precision=)
    accumulate: int = Field(default=1, ge=1, le=LIMITS["accumulate"])   # Trainer(accumulate=)
    compile: Any = False  # Trainer(compile=): true/false or torch.compile's keyword arguments (check_static)
    monitors: Any = True  # true / false / an interval / a list of components: check_static
    search: dict[str, Any] = Field(default_factory=dict)  # dotted path -> dimension (tuning.py)


DATA_PIPELINE_KEYS = ("preprocess", "augment", "sampler")
RUN_KEYS = set(RunSpec.model_fields) - {"name"}
TOP_KEYS = {"name", "description", "device", "variants", "grid", "tune"} | RUN_KEYS


class Recipe(BaseModel):
    """A parsed recipe: shared fields, variants and grid; :meth:`runs` expands them.

    >>> r = load({"name": "lr", "data": {"name": "digits"}, "model": {"name": "mlp"},
    ...           "optimizer": {"name": "sgd"}, "epochs": 1, "grid": {"optimizer.lr": [0.1, 0.01]}})
    >>> [(run.name, run.spec.optimizer.kwargs["lr"]) for run in r.runs()]
    [('base-lr=0.1', 0.1), ('base-lr=0.01', 0.01)]
    """

    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=LIMITS["name"])
    description: str = ""
    device: str = "cpu"
    variants: list[dict[str, Any]] = Field(default_factory=list)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    tune: dict[str, Any] = Field(default_factory=dict)
    base: dict[str, Any] = Field(default_factory=dict)
    source: str = "<recipe>"
    folder: str = "."

    def runs(self) -> list["Run"]:
        """Expand variants x grid into validated :class:`Run` objects."""
        variants = self.variants or [{"name": "base"}]
        names = [k for k in self.grid]
        n_runs = len(variants) * math.prod(len(self.grid[k]) for k in names)
        if n_runs > LIMITS["runs"]:
            raise RecipeError(f"{self.source}: {'grid' if names else 'variants'}: the recipe expands "
                              f"to {n_runs} variants, more than the limit of {LIMITS['runs']}. "
                              f"Received: {len(variants)} variants x "
                              + " x ".join(f"{len(self.grid[k])} {k}" for k in names))
        combos = list(itertools.product(*(self.grid[k] for k in names))) if names else [()]
        runs, seen = [], set()
        for i, v in enumerate(variants):
            vpath = f"variants[{i}]" if self.variants else ""
            for combo in combos:
                merged = merge(copy.deepcopy(self.base), copy.deepcopy(v))
                suffix = []
                for key, value in zip(names, combo):
                    set_path(merged, key, copy.deepcopy(value))
                    suffix.append(f"{key.split('.')[-1]}={value}")
                name = merged.get("name", "base")
                if suffix:
                    name = f"{name}-" + "-".join(suffix)
                check_name(f"{self.source}: {vpath + '.name' if vpath else 'name'}", name)
                merged["name"] = name
                if name in seen:
                    raise RecipeError(f"{self.source}: {vpath or 'variants'}.name: variant names must "
                                      f"be unique. Received: name={name!r}")
                seen.add(name)
                origin = Origin(vpath, v, names)
                try:
                    spec = RunSpec(**merged)
                except ValidationError as e:
                    raise RecipeError(f"{self.source}: " + pydantic_message(e, origin)) from None
                run = Run(spec=spec, origin=origin, recipe=self)
                run.check_static()
                runs.append(run)
        n_seeds = sum(len(r.spec.seeds) for r in runs)
        if n_seeds > LIMITS["runs"]:
            raise RecipeError(f"{self.source}: seeds: the recipe asks for {n_seeds} runs (variants x "
                              f"seeds), more than the limit of {LIMITS['runs']}. Received: "
                              f"{len(runs)} variants")
        return runs


class Origin:
    """Maps a field path of a merged variant back to where the recipe wrote it.

    >>> o = Origin("variants[1]", {"optimizer": {"lr": 0.1}}, ["epochs"])
    >>> o.path(["optimizer", "lr"]), o.path(["epochs"]), o.path(["model", "name"])
    ('variants[1].optimizer.lr', 'grid.epochs', 'model.name')
    """

    def __init__(self, vpath: str, override: dict[str, Any], grid_keys: list[str]):
        self.vpath, self.override, self.grid_keys = vpath, override, grid_keys

    def path(self, parts: list[Any]) -> str:
        dotted = join_path(parts)
        for key in self.grid_keys:
            if dotted == key or dotted.startswith(key + ".") or dotted.startswith(key + "["):
                return f"grid.{key}"
        node: Any = self.override
        for p in parts:
            if isinstance(node, dict) and p in node:
                node = node[p]
            elif isinstance(node, list) and isinstance(p, int) and p < len(node):
                node = node[p]
            else:
                return dotted
        return f"{self.vpath}.{dotted}" if self.vpath else dotted


class Run:
    """One variant of a recipe with the origin of its fields (for error messages).

    >>> r = load({"name": "r", "data": {"name": "digits"}, "model": {"name": "mlp"},
    ...           "optimizer": {"name": "sgd"}, "epochs": 1, "variants": [{"name": "a"}, {"name": "b", "epochs": 2}]})
    >>> run = r.runs()[1]
    >>> run.name, run.spec.epochs, str(run.error(["epochs"], "too many"))
    ('b', 2, '<recipe>: variants[1].epochs: too many')
    """

    def __init__(self, spec: RunSpec, origin: Origin, recipe: Recipe):
        self.spec, self.origin, self.recipe = spec, origin, recipe

    @property
    def name(self) -> str:
        return self.spec.name

    def error(self, parts: list[Any], message: str) -> RecipeError:
        return RecipeError(f"{self.recipe.source}: {self.origin.path(parts)}: {message}")

    def check_static(self) -> None:
        """Checks that need no registry: batch size and files named in the recipe."""
        bs = self.spec.batch_size
        if isinstance(bs, bool) or not isinstance(bs, (int, dict)) or \
                (isinstance(bs, int) and not 1 <= bs <= LIMITS["batch_size"]):
            raise self.error(["batch_size"], f"`batch_size` must be an integer in [1, "
                             f"{LIMITS['batch_size']}] or a schedule mapping. Received: batch_size={bs!r}")
        seeds = self.spec.seeds
        if len(set(seeds)) != len(seeds):
            dup = next(x for x in seeds if seeds.count(x) > 1)
            raise self.error(["seeds"], f"`seeds` must be distinct (a seed run twice adds no "
                             f"information but counts twice in the mean). Received: seeds={seeds!r} "
                             f"({dup} twice)")
        mon = self.spec.monitors
        ok = isinstance(mon, bool) or (isinstance(mon, int) and 1 <= mon <= LIMITS["monitors"]) or (
            isinstance(mon, list) and all(isinstance(m, dict) and isinstance(m.get("name"), str)
                                          for m in mon))
        if not ok:
            raise self.error(["monitors"], "`monitors` must be true, false, an interval in [1, "
                             f"{LIMITS['monitors']}] or a "
                             "list of {name: ..., ...} monitors (descend.train.CALLBACKS). "
                             f"Received: monitors={mon!r}")
        comp = self.spec.compile
        if not isinstance(comp, bool) and not (isinstance(comp, dict) and all(isinstance(k, str) for k in comp)):
            raise self.error(["compile"], "`compile` must be true, false or a mapping of torch.compile "
                             f"keyword arguments (mode, dynamic, ...). Received: compile={short_repr(comp)}")
        root = self.spec.data.kwargs.get("root")
        if root is not None:
            if not isinstance(root, str):
                raise self.error(["data", "root"], f"`root` must be a folder path. Received: root={root!r}")
            path = self.resolve(root)
            if not path.is_dir():
                raise self.error(["data", "root"], f"the folder does not exist: {path}. "
                                 f"Received: root={root!r}")

    def resolve(self, path: str) -> Path:
        """A path from the recipe: relative paths are relative to the recipe's folder."""
        p = Path(os.path.expanduser(path))
        return p if p.is_absolute() else Path(self.recipe.folder) / p


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``override`` into ``base``; a component whose ``name`` changes is replaced whole.

    >>> base = {"epochs": 2, "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9}}
    >>> merge(base, {"optimizer": {"lr": 0.01}})                  # same component: keys merged
    {'epochs': 2, 'optimizer': {'name': 'sgd', 'lr': 0.01, 'momentum': 0.9}}
    >>> merge(base, {"optimizer": {"name": "adam", "lr": 0.001}})  # a new name: replaced whole
    {'epochs': 2, 'optimizer': {'name': 'adam', 'lr': 0.001}}
    """
    for k, v in override.items():
        b = base.get(k)
        if isinstance(b, dict) and isinstance(v, dict) and b.get("name", v.get("name")) == v.get("name", b.get("name")):
            base[k] = merge(b, v)
        else:
            base[k] = v
    return base


def set_path(d: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``d["a"]["b"] = value`` for ``dotted="a.b"``, creating mappings on the way.

    >>> d = {"optimizer": {"name": "sgd"}}
    >>> set_path(d, "optimizer.lr", 0.1); set_path(d, "data.seed", 3)
    >>> d
    {'optimizer': {'name': 'sgd', 'lr': 0.1}, 'data': {'seed': 3}}
    """
    parts = dotted.split(".")
    for p in parts[:-1]:
        if not isinstance(d.get(p), dict):
            d[p] = {}
        d = d[p]
    d[parts[-1]] = value


def join_path(parts: list[Any]) -> str:
    """A field path as text, the way error messages show it.

    >>> join_path(["variants", 2, "optimizer", "lr"])
    'variants[2].optimizer.lr'
    """
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


_TYPE_WORDS = {
    "int_type": "an integer", "int_from_float": "an integer", "float_type": "a number",
    "string_type": "a string", "bool_type": "a bool", "list_type": "a list",
    "dict_type": "a mapping", "model_type": "a mapping with a `name` key",
    "model_attributes_type": "a mapping with a `name` key",
}


def pydantic_message(e: ValidationError, origin: Origin | None, allowed: set[str] | None = None) -> str:
    """The first error of ``e`` as ``path: `field` must be ... Received: field=value``.

    >>> from pydantic import ValidationError
    >>> try:
    ...     RunSpec(data={"name": "digits"}, model={"name": "mlp"}, optimizer={"name": "sgd"}, epochs=0)
    ... except ValidationError as e:
    ...     print(pydantic_message(e, None))
    epochs: `epochs` must be greater than or equal to 1. Received: epochs=0
    """
    err = e.errors()[0]
    parts = list(err["loc"])
    path = origin.path(parts) if origin else join_path(parts)
    named = [i for i, p in enumerate(parts) if isinstance(p, str)]
    leaf = join_path(parts[named[-1]:]) if named else "recipe"  # seeds[0], not 0
    value = err.get("input")
    kind = err["type"]
    if kind == "extra_forbidden":
        keys = sorted(allowed if allowed is not None else (TOP_KEYS if len(parts) == 1 and origin is None
                                                           else RUN_KEYS | {"name"}))
        close = difflib.get_close_matches(str(parts[-1]), keys, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return (f"{path}: unknown key {parts[-1]!r} (allowed: {', '.join(keys)}).{hint} "
                f"Received: {parts[-1]}={short_repr(value)}")
    if kind == "missing":
        return f"{path}: `{leaf}` is required but missing."
    if kind in _TYPE_WORDS:
        return f"{path}: `{leaf}` must be {_TYPE_WORDS[kind]}. Received: {leaf}={short_repr(value)}"
    msg = err["msg"]
    for prefix, verb in (("Input should be ", "be "), ("String should ", ""), ("List should ", "")):
        if msg.startswith(prefix):
            cond = verb + msg[len(prefix):]
            break
    else:
        cond = "be valid: " + msg
    return f"{path}: `{leaf}` must {cond}. Received: {leaf}={short_repr(value)}"


def find(recipe: str | os.PathLike) -> Path:
    """The recipe file: a path, or the name of a bundled recipe (``default``, ``tiny``).

    >>> find("tiny").name, find("tiny").parent.name
    ('tiny.yaml', 'recipes')
    """
    p = Path(recipe)
    if p.is_file():
        return p
    bundled = RECIPES_DIR / f"{recipe}.yaml"
    if not os.sep in str(recipe) and bundled.is_file():
        return bundled
    names = ", ".join(sorted(f.stem for f in RECIPES_DIR.glob("*.yaml")))
    raise RecipeError(f"recipe file not found: {recipe} (bundled recipes: {names})")


def bundled_names() -> list[str]:
    """The names of the recipes that ship with descend (``descend compare NAME``).

    >>> isinstance(bundled_names(), list)
    True
    """
    return sorted(f.stem for f in RECIPES_DIR.glob("*.yaml"))


def load(recipe: str | os.PathLike | dict[str, Any], *, overrides: dict[str, Any] | None = None) -> Recipe:
    """Read and validate a recipe (a path, a bundled name, or an already parsed mapping).

    ``overrides`` replace top-level fields after reading (``{"epochs": 2, "seeds": [0]}``),
    as the command line's ``--epochs`` / ``--seeds`` / ``--device`` do.

    Besides the fields' own checks, a recipe is refused (with the file, the field path and
    the value) when it is not a UTF-8 text file of at most 1 MiB, writes a key twice,
    expands to more than 100,000 values (YAML anchors) or nests deeper than 64 levels,
    holds a non-finite number or an integer beyond 2**53 anywhere, a key that is not a
    string, a variant name that is not a plain name (see :func:`check_name`), or exceeds
    a limit of :data:`LIMITS` (epochs, seeds, batch sizes, runs, monitor interval).

    Example:
        >>> r = load("tiny")
        >>> [run.name for run in r.runs()][:2]
        ['sgd', 'momentum']
        >>> load({"name": "r", "data": {"name": "digits"}, "model": {"name": "mlp"},
        ...       "optimizer": {"name": "sgd", "lr": float("nan")}, "epochs": 1})
        Traceback (most recent call last):
        descend.experiments.recipe.RecipeError: <recipe>: optimizer.lr: `lr` must be finite. Received: lr=nan
    """
    from descend.io import check_tree, load_yaml
    if isinstance(recipe, dict):
        source, folder = "<recipe>", "."
        try:
            check_tree(recipe, source)
        except Exception as e:  # a mapping that refers to itself, or is too large
            raise RecipeError(str(e)) from None
        raw = copy.deepcopy(recipe)
    else:
        path = find(recipe)
        try:
            raw = load_yaml(path)
        except Exception as e:  # corrupt, unsafe or too large: the io module's message names the file
            raise RecipeError(str(e)) from None
        source, folder = str(path), str(path.parent)
        if isinstance(raw, dict):
            raw.setdefault("name", path.stem)
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: a recipe must be a mapping of fields. Received: "
                          f"{type(raw).__name__} {short_repr(raw)}")
    check_values(raw, source)
    for k, want, what in (("variants", list, "a list of variants"),
                          ("grid", dict, "a mapping of dotted paths to lists")):
        if k in raw and not isinstance(raw[k], want):
            raise RecipeError(f"{source}: {k}: `{k}` must be {what}. Received: {k}={short_repr(raw[k])}")
    for k, v in (overrides or {}).items():
        check_values(v, source, k)
        raw[k] = v
        for variant in raw.get("variants") or []:
            if isinstance(variant, dict):
                variant.pop(k, None)  # the command line wins over every variant
    unknown = [k for k in raw if k not in TOP_KEYS]
    if unknown:
        k = unknown[0]
        close = difflib.get_close_matches(str(k), sorted(TOP_KEYS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise RecipeError(f"{source}: {k}: unknown key {k!r} (allowed: {', '.join(sorted(TOP_KEYS))})."
                          f"{hint} Received: {k}={short_repr(raw[k])}")
    if "name" in raw and not isinstance(raw["name"], str):
        raise RecipeError(f"{source}: name: `name` must be a string. Received: name={short_repr(raw['name'])}")
    for i, v in enumerate(raw.get("variants") or []):
        if not isinstance(v, dict):
            raise RecipeError(f"{source}: variants[{i}]: a variant must be a mapping of fields. "
                              f"Received: variants[{i}]={short_repr(v)}")
        if "name" not in v:
            raise RecipeError(f"{source}: variants[{i}].name: `name` is required but missing.")
        check_name(f"{source}: variants[{i}].name", v["name"])
        bad = [k for k in v if k not in RUN_KEYS | {"name"}]
        if bad:
            close = difflib.get_close_matches(str(bad[0]), sorted(RUN_KEYS), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise RecipeError(f"{source}: variants[{i}].{bad[0]}: unknown key {bad[0]!r} "
                              f"(allowed: {', '.join(sorted(RUN_KEYS | {'name'}))}).{hint} "
                              f"Received: {bad[0]}={short_repr(v[bad[0]])}")
    for where, section in [("", raw)] + [(f"variants[{i}].", v) for i, v in enumerate(raw.get("variants") or [])]:
        check_components(f"{source}: {where}", section)
    for key, values in (raw.get("grid") or {}).items():
        if not isinstance(key, str) or key.split(".")[0] not in RUN_KEYS or \
                any(not part for part in key.split(".")):
            raise RecipeError(f"{source}: grid.{key}: a grid key must be a dotted path into a "
                              f"variant field (e.g. optimizer.lr). Received: grid key {key!r}")
        if not isinstance(values, list) or not values:
            raise RecipeError(f"{source}: grid.{key}: `{key}` must be a non-empty list of values. "
                              f"Received: {key}={short_repr(values)}")
    top = {k: raw[k] for k in ("name", "description", "device", "variants", "grid", "tune") if k in raw}
    base = {k: v for k, v in raw.items() if k in RUN_KEYS}
    try:
        r = Recipe(**top, base=base, source=source, folder=folder)
    except ValidationError as e:
        raise RecipeError(f"{source}: " + pydantic_message(e, None)) from None
    r.runs()  # validate the expansion now
    return r


_NAME_BAD = re.compile(r"[/\\\x00-\x1f\x7f]")
# Unicode control, format (e.g. U+202E, right-to-left override), surrogate, private-use,
# unassigned and line/paragraph separator characters: invisible or misleading in a file name.
_INVISIBLE = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def check_name(where: str, name: Any) -> str:
    """Check a variant name: a string of 1 to ``LIMITS["name"]`` characters, no path separator
    (``/``, ``\\``), control or invisible formatting character (such as U+202E), not starting
    with ``.`` nor with or ending in a space (it becomes part of file and folder names).
    ``where`` prefixes the error.

    >>> check_name("r.yaml: variants[0].name", "adam-lr=0.1")
    'adam-lr=0.1'
    >>> check_name("r.yaml: variants[1].name", "../../victim")
    Traceback (most recent call last):
    descend.experiments.recipe.RecipeError: r.yaml: variants[1].name: `name` must be a plain name (no '/', '\\', control or invisible characters, not starting with '.'). Received: name='../../victim'
    """
    if not isinstance(name, str):
        raise RecipeError(f"{where}: `name` must be a string. Received: name={short_repr(name)}")
    if not 1 <= len(name) <= LIMITS["name"]:
        raise RecipeError(f"{where}: `name` must have 1 to {LIMITS['name']} characters. "
                          f"Received: name={short_repr(name)} ({len(name)} characters)")
    if _NAME_BAD.search(name) or name.startswith(".") or name != name.strip() or \
            any(unicodedata.category(c) in _INVISIBLE for c in name):
        raise RecipeError(f"{where}: `name` must be a plain name (no '/', '\\', control or "
                          f"invisible characters, not starting with '.'). Received: name={short_repr(name)}")
    return name


COMPONENT_KEYS = ("data", "model", "init", "loss", "optimizer")   # {name: ..., **kwargs}
COMPONENT_LISTS = ("callbacks", "regularizers")                   # lists of them


def check_components(where: str, section: dict[str, Any]) -> None:
    """Components written in the shared fields or in one variant: each a mapping whose
    ``name``, where written, is a string (even one that every variant replaces).

    >>> check_components("r.yaml: ", {"optimizer": {"name": "sgd"}, "callbacks": [{"name": "x"}]})
    >>> check_components("r.yaml: ", {"optimizer": {"name": ["sgd"]}})
    Traceback (most recent call last):
    descend.experiments.recipe.RecipeError: r.yaml: optimizer.name: `name` must be a string. Received: name=['sgd']
    """
    items = [(k, section[k]) for k in COMPONENT_KEYS if k in section and not (k == "init" and section[k] is None)]
    for k in COMPONENT_LISTS:
        if isinstance(section.get(k), list):
            items += [(f"{k}[{i}]", c) for i, c in enumerate(section[k])]
    for key, comp in items:
        if not isinstance(comp, dict):
            raise RecipeError(f"{where}{key}: `{key.split('[')[0]}` must be a mapping with a `name` key. "
                              f"Received: {key}={short_repr(comp)}")
        if "name" in comp and not isinstance(comp["name"], str):
            raise RecipeError(f"{where}{key}.name: `name` must be a string. Received: "
                              f"name={short_repr(comp['name'])}")


def check_seed(where: str, seed: Any) -> int:
    """Check a seed: an integer in ``[0, 2**32 - 1]`` (what numpy, torch and random all take).

    >>> check_seed("--seed", 3)
    3
    >>> check_seed("--seed", -1)
    Traceback (most recent call last):
    descend.experiments.recipe.RecipeError: --seed: `seed` must be an integer in [0, 4294967295]. Received: seed=-1
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise RecipeError(f"{where}: `seed` must be an integer in [0, {MAX_SEED}]. "
                          f"Received: seed={short_repr(seed)}")
    return seed


def check_values(value: Any, source: str, path: str = "") -> None:
    """Refuse, anywhere in ``value``, a non-finite number, an integer beyond ``2**53`` in size
    and a mapping key that is not a string; the error names the field path.

    >>> check_values({"optimizer": {"lr": 0.1}, "seeds": [0, 1]}, "r.yaml")
    >>> check_values({"variants": [{"optimizer": {"lr": float("inf")}}]}, "r.yaml")
    Traceback (most recent call last):
    descend.experiments.recipe.RecipeError: r.yaml: variants[0].optimizer.lr: `lr` must be finite. Received: lr=inf
    """
    stack: list[tuple[Any, list[Any]]] = [(value, [path] if path else [])]
    while stack:
        node, parts = stack.pop()
        leaf = join_path(parts[max((i for i, p in enumerate(parts) if isinstance(p, str)), default=0):]) \
            if parts else "value"
        where = f"{source}: {join_path(parts)}" if parts else source
        if isinstance(node, bool) or node is None or isinstance(node, str):
            continue
        if isinstance(node, float) and not math.isfinite(node):
            raise RecipeError(f"{where}: `{leaf}` must be finite. Received: {leaf}={node!r}")
        if isinstance(node, int) and abs(node) > MAX_INT and not _bounded(parts):
            raise RecipeError(f"{where}: `{leaf}` must be an integer between -2**53 and 2**53. "
                              f"Received: {leaf}={short_repr(node)}")
        if isinstance(node, dict):
            for k, v in node.items():
                if not isinstance(k, str):
                    raise RecipeError(f"{where}: keys must be strings. Received: key {short_repr(k)} "
                                      f"({type(k).__name__})")
                stack.append((v, parts + [k]))
        elif isinstance(node, (list, tuple)):
            stack.extend((v, parts + [i]) for i, v in enumerate(node))


# Fields whose own range (checked with the types) is the clearer message for a huge integer.
_BOUNDED_FIELDS = {"seeds", "split_seed", "epochs", "eval_batch_size", "batch_size", "monitors"}


def _bounded(parts: list[Any]) -> bool:
    names = [p for p in parts if isinstance(p, str)]
    top = names[0] if names and (parts[0] == names[0]) else None
    field = names[1] if top == "variants" and len(names) > 1 else top
    return field in _BOUNDED_FIELDS and (len(names) == 1 or (top == "variants" and len(names) == 2))


def check_model_size(run: "Run", make: Any) -> None:
    """Build the model ``make()`` returns on torch's meta device (no memory) and refuse it when
    it would have more than ``LIMITS["parameters"]`` parameters (or ``LIMITS["parameter_tensors"]``
    tensors); the count stops as soon as a limit is passed. A model that cannot be built on
    the meta device is not checked here (it is built for real next).

    >>> r = load({"name": "r", "data": {"name": "digits"}, "model": {"name": "mlp"},
    ...           "optimizer": {"name": "sgd"}, "epochs": 1})
    >>> import torch
    >>> check_model_size(r.runs()[0], lambda: torch.nn.Linear(64, 10))
    >>> check_model_size(r.runs()[0], lambda: torch.nn.Linear(64, 2**40))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    descend.experiments.recipe.RecipeError: <recipe>: model: the model would have more than 100,000,000 parameters...
    """
    import torch

    limit, max_tensors = LIMITS["parameters"], LIMITS["parameter_tensors"]
    count = [0, 0]

    class TooLarge(Exception):
        pass

    def hook(module, name, param):
        if param is not None:
            count[0] += param.numel()
            count[1] += 1
            if count[0] > limit or count[1] > max_tensors:
                raise TooLarge

    handle = torch.nn.modules.module.register_module_parameter_registration_hook(hook)
    too_large = False
    try:
        with torch.device("meta"):
            make()
    except TooLarge:
        too_large = True
    except (ValueError, TypeError):
        raise  # the real build raises the same; the caller names the field
    except Exception as e:  # noqa: BLE001 - e.g. an operation the meta device lacks
        too_large = isinstance(e, OverflowError) or "overflow" in str(e).lower()
    finally:
        handle.remove()
    if too_large:
        what = (f"more than {limit:,} parameters" if count[1] <= max_tensors
                else f"more than {max_tensors:,} parameter tensors")
        raise run.error(["model"], f"the model would have {what}, the limit of a recipe's model "
                        f"(LIMITS in descend.experiments.recipe; DESCEND_MAX_PARAMETERS in the "
                        f"environment). Received: model={short_repr(run.spec.model.as_dict())}")


_BACKTICK = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)")
_UNEXPECTED = re.compile(r"unexpected keyword argument(?:\(s\))?:? '?([A-Za-z_][A-Za-z0-9_]*)")


def field_of(message: str, section: dict[str, Any]) -> str | None:
    """The keyword a constructor's error names, if it is one of ``section``'s keys.

    >>> field_of("SGD.__init__() got an unexpected keyword argument 'lrate'", {"name": "sgd", "lrate": 1})
    'lrate'
    >>> field_of("`lr` must be >= 0. Received: lr=-1", {"name": "sgd", "lr": -1})
    'lr'
    """
    for rx in (_UNEXPECTED, _BACKTICK):
        for m in rx.finditer(message):
            if m.group(1) in section:
                return m.group(1)
    return None
