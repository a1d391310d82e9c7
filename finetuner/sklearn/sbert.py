"""Fine-tune a whole sentence encoder from scikit-learn: `SbertLearner` (text pairs with a
similarity) and `SbertTuner` (texts with class labels, pipeline-friendly).

Both train through the project's text recipe (`finetuner.fit` -> `finetuner.recipes.text`: the
one engine, the project's losses, texts tokenised once, length-grouped batches), on a copy of
the given model: the `sent_tfm` argument is never changed, as scikit-learn requires; the tuned
model is `model_` (save it with `to_disk`).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from ..io import atomic_dir
from ._head import check_choice, check_float, check_int, encode_classes
from .encoder import _TextEstimator, check_texts, embedding_dim, load_model


class _SbertBase(_TextEstimator):
    """Shared: hyper-parameter checks, the model copy, one call of the text recipe, encode, save."""

    def _check_params(self) -> None:
        check_int(self.batch_size, "batch_size")
        check_int(self.epochs, "epochs")
        check_float(self.learning_rate, "learning_rate", strict=True)
        check_float(self.warmup_ratio, "warmup_ratio")
        if self.warmup_ratio >= 1:
            raise ValueError(f"warmup_ratio: expected a number in [0, 1), got {self.warmup_ratio!r}")
        check_choice(self.device, "device", ("auto", "cpu", "cuda", "mps"))

    def _seed(self) -> int:
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    def _new_model(self):
        return load_model(self.sent_tfm, None if self.device == "auto" else self.device, copy_model=True)

    def _train(self, data, fmt: str, batch_items: int, epochs: int, **extra) -> None:
        from ..recipes.text import fit_text

        result = fit_text(self.model_, data, format=fmt, loss=self.loss, epochs=epochs, batch_size=batch_items,
                     learning_rate=self.learning_rate, warmup_ratio=self.warmup_ratio, device=self.device,
                     seed=self._seed(), verbose=bool(self.verbose), report=False, **extra)
        self.n_iter_ = getattr(self, "n_iter_", 0) + epochs
        self.history_ = getattr(self, "history_", []) + list(result.history)
        self.model_.eval()

    @property
    def _n_features_out(self) -> int:
        return embedding_dim(self.model_)

    def transform(self, X):
        """Embed texts with the tuned model: float32 [N, D]."""
        check_is_fitted(self)
        texts = check_texts(X)
        with torch.no_grad():
            emb = self.model_.encode(texts, batch_size=max(self.batch_size, 32), convert_to_numpy=True,
                                     show_progress_bar=False)
        return np.asarray(emb, dtype=np.float32)

    def to_disk(self, path) -> None:
        """Save the tuned model in the sentence-transformers layout to folder `path`, atomically
        (a crash never leaves a half-written folder). Load it with `SentenceTransformer(path)`."""
        check_is_fitted(self)
        with atomic_dir(path) as tmp:
            self.model_.save(str(tmp))


class SbertLearner(_SbertBase):
    """Fine-tune a sentence encoder on text pairs with a similarity: `fit(X1, X2, y)` (the
    embetter `SbertLearner` API, trained by the project's text recipe; Sentence-BERT, Reimers &
    Gurevych, 2019).

    Args:
        sent_tfm: a `sentence_transformers.SentenceTransformer` (copied, never changed), a
            model name ("all-MiniLM-L6-v2" loads the installed offline copy) or a folder.
        batch_size: pairs per step (int >= 1; a step holds 2 x batch_size texts).
        epochs: passes over the pairs in `fit` (int >= 1). learning_rate: AdamW step size.
        loss: "auto" (CoSENT for graded scores, else InfoNCE with in-batch negatives), or
            "SiameseLoss", "TripletLoss", "InfoNCELoss", "CoSENTLoss" or a loss object.
        warmup_ratio: linear warm-up share of the steps, in [0, 1).
        device: "auto" (a GPU when there is one), "cpu", "cuda" or "mps".
        random_state: int, `RandomState` or None: batch order. verbose: progress bar.

    Attributes (after fit): model_ (the tuned SentenceTransformer), n_iter_ (epochs run),
        history_ (per-epoch logs).

    Raises:
        ValueError: X1 / X2 not sequences of strings or of different lengths; y of another
            length, outside [0, 1], or with no similar pair; a bad hyper-parameter.
    """

    def __init__(self, sent_tfm="all-MiniLM-L6-v2", batch_size: int = 16, epochs: int = 1,
                 learning_rate: float = 2e-5, loss="auto", warmup_ratio: float = 0.1, device: str = "auto",
                 random_state=None, verbose: bool = False) -> None:
        self.sent_tfm = sent_tfm
        self.batch_size = batch_size
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.loss = loss
        self.warmup_ratio = warmup_ratio
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def _pairs(self, X1, X2, y) -> list:
        self._check_params()
        a, b = check_texts(X1, "X1"), check_texts(X2, "X2")
        if len(a) != len(b):
            raise ValueError(f"X1 and X2 must have the same length (one row per pair); got {len(a)} and {len(b)}")
        if y is None:
            raise ValueError("SbertLearner requires y to be passed, but the target y is None")
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        if y.shape[0] != len(a):
            raise ValueError(f"y must hold one similarity per pair: X1 has {len(a)} texts, y has {y.shape[0]}")
        if not np.all(np.isfinite(y)) or y.min() < 0 or y.max() > 1:
            raise ValueError("y: expected similarities in [0, 1] (1 similar, 0 dissimilar); rescale scores such "
                             "as STS's 0-5 first")
        if not (y > 0).any():
            raise ValueError("y: no pair is similar (all y == 0); expected at least one y > 0")
        return [(s, t, float(v)) for s, t, v in zip(a, b, y)]

    def fit(self, X1, X2, y):
        """Fine-tune a fresh copy of `sent_tfm` on pairs (X1[i], X2[i]) with similarity y[i]; returns self."""
        data = self._pairs(X1, X2, y)
        self.model_ = self._new_model()
        self.n_iter_, self.history_ = 0, []
        self._train(data, "pair", 2 * self.batch_size, self.epochs)
        return self

    def partial_fit(self, X1, X2, y):
        """One more epoch on these pairs, continuing from the tuned weights (the optimizer and
        its warm-up restart each call)."""
        data = self._pairs(X1, X2, y)
        if not hasattr(self, "model_"):
            self.model_ = self._new_model()
        self._train(data, "pair", 2 * self.batch_size, 1)
        return self

    def predict(self, X1, X2):
        """Cosine similarity of each pair under the tuned model: float [N] in [-1, 1]."""
        z1, z2 = self.transform(X1), self.transform(X2)
        if z1.shape != z2.shape:
            raise ValueError(f"X1 and X2 must have the same length; got {len(z1)} and {len(z2)}")
        num = (z1 * z2).sum(1)
        return num / np.maximum(np.linalg.norm(z1, axis=1) * np.linalg.norm(z2, axis=1), 1e-12)


class SbertTuner(_SbertBase):
    """Fine-tune a sentence encoder from class labels inside a pipeline: `fit(texts, y)`,
    `transform(texts)`. Batches hold `num_items_per_class` texts of each of several classes and
    the loss mines every pair in a batch (same class = similar), so no pair list is built.

    Args:
        sent_tfm: a `SentenceTransformer` (copied), a model name or a folder (see `SbertLearner`).
        batch_size: texts per step (int >= 2). epochs, learning_rate, warmup_ratio, device,
            random_state, verbose: as in `SbertLearner`.
        loss: "auto" (InfoNCE, in-batch negatives, several positives per anchor), or
            "SiameseLoss", "TripletLoss", "InfoNCELoss" or a loss object.
        num_items_per_class: texts of one class per batch (int >= 2).

    Attributes (after fit): classes_, model_, n_iter_, history_.

    Raises:
        ValueError: texts not strings; y of another length; fewer than 2 classes; labels
            outside the first `partial_fit` call's classes; a bad hyper-parameter.
    """

    def __init__(self, sent_tfm="all-MiniLM-L6-v2", batch_size: int = 16, epochs: int = 1,
                 learning_rate: float = 2e-5, loss="auto", num_items_per_class: int = 4, warmup_ratio: float = 0.1,
                 device: str = "auto", random_state=None, verbose: bool = False) -> None:
        self.sent_tfm = sent_tfm
        self.batch_size = batch_size
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.loss = loss
        self.num_items_per_class = num_items_per_class
        self.warmup_ratio = warmup_ratio
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags

    def _data(self, X, y, classes, first: bool) -> list:
        self._check_params()
        check_int(self.batch_size, "batch_size", low=2)
        check_int(self.num_items_per_class, "num_items_per_class", low=2)
        texts = check_texts(X)
        if y is None:
            raise ValueError("SbertTuner requires y to be passed, but the target y is None")
        y = np.asarray(y)
        if y.ndim != 1 or y.shape[0] != len(texts):
            raise ValueError(f"y must be 1-D with one label per text: {len(texts)} texts, y of shape {y.shape}")
        check_classification_targets(y)
        yi = encode_classes(self, y, classes, first=first)
        return list(zip(texts, yi.tolist()))

    def fit(self, X, y):
        """Fine-tune a fresh copy of `sent_tfm` on texts X with class labels y; returns self."""
        data = self._data(X, y, None, first=True)
        self.model_ = self._new_model()
        self.n_iter_, self.history_ = 0, []
        self._train(data, "class", self.batch_size, self.epochs, num_items_per_class=self.num_items_per_class)
        return self

    def partial_fit(self, X, y, classes=None):
        """One more epoch on this batch of texts, continuing from the tuned weights."""
        first = not hasattr(self, "model_")
        data = self._data(X, y, classes, first=first)
        if first:
            self.model_ = self._new_model()
        self._train(data, "class", self.batch_size, 1, num_items_per_class=self.num_items_per_class)
        return self
