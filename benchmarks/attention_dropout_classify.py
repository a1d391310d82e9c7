"""The evidence for the classifier's `attention_dropout="auto"` rule: the default call
`finetuner.fit(minilm, rows, task="classification", seed=s)` with attention dropout kept
(`attention_dropout=True`) and left out (`False`), on the same rows, for data sets of different
row lengths; test accuracy, fit time and the mean tokens per training row.

    python benchmarks/attention_dropout_classify.py [--sets stsb,covid,sst2-600,banking77-64]
        [--seeds 0,1,2] [--json FILE]

Data ($FINETUNER_DATA, default ../shared/data), test rows never trained on:
- stsb: STS-B pairs labelled similar when their score is >= 3 (of 5); 2,000 training pairs drawn
  from `sts-train.csv` (numpy seed 0), scored on all of `sts-test.csv` (1,379);
- covid: the 488 English COVID question pairs (`eval_question_similarity_en.csv`, similar 0/1),
  a fixed permutation (numpy seed 0): 300 to train, 188 to score;
- sst2-600 / banking77-64: `fewshot_vs_setfit.py`'s draw (300 sentences per class of SST-2;
  64 queries per intent of BANKING77) for each seed, scored on the full test split.
MRPC (53 tokens per pair) is measured by `classify_vs_trainer.py --sides ours-attn,ours-noattn`.
Fit times are indicative only: they are not the benchmark's concern, and runs sharing the CPU
with other work are slower.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fewshot_vs_setfit import DATA_DIR, load, model_path, sample  # noqa: E402


def stsb_rows(split: str) -> list[tuple[str, str, int]]:
    rows = []
    for line in (DATA_DIR / "stsb" / f"sts-{split}.csv").read_text(encoding="utf-8").splitlines():
        f = line.split("\t")  # no quoting: score in field 5, the sentences in 6 and 7
        rows.append((f[5], f[6], int(float(f[4]) >= 3.0)))
    return rows


def data(name: str, seed: int) -> tuple[list, list]:
    """(train rows, test rows) of one set; the sampled sets draw with `seed`."""
    if name == "stsb":
        train = stsb_rows("train")
        pick = np.random.default_rng(0).permutation(len(train))[:2000]
        return [train[i] for i in pick], stsb_rows("test")
    if name == "covid":
        with open(DATA_DIR / "covid_qa" / "eval_question_similarity_en.csv", encoding="utf-8") as f:
            rows = [(r["question_1"], r["question_2"], int(r["similar"])) for r in csv.DictReader(f)]
        order = np.random.default_rng(0).permutation(len(rows))
        return [rows[i] for i in order[:300]], [rows[i] for i in order[300:]]
    source, n = {"sst2-600": ("sst2", 300), "banking77-64": ("banking77", 64)}[name]
    px, py, tx, ty = load(source)
    return [(px[i], py[i]) for i in sample(py, n, seed)], list(zip(tx, ty))


def mean_tokens(rows: list) -> float:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path())
    pairs = [r[1] for r in rows] if len(rows[0]) == 3 else None
    return float(np.mean([len(ids) for ids in tok([r[0] for r in rows], pairs, truncation=True)["input_ids"]]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sets", default="stsb,covid,sst2-600,banking77-64")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    import finetuner

    runs = []
    for name in a.sets.split(","):
        for seed in map(int, a.seeds.split(",")):
            train, test = data(name, seed)
            tokens = mean_tokens(train)
            for keep in (True, False):
                start = time.perf_counter()
                result = finetuner.fit(model_path(), train, task="classification", seed=seed, verbose=False,
                                       attention_dropout=keep)
                seconds = time.perf_counter() - start
                acc = result.model.evaluate(test)["accuracy"]
                runs.append({"data": name, "seed": seed, "attention_dropout": keep, "accuracy": acc,
                             "fit_s": seconds, "tokens_per_row": tokens, "best_epoch": result.settings.get("best_epoch")})
                print(json.dumps(runs[-1]), flush=True)
    print("| data | tokens per row | seeds | kept: accuracy (mean) | left out: accuracy (mean) |")
    print("|---|---:|---:|---:|---:|")
    for name in dict.fromkeys(r["data"] for r in runs):
        rs = [r for r in runs if r["data"] == name]
        acc = {k: np.mean([r["accuracy"] for r in rs if r["attention_dropout"] is k]) for k in (True, False)}
        print(f"| {name} | {rs[0]['tokens_per_row']:.0f} | {len(rs) // 2} | {acc[True]:.4f} | {acc[False]:.4f} |")
    if a.json:
        Path(a.json).write_text(json.dumps({"runs": runs}, indent=1))


if __name__ == "__main__":
    main()
