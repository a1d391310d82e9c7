"""The Labeler: label store, active learning, tuning rounds, the HTTP API on a real uvicorn
server on 127.0.0.1, 200 concurrent submissions from a second process, fit(interactive=True)
and the `finetuner label` command. Real data (Fashion-MNIST), real model, real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

import finetuner
from finetuner.engine.callbacks import Callback
from finetuner.labeler import Labeler, LabelerServer, LabelStore
from finetuner.labeler.display import render_item
from finetuner.labeler.selection import (RelevanceCalibrator, neighbours, pick_diverse,
                                         uncertainty_scores)
from finetuner.labeler.server import is_loopback
from finetuner.labeler.sessions import session_data, session_map
from finetuner.losses import TripletLoss
from finetuner.toydata import generate_fashion

TOKEN_HEADER = "X-Finetuner-Token"


def MLP(seed: int = 0) -> torch.nn.Module:
    """The 784-128-32 MLP of the Tuner's Fashion-MNIST example (a plain Sequential: it pickles)."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 128), torch.nn.ReLU(), torch.nn.Linear(128, 32))


@pytest.fixture(scope="module")
def fashion(data_dir):
    return generate_fashion(600, data_dir=str(data_dir))


def label_like_user(labeler: Labeler, classes: np.ndarray, pages: int) -> list[int]:
    """A simulated user: ticks the results of the query's class. Returns the queries."""
    queries = []
    for _ in range(pages):
        page = labeler.next_query()
        q = page["query"]
        labeler.submit(q, [(i, bool(classes[i] == classes[q])) for i in page["results"]])
        queries.append(q)
    return queries


# ---- label store -------------------------------------------------------------------------------
def test_store_is_idempotent_latest_click_wins_and_persists(tmp_path):
    store = LabelStore(tmp_path / "labels.sqlite")
    ack = store.add("a1", 3, [(4, True), (5, False)], 0)
    assert (ack.duplicate, ack.num_labels, ack.num_sessions) == (False, 2, 1)
    again = store.add("a1", 3, [(4, False), (9, True)], 0)  # a retry with the same id stores nothing
    assert (again.duplicate, again.num_labels) == (True, 2)
    store.add("a2", 3, [(5, True)], 1)  # the same pair labelled again: the latest click wins
    assert store.sessions() == {3: [(4, 1), (5, 1)]}
    assert store.submission_count() == 2
    store.add_round(1, {"num_labels": 2})
    store.close()
    reopened = LabelStore(tmp_path / "labels.sqlite")
    assert reopened.counts() == (2, 1) and reopened.rounds() == [{"version": 1, "num_labels": 2}]
    subs = reopened.submissions()
    assert [s["id"] for s in subs] == ["a2", "a1"]
    # a2's click replaced a1's label of (3, 5): each label belongs to the submission that set it
    assert subs[0]["marks"] == [{"item": 5, "relevant": True}] and subs[1]["marks"] == [{"item": 4, "relevant": True}]


# ---- sessions and metric -------------------------------------------------------------------------
def test_session_data_pairs_a_page_without_relevant_result_with_the_query_itself():
    items = np.arange(10, dtype=np.float32)[:, None]
    data = session_data(items, {2: [(3, 1), (4, 0)], 5: [(6, 0), (7, 0)]})
    assert data.format == "session"
    assert data.groups.tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert data.relevance.tolist() == [1, 1, 0, 1, 0, 0, 1]
    assert data.items[:, 0].tolist() == [2, 3, 4, 5, 6, 7, 5]
    with pytest.raises(ValueError, match="sessions"):
        session_data(items, {})


def test_pages_joined_by_a_relevant_mark_train_as_one_session():
    items = np.arange(10, dtype=np.float32)[:, None]
    # 3 is relevant to 2, and page 3 exists too: one group {2, 3, 8} with negatives 4 and 9;
    # page 5 stands alone
    pages = {2: [(3, 1), (4, 0)], 3: [(8, 1), (9, 0)], 5: [(6, 1)]}
    data = session_data(items, pages)
    members = {g: sorted(zip(data.items[data.groups == g, 0].tolist(), data.relevance[data.groups == g].tolist()))
               for g in np.unique(data.groups)}
    assert sorted(members.values()) == [[(2, 1), (3, 1), (4, 0), (8, 1), (9, 0)], [(5, 1), (6, 1)]]
    separate = session_data(items, pages, link=False)
    assert len(np.unique(separate.groups)) == 3


def test_session_map_scores_the_ranking_of_each_labelled_page():
    emb = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.5, 0.5]])
    # query 0: item 1 (close) relevant, item 2 (far) not -> AP 1; the reverse -> AP 0.5
    assert session_map(emb, {0: [(1, 1), (2, 0)]})["session_mAP"] == pytest.approx(1.0)
    assert session_map(emb, {0: [(1, 0), (2, 1)]})["session_mAP"] == pytest.approx(0.5)
    assert session_map(emb, {0: [(1, 0)]}) == {"session_mAP": None, "num_scored_sessions": 0}


# ---- active learning -----------------------------------------------------------------------------
def test_neighbours_leave_the_query_out():
    emb = torch.randn(50, 8)
    dist, idx = neighbours(emb, np.array([0, 7, 49]), 5)
    assert idx.shape == (3, 5)
    assert all(q not in row for q, row in zip([0, 7, 49], idx.tolist()))
    assert bool((dist[:, 1:] >= dist[:, :-1]).all())


def test_uncertainty_scores_follow_each_strategy():
    dist = torch.tensor([[0.1, 0.1, 0.9, 0.9], [0.4, 0.5, 0.5, 0.6]])
    idx = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    # margin: page 0 stands out clearly from the rest, page 1 does not
    margin = uncertainty_scores("margin", dist, idx, 2)
    assert margin[1] > margin[0]
    # entropy: P(relevant) near 0.5 at distance ~0.5 -> page 1 is the unsure one
    calib = RelevanceCalibrator(np.array([0.05, 0.1, 0.2, 0.8, 0.9, 0.95, 0.45, 0.55]), np.array([1, 1, 1, 0, 0, 0, 1, 0]))
    p = calib.predict(np.array([0.1, 0.5, 0.9]))
    assert p[0] > p[1] > p[2]
    unsure = uncertainty_scores("entropy", dist, idx, 2, calibrator=calib)
    assert unsure[1] > unsure[0]
    # disagreement: page 1's top-2 changed completely between versions, page 0's did not
    prev = torch.tensor([[1, 2], [9, 10]])
    dis = uncertainty_scores("disagreement", dist, idx, 2, previous_idx=prev)
    assert dis[1] > dis[0]
    assert uncertainty_scores("sequential", dist, idx, 2).tolist() == [0.0, -1.0]
    with pytest.raises(ValueError, match="strategy"):
        uncertainty_scores("best", dist, idx, 2)
    with pytest.raises(ValueError, match="both kinds"):
        RelevanceCalibrator(np.array([0.1, 0.2]), np.array([1, 1]))
    assert pick_diverse(np.array([4, 5, 6]), skip={4}, blocked={5}) == 6
    assert pick_diverse(np.array([4]), skip={4}, blocked=set()) is None


@pytest.mark.parametrize("strategy", ["margin", "entropy", "disagreement"])
def test_queries_come_by_uncertainty_not_index_order(fashion, tmp_path, strategy):
    classes = fashion.groups
    labeler = Labeler(MLP(), fashion.items, output_dir=tmp_path / "al", strategy=strategy, train_kwargs={"epochs": 2})
    first = label_like_user(labeler, classes, 4)
    assert first != [0, 1, 2, 3]
    labeler.train()
    page = labeler.next_query()
    # the pick is among the most uncertain of the scored pool (diversity may skip a few)
    scores = labeler._ranking[2]
    assert page["uncertainty"] >= np.quantile(list(scores.values()), 0.9)
    if strategy == "entropy":  # labels of both kinds exist: P(relevant) is calibrated on them
        assert labeler._calibrator() is not None
    # pages stay diverse: the next query is not among the results already handed out
    assert labeler.next_query()["query"] not in page["results"]
    labeler.close()


def test_sequential_is_the_old_index_order(fashion, tmp_path):
    seq = Labeler(MLP(), fashion.items, output_dir=tmp_path / "seq", strategy="sequential")
    assert [seq.next_query()["query"] for _ in range(3)] == [0, 1, 2]
    seq.close()


# ---- the Labeler -------------------------------------------------------------------------------
def test_next_query_says_done_when_every_item_is_labelled(fashion, tmp_path):
    labeler = Labeler(MLP(), fashion.items[:5], output_dir=tmp_path, top_k=2)
    queries = set()
    while (page := labeler.next_query()) is not None:
        labeler.submit(page["query"], [(page["results"][0], True)])
        queries.add(page["query"])
    assert queries == set(range(5))
    labeler.close()


def test_labeler_rejects_bad_arguments(fashion, tmp_path):
    items = fashion.items
    with pytest.raises(TypeError, match="model"):
        Labeler("not a model", items, output_dir=tmp_path)
    with pytest.raises(ValueError, match="top_k"):
        Labeler(MLP(), items, output_dir=tmp_path, top_k=0)
    with pytest.raises(ValueError, match="strategy"):
        Labeler(MLP(), items, output_dir=tmp_path, strategy="smart")
    with pytest.raises(ValueError, match="resume"):
        Labeler(MLP(), items, output_dir=tmp_path, train_kwargs={"resume": True})
    with pytest.raises(TypeError, match="unknown argument.*'epoch'"):
        Labeler(MLP(), items, output_dir=tmp_path, train_kwargs={"epoch": 3})
    with pytest.raises(ValueError, match="at least 3 items"):
        Labeler(MLP(), items[:2], output_dir=tmp_path)
    with pytest.raises(TypeError, match="data"):
        Labeler(MLP(), "images.npy", output_dir=tmp_path)


def test_submit_validates_and_stores_nothing_on_bad_input(fashion, tmp_path):
    labeler = Labeler(MLP(), fashion.items, output_dir=tmp_path)
    bad = [
        (dict(query=600, marks=[(1, True)]), "query"),
        (dict(query=-1, marks=[(1, True)]), "query"),
        (dict(query=0, marks=[]), "marks"),
        (dict(query=0, marks=[(i, True) for i in range(1, 102)]), "marks"),
        (dict(query=0, marks=[(0, True)]), "query itself"),
        (dict(query=0, marks=[(1, True), (1, False)]), "twice"),
        (dict(query=0, marks=[(1, "yes")]), "relevant"),
        (dict(query=0, marks=[(1, True)], submission_id="../../etc"), "submission_id"),
        (dict(query=0, marks=[(1, True)], model_version=5), "model_version"),
    ]
    for kwargs, match in bad:
        with pytest.raises(ValueError, match=match):
            labeler.submit(**kwargs)
    assert labeler.store.counts() == (0, 0)
    with pytest.raises(ValueError, match="no labelled query"):
        labeler.train()
    labeler.close()


def test_train_rounds_swap_the_model_and_a_restart_continues(fashion, tmp_path):
    out = tmp_path / "run"
    model = MLP()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    labeler = Labeler(model, fashion.items, output_dir=out, train_kwargs={"epochs": 3})
    before = labeler.embeddings.clone()
    label_like_user(labeler, fashion.groups, 3)
    record = labeler.train()
    assert record["version"] == labeler.version == 1
    assert record["num_labels"] == 24 and record["num_sessions"] == 3
    assert record["session_mAP"] is not None and record["seconds"] > 0
    assert not torch.equal(before, labeler.embeddings)
    # the caller's model is not trained behind its back: rounds train a copy
    assert all(torch.equal(start[k], v) for k, v in model.state_dict().items())
    assert (out / "checkpoint" / "finetuner.json").exists()
    status = labeler.status()
    assert status["model_version"] == 1 and status["num_labels"] == 24 and status["training"] is False
    embeddings = labeler.embeddings.clone()
    labeler.close()

    again = Labeler(MLP(), fashion.items, output_dir=out)  # a restart: labels and model version come back
    assert again.version == 1 and again.store.counts() == (24, 3)
    assert torch.allclose(again.embeddings, embeddings, atol=1e-6)
    assert again.next_query()["query"] not in set(again.store.sessions())
    again.close()
    with pytest.raises(ValueError, match="other data"):
        Labeler(MLP(), fashion.items[::-1].copy(), output_dir=out)


class Recorder(Callback):
    """Records what each tuning round's trainer was given."""

    def __init__(self):
        self.fits = []

    def on_fit_start(self, trainer):
        self.fits.append({"lr": trainer.optimizer.param_groups[0]["lr"], "epochs": trainer.epochs,
                          "device": trainer.accelerator.device.type,
                          "batch": trainer.train_loader.batch_sampler.batch_size
                          if hasattr(trainer.train_loader, "batch_sampler") else None})


class CountingTripletLoss(TripletLoss):
    """TripletLoss that counts its calls (so the test sees which loss trained)."""

    calls = 0

    def forward(self, embeddings, labels):
        CountingTripletLoss.calls += 1
        return super().forward(embeddings, labels)


def test_each_round_honours_fit_arguments(fashion, tmp_path):
    rec = Recorder()
    CountingTripletLoss.calls = 0
    labeler = Labeler(MLP(), fashion.items, output_dir=tmp_path,
                      train_kwargs={"epochs": 2, "learning_rate": 3e-4, "batch_size": 32, "device": "cpu",
                                    "callbacks": [rec], "loss": CountingTripletLoss(margin=0.3)})
    label_like_user(labeler, fashion.groups, 4)
    labeler.train()
    label_like_user(labeler, fashion.groups, 1)
    labeler.train()
    assert len(rec.fits) == 2
    assert all(f["lr"] == pytest.approx(3e-4) and f["epochs"] == 2 and f["device"] == "cpu" for f in rec.fits)
    assert CountingTripletLoss.calls > 0
    labeler.close()


def test_render_item_shows_text_and_images():
    assert render_item("what is covid?") == {"kind": "text", "text": "what is covid?"}
    qa = render_item({"question": "Q?", "answer": "A."})
    assert qa["kind"] == "text" and "Q?" in qa["text"] and "A." in qa["text"]
    for image in (np.random.rand(28, 28), np.random.rand(3, 16, 16), np.random.rand(16, 16, 3), np.random.rand(784),
                  torch.rand(1, 28, 28), (np.random.rand(28, 28) * 255).astype(np.uint8)):
        out = render_item(image)
        assert out["kind"] == "image" and out["src"].startswith("data:image/png;base64,")
    assert render_item(np.random.rand(5))["kind"] == "text"


# ---- the HTTP API on a real server -------------------------------------------------------------
@pytest.fixture()
def served(fashion, tmp_path):
    labeler = Labeler(MLP(), fashion.items, output_dir=tmp_path / "served", train_kwargs={"epochs": 2})
    server = LabelerServer(labeler, port=0).start()
    client = httpx.Client(base_url=server.base_url, headers={TOKEN_HEADER: server.token}, timeout=30)
    yield labeler, server, client
    client.close()
    server.stop()
    labeler.close()


def submission(page: dict, classes: np.ndarray, sid: str) -> dict:
    q = page["query"]["id"]
    return {"submission_id": sid, "query": q, "model_version": page["model_version"],
            "marks": [{"item": r["id"], "relevant": bool(classes[r["id"]] == classes[q])} for r in page["results"]]}


def wait_for(predicate, timeout: float = 60.0, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out waiting")


def test_every_endpoint_works_with_the_token(served, fashion):
    labeler, server, client = served
    page_html = client.get("/")
    assert page_html.status_code == 200 and "finetuner labeler" in page_html.text
    assert "default-src 'self'" in page_html.headers["content-security-policy"]
    assert server.token not in page_html.text  # the token travels only in the URL fragment
    js = client.get("/static/labeler.js")
    assert js.status_code == 200 and "X-Finetuner-Token" in js.text
    css = client.get("/static/labeler.css")
    assert css.status_code == 200
    for asset in (page_html, js, css):  # everything is served from here: the page works offline
        assert "http://" not in asset.text and "https://" not in asset.text and "//cdn" not in asset.text

    status = client.get("/api/status").json()
    assert status["model_version"] == 0 and status["num_labels"] == 0 and status["num_items"] == 600

    page = client.get("/api/next").json()
    assert page["done"] is False and len(page["results"]) == 8
    assert page["query"]["kind"] == "image" and page["results"][0]["src"].startswith("data:image/png")
    ack = client.post("/api/labels", json=submission(page, fashion.groups, "first-page")).json()
    assert ack == {"submission_id": "first-page", "duplicate": False, "num_labels": 8, "num_sessions": 1}
    assert client.post("/api/labels", json=submission(page, fashion.groups, "first-page")).json()["duplicate"] is True

    listed = client.get("/api/labels", params={"limit": 10}).json()
    assert listed["num_labels"] == 8 and listed["submissions"][0]["id"] == "first-page"
    assert len(listed["submissions"][0]["marks"]) == 8

    # the background worker tunes after each page; POST /api/train asks for a round too
    assert client.post("/api/train").status_code == 202
    wait_for(lambda: (lambda s: s["model_version"] >= 1 and not s["training"])(client.get("/api/status").json()))
    status = client.get("/api/status").json()
    assert status["session_mAP"] is not None and status["last_error"] is None

    saved = client.post("/api/save").json()
    assert Path(saved["path"]).joinpath("finetuner.json").exists() and saved["model_version"] >= 1
    loaded = finetuner.load(saved["path"], model=MLP())
    assert np.allclose(finetuner.embed(loaded, fashion.items[:4]), finetuner.embed(labeler.model, fashion.items[:4]))

    assert client.post("/api/stop").json() == {"stopping": True, "cancel_round": False}  # waits for a running round
    assert server.stopped.wait(5)


ENDPOINTS = [("GET", "/api/status"), ("GET", "/api/next"), ("GET", "/api/labels"), ("POST", "/api/labels"),
             ("POST", "/api/train"), ("POST", "/api/save"), ("POST", "/api/stop")]


@pytest.mark.parametrize("token", [None, "", "wrong-token-wrong-token-wrong"])
def test_every_api_endpoint_refuses_a_missing_or_wrong_token(served, token):
    labeler, server, _ = served
    headers = {} if token is None else {TOKEN_HEADER: token}
    with httpx.Client(base_url=server.base_url, headers=headers) as anon:
        for method, path in ENDPOINTS:
            r = anon.request(method, path, json={} if method == "POST" else None)
            assert r.status_code == 401, (method, path, r.status_code)
            assert "token" in r.json()["detail"].lower()
    assert labeler.store.counts() == (0, 0) and not server.stopped.is_set()


def test_bad_input_is_refused_with_a_clear_error(served, fashion):
    labeler, server, client = served
    page = client.get("/api/next").json()
    good = submission(page, fashion.groups, "ok")
    bad = [
        {**good, "query": 600},                                   # no such item
        {**good, "query": "7"},                                   # a string, not an int
        {**good, "marks": []},                                    # nothing labelled
        {**good, "marks": [{"item": 1, "relevant": "yes"}]},      # not a bool
        {**good, "marks": [{"item": -1, "relevant": True}]},      # negative position
        {**good, "marks": [good["marks"][0], good["marks"][0]]},  # one item twice
        {**good, "submission_id": "a/b"},                         # not in [A-Za-z0-9_-]
        {**good, "submission_id": "x" * 65},
        {**good, "model_version": 99},                            # a version that never existed
        {**good, "admin": True},                                  # unknown field
        {k: v for k, v in good.items() if k != "marks"},          # missing field
    ]
    for body in bad:
        r = client.post("/api/labels", json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["detail"]
    r = client.post("/api/labels", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert client.get("/api/labels", params={"limit": 5000}).status_code == 422
    assert client.post("/api/train").status_code == 409  # nothing to train on yet
    assert labeler.store.counts() == (0, 0)
    assert client.post("/api/labels", json=good).status_code == 200


def test_request_size_host_header_and_static_folder_are_guarded(served):
    labeler, server, client = served
    big = b'{"submission_id": "big", "query": 1, "model_version": 0, "marks": [' + b" " * 70_000 + b"]}"
    assert client.post("/api/labels", content=big, headers={"content-type": "application/json"}).status_code == 413

    def chunks():  # no Content-Length: the limit holds for a streamed body too
        for _ in range(20):
            yield b" " * 8192

    r = client.post("/api/labels", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    # a page on another site that rebinds its DNS name to 127.0.0.1 sends its own Host header
    assert client.get("/api/status", headers={"host": "evil.example:80"}).status_code == 400
    for path in ("/static/../store.py", "/static/%2e%2e/store.py", "/static/..%2fstore.py",
                 "/static/%2e%2e%2f%2e%2e%2fio.py", "/static//etc/passwd"):
        with httpx.Client() as raw:  # sent as written: the client must not normalise the "%2e%2e"
            r = raw.send(httpx.Request("GET", server.base_url + path))
        assert r.status_code in (404, 400), (path, r.status_code)
        assert "labels.sqlite" not in r.text and "def " not in r.text
    assert labeler.store.counts() == (0, 0)


def test_binding_beyond_loopback_needs_asking_and_warns(fashion, tmp_path):
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    labeler = Labeler(MLP(), fashion.items, output_dir=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = LabelerServer(labeler)  # the default binds 127.0.0.1 without a warning
    assert first.host == "127.0.0.1"
    # the session token is fresh and long for every server: 32 random bytes, URL-safe
    tokens = {first.token, *(LabelerServer(labeler).token for _ in range(5))}
    assert len(tokens) == 6 and all(len(t) >= 43 for t in tokens)
    with pytest.warns(UserWarning, match="exposes it beyond this machine"):
        LabelerServer(labeler, host="0.0.0.0")
    with pytest.raises(ValueError, match="port"):
        LabelerServer(labeler, port=70000)
    labeler.close()


CONCURRENT_CLIENT = textwrap.dedent("""
    import json, sys
    from concurrent.futures import ThreadPoolExecutor
    import httpx

    url, token, bodies = sys.argv[1], sys.argv[2], json.load(open(sys.argv[3]))
    def send(body):
        with httpx.Client(headers={"X-Finetuner-Token": token}, timeout=60) as c:
            r = c.post(url + "/api/labels", json=body)
            return r.status_code, r.json()
    with ThreadPoolExecutor(max_workers=64) as pool:
        print(json.dumps(list(pool.map(send, bodies))))
""")


def test_200_concurrent_submissions_from_another_process_none_lost_none_duplicated(fashion, tmp_path):
    labeler = Labeler(MLP(), fashion.items, output_dir=tmp_path / "c")
    server = LabelerServer(labeler, port=0, background_tuning=False).start()
    rng = np.random.default_rng(0)
    bodies = []
    for n, q in enumerate(rng.choice(600, 200, replace=False).tolist()):
        items = [int(i) for i in rng.choice(np.setdiff1d(np.arange(600), [q]), 5, replace=False)]
        bodies.append({"submission_id": f"sub-{n:03d}", "query": q, "model_version": 0,
                       "marks": [{"item": i, "relevant": bool(rng.random() < 0.5)} for i in items]})
    path = tmp_path / "bodies.json"
    path.write_text(json.dumps(bodies))
    try:
        def run_client():
            out = subprocess.run([sys.executable, "-c", CONCURRENT_CLIENT, server.base_url, server.token, str(path)],
                                 capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, out.stderr
            return json.loads(out.stdout)

        first = run_client()
        assert [s for s, _ in first] == [200] * 200
        assert sum(a["duplicate"] for _, a in first) == 0
        stored = labeler.store.labels()
        assert labeler.store.submission_count() == 200 and len(stored) == 1000
        expected = {(b["query"], m["item"], int(m["relevant"]), b["submission_id"]) for b in bodies for m in b["marks"]}
        assert set(stored) == expected
        # every page sent again at once: all recognised, nothing stored twice
        second = run_client()
        assert all(s == 200 and a["duplicate"] for s, a in second)
        assert labeler.store.submission_count() == 200 and len(labeler.store.labels()) == 1000
    finally:
        server.stop()
        labeler.close()
    # and all of it is on disk
    reopened = LabelStore(tmp_path / "c" / "labels.sqlite")
    assert reopened.counts() == (1000, 200)
    reopened.close()


# ---- fit(interactive=True) and the command line ---------------------------------------------------
def read_link(output_dir: Path, alive, timeout: float = 60) -> tuple[str, str]:
    """The page's link from the 0600 link file, once the server (alive() while it may start) wrote it."""
    link = output_dir / "labeler-link.txt"

    def ready():
        assert alive(), "the labeler ended before writing its link"
        return link.exists() and link.read_text().strip()

    url = wait_for(ready, timeout)
    assert oct(link.stat().st_mode & 0o777) == "0o600"
    base, token = url.split("/#token=")
    return base, token


def test_fit_interactive_tunes_in_the_background_with_fit_arguments(fashion, data_dir, tmp_path):
    model, rec, out = MLP(), Recorder(), tmp_path / "fit"
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(TypeError, match="unknown argument"):
        finetuner.fit(model, fashion.items, interactive=True, output_dir=str(out), bogus=1)
    with pytest.raises(TypeError, match="resume"):
        finetuner.fit(model, fashion.items, interactive=True, output_dir=str(out), resume=True)
    box = {}

    def run():
        box["result"] = finetuner.fit(model, fashion.items, generate_fashion(300, is_testset=True, data_dir=str(data_dir)),
                                      interactive=True, open_browser=False, output_dir=str(out), epochs=2,
                                      learning_rate=5e-4, batch_size=64, device="cpu", callbacks=[rec], top_k=6)

    thread = threading.Thread(target=run)
    thread.start()
    base, token = read_link(out, thread.is_alive)
    with httpx.Client(base_url=base, headers={TOKEN_HEADER: token}, timeout=30) as client:
        for n in range(2):
            page = client.get("/api/next").json()
            assert len(page["results"]) == 6
            assert client.post("/api/labels", json=submission(page, fashion.groups, f"p{n}")).status_code == 200
        wait_for(lambda: client.get("/api/status").json()["model_version"] >= 1 and
                 not client.get("/api/status").json()["training"])
        assert client.get("/api/status").json()["eval"]["mAP@10"] > 0
        client.post("/api/stop")
    thread.join(60)
    result = box["result"]
    assert result.settings["model_version"] >= 1 and result.settings["num_labels"] == 12
    assert result.history and "mAP@10" in result.metrics_after and "mAP@10" in result.metrics_before
    assert rec.fits and all(f["epochs"] == 2 and f["lr"] == pytest.approx(5e-4) and f["device"] == "cpu"
                            and f["batch"] == 64 for f in rec.fits)
    assert result.model is model and not all(torch.equal(start[k], v) for k, v in model.state_dict().items())
    assert (out / "model" / "finetuner.json").exists()


def test_label_command_serves_until_finish(fashion, tmp_path):
    model_dir, data, out = tmp_path / "mlp", tmp_path / "items.npy", tmp_path / "cli"
    finetuner.save(MLP(), model_dir)
    np.save(data, fashion.items[:200])
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "finetuner.cli", "label", "--model", str(model_dir), "--data",
                             str(data), "--no-browser", "--output-dir", str(out), "--epochs", "1", "--top-k", "5"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        base, token = read_link(out, lambda: proc.poll() is None, timeout=120)
        with httpx.Client(base_url=base, headers={TOKEN_HEADER: token}, timeout=30) as client:
            assert client.get("/api/status").json()["num_items"] == 200
            page = client.get("/api/next").json()
            marks = [{"item": r["id"], "relevant": i < 2} for i, r in enumerate(page["results"])]
            client.post("/api/labels", json={"submission_id": "cli", "query": page["query"]["id"],
                                             "model_version": 0, "marks": marks})
            wait_for(lambda: client.get("/api/status").json()["model_version"] >= 1)
            client.post("/api/stop")
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert token not in stdout and token not in stderr  # not a terminal: only the link file's path is printed
    assert "labeler-link.txt" in stdout and "5 labels" in stdout
    assert (out / "model" / "finetuner.json").exists()


# ---- robustness: unreadable checkpoints, consistent snapshots, save-then-swap, Finish, host ----------
def test_an_unreadable_checkpoint_is_reported_and_the_labels_are_kept(fashion, tmp_path):
    out = tmp_path / "run"
    labeler = Labeler(MLP(), fashion.items, output_dir=out, train_kwargs={"epochs": 1})
    label_like_user(labeler, fashion.groups, 2)
    labeler.train()
    labeler.close()
    (out / "checkpoint" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.warns(UserWarning, match="could not read the checkpoint"):
        again = Labeler(MLP(), fashion.items, output_dir=out)
    assert again.store.counts() == (16, 2) and again.version == 1
    assert "could not read the checkpoint" in again.status()["last_error"]
    assert again.next_query() is not None  # it serves pages
    again.close()


def test_labels_and_the_submission_count_are_one_snapshot(tmp_path):
    store = LabelStore(tmp_path / "labels.sqlite")
    done = threading.Event()
    read = threading.Condition()
    checked = 0

    def write():
        for i in range(300):
            store.add(f"s{i}", i, [(i + 1000, True)], 0)
            if i % 30 == 29:  # the store's lock is not fair: make sure reads land between writes
                with read:
                    seen = checked
                    read.wait_for(lambda: checked > seen, timeout=30)
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    while not done.is_set():
        sessions, count = store.snapshot()
        assert count == len(sessions)  # one page per query: the count is exactly the pages read
        with read:
            checked += 1
            read.notify_all()
    writer.join()
    assert store.snapshot()[1] == 300 and checked >= 10
    store.close()


def test_a_new_model_is_used_only_once_its_checkpoint_is_saved(fashion, tmp_path, monkeypatch):
    import finetuner.labeler.rounds as rounds

    labeler = Labeler(MLP(), fashion.items, output_dir=tmp_path / "run", train_kwargs={"epochs": 1})
    label_like_user(labeler, fashion.groups, 2)
    model, embeddings = labeler.model, labeler.embeddings.clone()

    def disk_full(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(rounds, "save", disk_full)
    with pytest.raises(OSError, match="disk full"):
        labeler.train()
    assert labeler.version == 0 and labeler.model is model and torch.equal(labeler.embeddings, embeddings)
    assert labeler.store.get_meta("model_version", "0") == "0" and not labeler.store.rounds()
    labeler.close()


class SlowRound(Callback):
    """Makes each batch of a round take a while, and says when the round has started."""

    def __init__(self):
        self.started = threading.Event()

    def on_batch_end(self, trainer, loss):
        self.started.set()
        time.sleep(0.05)


@pytest.mark.parametrize("cancel", [False, True])
def test_finish_waits_for_the_running_round_or_cancels_it(fashion, tmp_path, cancel):
    slow = SlowRound()
    labeler = Labeler(MLP(), fashion.items, output_dir=tmp_path / "run",
                      train_kwargs={"epochs": 40, "batch_size": 8, "callbacks": [slow]})
    server = LabelerServer(labeler, port=0).start()
    try:
        label_like_user(labeler, fashion.groups, 1)
        assert slow.started.wait(60)
        with httpx.Client(base_url=server.base_url, headers={TOKEN_HEADER: server.token}, timeout=30) as client:
            assert client.post("/api/stop", params={"cancel_round": cancel}).json()["cancel_round"] is cancel
        start = time.perf_counter()
        server.stop()
        waited = time.perf_counter() - start
        assert not server.worker.alive and not labeler.training  # no round runs once stop returns
        if cancel:
            assert labeler.version == 0 and waited < 10  # stopped at its next batch, model unchanged
        else:
            assert labeler.version == 1 and (tmp_path / "run" / "checkpoint" / "finetuner.json").exists()
        labeler.save()  # safe now: nothing trains behind it
    finally:
        labeler.close()


def test_a_non_loopback_host_accepts_only_the_bound_address(fashion, tmp_path):
    from fastapi.testclient import TestClient

    from finetuner.labeler.server import bound_names

    assert bound_names("10.1.2.3") == ["10.1.2.3"]
    assert "*" not in bound_names("0.0.0.0") and bound_names("0.0.0.0")
    labeler = Labeler(MLP(), fashion.items, output_dir=tmp_path)
    with pytest.warns(UserWarning, match="exposes it"):
        server = LabelerServer(labeler, host="10.1.2.3")
    headers = {TOKEN_HEADER: server.token}
    assert TestClient(server.app, base_url="http://10.1.2.3:8000").get("/api/status", headers=headers).status_code == 200
    for other in ("http://rebinding.attacker.example", "http://127.0.0.1", "http://10.1.2.4"):
        assert TestClient(server.app, base_url=other).get("/api/status", headers=headers).status_code == 400, other
    labeler.close()
