"""What every classification strategy starts from: the model argument resolved
(`ClassifierSource`), the prepared task (`ClassificationTask`: rows, label space, targets),
the `TextClassifier` to train (a transformers sequence classifier or a `PooledClassifier`),
and the result type."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import torch

from ..data.text_rows import TextRows
from ..io import META
from ..models.classifier import PooledClassifier, Predictions, TextClassifier, load_tokenizer
from ..models.hf import quiet_transformers
from ..models.text import TextEncoder
from .result import FitResult


@dataclass
class ClassificationResult(FitResult):
    """`FitResult` of a classifier: `.model` is the `TextClassifier`; `predict` and
    `predict_proba` are its own (see `TextClassifier.predict`). `settings["strategy"]` and
    `settings["strategy_reason"]` say how it was trained and why."""

    def predict(self, texts: Any, batch_size: int = 64) -> Predictions:
        """See `TextClassifier.predict`."""
        return self.model.predict(texts, batch_size=batch_size)

    def predict_proba(self, texts: Any, batch_size: int = 64) -> np.ndarray:
        """See `TextClassifier.predict_proba`."""
        return self.model.predict_proba(texts, batch_size=batch_size)


class ClassifierSource(NamedTuple):
    """A classification model argument, resolved without loading weights.

    Attributes:
        kind: "classifier" (a `TextClassifier`, also one loaded from a saved folder with a pooled
            head), "hf" (a transformers model object) or "path".
        model: the `TextClassifier`, the transformers model, or the folder path / hub id.
        tokenizer: its tokenizer.
        config: the transformers config.
        head: (classes, names) when the model already has a trained, named head, else None.
    """

    kind: str
    model: Any
    tokenizer: Any
    config: Any
    head: tuple[list, list] | None


@dataclass
class ClassificationTask:
    """The prepared data of a run, what every strategy takes.

    Attributes:
        source: the resolved model argument.
        train_rows / eval_rows: `TextRows` (eval_rows None without eval data).
        y_train / y_eval: int64 [N] class ids, or float32 [N, C] multi-hot targets.
        classes / names: the C labels in class-id order and their names.
        multi_label, threshold: sigmoid per class, and its cut-off.
        weights: per-class loss weights float32 [C], or None.
        max_length: tokens per input.
        eval_name: what eval_rows are ("eval_data" or "a validation split of N rows held out ...").
    """

    source: ClassifierSource
    train_rows: TextRows
    eval_rows: TextRows | None
    y_train: np.ndarray
    y_eval: np.ndarray | None
    classes: list
    names: list
    multi_label: bool
    threshold: float
    weights: torch.Tensor | None
    max_length: int
    eval_name: str = "eval_data"


def saved_meta(path: str | os.PathLike) -> dict:
    """finetuner.json of a folder, or {} (never raises)."""
    try:
        return json.loads((Path(path) / META).read_text())
    except (OSError, ValueError):
        return {}


def resolve_source(model: Any, tokenizer: Any = None) -> ClassifierSource:
    """Resolve `fit`'s model argument (and an optional tokenizer) for the classification recipe.

    Raises:
        TypeError: a model of another kind, or a transformers model without a classification head.
        ValueError: a path that is no model folder, a folder without tokenizer, a model object
            that does not say where its tokenizer is.
    """
    if isinstance(model, (str, os.PathLike)) and saved_meta(model).get("head") == "pooled":
        model = TextClassifier.from_pretrained(model)  # a saved SetFit-style classifier: train it further
    if isinstance(model, TextClassifier):
        return ClassifierSource("classifier", model, tokenizer or model.tokenizer, model.model.config,
                                (model.classes, model.label_names))
    if hasattr(model, "config") and hasattr(model, "save_pretrained") and isinstance(model, torch.nn.Module):
        if not type(model).__name__.endswith("ForSequenceClassification"):
            raise TypeError(f"model: a {type(model).__name__} has no sequence-classification head; pass its folder "
                            "path (a new head is added) or an AutoModelForSequenceClassification model")
        if tokenizer is None:
            source = getattr(model, "name_or_path", "") or getattr(model.config, "_name_or_path", "")
            if not source:
                raise ValueError("tokenizer: the model object does not say where it was loaded from; pass tokenizer=")
            tokenizer = load_tokenizer(source)
        return ClassifierSource("hf", model, tokenizer, model.config, trained_head(model.config))
    if isinstance(model, (str, os.PathLike)):
        from transformers import AutoConfig

        spec = str(model)
        try:
            config = AutoConfig.from_pretrained(spec)
        except Exception as e:
            raise ValueError(f"model: {spec!r} is not a model folder or a reachable model id "
                             f"({type(e).__name__}: {e})") from e
        tokenizer = tokenizer if tokenizer is not None else load_tokenizer(spec)
        return ClassifierSource("path", spec, tokenizer, config, trained_head(config))
    raise TypeError(f"model: expected a model folder path, a transformers *ForSequenceClassification model or a "
                    f"TextClassifier, got {type(model).__name__}")


def trained_head(config) -> tuple[list, list] | None:
    """(classes, names) of a config with a trained, named sequence-classification head (its
    `id2label` is not transformers' default LABEL_0, LABEL_1, ...), else None."""
    archs = getattr(config, "architectures", None) or []
    id2label = getattr(config, "id2label", None) or {}
    default = all(str(v) == f"LABEL_{int(k)}" for k, v in id2label.items())
    if any(a.endswith("ForSequenceClassification") for a in archs) and id2label and not default:
        names = [str(id2label[i]) for i in range(len(id2label))]
        return list(range(len(names))), names
    return None


def token_limit(source: ClassifierSource, max_length: int | None) -> int:
    """The tokens per input: `max_length` capped at what tokenizer and model take (512 when
    neither says).

    Raises:
        ValueError: the tokenizer has more tokens than the model's vocabulary.
    """
    tok, config = source.tokenizer, source.config
    if len(tok) > getattr(config, "vocab_size", len(tok)):
        raise ValueError(f"tokenizer: it has {len(tok)} tokens but the model's vocabulary has {config.vocab_size}; "
                         "they do not belong together")
    limit = min(getattr(tok, "model_max_length", 512) or 512, getattr(config, "max_position_embeddings", 512) or 512)
    return min(max_length or limit, limit)


def _label_maps(names: list) -> tuple[dict, dict]:
    return dict(enumerate(names)), {n: i for i, n in enumerate(names)}


def build_classifier(task: ClassificationTask, *, new_head: bool, strategy: str) -> TextClassifier:
    """The transformers sequence classifier to fine-tune: from a folder, a model with a head of
    C outputs (`new_head`: a fresh one, replacing a trained head); a model object keeps its
    head, which must have C outputs. id2label / label2id / problem_type come from the labels.

    Raises:
        ValueError: a model object whose head has another number of outputs.
    """
    from transformers import AutoModelForSequenceClassification

    source, classes = task.source, task.classes
    id2label, label2id = _label_maps(task.names)
    problem = "multi_label_classification" if task.multi_label else "single_label_classification"
    if source.kind == "path":
        with quiet_transformers():
            hf = AutoModelForSequenceClassification.from_pretrained(
                source.model, num_labels=len(classes), id2label=id2label, label2id=label2id, problem_type=problem,
                ignore_mismatched_sizes=new_head and source.head is not None)
    else:
        hf = source.model.model if source.kind == "classifier" else source.model
        if hf.config.num_labels != len(classes):
            raise ValueError(f"labels: the model's head has {hf.config.num_labels} outputs but the data has "
                             f"{len(classes)} classes {classes[:20]!r}; pass the model's folder path to get a new head")
        hf.config.id2label, hf.config.label2id, hf.config.problem_type = id2label, label2id, problem
    return TextClassifier(hf, source.tokenizer, classes, multi_label=task.multi_label, threshold=task.threshold,
                          max_length=task.max_length, strategy=strategy)


def build_pooled(task: ClassificationTask, *, strategy: str) -> TextClassifier:
    """A `TextClassifier` over a `PooledClassifier`: the source's sentence encoder (a model
    folder or id: its sentence-transformers pipeline, or mean pooling for a plain encoder; a
    transformers model object or sequence classifier: its encoder with mean pooling) and a
    linear head of C outputs. A pooled classifier given with the same classes keeps its head."""
    source = task.source
    current = source.model if source.kind == "classifier" else None
    if current is not None and current.head == "pooled":
        pooled = current.model
        if list(current.classes) != list(task.classes):
            pooled.head = torch.nn.Linear(pooled.encoder.embedding_dim, len(task.classes)).to(pooled.head.weight.device)
    else:
        pooled = PooledClassifier(_encoder_of(source, task.max_length), len(task.classes))
    pooled.config.id2label, pooled.config.label2id = _label_maps(task.names)
    return TextClassifier(pooled, pooled.encoder.tokenizer, task.classes, multi_label=task.multi_label,
                          threshold=task.threshold, max_length=task.max_length, strategy=strategy)


def _encoder_of(source: ClassifierSource, max_length: int) -> TextEncoder:
    if source.kind == "path":
        with quiet_transformers():
            return TextEncoder.from_pretrained(source.model, max_length=max_length)
    hf = source.model.model if source.kind == "classifier" else source.model
    with tempfile.TemporaryDirectory() as tmp:  # its encoder, through a plain model folder
        with quiet_transformers():
            # not save_pretrained: under torchrun it writes on process 0 only, and every process needs the folder
            from safetensors.torch import save_model
            hf.base_model.config.save_pretrained(tmp)
            save_model(hf.base_model, os.path.join(tmp, "model.safetensors"))
            source.tokenizer.save_pretrained(tmp)
            return TextEncoder.from_pretrained(tmp, max_length=max_length, pooling="mean")


def predict_fn(clf: TextClassifier, batch_size: int) -> Callable[[TextRows], np.ndarray]:
    """rows -> logits float32 [N, C] of `clf` (for the strategies' evaluation)."""
    return lambda rows: clf.logits(rows, batch_size)
