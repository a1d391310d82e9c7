"""The language-model recipe: tokenized instruction data -> batches -> the shared engine -> a
tuned adapter.

Reads top to bottom: resolve the arguments, check packing, the accelerator and precision
(`recipes.run.prepare`), batches (length-grouped or packed), the held-out metrics before
training, optimizer and schedule, callbacks, the engine's run (`recipes.run.train`, resume and
checkpoints included), then the saved model, metrics.json and the table (`recipes.finish`).
Evaluation is the token-weighted mean negative log-likelihood of the labelled tokens and its
exponential, the perplexity, through the one batched predict (`engine.predict.predict_batches`).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..config import TrainArgs
from ..console import note, verbosity
from ..data.samplers import LengthGroupedBatchSampler
from ..data.sequences import CAUSAL, CausalCollator, RowDataset, Seq2SeqCollator, pack_rows
from ..engine.callbacks import CSVLogger, TensorBoardLogger
from ..engine.checkpoint import latest_checkpoint
from ..engine.distributed import mean_over
from ..engine.optim import build_scheduler as named_scheduler
from ..engine.predict import model_device, predict_batches
from ..engine.throughput import TokenThroughput
from ..losses.language_modeling import LanguageModelingLoss
from .finish import finish
from .result import FitResult
from .run import optimizer_for, prepare, standard_callbacks, train

# the defaults of `TrainerConfig` (LoRA: a small batch, AdamW at 2e-4 without weight decay,
# linear decay, clipping at 1.0)
DEFAULTS = TrainArgs(epochs=3, batch_size=4, learning_rate=2e-4, optimizer="adamw",
                     optimizer_kwargs={"weight_decay": 0.0}, scheduler="linear", max_grad_norm=1.0,
                     eval_batch_size=8, report=False)
SORTED_POOL = 64  # batches per length-sorted pool of `group_by_length`
LOGGERS = {"csv": CSVLogger, "tensorboard": TensorBoardLogger}


def make_loader(tokenized, tokenizer, task_type: str, batch_size: int, *, shuffle: bool, packing: bool = False,
                max_length: int | None = None, group_by_length: bool = True, seed: int = 0):
    """A DataLoader of padded (or packed) batches and its batch sampler.

    Args:
        tokenized: `datasets.Dataset` with `input_ids` and `labels`.
        batch_size: rows per batch; shuffle: training order (else sorted by length, longest first).
        packing: pack examples into rows of `max_length` tokens (causal LMs only).
        group_by_length: sort by length within pools of 64 batches (else random batches).
    """
    rows = pack_rows([len(x) for x in tokenized["input_ids"]], max_length) if packing else None
    dataset = RowDataset(tokenized, rows)
    sampler = LengthGroupedBatchSampler(dataset.lengths, batch_size, pool_batches=SORTED_POOL if group_by_length else 1,
                                        shuffle=shuffle, seed=seed)
    collate = (CausalCollator(tokenizer.pad_token_id, packed=packing) if task_type == CAUSAL
               else Seq2SeqCollator(tokenizer.pad_token_id))
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=0)
    return loader, sampler


def evaluate_lm(model, tokenized, tokenizer, task_type: str, *, batch_size: int = 8, device=None,
                precision: str = "fp32") -> dict:
    """Held-out loss and perplexity over the labelled tokens of `tokenized`.

    Args:
        device: where the batches go (default the model's device); precision: "fp32", or
            "bf16" / "fp16" autocast.

    Returns:
        {"eval_loss": mean NLL per labelled token (nats), "perplexity": exp(eval_loss),
         "eval_tokens": number of labelled tokens}.
    """
    loader, _ = make_loader(tokenized, tokenizer, task_type, batch_size, shuffle=False)
    loss_fn = LanguageModelingLoss(task_type)
    total, count = 0.0, 0
    for batch_sum, batch_count in predict_batches(model, loader, forward=loss_fn.sum_and_count, device=device,
                                                  precision=precision):
        total, count = total + float(batch_sum), count + batch_count
    loss = total / max(count, 1)
    return {"eval_loss": loss, "perplexity": math.exp(min(loss, 50.0)), "eval_tokens": count}


def check_packing(model: torch.nn.Module, task_type: str) -> None:
    """Packing relies on the model separating examples by restarting position_ids: verify it on
    two short random sequences (packed logits must equal separate ones).

    Raises:
        ValueError: a seq2seq model, or one whose attention lets packed examples see each other.
    """
    if task_type != CAUSAL:
        raise ValueError("packing: packing applies to causal LMs only; set packing=False")
    g = torch.Generator().manual_seed(0)
    vocab = min(int(getattr(model.config, "vocab_size", 1000) or 1000), 1000)
    a, b = torch.randint(10, vocab, (1, 6), generator=g), torch.randint(10, vocab, (1, 5), generator=g)
    device = model_device(model)
    with torch.no_grad():
        sep = model(input_ids=b.to(device), use_cache=False).logits[0]
        ids = torch.cat([a, b], 1).to(device)
        pos = torch.cat([torch.arange(6), torch.arange(5)])[None].to(device)
        packed = model(input_ids=ids, position_ids=pos, use_cache=False).logits[0, 6:]
    if not torch.allclose(sep.float(), packed.float(), atol=1e-2, rtol=1e-2):
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        raise ValueError(f"packing: {type(inner).__name__} lets packed examples attend to each other (it ignores "
                         "restarting position_ids); set packing=False")


def fit_llm(model: torch.nn.Module, tokenizer, train_data, eval_data=None, *, task_type: str = CAUSAL,
            max_length: int | None = None, packing: bool = False, group_by_length: bool = True,
            eval_each_epoch: bool = True, loggers: Sequence[str] = ("csv",),
            build_optimizer: Callable | None = None, build_scheduler: Callable | None = None,
            save: Callable[[torch.nn.Module, Path], Any] | None = None, settings: dict | None = None,
            write_report: Callable[[Path, FitResult], Path] | None = None,
            args: TrainArgs | None = None, **train_args: Any) -> FitResult:
    """Fine-tune the trainable (LoRA) parameters of a language model through the shared engine;
    `finetuner.llm.FineTuner.train` calls this.

    Args:
        model: a peft model (or any LM whose trainable parameters are the ones to tune).
        tokenizer: its tokenizer (the pad token).
        train_data / eval_data: `datasets.Dataset`s with `input_ids` and `labels` (-100 where no
            loss is taken), e.g. from `finetuner.llm.DefaultPreprocessor`.
        task_type: "CAUSAL_LM" or "SEQ_2_SEQ_LM".
        max_length: tokens per packed row (with `packing`).
        packing: pack several examples per row, without attention or loss across them (causal LMs).
        group_by_length: batch examples of similar length together.
        eval_each_epoch: evaluate `eval_data` after each epoch (else before and after training only).
        loggers: any of "csv", "tensorboard": OUTPUT_DIR/metrics.csv, OUTPUT_DIR/tensorboard.
        build_optimizer: `(model) -> optimizer` used instead of `args.optimizer`.
        build_scheduler: `(optimizer, total_steps) -> scheduler` used instead of `args.scheduler`.
        save: `(model, output_dir)`: writes the tuned model into OUTPUT_DIR (main process), before
            metrics.json.
        settings: recorded in the result's settings, beside the recipe's own.
        write_report: `(output_dir, result) -> path`: writes the run's report (main process, after
            metrics.json; a failure only warns), e.g. `finetuner.report.llm_page.write_llm_report`.
        args / **train_args: `finetuner.config.TrainArgs` (fields may also be given by name);
            defaults `DEFAULTS`. `resume=True` continues from the newest checkpoint (end-of-epoch,
            or step-N with `save_steps`: mid-epoch).

    Returns:
        `FitResult`: the model (without the training-time autocast wrapper), per-epoch history
        (train_loss, train_tokens, train_tokens_per_s, eval_loss, perplexity, eval_tokens),
        held-out metrics before / after.

    Raises:
        ValueError: packing for a model that cannot keep packed examples apart, or without max_length.
        FileNotFoundError: `resume=True` with no checkpoint in output_dir.
        FloatingPointError: the loss became NaN or infinite.
    """
    args = (args or DEFAULTS).override(train_args, "fit_llm")
    with verbosity(args.verbose):
        if args.resume is True and (not args.output_dir or latest_checkpoint(args.output_dir) is None):
            raise FileNotFoundError(f"resume_from_checkpoint: no checkpoint under "
                                    f"{Path(args.output_dir or '.') / 'checkpoints'}")
        if packing:
            if not max_length:
                raise ValueError("max_length: packing needs the row length in tokens, got None")
            check_packing(model, task_type)
        accelerator, precision = prepare(args)
        loader, sampler = make_loader(train_data, tokenizer, task_type, args.batch_size, shuffle=True, packing=packing,
                                      max_length=max_length, group_by_length=group_by_length, seed=args.seed)
        evaluate = (_held_out(eval_data, tokenizer, task_type, args.eval_batch_size, accelerator.device, precision)
                    if eval_data is not None else None)
        metrics_before = evaluate(model) if evaluate else {}
        optimizer, scheduler = _optimizer(model, args, len(sampler), build_optimizer, build_scheduler)
        loss_fn, throughput = LanguageModelingLoss(task_type), TokenThroughput()

        def compute_loss(m: torch.nn.Module, batch: dict) -> torch.Tensor:
            throughput.add(batch["num_tokens"])
            return mean_over(*loss_fn.sum_and_count(m, batch))  # token-weighted across processes

        # the standard callbacks, the token throughput first, only the loggers asked for
        unwanted = tuple(kind for name, kind in LOGGERS.items() if name not in loggers)
        given = {id(cb) for cb in args.callbacks}
        callbacks = [cb for cb in standard_callbacks(args, "eval_loss", first=[throughput])
                     if id(cb) in given or not isinstance(cb, unwanted)]
        run = train(model, loader, compute_loss, args=args, accelerator=accelerator, optimizer=optimizer,
                    scheduler=scheduler, callbacks=callbacks, evaluate=evaluate if eval_each_epoch else None,
                    sampler=sampler, precision=precision, save_fn=None)
        metrics_after = run.metrics_after if eval_each_epoch or evaluate is None else evaluate(run.model)
        result = FitResult(run.model, run.state.history, metrics_before, metrics_after, settings={
            "task": "llm", "table_title": "held-out response tokens", **(settings or {}), "epochs": args.epochs,
            "precision": precision})
        if run.state.history:
            last = run.state.history[-1]
            note(f"trained {len(run.state.history)} epoch(s): train_loss {last['train_loss']:.4f}, "
                 f"{last.get('train_tokens_per_s', float('nan')):.0f} tokens/s")
        if save is not None and args.output_dir and accelerator.is_main_process:
            save(run.model, Path(args.output_dir))
        if write_report is not None:
            args = dataclasses.replace(args, report=True)
        return finish(result, args, is_main_process=accelerator.is_main_process, save_model=None,
                      write_report=(lambda out: write_report(out, result)) if write_report is not None else None)


def _optimizer(model, args: TrainArgs, batches: int, build_optimizer, build_scheduler):
    """The optimizer and schedule of `args` (`recipes.run.optimizer_for`), or the custom ones."""
    optimizer, scheduler = optimizer_for(model, args, batches)
    if build_optimizer is None and build_scheduler is None:
        return optimizer, scheduler
    total = args.epochs * max(math.ceil(batches / args.gradient_accumulation_steps), 1)
    optimizer = build_optimizer(model) if build_optimizer is not None else optimizer
    scheduler = (build_scheduler(optimizer, total) if build_scheduler is not None
                 else named_scheduler(args.scheduler, optimizer, total, args.warmup_ratio))
    return optimizer, scheduler


def _held_out(tokenized, tokenizer, task_type: str, batch_size: int, device, precision: str) -> Callable:
    """`evaluate(model) -> metrics` on `tokenized`, in the run's precision; a model whose
    trainable weights did not change since the last call (the final model after the last
    epoch's evaluation) gets the same metrics without another pass."""
    last: dict = {}

    def evaluate(model: torch.nn.Module) -> dict:
        key = tuple(float(p.detach().double().sum()) for p in model.parameters() if p.requires_grad)
        if last.get("key") != key:
            last.update(key=key, metrics=evaluate_lm(model, tokenized, tokenizer, task_type, batch_size=batch_size,
                                                     device=device, precision=precision))
        return dict(last["metrics"])

    return evaluate
