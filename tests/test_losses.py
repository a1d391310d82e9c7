"""Losses and miners against hand-computed values and a brute-force reference."""

import itertools
import math

import pytest
import torch

from finetuner.data.relation import UNKNOWN, relation_matrix
from finetuner.losses import (EasyHardMiner, HardMiner, InfoNCELoss, SemiHardMiner, SiameseLoss, TripletLoss,
                              get_loss, pairwise_distance)

# three 2-D points: e0 and e1 orthogonal (class 0), e2 on the diagonal (class 1)
E = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
Y = torch.tensor([0, 0, 1])
D02 = 1 - 1 / math.sqrt(2)  # cosine distance e0-e2 = e1-e2 = 0.29289


def test_siamese_hand_computed():
    # ordered pairs: (0,1),(1,0) positive with d=1 -> loss 1 each;
    # (0,2),(2,0),(1,2),(2,1) negative with d=0.2929 -> max(0, 1 - 0.2929) = 0.7071 each
    expected = (2 * 1.0 + 4 * (1 - D02)) / 6
    assert SiameseLoss()(E, Y).item() == pytest.approx(expected, abs=1e-5)
    # margin 0.2 < d: the negatives cost nothing
    assert SiameseLoss(margin=0.2)(E, Y).item() == pytest.approx(2 / 6, abs=1e-5)


def test_triplet_hand_computed():
    # triplets (0,1,2) and (1,0,2): d(a,p) - d(a,n) + m = 1 - 0.2929 + 1
    assert TripletLoss()(E, Y).item() == pytest.approx(2 - D02, abs=1e-5)
    assert TripletLoss(margin=0.5)(E, Y).item() == pytest.approx(1.5 - D02, abs=1e-5)


def test_infonce_hand_computed():
    # t = 1, sim = cos: pair (0,1) has logit 0 against negative logit cos(0,2) = 0.7071
    expected = math.log(1 + math.exp(1 / math.sqrt(2)))
    assert InfoNCELoss(temperature=1.0)(E, Y).item() == pytest.approx(expected, abs=1e-5)


def test_euclidean_distances():
    d = pairwise_distance(E, distance="euclidean")
    assert d[0, 1].item() == pytest.approx(math.sqrt(2), abs=1e-5)
    assert pairwise_distance(E, distance="sqeuclidean")[0, 2].item() == pytest.approx(1.0, abs=1e-5)
    # with sqeuclidean: positives d=2, negatives d=1 -> (2*2 + 4*max(0, 1.5-1)) / 6
    assert SiameseLoss(distance="sqeuclidean", margin=1.5)(E, Y).item() == pytest.approx((4 + 4 * 0.5) / 6, abs=1e-5)


def _brute_siamese(e, y, margin):
    d = pairwise_distance(e)
    vals = []
    for i, j in itertools.permutations(range(len(y)), 2):
        s = float(y[i] == y[j])
        vals.append(s * d[i, j] + (1 - s) * max(0.0, margin - d[i, j]))
    return sum(vals) / len(vals)


def _brute_triplet(e, y, margin):
    d = pairwise_distance(e)
    vals = [max(0.0, d[a, p] - d[a, n] + margin)
            for a, p, n in itertools.permutations(range(len(y)), 3) if y[a] == y[p] and y[a] != y[n]]
    return sum(vals) / len(vals)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    e, y = torch.randn(12, 5, generator=g), torch.randint(0, 3, (12,), generator=g)
    assert SiameseLoss(margin=0.7)(e, y).item() == pytest.approx(float(_brute_siamese(e, y, 0.7)), abs=1e-5)
    assert TripletLoss(margin=0.3)(e, y).item() == pytest.approx(float(_brute_triplet(e, y, 0.3)), abs=1e-5)


def test_soft_scores_in_siamese():
    # pair format: (a, b, 0.25) and (c, d, 1): groups 0 and 1
    labels = torch.tensor([[0, 1.0], [0, 0.25], [1, 1.0], [1, 1.0]])
    e = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    d = pairwise_distance(e)
    rel = relation_matrix(labels)
    assert rel[0, 1] == 0.25 and rel[2, 3] == 1 and rel[0, 2] == 0
    loss = SiameseLoss(margin=1.0)(e, labels)
    terms = []
    for i, j in itertools.permutations(range(4), 2):
        s = float(rel[i, j])
        terms.append(s * d[i, j] + (1 - s) * max(0.0, 1.0 - d[i, j]))
    assert loss.item() == pytest.approx(float(sum(terms) / len(terms)), abs=1e-5)


def test_relation_rule_for_sessions():
    # session 0: query, relevant, irrelevant, irrelevant; session 1: query, relevant
    labels = torch.tensor([[0, 1], [0, 1], [0, 0], [0, 0], [1, 1], [1, 1]], dtype=torch.float32)
    rel = relation_matrix(labels)
    assert rel[0, 1] == 1 and rel[0, 2] == 0 and rel[1, 2] == 0
    assert rel[2, 3] == UNKNOWN  # two irrelevant matches of one query: nothing known
    assert rel[0, 4] == 0 and rel[2, 5] == 0  # other sessions are negatives
    assert torch.equal(rel, rel.T)


def test_hard_miner_picks_hardest():
    # anchor 0: positives 1 (d small) and 2 (d large); negatives 3 (close) and 4 (far)
    e = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.95, 0.05], [-1.0, 0.0]])
    y = torch.tensor([0, 0, 0, 1, 1])
    d = pairwise_distance(e)
    a, p, n = HardMiner().triplets(d, relation_matrix(y))
    row = (a == 0).nonzero().item()
    assert p[row] == 2 and n[row] == 3
    a, p, n = EasyHardMiner("easy", "easy").triplets(d, relation_matrix(y))
    row = (a == 0).nonzero().item()
    assert p[row] == 1 and n[row] == 4


def test_semihard_negative_is_farther_than_positive():
    g = torch.Generator().manual_seed(3)
    e, y = torch.randn(16, 4, generator=g), torch.randint(0, 3, (16,), generator=g)
    d = pairwise_distance(e)
    a, p, n = SemiHardMiner().triplets(d, relation_matrix(y))
    assert len(a) > 0
    assert bool((d[a, n] > d[a, p]).all())
    # and it is the closest such negative
    for ai, pi, ni in zip(a.tolist(), p.tolist(), n.tolist()):
        cands = [j for j in range(16) if y[j] != y[ai] and d[ai, j] > d[ai, pi]]
        assert d[ai, ni] == min(d[ai, j] for j in cands)


def test_miner_pairs_targets():
    d = pairwise_distance(E)
    i, j, t = HardMiner().pairs(d, relation_matrix(Y))
    assert set(t.tolist()) <= {0.0, 1.0} and (t == 1).any() and (t == 0).any()


def test_infonce_never_uses_other_positives_as_negatives():
    # anchor 0 with two positives (1, 2) and one negative (3): the loss for (0,1) must not
    # include item 2 in its denominator. Compare with a hand-written version.
    e = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 0, 0, 1])
    sim = 1 - pairwise_distance(e)
    t = 0.1
    terms = []
    for a, p in itertools.permutations(range(3), 2):
        logits = torch.stack([sim[a, p], sim[a, 3]]) / t
        terms.append(torch.logsumexp(logits, 0) - logits[0])
    assert InfoNCELoss(temperature=t)(e, y).item() == pytest.approx(float(torch.stack(terms).mean()), abs=1e-4)


def test_gradients_flow_and_user_loss():
    e = torch.randn(8, 4, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    for loss in (SiameseLoss(), TripletLoss(miner="semihard"), InfoNCELoss()):
        e.grad = None
        loss(e, y).backward()
        assert e.grad is not None and torch.isfinite(e.grad).all()
    own = lambda emb, labels: emb.pow(2).mean()  # noqa: E731 - the user's own torch loss
    assert get_loss(own) is own


def test_loss_errors():
    with pytest.raises(ValueError, match="loss: expected one of"):
        get_loss("NoSuchLoss")
    with pytest.raises(ValueError, match="distance"):
        SiameseLoss(distance="manhattan")
    with pytest.raises(ValueError, match="no valid triplet"):
        TripletLoss()(E, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="2-D"):
        SiameseLoss()(torch.randn(3, 2, 2), Y)
    with pytest.raises(ValueError, match="one row per input item"):
        SiameseLoss()(torch.randn(4, 2), Y)
    with pytest.raises(ValueError, match="temperature"):
        InfoNCELoss(temperature=0)
    with pytest.raises(ValueError, match="neg_strategy"):
        EasyHardMiner("all", "medium")


# ---- sentence-transformers' MultipleNegativesRankingLoss, exactly --------------------------------
def _st_mnrl():
    st_losses = pytest.importorskip("sentence_transformers.sentence_transformer.losses")
    return st_losses.MultipleNegativesRankingLoss(model=None, scale=20.0)


def _rows(columns):
    """Interleave columns [B, D] x C into one batch with session labels (anchor first)."""
    b, c = columns[0].shape[0], len(columns)
    emb = torch.stack(columns, 1).reshape(b * c, -1)
    rel = torch.tensor([1.0, 1.0] + [0.0] * (c - 2)).repeat(b)
    return emb, torch.stack([torch.arange(b).repeat_interleave(c).float(), rel], 1)


@pytest.mark.parametrize("columns", [2, 3, 4])
def test_mnrl_equals_sentence_transformers(columns):
    from finetuner.losses import MultipleNegativesRankingLoss

    gen = torch.Generator().manual_seed(columns)
    cols = [torch.randn(6, 8, generator=gen) for _ in range(columns)]
    theirs = _st_mnrl().compute_loss_from_embeddings(cols, None)
    emb, labels = _rows(cols)
    assert MultipleNegativesRankingLoss()(emb, labels).item() == pytest.approx(theirs.item(), abs=1e-5)
    assert get_loss("MultipleNegativesRankingLoss")(emb, labels).item() == pytest.approx(theirs.item(), abs=1e-5)
    # the anchor is the first item of its group in batch order, wherever the group sits
    group_rank = torch.randperm(6, generator=gen)[labels[:, 0].long()]
    order = torch.argsort(group_rank, stable=True)  # groups in another order, each still anchor first
    assert MultipleNegativesRankingLoss()(emb[order], labels[order]).item() == pytest.approx(theirs.item(), abs=1e-5)
    # InfoNCE is the two-direction form over every item: a different number
    assert abs(InfoNCELoss()(emb, labels).item() - theirs.item()) > 1e-3


def test_mnrl_anchors_mask_and_gradients_equal_sentence_transformers():
    from finetuner.losses import MultipleNegativesRankingLoss

    gen = torch.Generator().manual_seed(7)
    a, p = torch.randn(5, 4, generator=gen), torch.randn(5, 4, generator=gen)
    a1, p1 = a.clone().requires_grad_(), p.clone().requires_grad_()
    _st_mnrl().compute_loss_from_embeddings([a1, p1], None).backward()
    emb, labels = _rows([a, p])
    emb.requires_grad_()
    anchors = torch.arange(10) % 2 == 0
    MultipleNegativesRankingLoss()(emb, labels, anchors=anchors).backward()
    grad = emb.grad.view(5, 2, 4)
    assert torch.allclose(grad[:, 0], a1.grad, atol=1e-6) and torch.allclose(grad[:, 1], p1.grad, atol=1e-6)
    with pytest.raises(ValueError, match="anchors: expected shape"):
        MultipleNegativesRankingLoss()(emb, labels, anchors=anchors[:4])
    with pytest.raises(ValueError, match="scale"):
        MultipleNegativesRankingLoss(scale=0)


def test_cached_losses_carry_their_chunk_and_compute_the_same_loss():
    from finetuner.losses import CachedInfoNCELoss, CachedMultipleNegativesRankingLoss, MultipleNegativesRankingLoss

    emb, labels = _rows([torch.randn(4, 3), torch.randn(4, 3)])
    cached = get_loss("CachedMultipleNegativesRankingLoss")
    assert cached.mini_batch_size == 32 and CachedInfoNCELoss(mini_batch_size=8).mini_batch_size == 8
    assert cached(emb, labels).item() == pytest.approx(MultipleNegativesRankingLoss()(emb, labels).item())
    assert CachedInfoNCELoss()(emb, labels).item() == pytest.approx(InfoNCELoss()(emb, labels).item())
    with pytest.raises(ValueError, match="mini_batch_size: expected an int >= 1"):
        CachedMultipleNegativesRankingLoss(mini_batch_size=0)
