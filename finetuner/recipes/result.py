"""What `fit` returns, and the before/after table it prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table


@dataclass
class FitResult:
    """The outcome of `finetuner.fit`.

    Attributes:
        model: the tuned model (the same object that was passed in, trained in place).
        history: one dict per epoch: epoch, train_loss, eval_loss, eval metrics, epoch_time_s,
            train_samples_per_s.
        metrics_before / metrics_after: eval metrics of the untrained and the final model
            (empty without eval data).
        output_dir: where the model, metrics.json, checkpoints and logs were written, or None.
        settings: the arguments of the run (for reports).
    """

    model: Any
    history: list = field(default_factory=list)
    metrics_before: dict = field(default_factory=dict)
    metrics_after: dict = field(default_factory=dict)
    output_dir: str | None = None
    settings: dict = field(default_factory=dict)

    def table(self) -> Table:
        """A rich table: each metric before, after and the change."""
        table = Table(title="retrieval metrics on eval_data")
        for col in ("metric", "before", "after", "change"):
            table.add_column(col, justify="left" if col == "metric" else "right")
        for key, before in self.metrics_before.items():
            after = self.metrics_after.get(key)
            if key == "num_queries" or after is None:
                continue
            table.add_row(key, f"{before:.4f}", f"{after:.4f}", f"{after - before:+.4f}")
        return table

    def print_summary(self, console: Console | None = None) -> None:
        if self.metrics_before:
            (console or Console()).print(self.table())

    def to_dict(self) -> dict:
        """JSON-ready: history, metrics before/after, settings."""
        return {"history": self.history, "metrics_before": self.metrics_before,
                "metrics_after": self.metrics_after, "settings": self.settings}
