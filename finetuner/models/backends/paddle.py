"""Paddle models (`paddle.nn.Layer`, Paddle 2.x / 3.x) in finetuner: the training adapter,
`display`, `to_embedding_model`, and saving in Paddle's native `.pdparams` format.

Imported only when a Paddle model is used (`finetuner.models.backends.require("paddle")`).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import paddle
import torch

from ..tailor import show_layer_table
from ._common import check_tailor_args, embedding_reason, resolve_freeze
from .bridge import FrameworkModule

PARAMS, PICKLE = "model.pdparams", "model.pkl"


def _to_paddle(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return paddle.to_tensor(x)
    if isinstance(x, dict):
        return {k: _to_paddle(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_to_paddle(v) for v in x)
    return x


class PaddleModule(FrameworkModule):
    """A Paddle layer as a torch module: forward runs `model(x)` (train / eval mode follows the
    torch module's); backward is `embeddings.backward(grad_tensor=dL/dE)` and reads each
    parameter's `.grad`.

    Args:
        model: a `paddle.nn.Layer` mapping a batch to float [B, D].
    """

    framework = "paddle"

    def __init__(self, model: Any) -> None:
        tensors = [(n, p, not p.stop_gradient) for n, p in model.named_parameters()]
        tensors += [(n, b, False) for n, b in model.named_buffers() if b is not None]
        self.__dict__["_tensors"] = tensors
        super().__init__(model)

    def _weights(self):
        return [(n, t.numpy(), trainable) for n, t, trainable in self._tensors]

    def _assign(self, i: int, value: np.ndarray) -> None:
        self._tensors[i][1].set_value(value)

    def _read(self, i: int) -> np.ndarray:
        return self._tensors[i][1].numpy()

    def train(self, mode: bool = True) -> "PaddleModule":
        """Set torch's and Paddle's train / eval mode (dropout, batch norm)."""
        super().train(mode)
        self.model.train() if mode else self.model.eval()
        return self

    def _forward(self, x: Any, training: bool, record: bool):
        if self.model.training != training:
            self.model.train() if training else self.model.eval()
        x = _to_paddle(x)
        if not record:
            with paddle.no_grad():
                return self.model(x), None
        with paddle.set_grad_enabled(True):
            out = self.model(x)
        return out, out

    def _to_torch(self, out: Any) -> torch.Tensor:
        if not isinstance(out, paddle.Tensor):
            raise ValueError(f"model: expected it to return a tensor [batch, dim], got {type(out).__name__}; "
                             "use finetuner.to_embedding_model")
        try:
            return torch.from_dlpack(paddle.utils.dlpack.to_dlpack(out.detach()))
        except Exception:  # noqa: BLE001 - dtypes / layouts DLPack does not take
            return torch.from_numpy(out.numpy())

    def _framework_backward(self, out, grad: np.ndarray, wanted: list[bool]):
        out.backward(grad_tensor=paddle.to_tensor(grad, dtype=out.dtype))
        res = []
        for (i, _), w in zip(self._trainable, wanted):
            g = self._tensors[i][1].grad
            res.append(g.numpy() if (w and g is not None) else None)
        self.model.clear_gradients()
        return res


def adapt(model: Any) -> PaddleModule:
    """Wrap a Paddle layer for training by finetuner (see `PaddleModule`)."""
    return PaddleModule(model)


# ---- save / load -------------------------------------------------------------------------------
def save_native(model: Any, folder: str | Path) -> None:
    """Write `model.pdparams` (`paddle.save` of the state dict: Paddle's own weights format),
    `model.pkl` (the whole layer, pickled, so `load` needs no code when its class is importable)
    and `finetuner.json` into `folder`."""
    model = getattr(model, "model", model) if isinstance(model, FrameworkModule) else model
    folder = Path(folder)
    paddle.save(model.state_dict(), str(folder / PARAMS))
    meta = {"format_version": 1, "framework": "paddle", "kind": "paddle", "file": PARAMS, "pickled": True,
            "class": f"{type(model).__module__}.{type(model).__qualname__}", "paddle_version": paddle.__version__}
    try:
        (folder / PICKLE).write_bytes(pickle.dumps(model))
    except Exception:  # noqa: BLE001 - e.g. a class defined inside a function
        meta["pickled"] = False
    (folder / "finetuner.json").write_text(json.dumps(meta, indent=2))


def load_native(path: Path, meta: dict, model: Any = None, *, trust_pickle: bool = False) -> Any:
    """Load a folder written by `save_native`: the weights into `model`, or, with
    `trust_pickle=True`, the pickled layer (`model.pkl`) with its weights.

    Unpickling runs whatever code the file names, so `model.pkl` is read only when the caller
    says it trusts the folder; `model.pdparams` is read with `paddle.load`.

    Raises:
        ValueError: no `model` and either weights only were saved or `trust_pickle` is False;
            the weights do not fit `model`.
    """
    path = Path(path)
    if model is None:
        if not meta.get("pickled"):
            raise ValueError(f"path: {str(path)!r} holds Paddle weights only; pass model=YourLayer() to load them into")
        if not trust_pickle:
            raise ValueError(f"path: {str(path)!r} holds the layer as a pickle ({PICKLE}); unpickling it would run "
                             "code named in the file. Pass model=YourLayer() to load only its weights (safe), or "
                             "trust_pickle=True (--trust-pickle) if you trust where the folder came from")
        model = pickle.loads((path / PICKLE).read_bytes())
    state = load_params(path / meta.get("file", PARAMS))
    missing, unexpected = model.set_state_dict(state) or ([], [])
    if missing or unexpected:
        raise ValueError(f"model: the saved weights do not fit it (missing {missing[:5]}, unexpected {unexpected[:5]})")
    model.eval()
    return model


class _ArraysOnly(pickle.Unpickler):
    """An unpickler that rebuilds numpy arrays and plain containers and refuses every other
    global, so reading a `.pdparams` file runs no code named in it."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.multiarray", "_reconstruct"), ("collections", "OrderedDict")}

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED or (module == "numpy.dtypes" and name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not a numpy array part; refusing to load it")


def load_params(file: str | Path) -> dict:
    """A `.pdparams` state dict written by `paddle.save`, read without running code: numpy arrays
    only (what `paddle.save` writes for a state dict), as Paddle tensors.

    Raises:
        ValueError: the file names anything else (a crafted or foreign pickle).
    """
    with open(file, "rb") as f:
        try:
            state = _ArraysOnly(f).load()
        except pickle.UnpicklingError as e:
            raise ValueError(f"path: {str(file)!r} is not a plain Paddle state dict ({e})") from e
    if not isinstance(state, dict):
        raise ValueError(f"path: {str(file)!r} is not a Paddle state dict (a {type(state).__name__})")
    state.pop("StructuredToParameterName@@", None)
    return {k: paddle.to_tensor(v) if isinstance(v, np.ndarray) else v for k, v in state.items()}


# ---- display / to_embedding_model --------------------------------------------------------------
class _Cut(Exception):
    def __init__(self, out):
        self.out = out


class PaddleEmbeddingModel(paddle.nn.Layer):
    """A Paddle layer cut after `layer_name`, pooled to [B, D], with an optional projection head.

    Args:
        backbone: the model (its layers after `layer_name` do not run).
        layer_name: dotted name of the embedding layer, or None for the backbone's output.
        pooling: see `finetuner.to_embedding_model`.
        head: a layer [B, D] -> [B, D'], or None.
    """

    def __init__(self, backbone, layer_name: str | None = None, pooling: str = "auto", head=None) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head
        self.layer_name, self.pooling = layer_name, pooling

    def train(self):
        """Train mode, except the layers whose weights are all frozen (`eval_layers`): their
        batch-norm statistics and dropout stay as in eval mode, as for torch models."""
        super().train()
        layers = dict(self.backbone.named_sublayers())
        for name in getattr(self, "eval_layers", ()):
            layers[name].eval()
        return self

    def features(self, x):
        """The pooled output of the embedding layer: [B, D]."""
        if self.layer_name is None:
            return _pool(self.backbone(x), self.pooling)
        layer = dict(self.backbone.named_sublayers())[self.layer_name]

        def stop(_layer, _inputs, out):
            raise _Cut(out)

        handle = layer.register_forward_post_hook(stop)
        try:
            out = self.backbone(x)
        except _Cut as c:
            out = c.out
        finally:
            handle.remove()
        return _pool(out, self.pooling)

    def forward(self, x):
        feats = self.features(x)
        return self.head(feats) if self.head is not None else feats


def _pool(t, pooling: str):
    if pooling == "none" or t.ndim == 2:
        return t
    if pooling == "flatten":
        return t.flatten(1)
    if t.ndim == 3:  # [B, T, H]
        return t.max(1) if pooling == "max" else t.mean(1)
    dims = list(range(2, t.ndim))  # [B, C, H, W]
    return t.amax(dims) if pooling == "max" else t.mean(dims)


def _guess_input(model, input_size, input):
    if input is not None:
        return _to_paddle(np.asarray(input)) if not isinstance(input, paddle.Tensor) else input
    if input_size is not None:
        size = tuple(int(s) for s in (input_size if isinstance(input_size, (tuple, list)) else (input_size,)))
        return paddle.rand((2,) + size)
    for _, layer in model.named_sublayers():
        if isinstance(layer, paddle.nn.Linear):
            return paddle.rand((2, layer.weight.shape[0]))
        if layer.parameters():
            return None
    return None


def _trace(model, x) -> dict:
    """Output shape, dtype and forward order of each sublayer on batch `x` (forward hooks)."""
    records, starts, handles = {}, {}, []
    for name, layer in model.named_sublayers():
        def pre(_l, _i, name=name):
            starts.setdefault(name, len(starts))

        def post(_l, _i, out, name=name):
            if name not in records:
                records[name] = (starts[name], tuple(out.shape) if isinstance(out, paddle.Tensor) else None,
                                 isinstance(out, paddle.Tensor) and "float" in str(out.dtype))
        handles += [layer.register_forward_pre_hook(pre), layer.register_forward_post_hook(post)]
    was = model.training
    model.eval()
    try:
        with paddle.no_grad():
            model(x)
    except Exception as e:
        raise ValueError(f"input_size: the model cannot run on a batch of shape {tuple(x.shape)}: "
                         f"{type(e).__name__}: {e}") from e
    finally:
        for h in handles:
            h.remove()
        model.train() if was else model.eval()
    return records


def _n(layer, trainable: bool | None = None) -> int:
    return int(sum(np.prod(p.shape) for p in layer.parameters()
                   if trainable is None or (not p.stop_gradient) == trainable))


def display(model: Any, input_size: Any = None, input: Any = None, *, depth: int | None = None,
            show: bool = True) -> list[dict]:
    """`finetuner.display` for a Paddle layer: every named sublayer (dotted names, nested ones
    included), in forward order when the model could run. Same row keys as for torch models."""
    x = _guess_input(model, input_size, input)
    trace = _trace(model, x) if x is not None else None
    rows = []
    for name, layer in model.named_sublayers():
        if depth is not None and name.count(".") > depth:
            continue
        rec = trace.get(name) if trace is not None else None
        shape = (None,) + rec[1][1:] if rec is not None and rec[1] is not None else None
        reason = embedding_reason(shape, rec[2]) if rec is not None else ("it did not run" if trace else None)
        total, train = _n(layer), _n(layer, True)
        rows.append({"name": name, "type": type(layer).__name__, "output_shape": shape, "params": total,
                     "trainable": "-" if total == 0 else "yes" if train == total else "frozen" if train == 0
                     else "partly", "embedding": None if trace is None else reason is None, "reason": reason or "",
                     "_order": rec[0] if rec is not None else 1 << 30})
    rows.sort(key=lambda r: r.pop("_order"))
    if show:
        show_layer_table(f"{type(model).__name__} (Paddle): {_n(model):,} parameters, {_n(model, True):,} trainable",
                         rows)
    return rows


def _default_layer(model, trace) -> str | None:
    order = sorted((r[0], n) for n, r in trace.items())
    layers = dict(model.named_sublayers())
    linear = [i for i, (_, n) in enumerate(order) if isinstance(layers[n], paddle.nn.Linear)]
    if not linear:
        return None
    i = linear[-1] - 1
    while i >= 0 and (isinstance(layers[order[i][1]], paddle.nn.Dropout) or not trace[order[i][1]][2]
                      or layers[order[i][1]].sublayers()):
        i -= 1
    return order[i][1] if i >= 0 else None


def to_embedding_model(model: Any, layer_name: str | None = None, freeze: Any = False, output_dim: int | None = None,
                       projection_head: Any = None, *, input_size: Any = None, input: Any = None,
                       pooling: str = "auto", seed: int | None = None) -> Any:
    """`finetuner.to_embedding_model` for a Paddle layer.

    Returns a `PaddleEmbeddingModel`: the model's forward pass stops after `layer_name` (default:
    the layer before the last Linear, dropout skipped), the output is pooled ([B, T, H]: mean /
    max over T; [B, C, H, W]: over H, W; "flatten"), then an optional projection head (a Linear
    of `output_dim`, Linear-ReLU-Linear for "mlp", or your layer). `freeze` sets
    `stop_gradient = True` on the named layers' parameters (True: all but the head; an int N:
    the first N layers holding parameters, in forward order, the head counting as one; names /
    glob patterns). `seed` initialises a new head.

    Raises:
        ValueError: an unknown layer (with the model's layer names), a layer whose output cannot
            be an embedding, an input the model cannot run on, a bad freeze / output_dim / pooling.
        TypeError: a bad projection_head.
    """
    check_tailor_args(layer_name, freeze, output_dim, projection_head, pooling, paddle.nn.Layer)
    layers = dict(model.named_sublayers())
    if layer_name is not None and layer_name not in layers:
        raise ValueError(f"layer_name: {type(model).__name__} has no layer named {layer_name!r}; its layers: "
                         f"{list(layers)[:30]} (finetuner.display(model) lists them)")
    x = _guess_input(model, input_size, input)
    if x is None:
        raise ValueError("input_size: cannot guess the model's input; pass input_size=(...) or input=a batch")
    trace = _trace(model, x)
    layer_name = layer_name if layer_name is not None else _default_layer(model, trace)
    if layer_name is not None:
        rec = trace.get(layer_name)
        why = "it does not run in the forward pass" if rec is None else embedding_reason(rec[1], rec[2])
        if why:
            raise ValueError(f"layer_name: the output of {layer_name!r} cannot be an embedding: {why}")
    emb = PaddleEmbeddingModel(model, layer_name, pooling)
    was = model.training
    emb.eval()
    with paddle.no_grad():
        feats = emb.features(x)
    if feats.ndim != 2:
        raise ValueError(f"pooling: {pooling!r} gives shape {tuple(feats.shape)}, not [batch, dim]")
    in_dim = int(feats.shape[1])
    head = None
    if isinstance(projection_head, paddle.nn.Layer):
        head = projection_head
    elif output_dim is not None:
        if seed is not None:
            paddle.seed(seed)
        head = (paddle.nn.Linear(in_dim, output_dim) if (projection_head or "linear") == "linear" else
                paddle.nn.Sequential(paddle.nn.Linear(in_dim, in_dim), paddle.nn.ReLU(),
                                     paddle.nn.Linear(in_dim, output_dim)))
    if head is not None:
        with paddle.no_grad():
            try:
                out = head(feats)
            except Exception as e:
                raise ValueError(f"projection_head: it must take the layer's pooled output [B, {in_dim}], but it "
                                 f"failed on it: {type(e).__name__}: {e}") from e
        if out.ndim != 2 or (output_dim is not None and out.shape[1] != output_dim):
            raise ValueError(f"projection_head: expected [B, {output_dim or 'D'}] from it, got {tuple(out.shape)}")
        emb.head = head
    order = [n for _, n in sorted((r[0], n) for n, r in trace.items())]
    if layer_name is not None:
        order = order[: order.index(layer_name) + 1] if layer_name in order else order
    units = [n for n in order if layers[n].parameters(include_sublayers=False)]
    frozen, head_frozen = resolve_freeze(freeze, units, list(layers), head is not None)
    for n in frozen:
        for p in layers[n].parameters():
            p.stop_gradient = True
    if head is not None and head_frozen:
        for p in head.parameters():
            p.stop_gradient = True
    emb.eval_layers = [n for n, layer in layers.items()
                       if layer.parameters() and all(p.stop_gradient for p in layer.parameters())]
    emb.train() if was else emb.eval()
    return emb
