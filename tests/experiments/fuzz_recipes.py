"""Fuzz the recipe validation: mutate the bundled recipes with a seeded generator and run each
mutant through the command line's entry point, in this process.

Each mutant is written to a file and given to ``descend compare FILE --check`` (validation and
the build of every variant: data, model, optimizer, schedules, callbacks; no training).
Optionally (``--train K``) the first K accepted mutants are also trained for one epoch with
``descend train FILE --epochs 1``.

What is counted:

* **traceback**: an exception escaped ``descend.cli.main`` or a traceback was printed, or the
  exit status was neither 0 nor 2 (1 is an internal error: a bug), or the error was more
  than one line;
* **nonsense accepted**: the mutation broke a *documented range* and the command exited 0.
  The documented ranges are those of docs/main-job.md ("Limits") and of the components'
  own documented checks, written out independently in :data:`RANGES` below (a mutation the
  table cannot judge is counted as *undecided*, never as nonsense); a mutation that makes
  the file unreadable (random bytes, a duplicated key, an alias bomb, more than 1 MiB,
  nesting beyond 64 levels), deletes a required key, adds an unknown key, puts a field
  where it does not belong or names a variant like a path is always nonsense if accepted.

Run the full fuzz (about 1,000 mutants; figures printed at the end)::

    OMP_NUM_THREADS=1 python tests/experiments/fuzz_recipes.py --n 1000 --seed 0 --train 20

The test suite runs a bounded version (tests/experiments/test_recipe_fuzz.py).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import random
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

RECIPES = Path(__file__).resolve().parents[2] / "src" / "descend" / "experiments" / "recipes"
MAX_PARAMETERS = 2_000_000  # the fuzz's own model budget (descend's LIMITS["parameters"] is set to it)

# --------------------------------------------------------------------------- documented ranges

OPTIMIZERS = {"adadelta", "adagrad", "adam", "adamw", "momentum", "momentum_textbook", "nesterov",
              "nesterov_lookahead", "rmsprop", "rmsprop_nesterov", "sgd",
              # docs/optimizers.md, second-order and large-batch methods
              "bfgs", "cg", "hessian_free", "kfac", "lamb", "lars", "lbfgs", "newton",
              "newton_saddle_free", "sam", "shampoo"}
ACTIVATIONS = {"elu", "gelu", "identity", "leaky_relu", "maxout", "prelu", "relu", "scaled_tanh",
               "sigmoid", "tanh"}
LOSSES = {"cross_entropy", "disturb_label", "huber", "label_smoothing", "mse", "smooth_l1"}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _plain_name(v) -> bool:
    import unicodedata
    return (isinstance(v, str) and 1 <= len(v) <= 128 and "/" not in v and "\\" not in v
            and not any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") for c in v)
            and not v.startswith(".") and v == v.strip())


def _seeds(v) -> bool:
    return (isinstance(v, list) and 1 <= len(v) <= 1000 and all(_int(s) and 0 <= s <= 2**32 - 1 for s in v)
            and len(set(v)) == len(v))


def _hidden(v) -> bool:
    return isinstance(v, list) and all(_int(h) and 1 <= h <= 2**31 for h in v)


# field (the last one or two names of its path) -> is this value inside the documented range?
# None as a result: the table cannot judge (another component's own options).
RANGES: dict[tuple[str, ...], Callable[[Any], bool | None]] = {
    ("epochs",): lambda v: _int(v) and 1 <= v <= 1_000_000,
    ("seeds",): _seeds,
    ("split_seed",): lambda v: _int(v) and 0 <= v <= 2**32 - 1,
    ("batch_size",): lambda v: (_int(v) and 1 <= v <= 2**24) or (None if isinstance(v, dict) else False),
    ("eval_batch_size",): lambda v: _int(v) and 1 <= v <= 2**24,
    ("target_accuracy",): lambda v: _num(v) and 0 < v <= 1,
    ("target_loss",): lambda v: v is None or (_num(v) and v > 0),
    ("eval_every",): lambda v: v is None or (_int(v) and v >= 1),
    ("grad_norm",): lambda v: isinstance(v, bool),
    ("precision",): lambda v: isinstance(v, str) and v in ("32", "32-true", "bf16-mixed", "16-mixed"),
    ("accumulate",): lambda v: _int(v) and 1 <= v <= 2**16,
    # a dict: torch.compile's own keyword arguments, which the Trainer judges
    ("compile",): lambda v: isinstance(v, bool) or (None if isinstance(v, dict) else False),
    ("schedule_unit",): lambda v: isinstance(v, str) and v in ("step", "epoch"),
    ("schedule_scale",): lambda v: isinstance(v, str) and v in ("absolute", "relative"),
    ("description",): lambda v: isinstance(v, str),
    ("device",): lambda v: v == "cpu" or (None if isinstance(v, str) and v.startswith("cuda") else False),
    ("monitors",): lambda v: isinstance(v, bool) or (_int(v) and 1 <= v <= 2**31) or (
        None if isinstance(v, list) and all(isinstance(m, dict) and isinstance(m.get("name"), str) for m in v)
        else False),
    ("metrics",): lambda v: None if isinstance(v, list) and all(isinstance(m, str) for m in v) else False,
    ("schedule", "lr"): lambda v: (_num(v) and v >= 0) or (None if isinstance(v, dict) else False),
    ("schedule", "momentum"): lambda v: (_num(v) and 0 <= v <= 1) or (None if isinstance(v, dict) else False),
    # a registry name, or an import path (`torch.optim.NAdam`, `pkg.mod:Cls`) the loader judges
    ("optimizer", "name"): lambda v: isinstance(v, str) and (v in OPTIMIZERS or (
        None if ("." in v or ":" in v) and "/" not in v and "\\" not in v else False)),
    ("optimizer", "lr"): lambda v: _num(v) and v >= 0,
    ("optimizer", "momentum"): lambda v: _num(v) and 0 <= v <= 1,
    ("model", "name"): lambda v: v == "mlp" or (None if isinstance(v, str) and v in ("cnn", "logistic", "rnn", "gru", "lstm")
                                                 else False),
    ("model", "hidden"): lambda v: _hidden(v) or (None if _int(v) and v >= 1 else False),
    ("model", "activation"): lambda v: isinstance(v, str) and v in ACTIVATIONS,
    ("loss", "name"): lambda v: isinstance(v, str) and v in LOSSES,
    ("data", "name"): lambda v: v == "digits" or (None if isinstance(v, str) else False),
    ("data", "val_fraction"): lambda v: _num(v) and 0 <= v < 1,
}
REQUIRED_TOP = {"data", "model", "optimizer", "epochs"}  # of every run, after the merge
COMPONENTS = {"data", "model", "optimizer", "loss", "init"}


RUN_FIELDS = {"data", "model", "init", "loss", "optimizer", "schedule", "schedule_unit", "schedule_scale",
              "batch_size", "eval_batch_size", "epochs", "seeds", "split_seed", "target_accuracy",
              "callbacks", "regularizers", "metrics", "grad_norm", "monitors", "target_loss", "eval_every",
              "precision", "accumulate", "compile"}


def _mlp_parameters(run: dict[str, Any]) -> int | None:
    model = run.get("model")
    if not isinstance(model, dict) or model.get("name") != "mlp":
        return None
    hidden = model.get("hidden", [128])
    if not _hidden(hidden):
        return None
    sizes = [64, *hidden, 10]
    return sum(a * b + b for a, b in zip(sizes, sizes[1:]))


def _walk(x: Any, path=()):
    yield path, x
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _walk(v, path + (k,))
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from _walk(v, path + (i,))


def _merge(base: dict, over: dict) -> dict:
    """The documented merge: deep, and a component whose ``name`` changes is replaced whole."""
    out = dict(base)
    for k, v in over.items():
        b = out.get(k)
        if isinstance(b, dict) and isinstance(v, dict) and b.get("name", v.get("name")) == v.get("name", b.get("name")):
            out[k] = _merge(b, v)
        else:
            out[k] = v
    return out


def _judge_run(run: dict[str, Any]) -> bool | None:
    """One merged run: outside the ranges (True), inside (False), undecidable (None)."""
    if not REQUIRED_TOP <= set(run):
        return True
    for c in COMPONENTS:
        if c in run and not (isinstance(run[c], dict) and isinstance(run[c].get("name"), str)) and \
                not (c == "init" and run[c] is None):
            return True
    n = _mlp_parameters(run)
    if n is not None and n > MAX_PARAMETERS:
        return True
    undecided = False
    known = {k for k in RANGES if len(k) == 2}
    for c in COMPONENTS:  # an argument the table does not know: the component decides
        if isinstance(run.get(c), dict) and any((c, k) not in known for k in run[c]):
            undecided = True
    for path, v in _walk(run):
        if not path or not isinstance(path[-1], str):
            continue
        f = tuple(p for p in path if isinstance(p, str))
        check = RANGES.get(f[-2:]) if len(f) >= 2 else RANGES.get(f)
        if check is None:
            continue
        ok = check(v)
        if ok is False:
            return True
        if ok is None:
            undecided = True
    return None if undecided else False


def judge(doc: Any) -> bool | None:
    """Is ``doc`` outside the documented ranges (True), inside (False), or undecidable (None)?

    File-wide rules first (non-finite numbers and integers beyond 2**53 anywhere, keys that
    are not strings, the shape of ``variants`` and ``grid``, names, a component that is not
    a mapping or has a name that is not a string); then every run as the recipe expands it
    (shared fields merged with each variant, each grid value set), field by field."""
    if not isinstance(doc, dict):
        return True
    for path, v in _walk(doc):
        if isinstance(v, float) and not math.isfinite(v):
            return True
        if _int(v) and abs(v) > 2**53:
            return True
        if isinstance(v, dict) and any(not isinstance(k, str) for k in v):
            return True
    if set(doc) - RUN_FIELDS - {"name", "description", "device", "variants", "grid", "tune", "search"}:
        return True
    if "name" in doc and not (isinstance(doc["name"], str) and NAME.match(doc["name"]) and len(doc["name"]) <= 128):
        return True
    undecided = "tune" in doc or "search" in doc   # tuning sections: their loader judges them
    for key in ("description", "device"):
        if key in doc:
            ok = RANGES[(key,)](doc[key])
            if ok is False:
                return True
            undecided |= ok is None
    variants = doc.get("variants", [])
    grid = doc.get("grid", {})
    if not isinstance(variants, list) or not isinstance(grid, dict):
        return True
    for c in COMPONENTS:
        if c in doc and not (isinstance(doc[c], dict) and isinstance(doc[c].get("name", ""), str)) and \
                not (c == "init" and doc[c] is None):
            return True
    names = []
    for v in variants:
        if not isinstance(v, dict) or not _plain_name(v.get("name")) or set(v) - RUN_FIELDS - {"name", "search"}:
            return True
        names.append(v["name"])
        for c in COMPONENTS:
            if c in v and not (isinstance(v[c], dict) and isinstance(v[c].get("name", ""), str)) and \
                    not (c == "init" and v[c] is None):
                return True
    if len(set(names)) != len(names):
        return True
    for key, values in grid.items():
        if not isinstance(values, list) or not values or key.split(".")[0] not in RUN_FIELDS:
            return True
    base = {k: v for k, v in doc.items() if k in RUN_FIELDS}
    for v in variants or [{}]:
        run = _merge(base, {k: x for k, x in v.items() if k != "name"})
        runs = [run]
        for key, values in grid.items():
            expanded = []
            for r in runs:
                for value in values[:3]:
                    r2 = _merge(r, {})
                    node, parts = r2, key.split(".")
                    for p in parts[:-1]:
                        node[p] = dict(node[p]) if isinstance(node.get(p), dict) else {}
                        node = node[p]
                    node[parts[-1]] = value
                    expanded.append(r2)
            runs = expanded[:50]
        for r in runs:
            verdict = _judge_run(r)
            if verdict is True:
                return True
            undecided |= verdict is None
    return None if undecided else False


# --------------------------------------------------------------------------- mutations

HOSTILE_VALUES: list[Any] = [
    10**30, 2**63, 2**40, -2**40, 2**31, -1, -0.5, 0, 0.0, 1, 3, 1e300, -1e300, 1e-300,
    float("nan"), float("inf"), float("-inf"), "", "ten", "1e-4", "../../victim", "/etc/passwd",
    "a/b", "..", ".", "\u202etxt", "\u03b2-adam", "x" * 300, " padded ", "cuda:7",
    None, True, False, [], [1, 2], [[[]]], [-1], [0], [2**40], {}, {"a": 1}, {"name": "sgd"},
    {"name": {"x": 1}}, [{"name": "x"}],
]


@dataclass
class Mutant:
    kind: str
    where: str
    data: bytes
    nonsense: bool | None  # True: must be refused; False: within range; None: undecided


def _dump(doc: Any) -> bytes:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True).encode("utf-8")


def _paths(doc) -> list[tuple]:
    return [p for p, _ in _walk(doc) if p]


def _set(doc, path, value):
    node = doc
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value


def _delete(doc, path):
    node = doc
    for p in path[:-1]:
        node = node[p]
    del node[path[-1]]


def mutate(rng: random.Random, base: dict[str, Any]) -> Mutant:
    """One seeded mutation of ``base`` and whether it leaves the documented ranges."""
    import copy
    doc = copy.deepcopy(base)
    kind = rng.choices(["value", "delete", "unknown_key", "move", "type_swap", "duplicate_key",
                        "random_bytes", "flip_bytes", "truncate", "unicode", "path_name", "bomb",
                        "deep", "huge", "grid", "seeds", "two"],
                       weights=[30, 6, 5, 4, 6, 3, 2, 4, 3, 3, 4, 2, 2, 1, 3, 3, 6])[0]
    if kind == "two":  # two value mutations at once
        for _ in range(2):
            path = rng.choice(_paths(doc))
            _set(doc, path, copy.deepcopy(rng.choice(HOSTILE_VALUES)))
        return Mutant("two values", "-", _dump(doc), judge(doc))
    if kind == "value":
        path = rng.choice(_paths(doc))
        value = copy.deepcopy(rng.choice(HOSTILE_VALUES))
        _set(doc, path, value)
        return Mutant("value", f"{_fmt(path)}={value!r}"[:80], _dump(doc), judge(doc))
    if kind == "delete":
        path = rng.choice(_paths(doc))
        _delete(doc, path)
        return Mutant("delete", _fmt(path), _dump(doc), judge(doc))
    if kind == "unknown_key":
        targets = [p for p, v in _walk(doc) if isinstance(v, dict)]
        path = rng.choice(targets)
        node = doc
        for p in path:
            node = node[p]
        key = rng.choice(["epochz", "lrate", "hiden", "__class__", "optimiser", "zzz"])
        node[key] = 1
        return Mutant("unknown key", f"{_fmt(path)}.{key}", _dump(doc), True)
    if kind == "move":  # a field put where it does not belong
        field = rng.choice(["epochs", "seeds", "batch_size", "optimizer", "lr"])
        host = rng.choice([k for k in ("optimizer", "model", "data") if isinstance(doc.get(k), dict) and k != field])
        value = doc.pop(field, 0.1) if field in doc else 0.1
        doc[host][field] = value
        if field == "lr" and host == "optimizer":
            return Mutant("move", f"{host}.{field}", _dump(doc), judge(doc))
        return Mutant("move", f"{host}.{field}", _dump(doc), True)
    if kind == "type_swap":
        path = rng.choice(_paths(doc))
        node = doc
        for p in path[:-1]:
            node = node[p]
        v = node[path[-1]]
        if isinstance(v, dict):
            new: Any = list(v.values())
        elif isinstance(v, list):
            new = {str(i): x for i, x in enumerate(v)}
        elif isinstance(v, str):
            new = [v]
        elif isinstance(v, bool):
            new = str(v)
        elif isinstance(v, (int, float)):
            new = rng.choice([str(v), [v], {"value": v}, bool(v)])
        else:
            new = "None"
        node[path[-1]] = new
        return Mutant("type swap", _fmt(path), _dump(doc), judge(doc))
    if kind == "duplicate_key":
        text = _dump(doc).decode()
        lines = [ln for ln in text.splitlines() if re.match(r"^[a-z_]+: \S", ln)]
        line = rng.choice(lines)
        return Mutant("duplicate key", line.split(":")[0], (text + line + "\n").encode(), True)
    if kind == "random_bytes":
        return Mutant("random bytes", "file", bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 2000))), True)
    if kind == "flip_bytes":
        data = bytearray(_dump(doc))
        for _ in range(rng.randint(1, 5)):
            data[rng.randrange(len(data))] = rng.getrandbits(8)
        return Mutant("flip bytes", "file", bytes(data), None)
    if kind == "truncate":
        data = _dump(doc)
        return Mutant("truncate", "file", data[:rng.randrange(len(data))], None)
    if kind == "unicode":
        s = rng.choice(["caf\u00e9", "\u6df1\u5ea6\u5b66\u7fd2", "\U0001f600", "\u202eevil", "a\u0301"])
        if rng.random() < 0.5:
            doc["description"] = s
        elif doc.get("variants"):
            rng.choice(doc["variants"])["name"] = s
        else:
            doc["name"] = s
        return Mutant("unicode", repr(s), _dump(doc), judge(doc))
    if kind == "path_name":
        name = rng.choice(["../../../../victim", "/abs/path", "a/b", "..", ".", "a\\b", ".hidden", "x\x01y"])
        if doc.get("variants") and rng.random() < 0.7:
            rng.choice(doc["variants"])["name"] = name
        else:
            doc["name"] = name
        return Mutant("path name", repr(name), _dump(doc), True)
    if kind == "bomb":
        laughs = "z0: &z0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
            f"z{i + 1}: &z{i + 1} [{', '.join(f'*z{i}' for _ in range(10))}]\n" for i in range(rng.randint(5, 9)))
        return Mutant("alias bomb", "file", (laughs + _dump(doc).decode()).encode(), True)
    if kind == "deep":
        depth = rng.choice([70, 500, 5000])
        doc["description"] = "x"
        text = _dump(doc).decode() + "grid: {optimizer.lr: " + "[" * depth + "1" + "]" * depth + "}\n"
        return Mutant("deep nesting", str(depth), text.encode(), True)
    if kind == "huge":
        doc["description"] = "x" * (1 << 20)
        return Mutant("huge file", "description", _dump(doc), True)
    if kind == "grid":
        n = rng.choice([2, 3, 6, 12])
        doc["grid"] = {f"optimizer.lr": [0.01 * (i + 1) for i in range(n)]}
        if rng.random() < 0.4:
            doc["grid"] = {f"model.x{i}": list(range(10)) for i in range(n)}
            return Mutant("grid", f"{n} keys", _dump(doc), True if 10**n * max(1, len(doc.get("variants", []))) > 10_000 else None)
        return Mutant("grid", f"lr x {n}", _dump(doc), judge(doc))
    # seeds
    seeds = rng.choice([[0, 0], list(range(1001)), [-1], [2**32], [2**32 - 1], [1, 2, 3], ["0"], [0.5]])
    doc["seeds"] = seeds
    return Mutant("seeds", repr(seeds)[:40], _dump(doc), judge(doc))


def _fmt(path: tuple) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


# --------------------------------------------------------------------------- running

@dataclass
class Result:
    mutant: Mutant
    rc: int
    stderr: str
    traceback: bool

    @property
    def accepted(self) -> bool:
        return self.rc == 0

    @property
    def nonsense_accepted(self) -> bool:
        return self.accepted and self.mutant.nonsense is True


def run_cli(argv: list[str]) -> tuple[int, str, bool]:
    """``(status, stderr, traceback)`` of ``descend ARGV`` run in this process."""
    from descend.cli import main
    err, out = io.StringIO(), io.StringIO()
    tb = False
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            rc = main(argv)
        except SystemExit as e:
            rc = int(e.code or 0) if not isinstance(e.code, str) else 2
        except BaseException as e:  # an exception escaped the entry point: a traceback for a user
            import traceback
            traceback.print_exception(e, file=err)
            rc, tb = 99, True
    text = err.getvalue()
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("usage:")]
    if "Traceback (most recent call last)" in text or rc not in (0, 2) or (rc == 2 and len(lines) != 1):
        tb = True
    return rc, text, tb


def fuzz(n: int, seed: int = 0, *, train: int = 0, workdir: str | None = None,
         progress: Callable[[int, Result], None] | None = None) -> list[Result]:
    """Run ``n`` mutants (seeded by ``seed``) through ``descend compare --check``; train the first
    ``train`` accepted ones for one epoch. Returns the results (the training's, if any, are
    appended with kind ``train: ...``)."""
    import torch

    from descend.experiments import recipe as recipes
    torch.set_num_threads(1)
    old_limit = recipes.LIMITS["parameters"]
    recipes.LIMITS["parameters"] = MAX_PARAMETERS
    bases = [yaml.safe_load(p.read_text()) for p in sorted(RECIPES.glob("*.yaml"))]
    results: list[Result] = []
    trained = 0
    tmp = tempfile.TemporaryDirectory(dir=workdir)
    try:
        root = Path(tmp.name)
        for i in range(n):
            rng = random.Random(f"{seed}-{i}")
            m = mutate(rng, rng.choice(bases))
            path = root / f"m{i}.yaml"
            path.write_bytes(m.data)
            rc, err, tb = run_cli(["compare", str(path), "--check", "--out", str(root / "out")])
            res = Result(m, rc, err, tb)
            results.append(res)
            if progress:
                progress(i, res)
            if rc == 0 and trained < train:
                trained += 1
                rc2, err2, tb2 = run_cli(["train", str(path), "--epochs", "1", "--quiet", "--no-monitors",
                                          "--out", str(root / "trained")])
                results.append(Result(Mutant(f"train: {m.kind}", m.where, m.data, None), rc2, err2, tb2))
            path.unlink()
    finally:
        recipes.LIMITS["parameters"] = old_limit
        tmp.cleanup()
    return results


def summary(results: list[Result]) -> str:
    checks = [r for r in results if not r.mutant.kind.startswith("train")]
    trains = [r for r in results if r.mutant.kind.startswith("train")]
    tb = [r for r in results if r.traceback]
    nonsense = [r for r in checks if r.nonsense_accepted]
    must = [r for r in checks if r.mutant.nonsense is True]
    lines = [f"{len(checks)} mutants: {sum(r.rc == 2 for r in checks)} refused with one line, "
             f"{sum(r.accepted for r in checks)} accepted ({sum(r.accepted and r.mutant.nonsense is False for r in checks)} "
             f"within the documented ranges, {sum(r.accepted and r.mutant.nonsense is None for r in checks)} undecided); "
             f"{len(must)} left the documented ranges, of which {len(nonsense)} accepted (nonsense accepted); "
             f"{sum(r.mutant.nonsense is False and r.rc == 2 for r in checks)} within the ranges were refused "
             f"(e.g. by a component's own stricter check)",
             f"{len(trains)} accepted mutants trained for one epoch: {sum(r.rc == 0 for r in trains)} exit 0, "
             f"{sum(r.rc == 2 for r in trains)} one-line errors",
             f"tracebacks (or internal errors, or multi-line errors): {len(tb)}"]
    for r in tb[:10] + nonsense[:10]:
        lines.append(f"  {'TRACEBACK' if r.traceback else 'NONSENSE'} {r.mutant.kind} {r.mutant.where}: "
                     f"rc {r.rc} {r.stderr.strip()[-300:]}")
    strict = [r for r in checks if r.mutant.nonsense is False and r.rc == 2]
    for r in strict[:5]:
        lines.append(f"  within the table's ranges but refused: {r.mutant.kind} {r.mutant.where}: "
                     f"{r.stderr.strip()[-200:]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Fuzz descend's recipe validation through its CLI.")
    ap.add_argument("--n", type=int, default=1000, help="number of mutants (default 1000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train", type=int, default=20, help="train this many accepted mutants (1 epoch)")
    ap.add_argument("--verbose", action="store_true", help="print every mutant's outcome")
    args = ap.parse_args(argv)
    os.environ.setdefault("DESCEND_NO_FSYNC", "1")
    t0 = time.perf_counter()

    def show(i, r):
        if args.verbose:
            verdict = "TRACEBACK" if r.traceback else "NONSENSE" if r.nonsense_accepted else \
                "accepted" if r.accepted else "refused"
            line = [ln for ln in r.stderr.splitlines() if ln.strip()][-1:] or [""]
            print(f"{i:5d} {verdict:9s} {r.mutant.kind:14s} {r.mutant.where[:40]:40s} {line[0][:140]}", flush=True)
    results = fuzz(args.n, args.seed, train=args.train, progress=show)
    print(summary(results))
    print(f"{time.perf_counter() - t0:.0f} s, load average {os.getloadavg()[0]:.1f}")
    bad = [r for r in results if r.traceback or r.nonsense_accepted]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
