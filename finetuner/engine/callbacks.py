"""Callbacks: what happens around the loop (progress, logs, early stopping, best model).

A callback overrides any of the hooks below; each receives the `Trainer`, whose `state`
(`TrainState`), `model` (unwrapped) and `accelerator` it may read. Only the main process
writes files or prints.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

from ..console import note, progress


class Callback:
    """Base class: every hook does nothing."""

    def on_fit_start(self, trainer) -> None: ...
    def on_epoch_start(self, trainer) -> None: ...
    def on_batch_end(self, trainer, loss: float) -> None: ...
    def on_epoch_end(self, trainer, logs: dict) -> None: ...
    def on_fit_end(self, trainer) -> None: ...


class ProgressBar(Callback):
    """A rich progress bar per epoch with the running train loss."""

    def __init__(self) -> None:
        self._progress = None

    def on_epoch_start(self, trainer) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        if not trainer.accelerator.is_main_process:
            return
        self._progress = progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(), TimeRemainingColumn(),
            transient=False,
        )
        if self._progress is None:
            return
        self._task = self._progress.add_task(
            "train", total=trainer.steps_per_epoch, epoch=trainer.state.epoch + 1, loss=float("nan"))
        self._sum, self._n = 0.0, 0

    def on_batch_end(self, trainer, loss: float) -> None:
        if self._progress is not None:
            self._sum, self._n = self._sum + loss, self._n + 1
            self._progress.update(self._task, advance=1, loss=self._sum / self._n)

    def on_epoch_end(self, trainer, logs: dict) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            shown = {k: v for k, v in logs.items() if k not in ("epoch",) and isinstance(v, float)}
            note("  " + "  ".join(f"{k}={v:.4f}" for k, v in shown.items()))


def _is_better(value: float, best: float | None, mode: str, min_delta: float) -> bool:
    if best is None:
        return True
    return value > best + min_delta if mode == "max" else value < best - min_delta


def _mode_for(monitor: str) -> str:
    return "min" if "loss" in monitor else "max"


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved for `patience` epochs.

    Args:
        monitor: a key of the epoch logs, e.g. "eval_loss" or "mAP@10".
        patience: epochs without improvement before stopping (>= 1).
        mode: "min", "max", or None to infer ("min" for losses, else "max").
        min_delta: smallest change that counts as an improvement.

    Raises:
        ValueError: patience < 1; KeyError at the first epoch end if `monitor` is not logged.
    """

    def __init__(self, monitor: str = "eval_loss", patience: int = 3, mode: str | None = None, min_delta: float = 0.0):
        if patience < 1:
            raise ValueError(f"patience: expected an int >= 1, got {patience}")
        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
        self.mode = mode or _mode_for(monitor)
        self._best, self._bad = None, 0

    def on_epoch_end(self, trainer, logs: dict) -> None:
        if self.monitor not in logs:
            raise KeyError(f"EarlyStopping: monitor {self.monitor!r} is not logged; logged keys: {sorted(logs)}")
        value = logs[self.monitor]
        if _is_better(value, self._best, self.mode, self.min_delta):
            self._best, self._bad = value, 0
        else:
            self._bad += 1
            if self._bad >= self.patience:
                trainer.state.should_stop = True
                note(f"early stopping: {self.monitor} has not improved for {self.patience} epochs")


class BestModelCheckpoint(Callback):
    """Save the model whenever `monitor` improves, to `dirpath` (default OUTPUT_DIR/best), and
    optionally load those weights back at the end of fit.

    Args:
        monitor: a key of the epoch logs; mode: "min" / "max" / None (inferred).
        dirpath: where to save; restore_best: load the best weights into the model at the end.
    """

    def __init__(self, monitor: str = "eval_loss", mode: str | None = None, dirpath: str | None = None,
                 restore_best: bool = True):
        self.monitor, self.mode, self.dirpath, self.restore_best = monitor, mode or _mode_for(monitor), dirpath, restore_best
        self._best_state = None

    def on_epoch_end(self, trainer, logs: dict) -> None:
        value = logs.get(self.monitor)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return
        if _is_better(value, trainer.state.best_metric, self.mode, 0.0):
            trainer.state.best_metric, trainer.state.best_epoch = value, trainer.state.epoch
            self._best_state = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
            path = self.dirpath or (trainer.output_dir and os.path.join(trainer.output_dir, "best"))
            if path and trainer.accelerator.is_main_process and trainer.save_fn is not None:
                trainer.save_fn(trainer.model, path)

    def on_fit_end(self, trainer) -> None:
        if self.restore_best and self._best_state is not None:
            trainer.model.load_state_dict(self._best_state)
            note(
                f"restored the best model (epoch {trainer.state.best_epoch}, {self.monitor}={trainer.state.best_metric:.4f})")


class CSVLogger(Callback):
    """Append one row per epoch (the epoch logs) to a CSV file (default OUTPUT_DIR/metrics.csv)."""

    def __init__(self, path: str | None = None):
        self.path = path

    def on_epoch_end(self, trainer, logs: dict) -> None:
        path = self.path or (trainer.output_dir and os.path.join(trainer.output_dir, "metrics.csv"))
        if not path or not trainer.accelerator.is_main_process:
            return
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        rows = [*trainer.state.history]  # rewrite whole file: columns may grow, resume keeps it whole
        keys = list(dict.fromkeys(k for row in rows for k in row))
        tmp = f"{path}.tmp"
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)


class TensorBoardLogger(Callback):
    """Write the train loss per step and the epoch logs as TensorBoard scalars
    (default OUTPUT_DIR/tensorboard)."""

    def __init__(self, logdir: str | None = None, every_n_steps: int = 10):
        self.logdir, self.every = logdir, every_n_steps
        self._writer = None

    def on_fit_start(self, trainer) -> None:
        logdir = self.logdir or (trainer.output_dir and os.path.join(trainer.output_dir, "tensorboard"))
        if logdir and trainer.accelerator.is_main_process:
            _tensorboard_without_tensorflow()
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(logdir)

    def on_batch_end(self, trainer, loss: float) -> None:
        if self._writer is not None and trainer.state.global_step % self.every == 0:
            self._writer.add_scalar("train/loss_step", loss, trainer.state.global_step)

    def on_epoch_end(self, trainer, logs: dict) -> None:
        if self._writer is not None:
            for k, v in logs.items():
                if isinstance(v, (int, float)) and k != "epoch":
                    self._writer.add_scalar(f"epoch/{k}", v, logs["epoch"])
            self._writer.flush()

    def on_fit_end(self, trainer) -> None:
        if self._writer is not None:
            self._writer.close()


def _tensorboard_without_tensorflow() -> None:
    """Make TensorBoard write event files with its own stub instead of importing TensorFlow.

    TensorBoard imports TensorFlow whenever it is installed (e.g. for `finetuner[keras]`),
    which costs seconds and hundreds of MB on every run; the module `tensorboard.compat.notf`
    is its documented switch to the stub (what its `no_tensorflow` build target provides).
    Left alone when TensorFlow is already imported: then it costs nothing more.
    """
    import sys
    import types

    if "tensorflow" not in sys.modules:
        sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
