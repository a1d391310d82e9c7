"""Text data and batching pieces, without a model: Covid-QA and STS-B loaders (real files, and a
download from a real HTTP server on 127.0.0.1), CoSENT, duplicate masking, length-grouped batches."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from finetuner.data.relation import UNKNOWN, duplicate_ids, mask_duplicates, relation_matrix
from finetuner.data.samplers import LengthGroupedBatchSampler
from finetuner.evaluation.similarity import scored_pair_metrics
from finetuner.losses import CoSENTLoss, InfoNCELoss, get_loss
from finetuner.recipes.text import in_batch_loss
from finetuner.toydata import generate_qa, generate_stsb
from finetuner.toydata.qa import load_qa_rows
from finetuner.toydata.stsb import load_stsb_rows


@pytest.fixture(scope="module")
def qa_dir(data_dir: Path) -> Path:
    if not (data_dir / "covid_qa" / "multilingual.csv").is_file():
        pytest.skip("covid_qa/multilingual.csv not in the data folder")
    return data_dir


@pytest.fixture(scope="module")
def stsb_dir(data_dir: Path) -> Path:
    if not (data_dir / "stsb" / "sts-test.csv").is_file():
        pytest.skip("stsb files not in the data folder")
    return data_dir


# ---- Covid-QA ------------------------------------------------------------------------------------
def test_qa_split_is_by_question_and_deterministic(qa_dir):
    train, test = load_qa_rows(False, data_dir=qa_dir), load_qa_rows(True, data_dir=qa_dir)
    assert len(train) + len(test) == 172 and len(test) == round(0.2 * 172)
    assert not {r["question"] for r in train} & {r["question"] for r in test}
    assert load_qa_rows(True, data_dir=qa_dir) == test
    assert load_qa_rows(True, data_dir=qa_dir, seed=1) != test
    assert all(r["question"] and r["answer"] and r["wrong_answer"] != r["answer"] for r in train + test)


def test_qa_session_format(qa_dir):
    rows = load_qa_rows(False, data_dir=qa_dir)
    d = generate_qa(data_dir=qa_dir, num_neg=3)
    assert d.format == "session" and len(d) == 5 * len(rows)
    assert np.array_equal(d.groups, np.repeat(np.arange(len(rows)), 5))
    assert np.array_equal(d.relevance, np.tile([1, 1, 0, 0, 0], len(rows)).astype(np.float32))
    for g, r in enumerate(rows[:20]):
        q, a, w, *others = d.items[5 * g: 5 * g + 5]
        assert (q, a, w) == (r["question"], r["answer"], r["wrong_answer"])
        assert a not in others and len(set(others)) == 2
    # the relation rule: question ~ answer positive, ~ wrong answer negative
    rel = relation_matrix(torch.from_numpy(d.labels(np.arange(5))))
    assert rel[0, 1:].tolist() == [1.0, 0.0, 0.0, 0.0]


def test_qa_pair_class_and_num_total(qa_dir):
    pairs = generate_qa(10, data_dir=qa_dir, format="pair")
    assert pairs.format == "pair" and len(pairs) == 20 and (pairs.relevance == 1).all()
    cls = generate_qa(10, is_testset=True, data_dir=qa_dir, format="class")
    assert cls.format == "class" and cls.groups.tolist() == np.repeat(np.arange(10), 2).tolist()
    assert len(generate_qa(data_dir=qa_dir, num_neg=0)) == 2 * 138


@pytest.mark.parametrize("kwargs, match", [
    ({"num_total": 0}, "num_total"), ({"num_neg": -1}, "num_neg"), ({"format": "triplet"}, "format"),
    ({"language": "klingon"}, "language"), ({"test_size": 1.5}, "test_size"),
])
def test_qa_bad_arguments(qa_dir, kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_qa(data_dir=qa_dir, **kwargs)


@pytest.fixture
def http_folder():
    servers = []

    def start(folder: Path) -> str:
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
        handler.log_message = lambda *a: None
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def test_qa_and_stsb_download_into_the_cache(qa_dir, stsb_dir, http_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNER_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("FINETUNER_DATA", raising=False)
    url = http_folder(qa_dir)
    monkeypatch.setenv("FINETUNER_COVID_QA_URL", f"{url}/covid_qa/multilingual.csv")
    monkeypatch.setenv("FINETUNER_STSB_URL", f"{url}/stsb/")
    assert load_qa_rows(True) == load_qa_rows(True, data_dir=qa_dir)
    assert (tmp_path / "cache" / "covid_qa" / "multilingual.csv").is_file()
    assert load_stsb_rows("dev") == load_stsb_rows("dev", data_dir=stsb_dir)
    # a corrupt file on the server fails its md5 and leaves nothing in the cache
    bad = tmp_path / "bad" / "stsb"
    bad.mkdir(parents=True)
    shutil.copy(stsb_dir / "stsb" / "sts-test.csv", bad / "sts-test.csv")
    with open(bad / "sts-test.csv", "a") as f:
        f.write("x")
    monkeypatch.setenv("FINETUNER_STSB_URL", f"{http_folder(tmp_path / 'bad')}/stsb/")
    with pytest.raises(OSError, match="checksum"):
        load_stsb_rows("test")
    assert not (tmp_path / "cache" / "stsb" / "sts-test.csv").exists()


# ---- STS-B --------------------------------------------------------------------------------------
def test_stsb_splits_and_scores(stsb_dir):
    assert [len(load_stsb_rows(s, data_dir=stsb_dir)) for s in ("train", "dev", "test")] == [5749, 1500, 1379]
    d = generate_stsb(is_testset=True, data_dir=stsb_dir)
    rows = load_stsb_rows("test", data_dir=stsb_dir)
    assert d.format == "pair" and len(d) == 2 * 1379
    assert d.items[:2] == [rows[0][0], rows[0][1]]
    assert np.allclose(d.relevance[1::2], [s / 5 for *_, s in rows]) and (d.relevance[::2] == 1).all()
    pos = generate_stsb(1024, data_dir=stsb_dir, min_score=3.5, scores=False)
    first = [r for r in load_stsb_rows("train", data_dir=stsb_dir) if r[2] >= 3.5][:1024]
    assert len(pos) == 2048 and (pos.relevance == 1).all() and pos.items[-1] == first[-1][1]
    with pytest.raises(ValueError, match="min_score"):
        generate_stsb(data_dir=stsb_dir, min_score=6)
    with pytest.raises(ValueError, match="split"):
        generate_stsb(data_dir=stsb_dir, split="validation")


def test_scored_pair_metrics_is_spearman_of_cosine(stsb_dir):
    from scipy.stats import spearmanr

    d = generate_stsb(200, split="dev", data_dir=stsb_dir)
    emb = torch.randn(len(d), 8)
    cos = F.cosine_similarity(emb[0::2], emb[1::2]).numpy()
    expected = spearmanr(cos, d.relevance[1::2]).statistic
    assert scored_pair_metrics(emb, d)["spearman_cosine"] == pytest.approx(expected, abs=1e-6)
    assert scored_pair_metrics(emb, generate_stsb(50, data_dir=stsb_dir, scores=False)) == {}


# ---- CoSENT -------------------------------------------------------------------------------------
def _pair_labels(scores) -> torch.Tensor:
    n = len(scores)
    rel = torch.ones(2 * n)
    rel[1::2] = torch.tensor(scores, dtype=torch.float32)
    return torch.stack([torch.arange(n).repeat_interleave(2).float(), rel], 1)


def test_cosent_matches_the_formula():
    torch.manual_seed(0)
    emb = torch.randn(8, 16)
    scores = [0.9, 0.2, 0.5, 0.2]
    loss = CoSENTLoss()(emb, _pair_labels(scores))
    # sentence-transformers' CoSENTLoss, written out: log(1 + sum_{s_i > s_j} exp(20 (cos_j - cos_i)))
    cos = F.cosine_similarity(emb[0::2], emb[1::2]) * 20
    terms = [cos[j] - cos[i] for i in range(4) for j in range(4) if scores[i] > scores[j]]
    expected = torch.logsumexp(torch.cat([torch.zeros(1), torch.stack(terms)]), 0)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert get_loss("CoSENTLoss").scale == 20.0


def test_cosent_edge_cases():
    emb = torch.randn(4, 8, requires_grad=True)
    same = CoSENTLoss()(emb, _pair_labels([0.5, 0.5]))
    assert same.item() == 0.0
    same.backward()  # connected to the graph, zero gradient
    with pytest.raises(ValueError, match="no scored pair"):
        CoSENTLoss()(torch.randn(4, 8), torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="scale"):
        CoSENTLoss(scale=0)


# ---- duplicates -----------------------------------------------------------------------------------
def test_duplicate_ids():
    assert duplicate_ids(["a", "b", "a"]).tolist() == [0, 1, 0]
    ids = duplicate_ids({"input_ids": torch.tensor([[1, 2], [3, 4], [1, 2]])})
    assert ids[0] == ids[2] != ids[1]
    assert duplicate_ids(torch.randn(3, 4)) is None


def test_mask_duplicates_keeps_copies_of_positives_out_of_the_negatives():
    # session 0: q0, answer A (+1), wrong W (-1); session 1: q1, its answer is W's text (+1)
    labels = torch.tensor([[0, 1], [0, 1], [0, 0], [1, 1], [1, 1]], dtype=torch.float32)
    texts = ["q0", "A", "B", "q1", "A"]  # item 4 is a copy of q0's answer, in another session
    rel = mask_duplicates(relation_matrix(labels), duplicate_ids(texts))
    assert rel[0, 4] == UNKNOWN  # copy of q0's positive: not a negative of q0
    assert rel[0, 1] == 1 and rel[0, 2] == 0  # the rest of q0's row is unchanged
    assert rel[3, 1] == UNKNOWN  # and symmetrically for q1 and the copy of its positive
    assert rel[1, 4] == UNKNOWN and rel[4, 1] == UNKNOWN  # copies of each other
    assert rel[2, 4] == 0  # W is still a negative of the other session's answer
    same = relation_matrix(labels)
    assert torch.equal(mask_duplicates(same, torch.arange(5)), same)  # no duplicates: unchanged


def test_in_batch_loss_with_duplicates_equals_infonce_without_the_false_negatives():
    torch.manual_seed(0)
    labels = torch.tensor([[0, 1], [0, 1], [1, 1], [1, 1], [2, 1], [2, 1]], dtype=torch.float32)
    texts = ["q0", "a", "q1", "a", "q2", "c"]  # q0 and q1 share the answer text "a"
    emb = torch.randn(6, 8)
    loss = InfoNCELoss()
    plain = loss(emb, labels)
    deduped = in_batch_loss(loss, emb, labels, duplicate_ids(texts))
    rel = relation_matrix(labels)
    for a, j in [(0, 3), (2, 1), (1, 3), (3, 1)]:
        rel[a, j] = UNKNOWN
    expected = loss.compute(1 - F.normalize(emb) @ F.normalize(emb).T, rel, emb)
    assert deduped.item() == pytest.approx(expected.item(), rel=1e-5) and deduped.item() != pytest.approx(plain.item())
    assert in_batch_loss(loss, emb, labels, torch.arange(6)).item() == pytest.approx(plain.item())


# ---- length-grouped batches --------------------------------------------------------------------------
def _padding(batches, lengths) -> float:
    real = sum(int(lengths[b].sum()) for b in batches)
    return 1 - real / sum(len(b) * int(lengths[b].max()) for b in batches)


def test_length_grouped_batches_cover_every_item_keep_groups_and_cut_padding():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(500), 2)
    lengths = np.repeat(rng.integers(5, 60, 500), 2) + rng.integers(0, 4, 1000)
    sampler = LengthGroupedBatchSampler(lengths, 64, groups=groups, pool_batches=16, seed=3)
    for epoch in range(2):
        sampler.set_epoch(epoch)
        batches = list(sampler._batches)
        flat = np.concatenate(batches)
        assert np.array_equal(np.sort(flat), np.arange(1000))  # every item once
        assert all(len(b) <= 64 for b in batches)
        for b in batches:  # a pair is never split across batches
            assert all((groups[b] == g).sum() == 2 for g in np.unique(groups[b]))
    random = LengthGroupedBatchSampler(lengths, 64, groups=groups, pool_batches=1, seed=3)
    assert _padding(sampler._batches, lengths) < 0.1 < 0.3 < _padding(random._batches, lengths)
    again = LengthGroupedBatchSampler(lengths, 64, groups=groups, pool_batches=16, seed=3)
    again.set_epoch(1)
    assert again._batches == sampler._batches  # the same order after a resume
    with pytest.raises(ValueError, match="group_by_length"):
        LengthGroupedBatchSampler(lengths, 64, groups=groups, pool_batches=0)
    with pytest.raises(ValueError, match="lengths"):
        LengthGroupedBatchSampler(lengths[:10], 64, groups=groups)
