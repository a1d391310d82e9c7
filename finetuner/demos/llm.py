"""`finetuner demo llm`: LoRA supervised fine-tuning of SmolLM2-135M-Instruct on LIMA.

Trains on LIMA conversations, measures held-out loss and perplexity on the response tokens of
held-out LIMA conversations before and after, and prints a reply to a held-out instruction
before and after. `quick` runs a tiny version (a smoke test, seconds to a minute on a CPU).

    finetuner demo llm [--quick] [--data-dir DIR]
    python -m finetuner.demos.llm [--quick] [--quantize 4bit|8bit] [--num-train N] [--data-dir DIR]

The full run: 200 single-turn training conversations, 30 held-out ones (LIMA's test split),
`max_length` 512, LoRA r=16 / alpha=32 on q_proj and v_proj, batch 4, learning rate 2e-4, one
epoch; `quantize="4bit"` is the same on a frozen 4-bit NF4 base (QLoRA).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

FULL = {"num_train": 200, "num_eval": 30, "max_length": 512, "reply_tokens": 128}
QUICK = {"num_train": 8, "num_eval": 4, "max_length": 128, "reply_tokens": 96}


def run(data_dir: str | None = None, output_dir: str = "runs/demo/llm", epochs: int | None = None,
        quick: bool = False, quantize: bool | str = False, num_train: int | None = None,
        num_eval: int | None = None) -> dict:
    """Run the demo; return {"before": metrics, "after": metrics, "prompt", "reply_before",
    "reply_after", "settings", "train_tokens_per_s", "wall_s", "peak_rss_mb"}.

    Args:
        data_dir: folder holding `instruction_lima/lima.json` (default $FINETUNER_DATA, else download).
        output_dir: where the adapter, metrics and checkpoints go.
        epochs: passes over the data (default 1).
        quick: 8 training / 4 held-out conversations, 128 tokens (else 200 / 30, 512 tokens).
        quantize: False, True / "4bit" (QLoRA: NF4 base with double quantization) or "8bit".
        num_train, num_eval: override the number of training / held-out conversations.

    Metrics are `FineTuner.evaluate`'s: "eval_loss" (mean NLL per held-out response token, nats),
    "perplexity" (exp of it), "eval_tokens". `peak_rss_mb` is the process's peak resident memory.

    Raises:
        ValueError: num_train / num_eval below 1, or a bad `quantize` (from FineTuner).
    """
    from finetuner.llm import FineTuner, TrainerConfig
    from finetuner.toydata.instructions import generate_lima

    sizes = dict(QUICK if quick else FULL)
    for name, value in (("num_train", num_train), ("num_eval", num_eval)):
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
            sizes[name] = value
    started = time.perf_counter()
    n_train, n_eval, max_length = sizes["num_train"], sizes["num_eval"], sizes["max_length"]
    train = generate_lima(n_train, data_dir=data_dir, single_turn=True)
    held_out = generate_lima(n_eval + 1, is_testset=True, data_dir=data_dir, single_turn=True)
    prompt = held_out[n_eval]["instruction"]  # in neither the training nor the eval set
    tuner = FineTuner("smollm2", dataset_name=train, eval_dataset=held_out.select(range(n_eval)),
                      max_length=max_length, lora_r=16, lora_alpha=32, quantize=quantize,
                      trainer_config=TrainerConfig(per_device_train_batch_size=4, learning_rate=2e-4),
                      data_dir=data_dir)
    reply_before = tuner.generate(prompt, max_length=_budget(tuner, prompt, sizes["reply_tokens"]))
    result = tuner.train(Path(output_dir), epochs or 1)
    reply_after = tuner.generate(prompt, max_length=_budget(tuner, prompt, sizes["reply_tokens"]))
    print(f"\nheld-out instruction: {prompt}\n--- before ---\n{reply_before}\n--- after ---\n{reply_after}\n")
    summary = {"before": result.metrics_before, "after": result.metrics_after, "prompt": prompt,
               "reply_before": reply_before, "reply_after": reply_after, "settings": result.settings,
               "num_train": n_train, "num_eval": n_eval,
               "train_tokens_per_s": result.history[-1].get("train_tokens_per_s") if result.history else None,
               "train_time_s": sum(h.get("epoch_time_s", 0.0) for h in result.history),
               "wall_s": time.perf_counter() - started, "peak_rss_mb": _peak_rss_mb()}
    (Path(output_dir) / "demo.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def _budget(tuner, prompt: str, new_tokens: int) -> int:
    """max_length (prompt + reply) that leaves `new_tokens` for the reply."""
    from finetuner.llm.templates import render_prompt

    text = render_prompt(prompt, tuner.tokenizer, tuner.inference_handler.template or "plain")
    return len(tuner.tokenizer(text, add_special_tokens=False)["input_ids"]) + new_tokens


def _peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (Linux reports ru_maxrss in KiB, macOS in bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2 ** 20 if sys.platform == "darwin" else 2 ** 10)


def main(argv: list[str] | None = None) -> dict:
    """Command line of the demo (adds `--quantize`, `--num-train`, `--num-eval` to `finetuner demo llm`)."""
    parser = argparse.ArgumentParser(prog="python -m finetuner.demos.llm", description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=None, help="folder with instruction_lima/ (default $FINETUNER_DATA)")
    parser.add_argument("--output-dir", default="runs/demo/llm")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="8 / 4 conversations, 128 tokens (smoke test)")
    parser.add_argument("--quantize", default="none", choices=["none", "4bit", "8bit"],
                        help="4bit: QLoRA (NF4, double quantization); 8bit: LLM.int8()")
    parser.add_argument("--num-train", type=int, default=None, help="training conversations (default 200)")
    parser.add_argument("--num-eval", type=int, default=None, help="held-out conversations (default 30)")
    args = parser.parse_args(argv)
    summary = run(data_dir=args.data_dir, output_dir=args.output_dir, epochs=args.epochs, quick=args.quick,
                  quantize=False if args.quantize == "none" else args.quantize, num_train=args.num_train,
                  num_eval=args.num_eval)
    print(json.dumps({k: summary[k] for k in ("num_train", "num_eval", "before", "after", "train_tokens_per_s",
                                              "train_time_s", "wall_s", "peak_rss_mb")}, default=str))
    return summary


if __name__ == "__main__":  # pragma: no cover
    main()
