"""Few-shot text classification: SetFit (Tunstall et al., 2022, "Efficient Few-Shot Learning
Without Prompts") on the project's own pieces, and the linear probe it starts from.

- "setfit": the sentence encoder is tuned contrastively on the class labels by the text
  recipe (`fit_text`): batches of `num_items_per_class` texts per class
  (`GroupBatchSampler` chunks), every text once per epoch, and an in-batch-negative loss
  (`InfoNCELoss`: each text against every other text of the batch, same class = positive);
  the pairs seen grow linearly with the data, unlike SetFit's sampled pairs, which grow with
  its square. Then a logistic regression is fitted on the tuned, L2-normalised embeddings and
  becomes the linear head of a `PooledClassifier`.
- "linear-probe": the same head on the frozen encoder's embeddings (no training of the encoder).

On W processes (`torchrun`, `accelerate launch`) the contrastive step is the text recipe's
data-parallel run (every text once per epoch across the processes, the in-batch negatives
gathered from all of them); the head is fitted once, on process 0, and set on every process;
the evaluations run on process 0; process 0 alone saves.

Text pairs are joined into one text with the tokenizer's separator for the contrastive step
(the classifier reads them the same way); multi-label rows are grouped by their set of labels,
and the head is one logistic regression per class.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..config import TrainArgs
from ..console import note
from ..data.labeled import LabeledData
from ..engine.distributed import on_main
from ..evaluation.classification import classifier_eval_metrics
from ..losses import InfoNCELoss
from .classification_model import ClassificationResult, ClassificationTask, build_pooled
from .finish import finish
from .run import prepare
from .text import fit_text

# the contrastive step: 4 texts per class in a batch of up to 32 (chosen by the sweep in
# benchmarks/fewshot_vs_setfit.py), AdamW at 5e-5 (the text recipe's, with a linear decay after
# 10% warm-up), bf16 where the CPU / GPU has it
DEFAULTS = TrainArgs(epochs=1, batch_size=32, learning_rate=5e-5, optimizer="adamw", scheduler="linear",
                     warmup_ratio=0.1, precision="auto", eval_batch_size=256)
ITEMS_PER_CLASS = 4
TEMPERATURE = 0.05
TARGET_STEPS = 40  # optimizer steps of the contrastive step on small data ...
MAX_EPOCHS = 20  # ... with every text seen at most this many times
HEAD_C = 1.0  # inverse L2 strength of the logistic-regression head (scikit-learn's default)


def contrastive_epochs(n_rows: int, batch_size: int) -> int:
    """Passes of the contrastive step: enough for `TARGET_STEPS` optimizer steps, at least 1,
    at most `MAX_EPOCHS` (so 16 texts get 20 passes and 5,000 texts one)."""
    steps_per_epoch = max(1, math.ceil(n_rows / batch_size))
    return int(min(MAX_EPOCHS, max(1, math.ceil(TARGET_STEPS / steps_per_epoch))))


def fewshot_args(task: ClassificationTask, train_args: dict) -> TrainArgs:
    """`DEFAULTS` with the passes from the data size, then the caller's settings."""
    args = DEFAULTS.override(train_args)
    if "epochs" not in train_args:
        args = args.override({"epochs": contrastive_epochs(len(task.train_rows), args.batch_size)})
    return args


def fit_fewshot(task: ClassificationTask, strategy: str, args: TrainArgs, *, reason: str,
                compute_metrics=None, settings: dict | None = None,
                attention_dropout: bool = True) -> ClassificationResult:
    """Train a `PooledClassifier` by `strategy` ("setfit" or "linear-probe"), evaluate it on
    `task.eval_rows` before and after, and `finish` the run.

    Args:
        task: the prepared data (see `ClassificationTask`).
        strategy: "setfit" (contrastive tuning of the encoder, then the head) or
            "linear-probe" (the head only).
        args: the contrastive step's settings (epochs, batch_size, learning_rate, ...; unused
            by "linear-probe" except seed, precision, device, output_dir, verbose).
        reason: why this strategy was chosen (kept in `settings`).
        compute_metrics: the user's `(EvalPrediction) -> dict`, added to the eval metrics.
        settings: more entries for `result.settings`.
        attention_dropout: keep the encoder's attention-probability dropout in the contrastive
            step (see `text.fit_text`).

    Returns:
        `ClassificationResult`; `.history` holds the contrastive step's epochs (train_loss).
    """
    accelerator, precision = prepare(args)  # seeds every RNG
    clf = build_pooled(task, strategy=strategy)
    clf.to(accelerator.device)

    def metrics() -> dict:
        return classifier_eval_metrics(clf.logits(task.eval_rows, args.eval_batch_size), task.y_eval,
                                       multi_label=task.multi_label, threshold=task.threshold,
                                       class_weights=task.weights, compute_metrics=compute_metrics)

    def evaluate() -> dict:  # on process 0 only; every process gets its numbers
        return {} if task.eval_rows is None else on_main(metrics)

    def head() -> tuple[np.ndarray, np.ndarray]:
        embeddings = clf.embed(task.train_rows, args.eval_batch_size, precision=precision)
        return fit_head(embeddings, task.y_train, len(task.classes), multi_label=task.multi_label,
                        class_weights=None if task.weights is None else task.weights.numpy(), seed=args.seed)

    def fit_head_on_embeddings() -> None:  # fitted once, on process 0; every process sets the same head
        clf.model.set_head(*on_main(head))

    history: list = []
    if strategy == "setfit":
        if task.eval_rows is not None:  # "before": the same head on the frozen encoder (the linear probe)
            fit_head_on_embeddings()
        metrics_before = evaluate()
        texts, groups = contrastive_items(task, clf.tokenizer)
        phase = {k: v for k, v in args.as_kwargs().items() if k not in ("output_dir", "resume", "report",
                                                                        "early_stopping")}
        tuned = fit_text(clf.model.encoder, LabeledData(texts, groups), loss=InfoNCELoss(TEMPERATURE),
                         num_items_per_class=ITEMS_PER_CLASS, attention_dropout=attention_dropout, **phase)
        history = tuned.history
    else:
        metrics_before = evaluate()  # the untrained head
    fit_head_on_embeddings()
    clf.eval()
    metrics_after = evaluate()
    result = ClassificationResult(clf, history, metrics_before, metrics_after, settings={
        "task": "classification", "table_title": f"classification metrics on {task.eval_name}",
        "strategy": strategy, "strategy_reason": reason, **args.to_dict(), "precision": precision,
        "num_labels": len(task.classes), "classes": task.classes, "multi_label": task.multi_label,
        "max_length": task.max_length, "train_items": len(task.train_rows),
        "eval_items": len(task.eval_rows) if task.eval_rows is not None else 0, "eval_data": task.eval_name,
        "pairs": task.train_rows.pairs is not None, "head": "logistic regression (C=%g) on the %s embeddings"
        % (HEAD_C, "tuned" if strategy == "setfit" else "frozen"),
        **({"loss": f"InfoNCELoss(temperature={TEMPERATURE})", "num_items_per_class": ITEMS_PER_CLASS,
            "attention_dropout": attention_dropout} if strategy == "setfit" else {}), **(settings or {})})
    return finish(result, args, is_main_process=accelerator.is_main_process)


def contrastive_items(task: ClassificationTask, tokenizer) -> tuple[list[str], np.ndarray]:
    """The texts of the contrastive step (a pair joined by the tokenizer's separator, as the
    classifier encodes it) and their groups, int64 [N]: the class id, or for multi-label rows
    the id of the row's set of labels."""
    rows = task.train_rows
    sep = f" {tokenizer.sep_token} " if getattr(tokenizer, "sep_token", None) else " "
    texts = rows.texts if rows.pairs is None else [a + sep + b for a, b in zip(rows.texts, rows.pairs)]
    if not task.multi_label:
        return list(texts), np.asarray(task.y_train, dtype=np.int64)
    keys = [tuple(np.flatnonzero(t).tolist()) for t in task.y_train]
    ids = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    return list(texts), np.asarray([ids[k] for k in keys], dtype=np.int64)


def fit_head(x: np.ndarray, targets: np.ndarray, num_classes: int, *, multi_label: bool = False,
             class_weights: np.ndarray | None = None, c: float = HEAD_C, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A logistic-regression head on embeddings, as a linear layer (weight [C, D], bias [C]).

    Single-label: multinomial logistic regression (scikit-learn, L-BFGS, L2 with inverse
    strength `c`); softmax(weight @ x + bias) equals its `predict_proba` (for 2 classes the one
    decision function is split symmetrically over the two rows). Classes without a training
    row get a bias far below the others. Multi-label: one binary logistic regression per class
    (sigmoid(weight @ x + bias) = its probability); a class that is always or never present gets
    a constant logit, log((n_pos + 0.5) / (n_neg + 0.5)).

    Args:
        x: float [N, D] embeddings.
        targets: int64 [N] class ids, or float32 [N, C] multi-hot targets.
        num_classes: C.
        class_weights: float [C] per-class weights (multi-label: the positive rows' weight), or None.
        c: inverse regularisation strength (> 0).
    """
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(x, dtype=np.float64)
    weight, bias = np.zeros((num_classes, x.shape[1])), np.zeros(num_classes)
    if multi_label:
        for k in range(num_classes):
            y = targets[:, k] > 0.5
            pos = int(y.sum())
            if pos in (0, len(y)):
                bias[k] = math.log((pos + 0.5) / (len(y) - pos + 0.5))
                continue
            cw = None if class_weights is None else {True: float(class_weights[k]), False: 1.0}
            lr = LogisticRegression(C=c, max_iter=1000, class_weight=cw, random_state=seed).fit(x, y)
            weight[k], bias[k] = lr.coef_[0], lr.intercept_[0]
        return weight, bias
    seen = np.unique(targets)
    cw = None if class_weights is None else {int(k): float(class_weights[k]) for k in seen}
    lr = LogisticRegression(C=c, max_iter=1000, class_weight=cw, random_state=seed).fit(x, targets)
    if len(seen) == 2:
        coef, icpt = lr.coef_[0] / 2, lr.intercept_[0] / 2
        weight[seen[0]], bias[seen[0]], weight[seen[1]], bias[seen[1]] = -coef, -icpt, coef, icpt
    else:
        weight[seen], bias[seen] = lr.coef_, lr.intercept_
    missing = np.setdiff1d(np.arange(num_classes), seen)
    if len(missing):
        bias[missing] = bias[seen].min() - 20.0
    return weight, bias
