"""`FrameworkModule`: a Keras or Paddle model seen as a torch module by the one training loop.

Forward: the batch (torch) goes to the framework as numpy, the framework model runs (recording
its gradient tape in training), and the embeddings come back to torch through DLPack.
Backward: torch hands d loss / d embeddings [B, D]; the framework's own backward turns it into
the gradients of its trainable weights (a vector-Jacobian product), returned to torch as the
gradients of the matching torch parameters. The torch optimizer then steps those parameters,
and the next forward writes them into the framework's variables (only the ones that changed).
Non-trainable framework state (batch-norm statistics, frozen weights) lives in torch buffers,
read back from the framework after each training forward pass, so checkpoints hold it too.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch


def to_numpy(x: Any) -> Any:
    """torch tensors (any device) -> numpy arrays, through tuples / lists / dicts; others as is."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, dict) or hasattr(x, "items"):
        return {k: to_numpy(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(to_numpy(v) for v in x)
    return x


class _Bridge(torch.autograd.Function):
    """Framework forward / framework backward, as one torch autograd node."""

    @staticmethod
    def forward(ctx, module: "FrameworkModule", x: Any, *params: torch.Tensor) -> torch.Tensor:
        out, handle = module._run(x, training=module.training, record=True)
        ctx.module, ctx.handle = module, handle
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        module, handle = ctx.module, ctx.handle
        ctx.handle = None  # the tape / graph is used once
        wanted = [ctx.needs_input_grad[2 + i] for i in range(len(module._trainable))]
        grads = module._framework_backward(handle, grad_out.detach().float().cpu().contiguous().numpy(), wanted)
        out = [None if g is None else torch.from_numpy(np.ascontiguousarray(g)).to(p.device, p.dtype)
               for g, p in zip(grads, module._params())]
        return (None, None, *out)


class FrameworkModule(torch.nn.Module):
    """Base of the Keras and Paddle adapters: a torch module that runs and trains `model`.

    Subclasses implement `_weights` (name, numpy value, trainable), `_assign(i, array)`,
    `_read(i)`, `_forward(x_numpy, training, record) -> (framework output, handle)`,
    `_to_torch(output)` and `_framework_backward(handle, grad [B, D] float32 numpy, wanted)`.

    Args:
        model: the framework model (kept as `.model`, trained in place).

    Attributes:
        framework: "keras" or "paddle".
    """

    framework = "?"

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.__dict__["model"] = model  # not a torch submodule
        self._trainable, self._frozen, self._pushed = [], [], {}
        for i, (name, value, trainable) in enumerate(self._weights()):
            key = f"w{i}_" + re.sub(r"\W", "_", name)
            t = torch.from_numpy(np.array(value, copy=True))
            if trainable:
                self.register_parameter(key, torch.nn.Parameter(t))
                self._trainable.append((i, key))
            else:
                self.register_buffer(key, t)
                self._frozen.append((i, key))
        self._mark_all_pushed()

    # ---- subclass interface ----------------------------------------------------------------
    def _weights(self) -> list[tuple[str, np.ndarray, bool]]:
        raise NotImplementedError

    def _assign(self, i: int, value: np.ndarray) -> None:
        raise NotImplementedError

    def _read(self, i: int) -> np.ndarray:
        raise NotImplementedError

    def _is_state(self, i: int) -> bool:
        """Whether non-trainable weight `i` may change in a forward pass (batch-norm statistics),
        so `pull` reads it back; frozen weights need not be. Default: all may."""
        return True

    def _forward(self, x: Any, training: bool, record: bool) -> tuple[Any, Any]:
        raise NotImplementedError

    def _to_torch(self, out: Any) -> torch.Tensor:
        raise NotImplementedError

    def _framework_backward(self, handle: Any, grad: np.ndarray, wanted: list[bool]) -> list[np.ndarray | None]:
        raise NotImplementedError

    # ---- weights in sync ---------------------------------------------------------------------
    def _params(self) -> list[torch.Tensor]:
        return [getattr(self, key) for _, key in self._trainable]

    def _mark_all_pushed(self) -> None:
        for _, key in self._trainable + self._frozen:
            t = getattr(self, key)
            self._pushed[key] = (t._version, t.data_ptr())

    def push(self) -> None:
        """Write the torch weights that changed since the last push into the framework model."""
        for i, key in self._trainable + self._frozen:
            t = getattr(self, key)
            stamp = (t._version, t.data_ptr())
            if self._pushed.get(key) != stamp:
                self._assign(i, t.detach().cpu().numpy())
                self._pushed[key] = stamp

    def pull(self) -> None:
        """Read the framework's non-trainable state (e.g. batch-norm statistics) into the buffers."""
        with torch.no_grad():
            for i, key in self._frozen:
                if not self._is_state(i):
                    continue
                t = getattr(self, key)
                t.copy_(torch.from_numpy(np.asarray(self._read(i))).to(t.device, t.dtype))
                self._pushed[key] = (t._version, t.data_ptr())

    # ---- forward -----------------------------------------------------------------------------
    def _run(self, x: Any, training: bool, record: bool) -> tuple[torch.Tensor, Any]:
        self.push()
        out, handle = self._forward(to_numpy(x), training, record)
        if training and self._frozen:
            self.pull()
        emb = self._to_torch(out)
        device = next((t.device for t in self._params()), emb.device)
        return emb.to(device), handle

    def forward(self, x: Any) -> torch.Tensor:
        """Embeddings of a batch: float tensor [B, D] on the parameters' device."""
        params = self._params()
        if torch.is_grad_enabled() and any(p.requires_grad for p in params):
            return _Bridge.apply(self, x, *params)
        return self._run(x, training=self.training, record=False)[0]

    def _finetuner_save(self, folder) -> None:
        """`finetuner.save` hook: save the framework model in its native format."""
        self.push()
        from . import require

        require(self.framework).save_native(self.model, folder)

    def extra_repr(self) -> str:
        n = sum(p.numel() for p in self._params())
        return f"framework={self.framework}, model={type(self.model).__name__}, trainable_weights={n:,}"
