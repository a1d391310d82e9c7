"""Format detection and conversion, and the batch samplers."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from finetuner.data.formats import to_labeled
from finetuner.data.labeled import LabeledData
from finetuner.data.readers import read_table
from finetuner.data.relation import split_labels
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


def _group_relevance(data):
    group, relevance = split_labels(torch.from_numpy(data.labels()))
    return group.tolist(), relevance.tolist()


def test_pair_triplet_session_formats():
    pairs = to_labeled([("a", "b", 1.0), ("c", "d", 0.0), ("e", "f", 0.5)])
    assert pairs.format == "pair" and _group_relevance(pairs) == ([0, 0, 1, 1, 2, 2], [1, 1, 1, 0, 1, 0.5])
    trip = to_labeled([{"anchor": "a", "positive": "b", "negative": "c"}])
    assert trip.format == "triplet" and _group_relevance(trip)[1] == [1, 1, 0]
    sess = to_labeled([("q", [("m1", 1), ("m2", -1)]), {"query": "q2", "positives": ["p"], "negatives": ["n", "n2"]}])
    assert sess.format == "session" and sess.items == ["q", "m1", "m2", "q2", "p", "n", "n2"]
    assert _group_relevance(sess)[1] == [1, 1, 0, 1, 1, 0, 0]
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


def test_errors_name_the_file_and_line(tmp_path):
    """A bad row read from a file is named by the file and its 1-based line; a frame or a
    dataset by its row; a malformed file by the parser's line (issue: "Unexpected character
    found when decoding 'null' at position 24", with no file and no line)."""
    import datasets

    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text('{"a": "x", "b": "y", "score": 1}\n\n{"a": "u", "b": "v", "score": 3}\n')
    with pytest.raises(ValueError, match=rf"^train_data: {jsonl}, line 3 has score 3.0; expected a score in \[0, 1\]"):
        to_labeled(jsonl)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"a": "x", "b": "y", "score": 1}\n{"a": nul}\n')
    with pytest.raises(ValueError, match=rf"^eval_data: {broken}, line 2: not valid JSON"):
        to_labeled(broken, name="eval_data")
    # a quoted field over two lines: the bad record starts on line 4
    csv = tmp_path / "classes.csv"
    csv.write_text('text,label\n"two\nlines",1\nno label,\nok,2\n')
    with pytest.raises(ValueError, match=rf"^train_data: {csv}, line 4 has no label; every item of class format"):
        to_labeled(csv)
    bad_csv = tmp_path / "ragged.csv"
    bad_csv.write_text("text,label\na,1\nb,2,extra\n")
    with pytest.raises(ValueError, match=rf"^train_data: {bad_csv}: not a valid CSV table \(.*line 3"):
        to_labeled(bad_csv)
    bad_json = tmp_path / "rows.json"
    bad_json.write_text('[{"text": "a", "label": 1},\n {"text": "b", "label": 1}, {"text": "c"')
    with pytest.raises(ValueError, match=rf"^train_data: {bad_json}, line 2: not valid JSON"):
        to_labeled(bad_json)
    not_utf8 = tmp_path / "latin1.csv"
    not_utf8.write_bytes("text,label\ncaf\xe9,1\n".encode("latin-1"))
    with pytest.raises(ValueError, match=rf"^train_data: {not_utf8} is not UTF-8 text"):
        to_labeled(not_utf8)
    frame = pd.DataFrame({"text": ["a", "b"], "label": [1, None]}, index=["r1", "r2"])
    with pytest.raises(ValueError, match=r"^train_data: DataFrame row 1 \(index 'r2'\) has no label"):
        to_labeled(frame)
    with pytest.raises(ValueError, match=r"^train_data: datasets.Dataset row 1 has no label"):
        to_labeled(datasets.Dataset.from_dict({"text": ["a", "b"], "label": [1, None]}))
    with pytest.raises(ValueError, match=r"^train_data: row 2 is triplet format but row 0 is pair format \(mixed"):
        to_labeled([("a", "b", 1.0), ("c", "d", 0.0), ("e", "f", "g")])


def test_read_table_remembers_its_source(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": 0}\n\n\n{"text": "b", "label": 1}\n')
    frame = read_table(path, "train_data")
    source = frame.attrs["finetuner_source"]
    assert (source.path, source.kind, source.lines.tolist()) == (str(path), "jsonl", [1, 4])
    # pandas copies attrs on column access and compares them on concat: the holder survives both
    assert frame["text"].attrs["finetuner_source"] is source
    assert len(pd.concat([frame, frame])) == 4


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


@pytest.mark.parametrize("length_grouped", [False, True])
def test_class_batches_always_hold_a_negative(length_grouped):
    """Two classes, 8 chunks a batch: packed at random, about 1 batch in 128 would hold one
    class (nothing to contrast; an in-batch-negative loss of 0). Every batch gets two classes
    and a positive pair, and every item is still seen once per epoch."""
    from finetuner.data.samplers import LengthGroupedBatchSampler

    groups = np.repeat([0, 1], 2048)
    lone = 0
    for seed in range(3):
        if length_grouped:
            s = LengthGroupedBatchSampler(np.arange(4096) % 50, 32, groups=groups, chunk_size=4, seed=seed)
        else:
            s = GroupBatchSampler(groups, batch_size=32, chunk_size=4, seed=seed)
        batches = list(s)
        assert sorted(np.concatenate(batches).tolist()) == list(range(4096))
        assert [len(b) for b in batches].count(32) == 128
        for b in batches:
            _, counts = np.unique(groups[b], return_counts=True)
            assert len(counts) == 2 and counts.max() >= 2
        # the unrepaired packing does produce such batches: the test exercises the swap
        rng = np.random.default_rng([seed, 0])
        lone += sum(len(np.unique(groups[b])) == 1 for b in _packed_without_mixing(s, rng))
    assert lone > 0


def _packed_without_mixing(sampler, rng):
    chunks = sampler._chunks(rng)
    return [np.concatenate(chunks[i:i + 8]) for i in range(0, len(chunks), 8)]
