"""arXiv sentences: does a sentence announce a new dataset? Contrastive tuning from pairs.

    finetuner demo arxiv-contrastive [--quick] [--epochs N] [--data-dir DIR] [--output-dir DIR]

The embetter contrastive demo on its own data (`arxiv_cats`, label "new-dataset"), evaluated on
held-out sentences instead of the training set: the labelled sentences are split in half
(stratified); from the training half, each positive sentence is paired with one random
positive (similar) and 3 random negatives (dissimilar), as in the seed; a `ContrastiveLearner`
(epochs=50, batch_size=256, learning_rate=0.002, shape_out=384) is fitted on the MiniLM
embeddings of the pairs; a balanced logistic regression trained on the training half is scored
on the held-out half with the original and the tuned embeddings. Writes PCA pictures of the
held-out embeddings before / after and metrics.json.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

SUBDIR = "arxiv_cats"
# pinned copy the shared data folder was taken from (its SOURCE.txt)
BASE_URL = "https://raw.githubusercontent.com/koaning/embetter/c75f0f5b362db961c25643592063c6eb4f1d4ab0/datasets/"
FILES = {"new-dataset.jsonl": "bfb06065baaf58be911eb9fc16dd46be", "data-quality.jsonl": "1ba4d2e7697f04af1a148ff252cd4f87"}
LABEL = "new-dataset"


def load_examples(data_dir: str | None = None) -> list[dict]:
    """Every row of the arxiv_cats JSONL files: {"text": str, "cats": {label: 0 or 1}} (a row
    may lack a label). Files come from `data_dir`/arxiv_cats, env FINETUNER_DATA, the cache or a
    download of the pinned embetter commit (md5-checked; `finetuner.toydata.files.fetch`)."""
    from finetuner.toydata.files import fetch

    rows = []
    for name, md5 in FILES.items():
        path = fetch(SUBDIR, name, BASE_URL + name, md5=md5, data_dir=data_dir)
        with open(path, encoding="utf-8") as f:
            rows += [json.loads(line) for line in f if line.strip()]
    return rows


def seed_pairs(texts: list[str], labels: np.ndarray, n_neg: int = 3, seed: int = 0):
    """The seed's pair generator: each positive text with one random positive (target 1) and
    `n_neg` random negatives (target 0).

    Returns:
        (texts1 list[str], texts2 list[str], similar float32 [P]).
    """
    rng = np.random.RandomState(seed)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    t1, t2, sim = [], [], []
    for i in pos:
        t1.append(texts[i]); t2.append(texts[rng.choice(pos)]); sim.append(1.0)
        for j in rng.choice(neg, size=n_neg):
            t1.append(texts[i]); t2.append(texts[j]); sim.append(0.0)
    return t1, t2, np.asarray(sim, dtype=np.float32)


def load_split(data_dir: str | None = None, seed: int = 0, limit: int | None = None):
    """Texts with the "new-dataset" label split in two stratified halves.

    Returns:
        (train_texts, train_y int64, test_texts, test_y int64).
    """
    from sklearn.model_selection import train_test_split

    rows = [r for r in load_examples(data_dir) if LABEL in r["cats"]]
    texts = [r["text"] for r in rows]
    y = np.asarray([int(r["cats"][LABEL]) for r in rows], dtype=np.int64)
    if limit is not None:
        keep = np.random.RandomState(seed).permutation(len(y))[:limit]
        texts, y = [texts[i] for i in keep], y[keep]
    a, b, ya, yb = train_test_split(texts, y, test_size=0.5, stratify=y, random_state=seed)
    return list(a), np.asarray(ya), list(b), np.asarray(yb)


def run(data_dir: str | None = None, output_dir: str = "runs/demo/arxiv-contrastive", epochs: int | None = None,
        quick: bool = False) -> dict:
    """Run the demo; print held-out accuracy (and balanced accuracy) of original vs tuned
    embeddings and return them (also in metrics.json).

    quick: 600 sentences and 5 epochs (a smoke test).
    """
    from sklearn.metrics import balanced_accuracy_score

    from finetuner.demos.sst2_tuner import pca_picture
    from finetuner.sklearn import ContrastiveLearner, SentenceEncoder
    from sklearn.linear_model import LogisticRegression

    tr_texts, y_tr, te_texts, y_te = load_split(data_dir, limit=600 if quick else None)
    t1, t2, sim = seed_pairs(tr_texts, y_tr)
    enc = SentenceEncoder("all-MiniLM-L6-v2")
    t0 = time.perf_counter()
    X_tr, X_te = enc.fit_transform(tr_texts), enc.transform(te_texts)
    index = {t: i for i, t in enumerate(tr_texts)}
    X1, X2 = X_tr[[index[t] for t in t1]], X_tr[[index[t] for t in t2]]
    print(f"{len(y_tr)} train / {len(y_te)} held-out sentences ({int(y_tr.sum())} / {int(y_te.sum())} positive), "
          f"{len(sim)} pairs; encoded in {time.perf_counter() - t0:.1f} s")

    learner = ContrastiveLearner(epochs=epochs or (5 if quick else 50), batch_size=256, learning_rate=0.002,
                                 shape_out=384, random_state=0)
    t0 = time.perf_counter()
    learner.fit(X1, X2, sim)
    seconds = time.perf_counter() - t0

    def score(A, B) -> dict:
        clf = LogisticRegression(class_weight="balanced", max_iter=2000).fit(A, y_tr)
        pred = clf.predict(B)
        return {"heldout_accuracy": float(np.mean(pred == y_te)),
                "heldout_balanced_accuracy": float(balanced_accuracy_score(y_te, pred))}

    out = Path(output_dir)
    names = ["other", LABEL]
    metrics = {"n_train": len(y_tr), "n_test": len(y_te), "n_pairs": len(sim),
               "original": score(X_tr, X_te),
               "contrastive_learner": {**score(learner.transform(X_tr), learner.transform(X_te)),
                                       "fit_seconds": seconds, "epochs_run": int(learner.n_iter_)}}
    pictures = [pca_picture(X_te, y_te, "arXiv held-out: original MiniLM embeddings", out / "pca_original.png", names),
                pca_picture(learner.transform(X_te), y_te, "arXiv held-out: ContrastiveLearner",
                            out / "pca_contrastive_learner.png", names)]
    print(f"{'embeddings':<22}{'held-out acc':>13}{'balanced acc':>14}")
    for name in ("original", "contrastive_learner"):
        m = metrics[name]
        print(f"{name:<22}{m['heldout_accuracy']:>13.4f}{m['heldout_balanced_accuracy']:>14.4f}")
    metrics["pictures"] = [str(p) for p in pictures]
    tmp = out / "metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=2))
    tmp.replace(out / "metrics.json")
    print(f"pictures and metrics.json in {out}")
    return metrics
