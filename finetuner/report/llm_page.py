"""The report of a language-model run: held-out loss and perplexity before and after, the
training curve, greedy replies of the base and the tuned model side by side, and the settings;
one self-contained OUT_DIR/report.html (the page style of `finetuner.report.html`)."""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Sequence

from .html import kv_table, metrics_table, page, timings_table

REPORT = "report.html"
SECTIONS = {
    "metrics": "Held-out loss and perplexity",
    "curves": "Training",
    "generations": "Replies before and after (greedy)",
    "settings": "Settings",
}
SHOWN = 1200  # characters of a reply shown


def _cell(text: str) -> str:
    text = text if len(text) <= SHOWN else text[:SHOWN] + " ..."
    return f'<td style="text-align:left;white-space:pre-wrap;max-width:420px">{html.escape(text)}</td>'


def generations_table(rows: Sequence[dict]) -> str:
    """HTML table: instruction, reference reply, base model's reply, tuned model's reply."""
    if not rows:
        return '<p class="note">no held-out instructions to generate for (pass eval_dataset)</p>'
    head = "<tr><th>instruction</th><th>reference</th><th>base model</th><th>tuned model</th></tr>"
    body = "".join("<tr>" + "".join(_cell(r[k]) for k in ("prompt", "reference", "base", "tuned")) + "</tr>"
                   for r in rows)
    return f"<table>{head}{body}</table>"


def write_llm_report(out_dir: str | os.PathLike, result, generations: Sequence[dict] = ()) -> Path:
    """Write OUT_DIR/report.html for a `FitResult` of the llm recipe; return its path.

    Args:
        out_dir: the run's folder (exists).
        result: `finetuner.recipes.result.FitResult` (metrics_before / metrics_after with
            eval_loss, perplexity; history; settings).
        generations: rows of `finetuner.llm.generations.side_by_side`.
    """
    out = Path(out_dir)
    before, after = result.metrics_before or {}, result.metrics_after or {}
    sections = {
        "metrics": (metrics_table(before, after) if before and after
                    else '<p class="note">no held-out data (pass eval_dataset)</p>'),
        "curves": timings_table(result.history),
        "generations": generations_table(generations),
        "settings": kv_table(result.settings),
    }
    title = f"finetuner LLM run: {result.settings.get('model_id', '')}"
    text = page(title, html.escape(str(out)), sections, "finetuner", order=SECTIONS)
    path = out / REPORT
    tmp = path.with_name(f".{REPORT}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
