"""The command line as a new user meets it: `fit` on a Hugging Face model folder with data files
and a YAML / JSON config (flags override it), `evaluate`, `embed`, `export`, `python -m
finetuner`, and errors as one line with exit code 2 (a traceback only with --debug)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import finetuner
from finetuner.cli import app

ROOT = Path(__file__).resolve().parents[1]
TOPICS = {"fruit": ["apples are sweet", "a ripe banana", "pears in autumn", "fresh cherries"],
          "space": ["the moon landing", "a distant galaxy", "rockets to mars", "orbit of jupiter"],
          "code": ["a python function", "compile the program", "a bug in the loop", "unit tests pass"]}


class Doubler(torch.nn.Module):
    """A module of a class outside torch.nn: its pickle is loaded only with --trust-pickle."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x):
        return 2 * self.linear(x)


def run(capsys, *args) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `finetuner ARGS`, in this process."""
    with pytest.raises(SystemExit) as exit_:
        app([str(a) for a in args])
    out, err = capsys.readouterr()
    return exit_.value.code, out, err




@pytest.fixture()
def files(tmp_path) -> dict:
    """pairs.jsonl (text pairs of one topic), classes.csv (text, label), texts.txt."""
    pairs = [{"anchor": a, "positive": b} for texts in TOPICS.values() for a, b in zip(texts[::2], texts[1::2])]
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(p) for p in pairs) + "\n")
    rows = ["text,label"] + [f"{t},{label}" for label, texts in TOPICS.items() for t in texts]
    (tmp_path / "classes.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "texts.txt").write_text("\n".join(t for texts in TOPICS.values() for t in texts) + "\n")
    return {name: tmp_path / name for name in ("pairs.jsonl", "classes.csv", "texts.txt")}


def test_fit_a_hugging_face_folder_from_files_and_a_config(tiny_bert, files, tmp_path, capsys):
    """The issue's failing call: `finetuner fit <HF model folder> --train-data pairs.jsonl`."""
    (tmp_path / "run.yaml").write_text("epochs: 1\nbatch_size: 8\nmax_length: 32\nlearning_rate: 1.0e-4\n"
                                       "verbose: false\nreport: false\n")
    code, out, err = run(capsys, "fit", tiny_bert, "--train-data", files["pairs.jsonl"], "--eval-data",
                         files["pairs.jsonl"], "--config", tmp_path / "run.yaml", "--batch-size", 4,
                         "--set", "seed=7", "--output-dir", tmp_path / "out")
    assert code == 0, err
    settings = json.loads((tmp_path / "out" / "metrics.json").read_text())["settings"]
    assert (settings["batch_size"], settings["epochs"], settings["seed"]) == (4, 1, 7)  # the flag beat the file
    saved = tmp_path / "out" / "model"
    assert json.loads((saved / "finetuner.json").read_text())["kind"] == "sentence-transformers"
    assert "- pairs.jsonl" in (saved / "README.md").read_text()  # the card names the data
    assert f"model: {saved}" in out and '"nDCG@10"' in out


def test_fit_a_classifier_then_evaluate_it(tiny_bert, files, tmp_path, capsys):
    (tmp_path / "run.json").write_text(json.dumps({"model": tiny_bert, "task": "classification", "epochs": 1,
                                                   "batch_size": 4, "verbose": False}))
    code, _, err = run(capsys, "fit", "--config", tmp_path / "run.json", "--train-data", files["classes.csv"],
                       "--output-dir", tmp_path / "out")
    assert code == 0, err
    saved = tmp_path / "out" / "model"
    assert finetuner.load(saved).classes == ["code", "fruit", "space"]
    code, out, err = run(capsys, "evaluate", saved, "--data", files["classes.csv"], "--json")
    assert code == 0, err
    metrics = json.loads(out)
    assert 0 <= metrics["accuracy"] <= 1 and "eval_loss" in metrics
    code, _, err = run(capsys, "embed", saved, "--data", files["texts.txt"], "--out", tmp_path / "e.npy")
    assert code == 2 and err.startswith("error: ") and "text classifier" in err


def test_evaluate_and_embed_a_text_model(tiny_bert, files, tmp_path, capsys):
    code, out, err = run(capsys, "evaluate", tiny_bert, "--data", files["pairs.jsonl"], "--k", "1,5",
                         "--out", tmp_path / "m.json")
    assert code == 0, err
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert {"nDCG@1", "nDCG@5", "mAP@5", "num_queries"} <= set(metrics) and "nDCG@5" in out  # the table
    code, out, err = run(capsys, "embed", tiny_bert, "--data", files["texts.txt"], "--out", tmp_path / "e.npy")
    assert code == 0, err
    embeddings = np.load(tmp_path / "e.npy")
    texts = files["texts.txt"].read_text().split("\n")[:-1]
    from finetuner.models.text import TextEncoder

    reference = finetuner.embed(TextEncoder.from_pretrained(tiny_bert), texts)
    assert embeddings.shape == (12, 32) and embeddings.dtype == np.float32
    assert np.abs(embeddings - reference).max() < 1e-5


def test_export_a_saved_module(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    finetuner.save(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)), tmp_path / "m")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32))
    code, out, err = run(capsys, "export", tmp_path / "m", tmp_path / "onnx_out", "--data", tmp_path / "x.npy",
                         "--quantize", "int8")
    assert code == 0, err
    assert f"onnx: {tmp_path / 'onnx_out' / 'onnx' / 'model_qint8.onnx'}" in out and "outputs: embedding" in out
    code, _, err = run(capsys, "export", tmp_path / "m", tmp_path / "other")
    assert code == 2 and "example: a torch module needs an example batch" in err


def test_trust_pickle_is_needed_for_a_foreign_class(tmp_path, capsys):
    finetuner.save(Doubler(), tmp_path / "m")
    np.save(tmp_path / "x.npy", np.ones((2, 4), np.float32))
    code, _, err = run(capsys, "embed", tmp_path / "m", "--data", tmp_path / "x.npy", "--out", tmp_path / "e.npy")
    assert code == 2 and "trust-pickle" in err and "Traceback" not in err
    code, _, err = run(capsys, "embed", tmp_path / "m", "--data", tmp_path / "x.npy", "--out", tmp_path / "e.npy",
                       "--trust-pickle")
    assert code == 0, err
    assert np.load(tmp_path / "e.npy").shape == (2, 3)


def test_errors_are_one_clean_line_with_exit_code_2(tiny_bert, files, tmp_path, capsys):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"anchor": "a", "positive": "b"}\n{"anchor": nul}\n')
    code, _, err = run(capsys, "fit", tiny_bert, "--train-data", broken)
    assert code == 2 and err.startswith(f"error: train_data: {broken}, line 2: not valid JSON")
    assert err.count("\n") == 1 and "Traceback" not in err
    (tmp_path / "typo.yaml").write_text("epochz: 3\n")
    code, _, err = run(capsys, "fit", tiny_bert, "--train-data", files["pairs.jsonl"], "--config",
                       tmp_path / "typo.yaml")
    assert code == 2 and "unknown fit argument(s) ['epochz'] for the text recipe" in err
    (tmp_path / "bad.yaml").write_text("epochs: 1\nloss: [unclosed\n")
    code, _, err = run(capsys, "fit", tiny_bert, "--train-data", files["pairs.jsonl"], "--config", tmp_path / "bad.yaml")
    assert code == 2 and f"{tmp_path / 'bad.yaml'}, line 3: not valid YAML" in err
    code, _, err = run(capsys, "fit", tiny_bert)
    assert code == 2 and "--train-data" in err
    code, _, err = run(capsys, "fit", tiny_bert, "--train-data", "no_such_file.csv")
    assert code == 2 and "not a file, a folder or a toydata name" in err
    with pytest.raises(ValueError, match="line 2: not valid JSON"):  # --debug: the traceback, anywhere on the line
        app(["fit", tiny_bert, "--train-data", str(broken), "--debug"])


def test_python_m_finetuner(tmp_path):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"a": "x", "b": "y", "score": 1}\n{"a": nul}\n')
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "finetuner", "--help"], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    assert done.returncode == 0 and all(c in done.stdout for c in ("fit", "evaluate", "embed", "export"))
    done = subprocess.run([sys.executable, "-m", "finetuner", "fit", "some-org/some-model", "--train-data",
                           str(broken)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"error: train_data: {broken}, line 2: not valid JSON" in done.stderr


def test_fit_and_evaluate_a_beir_folder(tiny_bert, tmp_path, capsys):
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    docs = [(f"d{i}", t) for i, t in enumerate(t for texts in TOPICS.values() for t in texts)]
    (beir / "corpus.jsonl").write_text("\n".join(json.dumps({"_id": d, "text": t}) for d, t in docs))
    (beir / "queries.jsonl").write_text("\n".join(json.dumps({"_id": f"q{i}", "text": f"about {topic}"})
                                                  for i, topic in enumerate(TOPICS)))
    qrels = ["query-id\tcorpus-id\tscore"] + [f"q{i // 4}\td{i}\t1" for i in range(12)]
    (beir / "qrels" / "train.tsv").write_text("\n".join(qrels) + "\n")
    (beir / "qrels" / "test.tsv").write_text("\n".join(qrels) + "\n")
    code, _, err = run(capsys, "fit", tiny_bert, "--train-data", beir, "--eval-data", beir, "--epochs", 1,
                       "--batch-size", 8, "--set", "verbose=false", "--set", "report=false",
                       "--output-dir", tmp_path / "out")
    assert code == 0, err
    code, out, err = run(capsys, "evaluate", tmp_path / "out" / "model", "--data", beir, "--json")
    assert code == 0, err
    assert json.loads(out)["num_queries"] == 3
