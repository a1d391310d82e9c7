"""Tests of finetuner.evaluation: metrics by hand (trec_eval's definitions), chunked top-k
against brute force, and evaluate_embeddings end to end on toy sets. The comparison with
pytrec_eval on a real run is in tests/test_retrieval.py."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from finetuner.evaluation import chunked_topk, evaluate_embeddings, ranking_metrics
from finetuner.evaluation.retrieval import _count_relevant

L3 = 1 / math.log2(3)  # nDCG discount at rank 2 = 0.6309...


# ---------------------------------------------------------------- ranking_metrics


def test_ranking_metrics_by_hand():
    relevant = torch.tensor(
        [
            [1, 0, 1, 0],  # q0: hits at ranks 1 and 3, 3 relevant in the index
            [0, 1, 0, 0],  # q1: hit at rank 2, 1 relevant in the index
            [0, 0, 0, 0],  # q2: no hit, 2 relevant in the index
        ],
        dtype=torch.bool,
    )
    num_relevant = torch.tensor([3, 1, 2])
    per = ranking_metrics(relevant, num_relevant, ks=(2, 4), per_query=True)
    m = ranking_metrics(relevant, num_relevant, ks=(2, 4))

    # @2: q0 hits 1, q1 hits 1, q2 hits 0
    # precision = hits / 2                 -> 1/2, 1/2, 0
    # recall    = hits / R                 -> 1/3, 1/1, 0
    # hit                                  -> 1, 1, 0
    # MRR       = 1 / first hit rank       -> 1, 1/2, 0
    # AP = sum P@i rel_i / R (trec_eval's map_cut): q0 (P@1=1)/3 = 1/3; q1 (P@2=1/2)/1 = 1/2; q2 0
    # nDCG: q0 DCG 1, IDCG 1 + 1/log2(3); q1 DCG 1/log2(3), IDCG 1; q2 0
    expected_2 = {
        "precision": [1 / 2, 1 / 2, 0],
        "recall": [1 / 3, 1, 0],
        "hit": [1, 1, 0],
        "MRR": [1, 1 / 2, 0],
        "mAP": [1 / 3, 1 / 2, 0],
        "nDCG": [1 / (1 + L3), L3, 0],
    }
    # @4: q0 hits 2, q1 hits 1, q2 0
    # precision = hits / 4                 -> 1/2, 1/4, 0
    # recall                               -> 2/3, 1, 0
    # AP: q0 (P@1=1 + P@3=2/3) / 3 = 5/9; q1 (1/2) / 1 = 1/2
    # nDCG: q0 DCG 1 + 1/log2(4) = 1.5, IDCG 1 + 1/log2(3) + 1/2; q1 1/log2(3) / 1
    expected_4 = {
        "precision": [1 / 2, 1 / 4, 0],
        "recall": [2 / 3, 1, 0],
        "hit": [1, 1, 0],
        "MRR": [1, 1 / 2, 0],
        "mAP": [5 / 9, 1 / 2, 0],
        "nDCG": [1.5 / (1.5 + L3), L3, 0],
    }
    for k, expected in ((2, expected_2), (4, expected_4)):
        for name, values in expected.items():
            key = f"{name}@{k}"
            assert torch.allclose(per[key], torch.tensor(values, dtype=torch.float32), atol=1e-6), key
            assert m[key] == pytest.approx(sum(values) / 3, abs=1e-6), key


def test_ranking_metrics_float_and_numpy_inputs():
    rel = np.array([[0.0, 1.0, 1.0]])
    m = ranking_metrics(rel, np.array([2]), ks=(3,))
    # AP = (P@2 = 1/2 + P@3 = 2/3) / R = 7/12
    assert m["mAP@3"] == pytest.approx(7 / 12)
    assert m["precision@3"] == pytest.approx(2 / 3)


def test_ndcg_matches_sklearn_binary():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    gen = torch.Generator().manual_seed(0)
    # 5 queries ranking 12 candidates that hold all of each query's relevant items, so
    # sklearn's ideal DCG (from y_true) equals ours (from num_relevant)
    y_true = (torch.rand(5, 12, generator=gen) < 0.3).float()
    y_true[:, 0] = 1  # every query has a relevant item
    y_score = torch.rand(5, 12, generator=gen)  # distinct scores: no tie handling involved
    order = torch.argsort(y_score, dim=1, descending=True)
    relevant = torch.gather(y_true, 1, order)
    for k in (1, 3, 5, 12):
        ours = ranking_metrics(relevant, y_true.sum(1).long(), ks=(k,))[f"nDCG@{k}"]
        theirs = sklearn_metrics.ndcg_score(y_true.numpy(), y_score.numpy(), k=k)
        assert ours == pytest.approx(theirs, abs=1e-6)


def test_map_divides_by_r_not_min_k_r():
    # one hit at rank 1 of 20 relevant items: trec_eval's map_cut_10 = 1/20 (not 1/10)
    rel = torch.zeros(1, 10)
    rel[0, 0] = 1
    m = ranking_metrics(rel, torch.tensor([20]), ks=(10,))
    assert m["mAP@10"] == pytest.approx(1 / 20) and m["recall@10"] == pytest.approx(1 / 20)


def test_graded_ndcg_by_hand():
    # ranked gains 1, 0, 2 with judged gains {2, 1, 1}: DCG = 1 + 2/log2(4) = 2,
    # IDCG@3 = 2 + 1/log2(3) + 1/log2(4)
    gains = torch.tensor([[1.0, 0.0, 2.0]])
    m = ranking_metrics(gains >= 1, torch.tensor([3]), ks=(3,), gains=gains, ideal_gains=torch.tensor([[2.0, 1.0, 1.0]]))
    assert m["nDCG@3"] == pytest.approx(2 / (2 + L3 + 0.5), abs=1e-6)
    assert m["mAP@3"] == pytest.approx((1 + 2 / 3) / 3, abs=1e-6)


def test_queries_without_relevant_items_score_zero():
    # trec_eval: a query with R = 0 scores 0 on every measure (and counts in the mean)
    rel = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    m = ranking_metrics(rel, torch.tensor([1, 0]), ks=(2,), per_query=True)
    assert all(float(v[1]) == 0.0 for v in m.values())
    assert ranking_metrics(rel, torch.tensor([1, 0]), ks=(2,))["nDCG@2"] == pytest.approx(0.5)


def test_ranking_metrics_errors():
    with pytest.raises(ValueError, match="relevant: expected .*K >= max"):
        ranking_metrics(torch.ones(2, 3), torch.tensor([1, 1]), ks=(5,))
    with pytest.raises(ValueError, match="num_relevant: expected counts >= 0"):
        ranking_metrics(torch.ones(2, 3), torch.tensor([1, -1]), ks=(3,))
    with pytest.raises(ValueError, match="gains: expected shape"):
        ranking_metrics(torch.ones(2, 3), torch.tensor([1, 1]), ks=(3,), gains=torch.ones(2, 2))
    with pytest.raises(ValueError, match="num_relevant: expected shape"):
        ranking_metrics(torch.ones(2, 3), torch.tensor([1, 1, 1]), ks=(3,))
    with pytest.raises(ValueError, match="ks: expected"):
        ranking_metrics(torch.ones(2, 3), torch.tensor([1, 1]), ks=(0,))


# ---------------------------------------------------------------- chunked_topk


def _brute_force(q, x, distance):
    if distance == "cosine":
        d = 1 - torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(x, dim=1).T
    else:
        d = torch.cdist(q.double(), x.double()).float()
        d = d**2 if distance == "sqeuclidean" else d
    return d


@pytest.mark.parametrize("distance", ["cosine", "euclidean", "sqeuclidean"])
@pytest.mark.parametrize("chunks", [(1, 1), (3, 5), (7, 4), (1024, 16384)])
def test_chunked_topk_matches_brute_force(distance, chunks):
    gen = torch.Generator().manual_seed(1)
    q, x = torch.randn(23, 6, generator=gen), torch.randn(37, 6, generator=gen)
    d, i = chunked_topk(q, x, 5, distance=distance, query_chunk=chunks[0], index_chunk=chunks[1])
    full = _brute_force(q, x, distance)
    bd, bi = torch.topk(full, 5, dim=1, largest=False)
    assert d.dtype == torch.float32 and i.dtype == torch.int64 and d.shape == (23, 5)
    assert torch.equal(i, bi)
    assert torch.allclose(d, bd, atol=1e-4)
    assert (d[:, 1:] >= d[:, :-1]).all()  # ascending


@pytest.mark.parametrize("distance", ["cosine", "euclidean", "sqeuclidean"])
def test_chunked_topk_exclude_self(distance):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(29, 4, generator=gen)
    d, i = chunked_topk(x, x, 6, distance=distance, exclude_self=True, query_chunk=4, index_chunk=7)
    assert not (i == torch.arange(29)[:, None]).any()
    full = _brute_force(x, x, distance)
    full.fill_diagonal_(float("inf"))
    bd, bi = torch.topk(full, 6, dim=1, largest=False)
    assert torch.equal(i, bi)
    assert torch.allclose(d, bd, atol=1e-4)


def test_chunked_topk_clamps_k_and_takes_numpy():
    x = np.arange(8, dtype=np.float64).reshape(4, 2)
    d, i = chunked_topk(x, x, 10, distance="euclidean")
    assert i.shape == (4, 4)
    d, i = chunked_topk(x, x, 10, distance="euclidean", exclude_self=True, index_chunk=3)
    assert i.shape == (4, 3)
    # item 0 = (0, 1): neighbours (2, 3), (4, 5), (6, 7) at sqrt(8), sqrt(32), sqrt(72)
    assert i[0].tolist() == [1, 2, 3]
    assert torch.allclose(d[0], torch.tensor([8, 32, 72]).float().sqrt())


def test_chunked_topk_errors():
    x = torch.randn(5, 3)
    with pytest.raises(ValueError, match=r"queries: expected a 2-D .* got shape \(5,\)"):
        chunked_topk(torch.randn(5), x, 1)
    with pytest.raises(ValueError, match=r"index: expected the same dim as queries \(3\)"):
        chunked_topk(x, torch.randn(5, 4), 1)
    with pytest.raises(ValueError, match="k: expected an int >= 1, got 0"):
        chunked_topk(x, x, 0)
    with pytest.raises(ValueError, match="distance: expected one of"):
        chunked_topk(x, x, 1, distance="manhattan")
    with pytest.raises(ValueError, match="exclude_self: expected"):
        chunked_topk(x, x[:3], 1, exclude_self=True)
    with pytest.raises(ValueError, match="index_chunk: expected an int >= 1"):
        chunked_topk(x, x, 1, index_chunk=0)


# ---------------------------------------------------------------- evaluate_embeddings


def test_evaluate_perfectly_separated():
    gen = torch.Generator().manual_seed(3)
    # two tight clusters far apart, 4 items each: each item's 3 same-class neighbours come first
    emb = torch.cat([torch.tensor([10.0, 0.0]), torch.tensor([0.0, 10.0])]).view(2, 2).repeat_interleave(4, 0)
    emb = emb + 0.1 * torch.randn(8, 2, generator=gen)
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    m = evaluate_embeddings(emb, labels, ks=(1, 3), query_chunk=3, index_chunk=5)
    assert m["num_queries"] == 8
    for name in ("precision", "recall", "mAP", "nDCG", "MRR", "hit"):
        assert m[f"{name}@3"] == pytest.approx(1.0), name
        if name not in ("recall", "mAP"):
            assert m[f"{name}@1"] == pytest.approx(1.0), name
    assert m["recall@1"] == m["mAP@1"] == pytest.approx(1 / 3)  # 1 of 3 relevant items in the top 1


def test_evaluate_mixed_known_values():
    # items on a line at 0, 1, 3, 7 with classes 0, 1, 0, 1 (euclidean, self excluded):
    #   item 0 (x=0): 1 (d1), 2 (d3), 3 (d7) -> classes 1, 0, 1 -> hit at rank 2
    #   item 1 (x=1): 0 (d1), 2 (d2), 3 (d6) -> classes 0, 0, 1 -> hit at rank 3
    #   item 2 (x=3): 1 (d2), 0 (d3), 3 (d4) -> classes 1, 0, 1 -> hit at rank 2
    #   item 3 (x=7): 2 (d4), 1 (d6), 0 (d7) -> classes 0, 1, 0 -> hit at rank 2
    # each item has 1 relevant item, so recall@3 = hit@3 = 1 and AP@3 = MRR@3 = 1 / rank
    emb = np.array([[0.0], [1.0], [3.0], [7.0]])
    m = evaluate_embeddings(emb, np.array([0, 1, 0, 1]), ks=(1, 3), distance="euclidean")
    assert m["num_queries"] == 4
    assert m["precision@1"] == m["hit@1"] == m["MRR@1"] == m["nDCG@1"] == 0.0
    assert m["precision@3"] == pytest.approx(1 / 3)
    assert m["recall@3"] == pytest.approx(1.0)
    assert m["hit@3"] == pytest.approx(1.0)
    assert m["MRR@3"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 2 + 1 / 2) / 4)  # 0.4583
    assert m["mAP@3"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 2 + 1 / 2) / 4)
    # nDCG@3 = mean of 1/log2(3) (rank 2, three times) and 1/log2(4) = 1/2 (rank 3)
    assert m["nDCG@3"] == pytest.approx((3 * L3 + 0.5) / 4, abs=1e-6)


def test_evaluate_k_larger_than_index_counts_misses():
    # 2 queries against an index of 2 items: k=5 -> ranks 2..5 are misses
    # precision@5 = 1 hit / 5; recall, nDCG and AP are 1 (the one relevant item is at rank 1)
    q = torch.tensor([[0.0], [5.0]])
    x = torch.tensor([[0.1], [5.1]])
    m = evaluate_embeddings(q, [0, 1], x, [0, 1], ks=(5,), distance="euclidean")
    assert m["precision@5"] == pytest.approx(1 / 5)
    assert m["recall@5"] == m["nDCG@5"] == m["mAP@5"] == pytest.approx(1.0)


def _sessions():
    # two sessions; per session: query (relevance 1), relevant match (1), irrelevant match (0)
    labels = torch.tensor(
        [[0, 1.0], [0, 1.0], [0, 0.0], [1, 1.0], [1, 1.0], [1, 0.0]]
    )
    # each query sits next to its relevant match; irrelevant matches a bit further
    emb = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.5, 0.0], [9.0, 9.0], [9.1, 9.0], [9.5, 9.0]])
    return emb, labels


def test_evaluate_session_labels_self_index_skips_with_warning():
    emb, labels = _sessions()
    # the two irrelevant matches are relevant to nothing (UNKNOWN with the other match,
    # negative with the query) -> skipped; the 4 others each have 1 relevant item, ranked first
    with pytest.warns(UserWarning, match="2 of 6 queries have no relevant item"):
        m = evaluate_embeddings(emb, labels, ks=(1, 2), distance="euclidean")
    assert m["num_queries"] == 4
    assert m["precision@1"] == m["nDCG@2"] == m["mAP@2"] == m["recall@1"] == pytest.approx(1.0)
    assert m["precision@2"] == pytest.approx(0.5)


def test_evaluate_session_labels_separate_index():
    emb, labels = _sessions()
    queries, q_labels = emb[[0, 3]], labels[[0, 3]]
    index, i_labels = emb[[1, 2, 4, 5]], labels[[1, 2, 4, 5]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every query has a relevant match: no warning
        m = evaluate_embeddings(queries, q_labels, index, i_labels, ks=(2,), distance="euclidean")
    # each query: relevant match at rank 1, irrelevant match at rank 2
    assert m["num_queries"] == 2
    assert m["precision@2"] == pytest.approx(0.5)
    assert m["MRR@2"] == m["recall@2"] == m["nDCG@2"] == pytest.approx(1.0)


def test_evaluate_pair_scores_threshold():
    # pair format: (a, b, 0.8) relevant, (a, b, 0.3) not; min_relevance 0.5 by default
    labels = torch.tensor([[0, 1.0], [0, 0.8], [1, 1.0], [1, 0.3]])
    emb = torch.tensor([[0.0], [0.1], [5.0], [5.1]])
    with pytest.warns(UserWarning, match="2 of 4"):
        m = evaluate_embeddings(emb, labels, ks=(1,), distance="euclidean")
    assert m["num_queries"] == 2 and m["precision@1"] == pytest.approx(1.0)
    m = evaluate_embeddings(emb, labels, ks=(1,), distance="euclidean", min_relevance=0.3)
    assert m["num_queries"] == 4


def test_evaluate_pair_scores_are_graded_gains_in_ndcg():
    # query a (x=0) with b1 scored 0.4 at x=1 and b2 scored 0.8 at x=2: the ranking b1, b2 puts
    # the smaller gain first. nDCG@2 = (0.4 + 0.8/log2(3)) / (0.8 + 0.4/log2(3))
    labels = torch.tensor([[0, 1.0], [0, 0.4], [0, 0.8]])
    emb = torch.tensor([[0.0], [1.0], [2.0]])
    q, x = emb[:1], emb[1:]
    m = evaluate_embeddings(q, labels[:1], x, labels[1:], ks=(2,), distance="euclidean")
    assert m["nDCG@2"] == pytest.approx((0.4 + 0.8 * L3) / (0.8 + 0.4 * L3), abs=1e-6)
    assert m["MRR@2"] == pytest.approx(1 / 2)  # only the 0.8 pair is relevant (>= 0.5)


def test_count_relevant_chunked_equals_class_fast_path():
    gen = torch.Generator().manual_seed(4)
    classes = torch.randint(0, 4, (41,), generator=gen)
    as_pairs = torch.stack([classes.float(), torch.ones(41)], 1)  # same relation, general path
    for exclude_self in (False, True):
        fast, _ = _count_relevant(classes, classes, exclude_self=exclude_self, min_relevance=0.5,
                                  query_chunk=5, index_chunk=7)
        chunked, _ = _count_relevant(as_pairs, as_pairs, exclude_self=exclude_self, min_relevance=0.5,
                                     query_chunk=5, index_chunk=7)
        expected = (classes[:, None] == classes[None, :]).sum(1) - int(exclude_self)
        assert torch.equal(fast, expected) and torch.equal(chunked, expected)


def test_evaluate_chunk_sizes_do_not_change_results():
    gen = torch.Generator().manual_seed(5)
    emb = torch.randn(50, 8, generator=gen)
    labels = torch.stack([torch.randint(0, 6, (50,), generator=gen).float(),
                          (torch.rand(50, generator=gen) < 0.7).float()], 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = evaluate_embeddings(emb, labels, ks=(1, 5))
        b = evaluate_embeddings(emb, labels, ks=(1, 5), query_chunk=3, index_chunk=7)
    assert a == pytest.approx(b)


def test_evaluate_no_relevant_item_raises():
    with pytest.raises(ValueError, match=r"eval_data: no query has a relevant item.*expected.*single item"):
        evaluate_embeddings(torch.randn(3, 2), torch.tensor([0, 1, 2]))


def test_evaluate_warns_once_for_skipped_queries():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = evaluate_embeddings(torch.randn(3, 2), torch.tensor([0, 0, 1]))
    assert len(caught) == 1 and "1 of 3 queries" in str(caught[0].message)
    assert m["num_queries"] == 2


def test_evaluate_argument_errors():
    emb = torch.randn(4, 2)
    with pytest.raises(ValueError, match=r"query_labels: expected one label per embedding \(4\), got 3"):
        evaluate_embeddings(emb, torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match="index_embeddings, index_labels: expected both or neither"):
        evaluate_embeddings(emb, torch.tensor([0, 0, 1, 1]), index_embeddings=emb)
    with pytest.raises(ValueError, match="distance: expected one of"):
        evaluate_embeddings(emb, torch.tensor([0, 0, 1, 1]), distance="dot")
