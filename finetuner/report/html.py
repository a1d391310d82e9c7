"""The report page: one self-contained HTML file (inline CSS, images as base64 data URIs, no
scripts, no network resources)."""

from __future__ import annotations

import base64
import html
import math
from typing import Any, Sequence

import numpy as np

from .figures import label_name
from .neighbours import Neighbours

SECTIONS = {  # id -> heading; every report has all of them (with a note when there is nothing to show)
    "metrics": "Metrics before and after",
    "curves": "Training curves",
    "embedding-map": "Map of the embedding space",
    "neighbours": "Nearest neighbours",
    "settings": "Settings and timings",
}
LOWER_IS_BETTER = ("loss",)
TEXT_SHOWN = 300  # characters of a text item shown (the full text is in the tooltip)

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#263238;color:#fff;padding:18px 32px}
header h1{margin:0 0 4px;font-size:24px} header p{margin:2px 0;color:#cfd8dc}
nav{padding:8px 32px;background:#eceff1;font-size:14px} nav a{margin-right:16px;color:#37474f}
main{padding:8px 32px 32px;max-width:1400px}
section{background:#fff;border:1px solid #e0e0e0;border-radius:6px;padding:12px 20px;margin:16px 0}
h2{font-size:19px;margin:6px 0 10px;color:#263238}
table{border-collapse:collapse;font-size:14px;margin:6px 0}
th,td{border-bottom:1px solid #e0e0e0;padding:4px 12px;text-align:right;vertical-align:top}
th:first-child,td:first-child{text-align:left}
.better{color:#1a9641;font-weight:600} .worse{color:#d7191c;font-weight:600}
.note{color:#607d8b;font-size:13px} img{max-width:100%;height:auto}
.query{border:1px solid #e0e0e0;border-radius:6px;padding:8px 12px;margin:10px 0}
.query .q{font-weight:600;margin-bottom:6px}
.cols{display:flex;gap:24px} .cols>div{flex:1;min-width:0}
ol{margin:4px 0;padding-left:22px} li{margin:3px 0;font-size:13px}
li.rel{color:#1a6e34} li.irr{color:#9b1c1c}
.mark{font-weight:700;margin-right:4px} .meta{color:#78909c;font-size:12px}
.kv td{text-align:left}
"""


def data_uri(png: bytes) -> str:
    """A PNG as a `data:image/png;base64,...` URI (the page stays one file)."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return html.escape(str(v))
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        if math.isnan(v):
            return "nan"
        if abs(v) >= 1000:
            return f"{v:,.1f}"
        return f"{v:.3g}" if 0 < abs(v) < 1e-3 else f"{v:.4f}"
    return html.escape(str(v))


def _section(sid: str, body: str, order: dict[str, str] = SECTIONS) -> str:
    return f'<section id="{sid}"><h2>{html.escape(order[sid])}</h2>\n{body}\n</section>'


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def metrics_table(before: dict, after: dict) -> str:
    """HTML table: metric, before, after, change (absolute and relative), coloured by whether
    the change is an improvement (losses: lower is better; ranking metrics: higher)."""
    rows = []
    for key, b in before.items():
        a = after.get(key)
        if key == "num_queries" or not isinstance(b, (int, float)) or not isinstance(a, (int, float)):
            continue
        change = a - b
        better = -change if any(w in key for w in LOWER_IS_BETTER) else change
        cls = "better" if better > 1e-12 else "worse" if better < -1e-12 else ""
        rel = f"{change / abs(b):+.1%}" if b else ""
        rows.append(f'<tr><td>{html.escape(key)}</td><td>{_fmt(b)}</td><td>{_fmt(a)}</td>'
                    f'<td class="{cls}">{change:+.4f}</td><td class="{cls}">{rel}</td></tr>')
    head = "<tr><th>metric</th><th>before</th><th>after</th><th>change</th><th>relative</th></tr>"
    queries = before.get("num_queries")
    note = _note(f"{queries} eval queries, each ranked against all other eval items; losses: lower is better, "
                 "ranking metrics: higher is better.") if queries else ""
    return f"<table>{head}{''.join(rows)}</table>{note}"


def kv_table(pairs: dict) -> str:
    """A two-column key / value table."""
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{_fmt(v)}</td></tr>" for k, v in pairs.items())
    return f'<table class="kv">{rows}</table>'


def timings_table(history: list) -> str:
    """Per-epoch train loss, time and throughput, and the totals."""
    if not history:
        return _note("no epochs were recorded")
    rows, total_time = [], 0.0
    for row in history:
        t = row.get("epoch_time_s")
        total_time += t or 0.0
        rows.append(f"<tr><td>{row.get('epoch', '')}</td><td>{_fmt(row.get('train_loss'))}</td>"
                    f"<td>{_fmt(t)}</td><td>{_fmt(row.get('train_samples_per_s'))}</td></tr>")
    rows.append(f"<tr><th>total</th><th></th><th>{_fmt(total_time)}</th><th></th></tr>")
    head = "<tr><th>epoch</th><th>train loss</th><th>time (s)</th><th>train items / s</th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def _text_item(texts: Sequence[str], labels: np.ndarray, i: int, class_names) -> str:
    full = texts[i]
    shown = full if len(full) <= TEXT_SHOWN else full[:TEXT_SHOWN] + "\u2026"
    return f'<span title="{html.escape(full)}">{html.escape(shown)}</span>'


def text_neighbours(texts: Sequence[str], found: list[Neighbours], labels: np.ndarray, class_names) -> str:
    """Per query: the query text, then its neighbours before and after side by side, each
    marked relevant (\u2713, green) or not (\u2717, red), with its label and distance."""
    out = []
    for nb in found:
        cols = []
        for name, idx, dist, rel in (("before", nb.before, nb.before_distance, nb.before_relevant),
                                     ("after", nb.after, nb.after_distance, nb.after_relevant)):
            items = "".join(
                f'<li class="{"rel" if ok else "irr"}"><span class="mark">{"&#10003;" if ok else "&#10007;"}</span>'
                f'{_text_item(texts, labels, int(i), class_names)} '
                f'<span class="meta">d={d:.3f} \u00b7 {html.escape(label_name(labels, int(i), class_names))}</span></li>'
                for i, d, ok in zip(idx, dist, rel))
            cols.append(f"<div><b>{name}</b> ({int(rel.sum())} of {len(idx)} relevant)<ol>{items}</ol></div>")
        out.append(f'<div class="query"><div class="q">query: {_text_item(texts, labels, nb.query, class_names)} '
                   f'<span class="meta">{html.escape(label_name(labels, nb.query, class_names))} \u00b7 '
                   f'{nb.num_relevant} relevant item{"" if nb.num_relevant == 1 else "s"} in the eval set</span></div>'
                   f'<div class="cols">{"".join(cols)}</div></div>')
    return "\n".join(out)


def page(title: str, subtitle: str, sections: dict[str, str], footer: str, order: dict[str, str] | None = None) -> str:
    """The whole page from section bodies (id -> HTML; every id of `order`, default `SECTIONS`
    (id -> heading), is present)."""
    order = order or SECTIONS
    nav = " ".join(f'<a href="#{sid}">{html.escape(h)}</a>' for sid, h in order.items())
    body = "\n".join(_section(sid, sections.get(sid) or _note("nothing to show"), order) for sid in order)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>\n"
            f"<header><h1>{html.escape(title)}</h1><p>{subtitle}</p></header>\n<nav>{nav}</nav>\n"
            f'<main>\n{body}\n<p class="note">{html.escape(footer)}</p>\n</main></body></html>\n')
