"""Engine callbacks for language-model fine-tuning: token throughput and adapter checkpoints."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch

from ..engine.callbacks import Callback
from ..io import atomic_dir

_CKPT = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.json"


class TokenCounter:
    """Counts the real (non-padding) tokens the loss function sees."""

    def __init__(self) -> None:
        self.tokens = 0


class TokenThroughput(Callback):
    """Add `train_tokens` and `train_tokens_per_s` (real tokens over the epoch's training time)
    to each epoch's logs. Put it first among the callbacks so the others see these keys."""

    def __init__(self, counter: TokenCounter) -> None:
        self.counter = counter

    def on_epoch_start(self, trainer) -> None:
        self.counter.tokens = 0

    def on_epoch_end(self, trainer, logs: dict) -> None:
        tokens = self.counter.tokens * trainer.accelerator.num_processes
        logs["train_tokens"] = tokens
        logs["train_tokens_per_s"] = tokens / max(logs.get("epoch_time_s", 0.0), 1e-9)


class AdapterCheckpoint(Callback):
    """Save resumable checkpoints: the adapter (LoRA weights and any fully trained modules, not
    the frozen base), optimizer, scheduler and training state, to
    `OUTPUT_DIR/checkpoints/checkpoint-STEP` (atomically: a folder of that name is complete).

    Args:
        root: the checkpoints folder.
        every_epoch: save after each epoch (resumable: see `latest_resumable`).
        save_steps: also save every this many optimizer steps (None: never).
        save_total_limit: keep only the newest N checkpoints (None: all).
    """

    def __init__(self, root: str | Path, every_epoch: bool = True, save_steps: int | None = None,
                 save_total_limit: int | None = 2) -> None:
        self.root, self.every_epoch = Path(root), every_epoch
        self.save_steps, self.save_total_limit = save_steps, save_total_limit
        self._last_step = -1

    def on_batch_end(self, trainer, loss: float) -> None:
        step = trainer.state.global_step
        if self.save_steps and step and step % self.save_steps == 0 and step != self._last_step:
            self.save(trainer, epoch_end=False)

    def on_epoch_end(self, trainer, logs: dict) -> None:
        if self.every_epoch:
            self.save(trainer, epoch_end=True)

    def save(self, trainer, epoch_end: bool) -> Path | None:
        """Write one checkpoint (main process only); return its folder."""
        self._last_step = step = trainer.state.global_step
        if not trainer.accelerator.is_main_process:
            return None
        path = self.root / f"checkpoint-{step}"
        state = dict(trainer.state.state_dict(), epoch_end=epoch_end)
        with atomic_dir(path) as tmp:
            trainer.model.save_pretrained(str(tmp))
            torch.save(trainer.optimizer.state_dict(), tmp / "optimizer.pt")
            if trainer.scheduler is not None:
                torch.save(trainer.scheduler.state_dict(), tmp / "scheduler.pt")
            (tmp / STATE_FILE).write_text(json.dumps(state, indent=2, default=float))
        if self.save_total_limit:
            found = sorted((int(m.group(1)), p) for p in self.root.iterdir() if (m := _CKPT.match(p.name)))
            for _, old in found[: -self.save_total_limit]:
                shutil.rmtree(old, ignore_errors=True)
        return path


def latest_resumable(root: str | Path) -> Path | None:
    """The newest checkpoint under `root` written at the end of an epoch, or None."""
    root = Path(root)
    if not root.is_dir():
        return None
    found = []
    for p in root.iterdir():
        m = _CKPT.match(p.name)
        if m and (p / STATE_FILE).is_file() and json.loads((p / STATE_FILE).read_text()).get("epoch_end"):
            found.append((int(m.group(1)), p))
    return max(found)[1] if found else None


def restore_checkpoint(trainer, path: str | Path) -> None:
    """Load adapter weights, optimizer, scheduler and training state from a checkpoint folder
    into an engine `Trainer` (before `fit`); training continues after the saved epoch.

    Raises:
        FileNotFoundError: `path` is not a checkpoint written by `AdapterCheckpoint`.
    """
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"resume_from_checkpoint: {str(path)!r} is not a checkpoint folder (no {STATE_FILE})")
    set_peft_model_state_dict(trainer.model, load_file(str(path / "adapter_model.safetensors")))
    trainer.optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=False))
    if trainer.scheduler is not None and (path / "scheduler.pt").is_file():
        trainer.scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    state = json.loads((path / STATE_FILE).read_text())
    state.pop("epoch_end", None)
    trainer.state.load_state_dict(state)
    trainer.accelerator.print(f"resumed from {path} (epoch {trainer.state.epoch} done, step {trainer.state.global_step})")
