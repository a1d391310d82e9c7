"""The classification recipe: fine-tune a Hugging Face sequence classifier on labelled texts or
text pairs, on the shared engine.

It is the Hugging Face course's chapter 3 (MRPC paraphrase detection with `Trainer`) as one
call: `AutoModelForSequenceClassification` with a new head whose `id2label` comes from the
data, tokenisation with `datasets.Dataset.map`, dynamic padding per batch, batches of similar
length (less padding, less compute), metrics on the eval set after every epoch, early stopping,
and the best epoch's weights restored.

Reads top to bottom: resolve the arguments, read the rows and the label space, build the
`TextClassifier`, tokenise, the length-grouped batches, one real batch through model and loss,
the metrics before training, the engine's run, then `finish`. The pieces live by job:
`data.text_rows` (reading), `data.label_space`, `data.text_batches` (tokenising, padding),
`models.classifier`, `losses.classification`, `evaluation.classification`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..config import TrainArgs
from ..console import note, verbosity
from ..data.label_space import class_weights_for, encode_labels, is_multi_label, label_space
from ..data.samplers import LengthGroupedBatchSampler
from ..data.text_batches import padding_collator, tokenize_rows
from ..data.text_rows import to_text_rows
from ..engine.predict import move_to_device
from ..evaluation.classification import classifier_eval_metrics
from ..losses.classification import classification_loss
from ..models.classifier import (ClassifierSource, Predictions, TextClassifier, build_classifier, resolve_source,
                                 token_limit)
from .finish import finish
from .result import FitResult
from .run import optimizer_for, prepare, standard_callbacks, train

# the defaults of transformers' `TrainingArguments`, as in the course
DEFAULTS = TrainArgs(epochs=3, batch_size=8, learning_rate=5e-5, weight_decay=0.0, optimizer="adamw",
                     scheduler="linear", warmup_ratio=0.0, max_grad_norm=1.0, eval_batch_size=64, precision="auto")
# batches per length-sorted pool with group_by_length=True: transformers' mega-batches of 50
POOL_BATCHES = 50


@dataclass
class ClassificationResult(FitResult):
    """`FitResult` of a classifier: `.model` is the `TextClassifier`; `predict` is its
    `predict` (labels and probabilities, see `TextClassifier.predict`)."""

    def predict(self, texts: Any, batch_size: int = 64) -> Predictions:
        """See `TextClassifier.predict`."""
        return self.model.predict(texts, batch_size=batch_size)


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
    group_by_length: bool | int = True,
    compute_metrics: Callable | None = None,
    monitor: str | None = None,
    restore_best: bool = True,
    **train_args: Any,
) -> ClassificationResult:
    """Fine-tune a text classifier (single sentences or sentence pairs) and report accuracy / F1
    on `eval_data` before training, after every epoch and at the end.

    The recipe of the Hugging Face course, chapter 3 (Devlin et al., 2019, BERT fine-tuning):
    `AutoModelForSequenceClassification` with a new head, AdamW, a linear learning-rate decay,
    dynamic padding; its defaults are `TrainingArguments`' (3 epochs, batch 8, lr 5e-5, no
    weight decay, gradient clipping at 1.0). Batches group texts of similar length
    (`LengthGroupedBatchSampler`), which removes most padding and so most wasted compute.

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
        group_by_length: True: batches of similar length (length-sorted pools of 50 batches,
            transformers' mega-batches); an int: batches per pool; False: random batches.
        compute_metrics: `(transformers.EvalPrediction) -> dict[str, float]`, as for
            `transformers.Trainer`; its keys join the epoch logs. It is called once before
            training, so a broken one fails early.
        monitor: the logged metric early stopping and the best-model restore watch; default
            "accuracy" ("micro_f1" for multi-label; "train_loss" without eval_data).
        restore_best: with eval_data, load the weights of the best epoch (by `monitor`) at the end.
        **train_args: `finetuner.config.TrainArgs` fields; defaults `DEFAULTS`: 3 epochs of
            batch 8, AdamW (fused where the device has it) at 5e-5 with a linear decay, no
            warm-up, weight decay 0 (never on biases and LayerNorm weights), clipping at 1.0,
            eval batch 64, precision "auto" (bf16 autocast where the hardware computes bf16
            natively, else fp32). With output_dir: the model (output_dir/model, a
            `save_pretrained` folder), metrics.json, metrics.csv, TensorBoard logs and a
            checkpoint per epoch.

    Returns:
        `ClassificationResult`: `.model` (the `TextClassifier`), `.predict(texts)`, `.history`
        (per epoch: train_loss, eval_loss, accuracy, f1 or macro_f1, your metrics, timings),
        `.metrics_before`, `.metrics_after` (of the model as returned, in fp32).

    Raises:
        ValueError: before any training: a model folder without tokenizer, labels not in the
            model's `id2label` (or in `labels`), one class only, a missing label, a pair with a
            missing side, eval labels never seen in training, bad class weights, an unknown
            `monitor`, an out-of-range argument.
        TypeError: an unsupported model, an unknown training argument, or a `compute_metrics`
            that returns no dict of numbers.
        FloatingPointError: the loss became NaN or infinite during training.
    """
    args = DEFAULTS.override(train_args)
    pool_batches = _check_options(threshold, max_length, monitor, group_by_length)
    with verbosity(args.verbose):
        source = resolve_source(model, tokenizer)
        train_rows = to_text_rows(train_data, "train_data")
        eval_rows = to_text_rows(eval_data, "eval_data") if eval_data is not None else None
        multi = _multi_label(multi_label, train_rows.labels, source, labels)
        classes, names = label_space(train_rows, multi_label=multi, labels=labels, num_labels=num_labels,
                                     head=source.head)
        y_train = encode_labels(train_rows.labels, classes, multi, "train_data")
        y_eval = encode_labels(eval_rows.labels, classes, multi, "eval_data") if eval_rows is not None else None
        weights = class_weights_for(class_weights, y_train, classes, multi)
        max_length = token_limit(source, max_length)
        monitor = monitor or ("train_loss" if eval_rows is None else ("micro_f1" if multi else "accuracy"))

        accelerator, precision = prepare(args)  # seeds every RNG: the new head's init follows
        new_head = source.head is None or labels is not None
        clf = build_classifier(source, classes, names, multi_label=multi, threshold=threshold,
                               max_length=max_length, new_head=new_head)
        if source.kind == "path":
            note(f"{'new' if new_head else 'trained'} classification head: {len(classes)} labels {names[:10]}")
        clf.to(accelerator.device)
        train_set = tokenize_rows(train_rows, y_train, source.tokenizer, max_length)
        collate = padding_collator(source.tokenizer)
        sampler = LengthGroupedBatchSampler([len(ids) for ids in train_set["input_ids"]], args.batch_size,
                                            pool_batches=pool_batches, seed=args.seed)
        loader = torch.utils.data.DataLoader(train_set, batch_sampler=sampler, collate_fn=collate)

        def compute_loss(m: torch.nn.Module, batch: dict) -> torch.Tensor:
            inputs = {k: v for k, v in batch.items() if k != "labels"}
            return classification_loss(m(**inputs), batch["labels"], multi_label=multi, class_weights=weights)

        def evaluate(m: TextClassifier) -> dict:
            return classifier_eval_metrics(m.logits(eval_rows, args.eval_batch_size), y_eval, multi_label=multi,
                                           threshold=threshold, class_weights=weights,
                                           compute_metrics=compute_metrics)

        # one real batch through model and loss before any long work: inputs the model cannot take fail here
        with torch.no_grad():
            first = collate([train_set[i] for i in next(iter(sampler))])
            compute_loss(clf, move_to_device(first, accelerator.device))
        metrics_before = evaluate(clf) if eval_rows is not None else {}
        if eval_rows is not None and monitor not in metrics_before and monitor != "train_loss":
            raise ValueError(f"monitor: {monitor!r} is not a logged metric; logged: {['train_loss', *metrics_before]}")

        args = _fused_adamw(args, accelerator.device)
        optimizer, scheduler = optimizer_for(clf, args, len(sampler), params=_decay_groups(clf, args.weight_decay))
        callbacks = standard_callbacks(args, monitor, restore_best=eval_rows is not None and restore_best)
        run = train(clf, loader, compute_loss, args=args, accelerator=accelerator, optimizer=optimizer,
                    scheduler=scheduler, callbacks=callbacks, evaluate=evaluate if eval_rows is not None else None,
                    sampler=sampler, precision=precision)
        result = ClassificationResult(run.model, run.state.history, metrics_before, run.metrics_after, settings={
            "task": "classification", "table_title": "classification metrics on eval_data", **args.to_dict(),
            "precision": precision, "num_labels": len(classes), "classes": classes, "multi_label": multi,
            "group_by_length": group_by_length, "max_length": max_length, "monitor": monitor,
            "best_epoch": run.state.best_epoch, "train_items": len(train_rows),
            "eval_items": len(eval_rows) if eval_rows is not None else 0, "pairs": train_rows.pairs is not None})
        return finish(result, args, is_main_process=accelerator.is_main_process)


def _check_options(threshold: float, max_length: int | None, monitor: str | None, group_by_length: bool | int) -> int:
    """Check the recipe's own options; return the batches per length-sorted pool."""
    if not isinstance(threshold, (int, float)) or not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold: expected a probability in (0, 1), got {threshold!r}")
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2):
        raise ValueError(f"max_length: expected None or an int >= 2, got {max_length!r}")
    if monitor is not None and not isinstance(monitor, str):
        raise ValueError(f"monitor: expected a metric name such as 'accuracy' or 'eval_loss', got {monitor!r}")
    if isinstance(group_by_length, bool):
        return POOL_BATCHES if group_by_length else 1
    if not isinstance(group_by_length, int) or group_by_length < 1:
        raise ValueError(f"group_by_length: expected True, False or an int >= 1 (batches per sorted pool), "
                         f"got {group_by_length!r}")
    return group_by_length


def _multi_label(multi_label: bool | None, train_labels: list, source: ClassifierSource,
                 labels: Sequence | None) -> bool:
    """Multi-label or not: as asked, else from the data; a trained classifier keeps its kind."""
    if multi_label is False and is_multi_label(train_labels):
        raise ValueError("multi_label: False, but train_data has rows with a list of labels")
    multi = is_multi_label(train_labels) if multi_label is None else bool(multi_label)
    if source.kind == "classifier" and labels is None and multi != source.model.multi_label:
        raise ValueError(f"multi_label: the model was trained with multi_label={source.model.multi_label}, got {multi}")
    return multi


def _fused_adamw(args: TrainArgs, device: torch.device) -> TrainArgs:
    """AdamW by name runs fused where the device has the fused kernel (CPU, CUDA), as
    `transformers.Trainer` does, unless optimizer_kwargs says otherwise."""
    kwargs = dict(args.optimizer_kwargs or {})
    if not (isinstance(args.optimizer, str) and args.optimizer.lower() == "adamw") or "fused" in kwargs:
        return args
    return args.override({"optimizer_kwargs": {**kwargs, "fused": device.type in ("cpu", "cuda")}})


def _decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """The two parameter groups: weight decay on weight matrices only, never on biases and
    LayerNorm weights (as in BERT and `transformers.Trainer`)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model: it has no trainable parameter (everything is frozen): nothing to train")
    return [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
