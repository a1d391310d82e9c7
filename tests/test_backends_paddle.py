"""Paddle models (`paddle.nn.Layer`) in fit, display, to_embedding_model, save / load, through
the torch bridge (`finetuner.models.backends`). Real Paddle layers, real Fashion-MNIST items.

Skipped when paddlepaddle is not installed (`pip install 'finetuner[paddle]'`). Paddle 3.3's
native libraries crash the process when it is imported after TensorFlow, so
test_backends_keras.py imports paddle first; if TensorFlow is loaded without it, this file skips.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

if "tensorflow" in sys.modules and "paddle" not in sys.modules:
    pytest.skip("TensorFlow was imported before Paddle in this process (Paddle would crash it); run this file "
                "in its own pytest process", allow_module_level=True)
paddle = pytest.importorskip("paddle", reason="paddlepaddle is not installed: pip install 'finetuner[paddle]'")

import finetuner  # noqa: E402
from finetuner.models.backends import adapt, detect_framework, require  # noqa: E402
from finetuner.models.backends.paddle import PaddleEmbeddingModel  # noqa: E402
from finetuner.data.relation import relation_matrix  # noqa: E402
from finetuner.losses import SiameseLoss  # noqa: E402
from finetuner.losses.distances import pairwise_distance  # noqa: E402
from finetuner.toydata import generate_fashion  # noqa: E402

nn = paddle.nn


def seed_mlp(seed: int = 0):
    """The seed's Paddle embedding model: 28x28 -> 128 ReLU -> 32."""
    paddle.seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 32))


class Classifier(nn.Layer):
    """A nested classifier with batch norm and dropout: 28x28 -> 64 -> BN -> 32 -> dropout -> 10."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.BatchNorm1D(64), nn.ReLU())
        self.fc2 = nn.Linear(64, 32)
        self.drop = nn.Dropout(0.5)
        self.logits = nn.Linear(32, 10)

    def forward(self, x):
        return self.logits(self.drop(nn.functional.relu(self.fc2(self.body(x)))))


def classifier(seed: int = 0) -> Classifier:
    paddle.seed(seed)
    return Classifier()


@pytest.fixture(scope="module")
def fashion(data_dir):
    return (generate_fashion(400, data_dir=data_dir),
            generate_fashion(300, is_testset=True, data_dir=data_dir))


def test_detect_framework():
    assert detect_framework(seed_mlp()) == "paddle" and detect_framework(classifier()) == "paddle"
    assert detect_framework(paddle.zeros([2])) is None  # layers only, not tensors
    assert detect_framework(torch.nn.Linear(2, 2)) == "torch"


def test_missing_framework_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "paddle", None)  # as if paddlepaddle were not installed
    with pytest.raises(ImportError, match=r"pip install 'finetuner\[paddle\]'"):
        require("paddle")
    (tmp_path / "finetuner.json").write_text(json.dumps({"kind": "paddle", "file": "model.pdparams"}))
    with pytest.raises(ImportError, match=r"finetuner\[paddle\]"):
        finetuner.load(tmp_path)


def test_gradients_equal_native_paddle():
    """d SiameseLoss / d weights through the bridge (Paddle forward, torch loss, Paddle
    backward(grad_tensor=...)) equals the same loss written in Paddle and differentiated by it."""
    model = classifier()
    rng = np.random.default_rng(0)
    x = rng.random((32, 28, 28), dtype=np.float32)
    labels = torch.from_numpy(rng.integers(0, 4, 32))
    loss_fn = SiameseLoss(margin=0.5)

    bridge = adapt(model).eval()  # eval: dropout off, batch norm on its running statistics
    loss = loss_fn(bridge(torch.from_numpy(x)), labels)
    loss.backward()
    ours = [p.grad.numpy() for p in bridge._params()]

    with torch.no_grad():  # the miner's pairs are constants of the loss (chosen on detached distances)
        i, j, s = loss_fn.miner.pairs(pairwise_distance(bridge(torch.from_numpy(x))), relation_matrix(labels))
    model.eval()
    e = nn.functional.normalize(model(paddle.to_tensor(x)), axis=1)
    d = 1.0 - (paddle.gather(e, paddle.to_tensor(i.numpy())) * paddle.gather(e, paddle.to_tensor(j.numpy()))).sum(1)
    s_pd = paddle.to_tensor(s.numpy())
    native_loss = (s_pd * d + (1 - s_pd) * nn.functional.relu(0.5 - d)).mean()
    native_loss.backward()
    native = [p.grad.numpy() for p in model.parameters() if not p.stop_gradient]
    assert float(native_loss) == pytest.approx(loss.item(), rel=1e-5)
    assert len(ours) == len(native) == 8  # fc1, bn weight/bias, fc2, logits
    for a, b in zip(ours, native):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_display_lists_nested_layers_in_forward_order():
    rows = finetuner.display(classifier(), input_size=(28, 28), show=False)
    names = [r["name"] for r in rows]
    assert names == ["body", "body.0", "body.1", "body.2", "body.3", "fc2", "drop", "logits"]
    fc2 = rows[names.index("fc2")]
    assert fc2["type"] == "Linear" and fc2["output_shape"] == (None, 32) and fc2["params"] == 64 * 32 + 32
    assert fc2["trainable"] == "yes" and fc2["embedding"] is True
    guessed = finetuner.display(seed_mlp(), show=False)  # input guessed from the first Linear (784)
    assert guessed[-1]["output_shape"] == (None, 32)


def test_to_embedding_model_cut_freeze_head():
    x = paddle.rand([4, 28, 28])
    emb = finetuner.to_embedding_model(classifier(), input_size=(28, 28), freeze=True, output_dim=16)
    assert isinstance(emb, PaddleEmbeddingModel) and emb.layer_name == "fc2"  # the layer before the classifier
    assert tuple(emb(x).shape) == (4, 16)
    trainable = [n for n, p in emb.named_parameters() if not p.stop_gradient]
    assert trainable == ["head.weight", "head.bias"]
    assert sum(p.numel() for p in adapt(emb).parameters()) == 32 * 16 + 16

    cut = finetuner.to_embedding_model(classifier(), layer_name="body.1", input_size=(28, 28), freeze=1)
    assert tuple(cut(x).shape) == (4, 64)
    assert cut.backbone.body[1].weight.stop_gradient and not cut.backbone.fc2.weight.stop_gradient
    with pytest.raises(ValueError, match="no layer named 'fc9'"):
        finetuner.to_embedding_model(classifier(), layer_name="fc9", input_size=(28, 28))
    with pytest.raises(ValueError, match="freeze: 9 layers"):
        finetuner.to_embedding_model(classifier(), input_size=(28, 28), freeze=9)


def test_save_load_round_trip_native_format(tmp_path):
    model = finetuner.to_embedding_model(classifier(), input_size=(28, 28), output_dim=8)
    model.eval()
    x = paddle.rand([5, 28, 28])
    finetuner.save(model, tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "finetuner.json").read_text())
    assert meta["framework"] == "paddle" and (tmp_path / "m" / "model.pdparams").is_file()
    assert set(paddle.load(str(tmp_path / "m" / "model.pdparams"))) == set(model.state_dict())
    with pytest.raises(ValueError, match="trust_pickle=True"):
        finetuner.load(tmp_path / "m")  # the pickled layer runs code: never read by default
    loaded = finetuner.load(tmp_path / "m", trust_pickle=True)
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-6)
    other = finetuner.to_embedding_model(classifier(seed=1), input_size=(28, 28), output_dim=8)
    finetuner.load(tmp_path / "m", model=other)
    np.testing.assert_allclose(other(x).numpy(), model(x).numpy(), rtol=1e-6)


def test_fit_seed_example_on_real_fashion(fashion, tmp_path):
    train, test = fashion
    model = seed_mlp()
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    r = finetuner.fit(model, train_data=train, eval_data=test, epochs=3, batch_size=128, verbose=False,
                      output_dir=tmp_path / "run", report=False)
    assert r.model is model
    assert r.metrics_after["mAP@10"] > r.metrics_before["mAP@10"] + 0.02
    assert all(np.abs(v.numpy() - before[k]).max() > 0 for k, v in model.state_dict().items())
    loaded = finetuner.load(tmp_path / "run" / "model", trust_pickle=True)
    x = paddle.to_tensor(test.items[:8])
    model.eval()
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)


def test_fit_with_tailor_arguments_trains_only_the_head(fashion):
    train, _ = fashion
    model = classifier()
    frozen = model.fc2.weight.numpy().copy()
    bn_mean = model.body[2]._mean.numpy().copy()
    r = finetuner.fit(model, train, epochs=1, batch_size=128, freeze_layer=-1, output_dim=16, verbose=False)
    assert isinstance(r.model, PaddleEmbeddingModel) and tuple(r.model(paddle.rand([2, 28, 28])).shape) == (2, 16)
    np.testing.assert_array_equal(model.fc2.weight.numpy(), frozen)
    np.testing.assert_array_equal(model.body[2]._mean.numpy(), bn_mean)  # frozen layers stay in eval mode


@pytest.mark.slow
def test_fashion_acceptance_default_fit(data_dir):
    """The seed's example with every default on the full Fashion-MNIST (60k / 10k)."""
    model = seed_mlp()
    r = finetuner.fit(model, train_data=generate_fashion(data_dir=data_dir),
                      eval_data=generate_fashion(is_testset=True, data_dir=data_dir), verbose=False)
    # nDCG@10: with 1,000 relevant items a query, trec_eval's MAP@10 (over R) is at most 0.01
    assert r.metrics_after["nDCG@10"] > r.metrics_before["nDCG@10"] + 0.1


def test_embed_and_evaluate_take_the_paddle_model_directly(fashion):
    _, evald = fashion
    model = seed_mlp()
    model.eval()
    emb = finetuner.embed(model, evald)
    assert emb.shape == (len(evald), 32) and emb.dtype == np.float32
    expected = model(paddle.to_tensor(np.asarray(evald.items, dtype="float32"))).numpy()
    np.testing.assert_allclose(emb, expected, rtol=1e-4, atol=1e-5)
    assert 0 < finetuner.evaluate(model, evald)["mAP@10"] <= 1
