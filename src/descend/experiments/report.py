"""The summary table (terminal text) and ``report.html`` of a comparison.

The HTML is one self-contained file: inline CSS, no scripts, no fonts or anything
fetched from elsewhere; plots are PNG files next to it, referenced by relative paths,
so the run folder can be moved or zipped and still opens in any browser.
"""

from __future__ import annotations

import html
from typing import Any

COLUMNS = [
    ("variant", "variant"),
    ("final_val_acc", "final val acc"),
    ("best_val_acc", "best val acc"),
    ("final_test_acc", "final test acc"),
    ("steps_to_target", "steps to target"),
    ("seconds_to_target", "seconds to target"),
    ("reached", "reached"),
    ("train_seconds", "train s"),
]


def _fmt(cell: Any, key: str) -> str:
    if isinstance(cell, str):
        return cell
    if not isinstance(cell, dict) or cell.get("mean") is None:
        return "-"
    m, s = cell["mean"], cell["std"]
    if key.endswith("acc"):
        return f"{100 * m:.2f} ± {100 * s:.2f}"
    if key.startswith("steps"):
        return f"{m:.0f} ± {s:.0f}"
    return f"{m:.2f} ± {s:.2f}"


def table_rows(summary: list[dict[str, Any]]) -> list[list[str]]:
    """Header row then one row per variant, formatted (accuracies in %).

    >>> from descend.experiments.runner import summarize
    >>> run = dict(seed=0, final_val_acc=0.8, best_val_acc=0.85, final_test_acc=0.75, final_train_loss=0.5,
    ...            steps_to_target=10, seconds_to_target=1.5, train_seconds=2.0)
    >>> rows = table_rows([summarize("sgd", [run])])
    >>> rows[0][:3], rows[1][:3]
    (['variant', 'final val acc', 'best val acc'], ['sgd', '80.00 ± 0.00', '85.00 ± 0.00'])
    """
    rows = [[title for _, title in COLUMNS]]
    for row in summary:
        rows.append([_fmt(row.get(k), k) for k, _ in COLUMNS])
    return rows


def text_table(summary: list[dict[str, Any]], target: float | None = None) -> str:
    """The summary as an aligned plain-text table (mean ± std over seeds).

    >>> from descend.experiments.runner import summarize
    >>> run = dict(seed=0, final_val_acc=0.8, best_val_acc=0.85, final_test_acc=0.75, final_train_loss=0.5,
    ...            steps_to_target=10, seconds_to_target=1.5, train_seconds=2.0)
    >>> print(text_table([summarize("sgd", [run, {**run, "seed": 1, "final_val_acc": 0.9}])]))
    variant  final val acc  best val acc  final test acc  steps to target  seconds to target  reached      train s
    -------  -------------  ------------  --------------  ---------------  -----------------  -------  -----------
    sgd       85.00 ± 7.07  85.00 ± 0.00    75.00 ± 0.00           10 ± 0        1.50 ± 0.00      2/2  2.00 ± 0.00
    (accuracies in %, mean ± std over seeds)
    """
    rows = table_rows(summary)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for j, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    note = "accuracies in %, mean ± std over seeds"
    if target is not None:
        note += f"; target = validation accuracy >= {100 * target:g}%"
    return "\n".join(lines) + f"\n({note})"


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } .sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.95em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.35em 0.8em; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""


def _median(values: list, late: bool = True) -> float | None:
    """Median of the finite values (``late``: of the second half, as the doctor reads them)."""
    import math
    import statistics
    xs = [float(v) for v in values[len(values) // 2 if late else 0:]
          if v is not None and math.isfinite(float(v))]
    return statistics.median(xs) if xs else None


def monitor_rows(variants: list[dict[str, Any]]) -> list[list[str]]:
    """The monitor table: header then one row per variant (empty when nothing was monitored).

    Per layer, the fraction of dead units (ReLU family) or saturated outputs (sigmoid,
    tanh): median over the second half of the samples, mean over seeds; and the
    first-layer over last-layer gradient norm ratio (median over samples, mean over
    seeds; far below 1: vanishing gradients).

    >>> runs = [{"monitors": {"activations": {"step": [0, 1], "dead/1": [0.5, 0.25]}}}]
    >>> monitor_rows([{"name": "relu", "runs": runs}])
    [['variant', 'dead 1'], ['relu', '25.0%']]
    >>> monitor_rows([{"name": "plain", "runs": [{}]}])           # nothing monitored
    []
    """
    from descend.experiments.plots import layer_columns, monitor_table

    def mean(xs):
        xs = [x for x in xs if x is not None]
        return sum(xs) / len(xs) if xs else None

    cols: list[tuple[str, str]] = []  # (column prefix, layer)
    for v in variants:
        for prefix in ("dead/", "saturated/"):
            for layer in layer_columns(v["runs"], "activations", prefix):
                if (prefix, layer) not in cols:
                    cols.append((prefix, layer))
    has_grad = any(len([n for n in layer_columns(v["runs"], "grad_norm", "grad_norm/")
                        if n.endswith("weight")]) >= 2 for v in variants)
    if not cols and not has_grad:
        return []
    head = ["variant"] + [f"{'dead' if p == 'dead/' else 'saturated'} {layer}" for p, layer in cols]
    if has_grad:
        head.append("grad norm first/last layer")
    rows = [head]
    for v in variants:
        row = [v["name"]]
        for prefix, layer in cols:
            m = mean([_median((monitor_table(r, "activations") or {}).get(prefix + layer, []))
                      for r in v["runs"]])
            row.append("-" if m is None else f"{100 * m:.1f}%")
        if has_grad:
            ratios = []
            for r in v["runs"]:
                g = monitor_table(r, "grad_norm") or {}
                names = [k for k in g if k.startswith("grad_norm/") and k.endswith("weight")]
                if len(names) >= 2:
                    first, last = _median(g[names[0]], False), _median(g[names[-1]], False)
                    ratios.append(first / last if first is not None and last else None)
            m = mean(ratios)
            row.append("-" if m is None else f"{m:.3g}")
        rows.append(row)
    return rows


def _html_table(rows: list[list[str]]) -> str:
    """Header row then body rows as an HTML table, every cell escaped."""
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_figures(plots: list[tuple[str, str]]) -> str:
    """``[(file, title)]`` as captioned images."""
    e = html.escape
    return "".join(f'<figure><img src="{e(f)}" alt="{e(t)}"><figcaption>{e(t)}</figcaption></figure>'
                   for f, t in plots)


def write_html(path: str, *, title: str, description: str, summary: list[dict[str, Any]],
               plots: list[tuple[str, str]], meta: dict[str, Any], recipe_text: str,
               target: float | None = None, monitor_table: list[list[str]] | None = None,
               monitor_plots: list[tuple[str, str]] | None = None) -> None:
    """Write ``report.html``: meta line, summary table, the plots, the monitors, and the recipe.

    >>> import os, tempfile
    >>> run = dict(seed=0, final_val_acc=0.8, best_val_acc=0.85, final_test_acc=0.75, final_train_loss=0.5,
    ...            steps_to_target=10, seconds_to_target=1.5, train_seconds=2.0)
    >>> from descend.experiments.runner import summarize
    >>> path = os.path.join(tempfile.mkdtemp(), "report.html")
    >>> write_html(path, title="demo", description="one variant", meta={"epochs": 1}, plots=[],
    ...            summary=[summarize("sgd", [run])], recipe_text="name: demo")
    >>> text = open(path).read()
    >>> text.startswith("<!DOCTYPE html>"), "<td>sgd</td>" in text, "name: demo" in text
    (True, True, True)
    """
    e = html.escape
    meta_line = " · ".join(f"{e(str(k))}: {e(str(v))}" for k, v in meta.items())
    note = "Accuracies in %, mean ± standard deviation over seeds."
    if target is not None:
        note += (f" Steps and seconds to target: first epoch end with validation accuracy "
                 f"&ge; {100 * target:g}%, averaged over the seeds that reached it.")
    figs = _html_figures(plots)
    mon = ""
    if monitor_table or monitor_plots:
        mon = "<h2>Monitors</h2>\n"
        if monitor_table:
            mon += (_html_table(monitor_table) + "\n"
                    '<p class="sub">Dead: fraction of units of a ReLU-family layer whose input is '
                    "&le; 0 for every example of the batch; saturated: fraction of sigmoid/tanh "
                    "outputs whose derivative is below 0.1 of its maximum. Median over the second "
                    "half of the sampled steps, mean over seeds. Gradient norm ratio: first over "
                    "last weight tensor, median over the samples (far below 1: vanishing). "
                    "Per-run tables: monitors/*.json; <code>descend doctor</code> reads them.</p>\n")
        mon += _html_figures(monitor_plots or [])
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)}</title><style>{_CSS}</style></head>
<body>
<h1>{e(title)}</h1>
<p class="sub">{meta_line}</p>
<p>{e(description)}</p>
<h2>Summary</h2>
{_html_table(table_rows(summary))}
<p class="sub">{note}</p>
<h2>Curves</h2>
<p class="sub">Lines: mean over seeds; bands: min–max over seeds.</p>
{figs}
{mon}
<h2>Recipe</h2>
<pre>{e(recipe_text)}</pre>
</body></html>
"""
    from descend.io import write_text
    write_text(path, doc)
