"""Keras 3 models (TensorFlow backend) in finetuner: the training adapter, `display`,
`to_embedding_model`, and saving in Keras' native `.keras` format.

Imported only when a Keras model is used (`finetuner.models.backends.require("keras")`). Keras 3 on
the torch backend needs none of this: its models are torch modules and take the torch path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import keras
import tensorflow as tf
import torch

from ..tailor import show_layer_table
from ._common import check_tailor_args, embedding_reason, resolve_freeze
from .bridge import FrameworkModule

FILE = "model.keras"


def _check_backend() -> None:
    if keras.backend.backend() != "tensorflow":
        raise ValueError(f"model: a Keras model on the {keras.backend.backend()!r} backend; finetuner trains Keras "
                         "models on the 'tensorflow' backend, or on the 'torch' backend as torch modules "
                         "(set KERAS_BACKEND before importing keras)")


class KerasModule(FrameworkModule):
    """A Keras model as a torch module: forward runs `model(x, training=...)` under a
    `tf.GradientTape`; backward is `tape.gradient(embeddings, weights, output_gradients=dL/dE)`.

    Args:
        model: a `keras.Model` (or layer) mapping a batch to float [B, D], TensorFlow backend.
    """

    framework = "keras"

    def __init__(self, model: Any) -> None:
        _check_backend()
        self.__dict__["_vars"] = list(model.weights)
        self.__dict__["_train_ids"] = {id(v) for v in model.trainable_weights}
        # non-trainable variables of trainable layers (batch-norm moving statistics) change in a
        # training forward pass; the weights of frozen layers do not
        layers = [l for l in getattr(model, "_flatten_layers", lambda **k: [model])(include_self=True, recursive=True)
                  if not getattr(l, "_layers", None)]  # leaf layers
        self.__dict__["_state_ids"] = {id(v) for l in layers if l.trainable for v in l.non_trainable_weights}
        super().__init__(model)

    def _weights(self):
        return [(v.path, np.asarray(v.numpy()), id(v) in self._train_ids) for v in self._vars]

    def _assign(self, i: int, value: np.ndarray) -> None:
        self._vars[i].assign(value)

    def _read(self, i: int) -> np.ndarray:
        return self._vars[i].numpy()

    def _is_state(self, i: int) -> bool:
        return id(self._vars[i]) in self._state_ids

    def _forward(self, x: Any, training: bool, record: bool):
        x = tf.nest.map_structure(lambda a: tf.convert_to_tensor(a) if isinstance(a, np.ndarray) else a, x)
        if not record:
            return self.model(x, training=training), None
        tape = tf.GradientTape()
        with tape:
            out = self.model(x, training=training)
        return out, (tape, out)

    def _to_torch(self, out: Any) -> torch.Tensor:
        if not tf.is_tensor(out):
            raise ValueError(f"model: expected it to return a tensor [batch, dim], got {type(out).__name__}; "
                             "use finetuner.to_embedding_model")
        try:
            return torch.from_dlpack(tf.experimental.dlpack.to_dlpack(out))
        except Exception:  # noqa: BLE001 - dtypes / layouts DLPack does not take
            return torch.from_numpy(np.asarray(out.numpy()))

    def _framework_backward(self, handle, grad: np.ndarray, wanted: list[bool]):
        tape, out = handle
        chosen = [self._vars[i] for (i, _), w in zip(self._trainable, wanted) if w]
        grads = iter(tape.gradient(out, chosen, output_gradients=tf.convert_to_tensor(grad, dtype=out.dtype)))
        res = []
        for w in wanted:
            g = next(grads) if w else None
            res.append(None if g is None else tf.convert_to_tensor(g).numpy())
        return res


def adapt(model: Any) -> KerasModule:
    """Wrap a Keras model for training by finetuner (see `KerasModule`)."""
    return KerasModule(model)


# ---- save / load -------------------------------------------------------------------------------
def save_native(model: Any, folder: str | Path) -> None:
    """Write `model.keras` (Keras' own format: architecture, weights) and `finetuner.json` into `folder`."""
    model = getattr(model, "model", model) if isinstance(model, FrameworkModule) else model
    model.save(str(Path(folder) / FILE))
    meta = {"format_version": 1, "framework": "keras", "kind": "keras", "file": FILE,
            "class": f"{type(model).__module__}.{type(model).__qualname__}", "keras_version": keras.__version__}
    (Path(folder) / "finetuner.json").write_text(json.dumps(meta, indent=2))


def load_native(path: Path, meta: dict, model: Any = None) -> Any:
    """Load a folder written by `save_native`: the Keras model, or the weights into `model`."""
    loaded = keras.saving.load_model(str(Path(path) / meta.get("file", FILE)))
    if model is None:
        return loaded
    try:
        model.set_weights(loaded.get_weights())
    except ValueError as e:
        raise ValueError(f"model: the saved weights do not fit it ({e})") from e
    return model


# ---- display / to_embedding_model --------------------------------------------------------------
def _ensure_built(model: Any, input_size: Any, input: Any) -> None:
    """Build a model whose input shape is unknown yet, from `input_size` or a real batch."""
    if input is not None:
        model(tf.convert_to_tensor(np.asarray(input)), training=False)
    elif input_size is not None:
        size = tuple(int(s) for s in (input_size if isinstance(input_size, (tuple, list)) else (input_size,)))
        if not model.built or not getattr(model, "inputs", None):
            model.build((None,) + size)
            if not getattr(model, "inputs", None):
                model(tf.zeros((2,) + size), training=False)


def _graph(model: Any) -> bool:
    try:
        return bool(model.inputs)
    except (AttributeError, ValueError):
        return False


def _out_shape(layer: Any) -> tuple[tuple | None, bool]:
    try:
        out = layer.output
    except (AttributeError, ValueError):
        return None, True
    if isinstance(out, (list, tuple, dict)):
        return None, False
    return tuple(out.shape), "float" in str(out.dtype)


def _n_params(layer: Any, trainable: bool | None = None) -> int:
    ws = layer.weights if trainable is None else (layer.trainable_weights if trainable else layer.non_trainable_weights)
    return int(sum(np.prod(w.shape) for w in ws))


def display(model: Any, input_size: Any = None, input: Any = None, *, depth: int | None = None,
            show: bool = True) -> list[dict]:
    """`finetuner.display` for a Keras model: one row per top-level layer, in order (a nested
    model is one row). Same row keys as for torch models. See `finetuner.display`."""
    _ensure_built(model, input_size, input)
    rows = []
    for layer in model.layers:
        shape, floating = _out_shape(layer)
        total, train = _n_params(layer), _n_params(layer, True)
        reason = embedding_reason(shape, floating) if shape is not None else (
            None if floating else "it has several outputs")
        rows.append({"name": layer.name, "type": type(layer).__name__, "output_shape": shape, "params": total,
                     "trainable": "-" if total == 0 else "yes" if train == total else "frozen" if train == 0
                     else "partly", "embedding": None if shape is None and floating else reason is None,
                     "reason": reason or ""})
    if show:
        show_layer_table(f"{type(model).__name__} (Keras): {_n_params(model):,} parameters, "
                         f"{_n_params(model, True):,} trainable", rows)
    return rows


def _default_layer(model: Any) -> str | None:
    """The layer before the last Dense (the classifier), dropout skipped; None: the whole model."""
    layers = model.layers
    dense = [i for i, l in enumerate(layers) if isinstance(l, keras.layers.Dense)]
    if not dense:
        return None
    i = dense[-1] - 1
    while i >= 0 and isinstance(layers[i], (keras.layers.Dropout, keras.layers.InputLayer)):
        i -= 1
    return layers[i].name if i >= 0 else None


def _pool(x: Any, pooling: str, layer: str):
    rank = len(x.shape)
    if pooling == "none" or (pooling == "auto" and rank == 2) or rank == 2:
        if rank != 2:
            raise ValueError(f"pooling: 'none' needs a [B, D] output, but layer {layer!r} gives {tuple(x.shape)}")
        return x
    if pooling == "flatten":
        return keras.layers.Flatten()(x)
    if rank == 3:
        return (keras.layers.GlobalMaxPooling1D() if pooling == "max" else keras.layers.GlobalAveragePooling1D())(x)
    if rank == 4:
        return (keras.layers.GlobalMaxPooling2D() if pooling == "max" else keras.layers.GlobalAveragePooling2D())(x)
    return keras.layers.Flatten()(x)


def to_embedding_model(model: Any, layer_name: str | None = None, freeze: Any = False, output_dim: int | None = None,
                       projection_head: Any = None, *, input_size: Any = None, input: Any = None,
                       pooling: str = "auto", seed: int | None = None) -> Any:
    """`finetuner.to_embedding_model` for a Keras model (Sequential or functional).

    Returns a new functional `keras.Model` sharing the original's layers (and weights): input ->
    the layer `layer_name` (default: the one before the last Dense, dropout skipped) -> pooling
    ([B, T, C]: global average / max over T; [B, H, W, C]: over H, W; "flatten") -> optional
    projection head (a Dense of `output_dim`, or Dense-ReLU-Dense for "mlp", or your Keras
    layer). `freeze` sets `trainable = False` on layers (True: all but the head; an int N: the
    first N layers holding weights, the head counting as one; names / glob patterns). `seed`
    initialises a new head.

    Raises:
        ValueError: an unknown layer (with the model's layer names), a model whose graph is
            unknown (a subclassed model: give `input_size`, or it cannot be cut), a bad
            freeze / output_dim / pooling.
        TypeError: a bad projection_head.
    """
    check_tailor_args(layer_name, freeze, output_dim, projection_head, pooling, keras.layers.Layer)
    _ensure_built(model, input_size, input)
    if not _graph(model):
        raise ValueError("model: to_embedding_model needs a Keras Sequential or functional model with a known input "
                         "shape; pass input_size=(...) (one item's shape) or input=a batch")
    names = [l.name for l in model.layers]
    if layer_name is not None and layer_name not in names:
        raise ValueError(f"layer_name: {type(model).__name__} has no layer named {layer_name!r}; its layers: {names} "
                         "(finetuner.display(model) lists them)")
    layer_name = layer_name if layer_name is not None else _default_layer(model)
    if layer_name is not None:
        shape, floating = _out_shape(model.get_layer(layer_name))
        why = "it has several outputs" if shape is None else embedding_reason(shape, floating)
        if why:
            raise ValueError(f"layer_name: the output of {layer_name!r} cannot be an embedding: {why}")
        cut = model.get_layer(layer_name).output
        kept = names[: names.index(layer_name) + 1]
    else:
        cut, kept = model.outputs[0], names
    feats = _pool(cut, pooling, layer_name or model.name)
    in_dim = int(feats.shape[-1])
    init = keras.initializers.GlorotUniform(seed=seed)
    head = None
    if isinstance(projection_head, keras.layers.Layer):
        head = projection_head
    elif output_dim is not None:
        head = (keras.layers.Dense(output_dim, kernel_initializer=init, name="projection_head")
                if (projection_head or "linear") == "linear" else
                keras.Sequential([keras.layers.Dense(in_dim, activation="relu", kernel_initializer=init),
                                  keras.layers.Dense(output_dim, kernel_initializer=init)], name="projection_head"))
    out = feats
    if head is not None:
        try:
            out = head(feats)
        except Exception as e:
            raise ValueError(f"projection_head: it must take the layer's pooled output [B, {in_dim}], but it failed "
                             f"on it: {type(e).__name__}: {e}") from e
        if len(out.shape) != 2 or (output_dim is not None and out.shape[-1] != output_dim):
            raise ValueError(f"projection_head: expected [B, {output_dim or 'D'}] from it, got {tuple(out.shape)}")
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    emb = keras.Model(inputs, out, name=f"{model.name}_embedding")
    units = [n for n in kept if model.get_layer(n).weights]
    frozen, head_frozen = resolve_freeze(freeze, units, kept, head is not None)
    for n in frozen:
        model.get_layer(n).trainable = False
    if head is not None and head_frozen:
        head.trainable = False
    return emb
