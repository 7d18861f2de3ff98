"""The training doctor: read a run's history, name its pathologies, say what to do.

:func:`diagnose` works on an in-memory history (a :class:`descend.train.History`, its
``to_dict()``, or a flat ``name -> list`` dict); :func:`load_histories` reads a run
directory written by ``descend train`` / ``descend compare`` (``results.json``, or
``steps.csv`` / ``epochs.csv``, plus ``monitors.json`` when the monitors wrote one).

==================  ====================================================================
finding             rule (all thresholds are keyword arguments of :func:`diagnose`)
==================  ====================================================================
``divergence``      a non-finite loss or gradient norm, or a loss above ``blowup`` times
                    the initial loss
``exploding``       gradient norm reaching ``explode_ratio`` times its early median
``vanishing``       first-layer over last-layer gradient norm below ``vanish_ratio``
                    (median over samples), or the global norm below ``tiny_grad``
``dead_units``      a ReLU-family layer with a median dead fraction >= ``dead_fraction``
``saturation``      a sigmoid/tanh layer with a median saturated fraction >= ``saturated_fraction``
``lr_too_small``    the loss falls by less than ``plateau_tol`` (relative) over the run,
                    from the start, without vanishing gradients (a plateau from step 0)
``overfitting``     validation loss at its minimum ``patience`` or more epochs before the end
                    and risen above it at the end by more than ``rise_tol`` (relative)
                    and more than ``noise_z`` standard deviations of the difference of two
                    noisy values, while training loss kept falling (noise: below)
==================  ====================================================================

The advice is what the notes recommend (initialization, normalization, learning rate,
early stopping, regularization).

The overfitting rule compares a rise of the validation loss with its noise, not with a
fixed 2%: a validation loss that wanders by 5% from epoch to epoch rises 5% by chance.
The noise ``sigma`` is the larger of the run-to-run spread (``spread``: the standard
deviation over seeds of the validation loss, median over epochs, which :func:`doctor`
computes for a ``descend compare`` folder with several seeds of a variant) and the
within-run noise estimated from the second differences of the validation loss,
``sigma = 1.4826 median|v_{t+1} - 2 v_t + v_{t-1}| / sqrt(6)`` (the second difference
of white noise has variance ``6 sigma^2``; a smooth trend cancels in it; the median
makes it robust to a few jumps). The rise must exceed ``noise_z * sqrt(2) * sigma`` (the
difference of two noisy values), default ``noise_z = 3``.
"""

from __future__ import annotations

import csv
import math
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from descend._validation import check_int, check_range, fail

ADVICE = {
    "divergence": "Lower the learning rate (10x) or add warmup; clip the gradient norm; check "
                  "the inputs for NaN/Inf; keep eps > 0 in adaptive methods.",
    "exploding": "Lower the learning rate and clip the gradient norm; initialize with Xavier "
                 "(tanh/sigmoid) or He (ReLU) scaling rather than large weights; add batch "
                 "normalization.",
    "vanishing": "Initialize with Xavier (tanh/sigmoid) or He (ReLU) scaling so activation "
                 "and gradient variance are kept across depth; use ReLU-family activations "
                 "instead of sigmoid; add batch normalization before the nonlinearity; "
                 "skip connections (with Fixup/LSUV) for deep nets.",
    "dead_units": "Lower the learning rate (one large step can leave a ReLU never firing); "
                  "use leaky ReLU, ELU or maxout; He initialization; keep monitoring the "
                  "fraction of dead units.",
    "saturation": "Standardize the inputs; initialize so pre-activations stay in the linear "
                  "region (Xavier, or 1/sqrt(fan_in)); add batch normalization before the "
                  "nonlinearity; prefer ReLU to sigmoid, or LeCun's 1.7159 tanh(2x/3).",
    "lr_too_small": "Raise the learning rate (3-10x, or run a range test); add momentum "
                    "(0.5 rising to 0.9) or use an adaptive method (Adam, RMSProp); check "
                    "that the initialization is not in a flat region.",
    "overfitting": "Use early stopping: keep the weights of the epoch with the lowest "
                   "validation loss; add regularization (L2 weight decay, dropout, data "
                   "augmentation, label smoothing) or get more data.",
}
TITLES = {
    "divergence": "Divergence", "exploding": "Exploding gradients",
    "vanishing": "Vanishing gradients", "dead_units": "Dead units",
    "saturation": "Saturated units", "lr_too_small": "Learning rate too small",
    "overfitting": "Overfitting",
}


@dataclass
class Finding:
    """One diagnosis: ``code`` (a key of ``ADVICE``), what was seen, what to do.

    >>> f = Finding("divergence", "Divergence", "loss NaN at step 3", "lower the learning rate")
    >>> f.to_dict()
    {'code': 'divergence', 'title': 'Divergence', 'evidence': 'loss NaN at step 3', 'advice': 'lower the learning rate'}
    """

    code: str
    title: str
    evidence: str
    advice: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _num(v) -> float:
    try:
        return math.nan if v is None else float(v)
    except (TypeError, ValueError):
        return math.nan


def normalize_history(history) -> dict[str, dict[str, list]]:
    """``{"steps", "epochs", "monitors"}`` tables from any accepted history form.

    >>> h = normalize_history({"loss": [1.0, 0.5], "val_loss": [0.7], "grad_norm/w": [2.0, 1.0]})
    >>> h["steps"], h["epochs"], h["monitors"]
    ({'loss': [1.0, 0.5]}, {'val_loss': [0.7]}, {'flat': {'grad_norm/w': [2.0, 1.0]}})
    """
    if hasattr(history, "steps") and hasattr(history, "epochs"):
        return {"steps": dict(history.steps), "epochs": dict(history.epochs),
                "monitors": dict(getattr(history, "monitors", None) or {})}
    if not isinstance(history, dict):
        fail("history", "a History or a dict of lists", type(history).__name__, TypeError)
    if "steps" in history or "epochs" in history:
        out = {"steps": dict(history.get("steps") or {}), "epochs": dict(history.get("epochs") or {}),
               "monitors": dict(history.get("monitors") or {})}
        if history.get("layer_names"):  # recorded by descend compare/train: readable layer names
            out["layer_names"] = dict(history["layer_names"])
        return out
    steps, epochs, monitors = {}, {}, {}
    for k, v in history.items():
        if k in ("train_loss", "val_loss", "train_acc", "val_acc", "epoch"):
            epochs[k] = v
        elif "/" in k:
            monitors.setdefault("flat", {})[k] = v
        else:
            steps[k] = v
    return {"steps": steps, "epochs": epochs, "monitors": monitors}


def _columns(monitors: dict, prefix: str) -> dict[str, list[float]]:
    out = {}
    for table in monitors.values():
        for k, v in table.items():
            if k.startswith(prefix):
                out[k[len(prefix):]] = [_num(x) for x in v]
    return out


def _median(xs):
    xs = [x for x in xs if math.isfinite(x)]
    return statistics.median(xs) if xs else math.nan


def noise_of(values) -> float:
    """Robust within-run noise of a series: ``1.4826 median|second difference| / sqrt(6)``.

    For ``v_t = trend + e_t`` with ``e_t`` white noise of standard deviation ``sigma`` and a
    trend that is locally linear, ``v_{t+1} - 2 v_t + v_{t-1}`` has standard deviation
    ``sqrt(6) sigma``; 1.4826 times the median absolute value estimates a normal standard
    deviation (the MAD; Hampel 1974). Fewer than 3 finite values: 0.

    >>> noise_of([1.0, 0.75, 0.5, 0.25])                     # a straight line has no noise
    0.0
    >>> import random; rng = random.Random(0)
    >>> round(noise_of([0.5 + rng.gauss(0, 0.01) for _ in range(400)]), 3)
    0.01
    """
    v = [x for x in (_num(x) for x in values) if math.isfinite(x)]
    if len(v) < 3:
        return 0.0
    second = [abs(v[i + 1] - 2 * v[i] + v[i - 1]) for i in range(1, len(v) - 1)]
    return 1.4826 * statistics.median(second) / math.sqrt(6)


def diagnose(history, *, blowup: float = 10.0, explode_ratio: float = 100.0,
             vanish_ratio: float = 1e-3, tiny_grad: float = 1e-8, dead_fraction: float = 0.5,
             saturated_fraction: float = 0.5, plateau_tol: float = 0.01, patience: int = 2,
             rise_tol: float = 0.02, min_steps: int = 20, noise_z: float = 3.0,
             spread: float | None = None) -> list[Finding]:
    """Diagnose a training history; return the findings (empty: nothing found).

    Args:
        history: a ``History``, ``{"steps": ..., "epochs": ..., "monitors": ...}`` or a
            flat dict (``loss``/``grad_norm`` per step, ``train_loss``/``val_loss`` per epoch,
            ``grad_norm/<p>``, ``dead/<layer>``, ``saturated/<layer>`` from monitors).
        blowup, explode_ratio, vanish_ratio, tiny_grad, dead_fraction,
        saturated_fraction, plateau_tol, patience, rise_tol: thresholds (table above).
        min_steps: fewer recorded steps than this skip the plateau test (default 20).
        noise_z: how many noise standard deviations a validation-loss rise must exceed to
            count as overfitting (default 3; module docstring).
        spread: the run-to-run standard deviation of the validation loss, if known
            (several seeds); None: the within-run estimate only.

    Example:
        >>> [f.code for f in diagnose({"loss": [2.3] * 50})]
        ['lr_too_small']
        >>> [f.code for f in diagnose({"loss": [1.0, 5.0, float("nan")]})]
        ['divergence']
    """
    for name, v in (("blowup", blowup), ("explode_ratio", explode_ratio)):
        check_range(name, v, gt=1)
    for name, v in (("dead_fraction", dead_fraction), ("saturated_fraction", saturated_fraction),
                    ("vanish_ratio", vanish_ratio), ("plateau_tol", plateau_tol)):
        check_range(name, v, gt=0, le=1)
    check_int("patience", patience, ge=1)
    check_int("min_steps", min_steps, ge=2)
    check_range("noise_z", noise_z, ge=0)
    check_range("spread", spread, ge=0, allow_none=True)
    from descend.analysis.labels import column_label
    h = normalize_history(history)
    steps, epochs, mons = h["steps"], h["epochs"], h["monitors"]
    labels = h.get("layer_names") or {}
    loss = [_num(x) for x in steps.get("loss", [])] or [_num(x) for x in epochs.get("train_loss", [])]
    gn = [_num(x) for x in steps.get("grad_norm", [])]
    if not any(math.isfinite(x) for x in gn):
        gn = [_num(x) for t in mons.values() for x in t.get("grad_norm", [])]
    out: list[Finding] = []

    def add(code, evidence):
        out.append(Finding(code, TITLES[code], evidence, ADVICE[code]))

    # divergence
    bad = next((i for i, x in enumerate(loss) if not math.isfinite(x)), None)
    diverged = False
    if bad is not None:
        add("divergence", f"the loss is not finite from step {bad + 1} on "
                          f"(last finite value {next((x for x in reversed(loss[:bad]) if math.isfinite(x)), math.nan):.4g}).")
        diverged = True
    elif loss and math.isfinite(loss[0]) and loss[0] > 0:
        peak = max(range(len(loss)), key=lambda i: loss[i])
        if loss[peak] > blowup * loss[0]:
            add("divergence", f"the loss rose from {loss[0]:.4g} to {loss[peak]:.4g} "
                              f"(step {peak + 1}), more than {blowup:g}x its initial value.")
            diverged = True

    # exploding
    finite_gn = [x for x in gn if math.isfinite(x)]
    if gn and (len(finite_gn) < len(gn) and not diverged):
        add("exploding", "the gradient norm became non-finite.")
    elif len(finite_gn) >= 2:
        early = _median(finite_gn[: max(1, len(finite_gn) // 10)])
        top = max(finite_gn)
        if early > 0 and top >= explode_ratio * early:
            add("exploding", f"the gradient norm grew from {early:.3g} to {top:.3g} "
                             f"({top / early:.3g}x).")

    # vanishing
    layers = {k: v for k, v in _columns(mons, "grad_norm/").items() if k.endswith("weight")}
    vanishing = False
    if len(layers) >= 2:
        names = list(layers)
        first, last = _median(layers[names[0]]), _median(layers[names[-1]])
        if last > 0 and first / last < vanish_ratio:
            add("vanishing", f"the first layer's gradient norm ({column_label(names[0], labels)}: {first:.3g}) is "
                             f"{first / last:.2g} of the last layer's ({column_label(names[-1], labels)}: "
                             f"{last:.3g}).")
            vanishing = True
    if not vanishing and finite_gn and max(finite_gn) < tiny_grad:
        add("vanishing", f"the global gradient norm stays below {tiny_grad:g} "
                         f"(max {max(finite_gn):.3g}).")
        vanishing = True

    # dead units / saturation (median over the second half of the samples)
    for code, prefix, thr in (("dead_units", "dead/", dead_fraction),
                              ("saturation", "saturated/", saturated_fraction)):
        hits = []
        for layer, vals in _columns(mons, prefix).items():
            m = _median(vals[len(vals) // 2:])
            if math.isfinite(m) and m >= thr:
                hits.append(f"{column_label(layer, labels)}: {m:.0%}")
        if hits:
            what = "dead" if code == "dead_units" else "saturated"
            add(code, f"fraction of {what} units at or above {thr:.0%} in layer(s) " + ", ".join(hits) + ".")

    # plateau from the start: epoch means (each a full pass: little noise) when there are
    # 3 or more, else the first and last quarter of the per-step losses
    ep_loss = [_num(x) for x in epochs.get("train_loss", [])]
    if len(ep_loss) >= 3 and all(math.isfinite(x) for x in ep_loss):
        start, end, unit = ep_loss[0], ep_loss[-1], f"{len(ep_loss)} epochs"
    else:
        fin = [x for x in loss if math.isfinite(x)]
        w = max(1, len(fin) // 4)
        ok = len(fin) >= min_steps
        start, end = (statistics.fmean(fin[:w]), statistics.fmean(fin[-w:])) if ok else (0.0, 0.0)
        unit = f"{len(fin)} steps"
    if not diverged and not vanishing and start > 1e-3 and (start - end) / start < plateau_tol:
        add("lr_too_small", f"the training loss went from {start:.4g} to {end:.4g} over {unit}, "
                            f"less than {plateau_tol:.0%} lower: a plateau from the start.")

    # overfitting
    val = [_num(x) for x in epochs.get("val_loss", [])]
    tr = [_num(x) for x in epochs.get("train_loss", [])]
    if len(val) >= patience + 1 and all(math.isfinite(x) for x in val):
        best = min(range(len(val)), key=lambda i: val[i])
        last = len(val) - 1
        train_fell = len(tr) == len(val) and math.isfinite(tr[-1]) and tr[-1] < tr[best]
        sigma = max(noise_of(val), float(spread) if spread is not None and math.isfinite(spread) else 0.0)
        need = max(rise_tol * val[best], noise_z * math.sqrt(2) * sigma)
        if last - best >= patience and val[-1] - val[best] > need and train_fell:
            add("overfitting", f"validation loss was lowest at epoch {best + 1} ({val[best]:.4g}) "
                               f"and rose to {val[-1]:.4g} by epoch {last + 1} (more than its noise: "
                               f"{noise_z:g} x sqrt(2) x {sigma:.2g}), while the training "
                               f"loss fell from {tr[best]:.4g} to {tr[-1]:.4g}. Best epoch: {best + 1}.")
    return out


def format_findings(findings: list[Finding], label: str = "") -> str:
    """Plain-text report of :func:`diagnose` results.

    >>> print(format_findings(diagnose({"loss": [1.0, 5.0, float("nan")]}), label="run 1"))
    [run 1] Divergence: the loss is not finite from step 3 on (last finite value 5).
        -> Lower the learning rate (10x) or add warmup; ...
    >>> format_findings([], label="run 2")
    '[run 2] no problem found.'
    """
    head = f"[{label}] " if label else ""
    if not findings:
        return f"{head}no problem found."
    lines = []
    for f in findings:
        lines.append(f"{head}{f.title}: {f.evidence}\n    -> {f.advice}")
    return "\n".join(lines)


def _read_csv(path: Path) -> dict[str, list]:
    from descend.io import FileSafetyError, read_limited, MAX_JSON_BYTES
    try:
        text = read_limited(path, MAX_JSON_BYTES, what="CSV file").decode("utf-8")
        rows = list(csv.DictReader(text.splitlines()))
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte at offset {e.start}); a run's CSV log is "
                         f"text") from None
    except (csv.Error, FileSafetyError) as e:
        raise ValueError(f"{path}: not a readable CSV log: {e}") from None
    cols: dict[str, list] = {}
    for r in rows:
        for k, v in r.items():
            if not isinstance(k, str) or isinstance(v, list):  # a row with more fields than the header
                raise ValueError(f"{path}: a row has more fields than the header names; not a "
                                 f"CSV log written by descend")
            cols.setdefault(k, []).append(_num(v) if v not in ("", None) else math.nan)
    return cols


def _json(path: Path) -> Any:
    from descend.io import FileSafetyError, load_json
    try:
        return load_json(path)
    except FileSafetyError as e:
        raise ValueError(str(e)) from None


def _names(value) -> dict[str, str]:
    """Recorded readable layer names (parameter name -> label); anything else is ignored."""
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def _table(obj: Any, where: str, what: str = "a mapping of column name -> list of values") -> dict:
    """``obj`` checked to be ``{name: [values]}`` (what descend writes), else a ValueError."""
    if obj is None:
        return {}
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, list)
                                            for k, v in obj.items()):
        raise ValueError(f"{where} must be {what}. Received: {type(obj).__name__} "
                         f"{str(obj)[:80]!r}")
    return obj


def _monitors(obj: Any, where: str) -> dict:
    obj = {} if obj is None else obj
    if not isinstance(obj, dict):
        raise ValueError(f"{where} must be a mapping of monitor name -> table. Received: "
                         f"{type(obj).__name__}")
    return {str(k): _table(v, f"{where}[{k!r}]") for k, v in obj.items()}


def _monitor_file(root: Path, rel: Any, where: str) -> dict:
    """A run's ``monitors_file``: a relative path that must stay inside ``root``."""
    if not isinstance(rel, str):
        raise ValueError(f"{where}.monitors_file must be a relative path. Received: {rel!r}")
    target = (root / rel).resolve()
    if Path(rel).is_absolute() or not target.is_relative_to(root.resolve()):
        raise ValueError(f"{where}.monitors_file must be a path inside {root}. Received: "
                         f"monitors_file={rel!r}")
    return _monitors(_json(target), f"{root / rel}") if target.is_file() else {}


def load_histories(run_dir) -> dict[str, dict[str, Any]]:
    """Histories found in a run directory, by label.

    Reads ``results.json`` as written by ``descend train`` (``{"result": {"steps",
    "epochs"}}``) or ``descend compare`` (``{"variants": [{"name", "runs": [...]}]}``);
    otherwise ``steps.csv`` / ``epochs.csv``. A ``monitors.json`` next to them
    (``{"<monitor>": {"step": [...], ...}}``) is attached to every history; a run of
    ``descend compare`` names its own file (``"monitors_file":
    "monitors/<variant>-seed<seed>.json"``, relative to ``run_dir``, and refused when it
    points outside ``run_dir``) or carries its tables inline (``"monitors"``). A file
    that is not UTF-8, not JSON (or CSV), larger than 256 MiB, nested too deeply or not
    in the shape descend writes raises ``ValueError`` naming the file and the field.

    >>> import json, tempfile
    >>> d = Path(tempfile.mkdtemp(), "lr0.1"); d.mkdir()
    >>> _ = (d / "results.json").write_text(json.dumps({"result": {"steps": {"loss": [1.0, 0.5]}, "epochs": {}}}))
    >>> load_histories(d)
    {'lr0.1': {'steps': {'loss': [1.0, 0.5]}, 'epochs': {}, 'monitors': {}, 'layer_names': {}}}
    """
    root = Path(run_dir)
    if not root.is_dir():
        fail("run_dir", "an existing directory", str(run_dir))
    monitors = {}
    if (root / "monitors.json").exists():
        monitors = _monitors(_json(root / "monitors.json"), str(root / "monitors.json"))
    out: dict[str, dict[str, Any]] = {}
    res = root / "results.json"
    if res.exists():
        data = _json(res)
        if isinstance(data, dict) and "result" in data:
            result = data["result"]
            if not isinstance(result, dict):
                raise ValueError(f"{res}: `result` must be a mapping. Received: {type(result).__name__}")
            label = str(data.get("variant") or data.get("name") or root.name)
            out[label] = {"steps": _table(result.get("steps"), f"{res}: result.steps"),
                          "epochs": _table(result.get("epochs"), f"{res}: result.epochs"),
                          "monitors": monitors, "layer_names": _names(result.get("layer_names"))}
        elif isinstance(data, dict) and "variants" in data:
            variants = data["variants"]
            if not isinstance(variants, list):
                raise ValueError(f"{res}: `variants` must be a list. Received: {type(variants).__name__}")
            for i, v in enumerate(variants):
                runs = v.get("runs", []) if isinstance(v, dict) else None
                if not isinstance(runs, list):
                    raise ValueError(f"{res}: variants[{i}] must be a mapping with a list of `runs`. "
                                     f"Received: {str(v)[:80]!r}")
                for j, r in enumerate(runs):
                    where = f"{res}: variants[{i}].runs[{j}]"
                    if not isinstance(r, dict):
                        raise ValueError(f"{where} must be a mapping. Received: {type(r).__name__}")
                    run_mon = _monitors(r.get("monitors"), f"{where}.monitors")
                    if not run_mon and r.get("monitors_file") is not None:
                        run_mon = _monitor_file(root, r["monitors_file"], where)
                    out[f"{v.get('name')} (seed {r.get('seed')})"] = {
                        "steps": _table(r.get("steps"), f"{where}.steps"),
                        "epochs": _table(r.get("epochs"), f"{where}.epochs"), "monitors": run_mon,
                        "layer_names": _names(r.get("layer_names"))}
        elif isinstance(data, dict) and ("steps" in data or "epochs" in data):
            out[root.name] = {"steps": _table(data.get("steps"), f"{res}: steps"),
                              "epochs": _table(data.get("epochs"), f"{res}: epochs"),
                              "monitors": _monitors(data.get("monitors", monitors), f"{res}: monitors")}
    if not out and ((root / "steps.csv").exists() or (root / "epochs.csv").exists()):
        out[root.name] = {
            "steps": _read_csv(root / "steps.csv") if (root / "steps.csv").exists() else {},
            "epochs": _read_csv(root / "epochs.csv") if (root / "epochs.csv").exists() else {},
            "monitors": monitors}
    if not out:
        fail("run_dir", "a run directory with results.json or steps.csv/epochs.csv", str(run_dir))
    return out


def doctor(run_dir, **thresholds) -> dict[str, list[Finding]]:
    """:func:`diagnose` every history of a run directory (see :func:`load_histories`).

    >>> import json, tempfile
    >>> d = Path(tempfile.mkdtemp(), "run"); d.mkdir()
    >>> _ = (d / "results.json").write_text(json.dumps({"result": {"steps": {"loss": [1.0, 5.0, None]}}}))
    >>> {label: [f.code for f in found] for label, found in doctor(d).items()}
    {'run': ['divergence']}
    """
    histories = load_histories(run_dir)
    groups: dict[str, list[str]] = {}
    for label in histories:
        groups.setdefault(label.rsplit(" (seed ", 1)[0], []).append(label)
    out = {}
    for group, labels in groups.items():
        spread = thresholds.get("spread")
        if spread is None and len(labels) >= 2:  # several seeds: their spread is the noise to beat
            spread = seed_spread([histories[lb]["epochs"].get("val_loss", []) for lb in labels])
        for label in labels:
            out[label] = diagnose(histories[label], **{**thresholds, "spread": spread})
    return out


def seed_spread(curves: list[list]) -> float | None:
    """The run-to-run spread of a per-epoch curve over seeds: the median over epochs of the
    sample standard deviation across seeds (epochs that all seeds reached).

    >>> round(seed_spread([[1.0, 0.5, 0.4], [1.2, 0.7, 0.4], [1.1, 0.6, 0.4]]), 3)
    0.1
    >>> seed_spread([[1.0]]) is None
    True
    """
    curves = [[_num(x) for x in c] for c in curves if c]
    if len(curves) < 2:
        return None
    n = min(len(c) for c in curves)
    sds = []
    for t in range(n):
        xs = [c[t] for c in curves if math.isfinite(c[t])]
        if len(xs) >= 2:
            sds.append(statistics.stdev(xs))
    return statistics.median(sds) if sds else None


__all__ = ["ADVICE", "Finding", "diagnose", "doctor", "format_findings", "load_histories",
           "noise_of", "normalize_history", "seed_spread"]
