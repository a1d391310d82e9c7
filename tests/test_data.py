"""Format detection and conversion, and the batch samplers."""

import json

import numpy as np
import pandas as pd
import pytest

from finetuner.data.formats import to_labeled
from finetuner.data.labeled import LabeledData
from finetuner.data.samplers import GroupBatchSampler


def test_class_format_from_tuples_dicts_numpy_pandas():
    X = np.random.rand(6, 3).astype(np.float32)
    y = [0, 0, 1, 1, 2, 2]
    for data in ([(x, c) for x, c in zip(X, y)], [{"item": x, "label": c} for x, c in zip(X, y)], (X, np.array(y))):
        d = to_labeled(data)
        assert d.format == "class" and isinstance(d.items, np.ndarray) and d.items.shape == (6, 3)
        assert d.labels().tolist() == y
    df = pd.DataFrame({"text": list("abcdef"), "label": ["x", "x", "y", "y", "z", "z"]})
    d = to_labeled(df)
    assert d.format == "class" and d.class_names == ["x", "y", "z"] and d.labels().tolist() == y


def test_pair_triplet_session_formats():
    pairs = to_labeled([("a", "b", 1.0), ("c", "d", 0.0), ("e", "f", 0.5)])
    assert pairs.format == "pair" and pairs.labels().tolist() == [[0, 1], [0, 1], [1, 1], [1, 0], [2, 1], [2, 0.5]]
    trip = to_labeled([{"anchor": "a", "positive": "b", "negative": "c"}])
    assert trip.format == "triplet" and trip.labels()[:, 1].tolist() == [1, 1, 0]
    sess = to_labeled([("q", [("m1", 1), ("m2", -1)]), {"query": "q2", "positives": ["p"], "negatives": ["n", "n2"]}])
    assert sess.format == "session" and sess.items == ["q", "m1", "m2", "q2", "p", "n", "n2"]
    assert sess.labels()[:, 1].tolist() == [1, 1, 0, 1, 1, 0, 0]
    # text pairs without scores: (anchor, positive), all distinct -> pairs, not classes
    ap = to_labeled([("how are you", "fine"), ("what time", "noon"), ("where", "here")])
    assert ap.format == "pair"


def test_files_and_hf_dataset(tmp_path):
    import datasets

    rows = [{"text": t, "label": c} for t, c in zip("abcdef", [0, 0, 1, 1, 2, 2])]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    pd.DataFrame(rows).to_csv(tmp_path / "d.csv", index=False)
    for data in (tmp_path / "d.jsonl", str(tmp_path / "d.csv"), datasets.Dataset.from_list(rows)):
        d = to_labeled(data)
        assert d.format == "class" and list(d.items) == list("abcdef") and d.labels().tolist() == [0, 0, 1, 1, 2, 2]


def test_bad_data_errors():
    with pytest.raises(ValueError, match="train_data: the data is empty"):
        to_labeled([])
    with pytest.raises(ValueError, match="mixed formats"):
        to_labeled([("a", 0), ("a", "b", 1.0)])
    with pytest.raises(ValueError, match="row 1 has no label"):
        to_labeled([("a", 0), ("b", None)])
    with pytest.raises(ValueError, match="score"):
        to_labeled([("a", "b", 4.2)])
    with pytest.raises(ValueError, match="X has 3 rows but y has 2"):
        to_labeled((np.zeros((3, 2)), np.zeros(2)))
    with pytest.raises(ValueError, match="eval_data: file"):
        to_labeled("/no/such/file.csv", name="eval_data")
    with pytest.raises(ValueError, match="format: expected"):
        to_labeled([("a", 0)], format="quadruplet")


def test_class_sampler_sees_every_item_once_in_chunks():
    groups = np.repeat(np.arange(10), 25)  # 10 classes x 25 items
    s = GroupBatchSampler(groups, batch_size=32, chunk_size=4, seed=0)
    batches = list(s)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(250))
    for b in batches:
        assert len(b) <= 32 + 4
        # every batch has at least one positive pair and two classes
        _, counts = np.unique(groups[b], return_counts=True)
        assert counts.max() >= 2 and len(counts) >= 2


def test_sampler_is_reproducible_per_epoch():
    groups = np.repeat(np.arange(5), 8)
    a, b = GroupBatchSampler(groups, 16, 4, seed=1), GroupBatchSampler(groups, 16, 4, seed=1)
    a.set_epoch(3), b.set_epoch(3)
    assert list(a) == list(b)
    b.set_epoch(4)
    assert list(a) != list(b)


def test_session_sampler_keeps_groups_together():
    groups = np.repeat(np.arange(20), 5)  # 20 sessions of 5
    s = GroupBatchSampler(groups, batch_size=12, chunk_size=None, seed=0)
    for b in s:
        for g in np.unique(groups[b]):
            assert (groups[b] == g).sum() == 5  # a session is never split


def test_labeled_data_validation():
    with pytest.raises(ValueError, match="differ in length"):
        LabeledData(items=[1, 2, 3], groups=[0, 1])
    with pytest.raises(ValueError, match="relevance"):
        LabeledData(items=[1, 2], groups=[0, 0], relevance=[1, 2], format="session")
