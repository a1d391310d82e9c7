"""Contrastive heads on top of embeddings: `ContrastiveLearner` (fit on pairs with a similarity
target) and `ContrastiveTuner` (fit on class labels, pipeline-friendly).

Both train one shared map, h = act(X @ W + b), with the project's metric-learning losses
(`finetuner.losses`, written once): the pairs to use are handed to the loss as a relation
matrix (`finetuner.data.relation`), so a loss's miner sees exactly the labelled pairs.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from ..data.relation import UNKNOWN, relation_matrix
from ..losses import LOSSES, MetricLoss, SiameseLoss, TripletLoss, get_loss, paired_distance
from ._head import (ACTIVATIONS, AdamState, Converged, check_choice, check_float, check_int, check_X, check_X_y,
                    encode_classes, np_activation, principal_axes, rng_of, small_step_threads, sq_dist,
                    to_tensor, torch_activation)
from ._pairs import pair_relation, sample_pairs

_DISTANCES = ("cosine", "euclidean", "sqeuclidean")


def _has_valid(loss: MetricLoss, i: np.ndarray, j: np.ndarray, target: np.ndarray) -> bool:
    """Whether the pairs (i[k], j[k], target[k]) hold what `loss` trains on: a similar pair, and
    for TripletLoss an item with both a similar and a dissimilar partner (checked on the few
    pair indices, not on the [n, n] relation)."""
    if isinstance(loss, SiameseLoss):
        return bool((target > 0).any())
    pos = target >= 1
    if not pos.any():
        return False
    if isinstance(loss, TripletLoss):
        neg = target == 0
        return bool(np.intersect1d(np.r_[i[pos], j[pos]], np.r_[i[neg], j[neg]]).size)
    return True


class _ContrastiveHead(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """The shared head: start, loss, one Adam step on a relation, transform (not public)."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    def _check_head_params(self, width_name: str, epochs_name: str) -> None:
        check_int(getattr(self, width_name), width_name)
        check_int(getattr(self, epochs_name), epochs_name)
        check_int(self.batch_size, "batch_size", low=2)
        check_float(self.learning_rate, "learning_rate", strict=True)
        check_float(self.alpha, "alpha")
        check_float(self.margin, "margin")
        check_choice(self.activation, "activation", ACTIVATIONS)
        check_choice(self.distance, "distance", _DISTANCES)
        if isinstance(self.loss, str):
            check_choice(self.loss, "loss", tuple(LOSSES))
        elif not isinstance(self.loss, MetricLoss):
            raise ValueError(f"loss: expected a loss name {tuple(LOSSES)} or a finetuner.losses loss object, "
                             f"got {type(self.loss).__name__}")

    def _loss_fn(self) -> MetricLoss:
        if not isinstance(self.loss, str):
            return self.loss
        if self.loss in ("InfoNCELoss", "MultipleNegativesRankingLoss"):
            return get_loss(self.loss, distance=self.distance)
        return get_loss(self.loss, distance=self.distance, margin=self.margin)

    @property
    def _n_features_out(self) -> int:
        return self.coef_.shape[1]

    def _init_head(self, X: np.ndarray, width: int, rng) -> None:
        self.coef_, self.intercept_ = principal_axes(X, width, rng)
        self._coef_start = self.coef_.copy()
        self._optimizer_state = None
        self.n_iter_, self.loss_curve_ = 0, []

    def _state(self) -> AdamState:
        return AdamState({"W": self.coef_, "b": self.intercept_}, self.learning_rate, self._optimizer_state)

    def _store(self, state: AdamState) -> None:
        w = state.numpy()
        self.coef_, self.intercept_ = w["W"], w["b"]
        self._optimizer_state = state.state_dict()

    def _step(self, state: AdamState, loss_fn: MetricLoss, x: torch.Tensor, relation: torch.Tensor) -> float:
        """One Adam step of `loss_fn` over the items `x` [n, D] related by `relation` [n, n]."""
        p = state.params
        emb = torch_activation(self.activation, x @ p["W"] + p["b"])
        loss = loss_fn(emb, relation=relation)
        if self.alpha:
            loss = loss + 0.5 * self.alpha * sq_dist(p["W"], torch.as_tensor(self._coef_start))
        return state.step(loss)

    def transform(self, X):
        """The tuned embedding act(X @ coef_ + intercept_): float [N, width] in X's float dtype."""
        check_is_fitted(self)
        X = check_X(self, X, reset=False)
        return np_activation(self.activation, X @ self.coef_.astype(X.dtype) + self.intercept_.astype(X.dtype))


class ContrastiveLearner(_ContrastiveHead):
    """Learn a shared map of two embeddings so that similar pairs end up close: `fit(X1, X2, y)`
    with y the similarity of X1[i] and X2[i] (the embetter `ContrastiveLearner` API, trained with
    the project's losses and anchored to its start so a few hundred pairs do not overfit).

    Loss: `SiameseLoss` (Hadsell et al., 2006) by default: s * d + (1 - s) * max(0, margin - d)
    over the given pairs, s = y; "TripletLoss" / "InfoNCELoss" need `in_batch_negatives=True`
    (each X1 row has a single partner otherwise). Plus alpha / 2 * ||W - W_start||^2 (L2-SP,
    Li et al., 2018); W starts at the principal axes of [X1; X2]. Adam (Kingma & Ba, 2015).

    Args:
        shape_out: width of the tuned embedding (int >= 1).
        batch_size: pairs per step (int >= 2). epochs: passes over the pairs in `fit` (int >= 1).
        learning_rate: Adam step size (> 0).
        loss: "SiameseLoss", "TripletLoss", "InfoNCELoss", or a `finetuner.losses` loss object.
        distance: "cosine" (1 - cosine similarity, in [0, 2]), "euclidean" or "sqeuclidean".
        margin: distance beyond which dissimilar pairs cost nothing (units of `distance`).
        in_batch_negatives: also treat the sides of different pairs of a batch as dissimilar
            (the usual in-batch assumption; wrong when one text appears in several pairs).
        alpha: L2-SP strength (>= 0; default 0.01). activation: "identity", "relu", "tanh" or "logistic".
        tol, n_iter_no_change: early stop as in scikit-learn's MLP (tol None: never).
        random_state: int, `RandomState` or None.

    Attributes (after fit): coef_ float32 [n_features, shape_out], intercept_ [shape_out],
        n_features_in_, n_iter_, loss_curve_.

    Raises (at fit, before training):
        ValueError: a bad hyper-parameter; X1 and X2 of different shapes; y of another length;
            NaN or inf; y outside [0, 1]; no similar pair (y > 0) at all; TripletLoss /
            InfoNCELoss without in_batch_negatives.
    """

    def __init__(self, shape_out: int = 300, batch_size: int = 16, epochs: int = 1, learning_rate: float = 2e-5,
                 loss="SiameseLoss", distance: str = "cosine", margin: float = 1.0, in_batch_negatives: bool = False,
                 alpha: float = 0.01, activation: str = "identity", tol: float | None = 1e-4,
                 n_iter_no_change: int = 10, random_state=None) -> None:
        self.shape_out = shape_out
        self.batch_size = batch_size
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.loss = loss
        self.distance = distance
        self.margin = margin
        self.in_batch_negatives = in_batch_negatives
        self.alpha = alpha
        self.activation = activation
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.random_state = random_state

    def _check_pairs(self, X1, X2, y, reset: bool):
        self._check_head_params("shape_out", "epochs")
        loss_fn = self._loss_fn()
        if not self.in_batch_negatives and not isinstance(loss_fn, SiameseLoss):
            raise ValueError(f"loss: {type(loss_fn).__name__} needs several pairs per anchor; set "
                             "in_batch_negatives=True or use loss='SiameseLoss'")
        if np.shape(X1) != np.shape(X2):
            raise ValueError(f"X1 and X2 must have the same shape (one row per pair); got {np.shape(X1)} and "
                             f"{np.shape(X2)}")
        X1 = check_X(self, X1, reset=reset)
        X2 = validate_data(self, X2, reset=False, dtype=[np.float64, np.float32])
        if y is None:
            raise ValueError("ContrastiveLearner requires y to be passed, but the target y is None")
        y = np.asarray(y, dtype=np.float32).reshape(-1) if np.ndim(y) else np.asarray([y], np.float32)
        if y.shape[0] != X1.shape[0]:
            raise ValueError(f"y must hold one similarity per pair: X1 has {X1.shape[0]} rows, y has {y.shape[0]}")
        if not np.all(np.isfinite(y)) or y.min() < 0 or y.max() > 1:
            raise ValueError(f"y: expected similarities in [0, 1] (1 similar, 0 dissimilar), got values in "
                             f"[{np.nanmin(y)}, {np.nanmax(y)}]; rescale scores such as STS's 0-5 first")
        return X1, X2, y, loss_fn

    def fit(self, X1, X2, y):
        """Train from scratch on pairs (X1[i], X2[i]) with similarity y[i] in [0, 1].

        Args:
            X1, X2: float arrays [N, n_features]. y: float [N] (0/1 labels or scores).

        Returns:
            self.
        """
        X1, X2, y, loss_fn = self._check_pairs(X1, X2, y, reset=True)
        if not (y > 0).any():
            raise ValueError("y: no pair is similar (all y == 0); expected at least one y > 0")
        with small_step_threads(2 * self.batch_size, X1.shape[1], self.shape_out):
            self._init_head(np.vstack([X1, X2]), self.shape_out, rng_of(self, reset=True))
            stop, state = Converged(self.tol, self.n_iter_no_change), self._state()
            x1, x2 = to_tensor(X1), to_tensor(X2)
            for _ in range(self.epochs):
                if stop(self._epoch(state, loss_fn, x1, x2, y)):
                    break
        self._store(state)
        return self

    def partial_fit(self, X1, X2, y):
        """One more epoch over these pairs, continuing from the current weights and Adam state."""
        first = not hasattr(self, "coef_")
        X1, X2, y, loss_fn = self._check_pairs(X1, X2, y, reset=first)
        with small_step_threads(2 * self.batch_size, X1.shape[1], self.shape_out):
            if first:
                self._init_head(np.vstack([X1, X2]), self.shape_out, rng_of(self, reset=True))
            state = self._state()
            self._epoch(state, loss_fn, to_tensor(X1), to_tensor(X2), y)
        self._store(state)
        return self

    def _epoch(self, state, loss_fn, x1: torch.Tensor, x2: torch.Tensor, y: np.ndarray) -> float:
        n = x1.shape[0]
        order = self._rng.permutation(n)
        bs = min(self.batch_size, n)
        total, seen = 0.0, 0
        for s in range(0, n, bs):
            idx = order[s:s + bs]
            b = idx.shape[0]
            rows = np.arange(b)
            if self.in_batch_negatives:   # the project's rule: different pairs are unrelated
                rel = torch.zeros(2 * b, 2 * b)
            else:
                rel = torch.full((2 * b, 2 * b), UNKNOWN)
            rel[rows, rows + b] = rel[rows + b, rows] = torch.as_tensor(y[idx])
            # in-batch negatives give every similar pair dissimilar partners once b >= 2
            if not (_has_valid(loss_fn, rows, rows + b, y[idx]) or (
                    self.in_batch_negatives and b >= 2 and (y[idx] >= 1).any())):
                continue  # e.g. a small batch holding only dissimilar pairs: nothing to pull together
            t = torch.as_tensor(idx)
            total += self._step(state, loss_fn, torch.cat([x1[t], x2[t]]), rel) * b
            seen += b
        self.n_iter_ += 1
        self.loss_curve_.append(total / max(seen, 1))
        return self.loss_curve_[-1]

    def predict(self, X1, X2):
        """Similarity of each pair in the tuned space: float [N]; the cosine similarity (in
        [-1, 1]) for distance="cosine", else minus the distance."""
        Z1, Z2 = self.transform(X1), self.transform(X2)
        if Z1.shape != Z2.shape:
            raise ValueError(f"X1 and X2 must have the same shape; got {np.shape(X1)} and {np.shape(X2)}")
        d = paired_distance(torch.as_tensor(Z1), torch.as_tensor(Z2), distance=self.distance).numpy()
        return 1.0 - d if self.distance == "cosine" else -d


class ContrastiveTuner(_ContrastiveHead):
    """Pipeline-friendly contrastive tuning from class labels: `fit(X, y)` builds, every epoch,
    one positive and `n_neg` negative partners per item (SetFit-style pairs, Tunstall et al.,
    2022) and trains a shared head on them with the project's losses; `transform` returns the
    tuned embedding (the embetter `ContrastiveTuner` API).

    Loss: `loss` on the sampled pairs (n_neg int), or on every pair of each batch mined from the
    labels (n_neg=None: batch_size then counts items); plus alpha / 2 * ||W - W_start||^2
    (L2-SP, Li et al., 2018) with W starting at the principal axes of X. Adam (Kingma & Ba, 2015).

    Args:
        hidden_dim: width of the tuned embedding (int >= 1).
        n_neg: negative partners per item per epoch (int >= 1), or None for all in-batch pairs.
        epochs: passes in `fit` (int >= 1). learning_rate: Adam step size (> 0).
        batch_size: pairs per step (items per step when n_neg is None), int >= 2.
        loss: "SiameseLoss", "TripletLoss", "InfoNCELoss" or a `finetuner.losses` loss object.
        distance: "cosine", "euclidean" or "sqeuclidean". margin: as in `SiameseLoss`.
        alpha: L2-SP strength (>= 0; default 0.01). activation: "identity", "relu", "tanh" or "logistic".
        tol, n_iter_no_change: early stop as in scikit-learn's MLP (tol None: never).
        random_state: int, `RandomState` or None: pairs, order and start.

    Attributes (after fit): classes_, coef_ float32 [n_features, hidden_dim], intercept_,
        n_features_in_, n_iter_, loss_curve_.

    Raises (at fit, before training):
        ValueError: a bad hyper-parameter; X and y of different lengths; NaN or inf in X;
            fewer than 2 classes, or no class with 2 items; `partial_fit` labels outside the
            first call's classes.
    """

    def __init__(self, hidden_dim: int = 50, n_neg: int | None = 3, epochs: int = 20, learning_rate: float = 0.001,
                 batch_size: int = 256, loss="SiameseLoss", distance: str = "cosine", margin: float = 1.0,
                 alpha: float = 0.01, activation: str = "identity", tol: float | None = 1e-4,
                 n_iter_no_change: int = 10, random_state=None) -> None:
        self.hidden_dim = hidden_dim
        self.n_neg = n_neg
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.loss = loss
        self.distance = distance
        self.margin = margin
        self.alpha = alpha
        self.activation = activation
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags

    def _prepare(self, X, y, classes, first: bool):
        self._check_head_params("hidden_dim", "epochs")
        check_int(self.n_neg, "n_neg", allow_none=True)
        X, y = check_X_y(self, X, y, reset=first)
        yi = encode_classes(self, y, classes, first=first)
        if first and np.bincount(yi).max() < 2:
            raise ValueError(f"y: every class has a single sample in these {len(yi)} rows, so there is no "
                             "similar pair to learn from; expected a class with 2 or more samples")
        return X, yi, self._loss_fn()

    def fit(self, X, y):
        """Train from scratch on X (float [N, n_features]) and class labels y ([N]); returns self."""
        X, yi, loss_fn = self._prepare(X, y, None, first=True)
        with small_step_threads(min(2 * self.batch_size, len(yi)), X.shape[1], self.hidden_dim):
            self._init_head(X, self.hidden_dim, rng_of(self, reset=True))
            stop, state = Converged(self.tol, self.n_iter_no_change), self._state()
            x = to_tensor(X)
            for _ in range(self.epochs):
                if stop(self._epoch(state, loss_fn, x, yi)):
                    break
        self._store(state)
        return self

    def partial_fit(self, X, y, classes=None):
        """One more epoch on this batch, continuing from the current weights and Adam state.

        Args:
            X: float [N, n_features]. y: class labels [N].
            classes: every label of the stream, on the first call (default: the labels of y).
        """
        first = not hasattr(self, "coef_")
        X, yi, loss_fn = self._prepare(X, y, classes, first=first)
        with small_step_threads(min(2 * self.batch_size, len(yi)), X.shape[1], self.hidden_dim):
            if first:
                self._init_head(X, self.hidden_dim, rng_of(self, reset=True))
            state = self._state()
            self._epoch(state, loss_fn, to_tensor(X), yi)
        self._store(state)
        return self

    def _epoch(self, state, loss_fn, x: torch.Tensor, yi: np.ndarray) -> float:
        rng = self._rng
        total, seen = 0.0, 0
        if self.n_neg is None:   # batches of items, every pair mined from the labels
            order = rng.permutation(len(yi))
            bs = min(self.batch_size, len(yi))
            labels = torch.as_tensor(yi)
            for s in range(0, len(yi), bs):
                idx = torch.as_tensor(order[s:s + bs])
                counts = np.bincount(yi[order[s:s + bs]])
                if counts.max() >= 2 and (counts > 0).sum() >= 2:  # a similar pair and a dissimilar one
                    total += self._step(state, loss_fn, x[idx], relation_matrix(labels[idx])) * idx.shape[0]
                    seen += idx.shape[0]
        else:                    # fresh SetFit-style pairs every epoch
            i, j, t = sample_pairs(yi, self.n_neg, rng)
            order = rng.permutation(len(i))
            bs = min(self.batch_size, len(i))
            for s in range(0, len(i), bs):
                sel = order[s:s + bs]
                items, inv = np.unique(np.concatenate([i[sel], j[sel]]), return_inverse=True)
                if _has_valid(loss_fn, i[sel], j[sel], t[sel]):
                    rel = pair_relation(len(items), inv[:len(sel)], inv[len(sel):], t[sel])
                    total += self._step(state, loss_fn, x[torch.as_tensor(items)], rel) * len(sel)
                    seen += len(sel)
        self.n_iter_ += 1
        self.loss_curve_.append(total / max(seen, 1))
        return self.loss_curve_[-1]
