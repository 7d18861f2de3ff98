"""``descend reproduce``: re-run, at laptop scale on bundled data, the experiments
behind the notes' claims, and write a report that states the claim, the measured
figures and whether the claim held.

Every claim is a function ``(size, out_dir) -> ClaimResult`` registered in ``CLAIMS``;
``size="tiny"`` runs in about a second on two seeds (a smoke test of the pipeline, not
a verdict: the report says so), ``"full"`` in minutes on CPU over at least 5 seeds.
:func:`run_claim` writes ``<out>/<claim>/report.md``, ``report.html``, ``result.json``
and the PNG figures; :func:`run_claims` also writes ``<out>/README.md``, an index.

The verdict is computed from the measurement by the criterion stated in the report: a
95% interval over the seeds (:mod:`descend.analysis.stats`) compared with a margin fixed
before the run. The experiments use the library's own code (models of
``descend.nn.MODELS``, ``descend.init``, ``descend.optim``, the ``Trainer`` and its
callbacks). A claim that the notes do not make (``origin="elsewhere"``) says where it
comes from. Nothing is tuned until a claim holds. Runs are single-threaded
(``torch.set_num_threads(1)`` for the claim, restored afterwards).
"""

from __future__ import annotations

import html
import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import torch

from descend._registry import Registry
from descend._validation import check_choice
from descend.analysis.reproduce import claims_landscape, claims_optim, claims_training
from descend.analysis.reproduce._common import SIZES, ClaimResult

CLAIMS = Registry("claim")
for _fn in (claims_training.batchnorm_lr, claims_training.relu_vs_tanh, claims_training.init_depth,
            claims_optim.l1_sparsity, claims_optim.momentum_terminal_speed,
            claims_optim.nesterov_quadratic, claims_training.dropout_gap,
            claims_training.early_stopping, claims_landscape.lottery_ticket,
            claims_landscape.mode_connectivity, claims_landscape.flat_minima,
            claims_training.mnist1d_table):
    CLAIMS.register(_fn.__name__, _fn)


def _fmt(v) -> str:
    if isinstance(v, float):
        return "n/a" if not math.isfinite(v) else f"{v:.4g}"
    return "n/a" if v is None else str(v)


SMOKE = ("Smoke test (size `tiny`): two seeds and a few steps check that the experiment runs; "
         "the figures are too small to decide the claim and the verdict below is not evidence. "
         "Run `descend reproduce CLAIM --size full` for the verdict.")


def _verdict(r: ClaimResult) -> str:
    return "HELD" if r.held else "DID NOT HOLD"


def _heading(r: ClaimResult) -> str:
    return f"SMOKE TEST, not a verdict ({_verdict(r).lower()} at tiny size)" if r.size == "tiny" else _verdict(r)


def _source(r: ClaimResult) -> str:
    return r.source if r.origin == "notes" else f"not from the notes: {r.source}"


def _markdown(r: ClaimResult) -> str:
    verdict = _verdict(r)
    lines = [f"# {r.name}: {_heading(r)}", ""]
    if r.size == "tiny":
        lines += [f"> {SMOKE}", ""]
    lines += [f"**Claim** ({_source(r)}): {r.claim}", "",
              f"**Setup** (size `{r.size}`, {r.seconds:.1f} s, {len(r.seeds)} seeds): {r.setup}", "",
              f"**Measured**: {r.measured}", "",
              f"**Criterion** (fixed before the run; margin: {r.margin or 'none'}): {r.criterion} "
              f"-> **{verdict}**", ""]
    if r.table:
        cols = list(dict.fromkeys(k for row in r.table for k in row))
        lines.append("| " + " | ".join(c.replace("|", "&#124;") for c in cols) + " |")
        lines.append("|" + "---|" * len(cols))
        for row in r.table:
            lines.append("| " + " | ".join(_fmt(row.get(c)).replace("|", "&#124;") for c in cols) + " |")
        lines.append("")
    for fname, caption in r.figures.items():
        lines += [f"![{caption}]({fname})", "", f"*{caption}*", ""]
    return "\n".join(lines)


def _html(r: ClaimResult) -> str:
    verdict = _heading(r).lower() if r.size == "tiny" else ("held" if r.held else "did not hold")
    rows = ""
    if r.table:
        cols = list(dict.fromkeys(k for row in r.table for k in row))
        rows = "<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cols) + "</tr>"
        for row in r.table:
            rows += "<tr>" + "".join(f"<td>{html.escape(_fmt(row.get(c)))}</td>" for c in cols) + "</tr>"
        rows += "</table>"
    figs = "".join(f'<figure><img src="{html.escape(f)}"><figcaption>{html.escape(c)}</figcaption></figure>'
                   for f, c in r.figures.items())
    e = html.escape
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{e(r.name)}</title>"
            "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}"
            ".held{color:#070}.not{color:#a00}</style></head><body>"
            f"<h1>{e(r.name)}: <span class='{'held' if r.held else 'not'}'>{e(verdict)}</span></h1>"
            + (f"<p><i>{e(SMOKE)}</i></p>" if r.size == "tiny" else "") +
            f"<p><b>Claim</b> ({e(_source(r))}): {e(r.claim)}</p>"
            f"<p><b>Setup</b> (size {e(r.size)}, {r.seconds:.1f} s, {len(r.seeds)} seeds): {e(r.setup)}</p>"
            f"<p><b>Measured</b>: {e(r.measured)}</p><p><b>Criterion</b> (fixed before the run; margin: "
            f"{e(r.margin or 'none')}): {e(r.criterion)}</p>"
            f"{rows}{figs}</body></html>")


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, torch.Tensor):
        return _jsonable(v.tolist())
    return v


def run_claim(name: str, *, size: str = "tiny", out="reproduce", seed: int = 0) -> ClaimResult:
    """Run one claim and write its report under ``out/<name>/``.

    Args:
        name: a name in ``CLAIMS``.
        size: ``"tiny"`` (seconds, for tests) or ``"full"`` (minutes, for the docs).
        out: output directory (default ``reproduce``).
        seed: global torch seed set before the claim runs (default 0).

    Example:
        >>> import tempfile
        >>> r = run_claim("momentum_terminal_speed", out=tempfile.mkdtemp())
        >>> r.held
        True
    """
    fn = CLAIMS.get(name)
    check_choice("size", size, list(SIZES))
    out_dir = Path(out) / name.lower()
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    try:
        result = fn(size, out_dir)
    finally:
        torch.set_num_threads(threads)
    result.size = size
    result.seconds = time.perf_counter() - t0
    (out_dir / "report.md").write_text(_markdown(result))
    (out_dir / "report.html").write_text(_html(result))
    (out_dir / "result.json").write_text(json.dumps(_jsonable(asdict(result)), indent=1))
    return result


def run_claims(names=None, *, size: str = "tiny", out="reproduce", progress=None) -> list[ClaimResult]:
    """Run several claims (default: all) and write ``out/README.md``, an index."""
    names = list(names) if names else CLAIMS.names()
    results = []
    for n in names:
        r = run_claim(n, size=size, out=out)
        results.append(r)
        if progress:
            progress(r)
    write_index(results, out)
    return results


def write_index(results: list[ClaimResult], out) -> Path:
    """``out/README.md``: one line per claim with its verdict and measured figures."""
    size = results[0].size if results else "full"
    lines = ["# Reproduced claims", "",
             "Each row links to a report stating the claim, the setup, the measured figures with "
             "95% intervals over the seeds, the criterion with its margin (fixed before the run) "
             "and the verdict. Regenerate with "
             f"`descend reproduce --all --size {size} --out DIR`.", ""]
    if size == "tiny":
        lines += [f"> {SMOKE}", ""]
    lines += ["| claim | verdict | seeds | measured | seconds |", "|---|---|---|---|---|"]
    for r in results:
        word = "smoke test only" if r.size == "tiny" else ("held" if r.held else "**did not hold**")
        mark = "" if r.origin == "notes" else " (not from the notes)"
        lines.append(f"| [{r.name}]({r.name}/report.md){mark} | {word} | {len(r.seeds)} "
                     f"| {r.measured.replace('|', '&#124;')} | {r.seconds:.0f} |")
    path = Path(out) / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


__all__ = ["CLAIMS", "ClaimResult", "run_claim", "run_claims", "write_index"]
