"""The classification recipe: a text classifier (single texts or text pairs, one label or
several per row) from a pretrained encoder, with the training strategy chosen from the data.

Reads top to bottom: resolve the arguments, read the rows and the label space, choose the
strategy (`choose_strategy`: which one and why, printed and kept in `result.settings`) and
whether attention dropout stays (`attention_dropout="auto"`: by the rows' length), hold out
a validation split when there is no eval_data and the strategy selects epochs, then run the
strategy:

- "setfit" (few examples per class, `recipes.fewshot`): the encoder tuned contrastively on the
  labels, then a logistic-regression head on its embeddings (Tunstall et al., 2022);
- "finetune" (more data, `recipes.classification_finetune`): the whole model trained end to
  end, its passes, learning rates and warm-up set by the data size;
- "linear-probe" (`recipes.fewshot`): the head only, on the frozen encoder's embeddings.

Every strategy returns a `TextClassifier` (`predict`, `predict_proba`, `evaluate`), saved with
its strategy and loaded by `finetuner.load`; `fit` on it trains it further.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Sequence

from ..config import TrainArgs
from ..console import note, verbosity
from ..data.label_space import (class_counts, class_weights_for, encode_labels, is_multi_label, label_space,
                                validation_split)
from ..data.text_rows import TextRows, to_text_rows
from ..models.classifier import TextClassifier
from ..models.dropout import check_attention_dropout
from .classification_finetune import PATIENCE, fit_finetune, finetune_args
from .classification_model import (ClassificationResult, ClassificationTask, ClassifierSource, resolve_source,
                                   saved_meta, token_limit)
from .fewshot import fit_fewshot, fewshot_args

STRATEGIES = ("auto", "setfit", "finetune", "linear-probe")
HEADS = ("auto", "pooled", "sequence-classification")
# "auto": SetFit below this many training rows per class (mean) and below this many rows in all,
# end-to-end fine-tuning from either on. From the sweep (benchmarks/fewshot_vs_setfit.py --sweep,
# results/strategy_sweep.json): "finetune" leads from 300 rows per class on rotten_tomatoes
# (100: 0.760 vs 0.765), from 500 on SST-2, and on BANKING77 (77 classes) from 32 per class,
# 2,464 rows (0.888 / 0.902 vs 0.873 / 0.894 over 2 seeds; at 16 per class, 1,232 rows, 0.864 vs 0.868)
SETFIT_BELOW, SETFIT_MAX_ROWS = 100, 2000
# a validation split is held out (without eval_data, for "finetune") when there are at least
# this many rows per class on average and in all
SPLIT_MIN_PER_CLASS, SPLIT_MIN_ROWS = 8, 50
# attention_dropout="auto": left out from this many tokens per training row (mean) on. Its cost
# grows with the length. Measured without it (2 CPU cores): MRPC pairs (53 tokens) 7% faster and
# +0.014 accuracy; STS-B pairs (28) -0.010, COVID pairs (31) -0.013, SST-2 600 (25) -0.017, BANKING77 (16) +0.002
LONG_ROW_TOKENS = 40
POOL_BATCHES = 50  # batches per length-sorted pool with group_by_length=True (transformers' mega-batches)

__all__ = ["ClassificationResult", "POOL_BATCHES", "STRATEGIES", "choose_strategy", "fit_classification",
           "looks_like_classification"]


def looks_like_classification(model: Any, kwargs: Mapping) -> bool:
    """Whether `fit` should pick this recipe without `task=`: the model is a `TextClassifier`
    or a transformers `*ForSequenceClassification` model, a folder saved as a text classifier
    or whose config.json names such an architecture, or `num_labels` / `strategy` is given with
    a model path / transformers model. Reads at most two small JSON files; never raises."""
    if isinstance(model, TextClassifier) or type(model).__name__.endswith("ForSequenceClassification"):
        return True
    is_path = isinstance(model, (str, os.PathLike))
    if ("num_labels" in kwargs or "strategy" in kwargs) and (is_path or hasattr(model, "save_pretrained")):
        return True
    if is_path:
        if saved_meta(model).get("kind") == "text-classifier":
            return True
        try:
            archs = json.loads((Path(model) / "config.json").read_text()).get("architectures") or []
        except (OSError, ValueError, AttributeError):
            return False
        return any(str(a).endswith("ForSequenceClassification") for a in archs)
    return False


def choose_strategy(strategy: str, n_rows: int, counts: Sequence[int], source: ClassifierSource | None = None
                    ) -> tuple[str, str]:
    """The training strategy for `n_rows` training rows with `counts[c]` rows of class c, and why.

    "auto": a model whose transformers classification head is already trained keeps being
    fine-tuned end to end; "linear-probe" when no class has two rows (nothing to contrast);
    otherwise "setfit" below `SETFIT_BELOW` rows per class (mean) and `SETFIT_MAX_ROWS` rows in
    all, else "finetune". Any other value is returned as given.

    Returns:
        (strategy, reason): one of "setfit", "finetune", "linear-probe", and a sentence.

    Raises:
        ValueError: a strategy not in `STRATEGIES`.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy: expected one of {STRATEGIES}, got {strategy!r}")
    if strategy != "auto":
        return strategy, f"strategy={strategy!r} was given"
    per_class = n_rows / max(len(counts), 1)
    if source is not None and source.head is not None and not (
            source.kind == "classifier" and source.model.head == "pooled"):
        return "finetune", "the model's classification head is already trained: it is trained further end to end"
    if max(counts, default=0) < 2:
        return "linear-probe", "no class has two training rows: nothing to contrast; a head on the frozen encoder"
    if per_class < SETFIT_BELOW and n_rows < SETFIT_MAX_ROWS:
        return "setfit", (f"{per_class:.1f} training rows per class (< {SETFIT_BELOW}), {n_rows} in all "
                          f"(< {SETFIT_MAX_ROWS}): few-shot (SetFit-style contrastive tuning of the encoder, "
                          "then a logistic-regression head)")
    why = (f"{per_class:.1f} training rows per class (>= {SETFIT_BELOW})" if per_class >= SETFIT_BELOW
           else f"{n_rows} training rows (>= {SETFIT_MAX_ROWS}, {per_class:.1f} per class)")
    return "finetune", f"{why}: end-to-end fine-tuning, passes and learning rates set by the data size"


def fit_classification(
    model: Any,
    train_data: Any,
    eval_data: Any = None,
    *,
    strategy: str = "auto",
    head: str = "auto",
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
    head_learning_rate: float | None = None,
    attention_dropout: bool | str = "auto",
    **train_args: Any,
) -> ClassificationResult:
    """Train a text classifier (single texts or text pairs; one label, or a list of labels per
    row) with the strategy that suits the data, and report accuracy / F1 before and after.

    Args:
        model: a local model folder or hub id (a sentence-transformers model or any encoder;
            a new head is added, `id2label` from the data's labels), a transformers
            `*ForSequenceClassification` model, or a `TextClassifier` / a folder saved from
            one (e.g. `finetuner.load`'s) to train further. A model whose head is trained and
            named keeps it: the data's labels must then be in its `id2label`.
        train_data: labelled texts or text pairs: (text, label) or (text_a, text_b, label)
            tuples, dicts, a DataFrame, a `datasets.Dataset` (e.g. `finetuner.toydata.generate_mrpc()`),
            a .csv/.tsv/.jsonl file or `LabeledData` (see `to_text_rows`). Labels are ints or
            strings; a list of labels per row makes the task multi-label.
        eval_data: labelled data in the same form, or None. It is what the before/after
            metrics are computed on and, for "finetune", what early stopping and the best-epoch
            restore watch; without it "finetune" holds out a stratified validation split of
            train_data (about 10%, at most 1,000 rows, at least one per class) for that.

    Keyword Args:
        strategy: "auto" (`choose_strategy`: "setfit" below `SETFIT_BELOW` rows per class
            and `SETFIT_MAX_ROWS` rows, else "finetune"), "setfit", "finetune" or
            "linear-probe". The choice and its reason are printed and kept in
            `result.settings` and in the saved folder.
        head: for "finetune": "auto" ("pooled" for a sentence-transformers model folder or a
            pooled classifier, else "sequence-classification"), "pooled" (`PooledClassifier`:
            a linear layer on the normalised sentence embedding, started from the linear
            probe) or "sequence-classification" (transformers' head on the pooler). "setfit"
            and "linear-probe" always train a pooled head.
        tokenizer: default: the model folder's own (an error if it has none).
        num_labels: number of classes, when int labels 0..K-1 do not all occur in train_data.
        labels: the classes in id order (ints or strings); default: the sorted labels of
            train_data (or its `ClassLabel` names' ids). Given for a model with a trained head,
            the head is replaced.
        multi_label: sigmoid + binary cross-entropy per class; default: True when a row has a
            list of labels. threshold: multi-label probability cut-off (0.5).
        class_weights: None, "balanced", {label: weight} or C weights (see `class_weights_for`).
        max_length: truncate to this many tokens (default: the model's maximum).
        group_by_length: "finetune": True: batches of similar length (length-sorted pools of
            50 batches, transformers' mega-batches); an int: batches per pool; False: random.
        compute_metrics: `(transformers.EvalPrediction) -> dict[str, float]`, as for
            `transformers.Trainer`; its keys join the eval metrics.
        monitor: "finetune": the metric early stopping and the restore watch; default
            "accuracy" ("micro_f1" for multi-label; "train_loss" without eval rows).
        restore_best: "finetune" with eval rows: load the best epoch's weights at the end.
        head_learning_rate: "finetune": the head's learning rate (default 20 x learning_rate).
        attention_dropout: True: keep the model's dropout of attention probabilities in
            training. False: leave it out (hidden-state dropout stays), so attention runs in
            SDPA's fused kernel (`models.dropout.set_attention_dropout`). "auto" (default):
            False when the training rows average `LONG_ROW_TOKENS` (40) tokens or more, else
            True. Measured on 2 CPU cores: on MRPC pairs (53 tokens) 234 s instead of 251 s
            at accuracy 0.805 vs 0.791 (seeds 42-44; `benchmarks/classify_vs_trainer.py`); on
            short rows no faster and mostly lower: STS-B pairs binarised at score 3 (28 tokens,
            2,000 rows, seeds 0-2) 0.806 vs 0.817; COVID question pairs (31 tokens, 300 rows)
            0.897 vs 0.910; SST-2, 600 sentences (25 tokens, seeds 0-4) 0.813 vs 0.830;
            BANKING77 (16 tokens, 64 per class, seeds 0-2) 0.925 vs 0.923.
        **train_args: `finetuner.config.TrainArgs` fields; each given one overrides the
            strategy's default. "finetune" (`classification_finetune.finetune_args`): batch 16
            below 2,000 rows else 32, at least 300 optimizer steps in 3 to 20 passes, AdamW
            (fused) at 5e-5 x sqrt(batch / 8) (1e-4 at batch 32), weight decay 0.01, 10%
            warm-up then linear decay, clipping at 1.0, early stopping after 2 epochs without
            a better validation score. "setfit" (the contrastive step, `fewshot.fewshot_args`):
            batch 32, 4 texts per class, AdamW at 5e-5, 10% warm-up, passes for about 40 steps
            (at most 20). Precision "auto" (bf16
            where the hardware computes it natively and faster than fp32). With output_dir: the
            model (output_dir/model), metrics.json and, for "finetune", logs and checkpoints.

    Returns:
        `ClassificationResult`: `.model` (the `TextClassifier`), `.predict(texts)`,
        `.predict_proba(texts)`, `.history`, `.metrics_before` / `.metrics_after` (on
        eval_data or the validation split; for "setfit" "before" is the linear probe),
        `.settings` (strategy, strategy_reason, every setting used).

    Raises:
        ValueError: before any training: a model folder without tokenizer, labels not in the
            model's `id2label` (or in `labels`), one class only, a missing label or text, a pair
            with a missing side, eval labels never seen in training (named), bad class weights,
            an unknown `monitor`, `strategy` or `head`, an out-of-range argument.
        TypeError: an unsupported model, an unknown training argument, or a `compute_metrics`
            that returns no dict of numbers.
        FloatingPointError: the loss became NaN or infinite during training.
    """
    pool_batches = _check_options(threshold, max_length, monitor, group_by_length, head, attention_dropout)
    TrainArgs().override(train_args)  # a bad or unknown setting fails here, before anything is loaded
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy: expected one of {STRATEGIES}, got {strategy!r}")
    verbose = train_args.get("verbose", True)
    with verbosity(verbose):
        source = resolve_source(model, tokenizer)
        train_rows = to_text_rows(train_data, "train_data")
        eval_rows = to_text_rows(eval_data, "eval_data") if eval_data is not None else None
        multi = _multi_label(multi_label, train_rows.labels, source, labels)
        classes, names = label_space(train_rows, multi_label=multi, labels=labels, num_labels=num_labels,
                                     head=source.head)
        y_train = encode_labels(train_rows.labels, classes, multi, "train_data")
        y_eval = encode_labels(eval_rows.labels, classes, multi, "eval_data") if eval_rows is not None else None
        counts = class_counts(y_train, len(classes))
        if not multi and (counts == 1).any():
            lonely = [classes[i] for i in (counts == 1).nonzero()[0][:10]]
            warnings.warn(f"train_data: classes {lonely} have a single example; they stay in training, but one "
                          "example says little about a class", stacklevel=2)
        chosen, reason = choose_strategy(strategy, len(train_rows), counts.tolist(), source)
        note(f"strategy: {chosen} ({reason})")
        weights = class_weights_for(class_weights, y_train, classes, multi)
        task = ClassificationTask(source, train_rows, eval_rows, y_train, y_eval, classes, names, multi, threshold,
                                  weights, token_limit(source, max_length))
        if attention_dropout == "auto":
            attention_dropout = _auto_attention_dropout(train_rows, source.tokenizer, task.max_length)
        if chosen != "finetune":
            args = fewshot_args(task, train_args)
            return fit_fewshot(task, chosen, args, reason=reason, compute_metrics=compute_metrics,
                               attention_dropout=attention_dropout)

        if eval_rows is None and len(train_rows) >= max(SPLIT_MIN_ROWS, SPLIT_MIN_PER_CLASS * len(classes)):
            seed = train_args.get("seed", 42)
            keep, held = validation_split(y_train, seed=seed)
            task.train_rows, task.eval_rows = train_rows.take(keep), train_rows.take(held)
            task.y_train, task.y_eval = y_train[keep], y_train[held]
            task.eval_name = f"a validation split of {len(held)} rows held out from train_data"
            note(f"validation: {len(held)} of {len(train_rows)} rows held out (stratified) for early stopping and "
                 "the best-epoch restore")
        args = finetune_args(len(task.train_rows), train_args)
        if task.eval_rows is not None and "early_stopping" not in train_args:
            args = args.override({"early_stopping": {"patience": PATIENCE}})
        monitor = monitor or ("train_loss" if task.eval_rows is None else ("micro_f1" if multi else "accuracy"))
        use_head = _finetune_head(head, source)
        return fit_finetune(task, args, reason=reason, head=use_head, new_head=source.head is None or labels is not None,
                            pool_batches=pool_batches, monitor=monitor, restore_best=restore_best,
                            head_learning_rate=head_learning_rate, compute_metrics=compute_metrics,
                            attention_dropout=attention_dropout)


def _finetune_head(head: str, source: ClassifierSource) -> str:
    """"auto": "pooled" for a sentence-transformers folder (its encoder was trained for mean-pooled
    embeddings, not for the pooler a sequence-classification head reads) or a pooled
    classifier, else "sequence-classification"."""
    if head != "auto":
        return head
    if source.kind == "classifier":
        return source.model.head
    if source.kind == "path" and (Path(source.model) / "modules.json").is_file():
        return "pooled"
    return "sequence-classification"


def _check_options(threshold: float, max_length: int | None, monitor: str | None, group_by_length: bool | int,
                   head: str, attention_dropout: bool | str) -> int:
    """Check the recipe's own options; return the batches per length-sorted pool."""
    check_attention_dropout(attention_dropout, allow_auto=True)
    if not isinstance(threshold, (int, float)) or not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold: expected a probability in (0, 1), got {threshold!r}")
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2):
        raise ValueError(f"max_length: expected None or an int >= 2, got {max_length!r}")
    if monitor is not None and not isinstance(monitor, str):
        raise ValueError(f"monitor: expected a metric name such as 'accuracy' or 'eval_loss', got {monitor!r}")
    if head not in HEADS:
        raise ValueError(f"head: expected one of {HEADS}, got {head!r}")
    if isinstance(group_by_length, bool):
        return POOL_BATCHES if group_by_length else 1
    if not isinstance(group_by_length, int) or group_by_length < 1:
        raise ValueError(f"group_by_length: expected True, False or an int >= 1 (batches per sorted pool), "
                         f"got {group_by_length!r}")
    return group_by_length


def _auto_attention_dropout(rows: TextRows, tokenizer: Any, max_length: int, sample: int = 1000) -> bool:
    """attention_dropout="auto": keep it (True) unless the training rows (every (N // `sample`)-th
    row: `sample` to 2 x `sample` rows, or all of them) average `LONG_ROW_TOKENS` tokens or more;
    says which and why."""
    some = rows.take(range(0, len(rows), max(1, len(rows) // sample)))
    ids = tokenizer(some.texts, some.pairs, truncation=True, max_length=max_length)["input_ids"]
    mean = sum(map(len, ids)) / max(len(ids), 1)
    keep = mean < LONG_ROW_TOKENS
    note(f"attention dropout: {'kept' if keep else 'left out (SDPA fused attention)'}: {mean:.0f} tokens per "
         f"training row on average ({'<' if keep else '>='} {LONG_ROW_TOKENS})")
    return keep


def _multi_label(multi_label: bool | None, train_labels: list, source: ClassifierSource,
                 labels: Sequence | None) -> bool:
    """Multi-label or not: as asked, else from the data; a trained classifier keeps its kind."""
    if multi_label is False and is_multi_label(train_labels):
        raise ValueError("multi_label: False, but train_data has rows with a list of labels")
    multi = is_multi_label(train_labels) if multi_label is None else bool(multi_label)
    if source.kind == "classifier" and labels is None and multi != source.model.multi_label:
        raise ValueError(f"multi_label: the model was trained with multi_label={source.model.multi_label}, got {multi}")
    return multi
