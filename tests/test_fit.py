"""fit end to end on real Fashion-MNIST, its errors on bad input, save/load and the CLI."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import finetuner
from finetuner.demos.fashion import mlp
from finetuner.engine.callbacks import BestModelCheckpoint, Callback, EarlyStopping
from finetuner.toydata import generate_fashion


@pytest.fixture(scope="module")
def fashion(data_dir):
    return generate_fashion(num_total=6000, data_dir=data_dir), generate_fashion(num_total=1000, is_testset=True, data_dir=data_dir)


def test_fit_improves_retrieval_on_real_fashion(fashion, tmp_path):
    train, test = fashion
    torch.manual_seed(0)
    result = finetuner.fit(mlp(), train, eval_data=test, epochs=3, output_dir=tmp_path, verbose=False)
    before, after = result.metrics_before, result.metrics_after
    assert after["nDCG@10"] > before["nDCG@10"] + 0.05
    assert after["precision@10"] > before["precision@10"] + 0.05
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert all(np.isfinite(h["train_loss"]) and "eval_loss" in h for h in result.history)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["metrics_after"]["mAP@10"] == pytest.approx(after["mAP@10"])
    assert (tmp_path / "metrics.csv").read_text().count("\n") == 4
    assert any((tmp_path / "tensorboard").iterdir())
    # the saved model gives the same embeddings
    loaded = finetuner.load(tmp_path / "model")
    x = test.items[:32]
    np.testing.assert_array_equal(finetuner.embed(loaded, x), finetuner.embed(result.model, x))


@pytest.mark.parametrize("loss", ["SiameseLoss", "TripletLoss", "InfoNCELoss"])
@pytest.mark.parametrize("fmt", ["class", "session"])
def test_every_loss_with_every_format(loss, fmt, data_dir):
    if fmt == "session":
        train = generate_fashion(num_total=300, format="session", num_pos=3, num_neg=3, data_dir=data_dir)
    else:
        train = generate_fashion(num_total=1000, data_dir=data_dir)
    result = finetuner.fit(mlp(), train, epochs=1, batch_size=64, loss=loss, verbose=False)
    assert np.isfinite(result.history[0]["train_loss"])


def test_pair_and_triplet_formats_train():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(5, 8)).astype(np.float32)
    pairs = [(centers[c] + 0.1 * rng.normal(size=8).astype(np.float32), centers[c] + 0.1 * rng.normal(size=8).astype(np.float32), 1.0)
             for c in rng.integers(0, 5, 100)]
    triplets = [(centers[c], centers[c] * 1.1, centers[(c + 1) % 5]) for c in rng.integers(0, 5, 50)]
    for data in (pairs, triplets):
        for loss in ("SiameseLoss", "TripletLoss", "InfoNCELoss"):
            r = finetuner.fit(torch.nn.Linear(8, 4), data, epochs=1, batch_size=16, loss=loss, verbose=False)
            assert np.isfinite(r.history[0]["train_loss"])


def test_bad_input_errors_come_before_training(fashion):
    train, test = fashion
    x = train.items[:20]
    with pytest.raises(ValueError, match="train_data: the data is empty"):
        finetuner.fit(mlp(), [])
    with pytest.raises(ValueError, match="same class"):
        finetuner.fit(mlp(), (x, np.zeros(20, dtype=int)))
    with pytest.raises(ValueError, match="mixed formats"):
        finetuner.fit(mlp(), [(x[0], 0), (x[1], x[2], 1.0)])
    with pytest.raises(ValueError, match="no label"):
        finetuner.fit(mlp(), [(x[0], 0), (x[1], None)])
    with pytest.raises(ValueError, match="2-D output"):
        finetuner.fit(torch.nn.Identity(), train)
    with pytest.raises(ValueError, match="one row per input item"):
        finetuner.fit(torch.nn.Sequential(torch.nn.Flatten(0), torch.nn.Unflatten(0, (-1, 784 * 2))), train)
    singletons = (x[:10], np.arange(10))
    with pytest.raises(ValueError, match="single item"):
        finetuner.fit(mlp(), singletons)
    with pytest.raises(ValueError, match="eval_data: no query has a relevant item"):
        finetuner.fit(mlp(), train, eval_data=singletons, epochs=1)
    with pytest.raises(TypeError, match="unknown argument"):
        finetuner.fit(mlp(), train, epoch=3)
    with pytest.raises(ValueError, match="learning_rate"):
        finetuner.fit(mlp(), train, learning_rate=-1)
    with pytest.raises(ValueError, match="precision"):
        finetuner.fit(mlp(), train, precision="int3")


def test_nan_loss_is_reported(fashion):
    train, _ = fashion
    bad = train.subset(np.arange(512))
    bad.items = bad.items.copy()
    bad.items[300] = np.nan  # one broken image, met mid-epoch
    with pytest.raises(FloatingPointError, match="loss is nan"):
        finetuner.fit(mlp(), bad, epochs=1, batch_size=64, verbose=False)


def test_callbacks_early_stopping_and_best_model(fashion, tmp_path):
    train, test = fashion

    class Record(Callback):
        def __init__(self):
            self.epochs = []

        def on_epoch_end(self, trainer, logs):
            self.epochs.append(logs["epoch"])

    rec = Record()
    best = BestModelCheckpoint(monitor="mAP@10")
    stop = EarlyStopping(monitor="train_loss", patience=1, min_delta=10.0)  # never improves by 10: stops after 2
    result = finetuner.fit(mlp(), train.subset(np.arange(2000)), eval_data=test, epochs=5, callbacks=[rec, best, stop],
                           output_dir=tmp_path, verbose=False)
    assert rec.epochs == [1, 2]
    assert (tmp_path / "best" / "finetuner.json").exists()
    best_epoch = max(result.history, key=lambda h: h["mAP@10"])
    assert result.metrics_after["mAP@10"] == pytest.approx(best_epoch["mAP@10"], abs=1e-6)


def test_save_is_atomic_and_round_trips(tmp_path, monkeypatch):
    model = mlp()
    path = tmp_path / "m"
    finetuner.save(model, path)
    x = np.random.rand(4, 28, 28).astype(np.float32)
    ref = finetuner.embed(model, x)
    np.testing.assert_array_equal(finetuner.embed(finetuner.load(path), x), ref)
    np.testing.assert_array_equal(finetuner.embed(finetuner.load(path, model=mlp()), x), ref)
    # a crash mid-save leaves the previous model intact and no temporary folder behind
    import finetuner.models.saving as fio

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(fio, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        finetuner.save(mlp(), path)
    np.testing.assert_array_equal(finetuner.embed(finetuner.load(path), x), ref)
    assert [p.name for p in tmp_path.iterdir()] == ["m"]
    with pytest.raises(FileNotFoundError, match="not a model saved by finetuner.save"):
        finetuner.load(tmp_path)


def test_cli_fit_writes_model_and_metrics(tmp_path, data_dir):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "finetuner.cli", "fit", "finetuner.demos.fashion:mlp", "--train-data", "fashion",
           "--eval-data", "fashion", "--epochs", "1", "--output-dir", str(out), "--data-dir", str(data_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["metrics_after"]["mAP@10"] > metrics["metrics_before"]["mAP@10"]
    assert (out / "model" / "model.safetensors").exists()


def test_bf16_and_gradient_accumulation(fashion, tmp_path):
    train, test = fashion
    torch.manual_seed(0)
    result = finetuner.fit(mlp(), train.subset(np.arange(3000)), eval_data=test, epochs=2, precision="bf16",
                           gradient_accumulation_steps=2, max_grad_norm=1.0, verbose=False,
                           output_dir=tmp_path / "run")
    assert result.metrics_after["mAP@10"] > result.metrics_before["mAP@10"]
    # 3000 items / 256 per batch = 12 batches per epoch -> 6 optimizer steps per epoch
    assert len(result.history) == 2
    # the returned model no longer computes under autocast: it embeds exactly like the saved one
    emb = finetuner.embed(result.model, test.subset(np.arange(200)))
    assert emb.dtype == np.float32
    np.testing.assert_array_equal(emb, finetuner.embed(finetuner.load(tmp_path / "run" / "model"),
                                                       test.subset(np.arange(200))))


def test_cli_demo_fashion_quick(tmp_path, data_dir):
    cmd = [sys.executable, "-m", "finetuner.cli", "demo", "fashion", "--quick", "--output-dir", str(tmp_path),
           "--data-dir", str(data_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mAP@10" in proc.stdout and (tmp_path / "fashion" / "model" / "finetuner.json").exists()


def test_cli_demo_refuses_quantize_outside_the_llm_demo():
    from typer.testing import CliRunner

    from finetuner.cli import app

    result = CliRunner().invoke(app, ["demo", "fashion", "--quantize", "4bit"])
    assert result.exit_code != 0 and "--quantize" in result.output
    result = CliRunner().invoke(app, ["demo", "llm", "--quantize", "2bit"])
    assert result.exit_code != 0 and "--quantize" in result.output


# ---- group ids are int64 end to end ---------------------------------------------------------------
BIG = [2**24, 2**24 + 1, 2**53 + 1, 2**62 + 1, 2**62 + 2, -(2**62) - 3]


def test_group_ids_beyond_float32_stay_exact_through_labels_and_relation():
    from finetuner.data.dataset import Collate, LabeledDataset
    from finetuner.data.labeled import LabeledData
    from finetuner.data.relation import pack_labels, relation_matrix, split_labels

    ids = torch.tensor(BIG, dtype=torch.int64)
    rel = torch.tensor([1.0, 0.3, 1.0, 0.123456789, 1.0, 0.0])
    groups, relevance = split_labels(pack_labels(ids, rel))
    assert torch.equal(groups, ids) and torch.equal(relevance, rel)
    data = LabeledData(np.zeros((6, 2), np.float32), np.array(BIG), rel.numpy(), "session")
    _, labels = Collate()(LabeledDataset(data).__getitems__(range(6)))
    assert labels.dtype == torch.int64 and torch.equal(split_labels(labels)[0], ids)
    # 2^24 and 2^24 + 1 (equal as float32) are different sessions: negatives of each other
    m = relation_matrix(labels)
    assert m[0, 1] == 0 and m[3, 4] == 0 and m[4, 3] == 0 and m[0, 0] == 1
    assert torch.equal(relation_matrix(labels), relation_matrix(pack_labels(torch.arange(6), rel)))
    legacy = torch.stack([torch.arange(6).float(), rel], 1)  # float [N, 2] labels still read
    assert torch.equal(relation_matrix(legacy), m)


def test_fit_and_evaluate_with_hashed_session_ids_match_small_ids(data_dir):
    small = generate_fashion(num_total=240, format="session", num_pos=3, num_neg=3, data_dir=data_dir)
    hashed = small.subset(np.arange(len(small)))
    hashed.groups = (2**62 + 7 * small.groups).astype(np.int64)  # same order, ids far beyond 2^53
    runs = []
    for data in (small, hashed):
        torch.manual_seed(0)
        runs.append(finetuner.fit(mlp(), data, eval_data=data, epochs=1, batch_size=64, loss="InfoNCELoss",
                                  verbose=False, device="cpu"))
    assert runs[0].history[0]["train_loss"] == pytest.approx(runs[1].history[0]["train_loss"], rel=1e-6)
    assert runs[0].metrics_after == pytest.approx(runs[1].metrics_after, rel=1e-6)
