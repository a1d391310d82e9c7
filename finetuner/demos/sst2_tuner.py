"""SST-2: steer MiniLM sentence embeddings towards sentiment with 200 labels.

    finetuner demo sst2-tuner [--quick] [--epochs N] [--data-dir DIR] [--output-dir DIR]

The embetter feed-forward demo on real data: 200 labelled training sentences, 2000 held-out
sentences, all-MiniLM-L6-v2 embeddings; a `FeedForwardTuner` and a `ContrastiveTuner` are fitted
on the 200, then a logistic regression is trained on the 200 (original or tuned embeddings) and
scored on the 2000. Writes PNG pictures of the PCA of the held-out embeddings before and after
tuning, coloured by label, and metrics.json, to the output folder.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

N_TRAIN, N_TEST = 200, 2000


def load_split(data_dir: str | None, n_train: int = N_TRAIN, n_test: int = N_TEST, seed: int = 0):
    """SST-2 texts for the few-label protocol.

    Train: `n_train` sentences drawn (by `seed`) from the train file. Test: `n_test` sentences
    drawn (fixed seed 42) from the dev and test files together (the test file alone has 1821).

    Returns:
        (train_texts list[str], train_y int64 [n_train], test_texts, test_y int64 [n_test]).
    """
    from finetuner.toydata import generate_sst2

    train = generate_sst2("train", data_dir=data_dir)
    held = [generate_sst2(s, data_dir=data_dir) for s in ("dev", "test")]
    tr = np.random.RandomState(seed).permutation(len(train))[:n_train]
    texts = [t for d in held for t in d["sentence"]]
    labels = np.concatenate([np.asarray(d["label"]) for d in held])
    te = np.random.RandomState(42).permutation(len(texts))[:n_test]
    return ([train["sentence"][int(i)] for i in tr], np.asarray(train["label"])[tr].astype(np.int64),
            [texts[i] for i in te], labels[te].astype(np.int64))


def heldout_accuracy(X_train, y_train, X_test, y_test, **lr_kwargs) -> float:
    """Accuracy on (X_test, y_test) of a `LogisticRegression` (scikit-learn defaults, C=1)
    trained on (X_train, y_train): the embetter demos' downstream model."""
    from sklearn.linear_model import LogisticRegression

    return float(LogisticRegression(max_iter=2000, **lr_kwargs).fit(X_train, y_train).score(X_test, y_test))


def pca_picture(X, y, title: str, path, label_names=None) -> Path:
    """Save a PNG scatter of the first two principal components of X [N, D], coloured by y [N]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    Z = PCA(n_components=2).fit_transform(np.asarray(X, dtype=np.float64))
    fig, ax = plt.subplots(figsize=(5, 4.5), dpi=110)
    for k in np.unique(y):
        m = y == k
        name = label_names[int(k)] if label_names is not None else str(k)
        ax.scatter(Z[m, 0], Z[m, 1], s=6, alpha=0.6, label=name)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.legend(markerscale=3, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def run(data_dir: str | None = None, output_dir: str = "runs/demo/sst2-tuner", epochs: int | None = None,
        quick: bool = False) -> dict:
    """Run the demo; print the held-out accuracies and return them (also in metrics.json).

    quick: 100 train / 300 test sentences and fewer epochs (a smoke test of a few seconds).
    """
    from finetuner.sklearn import ContrastiveTuner, FeedForwardTuner, SentenceEncoder

    n_train, n_test = (100, 300) if quick else (N_TRAIN, N_TEST)
    tr_texts, y_tr, te_texts, y_te = load_split(data_dir, n_train, n_test)
    enc = SentenceEncoder("all-MiniLM-L6-v2")
    t0 = time.perf_counter()
    X_tr, X_te = enc.fit_transform(tr_texts), enc.transform(te_texts)
    print(f"encoded {len(tr_texts) + len(te_texts)} sentences in {time.perf_counter() - t0:.1f} s")

    tuners = {
        "feedforward": FeedForwardTuner(hidden_dim=200, n_epochs=epochs or (100 if quick else 500),
                                        learning_rate=0.01, random_state=0),
        "contrastive": ContrastiveTuner(epochs=epochs or 20, random_state=0),
    }
    out = Path(output_dir)
    names = ["negative", "positive"]
    metrics = {"n_train": len(y_tr), "n_test": len(y_te),
               "original": {"heldout_accuracy": heldout_accuracy(X_tr, y_tr, X_te, y_te)}}
    pictures = [pca_picture(X_te, y_te, "SST-2 held-out: original MiniLM embeddings", out / "pca_original.png", names)]
    for name, tuner in tuners.items():
        t0 = time.perf_counter()
        tuner.fit(X_tr, y_tr)
        seconds = time.perf_counter() - t0
        Z_tr, Z_te = tuner.transform(X_tr), tuner.transform(X_te)
        metrics[name] = {"heldout_accuracy": heldout_accuracy(Z_tr, y_tr, Z_te, y_te), "fit_seconds": seconds,
                         "epochs_run": int(tuner.n_iter_), "params": tuner.get_params()}
        pictures.append(pca_picture(Z_te, y_te, f"SST-2 held-out: {type(tuner).__name__}", out / f"pca_{name}.png",
                                    names))

    base = metrics["original"]["heldout_accuracy"]
    print(f"{'embeddings':<14}{'held-out acc':>13}{'vs original':>13}{'fit s':>8}")
    for name in ("original", *tuners):
        m = metrics[name]
        print(f"{name:<14}{m['heldout_accuracy']:>13.4f}{m['heldout_accuracy'] - base:>+13.4f}"
              f"{m.get('fit_seconds', 0.0):>8.2f}")
    metrics["pictures"] = [str(p) for p in pictures]
    tmp = out / "metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=2, default=str))
    tmp.replace(out / "metrics.json")
    print(f"pictures and metrics.json in {out}")
    return metrics
