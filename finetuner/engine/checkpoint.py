"""Checkpoints of a run, for every recipe: written when due, renamed into place when complete,
restored on resume.

A checkpoint folder holds what `accelerate`'s `save_state` writes (optimizer, scheduler, the
gradient scaler, every process's RNG state, the registered `TrainState`) and the model's weights:
the whole state dict when every parameter trains; only the trainable weights (and the buffers)
when part of the model is frozen, since the frozen part is rebuilt as it was; a peft model's
adapter (`adapter_model.safetensors`, `adapter_config.json`, loadable with
`PeftModel.from_pretrained`) for LoRA. Each folder is written as `.tmp-NAME` and renamed to NAME
when complete, so a folder with a checkpoint's name is always whole, even after a crash.

Under OUTPUT_DIR/checkpoints:

- `epoch-N`: the state after epoch N (what `resume=True` continues from);
- `step-N`: the state after optimizer step N, within an epoch (`Checkpoints(save_steps=...)`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from .callbacks import Callback

logger = logging.getLogger(__name__)

INFO_FILE = "checkpoint.json"  # epoch, global_step, end_of_epoch: for people, pruning and resume
TRAINABLE_FILE = "trainable.safetensors"
ADAPTER_FILE = "adapter_model.safetensors"
_NAME = re.compile(r"^(epoch|step)-(\d+)$")


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The newest complete end-of-epoch checkpoint folder under OUTPUT_DIR/checkpoints, or None."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return None
    found = [(int(m.group(2)), p) for p in root.iterdir()
             if (m := _NAME.match(p.name)) and m.group(1) == "epoch" and p.is_dir()]
    return max(found)[1] if found else None


class Checkpoints(Callback):
    """When a run writes checkpoints: after each epoch (`epoch-N`) and every `save_steps`
    optimizer steps (`step-N`), keeping the newest `keep`.

    The `Trainer` checkpoints every epoch into OUTPUT_DIR/checkpoints by default (keeping 2);
    pass a `Checkpoints` among its callbacks to change that. It always runs after the other
    callbacks, so a checkpoint holds what they logged.

    Args:
        every_epoch: write `epoch-N` after each epoch.
        save_steps: also write `step-N` every this many optimizer steps (None: never). A run
            that does not checkpoint every epoch then still ends with an `epoch-N` of its last
            state (resumable).
        keep: how many checkpoints to keep, the newest by optimizer step (None: all); the newest
            end-of-epoch one is always kept, so the run stays resumable.
        root: the checkpoints folder; default OUTPUT_DIR/checkpoints of the trainer (none: no
            checkpoints).

    Raises:
        ValueError: save_steps or keep below 1.
    """

    def __init__(self, every_epoch: bool = True, save_steps: int | None = None, keep: int | None = 2,
                 root: str | os.PathLike | None = None) -> None:
        for name, value in (("save_steps", save_steps), ("keep", keep)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name}: expected an int >= 1 or None, got {value!r}")
        self.every_epoch, self.save_steps, self.keep = every_epoch, save_steps, keep
        self.root = Path(root) if root is not None else None
        self._last_step: int | None = None  # global step of the newest step-N written by this run

    def folder(self, trainer) -> Path | None:
        """Where this run's checkpoints go, or None (no root and no output_dir)."""
        if self.root is not None:
            return self.root
        return Path(trainer.output_dir) / "checkpoints" if trainer.output_dir else None

    def on_batch_end(self, trainer, loss: float) -> None:
        step = trainer.state.global_step
        if self.save_steps and step and step % self.save_steps == 0 and step != self._last_step:
            self._save(trainer, f"step-{step}", end_of_epoch=False)
            self._last_step = step

    def on_epoch_end(self, trainer, logs: dict) -> None:
        if self.every_epoch:
            self._save_epoch(trainer)

    def on_fit_end(self, trainer) -> None:
        if self.save_steps and not self.every_epoch and trainer.state.epoch:
            self._save_epoch(trainer)  # "plus the last": the end of training is resumable

    def _save_epoch(self, trainer) -> None:
        self._save(trainer, f"epoch-{trainer.state.epoch}", end_of_epoch=True)

    def _save(self, trainer, name: str, end_of_epoch: bool) -> None:
        root = self.folder(trainer)
        if root is None:
            return
        save_checkpoint(trainer, root / name, end_of_epoch=end_of_epoch)
        if trainer.accelerator.is_main_process:
            if end_of_epoch and self._last_step == trainer.state.global_step:
                # the step checkpoint of this very step holds the same weights: the epoch one replaces it
                shutil.rmtree(root / f"step-{self._last_step}", ignore_errors=True)
            if self.keep:
                prune(root, self.keep)
        trainer.accelerator.wait_for_everyone()


def prune(root: str | os.PathLike, keep: int) -> list[Path]:
    """Delete all but the newest `keep` checkpoints under `root` (ordered by optimizer step, an
    epoch end after a step checkpoint of the same step), never the newest end-of-epoch one (so
    the run stays resumable); return the folders deleted."""
    found, epochs = [], []
    for p in Path(root).iterdir():
        m = _NAME.match(p.name)
        if m and p.is_dir():
            is_epoch = m.group(1) == "epoch"
            found.append(((_info(p).get("global_step", -1), is_epoch, int(m.group(2))), p))
            if is_epoch:
                epochs.append((int(m.group(2)), p))
    found.sort()
    newest_epoch = max(epochs)[1] if epochs else None
    removed = [p for _, p in found[:-keep] if p != newest_epoch]
    for p in removed:
        shutil.rmtree(p, ignore_errors=True)
    return removed


def save_checkpoint(trainer, path: str | os.PathLike, *, end_of_epoch: bool = True) -> Path:
    """Write a checkpoint of `trainer` (an engine `Trainer`) to `path`: its weights (see the
    module docstring), optimizer, scheduler, scaler, RNG states and `TrainState`, through a
    temporary folder renamed into place when complete. Every process calls it."""
    acc, path = trainer.accelerator, Path(path)
    tmp = path.parent / f".tmp-{path.name}"
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    acc.wait_for_everyone()
    with _weights_hooks(acc):
        acc.save_state(str(tmp), safe_serialization=True)
    acc.wait_for_everyone()
    if acc.is_main_process:
        info = {"epoch": trainer.state.epoch, "global_step": trainer.state.global_step, "end_of_epoch": end_of_epoch}
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2))
        # rename last: a folder with the final name is always complete, even if we are killed mid-save
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    acc.wait_for_everyone()
    return path


def load_checkpoint(trainer, path: str | os.PathLike) -> None:
    """Restore weights, optimizer, scheduler, scaler, RNG states and `TrainState` of `trainer`
    from a checkpoint folder (before `fit`); training continues after the saved epoch. A step
    checkpoint (saved within an epoch) restarts that epoch from its first batch (a warning says so).

    Raises:
        FileNotFoundError: `path` is not a checkpoint folder.
    """
    path = Path(path)
    if not path.is_dir() or not list(path.glob("custom_checkpoint_*.pkl")):
        raise FileNotFoundError(f"resume: {str(path)!r} is not a checkpoint folder (expected one written by the "
                                f"engine, e.g. OUTPUT_DIR/checkpoints/epoch-N)")
    with _weights_hooks(trainer.accelerator):
        trainer.accelerator.load_state(str(path))
    if _info(path).get("end_of_epoch") is False:
        warnings.warn(f"resume: {path.name} was saved within epoch {trainer.state.epoch + 1}; that epoch restarts "
                      "from its first batch (resume from an epoch-N checkpoint to continue exactly)", stacklevel=3)


def _info(path: Path) -> dict:
    try:
        return json.loads((path / INFO_FILE).read_text())
    except (OSError, ValueError):
        return {}


# ---- the model's part of a checkpoint ---------------------------------------------------------
def is_peft_model(model: torch.nn.Module) -> bool:
    """Whether `model` is a peft model (LoRA and other adapters): its checkpoint is the adapter."""
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """The trainable parameters and the buffers of a model whose other parameters are frozen
    (quantized weights and their quantization state count as frozen), or None when every
    parameter trains (then the whole state dict is the checkpoint)."""
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    if not frozen:
        return None
    state, seen = {}, set()
    for key, value in model.state_dict().items():
        parts = key.split(".")
        if any(".".join(parts[:i]) in frozen for i in range(1, len(parts) + 1)):
            continue
        if not isinstance(value, torch.Tensor) or value.data_ptr() in seen:
            continue  # tied weights are stored once; loading one fills both
        seen.add(value.data_ptr())
        state[key] = value.detach().contiguous()
    return state


def _adapter_dir(folder, i: int) -> Path:
    """Where model i's adapter goes: the checkpoint folder itself for the first model."""
    return Path(folder) / f"adapter_{i}" if i else Path(folder)


def _trainable_file(folder, i: int) -> Path:
    return Path(folder) / (TRAINABLE_FILE if i == 0 else TRAINABLE_FILE.replace(".", f"_{i}.", 1))


def _save_hook(acc):
    def hook(models, weights, output_dir) -> None:
        from safetensors.torch import save_file

        for i in reversed(range(len(models))):
            model = acc.unwrap_model(models[i])
            if is_peft_model(model):
                if acc.is_main_process:
                    model.save_pretrained(str(_adapter_dir(output_dir, i)))
                weights.pop(i)
            elif (state := trainable_state(model)) is not None:
                if acc.is_main_process:
                    save_file(state, str(_trainable_file(output_dir, i)))
                weights.pop(i)
    return hook


def _load_hook(acc):
    def hook(models, input_dir) -> None:
        from safetensors.torch import load_file

        for i in reversed(range(len(models))):
            model = acc.unwrap_model(models[i])
            adapter, trainable = _adapter_dir(input_dir, i) / ADAPTER_FILE, _trainable_file(input_dir, i)
            if is_peft_model(model) and adapter.is_file():
                from peft import set_peft_model_state_dict

                set_peft_model_state_dict(model, load_file(str(adapter)))
                models.pop(i)
            elif trainable.is_file():
                unexpected = model.load_state_dict(load_file(str(trainable)), strict=False).unexpected_keys
                if unexpected:
                    raise ValueError(f"resume: the checkpoint {str(input_dir)!r} holds weights this model does not "
                                     f"have: {unexpected[:5]}")
                models.pop(i)
    return hook


@contextmanager
def _weights_hooks(acc) -> Iterator[None]:
    """accelerate's save / load hooks that store a frozen-base model's trainable part only."""
    handles = [acc.register_save_state_pre_hook(_save_hook(acc)), acc.register_load_state_pre_hook(_load_hook(acc))]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
