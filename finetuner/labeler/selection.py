"""Active learning: which query the user should label next.

A candidate pool of unlabelled items is scored by how unsure the current model is about its
result page, and the most uncertain ones are asked first (uncertainty sampling, Lewis & Gale,
1994, "A sequential algorithm for training text classifiers"; survey: Settles, 2009, "Active
Learning Literature Survey"). The old Jina labeler took queries in index order; "sequential"
keeps that behaviour for comparison only.

Strategies (the score is larger where the model is less sure):

- "margin" (the default): the smallest gap between top matches: how little the k shown
  results stand out from the next k (mean distance of results k+1..2k minus that of 1..k,
  over the spread of the 2k distances). The retrieval analogue of margin sampling (Scheffer
  et al., 2001): a page whose results do not stand out is one where the model cannot tell
  what belongs to the query. It needs no labels and adapts to the local density of the space.
  In `benchmarks/labeler_active_learning.py` it did best on Fashion-MNIST (classes of
  thousands of items: +0.030 mAP@10 over random queries after 480 labels, 5 of 5 seeds) but
  only led early on Covid-QA, where a class is a question and its answer (2 items): there it
  favoured pages the model already ranked right (its score correlates -0.31 with "the
  answer is not first"; the gap between the top two results correlates +0.39).
- "entropy": how unsure the model is whether each shown result is relevant. A logistic
  regression maps a pair's distance to P(relevant), fitted on the pairs labelled so far under
  the current model (Platt, 1999, scaling); a page's score is the mean binary entropy of
  P(relevant) over its top-k results. Before labels of both kinds exist it falls back to
  "margin".
- "disagreement": how much the top-k list changed between the two latest model versions
  (1 - Jaccard overlap; query-by-committee over successive models, Seung et al., 1992).
  Falls back to "margin" while there is only one version.
- "random": uniform; "sequential": index order.

Pages are kept diverse: a candidate that already appears in the result list of a query picked
earlier in the same model version is skipped, so one dense region does not fill the queue.
"""

from __future__ import annotations

import numpy as np
import torch

from ..evaluation.topk import chunked_topk

STRATEGIES = ("margin", "entropy", "disagreement", "random", "sequential")


def check_strategy(strategy: str) -> str:
    """`strategy` if known, else ValueError naming the known ones."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy: expected one of {STRATEGIES}, got {strategy!r}")
    return strategy


def neighbours(embeddings: torch.Tensor, queries: np.ndarray, k: int, distance: str = "cosine"
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """The k nearest items of each query among all items, the query itself left out.

    Args:
        embeddings: float tensor [N, D] of every item.
        queries: int array [Q] of item positions.
        k: results per query (clamped to N - 1).
        distance: "cosine", "euclidean" or "sqeuclidean".

    Returns:
        (distances float32 [Q, k'], positions int64 [Q, k']), nearest first.
    """
    queries = np.asarray(queries, dtype=np.int64)
    k = int(min(k, embeddings.shape[0] - 1))
    dist, idx = chunked_topk(embeddings[torch.from_numpy(queries)], embeddings, k + 1, distance=distance)
    keep = idx != torch.from_numpy(queries)[:, None]
    # drop the query itself (or, for an exact duplicate that outranked it, the last column)
    keep[keep.all(1), -1] = False
    return dist[keep].view(len(queries), k), idx[keep].view(len(queries), k)


class RelevanceCalibrator:
    """P(relevant | distance) for a (query, result) pair under the current model: a 1-D
    logistic regression (Platt scaling) on the labelled pairs, from scikit-learn.

    Args:
        distances: float array [P], distance of each labelled pair under the current model.
        relevant: 0/1 array [P].

    Raises:
        ValueError: fewer than one pair of each kind (nothing to calibrate).
    """

    def __init__(self, distances: np.ndarray, relevant: np.ndarray) -> None:
        from sklearn.linear_model import LogisticRegression

        relevant = np.asarray(relevant, dtype=np.int64)
        if len(np.unique(relevant)) < 2:
            raise ValueError("relevant: expected labelled pairs of both kinds (relevant and not) to calibrate")
        x = np.asarray(distances, dtype=np.float64).reshape(-1, 1)
        self.model_ = LogisticRegression().fit(x, relevant)

    def predict(self, distances: np.ndarray) -> np.ndarray:
        """P(relevant) for each distance: float array of the same shape."""
        d = np.asarray(distances, dtype=np.float64)
        return self.model_.predict_proba(d.reshape(-1, 1))[:, 1].reshape(d.shape)


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """H(p) in nats, elementwise, 0 at p in {0, 1}."""
    p = np.clip(p, 1e-9, 1 - 1e-9)
    return -(p * np.log(p) + (1 - p) * np.log1p(-p))


def margin_scores(dist: torch.Tensor, k: int) -> np.ndarray:
    """[C] scores: minus the gap between the mean distance of results k+1..2k and of results
    1..k, each list's distances divided by their spread so the score does not depend on the
    scale of the embedding space (the smaller the gap, the larger the score)."""
    d = dist.numpy().astype(np.float64)
    top, rest = d[:, :k], d[:, k:2 * k]
    scale = d[:, : 2 * k].std(1) + 1e-9
    return -(rest.mean(1) - top.mean(1)) / scale


def uncertainty_scores(strategy: str, dist: torch.Tensor, idx: torch.Tensor, k: int, *,
                       calibrator: RelevanceCalibrator | None = None,
                       previous_idx: torch.Tensor | None = None,
                       rng: np.random.Generator | None = None) -> np.ndarray:
    """How unsure the model is about each candidate's result page (larger = less sure).

    Args:
        strategy: one of `STRATEGIES` (see the module docstring).
        dist, idx: [C, >= 2k] distances and positions of each candidate's nearest items under
            the current model, nearest first (from `neighbours`).
        k: results shown per page.
        calibrator: for "entropy"; None falls back to "margin".
        previous_idx: [C, >= k] nearest positions under the previous model version, for
            "disagreement"; None falls back to "margin".
        rng: for "random" (and a tiny tie-break elsewhere); default a fixed seed.

    Returns:
        float array [C].
    """
    check_strategy(strategy)
    rng = rng if rng is not None else np.random.default_rng(0)
    n = dist.shape[0]
    tie = 1e-6 * rng.random(n)  # equal scores are broken at random, not by index order
    if strategy == "random":
        return rng.random(n)
    if strategy == "sequential":
        return -np.arange(n, dtype=np.float64)
    if strategy == "entropy" and calibrator is not None:
        return binary_entropy(calibrator.predict(dist[:, :k].numpy())).mean(1) + tie
    if strategy == "disagreement" and previous_idx is not None:
        now, before = idx[:, :k].numpy(), previous_idx[:, :k].numpy()
        overlap = np.array([len(np.intersect1d(a, b)) for a, b in zip(now, before)], dtype=np.float64)
        return 1.0 - overlap / (2 * k - overlap) + tie
    return margin_scores(dist, k) + tie


def pick_diverse(order: np.ndarray, skip: set[int], blocked: set[int]) -> int | None:
    """The first candidate in `order` that is neither in `skip` (labelled, pending) nor in
    `blocked` (shown as a result of a query picked earlier), or None.

    Args:
        order: int array [C] of item positions, most uncertain first.
        skip, blocked: item positions to pass over.
    """
    for c in order:
        c = int(c)
        if c not in skip and c not in blocked:
            return c
    return None
