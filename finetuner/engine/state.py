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
    """

    epoch: int = 0
    global_step: int = 0
    history: list = field(default_factory=list)
    best_metric: float | None = None
    best_epoch: int | None = None
    should_stop: bool = False

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)
