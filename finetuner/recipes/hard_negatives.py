"""Hard negatives mined with the model itself before training.

For each query, the corpus is ranked by the model; the documents that rank high but are not
judged relevant are added to the query's session as negatives, so every batch holds, beside the
other queries' documents, the ones most easily confused with the right answer. False negatives
(relevant documents nobody judged) rank highest of all, so the rank window and the margin keep
them out, as in NV-Retriever's "TopK-PercPos" (Moreira et al., 2024: negatives scored below
95% of the positive's score) and sentence-transformers' `mine_hard_negatives`, whose options and
selection rule (`sampling_strategy="top"`) this follows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from ..console import note
from ..data.formats import to_labeled
from ..data.labeled import LabeledData
from ..data.retrieval import RetrievalData
from ..evaluation.topk import chunked_topk

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HardNegatives:
    """Settings of `mine_hard_negatives` (what `fit(..., hard_negatives=...)` takes).

    Attributes:
        num_negatives: negatives added per query (int >= 1).
        range_min: skip this many of the best-ranked remaining candidates (int >= 0): the most
            likely unjudged positives.
        range_max: consider only the best `range_max` candidates (after the positives and the
            margin are taken out); None: range_min + 10 * num_negatives + the most positives of a
            query (sentence-transformers' rule with a margin).
        relative_margin: drop candidates scored above (1 - m) x the query's lowest positive
            score, |score| for a negative one (0.05: NV-Retriever's 95%); None: no such rule.
        absolute_margin: drop candidates scored above the lowest positive score - m; None: off.
    """

    num_negatives: int = 1
    range_min: int = 0
    range_max: int | None = None
    relative_margin: float | None = 0.05
    absolute_margin: float | None = None

    def __post_init__(self) -> None:
        for name, low in (("num_negatives", 1), ("range_min", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"hard_negatives: {name} expected an int >= {low}, got {value!r}")
        if self.range_max is not None and (not isinstance(self.range_max, (int, np.integer))
                                           or self.range_max < self.range_min + self.num_negatives):
            raise ValueError(f"hard_negatives: range_max expected an int >= range_min + num_negatives "
                             f"({self.range_min + self.num_negatives}) or None, got {self.range_max!r}")
        for name in ("relative_margin", "absolute_margin"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
                raise ValueError(f"hard_negatives: {name} expected a number >= 0 or None, got {value!r}")

    @classmethod
    def parse(cls, value: Any) -> "HardNegatives | None":
        """None / False -> None; True -> the defaults; an int -> that many negatives; a dict
        -> those fields; a `HardNegatives` as it is.

        Raises:
            ValueError: anything else, or a bad field (named).
        """
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            return cls(num_negatives=int(value))
        if isinstance(value, dict):
            unknown = sorted(set(value) - set(cls.__dataclass_fields__))
            if unknown:
                raise ValueError(f"hard_negatives: unknown setting(s) {unknown}; known: {sorted(cls.__dataclass_fields__)}")
            return cls(**value)
        raise ValueError(f"hard_negatives: expected True / False, an int (negatives per query), a dict of "
                         f"HardNegatives settings or a HardNegatives, got {value!r}")


def _sessions(data: LabeledData) -> list[tuple[str, list[str], list[str]]]:
    """(query, positives, negatives) per group: the query is the group's first item."""
    rel = data.relevance if data.relevance is not None else np.ones(len(data), np.float32)
    starts = np.flatnonzero(np.r_[True, data.groups[1:] != data.groups[:-1]])
    out = []
    for s, e in zip(starts, np.r_[starts[1:], len(data)]):
        items = [data.items[i] for i in range(s, e)]
        out.append((items[0], [t for t, r in zip(items[1:], rel[s + 1:e]) if r >= 1],
                    [t for t, r in zip(items[1:], rel[s + 1:e]) if r < 1]))
    return out


def mine_hard_negatives(embed: Callable[[list[str]], Any], data: Any, settings: HardNegatives | None = None, *,
                        corpus: list[str] | None = None, name: str = "train_data") -> LabeledData:
    """Add mined negatives to every query's session.

    Each query (the first item of a session; every query of a `RetrievalData`) ranks the
    corpus by cosine similarity under `embed`; its positives, the query's own text and
    texts equal to them are never candidates; the `relative_margin` / `absolute_margin`
    rules drop candidates scored too close to the query's lowest-scored positive; of the
    `range_max` best remaining, the first `range_min` are skipped and the next
    `num_negatives` become negatives (fewer when fewer qualify).

    Args:
        embed: texts -> float array / tensor [n, D] (e.g. `TextEncoder.encode`).
        data: session / pair / triplet data in any form `to_labeled` reads, or `RetrievalData`.
        settings: `HardNegatives` (default its defaults).
        corpus: candidate texts; default every non-query text of `data` (for `RetrievalData`
            its whole corpus).
        name: the argument's name, for messages.

    Returns:
        `LabeledData` in session format: each query, its positives, its given negatives, then
        the mined ones (relevance 0), in the query's group.

    Raises:
        ValueError: class-format data (there is no query), or no query with a positive.
    """
    settings = settings or HardNegatives()
    if isinstance(data, RetrievalData):
        corpus = list(dict.fromkeys(data.corpus.values())) if corpus is None else corpus
        data = to_labeled(data, None, name)
    data = to_labeled(data, None, name)
    if data.format == "class":
        raise ValueError(f"{name}: hard negatives need queries with positives (session, pair or triplet data); "
                         "class data has no query")
    sessions = [s for s in _sessions(data) if s[1]]
    if not sessions:
        raise ValueError(f"{name}: no query has a positive; there is nothing to mine negatives against")
    positives = [t for _, p, _ in sessions for t in p]
    given = corpus if corpus is not None else [t for _, p, n in sessions for t in p + n]
    texts = list(dict.fromkeys(list(given) + positives))  # the positives are scored too, as in the library
    index = {t: i for i, t in enumerate(texts)}
    queries = list(dict.fromkeys(q for q, _, _ in sessions))
    most_pos = max(len(p) for _, p, _ in sessions)
    window = settings.range_max or settings.range_min + 10 * settings.num_negatives + most_pos
    q_emb = torch.as_tensor(np.asarray(embed(queries)), dtype=torch.float32)
    c_emb = torch.as_tensor(np.asarray(embed(texts)), dtype=torch.float32)
    dist, idx = chunked_topk(q_emb, c_emb, window + most_pos + 1, distance="cosine")
    scores, idx = (1.0 - dist).numpy(), idx.numpy()
    q_row = {q: i for i, q in enumerate(queries)}
    qn, cn = torch.nn.functional.normalize(q_emb, dim=1), torch.nn.functional.normalize(c_emb, dim=1)

    items, groups, relevance, found = [], [], [], 0
    for g, (query, pos, neg) in enumerate(sessions):
        r = q_row[query]
        low = float(min(float(qn[r] @ cn[index[t]]) for t in pos))
        limit = np.inf
        if settings.relative_margin is not None:
            limit = min(limit, low - abs(low) * settings.relative_margin)
        if settings.absolute_margin is not None:
            limit = min(limit, low - settings.absolute_margin)
        banned = {index.get(t, -1) for t in pos + neg + [query]}
        ok = [j for j, s in zip(idx[r], scores[r]) if j not in banned and s <= limit][:window]
        mined = [texts[j] for j in ok[settings.range_min:settings.range_min + settings.num_negatives]]
        found += len(mined)
        for text, rel in [(query, 1.0)] + [(t, 1.0) for t in pos] + [(t, 0.0) for t in neg + mined]:
            items.append(text)
            groups.append(g)
            relevance.append(rel)
    wanted = settings.num_negatives * len(sessions)
    note(f"hard negatives: {found} mined for {len(sessions)} queries from {len(texts)} candidates"
         + (f" ({wanted - found} fewer than asked: the margin / window left too few)" if found < wanted else ""))
    return LabeledData(items, np.asarray(groups), np.asarray(relevance, np.float32), "session")
