"""The engine with real processes: a crash or a SIGKILL, then resume, ends as an uninterrupted run
(every recipe, mid-epoch from step checkpoints, callback state included). Two-process runs:
tests/test_distributed.py."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).parent / "scripts" / "fit_small.py"


def _env(data_dir):
    env = dict(os.environ, FINETUNER_DATA=str(data_dir), OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    return env


def _run(args, data_dir, check=True):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], env=_env(data_dir),
                          capture_output=True, text=True, check=check, timeout=600)


def test_kill_mid_fit_then_resume_matches_uninterrupted(tmp_path, data_dir):
    full, crashed = tmp_path / "full", tmp_path / "crashed"
    _run([full, 3], data_dir)
    proc = _run([crashed, 3, "--kill-at-epoch", 3], data_dir, check=False)
    assert proc.returncode == 17, proc.stderr[-2000:]
    ckpts = sorted(p.name for p in (crashed / "checkpoints").iterdir())
    assert ckpts == ["epoch-1", "epoch-2"]  # the crash left only complete checkpoints
    assert not (crashed / "final-rank0.pt").exists()
    _run([crashed, 3, "--resume"], data_dir)
    a, b = torch.load(full / "final-rank0.pt"), torch.load(crashed / "final-rank0.pt")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    history = torch.load(crashed / "history-rank0.pt")
    assert [h["epoch"] for h in history] == [1, 2, 3]  # epochs 1-2 restored from the checkpoint


# ---- SIGKILL mid-epoch, resume from a step checkpoint: the weights of an uninterrupted run -----------
RUN = Path(__file__).parent / "scripts" / "recipe_run.py"
# (batch, save_steps, kill after step): one process; the kill falls inside epoch 2, after a step checkpoint
KILLS = {"embedding": (16, 4, 21), "text": (16, 2, 11), "classification": (16, 2, 11), "llm": (8, 2, 11)}


def _recipe(recipe, out, *args, check=True):
    batch, save, _ = KILLS[recipe]
    env = _env(Path("."))
    proc = subprocess.run([sys.executable, str(RUN), recipe, str(out), "--batch-size", str(batch), "--save-steps",
                           str(save), *map(str, args)], env=env, capture_output=True, text=True, timeout=900)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize("recipe", ["embedding", *[pytest.param(r, marks=pytest.mark.slow)
                                                   for r in ("text", "classification", "llm")]])
def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_weights(recipe, tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    _recipe(recipe, full)
    _, save, kill = KILLS[recipe]
    proc = _recipe(recipe, killed, "--kill-at-step", kill, check=False)
    assert proc.returncode == -9, proc.stderr[-3000:]  # SIGKILL: no clean-up ran
    newest = max((p for p in (killed / "checkpoints").iterdir() if p.name.startswith("step-")),
                 key=lambda p: int(p.name.split("-")[1]))
    info = json.loads((newest / "checkpoint.json").read_text())
    assert info["global_step"] == kill - kill % save and not info["end_of_epoch"] and info["batches_done"] > 0
    _recipe(recipe, killed, "--resume")
    a, b = (torch.load(d / "rank0.pt", weights_only=False) for d in (full, killed))
    for k, w in a["weights"].items():
        torch.testing.assert_close(b["weights"][k], w, rtol=0, atol=1e-6)
    assert [h["epoch"] for h in b["history"]] == [1, 2]
    for ha, hb in zip(a["history"], b["history"]):
        for key in ("train_loss", "eval_loss"):
            assert hb[key] == pytest.approx(ha[key], rel=1e-6), key
    assert b["metrics_after"] == pytest.approx(a["metrics_after"], rel=1e-6)


def test_resume_restores_early_stopping_counters(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    _recipe("embedding", full, "--epochs", 5, "--early-stopping")
    assert [h["epoch"] for h in torch.load(full / "rank0.pt", weights_only=False)["history"]] == [1, 2, 3]
    proc = _recipe("embedding", killed, "--epochs", 5, "--early-stopping", "--kill-at-step", 37, check=False)
    assert proc.returncode == -9
    _recipe("embedding", killed, "--epochs", 5, "--early-stopping", "--resume")
    # a forgotten counter (0 epochs without improvement) would have trained epochs 4 and 5
    assert [h["epoch"] for h in torch.load(killed / "rank0.pt", weights_only=False)["history"]] == [1, 2, 3]


def test_resume_restores_the_best_weights_from_disk(tmp_path):
    # the best epoch (the highest train loss: epoch 1) lies before the kill in epoch 2; a resumed
    # run that forgot it would hand back epoch 2's weights
    full, killed = tmp_path / "full", tmp_path / "killed"
    _recipe("embedding", full, "--restore-first-epoch")
    a = torch.load(full / "rank0.pt", weights_only=False)
    assert [h["epoch"] for h in a["history"]] == [1, 2]
    assert a["history"][0]["train_loss"] > a["history"][1]["train_loss"]
    assert (full / "checkpoints" / "best-epoch-1.safetensors").is_file()
    proc = _recipe("embedding", killed, "--restore-first-epoch", "--kill-at-step", 21, check=False)
    assert proc.returncode == -9
    _recipe("embedding", killed, "--restore-first-epoch", "--resume")
    b = torch.load(killed / "rank0.pt", weights_only=False)
    for k, w in a["weights"].items():
        torch.testing.assert_close(b["weights"][k], w, rtol=0, atol=1e-6)
    assert b["metrics_after"] == pytest.approx(a["metrics_after"], rel=1e-6)


def test_checkpoint_files_hold_only_tensors_and_numbers(tmp_path):
    _recipe("embedding", tmp_path / "run", "--epochs", 1, "--no-eval")
    folder = tmp_path / "run" / "checkpoints" / "epoch-1"
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["checkpoint.json", "model.safetensors", "optimizer.pt", "rng-0.pt", "scheduler.pt",
                     "trainer_state.json"]
    for name in ("optimizer.pt", "rng-0.pt", "scheduler.pt"):
        torch.load(folder / name, weights_only=True)  # no pickled object: the safe loader reads them
