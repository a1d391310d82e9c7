"""The model card of a saved folder: README.md in the Hugging Face format (YAML front matter
between `---` lines, then Markdown), written on every `finetuner.save`.

Front matter: base_model (when it is a hub id), library_name ("sentence-transformers" for text
encoders, "transformers" for classifiers, "finetuner" for other modules), pipeline_tag, tags,
datasets (when the run names them) and metrics (the names of the eval metrics). The body says
what the model is and how to load it; after `finetuner.fit` (`recipes.finish` passes the run's
`FitResult`) also the training data, the settings, the metrics before and after, the time and
the hardware. A card never breaks a save: a failure to write it is logged and the save goes on.

Format: https://huggingface.co/docs/hub/model-cards (front matter keys as in
`huggingface_hub.ModelCardData`).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import platform
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CARD = "README.md"
# what each kind of model is on the Hub: library_name, pipeline_tag, tags
KINDS = {
    "sentence-transformers": ("sentence-transformers", "sentence-similarity",
                              ["sentence-transformers", "sentence-similarity", "feature-extraction", "finetuner"]),
    "text-classifier": ("transformers", "text-classification", ["transformers", "text-classification", "finetuner"]),
    "module": ("finetuner", "feature-extraction", ["finetuner", "metric-learning", "embeddings"]),
    "keras": ("keras", "feature-extraction", ["finetuner", "keras", "metric-learning", "embeddings"]),
    "paddle": ("finetuner", "feature-extraction", ["finetuner", "paddle", "metric-learning", "embeddings"]),
}
# settings shown in the card's table, in this order, when the run has them
SHOWN_SETTINGS = ("loss", "epochs", "batch_size", "learning_rate", "optimizer", "scheduler", "warmup_ratio",
                  "weight_decay", "max_grad_norm", "gradient_accumulation_steps", "precision", "group_by_length",
                  "num_items_per_class", "max_length", "multi_label", "monitor", "best_epoch", "early_stopping", "seed")
_NOT_METRICS = ("num_queries", "eval_tokens", "epoch")


def card_step(model: Any, folder: Path) -> None:
    """The save step (`models.saving.add_save_step`): a bare card, written inside the folder
    `finetuner.save` is about to swap in."""
    write_card(folder, model)


def write_card(folder: str | os.PathLike, model: Any, result: Any = None, datasets: list[str] | None = None) -> Path | None:
    """Write `folder`/README.md for `model` (replacing the file in one rename).

    Args:
        folder: the saved model's folder.
        model: the model that was saved (a `TextEncoder`, `TextClassifier`, torch module, or a
            Keras / Paddle model).
        result: the run's `FitResult` (settings, history, metrics before / after), or None for
            a bare `finetuner.save`.
        datasets: names of the training data sets (hub ids or file names) for the front
            matter; default `result.settings["datasets"]` when the run recorded them.

    Returns:
        The card's path, or None when it could not be written (logged as a warning; the card
        never fails a save).
    """
    try:
        text = model_card(model, result, datasets)
        path = Path(folder) / CARD
        tmp = path.with_name(f".{CARD}.tmp-{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        return path
    except Exception as e:  # noqa: BLE001  (a card is documentation: the weights are what matters)
        logger.warning("model card: could not write %s/%s (%s: %s)", folder, CARD, type(e).__name__, e)
        return None


def model_card(model: Any, result: Any = None, datasets: list[str] | None = None) -> str:
    """The card's text (see `write_card` for the arguments): front matter, then Markdown."""
    kind = model_kind(model)
    library, pipeline, tags = KINDS.get(kind, KINDS["module"])
    settings = dict(getattr(result, "settings", None) or {})
    before = _numbers(getattr(result, "metrics_before", None))
    after = _numbers(getattr(result, "metrics_after", None))
    base = base_model(model)
    datasets = list(datasets if datasets is not None else settings.get("datasets") or [])
    meta: dict[str, Any] = {}
    if base and _is_hub_id(base):
        meta["base_model"] = base
    elif base:  # a local folder: named in the text by its last two path parts, not in the front matter
        base = "local folder " + "/".join(Path(base).parts[-2:])
    meta.update(library_name=library, pipeline_tag=pipeline, tags=tags)
    if datasets:
        meta["datasets"] = datasets
    if after or before:
        meta["metrics"] = list(after or before)
    lines = ["---", *_yaml(meta), "---", "", f"# {_title(kind, base)}", "",
             f"Fine-tuned with [finetuner](https://github.com/jina-ai/finetuner){' from ' + _md(base) if base else ''}.",
             "", "## Model", "", *_model_lines(model, kind, base), "", "## Usage", "", *_usage(kind), ""]
    if result is None:
        lines += ["## Training", "", "Saved with `finetuner.save` outside `finetuner.fit`: no run information.", ""]
        return "\n".join(lines)
    lines += ["## Training data", "", *_data_lines(settings, datasets), "",
              "## Training settings", "", "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {_md(settings[k])} |" for k in SHOWN_SETTINGS if settings.get(k) is not None]
    lines += ["", "## Results", ""]
    if after or before:
        lines += ["Metrics on the eval data before and after fine-tuning:", "",
                  "| metric | before | after | change |", "|---|---:|---:|---:|"]
        for key in dict.fromkeys([*before, *after]):
            b, a = before.get(key), after.get(key)
            change = f"{a - b:+.4f}" if a is not None and b is not None else ""
            lines.append(f"| {key} | {_num(b)} | {_num(a)} | {change} |")
    else:
        lines.append("No eval data was given: no metrics.")
    lines += ["", "## Time and hardware", "", *_time_lines(getattr(result, "history", None) or [], model), ""]
    return "\n".join(lines)


def model_kind(model: Any) -> str:
    """The saved kind of `model`: "sentence-transformers" (a `TextEncoder`), "text-classifier",
    "keras", "paddle" or "module" (any other torch module), read from class names only."""
    names = {c.__name__ for c in type(model).__mro__}
    if "TextEncoder" in names or "SentenceTransformer" in names:
        return "sentence-transformers"
    if "TextClassifier" in names:
        return "text-classifier"
    module = type(model).__module__ or ""
    if module.startswith(("keras", "tf_keras", "tensorflow")):
        return "keras"
    if module.startswith("paddle"):
        return "paddle"
    return "module"


def base_model(model: Any) -> str | None:
    """The model a text encoder or classifier was loaded from (`config._name_or_path`: a hub id
    or a local path); None for other modules."""
    config = None
    st = getattr(model, "sentence_transformer", None)
    if st is not None:
        config = getattr(getattr(st[0], "auto_model", None), "config", None)
    elif hasattr(getattr(model, "model", None), "config"):
        config = model.model.config
    name = str(getattr(config, "_name_or_path", "") or "") if config is not None else ""
    return name or None


def hardware(model: Any = None) -> str:
    """Where `model`'s weights are: the GPU's name, else the CPU's model name and core count."""
    import torch

    params = getattr(model, "parameters", None)
    try:
        device = next(params()).device if callable(params) else torch.device("cpu")
    except (StopIteration, TypeError):
        device = torch.device("cpu")
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    if device.type != "cpu":
        return device.type
    return _cpu_name()


@functools.lru_cache(maxsize=1)
def _cpu_name() -> str:
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} logical cores (CPU)"


# ---- the body -------------------------------------------------------------------------------
def _title(kind: str, base: str | None) -> str:
    what = {"sentence-transformers": "Text embedding model", "text-classifier": "Text classifier"}.get(
        kind, "Embedding model")
    return f"{what} fine-tuned from {base}" if base else f"{what} fine-tuned with finetuner"


def _model_lines(model: Any, kind: str, base: str | None) -> list[str]:
    out = [f"- kind: {kind} (`{type(model).__module__}.{type(model).__qualname__}`)"]
    if base:
        out.append(f"- base model: {_md(base)}")
    if kind == "sentence-transformers":
        st = model.sentence_transformer
        out.append(f"- pipeline: {' -> '.join(type(m).__name__ for m in st)}")
        out.append(f"- embedding dimension: {model.embedding_dim}; max length: {model.max_length} tokens")
    elif kind == "text-classifier":
        out.append(f"- classes ({len(model.classes)}): {_md(', '.join(map(str, model.classes[:50])))}"
                   + (" ..." if len(model.classes) > 50 else ""))
        out.append(f"- multi-label: {model.multi_label}; max length: {model.max_length} tokens")
    params = getattr(model, "parameters", None)
    if callable(params):
        try:
            out.append(f"- parameters: {sum(p.numel() for p in params()):,}")
        except TypeError:
            pass
    return out


def _usage(kind: str) -> list[str]:
    code = {
        "sentence-transformers": ["from sentence_transformers import SentenceTransformer", "",
                                  'model = SentenceTransformer("path/to/this/folder")',
                                  'embeddings = model.encode(["first text", "second text"])'],
        "text-classifier": ["import finetuner", "", 'model = finetuner.load("path/to/this/folder")',
                            'labels, probabilities = model.predict(["some text"])',
                            "# or: transformers.AutoModelForSequenceClassification.from_pretrained(folder)"],
    }.get(kind, ["import finetuner", "", 'model = finetuner.load("path/to/this/folder")',
                 "embeddings = finetuner.embed(model, items)  # float32 [N, D]"])
    return ["```python", *code, "```"]


def _data_lines(settings: dict, datasets: list[str]) -> list[str]:
    out = []
    if datasets:
        out.append(f"- data sets: {_md(', '.join(datasets))}")
    fmt = f" ({settings['train_format']} format)" if settings.get("train_format") else ""
    if settings.get("pairs"):
        fmt = " (text pairs)"
    if settings.get("train_items") is not None:
        out.append(f"- training items: {settings['train_items']:,}{fmt}")
    if settings.get("eval_items"):
        out.append(f"- eval items: {settings['eval_items']:,}")
    if settings.get("num_labels"):
        out.append(f"- classes: {settings['num_labels']}")
    if settings.get("train_tokens"):
        out.append(f"- training tokens per epoch: {settings['train_tokens']:,}")
    return out or ["- not recorded by the run"]


def _time_lines(history: list, model: Any) -> list[str]:
    import sys

    import torch

    version = getattr(sys.modules.get("finetuner"), "__version__", "?")
    seconds = sum(float(h.get("epoch_time_s", 0.0)) for h in history if isinstance(h, dict))
    out = [f"- epochs run: {len(history)}"]
    if seconds:
        out.append(f"- training time: {seconds:.1f} s (sum of the epochs' wall time)")
    out += [f"- hardware: {hardware(model)}", f"- software: finetuner {version}, torch {torch.__version__}"]
    return out


# ---- formatting -----------------------------------------------------------------------------
def _numbers(metrics: dict | None) -> dict[str, float]:
    return {k: float(v) for k, v in (metrics or {}).items()
            if k not in _NOT_METRICS and isinstance(v, (int, float)) and not isinstance(v, bool)}


def _num(v: float | None) -> str:
    return "" if v is None else f"{v:.4f}"


def _md(value: Any) -> str:
    """A value for a Markdown table cell: one line, pipes escaped."""
    return str(value).replace("\n", " ").replace("|", "\\|")


def _is_hub_id(name: str) -> bool:
    """'name' or 'org/name' that is not an existing local path."""
    return (name.count("/") <= 1 and not name.startswith((".", "/", "~")) and "\\" not in name
            and not Path(name).exists())


def _yaml(meta: dict) -> list[str]:
    """YAML lines for a flat dict of strings and lists of strings (JSON-quoted where needed)."""
    out = []
    for key, value in meta.items():
        if isinstance(value, list):
            out.append(f"{key}:")
            out += [f"- {_scalar(v)}" for v in value]
        else:
            out.append(f"{key}: {_scalar(value)}")
    return out


def _scalar(value: Any) -> str:
    text = str(value)
    plain = text and all(c.isalnum() or c in "-_./@" for c in text) and not text[0] in "-@."
    return text if plain and text.lower() not in ("true", "false", "null", "yes", "no") else json.dumps(text)
