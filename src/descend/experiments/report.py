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
    """Header row then one row per variant, formatted (accuracies in %)."""
    rows = [[title for _, title in COLUMNS]]
    for row in summary:
        rows.append([_fmt(row.get(k), k) for k, _ in COLUMNS])
    return rows


def text_table(summary: list[dict[str, Any]], target: float | None = None) -> str:
    """The summary as an aligned plain-text table (mean ± std over seeds)."""
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


def write_html(path: str, *, title: str, description: str, summary: list[dict[str, Any]],
               plots: list[tuple[str, str]], meta: dict[str, Any], recipe_text: str,
               target: float | None = None) -> None:
    """Write ``report.html``: meta line, summary table, the plots, and the recipe."""
    e = html.escape
    rows = table_rows(summary)
    head = "".join(f"<th>{e(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
    meta_line = " · ".join(f"{e(str(k))}: {e(str(v))}" for k, v in meta.items())
    note = "Accuracies in %, mean ± standard deviation over seeds."
    if target is not None:
        note += (f" Steps and seconds to target: first epoch end with validation accuracy "
                 f"&ge; {100 * target:g}%, averaged over the seeds that reached it.")
    figs = "".join(
        f'<figure><img src="{e(f)}" alt="{e(t)}"><figcaption>{e(t)}</figcaption></figure>'
        for f, t in plots)
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)}</title><style>{_CSS}</style></head>
<body>
<h1>{e(title)}</h1>
<p class="sub">{meta_line}</p>
<p>{e(description)}</p>
<h2>Summary</h2>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<p class="sub">{note}</p>
<h2>Curves</h2>
<p class="sub">Lines: mean over seeds; bands: min–max over seeds.</p>
{figs}
<h2>Recipe</h2>
<pre>{e(recipe_text)}</pre>
</body></html>
"""
    from descend.io import write_text
    write_text(path, doc)
