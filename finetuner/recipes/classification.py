"""The classification recipe: fine-tune a Hugging Face sequence classifier on labelled texts or
text pairs, on the shared engine.

It is the Hugging Face course's chapter 3 (MRPC paraphrase detection with `Trainer`) as one
call: `AutoModelForSequenceClassification` with a new head whose `id2label` comes from the
data, tokenisation with `datasets.Dataset.map`, dynamic padding per batch
(`DataCollatorWithPadding`), batches of similar length (less padding, less compute), metrics
on the eval set after every epoch, early stopping, and the best epoch's weights restored.

Pieces, top to bottom: reading text data (`to_text_rows`), the label space, metrics, the
`TextClassifier` module (what `fit` returns and `finetuner.load` gives back), the batch order,
and `fit_classification` (the recipe, one loop on `finetuner.engine.Trainer`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from ..data.formats import is_dataframe, is_hf_dataset, read_table
from ..data.labeled import LabeledData
from ..engine.callbacks import BestModelCheckpoint, CSVLogger, EarlyStopping, ProgressBar, TensorBoardLogger
from ..engine.trainer import Trainer, make_accelerator
from ..io import FORMAT_VERSION, META
from ..models.saving import register_loader, save
from ..models.hf import quiet_transformers
from ..engine.optim import build_optimizer, build_scheduler
from .result import FitResult

KIND = "text-classifier"  # the `kind` in finetuner.json of a saved TextClassifier
TEXT_KEYS = ("text", "sentence", "item", "content", "input", "x", "review", "document")
PAIR_KEYS = (("sentence1", "sentence2"), ("text", "text_pair"), ("text1", "text2"), ("a", "b"),
             ("question1", "question2"), ("premise", "hypothesis"), ("question", "sentence"))
LABEL_KEYS = ("label", "labels", "class", "y", "target")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model",
                   "sentencepiece.bpe.model", "tokenizer.model")


# ---- reading text data ---------------------------------------------------------------------
@dataclass
class TextRows:
    """Texts (or text pairs) and their raw labels, as read from the user's data.

    Attributes:
        texts: N strings (the first sentence of a pair).
        pairs: N second sentences, or None for single sentences.
        labels: N labels (int or str; a list of them per row for multi-label data), or None.
        label_names: names of int labels 0..K-1 when the data carries them (a `ClassLabel`
            column, `LabeledData.class_names`), else None.
    """

    texts: list
    pairs: list | None = None
    labels: list | None = None
    label_names: list | None = None

    def __len__(self) -> int:
        return len(self.texts)


def to_text_rows(data: Any, name: str = "train_data", require_labels: bool = True) -> TextRows:
    """Read texts or text pairs, and their labels, from what users hold.

    Accepted (each row a single text or a pair; labels int or str, a list of them per row for
    multi-label data):

    - a list of tuples: `(text, label)` or `(text_a, text_b, label)`; without labels (for
      `predict`): strings, or `(text_a, text_b)` pairs;
    - a list of dicts, a pandas DataFrame, a `datasets.Dataset` (a `ClassLabel` label column
      gives the label names) or a .csv / .tsv / .jsonl / .json file, with a text column
      (`TEXT_KEYS`, e.g. "text" or "sentence") or a pair of columns (`PAIR_KEYS`, e.g.
      "sentence1" and "sentence2") and a label column (`LABEL_KEYS`, e.g. "label");
    - a tuple `(texts, labels)` of two equally long sequences;
    - a `LabeledData` of strings in class format, or in pair format (two items per group, the
      second one's relevance 0 / 1 is the label).

    Args:
        data: one of the above.
        name: the argument's name, for error messages ("train_data", "eval_data", "texts").
        require_labels: raise when there are no labels. False for prediction inputs: then a
            2-tuple is a (text_a, text_b) pair, a plain string one text, and labels are optional.

    Returns:
        `TextRows`.

    Raises:
        ValueError: empty data; a text that is missing, empty or not a string (a pair with a
            missing side); a missing label; a fractional label; columns that name no text.
        TypeError: a kind of data this function does not read.
    """
    if isinstance(data, TextRows):
        rows = data
    elif isinstance(data, LabeledData):
        rows = _from_labeled(data, name)
    elif isinstance(data, os.PathLike) or (isinstance(data, str) and (require_labels or _is_file(data))):
        df = read_table(Path(data), name)
        rows = _from_columns({c: list(df[c]) for c in df.columns}, name, require_labels)
    elif isinstance(data, str):  # predict("a single sentence")
        rows = TextRows([data])
    elif is_hf_dataset(data):
        rows = _from_columns({c: data[c] for c in data.column_names}, name, require_labels, _class_label_names(data))
    elif is_dataframe(data):
        rows = _from_columns({c: list(data[c]) for c in data.columns}, name, require_labels)
    elif (isinstance(data, tuple) and len(data) == 2 and not isinstance(data[0], str)
          and _is_column(data[0]) and _is_column(data[1]) and len(data[0]) == len(data[1])):
        rows = _from_columns({"text": list(data[0]), "label": list(data[1])}, name, require_labels)
    elif isinstance(data, tuple) and len(data) == 2 and all(isinstance(s, str) for s in data) and not require_labels:
        rows = TextRows([data[0]], [data[1]])  # predict(("sentence 1", "sentence 2"))
    elif isinstance(data, Sequence) or (hasattr(data, "__iter__") and not isinstance(data, Mapping)):
        rows = _from_rows(list(data), name, require_labels)
    else:
        raise TypeError(f"{name}: expected a list of (text, label) / (text_a, text_b, label) tuples or dicts, a "
                        f"DataFrame, a datasets.Dataset, a file path or LabeledData, got {type(data).__name__}")
    if len(rows) == 0:
        raise ValueError(f"{name}: the data is empty; expected at least one text")
    for i, t in enumerate(rows.texts):
        _check_text(t, name, i, "text" if rows.pairs is None else "first sentence")
    if rows.pairs is not None:
        for i, t in enumerate(rows.pairs):
            _check_text(t, name, i, "second sentence")
    if rows.labels is not None:
        rows.labels = [_norm_label(y, name, i) for i, y in enumerate(rows.labels)]
    elif require_labels:
        raise ValueError(f"{name}: no labels found; expected a label per row ((text, label) tuples or a "
                         f"column named one of {LABEL_KEYS})")
    return rows


def _is_file(s: str) -> bool:
    return len(s) < 4096 and "\n" not in s and Path(s).suffix.lower() in (".csv", ".tsv", ".jsonl", ".json") and Path(s).is_file()


def _is_column(x) -> bool:
    return isinstance(x, (list, np.ndarray)) or type(x).__name__ == "Series"


def _class_label_names(ds) -> list | None:
    for key in LABEL_KEYS:
        feature = ds.features.get(key) if key in ds.column_names else None
        if feature is not None and type(feature).__name__ == "ClassLabel":
            return list(feature.names)
    return None


def _from_columns(cols: dict, name: str, require_labels: bool, label_names: list | None = None) -> TextRows:
    label_key = next((k for k in LABEL_KEYS if k in cols), None)
    pair = next((p for p in PAIR_KEYS if p[0] in cols and p[1] in cols), None)
    labels = list(cols[label_key]) if label_key else None
    if pair is not None:
        return TextRows(list(cols[pair[0]]), list(cols[pair[1]]), labels, label_names)
    text_key = next((k for k in TEXT_KEYS if k in cols), None)
    if text_key is None:
        rest = [k for k in cols if k != label_key and k not in ("idx", "id")]
        if len(rest) != 1:
            raise ValueError(f"{name}: cannot tell the text column(s) among {sorted(cols)}; expected a column named "
                             f"one of {TEXT_KEYS}, or a pair of columns such as {PAIR_KEYS[:3]}")
        text_key = rest[0]
    return TextRows(list(cols[text_key]), None, labels, label_names)


def _from_rows(rows: list, name: str, require_labels: bool) -> TextRows:
    if not rows:
        return TextRows([])
    first = rows[0]
    if isinstance(first, Mapping):
        keys = list(first)
        for i, r in enumerate(rows):
            if not isinstance(r, Mapping) or list(r) != keys:
                raise ValueError(f"{name}: row {i} is not a dict with the keys of row 0 {keys}")
        return _from_columns({k: [r[k] for r in rows] for k in keys}, name, require_labels)
    if isinstance(first, str) and not require_labels:
        return TextRows(rows)
    if not isinstance(first, (tuple, list)) or len(first) not in (2, 3):
        raise ValueError(f"{name}: row 0 is {first!r}; expected (text, label) or (text_a, text_b, label)"
                         + ("" if require_labels else ", a string or a (text_a, text_b) pair"))
    width = len(first)
    for i, r in enumerate(rows):
        if not isinstance(r, (tuple, list)) or len(r) != width:
            raise ValueError(f"{name}: row {i} is {r!r}; expected a tuple of length {width} like row 0")
    if width == 3:
        return TextRows([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
    if require_labels:
        return TextRows([r[0] for r in rows], None, [r[1] for r in rows])
    return TextRows([r[0] for r in rows], [r[1] for r in rows])  # unlabelled pairs, for predict


def _from_labeled(data: LabeledData, name: str) -> TextRows:
    if data.format == "class":
        names = data.class_names
        if names is not None:  # string labels were turned into ids: give the strings back
            return TextRows(list(data.items), None, [names[g] for g in data.groups])
        return TextRows(list(data.items), None, [int(g) for g in data.groups])
    if data.format == "pair":
        order = np.argsort(data.groups, kind="stable")
        groups = data.groups[order]
        if len(groups) % 2 or (groups[0::2] != groups[1::2]).any():
            raise ValueError(f"{name}: pair-format LabeledData must hold exactly two items per pair")
        items = data.take(order)
        rel = data.relevance[order][1::2]
        if not np.isin(rel, (0.0, 1.0)).all():
            raise ValueError(f"{name}: pair scores must be 0 or 1 to be class labels, got e.g. "
                             f"{rel[~np.isin(rel, (0.0, 1.0))][:3].tolist()}")
        return TextRows(list(items[0::2]), list(items[1::2]), [int(r) for r in rel])
    raise ValueError(f"{name}: LabeledData in {data.format!r} format has no class label per text; "
                     "expected class format (text, label) or pair format (text_a, text_b, 0/1)")


def _check_text(t, name: str, i: int, what: str) -> None:
    if t is None or (isinstance(t, float) and math.isnan(t)) or (isinstance(t, str) and not t.strip()):
        raise ValueError(f"{name}: row {i} has no {what} (got {t!r}); every "
                         f"{'pair needs both sentences' if 'sentence' in what else 'row needs a non-empty text'}")
    if not isinstance(t, str):
        raise ValueError(f"{name}: row {i}: the {what} is a {type(t).__name__} ({t!r}); expected a string")


def _norm_label(y, name: str, i: int):
    """A label as a plain int or str; a list of them for a multi-label row."""
    if isinstance(y, (list, tuple, set, frozenset, np.ndarray)):
        return [_norm_label(v, name, i) for v in (sorted(y, key=str) if isinstance(y, (set, frozenset)) else y)]
    if isinstance(y, (bool, np.bool_, int, np.integer)):
        return int(y)
    if isinstance(y, (float, np.floating)):
        if math.isnan(y):
            raise ValueError(f"{name}: row {i} has no label; every training row needs one")
        if float(y).is_integer():
            return int(y)
        raise ValueError(f"{name}: row {i} has label {y}; expected an int or string class label (a fractional "
                         "score is a regression target, which this recipe does not train)")
    if isinstance(y, str):
        if not y.strip():
            raise ValueError(f"{name}: row {i} has an empty label")
        return y
    if y is None:
        raise ValueError(f"{name}: row {i} has no label; every training row needs one")
    raise ValueError(f"{name}: row {i} has a label of type {type(y).__name__} ({y!r}); expected an int or a string")


# ---- the label space -----------------------------------------------------------------------
def _is_multi(labels: list) -> bool:
    return any(isinstance(y, list) for y in labels)


def _flat(labels: list) -> list:
    return [v for y in labels for v in (y if isinstance(y, list) else [y])]


def _default_names(id2label: Mapping) -> bool:
    return all(str(v) == f"LABEL_{int(k)}" for k, v in id2label.items())


def _label_space(rows: TextRows, *, multi_label: bool, labels: Sequence | None, num_labels: int | None,
                 head: tuple[list, list] | None, name: str = "train_data") -> tuple[list, list]:
    """The classes in id order (the user's own label values) and their names (`id2label`).

    `head`: (classes, names) of a model that already has a trained head, else None.

    Raises:
        ValueError: mixed int / str labels, labels outside `labels` / `num_labels` / the head's
            `id2label`, one class only, or a `num_labels` that contradicts the data.
    """
    values = _flat(rows.labels)
    kinds = {type(v) for v in values}
    if len(kinds) > 1:
        raise ValueError(f"{name}: labels mix ints and strings (e.g. {_example(values, int)!r} and "
                         f"{_example(values, str)!r}); expected one kind")
    seen = sorted(set(values), key=lambda v: (isinstance(v, str), v))
    is_int = kinds == {int}
    if labels is not None:
        classes = [_norm_label(v, "labels", i) for i, v in enumerate(labels)]
        if len(set(classes)) != len(classes):
            raise ValueError(f"labels: expected distinct labels, got {list(labels)!r}")
        names = ([str(rows.label_names[c]) for c in classes] if rows.label_names and all(
            isinstance(c, int) and 0 <= c < len(rows.label_names) for c in classes) else [str(c) for c in classes])
        where = "`labels`"
    elif head is not None:
        classes, names = head
        if not is_int:  # string data against a named head: match by name
            classes = list(names)
        where = "the model's id2label"
    elif is_int and (rows.label_names or num_labels):
        k = len(rows.label_names) if rows.label_names else num_labels
        classes = list(range(k))
        names = [str(n) for n in rows.label_names] if rows.label_names else [str(c) for c in classes]
        where = "the label names" if rows.label_names else "range(num_labels)"
    else:
        classes, names, where = seen, [str(c) for c in seen], None
    if where is not None:
        unknown = [v for v in seen if v not in set(classes)]
        if unknown:
            raise ValueError(f"{name}: labels {unknown[:10]!r} are not in {where} {classes[:20]!r}; "
                             + ("pass labels=[...] to train a new head over all labels" if head is not None
                                else "expected every label to be one of them"))
    if num_labels is not None and num_labels != len(classes):
        raise ValueError(f"num_labels: got {num_labels}, but the data's label set has {len(classes)} labels "
                         f"{classes[:20]!r}; drop num_labels or make them agree")
    if not multi_label and len(seen) < 2:
        raise ValueError(f"{name}: all {len(rows)} rows have the same label ({seen[0]!r}); a classifier needs at "
                         "least two classes in the training data")
    return classes, names


def _example(values: list, kind: type):
    return next(v for v in values if isinstance(v, kind))


def _encode(labels: list, classes: list, multi_label: bool, name: str) -> np.ndarray:
    """int64 [N] class ids, or float32 [N, C] multi-hot targets for multi-label data."""
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({v for v in _flat(labels) if v not in index}, key=str)
    if unknown:
        raise ValueError(f"{name}: labels {unknown[:10]!r} are not among the trained classes {classes[:20]!r}")
    if not multi_label:
        return np.asarray([index[y] for y in labels], dtype=np.int64)
    out = np.zeros((len(labels), len(classes)), dtype=np.float32)
    for i, y in enumerate(labels):
        out[i, [index[v] for v in (y if isinstance(y, list) else [y])]] = 1.0
    return out


def class_weights_for(spec: Any, targets: np.ndarray, classes: list, multi_label: bool) -> torch.Tensor | None:
    """Per-class loss weights, float32 [C] (None when `spec` is None).

    Args:
        spec: None; "balanced": single-label n / (C * n_c) (scikit-learn's `compute_class_weight`,
            after King & Zeng, 2001), multi-label n_negative_c / n_positive_c (the `pos_weight`
            of `torch.nn.BCEWithLogitsLoss`); a dict {label: weight} (absent labels 1.0); or a
            sequence of C weights in class-id order. Classes with no training row get 1.0.
        targets: int64 [N] class ids, or float32 [N, C] multi-hot targets.

    Raises:
        ValueError: an unknown string, a dict key that is not a label, a sequence of the wrong
            length, or a weight that is not a positive finite number.
    """
    if spec is None:
        return None
    c = len(classes)
    if isinstance(spec, str):
        if spec != "balanced":
            raise ValueError(f"class_weights: expected 'balanced', a dict {{label: weight}} or {c} weights, got {spec!r}")
        if multi_label:
            pos = targets.sum(0)
            w = np.where(pos > 0, (len(targets) - pos) / np.maximum(pos, 1), 1.0)
        else:
            counts = np.bincount(targets, minlength=c)
            w = np.where(counts > 0, len(targets) / (c * np.maximum(counts, 1)), 1.0)
    elif isinstance(spec, Mapping):
        unknown = [k for k in spec if k not in set(classes)]
        if unknown:
            raise ValueError(f"class_weights: keys {unknown!r} are not labels of the data {classes[:20]!r}")
        w = np.asarray([float(spec.get(k, 1.0)) for k in classes])
    else:
        w = np.asarray(list(spec), dtype=np.float64)
        if w.shape != (c,):
            raise ValueError(f"class_weights: expected {c} weights (one per class, in the order {classes[:20]!r}), "
                             f"got {len(w)}")
    if not np.isfinite(w).all() or (w <= 0).any():
        raise ValueError(f"class_weights: expected positive finite weights, got {w.tolist()}")
    return torch.tensor(w, dtype=torch.float32)


def classification_loss(logits: torch.Tensor, targets: torch.Tensor, *, multi_label: bool = False,
                        class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean loss of a batch.

    Single-label: cross-entropy over softmax(logits), optionally class-weighted (PyTorch's
    weighted mean). Multi-label: binary cross-entropy over sigmoid(logits) per class, with
    `class_weights` as the positive-class weight (`pos_weight`).

    Args:
        logits: float [B, C].
        targets: int64 [B] class ids, or float [B, C] multi-hot targets (multi-label).
        class_weights: float [C] or None.
    """
    logits = logits.float()
    w = None if class_weights is None else class_weights.to(logits.device)
    if multi_label:
        return F.binary_cross_entropy_with_logits(logits, targets.float(), pos_weight=w)
    return F.cross_entropy(logits, targets, weight=w)


# ---- metrics -------------------------------------------------------------------------------
def classification_metrics(logits: np.ndarray, targets: np.ndarray, *, multi_label: bool = False,
                           threshold: float = 0.5) -> dict:
    """Accuracy and F1 of predictions against the true labels (scikit-learn's definitions).

    Single-label, 2 classes: `accuracy` and `f1` (binary F1 of class id 1, the second class;
    for MRPC "equivalent", as GLUE reports it). More classes: `accuracy` and `macro_f1` (the
    unweighted mean of per-class F1 over the classes present in labels or predictions).
    Multi-label: `micro_f1`, `macro_f1` and `subset_accuracy` (every label of a row right), a
    label being predicted when sigmoid(logit) >= `threshold`.

    F1 = 2 * precision * recall / (precision + recall) (van Rijsbergen, *Information Retrieval*,
    1979); 0 when undefined.

    Args:
        logits: float [N, C].
        targets: int [N] class ids, or 0/1 [N, C] for multi-label.
        threshold: probability cut-off of multi-label predictions, in (0, 1).
    """
    from sklearn.metrics import accuracy_score, f1_score

    if multi_label:
        pred = (1.0 / (1.0 + np.exp(-logits))) >= threshold
        true = targets.astype(bool)
        return {"micro_f1": float(f1_score(true, pred, average="micro", zero_division=0)),
                "macro_f1": float(f1_score(true, pred, average="macro", zero_division=0)),
                "subset_accuracy": float(accuracy_score(true, pred))}
    pred = logits.argmax(-1)
    out = {"accuracy": float(accuracy_score(targets, pred))}
    if logits.shape[1] == 2:
        out["f1"] = float(f1_score(targets, pred, average="binary", pos_label=1, zero_division=0))
    else:
        out["macro_f1"] = float(f1_score(targets, pred, average="macro", zero_division=0))
    return out


# ---- the model -----------------------------------------------------------------------------
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

    def _encode_batch(self, texts: list, pairs: list | None) -> dict:
        return dict(self.tokenizer(texts, pairs, truncation=True, max_length=self.max_length, padding=True,
                                   return_tensors="pt"))

    @torch.no_grad()
    def logits(self, data: Any, batch_size: int = 64) -> np.ndarray:
        """Logits of every row of `data` (anything `to_text_rows` reads; labels are ignored), in
        order: float32 numpy [N, C]. Batches hold texts of similar length (less padding)."""
        rows = data if isinstance(data, TextRows) else to_text_rows(data, "texts", require_labels=False)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")
        lengths = [len(t) + (len(rows.pairs[i]) if rows.pairs else 0) for i, t in enumerate(rows.texts)]
        order = np.argsort(lengths, kind="stable")
        device, was_training = _device(self), self.training
        self.eval()
        out = np.empty((len(rows), len(self.classes)), dtype=np.float32)
        try:
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                batch = self._encode_batch([rows.texts[i] for i in idx],
                                           [rows.pairs[i] for i in idx] if rows.pairs else None)
                out[idx] = self(**{k: v.to(device) for k, v in batch.items()}).float().cpu().numpy()
        finally:
            self.train(was_training)
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
        targets = _encode(rows.labels, self.classes, self.multi_label, "data")
        return _metrics(self.logits(rows, batch_size), targets, self.multi_label, self.threshold, None, compute_metrics)

    # ---- saving ------------------------------------------------------------------------
    def _finetuner_save(self, folder: str | os.PathLike) -> None:
        """Write the `save_pretrained` layout (config.json with id2label, model.safetensors,
        tokenizer files) plus finetuner.json; `finetuner.save` makes it atomic."""
        folder = Path(folder)
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        meta = {"format_version": FORMAT_VERSION, "framework": "torch", "kind": KIND, "classes": self.classes,
                "multi_label": self.multi_label, "threshold": self.threshold, "max_length": self.max_length}
        (folder / META).write_text(json.dumps(meta, indent=2))

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
        meta = json.loads((path / META).read_text()) if (path / META).is_file() else {}
        tokenizer = _load_tokenizer(str(path))
        with quiet_transformers():
            model = AutoModelForSequenceClassification.from_pretrained(str(path))
        model.to(map_location)
        classes = meta.get("classes") or list(range(model.config.num_labels))
        return cls(model, tokenizer, classes, multi_label=meta.get("multi_label", False),
                   threshold=meta.get("threshold", 0.5), max_length=meta.get("max_length")).eval()


def _load_saved(path: Path, meta: dict, model, map_location: str) -> TextClassifier:
    if model is not None:
        raise ValueError("model: a saved text classifier loads its own architecture; call finetuner.load(path) "
                         "without model=")
    return TextClassifier.from_pretrained(path, map_location)


register_loader(KIND, _load_saved)


def _device(module: torch.nn.Module) -> torch.device:
    p = next(iter(module.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def _load_tokenizer(spec: str):
    """AutoTokenizer for a local folder or hub id, refusing folders without tokenizer files
    (transformers 5 otherwise builds an empty 5-token tokenizer and training runs on garbage)."""
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


# ---- the batch order -----------------------------------------------------------------------
class LengthGroupedOrder(torch.utils.data.Sampler):
    """A random order per epoch in which consecutive `batch_size` items have similar lengths.

    The order of transformers' `LengthGroupedSampler` (`get_length_grouped_indices`: shuffle,
    cut into mega-batches of 50 batches, sort each by length), re-seeded by `set_epoch` so an
    epoch's order is the same after a resume. With dynamic padding, batches then carry almost
    no padding: on MRPC at batch size 8, a random order pads 1.35 tokens per real token.

    Args:
        lengths: token count of each item.
        batch_size: items per batch.
        group_by_length: False gives a plain random permutation.
        seed: base seed; epoch e uses seed + e.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, *, group_by_length: bool = True, seed: int = 42):
        self.lengths, self.batch_size = list(lengths), batch_size
        self.group_by_length, self.seed, self.epoch = group_by_length, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        if not self.group_by_length:
            return iter(torch.randperm(len(self.lengths), generator=g).tolist())
        from transformers.trainer_pt_utils import get_length_grouped_indices

        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=g))


def _tokenized(rows: TextRows, targets: np.ndarray, tokenizer, max_length: int | None, verbose: bool):
    """A `datasets.Dataset` of token ids (+ token type ids, attention mask) and `labels`,
    tokenised by `Dataset.map` in batches of 1000 rows, unpadded."""
    import datasets

    columns = {"text": rows.texts, "labels": targets.tolist()}
    if rows.pairs is not None:
        columns["text_pair"] = rows.pairs
    ds = datasets.Dataset.from_dict(columns)

    def tokenize(batch):
        return tokenizer(batch["text"], batch.get("text_pair"), truncation=True, max_length=max_length)

    text_columns = [c for c in ("text", "text_pair") if c in columns]
    hide = not verbose and not datasets.are_progress_bars_disabled()
    if hide:
        datasets.disable_progress_bars()
    try:
        return ds.map(tokenize, batched=True, batch_size=1000, remove_columns=text_columns)
    finally:
        if hide:
            datasets.enable_progress_bars()


def _collator(tokenizer):
    """DataCollatorWithPadding, returning a plain dict (the engine counts items in dicts)."""
    from transformers import DataCollatorWithPadding

    pad = DataCollatorWithPadding(tokenizer)
    return lambda features: dict(pad(features))


def _metrics(logits: np.ndarray, targets: np.ndarray, multi_label: bool, threshold: float,
             class_weights: torch.Tensor | None, compute_metrics: Callable | None) -> dict:
    loss = classification_loss(torch.from_numpy(logits), torch.from_numpy(targets), multi_label=multi_label,
                               class_weights=class_weights)
    out = {"eval_loss": float(loss), **classification_metrics(logits, targets, multi_label=multi_label,
                                                              threshold=threshold)}
    if compute_metrics is not None:
        from transformers import EvalPrediction

        extra = compute_metrics(EvalPrediction(predictions=logits, label_ids=targets))
        if not isinstance(extra, Mapping) or not all(isinstance(v, (int, float, np.number)) for v in extra.values()):
            raise TypeError(f"compute_metrics: expected it to return a dict of numbers, got {extra!r}")
        out.update({k: float(v) for k, v in extra.items()})
    return out


# ---- the result ----------------------------------------------------------------------------
@dataclass
class ClassificationResult(FitResult):
    """`FitResult` of a classifier: `.model` is the `TextClassifier`; `predict` is its
    `predict` (labels and probabilities, see `TextClassifier.predict`)."""

    def predict(self, texts: Any, batch_size: int = 64) -> Predictions:
        """See `TextClassifier.predict`."""
        return self.model.predict(texts, batch_size=batch_size)

    def table(self):
        """A rich table: each eval metric before training, after it, and the change."""
        from rich.table import Table

        table = Table(title="classification metrics on eval_data")
        for col in ("metric", "before", "after", "change"):
            table.add_column(col, justify="left" if col == "metric" else "right")
        for key, before in self.metrics_before.items():
            after = self.metrics_after.get(key)
            if after is not None:
                table.add_row(key, f"{before:.4f}", f"{after:.4f}", f"{after - before:+.4f}")
        return table


# ---- the recipe ----------------------------------------------------------------------------
def looks_like_classification(model: Any, kwargs: Mapping) -> bool:
    """Whether `fit` should pick this recipe without `task=`: the model is a `TextClassifier`
    or a transformers `*ForSequenceClassification` model, a folder whose config.json names such
    an architecture, or `num_labels` is given with a model path / transformers model. Reads at
    most one small JSON file; never raises."""
    if isinstance(model, TextClassifier) or type(model).__name__.endswith("ForSequenceClassification"):
        return True
    is_path = isinstance(model, (str, os.PathLike))
    if "num_labels" in kwargs and (is_path or hasattr(model, "save_pretrained")):
        return True
    if is_path:
        try:
            archs = json.loads((Path(model) / "config.json").read_text()).get("architectures") or []
        except (OSError, ValueError, AttributeError):
            return False
        return any(str(a).endswith("ForSequenceClassification") for a in archs)
    return False


def _resolve_model(model: Any, tokenizer: Any):
    """(kind, model or path, tokenizer, config, head) without loading weights.

    kind: "classifier" (a TextClassifier), "hf" (a transformers model object) or "path".
    head: (classes, names) when the model already has a trained, named head, else None.
    """
    if isinstance(model, TextClassifier):
        return "classifier", model, tokenizer or model.tokenizer, model.model.config, (model.classes, model.label_names)
    if hasattr(model, "config") and hasattr(model, "save_pretrained") and isinstance(model, torch.nn.Module):
        if not type(model).__name__.endswith("ForSequenceClassification"):
            raise TypeError(f"model: a {type(model).__name__} has no sequence-classification head; pass its folder "
                            "path (a new head is added) or an AutoModelForSequenceClassification model")
        if tokenizer is None:
            source = getattr(model, "name_or_path", "") or getattr(model.config, "_name_or_path", "")
            if not source:
                raise ValueError("tokenizer: the model object does not say where it was loaded from; pass tokenizer=")
            tokenizer = _load_tokenizer(source)
        return "hf", model, tokenizer, model.config, _head(model.config)
    if isinstance(model, (str, os.PathLike)):
        from transformers import AutoConfig

        spec = str(model)
        try:
            config = AutoConfig.from_pretrained(spec)
        except Exception as e:
            raise ValueError(f"model: {spec!r} is not a model folder or a reachable model id "
                             f"({type(e).__name__}: {e})") from e
        tokenizer = tokenizer if tokenizer is not None else _load_tokenizer(spec)
        return "path", spec, tokenizer, config, _head(config)
    raise TypeError(f"model: expected a model folder path, a transformers *ForSequenceClassification model or a "
                    f"TextClassifier, got {type(model).__name__}")


def _head(config) -> tuple[list, list] | None:
    """(classes, names) of a config that has a trained, named classification head."""
    archs = getattr(config, "architectures", None) or []
    id2label = getattr(config, "id2label", None) or {}
    if any(a.endswith("ForSequenceClassification") for a in archs) and id2label and not _default_names(id2label):
        names = [str(id2label[i]) for i in range(len(id2label))]
        return list(range(len(names))), names
    return None


def _check_args(epochs, batch_size, eval_batch_size, threshold, max_length, monitor) -> None:
    for arg, value in (("epochs", epochs), ("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{arg}: expected an int >= 1, got {value!r}")
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold: expected a probability in (0, 1), got {threshold!r}")
    if max_length is not None and (not isinstance(max_length, int) or max_length < 2):
        raise ValueError(f"max_length: expected None or an int >= 2, got {max_length!r}")
    if monitor is not None and not isinstance(monitor, str):
        raise ValueError(f"monitor: expected a metric name such as 'accuracy' or 'eval_loss', got {monitor!r}")


def fit_classification(
    model: Any,
    train_data: Any,
    eval_data: Any = None,
    *,
    tokenizer: Any = None,
    num_labels: int | None = None,
    labels: Sequence | None = None,
    multi_label: bool | None = None,
    threshold: float = 0.5,
    class_weights: Any = None,
    max_length: int | None = None,
    group_by_length: bool = True,
    epochs: int = 3,
    batch_size: int = 8,
    learning_rate: float = 5e-5,
    weight_decay: float = 0.0,
    optimizer: Any = "adamw",
    optimizer_kwargs: dict | None = None,
    scheduler: Any = "linear",
    warmup_ratio: float = 0.0,
    compute_metrics: Callable | None = None,
    monitor: str | None = None,
    early_stopping: int | dict | None = None,
    restore_best: bool = True,
    device: str = "auto",
    precision: str = "auto",
    gradient_accumulation_steps: int = 1,
    max_grad_norm: float | None = 1.0,
    callbacks: Sequence = (),
    seed: int = 42,
    output_dir: str | os.PathLike | None = None,
    resume: bool | str = False,
    eval_batch_size: int = 64,
    verbose: bool = True,
) -> ClassificationResult:
    """Fine-tune a text classifier (single sentences or sentence pairs) and report accuracy / F1
    on `eval_data` before training, after every epoch and at the end.

    The recipe of the Hugging Face course, chapter 3 (Devlin et al., 2019, BERT fine-tuning):
    `AutoModelForSequenceClassification` with a new head, AdamW, a linear learning-rate decay,
    dynamic padding; its defaults are `TrainingArguments`' (3 epochs, batch 8, lr 5e-5, no
    weight decay, gradient clipping at 1.0). Batches group texts of similar length
    (`LengthGroupedOrder`), which removes most padding and so most wasted compute.

    Args:
        model: a local model folder or hub id (a base encoder gets a new classification head;
            `id2label` / `label2id` come from the data's labels), a transformers
            `*ForSequenceClassification` model, or a `TextClassifier` (e.g. `finetuner.load`'s)
            to train further. A model whose head is trained and named keeps it: the data's
            labels must then be in its `id2label`.
        train_data: labelled texts or text pairs: (text, label) or (text_a, text_b, label)
            tuples, dicts, a DataFrame, a `datasets.Dataset` (e.g. `finetuner.toydata.generate_mrpc()`),
            a .csv/.tsv/.jsonl file or `LabeledData` (see `to_text_rows`). Labels are ints or
            strings; a list of labels per row makes the task multi-label.
        eval_data: labelled data in the same form, or None.

    Keyword Args:
        tokenizer: default: the model folder's own (an error if it has none).
        num_labels: number of classes, when int labels 0..K-1 do not all occur in train_data.
        labels: the classes in id order (ints or strings); default: the sorted labels of
            train_data (or its `ClassLabel` names' ids). Given for a model with a trained head,
            the head is replaced.
        multi_label: sigmoid + binary cross-entropy per class; default: True when a row has a
            list of labels. threshold: multi-label probability cut-off (0.5).
        class_weights: None, "balanced", {label: weight} or C weights (see `class_weights_for`).
        max_length: truncate to this many tokens (default: the model's maximum).
        group_by_length: batches of similar length (True) or a plain random order.
        epochs (3), batch_size (8), learning_rate (5e-5), weight_decay (0.0; never on biases
            and LayerNorm weights), optimizer ("adamw", fused when the device supports it; or as
            `finetuner.engine.optim.build_optimizer`), optimizer_kwargs, scheduler ("linear"; None,
            "constant", "cosine" or a factory), warmup_ratio (0.0).
        compute_metrics: `(transformers.EvalPrediction) -> dict[str, float]`, as for
            `transformers.Trainer`; its keys join the epoch logs. It is called once before
            training, so a broken one fails early.
        monitor: the logged metric early stopping and the best-model restore watch; default
            "accuracy" ("micro_f1" for multi-label; "train_loss" without eval_data).
        early_stopping: patience in epochs, or a dict of `EarlyStopping` arguments.
        restore_best: with eval_data, load the weights of the best epoch (by `monitor`) at the end.
        device ("auto"); precision: "auto" (bf16 autocast where the hardware computes bf16
            natively: a GPU with bf16, a CPU with AVX512-BF16 or AMX; else fp32), "bf16" or
            "fp32"; gradient_accumulation_steps (1), max_grad_norm (1.0; None: no clipping),
            callbacks, seed (42).
        output_dir: writes the model (output_dir/model, a `save_pretrained` folder),
            metrics.json, metrics.csv, TensorBoard logs and a checkpoint per epoch. resume:
            True continues from the last checkpoint in output_dir, or a checkpoint folder.
        eval_batch_size (64), verbose (progress bars and the before/after table).

    Returns:
        `ClassificationResult`: `.model` (the `TextClassifier`), `.predict(texts)`, `.history`
        (per epoch: train_loss, eval_loss, accuracy, f1 or macro_f1, your metrics, timings),
        `.metrics_before`, `.metrics_after`.

    Raises:
        ValueError: before any training: a model folder without tokenizer, labels not in the
            model's `id2label` (or in `labels`), one class only, a missing label, a pair with a
            missing side, eval labels never seen in training, bad class weights, an unknown
            `monitor`, an out-of-range argument.
        TypeError: an unsupported model, or a `compute_metrics` that returns no dict of numbers.
        FloatingPointError: the loss became NaN or infinite during training.
    """
    from accelerate.utils import set_seed
    from transformers import AutoModelForSequenceClassification

    _check_args(epochs, batch_size, eval_batch_size, threshold, max_length, monitor)
    if precision == "auto":
        from .text import default_precision  # one rule for every text recipe

        precision = default_precision(device)
    kind, source, tok, config, head = _resolve_model(model, tokenizer)
    train = to_text_rows(train_data, "train_data")
    evald = to_text_rows(eval_data, "eval_data") if eval_data is not None else None
    if multi_label is False and _is_multi(train.labels):
        raise ValueError("multi_label: False, but train_data has rows with a list of labels")
    multi = _is_multi(train.labels) if multi_label is None else bool(multi_label)
    if kind == "classifier" and labels is None:
        if multi != source.multi_label:
            raise ValueError(f"multi_label: the model was trained with multi_label={source.multi_label}, got {multi}")
        head = (source.classes, source.label_names)
    classes, names = _label_space(train, multi_label=multi, labels=labels, num_labels=num_labels, head=head)
    y_train = _encode(train.labels, classes, multi, "train_data")
    y_eval = _encode(evald.labels, classes, multi, "eval_data") if evald is not None else None
    weights = class_weights_for(class_weights, y_train, classes, multi)
    limit = min(getattr(tok, "model_max_length", 512) or 512, getattr(config, "max_position_embeddings", 512) or 512)
    max_length = min(max_length or limit, limit)
    if len(tok) > getattr(config, "vocab_size", len(tok)):
        raise ValueError(f"tokenizer: it has {len(tok)} tokens but the model's vocabulary has {config.vocab_size}; "
                         "they do not belong together")
    monitor = monitor or ("train_loss" if evald is None else ("micro_f1" if multi else "accuracy"))

    set_seed(seed)
    id2label, label2id = dict(enumerate(names)), {n: i for i, n in enumerate(names)}
    problem = "multi_label_classification" if multi else "single_label_classification"
    if kind == "path":
        new_head = head is None or labels is not None
        with quiet_transformers():
            hf = AutoModelForSequenceClassification.from_pretrained(
                source, num_labels=len(classes), id2label=id2label, label2id=label2id, problem_type=problem,
                ignore_mismatched_sizes=new_head and head is not None)
        if verbose:
            print(f"{'new' if new_head else 'trained'} classification head: {len(classes)} labels {names[:10]}")
    else:
        hf = source.model if kind == "classifier" else source
        if hf.config.num_labels != len(classes):
            raise ValueError(f"labels: the model's head has {hf.config.num_labels} outputs but the data has "
                             f"{len(classes)} classes {classes[:20]!r}; pass the model's folder path to get a new head")
        hf.config.id2label, hf.config.label2id, hf.config.problem_type = id2label, label2id, problem
    clf = TextClassifier(hf, tok, classes, multi_label=multi, threshold=threshold, max_length=max_length)

    accelerator = make_accelerator(device, precision, gradient_accumulation_steps)
    clf.to(accelerator.device)
    train_ds = _tokenized(train, y_train, tok, max_length, verbose)
    eval_ds = _tokenized(evald, y_eval, tok, max_length, verbose) if evald is not None else None
    collate = _collator(tok)
    lengths = [len(ids) for ids in train_ds["input_ids"]]
    sampler = LengthGroupedOrder(lengths, batch_size, group_by_length=group_by_length, seed=seed)
    loader = torch.utils.data.DataLoader(train_ds, batch_size=batch_size, sampler=sampler, collate_fn=collate)

    def compute_loss(m, batch: dict) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        return classification_loss(m(**inputs), batch["labels"], multi_label=multi, class_weights=weights)

    eval_order = None if eval_ds is None else np.argsort([len(ids) for ids in eval_ds["input_ids"]], kind="stable")

    @torch.no_grad()
    def evaluate(m: torch.nn.Module) -> dict:
        was_training = m.training
        m.eval()
        logits = np.empty((len(eval_ds), len(classes)), dtype=np.float32)
        try:
            batches = torch.utils.data.DataLoader(eval_ds, batch_size=eval_batch_size, sampler=eval_order.tolist(),
                                                  collate_fn=collate)
            for start, batch in zip(range(0, len(eval_order), eval_batch_size), batches):
                inputs = {k: v.to(accelerator.device) for k, v in batch.items() if k != "labels"}
                with accelerator.autocast():
                    out = m(**inputs)
                logits[eval_order[start:start + eval_batch_size]] = out.float().cpu().numpy()
        finally:
            m.train(was_training)
        return _metrics(logits, y_eval, multi, threshold, weights, compute_metrics)

    # one real batch forward before any long work: inputs the model cannot take fail here
    with torch.no_grad():
        first = collate([train_ds[i] for i in range(min(batch_size, len(train_ds)))])
        compute_loss(clf, {k: v.to(accelerator.device) for k, v in first.items()})
    metrics_before = evaluate(clf) if evald is not None else {}
    if evald is not None and monitor not in metrics_before and monitor != "train_loss":
        raise ValueError(f"monitor: {monitor!r} is not a logged metric; logged: {['train_loss', *metrics_before]}")

    opt = _optimizer(optimizer, clf, learning_rate, weight_decay, optimizer_kwargs, accelerator.device)
    steps = epochs * max(math.ceil(len(loader) / gradient_accumulation_steps), 1)
    sched = build_scheduler(scheduler, opt, steps, warmup_ratio)
    cbs = [ProgressBar()] if verbose else []
    if output_dir:
        cbs += [CSVLogger(), TensorBoardLogger()]
    if early_stopping:
        es = dict(early_stopping) if isinstance(early_stopping, Mapping) else {"patience": int(early_stopping)}
        es.setdefault("monitor", monitor)
        cbs.append(EarlyStopping(**es))
    best = BestModelCheckpoint(monitor=monitor, restore_best=True) if evald is not None and restore_best else None
    cbs += ([best] if best else []) + list(callbacks or [])

    trainer = Trainer(clf, loader, compute_loss, optimizer=opt, scheduler=sched, epochs=epochs,
                      accelerator=accelerator, evaluate=evaluate if evald is not None else None, callbacks=cbs,
                      output_dir=str(output_dir) if output_dir else None, save_fn=save,
                      max_grad_norm=max_grad_norm, sampler=sampler)
    trainer.resume(resume)
    state = trainer.fit()
    clf = trainer.final_model()  # predict runs in fp32, as the saved model does
    metrics_after = {}
    if evald is not None:
        last = state.history[-1] if state.history else {}
        restored = best is not None and state.best_epoch not in (None, state.epoch)
        # the last epoch was just evaluated: only weights restored from another epoch need a new pass
        metrics_after = evaluate(clf) if restored or not last else {k: last[k] for k in metrics_before if k in last}
    result = ClassificationResult(
        model=clf, history=state.history, metrics_before=metrics_before, metrics_after=metrics_after,
        output_dir=str(output_dir) if output_dir else None,
        settings={"task": "classification", "epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
                  "weight_decay": weight_decay, "precision": precision, "seed": seed, "num_labels": len(classes),
                  "classes": classes, "multi_label": multi, "group_by_length": group_by_length,
                  "max_length": max_length, "monitor": monitor, "best_epoch": state.best_epoch,
                  "train_items": len(train), "eval_items": len(evald) if evald is not None else 0,
                  "pairs": train.pairs is not None})
    if output_dir and accelerator.is_main_process:
        save(clf, Path(output_dir) / "model")
        tmp = Path(output_dir) / "metrics.json.tmp"
        tmp.write_text(json.dumps(result.to_dict(), indent=2, default=_json_default))
        os.replace(tmp, Path(output_dir) / "metrics.json")
    if verbose and accelerator.is_main_process:
        result.print_summary()
    return result


def _json_default(v):
    return v.item() if hasattr(v, "item") else str(v)


def _optimizer(optimizer: Any, model: torch.nn.Module, lr: float, weight_decay: float, kwargs: dict | None,
               device: torch.device) -> torch.optim.Optimizer:
    """AdamW with weight decay on weight matrices only (not on biases / LayerNorm weights, as in
    BERT and `transformers.Trainer`), fused when the device supports it; else `build_optimizer`."""
    if not (isinstance(optimizer, str) and optimizer.lower() == "adamw"):
        return build_optimizer(optimizer, model, lr, {**({"weight_decay": weight_decay} if weight_decay else {}),
                                                      **(kwargs or {})})
    if lr <= 0:
        raise ValueError(f"learning_rate: expected a positive number, got {lr}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model: it has no trainable parameter (everything is frozen): nothing to train")
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    kwargs = dict(kwargs or {})
    kwargs.setdefault("fused", device.type in ("cpu", "cuda"))
    return torch.optim.AdamW(groups, lr=lr, **kwargs)
