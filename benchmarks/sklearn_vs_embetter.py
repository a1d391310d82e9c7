"""finetuner.sklearn vs embetter 0.9 (finetune): fit time and held-out accuracy, same data and
settings, side by side in one run; embetter both at its defaults and doing the same number of
passes over the data as ours (its best user-reachable setting for time: ours stops early).

    /work/tools/cpu-bench python benchmarks/sklearn_vs_embetter.py [--repeats 5] [--threads N]

Protocol (the embetter demos, evaluated on held-out data):
- SST-2: 200 labelled train sentences (a different draw per repeat), 2000 held-out sentences
  (dev + test files), all-MiniLM-L6-v2 embeddings (computed once, shared by both sides). Each
  tuner is fitted on the 200; a LogisticRegression (scikit-learn defaults) is trained on the
  200 tuned embeddings and scored on the 2000. "original" = the same regression on the
  untuned embeddings.
  FeedForwardTuner(n_epochs=500, learning_rate=0.01, hidden_dim=200) and ContrastiveTuner()
  (defaults on both sides: hidden_dim=50, n_neg=3, epochs=20, learning_rate=0.001).
- arXiv "new-dataset" (embetter's own data): stratified halves; the seed's pairs from the train
  half; ContrastiveLearner(epochs=50, batch_size=256, learning_rate=0.002, shape_out=384);
  balanced LogisticRegression trained on the train half, accuracy and balanced accuracy on the
  held-out half. Only 13% of the sentences are positive (predicting "other" everywhere scores
  0.868), so plain accuracy rewards a drift towards the majority class: read balanced accuracy.

Passes: one pass = one epoch over the data in mini-batches, on both sides (embetter's
FeedForwardTuner uses batches of 32 as ours; its contrastive tuners batches of 256 pairs as
ours). finetuner stops once the epoch loss stops improving (`n_iter_`); "embetter, same passes"
runs embetter with epochs = our `n_iter_` of the same repeat, so both do the same work, and is
printed beside embetter at its defaults. The speed-up column is against the fastest embetter
row of the same tuner (the headline), the last column against embetter's defaults.

Fit times are wall-clock seconds of `fit` alone (median over repeats, after one warm-up fit of
each side). embetter runs as shipped; `--threads N` sets torch's thread count for both sides.
Needs `pip install embetter==0.9.1` (no new dependency for finetuner itself).
"""

from __future__ import annotations

import argparse
import json
import random
import time

import numpy as np
import torch


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _seed_all(seed: int) -> None:
    # embetter draws from torch's and Python's global generators
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def _rows(names, sides=("embetter", "embetter-same-passes", "finetuner"), extra=()):
    return {f"{n}/{side}": {"acc": [], "fit_s": [], "passes": [], **{k: [] for k in extra}} for n in names
            for side in sides}


def sst2_rows(data_dir, repeats: int):
    from embetter.finetune import ContrastiveTuner as EContrastive
    from embetter.finetune import FeedForwardTuner as EFeedForward

    from finetuner.demos.sst2_tuner import heldout_accuracy, load_split
    from finetuner.sklearn import ContrastiveTuner, FeedForwardTuner, SentenceEncoder

    enc = SentenceEncoder("all-MiniLM-L6-v2")
    splits = [load_split(data_dir, seed=r) for r in range(repeats)]
    test_texts, y_te = splits[0][2], splits[0][3]
    X_te = enc.fit_transform(test_texts)
    cache = {}
    train_texts = sorted({t for s in splits for t in s[0]})
    for t, x in zip(train_texts, enc.transform(train_texts)):
        cache[t] = x

    # name -> (embetter at `passes` epochs (None: its defaults), finetuner, embetter's default passes)
    settings = {
        "FeedForwardTuner": (lambda r, passes: EFeedForward(n_epochs=passes or 500, learning_rate=0.01, hidden_dim=200),
                             lambda r: FeedForwardTuner(n_epochs=500, learning_rate=0.01, hidden_dim=200, random_state=r),
                             500),
        "ContrastiveTuner": (lambda r, passes: EContrastive(**({"epochs": passes} if passes else {})),
                             lambda r: ContrastiveTuner(random_state=r), 20),
    }
    res = {"original": {"acc": []}, **_rows(settings)}
    X0 = np.stack([cache[t] for t in splits[0][0]])
    for name, (make_e, make_f, _) in settings.items():  # warm-up: first torch calls are slow
        make_e(0, None).fit(X0, splits[0][1])
        make_f(0).fit(X0, splits[0][1])
    for r, (tr_texts, y_tr, _, _) in enumerate(splits):
        X_tr = np.stack([cache[t] for t in tr_texts])
        res["original"]["acc"].append(heldout_accuracy(X_tr, y_tr, X_te, y_te))
        for name, (make_e, make_f, default_passes) in settings.items():
            _seed_all(r)
            ours, seconds = _timed(lambda: make_f(r).fit(X_tr, y_tr))
            runs = [("finetuner", ours, seconds, ours.n_iter_)]
            for side, passes in (("embetter", None), ("embetter-same-passes", ours.n_iter_)):
                _seed_all(r)
                tuner, seconds = _timed(lambda: make_e(r, passes).fit(X_tr, y_tr))
                runs.append((side, tuner, seconds, passes or default_passes))
            for side, tuner, seconds, passes in runs:
                row = res[f"{name}/{side}"]
                row["acc"].append(heldout_accuracy(tuner.transform(X_tr), y_tr, tuner.transform(X_te), y_te))
                row["fit_s"].append(seconds)
                row["passes"].append(int(passes))
        print(f"  SST-2 draw {r}: original {res['original']['acc'][-1]:.4f}  " + "  ".join(
            f"{k} {v['acc'][-1]:.4f}" for k, v in res.items() if k != "original"), flush=True)
    return res


def arxiv_rows(data_dir, repeats: int):
    from embetter.finetune import ContrastiveLearner as ELearner
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score

    from finetuner.demos.arxiv_contrastive import load_examples, seed_pairs
    from finetuner.sklearn import ContrastiveLearner, SentenceEncoder
    from sklearn.model_selection import train_test_split

    rows = [r for r in load_examples(data_dir) if "new-dataset" in r["cats"]]
    texts = [r["text"] for r in rows]
    y = np.asarray([int(r["cats"]["new-dataset"]) for r in rows])
    X = SentenceEncoder("all-MiniLM-L6-v2").fit_transform(texts)
    kw = dict(epochs=50, batch_size=256, learning_rate=0.002, shape_out=384)
    res = {"original": {"acc": [], "bacc": []}, **_rows(["ContrastiveLearner"], extra=("bacc",))}

    def score(row, A, B, ya, yb):
        pred = LogisticRegression(class_weight="balanced", max_iter=2000).fit(A, ya).predict(B)
        row["acc"].append(float(np.mean(pred == yb)))
        row["bacc"].append(float(balanced_accuracy_score(yb, pred)))

    for r in range(repeats):
        tr, te = train_test_split(np.arange(len(y)), test_size=0.5, stratify=y, random_state=r)
        t1, t2, sim = seed_pairs([texts[i] for i in tr], y[tr], seed=r)
        index = {texts[i]: i for i in tr}
        X1, X2 = X[[index[t] for t in t1]], X[[index[t] for t in t2]]
        if r == 0:  # warm-up
            ELearner(**{**kw, "epochs": 1}).fit(X1, X2, sim)
            ContrastiveLearner(**{**kw, "epochs": 1}).fit(X1, X2, sim)
        score(res["original"], X[tr], X[te], y[tr], y[te])
        _seed_all(r)
        ours, seconds = _timed(lambda: ContrastiveLearner(**kw, random_state=r).fit(X1, X2, sim))
        runs = [("finetuner", ours, seconds, ours.n_iter_)]
        for side, passes in (("embetter", kw["epochs"]), ("embetter-same-passes", ours.n_iter_)):
            _seed_all(r)
            learner, seconds = _timed(lambda: ELearner(**{**kw, "epochs": passes}).fit(X1, X2, sim))
            runs.append((side, learner, seconds, passes))
        for side, learner, seconds, passes in runs:
            row = res[f"ContrastiveLearner/{side}"]
            score(row, learner.transform(X[tr]), learner.transform(X[te]), y[tr], y[te])
            row["fit_s"].append(seconds)
            row["passes"].append(int(passes))
        print(f"  arXiv split {r} (acc / balanced acc): " + "  ".join(
            f"{k} {v['acc'][-1]:.4f} / {v['bacc'][-1]:.4f}" for k, v in res.items()), flush=True)
    return res


def table(title: str, res: dict) -> list[dict]:
    """Print one table (passes and fit time, medians; speed-up over the fastest embetter row of
    the tuner and over embetter's defaults; held-out accuracy mean ± std, mean difference to the
    original embeddings, repeats beating them; balanced accuracy too when measured) and return
    its rows."""
    base = np.asarray(res["original"]["acc"])
    bbase = np.asarray(res["original"].get("bacc", []))
    bal = bbase.size > 0
    print(f"\n{title}\n{'method':<42}{'passes':>7}{'fit s':>8}{'speed-up':>10}{'vs dflt':>9}{'held-out acc':>16}"
          f"{'vs original':>13}{'wins':>7}" + (f"{'balanced acc':>16}{'vs original':>13}" if bal else ""))
    print(f"{'original embeddings':<42}{'':>7}{'':>8}{'':>10}{'':>9}{base.mean():>9.4f} ±{base.std():.3f}"
          + (f"{'':>20}{bbase.mean():>9.4f} ±{bbase.std():.3f}" if bal else ""))
    out = []
    for key, v in res.items():
        if key == "original":
            continue
        name, side = key.split("/")
        acc = np.asarray(v["acc"])
        fit = float(np.median(v["fit_s"]))
        peers = {s: float(np.median(res[f"{name}/{s}"]["fit_s"])) for s in ("embetter", "embetter-same-passes")}
        best = min(peers.values())
        row = {"method": name, "side": side, "passes_median": float(np.median(v["passes"])),
               "fit_s_median": fit, "speedup_vs_best_embetter": best / fit,
               "speedup_vs_embetter_defaults": peers["embetter"] / fit,
               "acc_mean": float(acc.mean()), "acc_std": float(acc.std()), "delta_vs_original": float((acc - base).mean()),
               "wins_vs_original": int((acc > base).sum()), "repeats": len(acc)}
        line = (f"{key:<42}{row['passes_median']:>7.0f}{fit:>8.3f}{row['speedup_vs_best_embetter']:>9.1f}x"
                f"{row['speedup_vs_embetter_defaults']:>8.1f}x{acc.mean():>9.4f} ±{acc.std():.3f}"
                f"{row['delta_vs_original']:>+13.4f}{row['wins_vs_original']:>4}/{len(acc)}")
        if bal:
            bacc = np.asarray(v["bacc"])
            row.update(balanced_acc_mean=float(bacc.mean()), balanced_acc_std=float(bacc.std()),
                       balanced_delta_vs_original=float((bacc - bbase).mean()))
            line += f"{bacc.mean():>9.4f} ±{bacc.std():.3f}{row['balanced_delta_vs_original']:>+13.4f}"
        out.append(row)
        print(line)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=None, help="shared data folder (default: $FINETUNER_DATA, else download)")
    ap.add_argument("--repeats", type=int, default=5, help="train draws (SST-2) / splits (arXiv)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads for both sides (default: torch's)")
    ap.add_argument("--skip-arxiv", action="store_true")
    ap.add_argument("--json", default=None, help="write the rows here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import embetter

    print(f"embetter {getattr(embetter, '__version__', '?')}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch threads, {args.repeats} repeats")
    rows = {"sst2": table("SST-2 (200 train / 2000 held-out, MiniLM)", sst2_rows(args.data_dir, args.repeats))}
    if not args.skip_arxiv:
        rows["arxiv"] = table("arXiv new-dataset (held-out half, balanced LR)", arxiv_rows(args.data_dir, args.repeats))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
