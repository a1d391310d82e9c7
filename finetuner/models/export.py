"""`export`: a tuned model as an ONNX graph that serves without torch, checked with onnxruntime,
optionally quantised to int8.

The exported folder is the saved model (`finetuner.save`: its layout, tokenizer and model card)
plus `onnx/`:

- `onnx/model.onnx`: the float32 graph, batch and sequence axes dynamic;
- `onnx/model_qint8.onnx` with `quantize="int8"`: int8 weights with one scale per output
  channel, activations quantised on the fly (onnxruntime's dynamic quantisation; Jacob et al.,
  2018, "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only
  Inference");
- `onnx/export.json`: the inputs, outputs, opset and the measured max |ONNX - torch|.

What each kind of model becomes:

| model | inputs (int64 [batch, sequence]) | outputs |
|---|---|---|
| text encoder | input_ids, attention_mask (, token_type_ids) | last_hidden_state float [batch, sequence, H]; sentence_embedding float [batch, D] (pooled, normalised as the model does) |
| text classifier | the tokenizer's inputs, as above | logits float [batch, C] |
| torch module | input: the example's dtype and shape, axis 0 dynamic (and axis 1 for 2-D integer inputs: token ids) | embedding float [batch, D] |

A text encoder's folder is in the sentence-transformers layout with `onnx/model.onnx`, where
`SentenceTransformer(folder, backend="onnx")` looks for it (it reads `last_hidden_state` and
pools in torch; that backend needs `optimum-onnx`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..io import META
from .classifier import TextClassifier
from .saving import check_target, load, save
from .text import TextEncoder, is_sentence_transformer

logger = logging.getLogger(__name__)

FORMATS = ("onnx",)
QUANTIZATIONS = (None, "int8")
ONNX_DIR, ONNX_FILE, INT8_FILE = "onnx", "model.onnx", "model_qint8.onnx"
EXAMPLE_TEXTS = ("finetuner exported this model to ONNX.", "A second, longer example so that the two texts in "
                 "the example batch have different lengths and padding is traced too.")


def export(model: Any, out: str | os.PathLike, format: str = "onnx", *, quantize: str | None = None,
           example: Any = None, opset: int = 17, atol: float = 1e-4, overwrite: bool = False,
           trust_pickle: bool = False) -> Path:
    """Export a tuned model to ONNX, check it with onnxruntime, and optionally quantise it to int8.

    Args:
        model: a text encoder (`TextEncoder` or `SentenceTransformer`), a `TextClassifier`, a
            torch module mapping a batch to [B, D], a `FitResult`, or the path of a folder
            saved by `finetuner.save` (or a Hugging Face / sentence-transformers model folder).
        out: the folder to write: the saved model plus `onnx/` (see this module's doc).
        format: "onnx" (the only one so far).
        quantize: None, or "int8" to also write `onnx/model_qint8.onnx` (dynamic int8
            quantisation of the weights of MatMul / Gemm and similar nodes).
        example: one batch the graph is traced and checked with: a list of strings for text
            models (default `EXAMPLE_TEXTS`); for a torch module, a tensor / numpy array of
            inputs as the module takes them (required).
        opset: the ONNX opset version (14 to 20).
        atol: the largest |ONNX output - torch output| accepted in float32 on `example`.
        overwrite: replace `out` even when it holds something other than a finetuner model.
        trust_pickle: passed to `finetuner.load` when `model` is a path.

    Returns:
        The path of the ONNX file to serve: `onnx/model_qint8.onnx` with quantize="int8",
        else `onnx/model.onnx`.

    Raises:
        ValueError: an unknown format / quantize / opset, a module without `example`, weights
            that are not float32, or an ONNX graph whose outputs differ from torch's by more
            than `atol` (the message gives the difference).
        TypeError: a model kind that cannot be exported (Keras / Paddle models, a callable).
        FileExistsError: `out` holds something else and `overwrite` is False.
        ImportError: onnx or onnxruntime is missing (`pip install onnx onnxruntime`).
    """
    if format not in FORMATS:
        raise ValueError(f"format: expected one of {FORMATS}, got {format!r}")
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize: expected one of {QUANTIZATIONS}, got {quantize!r}")
    if isinstance(opset, bool) or not isinstance(opset, int) or not 14 <= opset <= 20:
        raise ValueError(f"opset: expected an int from 14 to 20, got {opset!r}")
    _require_onnx()
    source = Path(model) if isinstance(model, (str, os.PathLike)) else None
    model = open_model(model, trust_pickle=trust_pickle) if source is not None else _unwrap(model)
    out = Path(out)
    same = source is not None and out.exists() and out.resolve() == source.resolve() and (source / META).is_file()
    if not same:
        check_target(out, overwrite)  # before any work: never replace what finetuner did not write
    params = list(model.parameters()) if isinstance(model, torch.nn.Module) else []
    was_training, device = getattr(model, "training", False), params[0].device if params else None
    tmp = Path(tempfile.mkdtemp(prefix=".onnx-", dir=out.parent if out.parent.exists() else None))
    try:
        info = _write_onnx(_graph_for(model, example), tmp, opset, atol, quantize)
        if not same:
            save(model, out, overwrite=overwrite)
        shutil.rmtree(out / ONNX_DIR, ignore_errors=True)
        shutil.move(str(tmp), str(out / ONNX_DIR))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        model.train(was_training)  # the caller's model as it was: mode and device
        if device is not None:
            model.to(device)
    logger.info("export: %s (max |onnx - torch| = %.2e)", out / ONNX_DIR, info["max_abs_diff"])
    return out / ONNX_DIR / (INT8_FILE if quantize == "int8" else ONNX_FILE)


def open_model(spec: str | os.PathLike, trust_pickle: bool = False) -> Any:
    """The model in a folder: one saved by `finetuner.save` (`finetuner.load`), else a Hugging
    Face sequence-classification folder (`TextClassifier`) or a text model folder / hub id
    (`TextEncoder`, sentence-transformers layout or a plain encoder with mean pooling).

    Raises:
        FileNotFoundError: a path that does not exist and cannot be a hub id.
        ValueError: a folder that is none of these (the message says what it holds).
    """
    path = Path(spec).expanduser()
    if (path / META).is_file():
        return load(path, trust_pickle=trust_pickle)
    if path.is_dir():
        config = path / "config.json"
        archs = (json.loads(config.read_text()).get("architectures") or []) if config.is_file() else []
        if any(str(a).endswith("ForSequenceClassification") for a in archs):
            return TextClassifier.from_pretrained(path)
        if config.is_file() or (path / "modules.json").is_file():
            return TextEncoder.from_pretrained(path)
        held = sorted(p.name for p in path.iterdir())[:5]
        raise ValueError(f"model: the folder {str(spec)!r} is not a finetuner, Hugging Face or sentence-transformers "
                         f"model (no {META}, config.json or modules.json; it holds {held})")
    if path.exists() or str(spec).startswith((".", "/", "~")) or str(spec).count("/") > 1:
        raise FileNotFoundError(f"model: {str(spec)!r} is not a model folder (no such folder)")
    return TextEncoder.from_pretrained(str(spec))  # a hub id


# ---- the graph of each kind -----------------------------------------------------------------
class _Graph:
    """What to trace: the module, its example inputs by name, the output names, the dynamic axes,
    and the torch reference outputs."""

    def __init__(self, module, inputs: dict, outputs: Sequence[str], axes: dict, kind: str) -> None:
        self.module, self.inputs, self.outputs, self.axes, self.kind = module, inputs, list(outputs), axes, kind
        with torch.no_grad():
            ref = module(*inputs.values())
        ref = ref if isinstance(ref, tuple) else (ref,)
        self.reference = [r.detach().float().cpu().numpy() for r in ref]


class _TextEncoderGraph(torch.nn.Module):
    def __init__(self, st, names: Sequence[str]) -> None:
        super().__init__()
        self.st, self.names = st, list(names)

    def forward(self, *tensors):
        out = self.st(dict(zip(self.names, tensors)))
        return out["token_embeddings"], out["sentence_embedding"]


class _ClassifierGraph(torch.nn.Module):
    def __init__(self, hf, names: Sequence[str]) -> None:
        super().__init__()
        self.hf, self.names = hf, list(names)

    def forward(self, *tensors):
        return self.hf(**dict(zip(self.names, tensors))).logits


def _unwrap(model: Any) -> Any:
    if is_sentence_transformer(model):
        return TextEncoder.from_sentence_transformer(model)
    if not isinstance(model, torch.nn.Module) and isinstance(getattr(model, "model", None), torch.nn.Module):
        return model.model  # a FitResult
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model: expected a torch module, a text encoder or classifier, a fit result or a saved "
                        f"folder, got {type(model).__name__} (Keras models: tf2onnx; Paddle: paddle2onnx)")
    return model


def _graph_for(model: torch.nn.Module, example: Any) -> _Graph:
    """The traced module of `model` in eval mode on the CPU, with its example batch."""
    bad = sorted({str(p.dtype) for p in model.parameters() if p.dtype != torch.float32})
    if bad:
        raise ValueError(f"model: export expects float32 weights, got {bad}; call model.float() first")
    model.eval().to("cpu")
    if isinstance(model, (TextEncoder, TextClassifier)):
        texts = list(EXAMPLE_TEXTS if example is None else example)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise ValueError(f"example: expected a list of strings for a text model, got {example!r:.80}")
        if isinstance(model, TextEncoder):
            features = model.pad(model.tokenize_ids(texts))
            module, outputs = _TextEncoderGraph(model.sentence_transformer, list(features)), ["last_hidden_state",
                                                                                              "sentence_embedding"]
        else:
            features = dict(model.tokenizer(texts, padding=True, truncation=True, max_length=model.max_length,
                                            return_tensors="pt"))
            module, outputs = _ClassifierGraph(model.model, list(features)), ["logits"]
        axes = {name: {0: "batch", 1: "sequence"} for name in features}
        axes.update({"last_hidden_state": {0: "batch", 1: "sequence"}, "sentence_embedding": {0: "batch"},
                     "logits": {0: "batch"}})
        kind = "text-encoder" if isinstance(model, TextEncoder) else "text-classifier"
        return _Graph(module, {k: v.to(torch.int64) for k, v in features.items()}, outputs,
                      {k: v for k, v in axes.items() if k in features or k in outputs}, kind)
    if example is None:
        raise ValueError("example: a torch module needs an example batch (a tensor or numpy array shaped as the "
                         "model's input, e.g. example=X[:2]) to be traced")
    x = torch.as_tensor(np.asarray(example)) if not isinstance(example, torch.Tensor) else example.detach().cpu()
    if x.dtype == torch.float64:
        x = x.float()
    axes = {0: "batch", 1: "sequence"} if x.ndim == 2 and not x.is_floating_point() else {0: "batch"}
    graph = _Graph(model, {"input": x}, ["embedding"], {"input": axes, "embedding": {0: "batch"}}, "module")
    if len(graph.reference) != 1 or graph.reference[0].ndim != 2:
        raise ValueError(f"model: export expects a module returning one float tensor [B, D], got "
                         f"{[r.shape for r in graph.reference]}")
    return graph


# ---- writing and checking -------------------------------------------------------------------
def _write_onnx(graph: _Graph, folder: Path, opset: int, atol: float, quantize: str | None) -> dict:
    """Trace `graph` to folder/model.onnx, compare onnxruntime with torch, quantise; write export.json."""
    path = folder / ONNX_FILE
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on Python control flow it turns into constants
        torch.onnx.export(graph.module, tuple(graph.inputs.values()), str(path), dynamo=False,
                          input_names=list(graph.inputs), output_names=graph.outputs, dynamic_axes=graph.axes,
                          opset_version=opset, do_constant_folding=True)
    outputs = run_onnx(path, {k: v.numpy() for k, v in graph.inputs.items()})
    diff = max(float(np.abs(o - r).max()) for o, r in zip(outputs, graph.reference))
    if not diff <= atol:
        raise ValueError(f"export: the ONNX graph differs from the torch model by up to {diff:.2e} on the example "
                         f"batch (atol={atol}); the model may hold control flow that depends on its input")
    files = {"fp32": ONNX_FILE}
    if quantize == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        root, quiet = logging.getLogger(), _DropPreprocessingNote()
        root.addFilter(quiet)  # onnxruntime logs a note on its optional pre-processing to the root logger
        try:  # per-channel weight scales: cosine to fp32 0.994 on MiniLM vs 0.970 per tensor (benchmarks/export_int8.py)
            quantize_dynamic(str(path), str(folder / INT8_FILE), weight_type=QuantType.QInt8, per_channel=True)
        finally:
            root.removeFilter(quiet)
        files["int8"] = INT8_FILE
    info = {"format": "onnx", "opset": opset, "kind": graph.kind, "files": files,
            "inputs": {k: {"dtype": str(v.dtype).replace("torch.", ""), "axes": graph.axes.get(k, {})}
                       for k, v in graph.inputs.items()},
            "outputs": {k: {"axes": graph.axes.get(k, {})} for k in graph.outputs},
            "max_abs_diff": diff, "torch": torch.__version__}
    (folder / "export.json").write_text(json.dumps(info, indent=2))
    return info


def run_onnx(path: str | os.PathLike, inputs: dict, outputs: Sequence[str] | None = None) -> list[np.ndarray]:
    """Run an ONNX file with onnxruntime on the CPU.

    Args:
        path: the .onnx file. inputs: name -> numpy array (int64 token ids, float32 features).
        outputs: the output names to return (default: all, in the graph's order).

    Returns:
        The outputs as numpy arrays.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return session.run(list(outputs) if outputs else None, {k: v for k, v in inputs.items() if k in names})


class _DropPreprocessingNote(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        raise ImportError(f"export: needs onnx and onnxruntime ({e}); pip install onnx onnxruntime") from e
