"""Token throughput of a run: real (non-padding) tokens per second of training, for recipes
whose batches are token sequences (language models)."""

from __future__ import annotations

from .callbacks import Callback


class TokenThroughput(Callback):
    """Add `train_tokens` and `train_tokens_per_s` (the real tokens of the epoch over its
    training time, all processes together) to each epoch's logs.

    The recipe's loss function reports each batch's tokens with `add(n)`. Put this callback
    first among the callbacks, so the others (progress, CSV) see these keys.
    """

    def __init__(self) -> None:
        self.tokens = 0

    def add(self, tokens: int) -> None:
        """Count `tokens` real tokens of the current batch."""
        self.tokens += int(tokens)

    def on_epoch_start(self, trainer) -> None:
        self.tokens = 0

    def on_epoch_end(self, trainer, logs: dict) -> None:
        tokens = self.tokens * trainer.accelerator.num_processes
        logs["train_tokens"] = tokens
        logs["train_tokens_per_s"] = tokens / max(logs.get("epoch_time_s", 0.0), 1e-9)
