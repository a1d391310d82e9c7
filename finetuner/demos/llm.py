"""`finetuner demo llm`: LoRA supervised fine-tuning of SmolLM2-135M-Instruct on LIMA.

Trains on LIMA conversations, measures held-out loss and perplexity on the response tokens of
held-out LIMA conversations before and after, and prints a reply to a held-out instruction
before and after. `quick` runs a tiny version (a smoke test, seconds to a minute on a CPU).
"""

from __future__ import annotations

from pathlib import Path


def run(data_dir: str | None = None, output_dir: str = "runs/demo/llm", epochs: int | None = None,
        quick: bool = False, quantize: bool | str = False) -> dict:
    """Run the demo; return {"before": metrics, "after": metrics, "prompt", "reply_before",
    "reply_after", "settings"}.

    Args:
        data_dir: folder holding `instruction_lima/lima.json` (default $FINETUNER_DATA, else download).
        output_dir: where the adapter, metrics and checkpoints go.
        epochs: passes over the data (default 1).
        quick: 8 training / 4 held-out conversations, 128 tokens (else 200 / 30, 512 tokens).
        quantize: False, True / "4bit" (QLoRA) or "8bit".
    """
    from finetuner.llm import FineTuner, TrainerConfig
    from finetuner.toydata.instructions import generate_lima

    n_train, n_eval, max_length = (8, 4, 128) if quick else (200, 30, 512)
    train = generate_lima(n_train, data_dir=data_dir, single_turn=True)
    held_out = generate_lima(n_eval + 1, is_testset=True, data_dir=data_dir, single_turn=True)
    prompt = held_out[n_eval]["instruction"]  # not in the eval set either
    tuner = FineTuner("smollm2", dataset_name=train, eval_dataset=held_out.select(range(n_eval)),
                      max_length=max_length, lora_r=16, lora_alpha=32, quantize=quantize,
                      trainer_config=TrainerConfig(per_device_train_batch_size=4, learning_rate=2e-4),
                      data_dir=data_dir)
    reply_length = 96 if quick else 200
    reply_before = tuner.generate(prompt, max_length=_budget(tuner, prompt, reply_length))
    result = tuner.train(Path(output_dir), epochs or 1)
    reply_after = tuner.generate(prompt, max_length=_budget(tuner, prompt, reply_length))
    print(f"\nheld-out instruction: {prompt}\n--- before ---\n{reply_before}\n--- after ---\n{reply_after}\n")
    return {"before": result.metrics_before, "after": result.metrics_after, "prompt": prompt,
            "reply_before": reply_before, "reply_after": reply_after, "settings": result.settings}


def _budget(tuner, prompt: str, new_tokens: int) -> int:
    """max_length (prompt + reply) that leaves `new_tokens` for the reply."""
    from finetuner.llm.templates import render_prompt

    text = render_prompt(prompt, tuner.tokenizer, tuner.inference_handler.template or "plain")
    return len(tuner.tokenizer(text, add_special_tokens=False)["input_ids"]) + new_tokens
