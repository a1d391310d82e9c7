"""The language-model recipe: tokenized data -> batches -> the shared engine -> a tuned adapter.

Reads top to bottom: batches (length-grouped or packed), optimizer and schedule from the
trainer config, the loss, callbacks, then `finetuner.engine.Trainer.fit`. Evaluation is the
token-weighted mean negative log-likelihood of the labelled tokens and its exponential, the
perplexity.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch

from ..engine.callbacks import CSVLogger, ProgressBar, TensorBoardLogger
from ..engine.trainer import Trainer, make_accelerator
from ..data.sequences import CausalCollator, LengthGroupedBatchSampler, RowDataset, Seq2SeqCollator, pack_rows
from ..llm.callbacks import AdapterCheckpoint, TokenCounter, TokenThroughput, latest_resumable, restore_checkpoint
from ..llm.config import TrainerConfig
from ..models.lm import CAUSAL
from ..losses.language_modeling import LanguageModelingLoss


def make_loader(tokenized, tokenizer, task_type: str, batch_size: int, *, shuffle: bool, packing: bool = False,
                max_length: int | None = None, group_by_length: bool = True, seed: int = 0):
    """A DataLoader of padded (or packed) batches and its batch sampler.

    Args:
        tokenized: `datasets.Dataset` with `input_ids` and `labels`.
        batch_size: rows per batch; shuffle: training order (else sorted by length, fixed).
        packing: pack examples into rows of `max_length` tokens (causal LMs only).
        group_by_length: sort by length within windows of 64 batches (else random batches).
    """
    rows = pack_rows([len(x) for x in tokenized["input_ids"]], max_length) if packing else None
    dataset = RowDataset(tokenized, rows)
    window = 64 if group_by_length else 1
    sampler = LengthGroupedBatchSampler(dataset.lengths, batch_size, shuffle=shuffle, window=window, seed=seed)
    collate = (CausalCollator(tokenizer.pad_token_id, packed=packing) if task_type == CAUSAL
               else Seq2SeqCollator(tokenizer.pad_token_id))
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=0)
    return loader, sampler


def autocast_context(device: str, precision: str):
    """`torch.autocast` for bf16 / fp16, or a no-op context for fp32."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device_type=device.split(":")[0], dtype=dtype, enabled=dtype is not None)


def evaluate_lm(model, tokenized, tokenizer, task_type: str, *, batch_size: int = 8, device: str = "cpu",
                precision: str = "fp32") -> dict:
    """Held-out loss and perplexity over the labelled tokens of `tokenized`.

    Returns:
        {"eval_loss": mean NLL per labelled token (nats), "perplexity": exp(eval_loss),
         "eval_tokens": number of labelled tokens}.
    """
    loader, _ = make_loader(tokenized, tokenizer, task_type, batch_size, shuffle=False)
    loss_fn = LanguageModelingLoss(task_type)
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), autocast_context(device, precision):
            for batch in loader:
                batch = {k: v.to(device) for k, v in batch.items()}
                s, n = loss_fn.sum_and_count(model, batch)
                total, count = total + float(s), count + n
    finally:
        model.train(was_training)
    loss = total / max(count, 1)
    return {"eval_loss": loss, "perplexity": math.exp(min(loss, 50.0)), "eval_tokens": count}


def train_lm(model, tokenizer, tokenized, *, task_type: str, config: TrainerConfig, epochs: int, device: str,
             max_length: int, output_dir: str | None = None, eval_tokenized=None,
             resume_from_checkpoint: bool | str | None = None, callbacks: Sequence = ()):
    """Fine-tune the trainable (LoRA) parameters of `model` through the shared engine.

    Args:
        model: a peft model (or any module whose trainable parameters are the ones to tune).
        tokenized / eval_tokenized: `datasets.Dataset`s with `input_ids` and `labels`.
        task_type: "CAUSAL_LM" or "SEQ_2_SEQ_LM".
        config: batch size, optimizer, schedule, precision, packing, checkpoints, logging.
        epochs: passes over the data; device: "cpu", "cuda", ...; max_length: packing row size.
        output_dir: logs and checkpoints go here (None: nothing written).
        resume_from_checkpoint: True (the newest end-of-epoch checkpoint in output_dir), a
            checkpoint folder, or None/False.
        callbacks: extra engine callbacks.

    Returns:
        (model with the training-time autocast wrapper removed, engine `TrainState`).

    Raises:
        FloatingPointError: the loss became NaN / inf (from the engine).
        FileNotFoundError: `resume_from_checkpoint` names no checkpoint.
    """
    from accelerate.utils import set_seed

    set_seed(config.seed)
    precision = config.resolved_precision(device)
    loader, sampler = make_loader(tokenized, tokenizer, task_type, config.per_device_train_batch_size,
                                  shuffle=True, packing=config.packing, max_length=max_length,
                                  group_by_length=config.group_by_length, seed=config.seed)
    accelerator = make_accelerator(device.split(":")[0] if device != "auto" else "auto", precision,
                                   config.gradient_accumulation_steps)
    optimizer = config.build_optimizer(model)
    total_steps = epochs * max(math.ceil(len(sampler) / config.gradient_accumulation_steps), 1)
    scheduler = config.build_scheduler(optimizer, total_steps)

    loss_fn, counter = LanguageModelingLoss(task_type), TokenCounter()

    def compute_loss(m, batch):
        counter.tokens += int(batch["num_tokens"])
        return loss_fn(m, batch)

    def evaluate(m):
        return evaluate_lm(m, eval_tokenized, tokenizer, task_type, batch_size=config.per_device_eval_batch_size,
                           device=str(accelerator.device), precision=precision)

    cbs = [TokenThroughput(counter)] + ([ProgressBar()] if config.verbose else [])
    checkpoints = None
    if output_dir:
        out = Path(output_dir)
        if "csv" in config.report_to:
            cbs.append(CSVLogger(str(out / "metrics.csv")))
        if "tensorboard" in config.report_to:
            cbs.append(TensorBoardLogger(str(out / "tensorboard")))
        if config.save_strategy != "no":
            checkpoints = AdapterCheckpoint(out / "checkpoints", every_epoch=config.save_strategy == "epoch",
                                            save_steps=config.save_steps, save_total_limit=config.save_total_limit)
            cbs.append(checkpoints)
    cbs += list(config.callbacks()) + list(callbacks)

    use_eval = eval_tokenized is not None and config.eval_strategy == "epoch"
    trainer = Trainer(model, loader, compute_loss, optimizer=optimizer, scheduler=scheduler, epochs=epochs,
                      accelerator=accelerator, evaluate=evaluate if use_eval else None, callbacks=cbs,
                      output_dir=None, max_grad_norm=config.max_grad_norm, sampler=sampler)
    if resume_from_checkpoint:
        path = (latest_resumable(Path(output_dir) / "checkpoints") if resume_from_checkpoint is True and output_dir
                else Path(resume_from_checkpoint) if resume_from_checkpoint is not True else None)
        if path is None:
            raise FileNotFoundError(f"resume_from_checkpoint: no end-of-epoch checkpoint under "
                                    f"{Path(output_dir or '.') / 'checkpoints'}")
        restore_checkpoint(trainer, path)
    state = trainer.fit()
    if checkpoints is not None and config.save_steps and state.global_step != checkpoints._last_step:
        checkpoints.save(trainer, epoch_end=True)  # the final step, when it was not on a save_steps boundary
    model = trainer.final_model()  # generation and saving see the plain model again
    return model, state
