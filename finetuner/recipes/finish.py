"""The end of every recipe: write what the run made (the model, metrics.json, the report) and
show the before/after table. Only the main process writes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from ..config import TrainArgs
from ..console import note
from ..io import write_json
from ..models.card import write_card
from ..models.saving import save
from .result import FitResult

logger = logging.getLogger(__name__)


def finish(result: FitResult, args: TrainArgs, *, is_main_process: bool = True,
           save_model: Callable | None = save, write_report: Callable[[Path], Path] | None = None) -> FitResult:
    """Write OUTPUT_DIR/model (`save_model(model, path)`), OUTPUT_DIR/metrics.json and, with
    `args.report`, the report (`write_report(output_dir) -> path`; a failing report only warns:
    the model and metrics are already saved); then show the table. Returns `result`."""
    if args.output_dir and is_main_process:
        out = Path(args.output_dir)
        result.output_dir = str(out)
        if save_model is not None:
            save_model(result.model, out / "model")
            write_card(out / "model", result.model, result)  # the card with the run: data, settings, metrics, time
        write_json(out / "metrics.json", result.to_dict())
        if args.report and write_report is not None:
            try:
                note(f"report: {write_report(out)}")
            except Exception as e:  # noqa: BLE001  (a report is a view; the run's outputs are safe)
                logger.warning("report: could not build the report (%s: %s); retry with `finetuner report %s`",
                               type(e).__name__, e, out)
    if is_main_process:
        result.print_summary()
    return result
