"""What the numeric tuners share: input checks, the starting point of the head, activations,
and a small Adam step loop over numpy data.

The head starts as the principal axes of the training embeddings (an orthonormal map that keeps
their geometry) and is pulled back towards that start by an L2-SP penalty (Li, Grandvalet &
Davoine, 2018, "Explicit Inductive Bias for Transfer Learning with Convolutional Networks"): with
a few hundred labels a free head overfits and its output generalises worse than the input
embeddings did (what embetter's tuners do), while an anchored head only stretches the few
directions the labels support.
"""

from __future__ import annotations

from contextlib import contextmanager
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import validate_data

ACTIVATIONS = ("identity", "relu", "tanh", "logistic")

_TORCH_ACT = {"identity": lambda z: z, "relu": torch.relu, "tanh": torch.tanh, "logistic": torch.sigmoid}


def np_activation(name: str, z: np.ndarray) -> np.ndarray:
    """Apply activation `name` (one of `ACTIVATIONS`) to a float array, in place when it can."""
    if name == "relu":
        return np.maximum(z, 0, out=z)
    if name == "tanh":
        return np.tanh(z, out=z)
    if name == "logistic":
        return np.reciprocal(1.0 + np.exp(-z, out=z), out=z)
    return z


def torch_activation(name: str, z: torch.Tensor) -> torch.Tensor:
    """Apply activation `name` (one of `ACTIVATIONS`) to a tensor."""
    return _TORCH_ACT[name](z)


# ---- hyper-parameter checks (raised at fit, before any work: scikit-learn's __init__ only stores) --
def check_int(value, name: str, low: int = 1, allow_none: bool = False) -> None:
    """Raise ValueError unless `value` is an int >= `low` (or None when allowed)."""
    if value is None and allow_none:
        return
    if not isinstance(value, Integral) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name}: expected an int >= {low}{' or None' if allow_none else ''}, got {value!r}")


def check_float(value, name: str, low: float = 0.0, strict: bool = False) -> None:
    """Raise ValueError unless `value` is a real number > `low` (strict) or >= `low`."""
    ok = isinstance(value, Real) and not isinstance(value, bool) and np.isfinite(value)
    ok = ok and (value > low if strict else value >= low)
    if not ok:
        raise ValueError(f"{name}: expected a number {'>' if strict else '>='} {low}, got {value!r}")


def check_choice(value, name: str, choices) -> None:
    """Raise ValueError unless `value` is one of `choices`."""
    if value not in choices:
        raise ValueError(f"{name}: expected one of {tuple(choices)}, got {value!r}")


# ---- data checks ---------------------------------------------------------------------------
def check_X(est, X, reset: bool) -> np.ndarray:
    """2-D finite float array (float64 kept, anything else becomes float32), n_features_in_ set or checked."""
    return validate_data(est, X, reset=reset, dtype=[np.float64, np.float32])


def check_X_y(est, X, y, reset: bool) -> tuple[np.ndarray, np.ndarray]:
    """X as in `check_X`; y a 1-D array of class labels of the same length.

    Raises:
        ValueError: (scikit-learn's messages) lengths differ, NaN/inf in X, y is None, y is
            continuous or 2-D.
    """
    X, y = validate_data(est, X, y, reset=reset, dtype=[np.float64, np.float32])
    check_classification_targets(y)
    return X, y


def encode_classes(est, y: np.ndarray, classes=None, first: bool = True) -> np.ndarray:
    """Set `est.classes_` on the first call and map y to indices into it.

    Args:
        y: 1-D labels. classes: every label the stream will hold (partial_fit's `classes=`).
        first: True for `fit` and the first `partial_fit` (classes_ is set), else classes_ is kept.

    Raises:
        ValueError: fewer than 2 classes on the first call; labels outside `classes` or outside
            the classes seen by an earlier `partial_fit`.
    """
    name = type(est).__name__
    if first:
        labels = np.unique(y) if classes is None else np.unique(np.asarray(classes))
        if labels.size < 2:
            raise ValueError(f"{name} learns from labels and needs at least 2 classes in y; got 1 class "
                             f"({labels[0]!r}) in {y.shape[0]} samples")
        est.classes_ = labels
    unseen = np.setdiff1d(np.unique(y), est.classes_)
    if unseen.size:
        where = "`classes`" if first else "the classes of the first partial_fit call"
        raise ValueError(f"y contains labels {unseen.tolist()} not in {where} ({est.classes_.tolist()}); "
                         "pass every label as classes=... on the first partial_fit call")
    return np.searchsorted(est.classes_, y)


# ---- the head's starting point ---------------------------------------------------------------
def principal_axes(X: np.ndarray, k: int, rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    """An orthonormal [D, k] map onto the k principal axes of X, and the bias that centres X.

    The first min(k, D) columns are the eigenvectors of X's covariance, largest variance first
    (an orthonormal basis of all D dimensions even when N < D, so nothing is thrown away while
    k >= D). Columns beyond D (k > D) are small random vectors. Eigenvector signs follow
    scikit-learn's `svd_flip` rule (largest |entry| positive), so the start is reproducible.

    Args:
        X: float array [N, D]. k: output width (>= 1). rng: for the columns beyond D.

    Returns:
        (W [D, k] float32, b [k] float32) with X @ W + b the centred principal coordinates.
    """
    X = np.asarray(X, dtype=np.float64)
    mean = X.mean(axis=0)
    Xc = X - mean
    _, vecs = np.linalg.eigh(Xc.T @ Xc)            # ascending eigenvalues, [D, D]
    vecs = vecs[:, ::-1]
    signs = np.sign(vecs[np.abs(vecs).argmax(axis=0), np.arange(vecs.shape[1])])
    vecs = vecs * np.where(signs == 0, 1.0, signs)
    D = X.shape[1]
    if k <= D:
        W = vecs[:, :k]
    else:
        W = np.hstack([vecs, rng.normal(0.0, 1.0 / np.sqrt(D), size=(D, k - D))])
    return W.astype(np.float32), (-mean @ W).astype(np.float32)


def glorot(rng: np.random.RandomState, fan_in: int, fan_out: int) -> np.ndarray:
    """Glorot-uniform weights [fan_in, fan_out] (Glorot & Bengio, 2010), as scikit-learn's MLP."""
    bound = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-bound, bound, size=(fan_in, fan_out)).astype(np.float32)


def rng_of(est, reset: bool) -> np.random.RandomState:
    """The estimator's random stream: reset from `random_state` by `fit`, continued by `partial_fit`."""
    if reset or getattr(est, "_rng", None) is None:
        est._rng = check_random_state(est.random_state)
    return est._rng


# ---- the training state: numpy weights outside, torch tensors and Adam inside ------------
class AdamState:
    """Torch parameters built from numpy weights, with an Adam optimizer whose moments survive
    between `partial_fit` calls (so a call continues the previous one instead of restarting).

    Args:
        weights: dict name -> float32 numpy array (copied into leaf tensors).
        lr: learning rate. state: an earlier `optimizer.state_dict()` to continue from, or None.
    """

    def __init__(self, weights: dict, lr: float, state: dict | None = None) -> None:
        self.params = {k: torch.tensor(v, dtype=torch.float32, requires_grad=True) for k, v in weights.items()}
        self.optimizer = torch.optim.Adam(list(self.params.values()), lr=lr)
        if state is not None:
            self.optimizer.load_state_dict(state)
            for group in self.optimizer.param_groups:
                group["lr"] = lr  # set_params(learning_rate=...) between calls takes effect

    def step(self, loss: torch.Tensor) -> float:
        """One backward pass and Adam step; returns the loss as a float."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def numpy(self) -> dict:
        """The current weights as float32 numpy arrays."""
        return {k: v.detach().numpy().copy() for k, v in self.params.items()}

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()


def to_tensor(X: np.ndarray) -> torch.Tensor:
    """A float32 tensor copy of X (a copy, so read-only or memory-mapped input is fine)."""
    return torch.tensor(np.asarray(X), dtype=torch.float32)


def sq_dist(a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """Sum of squares of `a` (or of `a - b`): the L2 / L2-SP penalty term."""
    d = a if b is None else a - b
    return (d * d).sum()


# below this many multiply-adds per step, one thread is faster than several
SMALL_STEP_FLOPS = 2e7


@contextmanager
def small_step_threads(batch: int, n_in: int, n_out: int):
    """Run torch and the BLAS under numpy on one thread while steps are small
    (batch x n_in x n_out < SMALL_STEP_FLOPS).

    A tuner step on a few hundred embeddings is microseconds of math; with several threads each
    step also waits for every thread to get a core, which on a machine with other jobs made a
    fit 100x slower (measured: 1.7 s with 2 threads, 0.015 s with 1; numpy's eigh of a 384 x 384
    matrix 1.3 s vs 15 ms). The previous thread counts are restored on exit.
    """
    if batch * n_in * n_out >= SMALL_STEP_FLOPS:
        yield
        return
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(before)


class Converged:
    """scikit-learn MLP's stopping rule: stop when the epoch loss has not improved by `tol` for
    `n_iter_no_change` epochs in a row (`tol=None` never stops early)."""

    def __init__(self, tol: float | None, n_iter_no_change: int) -> None:
        self.tol, self.patience = tol, n_iter_no_change
        self.best, self.bad = np.inf, 0

    def __call__(self, loss: float) -> bool:
        if self.tol is None:
            return False
        if loss > self.best - self.tol:
            self.bad += 1
        else:
            self.bad = 0
        self.best = min(self.best, loss)
        return self.bad >= self.patience
