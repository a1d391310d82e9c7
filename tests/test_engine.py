"""The engine with real processes: resume after a crash, and two-process data parallel."""

import os
import socket
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_end_with_identical_weights(tmp_path, data_dir):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), str(SCRIPT), str(tmp_path), "2"]
    proc = subprocess.run(cmd, env=_env(data_dir), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = torch.load(tmp_path / "final-rank0.pt"), torch.load(tmp_path / "final-rank1.pt")
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    torch.manual_seed(0)
    init = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 64), torch.nn.ReLU(), torch.nn.Linear(64, 16))
    assert not torch.equal(init.state_dict()["1.weight"], r0["1.weight"])  # it did train
    h = torch.load(tmp_path / "history-rank0.pt")
    assert len(h) == 2 and h[-1]["mAP@10"] > 0
