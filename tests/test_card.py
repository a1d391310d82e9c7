"""The model card (README.md) every save writes: Hugging Face front matter, and after a fit the
data, settings, metrics before / after (the same numbers as metrics.json), time and hardware."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
import yaml

import finetuner
from finetuner.models.card import model_card, write_card


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])




def test_bare_save_of_a_module(tmp_path):
    finetuner.save(torch.nn.Linear(4, 2), tmp_path / "m")
    text = (tmp_path / "m" / "README.md").read_text()
    meta = _front_matter(text)
    assert meta["library_name"] == "finetuner" and meta["pipeline_tag"] == "feature-extraction"
    assert "finetuner" in meta["tags"] and "base_model" not in meta and "metrics" not in meta
    assert "- parameters: 10" in text and "no run information" in text


def test_text_encoder_card_keeps_the_sentence_transformers_layout(tiny_bert, tmp_path):
    from sentence_transformers import SentenceTransformer

    from finetuner.models.text import TextEncoder

    encoder = TextEncoder.from_pretrained(tiny_bert)
    finetuner.save(encoder, tmp_path / "enc")
    meta = _front_matter((tmp_path / "enc" / "README.md").read_text())
    assert meta["library_name"] == "sentence-transformers" and meta["pipeline_tag"] == "sentence-similarity"
    assert "base_model" not in meta  # a local folder is no hub id: named in the text only
    assert (tmp_path / "enc" / "modules.json").is_file()
    assert SentenceTransformer(str(tmp_path / "enc")).encode(["hi"]).shape == (1, 32)
    encoder.sentence_transformer[0].auto_model.config._name_or_path = "sentence-transformers/all-MiniLM-L6-v2"
    card = model_card(encoder)
    assert _front_matter(card)["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert "# Text embedding model fine-tuned from sentence-transformers/all-MiniLM-L6-v2" in card


def test_card_after_fit_has_data_settings_metrics_time_and_hardware(tmp_path):
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 8)) * 3
    y = np.repeat(np.arange(4), 16)
    X = (centers[y] + rng.normal(size=(64, 8))).astype(np.float32)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8))
    result = finetuner.fit(model, (X, y), (X, y), epochs=2, batch_size=32, output_dir=tmp_path / "run",
                           verbose=False, report=False)
    text = (tmp_path / "run" / "model" / "README.md").read_text()
    meta = _front_matter(text)
    assert meta["library_name"] == "finetuner" and "nDCG@10" in meta["metrics"]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for key in ("nDCG@10", "mAP@10"):
        before, after = metrics["metrics_before"][key], metrics["metrics_after"][key]
        assert f"| {key} | {before:.4f} | {after:.4f} | {after - before:+.4f} |" in text
    assert "- training items: 64 (class format)" in text and "- eval items: 64" in text
    assert "| epochs | 2 |" in text and "| batch_size | 32 |" in text and "| learning_rate |" in text
    assert "- epochs run: 2" in text and "training time:" in text and "(CPU)" in text
    assert result.metrics_after  # and the datasets the command line names end up in the front matter
    write_card(tmp_path / "run" / "model", result.model, result, datasets=["train.csv"])
    assert _front_matter((tmp_path / "run" / "model" / "README.md").read_text())["datasets"] == ["train.csv"]


def test_classifier_card(tiny_bert):
    from transformers import AutoTokenizer, BertForSequenceClassification

    from finetuner.models.classifier import TextClassifier

    hf = BertForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    clf = TextClassifier(hf, AutoTokenizer.from_pretrained(tiny_bert), ["no", "yes"], max_length=32)
    card = model_card(clf)
    meta = _front_matter(card)
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-classification"
    assert "- classes (2): no, yes" in card


def test_a_failing_card_never_fails_the_save(tmp_path, caplog):
    class Odd(torch.nn.Module):
        def parameters(self, recurse=True):
            raise RuntimeError("no parameters today")

    with caplog.at_level(logging.WARNING):
        assert write_card(tmp_path, Odd()) is None
    assert "model card: could not write" in caplog.text and not (tmp_path / "README.md").exists()
