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
    ("rank", "rank"),
    ("final_test_acc", "final test acc"),
    ("vs_best", "vs best (p)"),
    ("final_val_acc", "final val acc"),
    ("best_val_acc", "best val acc"),
    ("final_train_loss", "train loss"),
    ("steps_to_target", "steps to target"),
    ("reached", "reached"),
    ("seconds_to_target", "seconds to target"),
    ("train_seconds", "train s"),
]
LOSS_COLUMNS = {"final_test_acc": ("final_test_loss", "final test loss"),
                "final_val_acc": ("final_val_loss", "final val loss"), "best_val_acc": None}


def columns(summary: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The table's columns: accuracies when the runs measured them, else losses (regression).

    >>> [k for k, _ in columns([{"final_test_acc": {"mean": 0.9}}])][:3]
    ['variant', 'rank', 'final_test_acc']
    >>> [k for k, _ in columns([{"final_test_acc": {"mean": None}}])][:3]
    ['variant', 'rank', 'final_test_loss']
    """
    has_acc = any((row.get("final_test_acc") or {}).get("mean") is not None for row in summary)
    if has_acc:
        return list(COLUMNS)
    out = []
    for k, t in COLUMNS:
        if k in LOSS_COLUMNS:
            if LOSS_COLUMNS[k] is not None:
                out.append(LOSS_COLUMNS[k])
        else:
            out.append((k, t))
    return out


def _num(v: float, key: str) -> str:
    if key.endswith("acc"):
        return f"{100 * v:.2f}"
    if key.startswith("steps"):
        return f"{v:.0f}"
    if key.endswith("loss"):
        return f"{v:.4g}"
    return f"{v:.2f}"


def _fmt(cell: Any, key: str, busy: bool = False) -> str:
    if isinstance(cell, str):
        return cell
    if not isinstance(cell, dict) or cell.get("mean") is None:
        return "-"
    text = _num(cell["mean"], key)
    if cell.get("lo") is not None and cell.get("hi") is not None:
        text += f" [{_num(cell['lo'], key)}, {_num(cell['hi'], key)}]"
    if busy and "seconds" in key:
        text += " *"
    return text


def _vs_best(row: dict[str, Any] | None, key: str) -> str:
    from descend.analysis.stats import fmt_p
    if row is None:
        return "-"
    if row.get("p_adj") is None and row.get("diff") == 0.0:
        return "best"
    scale = 100 if key.endswith("acc") else 1
    d, lo, hi = row.get("diff"), row.get("diff_lo"), row.get("diff_hi")
    if d is None:
        return "-"
    unit = " pt" if key.endswith("acc") else ""
    text = f"{scale * d:+.2f}{unit}" if scale == 100 else f"{d:+.4g}"
    if lo is not None and hi is not None:
        text += f" [{scale * lo:+.2f}, {scale * hi:+.2f}]" if scale == 100 else f" [{lo:+.4g}, {hi:+.4g}]"
    return text + f" ({fmt_p(row.get('p_adj'))})"


def table_rows(summary: list[dict[str, Any]], statistics: dict[str, Any] | None = None) -> list[list[str]]:
    """Header row then one row per variant: mean [95% CI] over seeds (accuracies in %).

    With ``statistics`` (:func:`descend.experiments.verdicts.analyse`) the rows follow the
    ranking of the primary measure (test accuracy, or test loss), with the rank and the
    difference to the best (its interval and Holm-adjusted p-value). Seconds measured on
    a busy machine carry a ``*``.

    >>> from descend.experiments.runner import summarize
    >>> run = dict(seed=0, final_val_acc=0.8, best_val_acc=0.85, final_test_acc=0.75, final_train_loss=0.5,
    ...            steps_to_target=10, seconds_to_target=1.5, train_seconds=2.0, steps_run=20)
    >>> rows = table_rows([summarize("sgd", [run, {**run, "seed": 1, "final_test_acc": 0.77}])])
    >>> rows[0][:4], rows[1][:3]
    (['variant', 'rank', 'final test acc', 'vs best (p)'], ['sgd', '-', '76.00 [63.29, 88.71]'])
    """
    cols = columns(summary)
    rows = [[title for _, title in cols]]
    primary, ranked = None, None
    if statistics and statistics.get("measures"):
        primary = next(iter(statistics["measures"]))
        ranked = {r["variant"]: r for r in statistics["measures"][primary]["result"]["rows"]}
    order = summary
    if ranked:
        pos = {name: i for i, name in enumerate(ranked)}
        order = sorted(summary, key=lambda row: pos.get(row["variant"], len(pos)))
    for row in order:
        cells = []
        for k, _ in cols:
            if k == "rank":
                cells.append(str(ranked[row["variant"]]["rank"]) if ranked and row["variant"] in ranked else "-")
            elif k == "vs_best":
                cells.append(_vs_best(ranked.get(row["variant"]) if ranked else None, primary or ""))
            else:
                cells.append(_fmt(row.get(k), k, busy=bool(row.get("busy"))))
        rows.append(cells)
    return rows


def _note(summary, target=None, statistics=None) -> str:
    from descend.experiments.verdicts import target_words
    parts = ["mean [95% CI] over seeds", "accuracies in %"]
    if statistics and statistics.get("measures"):
        parts.append("rank and vs best: paired tests over seeds, Holm-corrected; variants that no other "
                     "variant beats share rank 1")
    if isinstance(target, dict):
        parts.append(f"target = {target_words(target)}; steps to target: a run that never reached it counts "
                     "as its budget (restricted mean)")
    elif target is not None:
        parts.append(f"target = validation accuracy >= {100 * target:g}%")
    if any(row.get("busy") for row in summary):
        loads = [row.get("load_max") for row in summary if row.get("load_max") is not None]
        parts.append(f"* seconds measured on a busy machine (load average up to {max(loads):.1f}): not comparable; "
                     "steps are the measure")
    return "; ".join(parts)


TEXT_COLUMNS = {"variant", "rank", "final_test_acc", "final_test_loss", "vs_best", "final_val_acc",
                "final_val_loss", "steps_to_target", "reached", "train_seconds"}


def text_table(summary: list[dict[str, Any]], target: Any = None, statistics: dict[str, Any] | None = None) -> str:
    """The summary as an aligned plain-text table, with a note saying what the figures are
    (the terminal's columns; report.html has every column).

    >>> from descend.experiments.runner import summarize
    >>> run = dict(seed=0, final_val_acc=0.8, best_val_acc=0.85, final_test_acc=0.75, final_train_loss=0.5,
    ...            steps_to_target=10, seconds_to_target=1.5, train_seconds=2.0, steps_run=20)
    >>> print(text_table([summarize("sgd", [run, {**run, "seed": 1, "final_val_acc": 0.9}])]))  # doctest: +NORMALIZE_WHITESPACE
    variant  rank  final test acc  vs best (p)  final val acc  steps to target  reached  train s
    -------  ----  --------------------  -----------  ---------------------  ---------------  -------  -----------------
    sgd  -  75.00 [75.00, 75.00]  -  85.00 [21.47, 100.00]  10 [10, 10]  2/2  2.00 [2.00, 2.00]
    (mean [95% CI] over seeds; accuracies in %)
    """
    full = table_rows(summary, statistics)
    keep = [i for i, (k, _) in enumerate(columns(summary)) if k in TEXT_COLUMNS]
    rows = [[r[i] for i in keep] for r in full]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for j, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines) + f"\n({_note(summary, target, statistics)})"


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
ul.answer { font-size: 1.05em; background: #f4f8ff; border-left: 4px solid #3b6fd8; padding: 0.6em 1.2em 0.6em 2em; }
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
    [['variant', 'dead: 1'], ['relu', '25.0%']]
    >>> runs[0]["layer_names"] = {"1": "layer 1 ReLU"}                # recorded by the runner
    >>> monitor_rows([{"name": "relu", "runs": runs}])[0]
    ['variant', 'dead: layer 1 ReLU']
    >>> monitor_rows([{"name": "plain", "runs": [{}]}])           # nothing monitored
    []
    """
    from descend.analysis.labels import column_label
    from descend.experiments.plots import layer_columns, monitor_table

    labels = next((r.get("layer_names") for v in variants for r in v["runs"] if r.get("layer_names")), {})

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
    head = ["variant"] + [f"{'dead' if p == 'dead/' else 'saturated'}: {column_label(p + layer, labels)}"
                          for p, layer in cols]
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


def pair_rows(statistics: dict[str, Any]) -> list[list[str]]:
    """Every pairwise comparison of every measure: difference [95% CI], raw and Holm-adjusted p.

    >>> from descend.analysis.stats import compare_variants
    >>> res = compare_variants({"a": [1.0, 2.0, 3.0], "b": [1.1, 2.2, 3.1]})
    >>> pair_rows({"measures": {"final_test_loss": {"label": "test loss", "result": res}}})[1][:3]
    ['test loss', 'a - b', '-0.1333 [-0.2768, 0.01009]']
    """
    from descend.analysis.stats import fmt_p
    rows = [["measure", "pair", "difference [95% CI]", "test", "p", "p (Holm)", "significant"]]
    for key, m in (statistics.get("measures") or {}).items():
        scale = 100 if key.endswith("acc") else 1
        for pr in m["result"]["pairs"]:
            d = pr.get("diff")
            ci = "-" if d is None else f"{scale * d:.4g}" + (
                f" [{scale * pr['lo']:.4g}, {scale * pr['hi']:.4g}]" if pr.get("lo") is not None else "")
            rows.append([m["label"], f"{pr['a']} - {pr['b']}", ci, pr["method"], fmt_p(pr.get("p")),
                         fmt_p(pr.get("p_adj")), "yes" if pr.get("significant") else "no"])
    return rows


def write_html(path: str, *, title: str, description: str, summary: list[dict[str, Any]],
               plots: list[tuple[str, str]], meta: dict[str, Any], recipe_text: str,
               target: Any = None, monitor_table: list[list[str]] | None = None,
               monitor_plots: list[tuple[str, str]] | None = None,
               statistics: dict[str, Any] | None = None, sections: list[tuple[str, str]] | None = None) -> None:
    """Write ``report.html``: the answer in words, the summary table with intervals, ranks and
    differences, every pairwise test, the plots, the monitors, extra ``sections``
    (``[(title, html)]``: tuning, suite) and the recipe.

    >>> import os, tempfile
    >>> run = dict(seed=0, final_val_acc=0.8, best_val_acc=0.85, final_test_acc=0.75, final_train_loss=0.5,
    ...            steps_to_target=10, seconds_to_target=1.5, train_seconds=2.0, steps_run=20)
    >>> from descend.experiments.runner import summarize
    >>> from descend.experiments.verdicts import analyse
    >>> variants = [{"name": "sgd", "runs": [run]}]
    >>> variants[0]["summary"] = summarize("sgd", variants[0]["runs"])
    >>> path = os.path.join(tempfile.mkdtemp(), "report.html")
    >>> write_html(path, title="demo", description="one variant", meta={"epochs": 1}, plots=[],
    ...            summary=[variants[0]["summary"]], recipe_text="name: demo", statistics=analyse(variants))
    >>> text = open(path).read()
    >>> text.startswith("<!DOCTYPE html>"), "<td>sgd</td>" in text, "name: demo" in text, "One seed" in text
    (True, True, True, True)
    """
    e = html.escape
    meta_line = " · ".join(f"{e(str(k))}: {e(str(v))}" for k, v in meta.items())
    note = e(_note(summary, target, statistics)[0].upper() + _note(summary, target, statistics)[1:]) + "."
    answer = ""
    if statistics and statistics.get("answer"):
        answer = ("<h2>Answer</h2>\n<ul class=\"answer\">" + "".join(f"<li>{e(line)}</li>" for line in statistics["answer"])
                  + "</ul>\n")
    pairs = ""
    if statistics and statistics.get("measures"):
        pairs = ("<h2>Pairwise comparisons</h2>\n" + _html_table(pair_rows(statistics)) + "\n"
                 '<p class="sub">Paired over seeds when both variants ran the same seeds (same initial '
                 "weights and data order): paired t-test on the per-seed differences; otherwise Welch's "
                 "t-test. All pairs of a measure form one family, Holm-corrected at alpha "
                 f"{statistics.get('alpha', 0.05):g}. Accuracy differences in points.</p>\n")
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
    extra = "".join(f"<h2>{e(t)}</h2>\n{body}\n" for t, body in (sections or []))
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)}</title><style>{_CSS}</style></head>
<body>
<h1>{e(title)}</h1>
{answer}<p class="sub">{meta_line}</p>
<p>{e(description)}</p>
<h2>Summary</h2>
{_html_table(table_rows(summary, statistics))}
<p class="sub">{note}</p>
{pairs}{extra}<h2>Curves</h2>
<p class="sub">Lines: mean over seeds; bands: min–max over seeds. Curves that coincide are drawn once and
labelled with every variant they belong to.</p>
{figs}
{mon}
<h2>Recipe</h2>
<pre>{e(recipe_text)}</pre>
</body></html>
"""
    from descend.io import write_text
    write_text(path, doc)
