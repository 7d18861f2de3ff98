"""What descend compare, train, --tune and --suite write: run folders claimed by a lock and
staged in a temporary folder (:class:`_Staging`), names checked to stay file names, the
comparison folder with its statistics, plots and report (:func:`write_comparison`), and
the warnings about schedules that ``--epochs`` no longer fits.

Below the commands (``commands``, ``tuning`` and ``suite`` import it; it imports none of them).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

from descend.experiments import recipe as recipes
from descend.experiments.recipe import RecipeError


# --------------------------------------------------------------------------- output folders
def _lock_path(root: Path, name: str) -> Path:
    return root / f".{name}.lock"


class _Staging:
    """Claim ``root/<name>`` for this process, stage the run in a temporary folder next to
    it, and rename that into place on success (remove it on failure).

    The claim is a lock file ``root/.<name>.lock`` (holding the pid) locked for the whole
    run, taken at construction, before any training: without ``overwrite`` a name that
    exists or that another live process holds is skipped for ``<name>-2``, ``-3``, ...,
    so concurrent runs with the same name all keep their results; with ``overwrite`` a
    name that another live process is writing is refused (``RecipeError``), so nothing
    another run is writing is removed. A dead process's lock is free (the operating
    system dropped it); its leftover temporary folders are removed when the name is
    claimed again. Use as ``with _Staging(root, name, overwrite) as tmp:``; call
    :meth:`release` if the ``with`` is never entered.
    """

    def __init__(self, root: Path, name: str, overwrite: bool):
        self.root, self.name, self.overwrite = Path(root), name, overwrite
        self.final, self._lock = self._claim(name)
        self.tmp = self.final.parent / f".{self.final.name}.partial-{os.getpid()}"

    def _claim(self, name: str, start: int = 1):
        from descend._filelock import FileLock
        self.root.mkdir(parents=True, exist_ok=True)
        i = start
        while True:
            cand = name if i == 1 else f"{name}-{i}"
            final = self.root / cand
            if not self.overwrite and final.exists():
                i += 1
                continue
            lock = FileLock(_lock_path(self.root, cand))
            if lock.acquire():
                if not self.overwrite and final.exists():  # completed while we looked
                    lock.release()
                    i += 1
                    continue
                for p in self.root.iterdir():  # leftovers of a killed run of this name
                    if p.name.startswith((f".{cand}.partial-", f".{cand}.old-")):
                        shutil.rmtree(p, ignore_errors=True)
                return final, lock
            if self.overwrite:
                who = lock.holder()
                raise RecipeError(
                    f"--out: {final} is being written by another process "
                    f"({'pid ' + who if who else 'still running'}); not overwriting it: wait for "
                    "that run to finish, or choose another --out")
            i += 1

    def release(self) -> None:
        """Give the claim up (the ``with`` block does it itself)."""
        self._lock.release()

    def __enter__(self) -> Path:
        self.final.parent.mkdir(parents=True, exist_ok=True)
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir()
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is not None:
                shutil.rmtree(self.tmp, ignore_errors=True)
                return
            self._commit()
        finally:
            self.release()

    def _commit(self) -> None:
        old = None
        if self.final.exists():
            if self.overwrite:  # --overwrite: move the old run aside, then drop it
                old = self.final.parent / f".{self.final.name}.old-{os.getpid()}"
                os.replace(self.final, old)
            else:  # written meanwhile by something that does not take the lock: keep it
                final, lock = self._claim(self.name, start=2)
                self.release()
                self.final, self._lock = final, lock
        mask = os.umask(0)
        os.umask(mask)
        for f in self.tmp.rglob("*"):  # atomic writes create 0600 files; a report is for reading
            if f.is_file():
                os.chmod(f, 0o666 & ~mask)
        os.rename(self.tmp, self.final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _path_name(source: str, field: str, value: str) -> str:
    """``value`` checked to be one safe file name (``RecipeError`` naming the file and field)."""
    from descend._validation import check_file_name
    try:
        return check_file_name("name", value)
    except (ValueError, TypeError) as e:
        raise RecipeError(f"{source}: {field}: {e}") from None


@contextlib.contextmanager
def _writing(final: Path):
    """An ``OSError`` that names no file (a write on a full disk) names the run folder."""
    try:
        yield
    except OSError as e:
        if e.filename is not None:
            raise
        raise OSError(e.errno, e.strerror or str(e), f"{final} (while writing it)") from e


def _meta(device, elapsed: float | None = None) -> dict[str, Any]:
    import platform

    import torch

    from descend import __version__
    m = {"descend": __version__, "torch": torch.__version__, "python": platform.python_version(),
         "device": str(device), "threads": torch.get_num_threads(),
         "created": datetime.datetime.now().isoformat(timespec="seconds")}
    if elapsed is not None:
        m["elapsed_seconds"] = round(elapsed, 2)
    return m


def _recipe_dict(r: recipes.Recipe) -> dict[str, Any]:
    d: dict[str, Any] = {"name": r.name}
    if r.description:
        d["description"] = r.description
    d["device"] = r.device
    d.update(r.base)
    if r.variants:
        d["variants"] = r.variants
    if r.grid:
        d["grid"] = r.grid
    return d


def _write_json(path: Path, obj: Any) -> None:
    from descend.io import write_text
    write_text(path, json.dumps(obj, indent=1, allow_nan=False))


_HORIZON_KEYS = {"total", "tau", "steps", "boundaries", "step_size", "half_cycle", "milestones", "T_max",
                 "total_steps", "epochs", "steps_per_epoch", "T_0", "total_iters"}


def schedule_warnings(r: recipes.Recipe, epochs: int | None) -> list[str]:
    """Warnings for an ``--epochs`` that does not fit the recipe's schedules.

    Schedules are written in absolute steps (``cosine``'s ``total``, ``linear_to``'s
    ``tau``, a torch scheduler's ``T_max`` ...) for the recipe's own length. ``--epochs``
    changes the length but not the schedules: they are not stretched, so a shorter run
    stops before the schedule ends and a longer one runs on at its last value. Write the
    horizon for the new length (or use a ``variants``/``grid`` entry) when that matters.

    >>> r = recipes.load({"name": "r", "data": {"name": "digits"}, "model": {"name": "mlp"},
    ...                   "optimizer": {"name": "sgd"}, "epochs": 20,
    ...                   "schedule": {"lr": {"name": "cosine", "e0": 0.1, "total": 400}}})
    >>> schedule_warnings(r, 2)[0][:60]
    '--epochs 2: the recipe has 20 epochs and its schedule lr has'
    >>> schedule_warnings(r, None), schedule_warnings(r, 20)
    ([], [])
    """
    if epochs is None:
        return []
    out = []

    def horizons(spec, path=""):
        found = []
        if isinstance(spec, dict):
            for k, v in spec.items():
                if k in _HORIZON_KEYS and not isinstance(v, dict):
                    found.append(f"{path}{k}={v!r}")
                found += horizons(v, f"{path}{k}.")
        elif isinstance(spec, list):
            for i, v in enumerate(spec):
                found += horizons(v, f"{path}{i}.")
        return found

    sources = [("", r.base)] + [(f"variants[{i}].", v) for i, v in enumerate(r.variants)]
    original = r.base.get("epochs")
    for where, fields in sources:
        for key, spec in (fields.get("schedule") or {}).items():
            h = horizons(spec)
            if h and original != epochs:
                out.append(f"--epochs {epochs}: the recipe has {original} epochs and its schedule {where}{key} has "
                           f"a horizon in steps ({', '.join(h)}) written for that length; it is not stretched "
                           f"(a shorter run ends before the schedule does, a longer one stays at its last value).")
    return out


def write_comparison(staging: "_Staging", r: recipes.Recipe, variants: list[dict[str, Any]], dev, elapsed: float, *,
                     quiet: bool = False, title: str = "descend compare", extra: dict[str, Any] | None = None,
                     sections: list[tuple[str, str]] | None = None, write_extra=None) -> tuple[Path, dict[str, Any]]:
    """Write a comparison folder (results.json with statistics, plots, monitors, report.html)
    for trained ``variants`` into the claimed ``staging`` folder (:class:`_Staging`) and
    print the answer and the summary table.

    Shared by ``descend compare``, ``--tune`` and ``--suite``: ``extra`` goes into
    results.json, ``sections`` (``[(title, html)]``) into report.html, and
    ``write_extra(folder)``, if given, writes more figures into the folder and returns
    them as ``[(file, title)]``.
    """
    from descend.experiments import plots, report, runner, verdicts
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    summary = [v["summary"] for v in variants]
    target = next((x.get("target") for v in variants for x in v["runs"] if x.get("target")), None)
    statistics = runner.clean(verdicts.analyse(variants))
    results = {"name": r.name, "description": r.description, "meta": _meta(dev, elapsed),
               "target_accuracy": (target or {}).get("value") if (target or {}).get("metric") == "val_acc" else None,
               "target": target, "recipe": _recipe_dict(r), "statistics": statistics, "summary": summary,
               "variants": variants, **(extra or {})}
    recipe_text = yaml.safe_dump(_recipe_dict(r), sort_keys=False)
    final = staging.final
    with _writing(final), staging as tmp:
        written = plots.write_plots(variants, str(tmp))
        if write_extra is not None:
            written += write_extra(tmp)
        mon_plots, mon_table = _write_monitors(tmp, variants)
        _write_json(tmp / "results.json", results)
        (tmp / "recipe.yaml").write_text(recipe_text)
        report.write_html(str(tmp / "report.html"), title=f"{title}: {r.name}",
                          description=r.description, summary=summary, plots=written,
                          meta=_meta(dev, elapsed), recipe_text=recipe_text, target=target,
                          monitor_table=mon_table, monitor_plots=mon_plots, statistics=statistics,
                          sections=sections)
        written += mon_plots
    final = staging.final
    say("")
    for line in statistics["answer"]:
        say(line)
    say("")
    say(report.text_table(summary, target, statistics))
    say("")
    print(f"wrote {final}/report.html, results.json and {len(written)} plots "
          f"({elapsed:.1f}s)" if not quiet else str(final))
    return final, results


def _write_monitors(folder: Path, variants: list[dict[str, Any]]):
    """Move each run's monitor tables to ``folder/monitors/<variant>-seed<seed>.json`` (named
    by the run's ``monitors_file``); return the monitor plots and the report's monitor table."""
    from descend.experiments import plots, report
    mon_plots = plots.write_monitor_plots(variants, str(folder))
    mon_table = report.monitor_rows(variants)
    for v in variants:  # one file per run, not inside results.json
        for run_res in v["runs"]:
            tables = run_res.pop("monitors", None)
            if tables:
                rel = f"monitors/{_safe(v['name'])}-seed{run_res['seed']}.json"
                _write_json(folder / rel, tables)
                run_res["monitors_file"] = rel
    return mon_plots, mon_table


def _safe(name: str) -> str:
    """A file-name-safe form of a variant name (other characters become ``_``)."""
    return re.sub(r"[^A-Za-z0-9_.=+-]", "_", name)


def _pct(v) -> str:
    return "  -   " if v is None else f"{100 * v:6.2f}%"


def load_with_overrides(recipe, *, epochs: int | None = None, seeds: list[int] | None = None,
                        monitors: bool | None = None) -> tuple[recipes.Recipe, dict[str, Any]]:
    """Load ``recipe`` with the command line's overrides (``--epochs``, ``--seeds``,
    ``--no-monitors``) and print a warning for each schedule ``--epochs`` no longer fits
    (:func:`schedule_warnings`); return the recipe and the overrides applied.

    >>> r, o = load_with_overrides("tiny", seeds=[3])
    >>> r.runs()[0].spec.seeds, o
    ([3], {'seeds': [3]})
    """
    overrides: dict[str, Any] = {}
    if epochs is not None:
        overrides["epochs"] = epochs
    if seeds:
        overrides["seeds"] = list(seeds)
    if monitors is False:
        overrides["monitors"] = False
    r = recipes.load(recipe, overrides=overrides)
    for w in schedule_warnings(recipes.load(recipe), epochs):
        print(f"descend: warning: {w}", file=sys.stderr, flush=True)
    return r, overrides
