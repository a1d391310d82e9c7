"""Fit reports people can look at: one self-contained report.html (metrics before / after,
training curves, a 2-D map of the embedding space before and after, nearest neighbours of a few
queries before and after, settings and timings) plus its figures as PNGs.

- `build_report(run_dir)`: from the output folder of `fit(..., output_dir=RUN_DIR)` (what
  `finetuner report RUN_DIR` runs; `fit` calls it itself with `report=True`).
- `write_report(out_dir, items, labels, embeddings_before, embeddings_after)`: from any items,
  labels and embeddings (texts are shown as text, image arrays as thumbnails).
- `save_report_data` / `load_run` / `ReportData` / `render_report`: the pieces in between.

Figures use matplotlib's Agg canvas, so reports build on headless machines.
"""

from finetuner.report.build import build_report, render_report, write_report
from finetuner.report.store import ReportData, load_run, save_report_data

__all__ = ["build_report", "render_report", "write_report", "ReportData", "load_run", "save_report_data"]
