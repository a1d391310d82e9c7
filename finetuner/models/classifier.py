"""`TextClassifier`: a Hugging Face sequence classifier with its tokenizer and labels, what the
classification recipe trains and returns; its save / load (`save_pretrained` layout), and how a
model argument (a folder, a transformers model, a `TextClassifier`) becomes one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
import torch

from ..data.label_space import encode_labels
from ..data.samplers import LengthGroupedBatchSampler
from ..data.text_rows import TextRows, to_text_rows
from ..engine.predict import predict_batches
from ..evaluation.classification import classifier_eval_metrics
from ..io import FORMAT_VERSION, META, read_meta, write_json
from .hf import quiet_transformers

KIND = "text-classifier"  # the `kind` in finetuner.json of a saved TextClassifier
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model",
                   "sentencepiece.bpe.model", "tokenizer.model")


class Predictions(NamedTuple):
    """What `TextClassifier.predict` returns.

    Attributes:
        labels: N predicted labels, each one of `classes` (int or str, as in the training data);
            for multi-label models a list per row of every label with probability >= threshold.
        probabilities: float32 numpy array [N, C]: softmax over the C classes (rows sum to 1),
            or independent sigmoids for multi-label models; column i is `classes[i]`.
    """

    labels: list
    probabilities: np.ndarray


class TextClassifier(torch.nn.Module):
    """A Hugging Face sequence classifier with its tokenizer and labels: `predict` on raw texts
    or text pairs, `evaluate` on labelled data, and a saved layout that
    `AutoModelForSequenceClassification.from_pretrained` also reads.

    Args:
        model: a `transformers` `*ForSequenceClassification` model whose head has C outputs.
        tokenizer: its tokenizer.
        classes: the C labels in class-id order (ints or strings: what `predict` returns).
        multi_label: sigmoid per class (several labels per text) instead of softmax.
        threshold: multi-label probability cut-off, in (0, 1).
        max_length: truncate inputs to this many tokens (None: the model's maximum).

    Inputs (forward):
        the tokenizer's output: `input_ids`, `attention_mask` (and `token_type_ids` when the
        model uses them), int64 [B, L]. Returns the logits, float [B, C].
    """

    def __init__(self, model, tokenizer, classes: Sequence, *, multi_label: bool = False, threshold: float = 0.5,
                 max_length: int | None = None) -> None:
        super().__init__()
        self.model, self.tokenizer = model, tokenizer
        self.classes, self.multi_label = list(classes), bool(multi_label)
        self.threshold, self.max_length = float(threshold), max_length

    @property
    def label_names(self) -> list[str]:
        """The C class names of the model config's `id2label`, in class-id order."""
        return [str(self.model.config.id2label[i]) for i in range(len(self.classes))]

    def forward(self, **inputs) -> torch.Tensor:
        """Logits, float [B, C], of tokenised inputs (int64 [B, L] tensors by name)."""
        return self.model(**inputs).logits

    def logits(self, data: Any, batch_size: int = 64) -> np.ndarray:
        """Logits of every row of `data` (anything `to_text_rows` reads; labels are ignored), in
        order: float32 numpy [N, C]. Batches hold texts of similar length (less padding); the
        forward runs in the model's own precision (fp32 for a finished model, the run's
        autocast while it trains).

        Raises:
            ValueError: a batch_size that is not an int >= 1, or unreadable texts.
        """
        rows = data if isinstance(data, TextRows) else to_text_rows(data, "texts", require_labels=False)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")
        lengths = [len(t) + (len(rows.pairs[i]) if rows.pairs else 0) for i, t in enumerate(rows.texts)]
        order = list(LengthGroupedBatchSampler(lengths, batch_size, shuffle=False))

        def batches():
            for idx in order:
                yield dict(self.tokenizer([rows.texts[i] for i in idx],
                                          [rows.pairs[i] for i in idx] if rows.pairs else None,
                                          truncation=True, max_length=self.max_length, padding=True,
                                          return_tensors="pt"))

        out = np.empty((len(rows), len(self.classes)), dtype=np.float32)
        for idx, logits in zip(order, predict_batches(self, batches(), forward=lambda m, b: m(**b))):
            out[idx] = logits.float().cpu().numpy()
        return out

    def predict(self, texts: Any, batch_size: int = 64) -> Predictions:
        """Predicted labels and class probabilities.

        Args:
            texts: a string, a `(text_a, text_b)` pair, a list of either, or labelled data in
                any form `fit` takes (its labels are ignored).
            batch_size: texts per forward pass.

        Returns:
            `Predictions(labels, probabilities)`: N labels (lists for multi-label models) and
            float32 [N, C] probabilities, column i for `classes[i]`.

        Raises:
            ValueError: an empty input, a missing or empty text, half a pair.
        """
        logits = torch.from_numpy(self.logits(texts, batch_size))
        if self.multi_label:
            probs = torch.sigmoid(logits).numpy()
            labels = [[self.classes[j] for j in np.flatnonzero(p >= self.threshold)] for p in probs]
        else:
            probs = torch.softmax(logits, -1).numpy()
            labels = [self.classes[j] for j in probs.argmax(-1)]
        return Predictions(labels, probs)

    def evaluate(self, data: Any, batch_size: int = 64, compute_metrics: Callable | None = None) -> dict:
        """`eval_loss` (unweighted) and `classification_metrics` on labelled `data` (any form
        `fit` takes), plus `compute_metrics(EvalPrediction)` if given.

        Raises:
            ValueError: unlabelled data, or labels the model was not trained on.
        """
        rows = to_text_rows(data, "data")
        targets = encode_labels(rows.labels, self.classes, self.multi_label, "data")
        return classifier_eval_metrics(self.logits(rows, batch_size), targets, multi_label=self.multi_label,
                                       threshold=self.threshold, compute_metrics=compute_metrics)

    # ---- saving ------------------------------------------------------------------------
    def _finetuner_save(self, folder: str | os.PathLike) -> None:
        """Write the `save_pretrained` layout (config.json with id2label, model.safetensors,
        tokenizer files) plus finetuner.json; `finetuner.save` makes it atomic."""
        folder = Path(folder)
        with quiet_transformers():  # no "Writing model shards" bar on every checkpoint
            self.model.save_pretrained(folder)
            self.tokenizer.save_pretrained(folder)
        write_json(folder / META, {"format_version": FORMAT_VERSION, "framework": "torch", "kind": KIND,
                                   "classes": self.classes, "multi_label": self.multi_label,
                                   "threshold": self.threshold, "max_length": self.max_length})

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, map_location: str = "cpu") -> "TextClassifier":
        """Load a folder written by `finetuner.save` (or any local sequence-classification
        checkpoint with a tokenizer: its classes are then the ids 0..C-1).

        Raises:
            FileNotFoundError: no such folder. ValueError: the folder has no tokenizer.
        """
        from transformers import AutoModelForSequenceClassification

        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"path: {str(path)!r} is not a folder")
        meta = read_meta(path) if (path / META).is_file() else {}
        tokenizer = load_tokenizer(str(path))
        with quiet_transformers():
            model = AutoModelForSequenceClassification.from_pretrained(str(path))
        model.to(map_location)
        classes = meta.get("classes") or list(range(model.config.num_labels))
        return cls(model, tokenizer, classes, multi_label=meta.get("multi_label", False),
                   threshold=meta.get("threshold", 0.5), max_length=meta.get("max_length")).eval()


def load_saved(path: Path, meta: dict, model, map_location: str) -> TextClassifier:
    """The loader of `finetuner.load` for folders whose finetuner.json says `KIND`.

    Raises:
        ValueError: a `model` was given (a saved classifier brings its own architecture).
    """
    if model is not None:
        raise ValueError("model: a saved text classifier loads its own architecture; call finetuner.load(path) "
                         "without model=")
    return TextClassifier.from_pretrained(path, map_location)


def load_tokenizer(spec: str):
    """AutoTokenizer for a local folder or hub id, refusing folders without tokenizer files
    (transformers 5 otherwise builds an empty 5-token tokenizer and training runs on garbage).

    Raises:
        ValueError: no tokenizer files in the folder, or the tokenizer cannot be loaded.
    """
    from transformers import AutoTokenizer

    if Path(spec).is_dir() and not any((Path(spec) / f).is_file() for f in TOKENIZER_FILES):
        raise ValueError(f"model: the folder {spec!r} has no tokenizer (none of {TOKENIZER_FILES}); save the "
                         "tokenizer there (tokenizer.save_pretrained) or pass tokenizer=")
    try:
        with quiet_transformers():
            return AutoTokenizer.from_pretrained(spec)
    except Exception as e:  # OSError, ValueError, ...: the message says which files were tried
        raise ValueError(f"model: could not load a tokenizer from {spec!r} ({type(e).__name__}: {e}); "
                         "pass tokenizer=") from e


# ---- from the model argument to a TextClassifier --------------------------------------------
class ClassifierSource(NamedTuple):
    """A classification model argument, resolved without loading weights.

    Attributes:
        kind: "classifier" (a `TextClassifier`), "hf" (a transformers model object) or "path".
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


def resolve_source(model: Any, tokenizer: Any = None) -> ClassifierSource:
    """Resolve `fit`'s model argument (and an optional tokenizer) for the classification recipe.

    Raises:
        TypeError: a model of another kind, or a transformers model without a classification head.
        ValueError: a path that is no model folder, a folder without tokenizer, a model object
            that does not say where its tokenizer is.
    """
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


def build_classifier(source: ClassifierSource, classes: list, names: list, *, multi_label: bool,
                     threshold: float, max_length: int, new_head: bool) -> TextClassifier:
    """The `TextClassifier` to train: from a folder, a model with a head of len(classes) outputs
    (`new_head`: a fresh one, replacing a trained head); a model object keeps its head, which
    must have len(classes) outputs. id2label / label2id / problem_type come from the labels.

    Raises:
        ValueError: a model object whose head has another number of outputs.
    """
    from transformers import AutoModelForSequenceClassification

    id2label, label2id = dict(enumerate(names)), {n: i for i, n in enumerate(names)}
    problem = "multi_label_classification" if multi_label else "single_label_classification"
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
    return TextClassifier(hf, source.tokenizer, classes, multi_label=multi_label, threshold=threshold,
                          max_length=max_length)
