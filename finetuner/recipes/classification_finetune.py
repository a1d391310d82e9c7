"""The "finetune" strategy of the classification recipe: the whole model trained end to end with
cross-entropy on the shared engine, its schedule set by the data size.

Reads top to bottom: the settings from the data size, the classifier (a transformers sequence
classifier with a new head, or a `PooledClassifier` whose head starts as the linear probe),
tokenising, the length-grouped batches, one real batch through model and loss, the metrics
before training, the engine's run (early stopping and the best epoch restored on the
validation data), then `finish`.

The schedule follows Devlin et al. (2019) and the stability findings of Mosbach et al. (2021,
"On the Stability of Fine-tuning BERT") and Zhang et al. (2021, "Revisiting Few-sample BERT
Fine-tuning"): AdamW with bias correction, warm-up then linear decay, and on small data more
passes rather than the 3 epochs meant for thousands of rows: the passes are set so the run
takes at least `MIN_STEPS` optimizer steps, and the encoder's learning rate grows with the square
root of the batch (`scaled_learning_rate`). The head learns at `HEAD_LR_SCALE` times the
encoder's rate; a pooled head starts from a logistic regression on the frozen embeddings of at
most `PROBE_ROWS_PER_CLASS` rows per class (LP-FT, Kumar et al., 2022), so the first steps do not
push a random head's gradients into the encoder.
"""

from __future__ import annotations

import math

import torch

from ..config import TrainArgs
from ..console import note
from ..data.label_space import stratified_sample
from ..data.samplers import LengthGroupedBatchSampler
from ..data.text_batches import padding_collator, tokenize_rows
from ..engine.predict import move_to_device
from ..evaluation.classification import classifier_eval_metrics
from ..losses.classification import classification_loss
from ..models.classifier import TextClassifier
from ..models.dropout import set_attention_dropout, use_fast_dropout
from .classification_model import ClassificationResult, ClassificationTask, build_classifier, build_pooled
from .fewshot import fit_head
from .finish import finish
from .run import optimizer_for, prepare, standard_callbacks, train

DEFAULTS = TrainArgs(epochs=3, batch_size=32, weight_decay=0.01, optimizer="adamw",  # lr: scaled_learning_rate
                     scheduler="linear", warmup_ratio=0.1, max_grad_norm=1.0, eval_batch_size=64, precision="auto")
BASE_LR, BASE_BATCH = 5e-5, 8  # the learning rate at batch 8; other batches scale it (scaled_learning_rate)
SMALL_BATCH, SMALL_ROWS = 16, 2000  # batch 16 below 2,000 rows: more steps where there are few
MIN_STEPS = 300  # optimizer steps at least (more passes on small data) ...
MIN_EPOCHS, MAX_EPOCHS = 3, 20  # ... within these passes
HEAD_LR_SCALE = 20.0  # the head's learning rate over the encoder's
PATIENCE = 2  # epochs without a better validation score before stopping
# the linear probe the pooled head starts from sees at most this many rows per class: a start
# for the head, not its end; embedding every row of a large set cost a tenth of a run (MRPC: 22 of 213 s)
PROBE_ROWS_PER_CLASS = 128


def finetune_args(n_rows: int, train_args: dict) -> TrainArgs:
    """The settings for `n_rows` training rows: batch 16 below `SMALL_ROWS` rows, else 32;
    the learning rate from the batch (`scaled_learning_rate`); passes for at least `MIN_STEPS`
    steps within [`MIN_EPOCHS`, `MAX_EPOCHS`]; then the caller's settings (each given one
    wins)."""
    args = DEFAULTS.override({"batch_size": SMALL_BATCH if n_rows < SMALL_ROWS else DEFAULTS.batch_size})
    args = args.override({k: v for k, v in train_args.items() if k in ("batch_size", "gradient_accumulation_steps")})
    batch = args.batch_size * args.gradient_accumulation_steps
    steps_per_epoch = max(1, math.ceil(n_rows / batch))
    epochs = min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(MIN_STEPS / steps_per_epoch)))
    return args.override({"epochs": epochs, "learning_rate": scaled_learning_rate(batch)}).override(train_args)


def scaled_learning_rate(batch: int) -> float:
    """The encoder's learning rate for an effective batch of `batch` rows: `BASE_LR` at
    `BASE_BATCH` rows (the BERT fine-tuning recipe's 5e-5 at batch 8), scaled by the square root
    of the batch ratio, the rule for Adam-type optimizers of Malladi et al. (2022, "On the SDEs
    and Scaling Rules for Adaptive Gradient Algorithms"): 7.1e-5 at 16, 1e-4 at 32.

    Measured on MRPC (seed 42, 2 CPU cores, no attention dropout): batch 32 at 5e-5 scored
    0.777 on the dev pairs, at 1e-4 0.806; batch 16 at 5e-5 0.814 (the Trainer at batch 8,
    5e-5: 0.809)."""
    return BASE_LR * math.sqrt(batch / BASE_BATCH)


def fit_finetune(task: ClassificationTask, args: TrainArgs, *, reason: str, head: str, new_head: bool,
                 pool_batches: int, monitor: str, restore_best: bool, head_learning_rate: float | None = None,
                 compute_metrics=None, settings: dict | None = None,
                 attention_dropout: bool = True) -> ClassificationResult:
    """Fine-tune a text classifier end to end and `finish` the run.

    Args:
        task: the prepared data; `task.eval_rows` (eval_data or a held-out validation split,
            or None) drive early stopping and the best-epoch restore.
        args: the resolved training settings (see `finetune_args`).
        reason: why this strategy was chosen (kept in `settings`).
        head: "sequence-classification" (the transformers head on the encoder's pooler) or
            "pooled" (`PooledClassifier`: mean-pooled, normalised embedding, linear head).
        new_head: replace a trained head of the model (a transformers head; a pooled head is
            kept when the classes are the same).
        pool_batches: batches per length-sorted pool (1: random batches).
        monitor: the metric early stopping and the restore watch.
        restore_best: load the best epoch's weights at the end (with eval rows).
        head_learning_rate: the head's rate; default `HEAD_LR_SCALE` x `args.learning_rate`.
        compute_metrics: the user's `(EvalPrediction) -> dict`.
        settings: more entries for `result.settings`.
        attention_dropout: keep the model's attention-probability dropout (see
            `classification.fit_classification`).

    Raises:
        ValueError: a monitor that is not logged; a model without trainable parameters.
        FloatingPointError: the loss became NaN or infinite.
    """
    accelerator, precision = prepare(args)  # seeds every RNG: the new head's init follows
    source, multi = task.source, task.multi_label
    if head == "pooled":
        clf = build_pooled(task, strategy="finetune")
        if not (source.kind == "classifier" and source.model.head == "pooled" and source.model.classes == task.classes):
            clf.to(accelerator.device)  # start from the linear probe (LP-FT), on a stratified sample
            probe = stratified_sample(task.y_train, PROBE_ROWS_PER_CLASS, seed=args.seed)
            embeddings = clf.embed(task.train_rows.take(probe), args.eval_batch_size, precision=precision)
            weight, bias = fit_head(embeddings, task.y_train[probe], len(task.classes), multi_label=multi,
                                    seed=args.seed)
            clf.model.set_head(weight, bias)
    else:
        clf = build_classifier(task, new_head=new_head, strategy="finetune")
        if source.kind == "path":
            note(f"{'new' if new_head else 'trained'} classification head: {len(task.classes)} labels {task.names[:10]}")
    clf.to(accelerator.device)
    use_fast_dropout(clf.model)  # the same dropout, a cheaper mask (models.dropout)
    set_attention_dropout(clf.model, attention_dropout)  # off: SDPA's fused kernel (models.dropout)
    train_set = tokenize_rows(task.train_rows, task.y_train, clf.tokenizer, task.max_length)
    collate = padding_collator(clf.tokenizer)
    sampler = LengthGroupedBatchSampler([len(ids) for ids in train_set["input_ids"]], args.batch_size,
                                        pool_batches=pool_batches, seed=args.seed)
    loader = torch.utils.data.DataLoader(train_set, batch_sampler=sampler, collate_fn=collate)

    def compute_loss(m: torch.nn.Module, batch: dict) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        return classification_loss(m(**inputs), batch["labels"], multi_label=multi, class_weights=task.weights)

    def evaluate(m: TextClassifier, in_precision: str = "fp32") -> dict:
        logits = m.logits(task.eval_rows, args.eval_batch_size, precision=in_precision)
        return classifier_eval_metrics(logits, task.y_eval, multi_label=multi,
                                       threshold=task.threshold, class_weights=task.weights,
                                       compute_metrics=compute_metrics)

    has_eval = task.eval_rows is not None
    # one real batch through model and loss before any long work: inputs the model cannot take fail here
    with torch.no_grad():
        compute_loss(clf, move_to_device(collate([train_set[i] for i in next(iter(sampler))]), accelerator.device))
    metrics_before = evaluate(clf) if has_eval else {}
    if has_eval and monitor not in metrics_before and monitor != "train_loss":
        raise ValueError(f"monitor: {monitor!r} is not a logged metric; logged: {['train_loss', *metrics_before]}")

    args = _fused_adamw(args, accelerator.device)
    head_lr = head_learning_rate or args.learning_rate * HEAD_LR_SCALE
    optimizer, scheduler = optimizer_for(clf, args, len(sampler), params=param_groups(clf, args, head_lr))
    callbacks = standard_callbacks(args, monitor, restore_best=has_eval and restore_best)
    try:
        run = train(clf, loader, compute_loss, args=args, accelerator=accelerator, optimizer=optimizer,
                    scheduler=scheduler, callbacks=callbacks, sampler=sampler, precision=precision,
                    # the epochs are compared in the training precision (bf16: several times faster
                    # on the CPU); before / after measure the fp32 model the user gets
                    evaluate=(lambda m: evaluate(m, precision)) if has_eval else None,
                    final_evaluate=evaluate if has_eval else None)
    finally:
        set_attention_dropout(clf.model, True)  # the model goes back with the attention it came with
    run.model.eval()
    result = ClassificationResult(run.model, run.state.history, metrics_before, run.metrics_after, settings={
        "task": "classification", "table_title": f"classification metrics on {task.eval_name}",
        "strategy": "finetune", "strategy_reason": reason, **args.to_dict(), "head_learning_rate": head_lr,
        "attention_dropout": attention_dropout, "head": head, "precision": precision,
        "num_labels": len(task.classes), "classes": task.classes,
        "multi_label": multi, "group_by_length": pool_batches, "max_length": task.max_length, "monitor": monitor,
        "best_epoch": run.state.best_epoch, "train_items": len(task.train_rows),
        "eval_items": len(task.eval_rows) if has_eval else 0, "eval_data": task.eval_name,
        "pairs": task.train_rows.pairs is not None, **(settings or {})})
    return finish(result, args, is_main_process=accelerator.is_main_process)


def _fused_adamw(args: TrainArgs, device: torch.device) -> TrainArgs:
    """AdamW by name runs fused where the device has the fused kernel (CPU, CUDA), as
    `transformers.Trainer` does, unless optimizer_kwargs says otherwise."""
    kwargs = dict(args.optimizer_kwargs or {})
    if not (isinstance(args.optimizer, str) and args.optimizer.lower() == "adamw") or "fused" in kwargs:
        return args
    return args.override({"optimizer_kwargs": {**kwargs, "fused": device.type in ("cpu", "cuda")}})


def param_groups(clf: TextClassifier, args: TrainArgs, head_lr: float) -> list[dict]:
    """The optimizer's parameter groups: encoder and head apart (the head at `head_lr`), and
    weight decay on weight matrices only, never on biases and LayerNorm weights (as in BERT and
    `transformers.Trainer`).

    Raises:
        ValueError: nothing is trainable.
    """
    named = [(n, p) for n, p in clf.model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("model: it has no trainable parameter (everything is frozen): nothing to train")
    prefix = getattr(clf.model, "base_model_prefix", None) or "encoder"
    groups = []
    for is_head in (False, True):
        for decay in (True, False):
            params = [p for n, p in named if (not n.startswith(prefix + ".")) == is_head and (p.ndim >= 2) == decay]
            if params:
                groups.append({"params": params, "weight_decay": args.weight_decay if decay else 0.0,
                               "lr": head_lr if is_head else args.learning_rate})
    return groups
