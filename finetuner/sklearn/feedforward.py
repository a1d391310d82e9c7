"""`FeedForwardTuner`: a classifier on top of embeddings whose hidden layer is the new embedding."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.extmath import softmax
from sklearn.utils.validation import check_is_fitted

from ._head import (ACTIVATIONS, AdamState, Converged, check_choice, check_float, check_int, check_X, check_X_y,
                    encode_classes, glorot, np_activation, principal_axes, rng_of, small_step_threads, sq_dist,
                    to_tensor, torch_activation)


class FeedForwardTuner(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Steer embeddings towards labels: train a one-hidden-layer classifier on them and return
    the hidden layer as the new embedding (the embetter `FeedForwardTuner` idea, made to
    generalise and to be a scikit-learn transformer).

    Network: h = act(X @ W1 + b1) [N, hidden_dim]; logits = h @ W2 + b2 [N, n_classes];
    loss = cross-entropy + alpha / 2 * (||W1 - W1_start||^2 + ||W2||^2).
    W1 starts at the principal axes of the training X (orthonormal, so h starts as the centred
    embedding itself when hidden_dim >= n_features) and the L2-SP term (Li et al., 2018) keeps
    it there except along directions the labels pay for; a free W1 (embetter) overfits a few
    hundred labels and makes held-out accuracy worse than the original embeddings.
    Optimiser: Adam (Kingma & Ba, 2015) on mini-batches; training stops early, as in
    scikit-learn's MLP, once the epoch loss stops improving by `tol` for `n_iter_no_change` epochs.

    Args:
        hidden_dim: width of the hidden layer = number of output features (int >= 1).
        n_epochs: most passes over the data in `fit` (int >= 1).
        learning_rate: Adam step size (> 0).
        batch_size: samples per step (int >= 1; clipped to the number of samples).
        alpha: strength of the penalty above (>= 0; 0 = a free network as in embetter).
        activation: "identity" (default: a linear map, best held-out accuracy in our
            benchmark), "relu", "tanh" or "logistic" (embetter's sigmoid).
        tol: minimum loss improvement per epoch (>= 0), or None to always run `n_epochs`.
        n_iter_no_change: epochs without improvement before stopping (int >= 1).
        random_state: int, `RandomState` or None: shuffling and initial weights.

    Attributes (after fit):
        classes_: sorted class labels [n_classes]. n_features_in_, feature_names_in_ (pandas).
        coefs_: [W1 float32 [n_features, hidden_dim], W2 float32 [hidden_dim, n_classes]].
        intercepts_: [b1 [hidden_dim], b2 [n_classes]].
        n_iter_: epochs run by the last `fit` (plus one per `partial_fit`). loss_curve_: loss per epoch.

    Raises (at fit, before training):
        ValueError: a bad hyper-parameter (names it, says what was expected and what was given);
            X and y of different lengths; NaN or inf in X; fewer than 2 classes; a
            `partial_fit` batch with labels outside the first call's classes; another
            number of features than the first `fit`.
    """

    def __init__(self, hidden_dim: int = 50, n_epochs: int = 500, learning_rate: float = 0.01, batch_size: int = 32,
                 alpha: float = 0.1, activation: str = "identity", tol: float | None = 1e-4,
                 n_iter_no_change: int = 10, random_state=None) -> None:
        self.hidden_dim = hidden_dim
        self.n_epochs = n_epochs
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.alpha = alpha
        self.activation = activation
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.random_state = random_state

    # ---- scikit-learn plumbing ---------------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    def _check_params(self) -> None:
        check_int(self.hidden_dim, "hidden_dim")
        check_int(self.n_epochs, "n_epochs")
        check_float(self.learning_rate, "learning_rate", strict=True)
        check_int(self.batch_size, "batch_size")
        check_float(self.alpha, "alpha")
        check_choice(self.activation, "activation", ACTIVATIONS)
        if self.tol is not None:
            check_float(self.tol, "tol")
        check_int(self.n_iter_no_change, "n_iter_no_change")

    @property
    def _n_features_out(self) -> int:
        return self.coefs_[0].shape[1]

    # ---- training ------------------------------------------------------------------------
    def fit(self, X, y):
        """Train from scratch on X (float [N, n_features]) and class labels y ([N]); returns self."""
        self._check_params()
        X, y = check_X_y(self, X, y, reset=True)
        yi = encode_classes(self, y, first=True)
        with small_step_threads(min(self.batch_size, len(yi)), X.shape[1], self.hidden_dim):
            self._init(X, rng_of(self, reset=True))
            self.n_iter_, self.loss_curve_ = 0, []
            stop = Converged(self.tol, self.n_iter_no_change)
            state = self._state()
            Xt, yt = to_tensor(X), torch.as_tensor(yi)
            for _ in range(self.n_epochs):
                if stop(self._epoch(state, Xt, yt)):
                    break
        self._store(state)
        return self

    def partial_fit(self, X, y, classes=None):
        """One more epoch over this batch, continuing from the current weights and Adam state.

        Args:
            X: float [N, n_features]. y: class labels [N].
            classes: every label of the stream; needed on the first call when this batch does
                not hold them all (later batches may only use these labels).

        Returns:
            self.
        """
        self._check_params()
        first = not hasattr(self, "coefs_")
        X, y = check_X_y(self, X, y, reset=first)
        yi = encode_classes(self, y, classes, first=first)
        with small_step_threads(min(self.batch_size, len(yi)), X.shape[1], self.hidden_dim):
            if first:
                self._init(X, rng_of(self, reset=True))
                self.n_iter_, self.loss_curve_ = 0, []
            state = self._state()
            self._epoch(state, to_tensor(X), torch.as_tensor(yi))
        self._store(state)
        return self

    def _init(self, X: np.ndarray, rng: np.random.RandomState) -> None:
        W1, b1 = principal_axes(X, self.hidden_dim, rng)
        self.coefs_ = [W1, glorot(rng, self.hidden_dim, len(self.classes_))]
        self.intercepts_ = [b1, np.zeros(len(self.classes_), np.float32)]
        self._W1_start = W1.copy()
        self._optimizer_state = None

    def _state(self) -> AdamState:
        weights = {"W1": self.coefs_[0], "b1": self.intercepts_[0], "W2": self.coefs_[1], "b2": self.intercepts_[1]}
        return AdamState(weights, self.learning_rate, self._optimizer_state)

    def _store(self, state: AdamState) -> None:
        w = state.numpy()
        self.coefs_, self.intercepts_ = [w["W1"], w["W2"]], [w["b1"], w["b2"]]
        self._optimizer_state = state.state_dict()

    def _epoch(self, state: AdamState, Xt: torch.Tensor, yt: torch.Tensor) -> float:
        """One shuffled pass of mini-batch Adam steps over Xt [N, D] / yt [N]; returns the mean loss."""
        p = state.params
        start = torch.as_tensor(self._W1_start)
        n = Xt.shape[0]
        bs = min(self.batch_size, n)
        order = torch.as_tensor(self._rng.permutation(n))
        total = 0.0
        for s in range(0, n, bs):
            idx = order[s:s + bs]
            h = torch_activation(self.activation, Xt[idx] @ p["W1"] + p["b1"])
            loss = F.cross_entropy(h @ p["W2"] + p["b2"], yt[idx])
            if self.alpha:
                loss = loss + 0.5 * self.alpha * (sq_dist(p["W1"], start) + sq_dist(p["W2"]))
            total += state.step(loss) * idx.shape[0]
        self.n_iter_ += 1
        self.loss_curve_.append(total / n)
        return total / n

    # ---- inference -----------------------------------------------------------------------
    def transform(self, X):
        """The hidden layer: float [N, hidden_dim] in X's float dtype (float64 stays float64)."""
        check_is_fitted(self)
        X = check_X(self, X, reset=False)
        z = X @ self.coefs_[0].astype(X.dtype) + self.intercepts_[0].astype(X.dtype)
        return np_activation(self.activation, z)

    def predict_proba(self, X):
        """Class probabilities of the network's own classifier: float [N, n_classes] (columns
        follow `classes_`)."""
        check_is_fitted(self)
        h = self.transform(X)
        return softmax(h @ self.coefs_[1].astype(h.dtype) + self.intercepts_[1].astype(h.dtype))

    def predict(self, X):
        """The network's predicted class label for each row: [N], values from `classes_`."""
        check_is_fitted(self)
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
