"""Keras 3 (TensorFlow backend) models in fit, display, to_embedding_model, save / load, through
the torch bridge (`finetuner.models.backends`). Real Keras models, real Fashion-MNIST items.

Skipped when tensorflow / keras are not installed (`pip install 'finetuner[keras]'`)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

if importlib.util.find_spec("paddle") is not None and "tensorflow" not in sys.modules:
    import paddle  # noqa: F401  # Paddle crashes the process if imported after TensorFlow (see test_backends_paddle)

tf = pytest.importorskip("tensorflow", reason="tensorflow is not installed: pip install 'finetuner[keras]'")
keras = pytest.importorskip("keras", reason="keras is not installed: pip install 'finetuner[keras]'")
if keras.backend.backend() != "tensorflow":
    pytest.skip(f"these tests need the Keras tensorflow backend, got {keras.backend.backend()}", allow_module_level=True)

import finetuner  # noqa: E402
from finetuner.models.backends import adapt, detect_framework, require  # noqa: E402
from finetuner.data.relation import relation_matrix  # noqa: E402
from finetuner.losses import SiameseLoss  # noqa: E402
from finetuner.losses.distances import pairwise_distance  # noqa: E402
from finetuner.toydata import generate_fashion  # noqa: E402


def seed_mlp(seed: int = 0):
    """The seed's Keras embedding model: 28x28 -> 128 ReLU -> 32."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.layers.Input((28, 28)), keras.layers.Flatten(),
                             keras.layers.Dense(128, activation="relu"), keras.layers.Dense(32)])


def classifier(seed: int = 0):
    """A classifier with batch norm and dropout: 28x28 -> 64 -> BN -> 32 -> dropout -> 10 classes."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.layers.Input((28, 28)), keras.layers.Flatten(name="flat"),
                             keras.layers.Dense(64, activation="relu", name="fc1"), keras.layers.BatchNormalization(name="bn"),
                             keras.layers.Dense(32, activation="relu", name="fc2"), keras.layers.Dropout(0.5, name="drop"),
                             keras.layers.Dense(10, name="logits")])


@pytest.fixture(scope="module")
def fashion(data_dir):
    return (generate_fashion(400, data_dir=data_dir),
            generate_fashion(300, is_testset=True, data_dir=data_dir))


def test_detect_framework():
    assert detect_framework(seed_mlp()) == "keras"
    assert detect_framework(keras.layers.Dense(3)) == "keras"
    assert detect_framework(torch.nn.Linear(2, 2)) == "torch"
    assert detect_framework(tf.zeros(2)) is None and detect_framework("a/path") is None


def test_import_finetuner_imports_no_framework():
    code = ("import sys, finetuner; import finetuner.models.backends; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'paddle') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_missing_framework_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "keras", None)  # as if keras were not installed
    with pytest.raises(ImportError, match=r"pip install 'finetuner\[keras\]'"):
        require("keras")
    (tmp_path / "finetuner.json").write_text(json.dumps({"kind": "keras", "file": "model.keras"}))
    with pytest.raises(ImportError, match=r"finetuner\[keras\]"):
        finetuner.load(tmp_path)


def test_gradients_equal_native_tensorflow():
    """d SiameseLoss / d weights through the bridge (TF forward, torch loss, TF backward with
    output_gradients) equals the same loss written in TensorFlow and differentiated by a tape."""
    model = classifier()
    rng = np.random.default_rng(0)
    x = rng.random((32, 28, 28), dtype=np.float32)
    labels = torch.from_numpy(rng.integers(0, 4, 32))
    loss_fn = SiameseLoss(margin=0.5)

    bridge = adapt(model).eval()  # eval: dropout off, so both passes see the same function
    loss = loss_fn(bridge(torch.from_numpy(x)), labels)
    loss.backward()
    ours = [p.grad.numpy() for p in bridge._params()]

    with torch.no_grad():  # the miner's pairs are constants of the loss (chosen on detached distances)
        emb = bridge(torch.from_numpy(x))
        i, j, s = loss_fn.miner.pairs(pairwise_distance(emb, distance="cosine"), relation_matrix(labels))
    with tf.GradientTape() as tape:
        e = tf.math.l2_normalize(model(x, training=False), axis=1)
        d = 1.0 - tf.reduce_sum(tf.gather(e, i.numpy()) * tf.gather(e, j.numpy()), axis=1)
        s_tf = tf.constant(s.numpy())
        native_loss = tf.reduce_mean(s_tf * d + (1 - s_tf) * tf.nn.relu(0.5 - d))
    native = tape.gradient(native_loss, model.trainable_weights)
    assert float(native_loss) == pytest.approx(loss.item(), rel=1e-5)
    assert len(ours) == len(native) == 8  # fc1, bn gamma/beta, fc2, logits
    for a, b in zip(ours, native):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-4, atol=1e-6)


def test_display_lists_layers_with_shapes():
    rows = finetuner.display(classifier(), show=False)
    assert [r["name"] for r in rows] == ["flat", "fc1", "bn", "fc2", "drop", "logits"]
    fc2 = rows[3]
    assert fc2["type"] == "Dense" and fc2["output_shape"] == (None, 32) and fc2["params"] == 64 * 32 + 32
    assert fc2["trainable"] == "yes" and fc2["embedding"] is True
    assert rows[0]["trainable"] == "-"


def test_to_embedding_model_cut_freeze_head():
    model = classifier()
    x = np.random.default_rng(0).random((4, 28, 28), dtype=np.float32)
    emb = finetuner.to_embedding_model(model, freeze=True, output_dim=16)  # cut before "logits", dropout skipped
    assert [l.name for l in emb.layers][-2:] == ["fc2", "projection_head"]
    assert tuple(emb(x).shape) == (4, 16)
    assert {v.path.split("/")[0] for v in emb.trainable_weights} == {"projection_head"}
    bridge = adapt(emb)
    assert sum(p.numel() for p in bridge.parameters()) == 32 * 16 + 16  # frozen weights are buffers

    cut = finetuner.to_embedding_model(classifier(), layer_name="fc1", freeze=1)  # first layer with weights
    assert tuple(cut(x).shape) == (4, 64) and not cut.get_layer("fc1").trainable
    with pytest.raises(ValueError, match="no layer named 'fc9'"):
        finetuner.to_embedding_model(classifier(), layer_name="fc9")
    with pytest.raises(ValueError, match="freeze: 9 layers"):
        finetuner.to_embedding_model(classifier(), freeze=9)


def test_save_load_round_trip_native_format(tmp_path):
    model = finetuner.to_embedding_model(classifier(), output_dim=8)
    x = np.random.default_rng(0).random((5, 28, 28), dtype=np.float32)
    finetuner.save(model, tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "finetuner.json").read_text())
    assert meta["framework"] == "keras" and (tmp_path / "m" / "model.keras").is_file()
    loaded = finetuner.load(tmp_path / "m")
    np.testing.assert_allclose(loaded(x, training=False).numpy(), model(x, training=False).numpy(), rtol=1e-6)
    other = finetuner.to_embedding_model(classifier(seed=1), output_dim=8)
    finetuner.load(tmp_path / "m", model=other)
    np.testing.assert_allclose(other(x, training=False).numpy(), model(x, training=False).numpy(), rtol=1e-6)


def test_fit_seed_example_on_real_fashion(fashion, tmp_path):
    train, test = fashion
    model = seed_mlp()
    before = [w.copy() for w in model.get_weights()]
    r = finetuner.fit(model, train_data=train, eval_data=test, epochs=3, batch_size=128, verbose=False,
                      output_dir=tmp_path / "run", report=False)
    assert r.model is model
    assert r.metrics_after["mAP@10"] > r.metrics_before["mAP@10"] + 0.02
    assert all(np.abs(a - b).max() > 0 for a, b in zip(model.get_weights(), before))
    # the saved model is Keras' own format and embeds like the trained model
    loaded = finetuner.load(tmp_path / "run" / "model")
    np.testing.assert_allclose(loaded(test.items[:8]).numpy(), model(test.items[:8]).numpy(), rtol=1e-5, atol=1e-6)
    assert torch.get_num_threads() >= 1


def test_fit_with_tailor_arguments_trains_only_the_head(fashion):
    train, _ = fashion
    model = classifier()
    frozen = model.get_layer("fc1").get_weights()[0].copy()
    r = finetuner.fit(model, train, epochs=1, batch_size=128, freeze_layer=-1, output_dim=16, verbose=False)
    assert r.model is not model and tuple(r.model(train.items[:2]).shape) == (2, 16)
    np.testing.assert_array_equal(model.get_layer("fc1").get_weights()[0], frozen)


def test_keras_on_torch_backend_takes_the_torch_path(data_dir):
    """Keras 3 on the torch backend: the model is a torch module and trains like one."""
    code = f"""
import keras, torch, finetuner
from finetuner.toydata import generate_fashion
keras.utils.set_random_seed(0)
m = keras.Sequential([keras.layers.Input((28, 28)), keras.layers.Flatten(), keras.layers.Dense(32)])
assert isinstance(m, torch.nn.Module)
from finetuner.models.backends import detect_framework
assert detect_framework(m) == "torch"
w = m.layers[-1].kernel.numpy().copy()
r = finetuner.fit(m, generate_fashion(256, data_dir={str(data_dir)!r}), epochs=1, batch_size=128, verbose=False)
assert abs(m.layers[-1].kernel.numpy() - w).max() > 0
print("ok", r.history[-1]["train_loss"])
"""
    env = dict(os.environ, KERAS_BACKEND="torch")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]


@pytest.mark.slow
def test_fashion_acceptance_default_fit(data_dir):
    """The seed's example with every default on the full Fashion-MNIST (60k / 10k)."""
    model = seed_mlp()
    r = finetuner.fit(model, train_data=generate_fashion(data_dir=data_dir),
                      eval_data=generate_fashion(is_testset=True, data_dir=data_dir), verbose=False)
    # nDCG@10: with 1,000 relevant items a query, trec_eval's MAP@10 (over R) is at most 0.01
    assert r.metrics_after["nDCG@10"] > r.metrics_before["nDCG@10"] + 0.1


def test_bridge_keeps_framework_weights_and_statistics_in_sync():
    """After torch optimizer steps, the Keras variables equal the torch parameters; batch-norm
    moving statistics updated by Keras' forward pass are in the torch buffers (checkpoints)."""
    model = classifier()
    model.get_layer("fc1").trainable = False
    frozen = model.get_layer("fc1").get_weights()[0].copy()
    bridge = adapt(model).train()
    opt = torch.optim.Adam(bridge.parameters(), lr=1e-2)
    x = torch.rand(16, 28, 28)
    for _ in range(3):
        bridge(x).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
    bridge.push()
    state = bridge.state_dict()
    for v in model.weights:
        key = next(k for k in state if k.endswith("_" + v.path.replace("/", "_")))
        np.testing.assert_allclose(state[key].numpy(), v.numpy(), rtol=1e-6)
    assert np.abs(model.get_layer("bn").moving_mean.numpy()).max() > 0  # updated by the training passes
    np.testing.assert_array_equal(model.get_layer("fc1").get_weights()[0], frozen)
    assert {k for k, _ in bridge.named_parameters()} == {k for k in state if "fc1" not in k and "moving" not in k}


def test_embed_and_evaluate_take_the_keras_model_directly(fashion):
    _, evald = fashion
    model = seed_mlp()
    emb = finetuner.embed(model, evald)
    assert emb.shape == (len(evald), 32) and emb.dtype == np.float32
    np.testing.assert_allclose(emb, model(np.asarray(evald.items, dtype="float32")).numpy(), rtol=1e-4, atol=1e-5)
    assert 0 < finetuner.evaluate(model, evald)["mAP@10"] <= 1
