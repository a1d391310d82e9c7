"""Checkpoints of a run, for every recipe: written when due, swapped into place when complete,
restored on resume without running code from the folder.

A checkpoint folder holds everything a resumed run needs to continue as if never stopped:

- the model's weights: the whole state dict (`model.safetensors`) when every parameter trains;
  only the trainable weights and the buffers (`trainable.safetensors`) when part of the model is
  frozen, since the frozen part is rebuilt as it was; a peft model's adapter
  (`adapter_model.safetensors`, `adapter_config.json`, loadable with `PeftModel.from_pretrained`)
  for LoRA;
- the optimizer, the schedule and the fp16 gradient scaler (`optimizer.pt`, `scheduler.pt`,
  `scaler.pt`: tensors and numbers only, read with `torch.load(weights_only=True)`);
- each process's random states (`rng-R.pt`: Python, numpy, torch, CUDA);
- `trainer_state.json`: the `TrainState` (epoch, optimizer step, history, the position inside
  the epoch and its partial loss) and every callback's state (early-stopping counters, the
  file of the best weights);
- `checkpoint.json`: epoch, global_step, end_of_epoch (for people and pruning).

Under FSDP, weights and optimizer go through accelerate's `save_state` / `load_state` into
`fsdp/`, which gathers the shards; the schedule, the scaler, the random states and the trainer
state are written as above. accelerate shards only on GPUs (on the CPU it runs DDP instead);
`tests/test_distributed.py` runs this path on 2 CPU processes with FSDP2 over gloo by switching
accelerate's state to FSDP (kill mid-epoch, resume, the same weights as an uninterrupted run).

Each folder is written under a temporary name, fsynced and swapped in by one atomic rename
(`finetuner.io`), so a folder with a checkpoint's name is always whole, even after a kill.

Under OUTPUT_DIR/checkpoints:

- `epoch-N`: the state after epoch N;
- `step-N`: the state after optimizer step N, within an epoch (`Checkpoints(save_steps=...)`):
  a resumed run skips the batches already trained and continues that epoch exactly.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..io import clean_leftovers, fsync_tree, release, replace_path, temporary_sibling, untie_shared
from .callbacks import Callback
from .distributed import broadcast_object

INFO_FILE = "checkpoint.json"  # epoch, global_step, end_of_epoch: for people, pruning and resume
STATE_FILE = "trainer_state.json"
MODEL_FILE, TRAINABLE_FILE, ADAPTER_FILE = "model.safetensors", "trainable.safetensors", "adapter_model.safetensors"
OPTIMIZER_FILE, SCHEDULER_FILE, SCALER_FILE = "optimizer.pt", "scheduler.pt", "scaler.pt"
FSDP_DIR = "fsdp"  # under FSDP: accelerate's save_state (sharded weights and optimizer, gathered)
_NAME = re.compile(r"^(epoch|step)-(\d+)$")


def _sharded(acc) -> bool:
    return acc.distributed_type.name == "FSDP"


def _complete(root: Path) -> list[tuple[tuple, Path]]:
    """((global_step, is_epoch, number), folder) of every complete checkpoint under `root`."""
    found = []
    for p in root.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_dir() and (p / INFO_FILE).is_file():
            found.append(((_info(p).get("global_step", -1), m.group(1) == "epoch", int(m.group(2))), p))
    return sorted(found)


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint folder under OUTPUT_DIR/checkpoints (by optimizer step; an
    end-of-epoch one before a step one of the same step), or None."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return None
    found = _complete(root)
    return found[-1][1] if found else None


class Checkpoints(Callback):
    """When a run writes checkpoints: after each epoch (`epoch-N`) and every `save_steps`
    optimizer steps (`step-N`), keeping the newest `keep`.

    The `Trainer` checkpoints every epoch into OUTPUT_DIR/checkpoints by default (keeping 2);
    pass a `Checkpoints` among its callbacks to change that. It always runs after the other
    callbacks, so a checkpoint holds what they logged. Every checkpoint is resumable (step ones
    continue mid-epoch), and the newest one is never pruned.

    Args:
        every_epoch: write `epoch-N` after each epoch.
        save_steps: also write `step-N` every this many optimizer steps (None: never). A run
            that does not checkpoint every epoch then still ends with an `epoch-N` of its last
            state.
        keep: how many checkpoints to keep, the newest by optimizer step (None: all).
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
        if (self.save_steps and step and step % self.save_steps == 0 and step != self._last_step
                and trainer.accelerator.sync_gradients):
            self._save(trainer, f"step-{step}", end_of_epoch=False)
            self._last_step = step

    def on_epoch_end(self, trainer, logs: dict) -> None:
        if self.every_epoch:
            self._save_epoch(trainer)

    def on_fit_end(self, trainer) -> None:
        if self.save_steps and not self.every_epoch and trainer.state.epoch:
            self._save_epoch(trainer)  # "plus the last": the end of training is a checkpoint

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
    """Delete all but the newest `keep` complete checkpoints under `root` (ordered by optimizer
    step, an epoch end after a step checkpoint of the same step); the newest is always kept, so
    the run stays resumable. Returns the folders deleted."""
    found = _complete(Path(root))
    removed = [p for _, p in found[:-max(keep, 1)]]
    for p in removed:
        shutil.rmtree(p, ignore_errors=True)
    return removed


# ---- writing ------------------------------------------------------------------------------------
def save_checkpoint(trainer, path: str | os.PathLike, *, end_of_epoch: bool = True) -> Path:
    """Write a checkpoint of `trainer` (an engine `Trainer`) to `path` (see the module docstring),
    through a temporary folder swapped into place when complete. Every process calls it."""
    acc, path = trainer.accelerator, Path(path)
    tmp = None
    if acc.is_main_process:
        clean_leftovers(path)
        tmp = temporary_sibling(path)
    tmp = Path(broadcast_object(str(tmp) if tmp else None))
    if _sharded(acc):  # FSDP: parameters and optimizer state are sharded; accelerate gathers them
        acc.save_state(str(tmp / FSDP_DIR), safe_serialization=True)
    torch.save(_rng_state(), tmp / f"rng-{acc.process_index}.pt")
    if acc.is_main_process:
        if not _sharded(acc):
            _save_model(acc.unwrap_model(trainer.wrapped), tmp)
            torch.save(trainer.optimizer.state_dict(), tmp / OPTIMIZER_FILE)
        # the engine steps the schedule itself (accelerate's save_state does not know it); neither it
        # nor the scaler is sharded
        if trainer.scheduler is not None:
            torch.save(trainer.scheduler.state_dict(), tmp / SCHEDULER_FILE)
        if getattr(acc, "scaler", None) is not None:
            torch.save(acc.scaler.state_dict(), tmp / SCALER_FILE)
        callbacks = {key: cb.state_dict() for key, cb in _keyed(trainer.callbacks)}
        (tmp / STATE_FILE).write_text(json.dumps({"train_state": trainer.state.state_dict(),
                                                  "callbacks": callbacks}, indent=1, default=_json))
        info = {"epoch": trainer.state.epoch, "global_step": trainer.state.global_step,
                "end_of_epoch": end_of_epoch, "batches_done": trainer.state.batches_done,
                "num_processes": acc.num_processes}
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2))
    acc.wait_for_everyone()
    if acc.is_main_process:
        try:
            fsync_tree(tmp)
            replace_path(tmp, path)  # last: a folder with the final name is always complete
        finally:
            release(tmp)
    acc.wait_for_everyone()
    return path


def _keyed(callbacks) -> list[tuple[str, Callback]]:
    """Callbacks with a stable key each: class name and rank among the callbacks of that class
    ("EarlyStopping#0"), so that a resumed run with a callback more or less (a logger, a
    user's one) still gives each state back to its callback."""
    seen: dict[str, int] = {}
    out = []
    for cb in callbacks:
        name = type(cb).__name__
        out.append((f"{name}#{seen.get(name, 0)}", cb))
        seen[name] = seen.get(name, 0) + 1
    return out


def _json(value):
    return value.item() if hasattr(value, "item") else str(value)


def _rng_state() -> dict:
    """This process's random states as tensors and numbers (loadable with weights_only=True)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": [name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss),
                       float(cached)]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---- the model's part ---------------------------------------------------------------------------
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


def _save_model(model: torch.nn.Module, folder: Path) -> None:
    if is_peft_model(model):
        model.save_pretrained(str(folder))
        return
    state = trainable_state(model)
    file = TRAINABLE_FILE if state is not None else MODEL_FILE
    state = state if state is not None else model.state_dict()
    save_file(untie_shared({k: v.detach().cpu().contiguous() for k, v in state.items()}), str(folder / file))



def _load_model(model: torch.nn.Module, folder: Path) -> None:
    if (folder / ADAPTER_FILE).is_file() and is_peft_model(model):
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(str(folder / ADAPTER_FILE)))
    elif (folder / TRAINABLE_FILE).is_file():
        unexpected = model.load_state_dict(load_file(str(folder / TRAINABLE_FILE)), strict=False).unexpected_keys
        if unexpected:
            raise ValueError(f"resume: the checkpoint {str(folder)!r} holds weights this model does not have: "
                             f"{unexpected[:5]}")
    elif (folder / MODEL_FILE).is_file():
        model.load_state_dict(load_file(str(folder / MODEL_FILE)))
    else:
        raise FileNotFoundError(f"resume: {str(folder)!r} holds no model weights")


# ---- reading ------------------------------------------------------------------------------------
def load_checkpoint(trainer, path: str | os.PathLike) -> None:
    """Restore weights, optimizer, scheduler, scaler, random states, `TrainState` (with the
    position inside the epoch) and the callbacks' states of `trainer` from a checkpoint folder,
    before `fit`. Nothing is unpickled beyond tensors and numbers (`weights_only=True`).

    Raises:
        FileNotFoundError: `path` is not a complete checkpoint folder.
    """
    path, acc = Path(path), trainer.accelerator
    if not (path / INFO_FILE).is_file() or not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"resume: {str(path)!r} is not a checkpoint folder (expected one written by the "
                                f"engine, e.g. OUTPUT_DIR/checkpoints/epoch-N)")
    if (path / FSDP_DIR).is_dir():
        acc.load_state(str(path / FSDP_DIR))  # accelerate reads with weights_only=True; RNG below
    else:
        _load_model(acc.unwrap_model(trainer.wrapped), path)
        trainer.optimizer.load_state_dict(_read(path / OPTIMIZER_FILE))
    if trainer.scheduler is not None and (path / SCHEDULER_FILE).is_file():
        trainer.scheduler.load_state_dict(_read(path / SCHEDULER_FILE))
    if getattr(acc, "scaler", None) is not None and (path / SCALER_FILE).is_file():
        acc.scaler.load_state_dict(_read(path / SCALER_FILE))
    saved = json.loads((path / STATE_FILE).read_text())
    trainer.state.load_state_dict(saved.get("train_state", {}))
    before = _info(path).get("num_processes", acc.num_processes)
    if trainer.state.batches_done and before != acc.num_processes:
        warnings.warn(f"resume: {path.name} was saved mid-epoch by {before} processes and this run has "
                      f"{acc.num_processes}: its global batches differ, so the rest of epoch "
                      f"{trainer.state.epoch + 1} may repeat or skip some items (resume from an epoch-N "
                      "checkpoint to avoid this)", stacklevel=3)
    states = saved.get("callbacks", {})
    for key, cb in _keyed(trainer.callbacks):
        if key in states:
            cb.load_state_dict(states[key])
    rng = path / f"rng-{acc.process_index}.pt"
    if rng.is_file():
        _set_rng_state(_read(rng))
    else:
        warnings.warn(f"resume: {path.name} has no random state for process {acc.process_index} (saved by "
                      f"{_info(path).get('num_processes', '?')} processes); random draws will differ from the "
                      "first run", stacklevel=3)


def _read(file: Path):
    return torch.load(file, map_location="cpu", weights_only=True)


def _info(path: Path) -> dict:
    try:
        return json.loads((path / INFO_FILE).read_text())
    except (OSError, ValueError):
        return {}
