"""`FitResult`: what every recipe returns, and its before/after table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# counts, not metrics: kept in the result, left out of the table
_NOT_SHOWN = ("num_queries", "eval_tokens", "epoch")


@dataclass
class FitResult:
    """The outcome of `finetuner.fit` (and of `FineTuner.train`).

    Attributes:
        model: the tuned model (the same object that was passed in, trained in place, when it
            was a module).
        history: one dict per epoch: epoch, train_loss, eval_loss, eval metrics, epoch_time_s,
            train_samples_per_s (and the recipe's own keys).
        metrics_before / metrics_after: eval metrics of the untrained and the final model
            (empty without eval data).
        output_dir: where the model, metrics.json, checkpoints and logs were written, or None.
        settings: the arguments of the run and what the recipe chose (for reports and model
            cards); "task" names the recipe.
    """

    model: Any
    history: list = field(default_factory=list)
    metrics_before: dict = field(default_factory=dict)
    metrics_after: dict = field(default_factory=dict)
    output_dir: str | None = None
    settings: dict = field(default_factory=dict)

    def table(self, title: str | None = None):
        """A rich table: each eval metric before training, after it, and the change."""
        from rich.table import Table

        table = Table(title=title or self.settings.get("table_title", "metrics on eval_data"))
        for col in ("metric", "before", "after", "change"):
            table.add_column(col, justify="left" if col == "metric" else "right")
        for key, before in self.metrics_before.items():
            after = self.metrics_after.get(key)
            if key in _NOT_SHOWN or not isinstance(before, (int, float)) or not isinstance(after, (int, float)):
                continue
            table.add_row(key, f"{before:.4f}", f"{after:.4f}", f"{after - before:+.4f}")
        return table

    def print_summary(self) -> None:
        """Show the before/after table on the console (when there is eval data and the run is verbose)."""
        from ..console import show

        if self.metrics_before:
            show(self.table())

    def to_dict(self) -> dict:
        """JSON-ready: history, metrics before/after, settings."""
        return {"history": self.history, "metrics_before": self.metrics_before,
                "metrics_after": self.metrics_after, "settings": self.settings}
