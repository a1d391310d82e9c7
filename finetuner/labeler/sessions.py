"""Stored labels -> session-format `LabeledData` for the Tuner, and the retrieval metric on
the labelled sessions."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..data.labeled import LabeledData
from ..evaluation.metrics import ranking_metrics
from ..losses.distances import paired_distance


def take(items: Any, index) -> Any:
    """Items at `index`: a numpy slice for an array, else a list."""
    index = np.asarray(index, dtype=np.int64)
    if isinstance(items, np.ndarray):
        return items[index]
    return [items[i] for i in index]


def linked_sessions(sessions: dict[int, list[tuple[int, int]]]) -> list[list[tuple[int, float]]]:
    """Merge pages linked by a relevant mark into one group (union-find over the "relevant"
    edges query - item): when b is relevant to a and c to b, a, b, c form one group, and an
    item marked not relevant on any of its pages is a negative of the whole group.

    This assumes relevance is transitive (as with "same kind of item"), and stops two pages
    about the same thing from being treated as each other's negatives in a batch.

    Returns:
        one list per group of (item position, relevance 1.0 / 0.0), each item once; an item
        marked relevant anywhere in the group counts as relevant.
    """
    parent: dict[int, int] = {}

    def root(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for q, marks in sessions.items():
        root(q)
        for i, r in marks:
            if r:
                parent[root(i)] = root(q)
    groups: dict[int, dict[int, float]] = {}
    for q, marks in sessions.items():
        members = groups.setdefault(root(q), {})
        members[q] = 1.0
        for i, r in marks:
            members[i] = max(members.get(i, 0.0), float(r))
    return [list(m.items()) for m in groups.values()]


def session_data(items: Any, sessions: dict[int, list[tuple[int, int]]], link: bool = True) -> LabeledData:
    """Session-format training data from labelled result pages.

    Each query becomes one session: the query (relevance 1), the results marked relevant
    (relevance 1) and the others (relevance 0); see `finetuner.data.relation`. With `link`,
    pages joined by a relevant mark are merged into one session first (`linked_sessions`).
    A session where nothing is relevant but the query still teaches which results are wrong:
    the query is added once more as its own relevant match (an item is relevant to itself), so
    every batch holding it has a positive pair and the loss pushes the unmarked results away.

    Args:
        items: the labeler's items (numpy array [N, ...] or a list).
        sessions: {query position: [(item position, relevant 0/1), ...]} (`LabelStore.sessions`).
        link: merge linked pages (see above).

    Returns:
        `LabeledData` in session format, group = index of the session.

    Raises:
        ValueError: `sessions` is empty.
    """
    if not sessions:
        raise ValueError("sessions: no labelled query yet; label at least one result page first")
    if link:
        grouped = linked_sessions(sessions)
    else:
        grouped = [[(q, 1.0)] + [(i, float(r)) for i, r in marks] for q, marks in sessions.items()]
    index, groups, relevance = [], [], []
    for g, members in enumerate(grouped):
        if sum(r == 1.0 for _, r in members) < 2:
            members = members + [members[0]]  # the query, as its own relevant match
        for i, r in members:
            index.append(i)
            groups.append(g)
            relevance.append(r)
    picked = take(items, index)
    if isinstance(picked, np.ndarray) and picked.dtype.kind == "f":
        picked = picked.astype(np.float32, copy=False)
    return LabeledData(picked, np.asarray(groups), np.asarray(relevance, dtype=np.float32), "session")


def session_map(embeddings: torch.Tensor, sessions: dict[int, list[tuple[int, int]]],
                distance: str = "cosine") -> dict:
    """Mean average precision of each labelled page re-ranked by the model: for every query
    with at least one relevant result, its labelled results are sorted by distance to the query
    and AP is taken over that list (1.0 = every marked result ranked above every unmarked one).

    Args:
        embeddings: float tensor [N, D] of all items under the model to score.
        sessions: {query: [(item, relevant 0/1), ...]}.
        distance: "cosine", "euclidean" or "sqeuclidean".

    Returns:
        {"session_mAP": float or None (no query with a relevant result), "num_scored_sessions":
        int (queries scored)}.
    """
    rows = [(q, marks) for q, marks in sessions.items() if any(r for _, r in marks)]
    if not rows:
        return {"session_mAP": None, "num_scored_sessions": 0}
    width = max(len(m) for _, m in rows)
    relevant = torch.zeros(len(rows), width, dtype=torch.bool)
    num_relevant = torch.zeros(len(rows), dtype=torch.int64)
    for r, (q, marks) in enumerate(rows):
        items = torch.as_tensor([i for i, _ in marks])
        labels = torch.as_tensor([bool(x) for _, x in marks])
        d = paired_distance(embeddings[q].expand(len(items), -1), embeddings[items], distance=distance)
        relevant[r, : len(items)] = labels[torch.argsort(d, stable=True)]
        num_relevant[r] = int(labels.sum())
    m = ranking_metrics(relevant, num_relevant, ks=(width,))
    return {"session_mAP": m[f"mAP@{width}"], "num_scored_sessions": len(rows)}
