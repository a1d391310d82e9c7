"""Miners: pick the pairs or triplets of a batch that a loss is computed on.

A miner reads two [B, B] matrices, the distances and the relation of the batch's items
(`finetuner.data.relation`: 1 positive, 0 negative, in between a soft score, -1 unknown), and
returns index tensors. Losses own the arithmetic; miners own the choice (the split of
pytorch-metric-learning, Musgrave et al., 2020).
"""

from __future__ import annotations

import torch

POS_STRATEGIES = ("all", "hard", "easy")
NEG_STRATEGIES = ("all", "hard", "semihard", "easy")


def _masks(relation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    off_diag = ~torch.eye(relation.shape[0], dtype=torch.bool, device=relation.device)
    return (relation >= 1.0) & off_diag, (relation == 0.0) & off_diag


def _pick(dist: torch.Tensor, mask: torch.Tensor, largest: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the column of the largest / smallest distance among `mask`; rows with none dropped."""
    fill = float("-inf") if largest else float("inf")
    masked = dist.masked_fill(~mask, fill)
    cols = masked.argmax(1) if largest else masked.argmin(1)
    rows = mask.any(1).nonzero().squeeze(1)
    return rows, cols[rows]


class EasyHardMiner:
    """Choose positives and negatives per anchor by how hard they are.

    Args:
        pos_strategy: "all" every positive; "hard" the farthest positive; "easy" the closest.
        neg_strategy: "all" every negative; "hard" the closest negative; "easy" the farthest;
            "semihard" the closest negative that is still farther than the positive (Schroff et
            al., 2015, FaceNet, sec. 3.2; for pairs the anchor's farthest chosen positive is the
            reference).

    Raises:
        ValueError: an unknown strategy.

    Used by `SiameseLoss` through `pairs` and by `TripletLoss` through `triplets`.
    """

    def __init__(self, pos_strategy: str = "all", neg_strategy: str = "all") -> None:
        if pos_strategy not in POS_STRATEGIES:
            raise ValueError(f"pos_strategy: expected one of {POS_STRATEGIES}, got {pos_strategy!r}")
        if neg_strategy not in NEG_STRATEGIES:
            raise ValueError(f"neg_strategy: expected one of {NEG_STRATEGIES}, got {neg_strategy!r}")
        self.pos_strategy, self.neg_strategy = pos_strategy, neg_strategy

    def __repr__(self) -> str:
        return f"{type(self).__name__}(pos_strategy={self.pos_strategy!r}, neg_strategy={self.neg_strategy!r})"

    def _positives(self, dist: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pos_strategy == "all":
            a, p = pos.nonzero(as_tuple=True)
            return a, p
        return _pick(dist, pos, largest=self.pos_strategy == "hard")

    def _negatives(self, dist: torch.Tensor, neg: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows of `dist`/`neg` are anchors; `ref` [rows] the reference positive distance."""
        if self.neg_strategy == "all":
            r, n = neg.nonzero(as_tuple=True)
            return r, n
        if self.neg_strategy == "semihard":
            return _pick(dist, neg & (dist > ref[:, None]), largest=False)
        return _pick(dist, neg, largest=self.neg_strategy == "easy")

    def pairs(self, dist: torch.Tensor, relation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pairs for a pair loss.

        Args:
            dist: float [B, B] distances; relation: float [B, B] (see module docstring).

        Returns:
            (i, j, target): int64 [P], int64 [P], float32 [P] with target 1 for a positive
            pair, 0 for a negative one and the score for a soft pair (soft pairs are always kept:
            they are explicit labels, not candidates).
        """
        dist = dist.detach()
        pos, neg = _masks(relation)
        pi, pj = self._positives(dist, pos)
        # reference for semi-hard negatives: each anchor's farthest chosen positive (0 if none)
        ref = torch.zeros(dist.shape[0], device=dist.device).scatter_reduce(
            0, pi, dist[pi, pj], reduce="amax", include_self=True)
        ni, nj = self._negatives(dist, neg, ref)
        soft = (relation > 0) & (relation < 1)
        si, sj = soft.nonzero(as_tuple=True)
        i = torch.cat([pi, ni, si])
        j = torch.cat([pj, nj, sj])
        target = torch.cat([torch.ones_like(pi, dtype=torch.float32), torch.zeros_like(ni, dtype=torch.float32),
                            relation[si, sj].float()])
        return i, j, target

    def triplets(self, dist: torch.Tensor, relation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Triplets (anchor, positive, negative) for a triplet loss.

        Args:
            dist: float [B, B] distances; relation: float [B, B] (see module docstring).

        Returns:
            (a, p, n): int64 tensors [T]; relation[a, p] == 1 and relation[a, n] == 0.
        """
        dist = dist.detach()
        pos, neg = _masks(relation)
        a, p = self._positives(dist, pos)
        rows, n = self._negatives(dist[a], neg[a], dist[a, p])
        return a[rows], p[rows], n


class AllMiner(EasyHardMiner):
    """Every valid pair or triplet of the batch (the default)."""

    def __init__(self) -> None:
        super().__init__("all", "all")


class HardMiner(EasyHardMiner):
    """Per anchor, its farthest positive and its closest negative ("batch hard", Hermans et
    al., 2017, In Defense of the Triplet Loss)."""

    def __init__(self) -> None:
        super().__init__("hard", "hard")


class SemiHardMiner(EasyHardMiner):
    """Every positive, each with the closest negative farther than it (FaceNet semi-hard
    negatives, Schroff et al., 2015)."""

    def __init__(self) -> None:
        super().__init__("all", "semihard")


class EasyMiner(EasyHardMiner):
    """Per anchor, its closest positive and its farthest negative (easy positives help when
    classes are spread out: Xuan et al., 2020, Improved Embeddings with Easy Positive Triplet Mining)."""

    def __init__(self) -> None:
        super().__init__("easy", "easy")


MINERS = {"all": AllMiner, "hard": HardMiner, "semihard": SemiHardMiner, "easy": EasyMiner}


def get_miner(miner: "str | EasyHardMiner | None") -> EasyHardMiner:
    """A miner from its name ("all", "hard", "semihard", "easy"), an object, or None (all).

    Raises:
        ValueError: an unknown name; TypeError: an object without `pairs`/`triplets`.
    """
    if miner is None:
        return AllMiner()
    if isinstance(miner, str):
        if miner not in MINERS:
            raise ValueError(f"miner: expected one of {tuple(MINERS)} or a miner object, got {miner!r}")
        return MINERS[miner]()
    if not (hasattr(miner, "pairs") or hasattr(miner, "triplets")):
        raise TypeError(f"miner: expected a name or an object with .pairs/.triplets, got {type(miner).__name__}")
    return miner
