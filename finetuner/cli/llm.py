"""`finetuner llm ...`: train, generate with and merge LoRA / QLoRA adapters from the shell.

Heavy imports (torch, transformers, peft) happen inside the commands, so `finetuner --help`
stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Fine-tune a language model with LoRA / QLoRA, and generate with it.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)


def _quantize(value: str):
    choices = {"none": False, "4bit": "4bit", "8bit": "8bit"}
    if value not in choices:
        raise typer.BadParameter(f"expected one of {sorted(choices)}, got {value!r}", param_hint="--quantize")
    return choices[value]


def _subset(spec: Optional[str], limit: Optional[int], data_dir: Optional[Path]):
    """The dataset for `spec`, cut to its first `limit` rows."""
    if spec is None:
        return None
    from ..llm.data import load_instructions

    data = load_instructions(spec, str(data_dir) if data_dir else None)
    return data.select(range(min(limit, len(data)))) if limit else data


@app.command()
def train(
    model: str = typer.Argument(..., help="model folder, .gguf file, hub id, or alias: smollm2, minilm"),
    dataset: str = typer.Option(..., "--dataset", help="JSON/JSONL/CSV file or toy data: lima, selfinstruct"),
    output_dir: Path = typer.Option(Path("runs/llm"), help="adapter, tokenizer, metrics and checkpoints go here"),
    eval_dataset: Optional[str] = typer.Option(None, help="held-out data, e.g. lima:test"),
    num_examples: Optional[int] = typer.Option(None, help="use only the first N training examples"),
    num_eval_examples: Optional[int] = typer.Option(None, help="use only the first N held-out examples"),
    epochs: int = typer.Option(1, help="passes over the training data"),
    max_length: int = typer.Option(512, help="longest sequence in tokens"),
    batch_size: int = typer.Option(4), learning_rate: float = typer.Option(2e-4),
    gradient_accumulation_steps: int = typer.Option(1),
    lora_r: int = typer.Option(16), lora_alpha: float = typer.Option(32),
    lora_target_modules: Optional[str] = typer.Option(None, help="comma-separated layer names (default: per architecture)"),
    quantize: str = typer.Option("none", help="none, 4bit (QLoRA NF4) or 8bit"),
    packing: bool = typer.Option(False, help="pack several examples per row (no attention across them)"),
    precision: str = typer.Option("auto", help="auto, fp32, bf16 or fp16"),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, ... (default: cuda if available)"),
    data_dir: Optional[Path] = typer.Option(None, help="folder of the toy data sets (default $FINETUNER_DATA)"),
    resume: bool = typer.Option(False, help="continue from the newest checkpoint in output_dir (end-of-epoch or step-N)"),
    prompt: Optional[str] = typer.Option(None, help="generate a reply to this prompt before and after training"),
    seed: int = typer.Option(42),
) -> None:
    """Fine-tune MODEL on DATASET; writes the adapter to OUTPUT_DIR and prints held-out metrics."""
    from ..llm.config import TrainerConfig
    from ..llm.tuner import FineTuner

    config = TrainerConfig(per_device_train_batch_size=batch_size, learning_rate=learning_rate,
                           gradient_accumulation_steps=gradient_accumulation_steps, packing=packing,
                           precision=precision, seed=seed)
    targets = [t.strip() for t in lora_target_modules.split(",")] if lora_target_modules else None
    tuner = FineTuner(model, device=device, dataset_name=_subset(dataset, num_examples, data_dir),
                      eval_dataset=_subset(eval_dataset, num_eval_examples, data_dir), lora_r=lora_r,
                      lora_alpha=lora_alpha, lora_target_modules=targets, max_length=max_length,
                      quantize=_quantize(quantize), trainer_config=config, data_dir=data_dir, seed=seed)
    before = tuner.generate(prompt) if prompt else None
    result = tuner.train(output_dir, epochs, resume_from_checkpoint=resume or None)
    if prompt:
        typer.echo(f"\nprompt: {prompt}\n--- before ---\n{before}\n--- after ---\n{tuner.generate(prompt)}")
    typer.echo(f"adapter: {output_dir}\nmetrics: {output_dir / 'metrics.json'}")
    if result.metrics_after:
        typer.echo(json.dumps({"before": result.metrics_before, "after": result.metrics_after}))


@app.command()
def generate(
    model: str = typer.Argument(..., help="a folder saved by `finetuner llm train`, or any model_id"),
    prompt: str = typer.Argument(..., help="the user's message"),
    max_length: Optional[int] = typer.Option(None, help="most tokens of prompt + reply"),
    device: Optional[str] = typer.Option(None),
    sample: bool = typer.Option(False, help="sample (temperature / top-p) instead of greedy decoding"),
    temperature: float = typer.Option(0.7), top_p: float = typer.Option(0.9),
) -> None:
    """Print the reply of a tuned adapter (or a plain model) to PROMPT."""
    from ..llm.inference import DefaultInferenceHandler
    from ..llm.tuner import FineTuner
    from ..models.lm import META_FILE

    handler = DefaultInferenceHandler(do_sample=sample, temperature=temperature, top_p=top_p)
    if (Path(model) / META_FILE).is_file():
        tuner = FineTuner.load(model, device=device, inference_handler=handler)
    else:
        tuner = FineTuner(model, device=device, inference_handler=handler, max_length=max_length or 512)
    typer.echo(tuner.generate(prompt, max_length=max_length))


@app.command()
def merge(
    adapter: Path = typer.Argument(..., help="a folder saved by `finetuner llm train`"),
    output_dir: Path = typer.Argument(..., help="where the merged, plain model goes"),
) -> None:
    """Fold the adapter into the base weights and save a plain transformers model."""
    from ..models.lora import merge as merge_adapter

    typer.echo(f"merged model: {merge_adapter(adapter, output_dir)}")
