"""Keras and Paddle models in `fit`, `display`, `to_embedding_model`, `save` and `load`.

The losses, miners, distances, samplers, metrics, optimizers and the training loop exist once,
in PyTorch. A Keras or Paddle model takes part through `FrameworkModule` (`bridge.py`): a torch
module whose forward pass runs the framework model and hands its embeddings to torch, and whose
backward pass feeds d loss / d embeddings into the framework's own backward (TensorFlow
`tape.gradient(..., output_gradients=...)`, Paddle `backward(grad_tensor=...)`) to get the
weights' gradients. The weights' master copy lives in torch parameters that the torch optimizer
steps; they are written into the framework's variables before each forward pass.

Importing finetuner never imports TensorFlow, Keras or Paddle: `detect_framework` looks at the
model's class names only, and each framework is imported by its own module when a model of it
is used.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

# framework -> (module to import, pip extra)
EXTRAS = {"keras": ("keras", "finetuner[keras]"), "paddle": ("paddle", "finetuner[paddle]")}


def detect_framework(model: Any) -> str | None:
    """The deep-learning framework a model object belongs to, without importing any framework.

    Returns:
        "torch" for a `torch.nn.Module` (Keras 3 models on the torch backend are torch modules,
        so they are "torch"), "keras" for a Keras / `tf.keras` model or layer (TensorFlow
        backend), "paddle" for a `paddle.nn.Layer`, None for anything else (a path, a tensor,
        a scikit-learn estimator, ...).
    """
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        return "torch"
    if _is_layer(type(model), ("paddle.",)):
        return "paddle"
    if _is_layer(type(model), ("keras.", "tf_keras.", "tensorflow.")):
        return "keras"
    return None


def _is_layer(cls: type, prefixes: tuple[str, ...]) -> bool:
    """True for a subclass of a class named `Layer` from a module under one of `prefixes`
    (`keras.layers.Layer`, `paddle.nn.Layer`): models and layers, not tensors or optimizers."""
    return any(c.__name__ == "Layer" and (getattr(c, "__module__", "") or "").startswith(prefixes)
               for c in cls.__mro__)


def require(framework: str):
    """Import the backend module for `framework` ("keras" or "paddle") and return it.

    Raises:
        ImportError: the framework is not installed; the message names the extra to install
            (`pip install 'finetuner[keras]'`, `'finetuner[paddle]'`).
        RuntimeError: Paddle asked for after TensorFlow was imported in this process (the two
            native libraries crash the process in that order; import paddle first).
    """
    if framework not in EXTRAS:
        raise ValueError(f"framework: expected one of {sorted(EXTRAS)}, got {framework!r}")
    module, extra = EXTRAS[framework]
    if framework == "paddle" and "paddle" not in sys.modules and "tensorflow" in sys.modules:
        raise RuntimeError("paddle: importing Paddle after TensorFlow crashes the process (paddlepaddle 3.3 / "
                           "tensorflow 2.21 native libraries); import paddle before tensorflow, or use "
                           "separate processes")
    try:
        importlib.import_module(module)
        if framework == "keras":
            importlib.import_module("tensorflow")
    except ImportError as e:
        raise ImportError(f"{framework} models need the {framework} extra: pip install '{extra}' "
                          f"({type(e).__name__}: {e})") from e
    return importlib.import_module(f"finetuner.models.backends.{framework}")


def backend_for(model: Any):
    """The backend module (`finetuner.models.backends.keras` / `.paddle`) for a Keras or Paddle model,
    or None for torch models and anything else."""
    framework = detect_framework(model)
    return require(framework) if framework in EXTRAS else None


def adapt(model: Any):
    """Wrap a Keras or Paddle model as a torch module (`FrameworkModule`) that trains it.

    Raises:
        TypeError: `model` is not a Keras or Paddle model.
    """
    backend = backend_for(model)
    if backend is None:
        raise TypeError(f"model: expected a Keras or Paddle model, got {type(model).__name__}")
    return backend.adapt(model)
