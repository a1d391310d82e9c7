"""Callbacks: what happens around the loop (progress, logs, early stopping, best model).

A callback overrides any of the hooks below; each receives the `Trainer`, whose `state`
(`TrainState`), `model` (unwrapped) and `accelerator` it may read. Only the main process
writes files or prints.
"""

from __future__ import annotations

import csv
import json
import math
import os
import warnings
from pathlib import Path

from ..console import note, progress
from ..io import fsync_path


class Callback:
    """Base class: every hook does nothing.

    A callback with state that must survive a resume (counters, the best value so far) returns
    it from `state_dict()` as JSON-ready values and takes it back in `load_state_dict(state)`;
    checkpoints store it (`finetuner.engine.checkpoint`).
    """

    def on_fit_start(self, trainer) -> None: ...
    def on_epoch_start(self, trainer) -> None: ...
    def on_batch_end(self, trainer, loss: float) -> None: ...
    def on_epoch_end(self, trainer, logs: dict) -> None: ...
    def on_fit_end(self, trainer) -> None: ...

    def state_dict(self) -> dict:
        """What a checkpoint keeps of this callback (JSON-ready); {} for a stateless one."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned (on resume)."""


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

    def state_dict(self) -> dict:
        """The best value so far and the epochs since it improved."""
        return {"best": self._best, "bad": self._bad}

    def load_state_dict(self, state: dict) -> None:
        """Restore the best value and the count of epochs without improvement."""
        self._best, self._bad = state.get("best"), int(state.get("bad", 0))

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

    With an output_dir the best weights (the trainable part, for a partly frozen model) are
    kept on disk, in OUTPUT_DIR/checkpoints/best-epoch-N.safetensors, not in memory: a resumed
    run restores them too. Files no checkpoint refers to any more are removed.

    Args:
        monitor: a key of the epoch logs; mode: "min" / "max" / None (inferred).
        dirpath: where to save; restore_best: load the best weights into the model at the end.
    """

    def __init__(self, monitor: str = "eval_loss", mode: str | None = None, dirpath: str | None = None,
                 restore_best: bool = True):
        self.monitor, self.mode, self.dirpath, self.restore_best = monitor, mode or _mode_for(monitor), dirpath, restore_best
        self._best_state = None  # in memory when the run keeps nothing on disk
        self._best_file: str | None = None  # name under OUTPUT_DIR/checkpoints

    def state_dict(self) -> dict:
        """The file of the best weights (under OUTPUT_DIR/checkpoints), if on disk."""
        return {"best_file": self._best_file}

    def load_state_dict(self, state: dict) -> None:
        """Restore the name of the best weights' file."""
        self._best_file = state.get("best_file")

    def on_epoch_start(self, trainer) -> None:
        root = _checkpoint_root(trainer)
        if root is not None and trainer.accelerator.is_main_process:
            _remove_unused_best_files(root, keep={self._best_file})

    def on_epoch_end(self, trainer, logs: dict) -> None:
        value = logs.get(self.monitor)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return
        if _is_better(value, trainer.state.best_metric, self.mode, 0.0):
            trainer.state.best_metric, trainer.state.best_epoch = value, trainer.state.epoch
            state = _restorable_state(trainer.model)
            root = _checkpoint_root(trainer)
            if root is None:
                self._best_state = {k: v.detach().clone() for k, v in state.items()}
            else:
                self._best_file = f"best-epoch-{trainer.state.epoch}.safetensors"
                if trainer.accelerator.is_main_process:
                    _write_weights(state, root / self._best_file)
            path = self.dirpath or (trainer.output_dir and os.path.join(trainer.output_dir, "best"))
            if path and trainer.accelerator.is_main_process and trainer.save_fn is not None:
                trainer.save_fn(trainer.model, path)
            trainer.accelerator.wait_for_everyone()

    def on_fit_end(self, trainer) -> None:
        if not self.restore_best or trainer.state.best_epoch is None:
            return
        state = self._best_state
        if state is None and self._best_file is not None:
            file = _checkpoint_root(trainer) / self._best_file
            if not file.is_file():
                warnings.warn(f"BestModelCheckpoint: the best weights {str(file)!r} are missing; keeping the last "
                              "epoch's weights", stacklevel=2)
                return
            from safetensors.torch import load_file

            state = load_file(str(file))
        if state is None:
            return
        unexpected = trainer.model.load_state_dict(state, strict=False).unexpected_keys
        if unexpected:
            raise ValueError(f"BestModelCheckpoint: the best weights do not fit the model: {unexpected[:5]}")
        note(f"restored the best model (epoch {trainer.state.best_epoch}, {self.monitor}={trainer.state.best_metric:.4f})")


def _restorable_state(model) -> dict:
    """The weights that make `model` the best one again: its trainable part and buffers when part
    of it is frozen, else the whole state dict (on the CPU, tied weights once)."""
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    out, seen = {}, set()
    for key, value in model.state_dict().items():
        parts = key.split(".")
        if frozen and any(".".join(parts[:i]) in frozen for i in range(1, len(parts) + 1)):
            continue
        if value.data_ptr() in seen and value.numel():
            continue  # tied weights are stored once; loading one fills both
        seen.add(value.data_ptr())
        out[key] = value.detach().to("cpu", copy=True).contiguous()
    return out


def _checkpoint_root(trainer) -> Path | None:
    return Path(trainer.output_dir) / "checkpoints" if trainer.output_dir else None


def _write_weights(state: dict, file: Path) -> None:
    from safetensors.torch import save_file

    from ..io import release, replace_path, temporary_sibling

    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(file, folder=False)
    try:
        save_file(state, str(tmp))
        fsync_path(tmp)
        replace_path(tmp, file)
    finally:
        tmp.unlink(missing_ok=True)
        release(tmp)


def _remove_unused_best_files(root: Path, keep: set) -> None:
    """Delete best-epoch-N.safetensors files that neither `keep` nor any checkpoint refers to."""
    if not root.is_dir():
        return
    used = set(keep)
    for state_file in root.glob("*/trainer_state.json"):
        try:
            callbacks = json.loads(state_file.read_text()).get("callbacks", {})
        except (OSError, ValueError):
            continue
        used.update(s.get("best_file") for s in callbacks.values() if isinstance(s, dict))
    for file in root.glob("best-epoch-*.safetensors"):
        if file.name not in used:
            file.unlink(missing_ok=True)


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
