"""The training state that checkpoints carry besides weights and optimizer."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class TrainState:
    """Progress of one fit: restored on resume, read by callbacks.

    Attributes:
        epoch: epochs completed so far.
        global_step: optimizer steps taken so far.
        history: one dict per completed epoch (epoch, train_loss, eval metrics, timings).
        best_metric / best_epoch: the best monitored value so far (set by callbacks).
        should_stop: set by a callback (early stopping) to end training after this epoch.
        batches_done: global batches of the current epoch already trained (0 at an epoch's
            start); a resumed run skips them.
        epoch_loss_sum / epoch_items / epoch_seconds: the current epoch's summed step losses,
            items (all processes) and training seconds so far, so a resumed epoch logs the
            same train loss as an uninterrupted one.
    """

    epoch: int = 0
    global_step: int = 0
    history: list = field(default_factory=list)
    best_metric: float | None = None
    best_epoch: int | None = None
    should_stop: bool = False
    batches_done: int = 0
    epoch_loss_sum: float = 0.0
    epoch_items: int = 0
    epoch_seconds: float = 0.0

    def state_dict(self) -> dict:
        """Every field as JSON-ready values."""
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        """Set the fields found in `state` (a `state_dict`); unknown keys are ignored."""
        known = set(self.__dataclass_fields__)
        for key, value in state.items():
            if key in known:
                setattr(self, key, value)

    def start_epoch(self) -> None:
        """Reset the current epoch's progress (a new epoch begins)."""
        self.batches_done, self.epoch_loss_sum, self.epoch_items, self.epoch_seconds = 0, 0.0, 0, 0.0
