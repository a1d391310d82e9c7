"""Every recipe on two real processes (gloo on the CPU), launched by torchrun and by accelerate
launch: each item is trained once per epoch across the processes, 2 processes x B/2 take the
steps of 1 process x B (the same step losses, metrics and weights), and only process 0 writes.
Also: the few-shot (SetFit) strategy, whose head is fitted once; the LLM recipe under FSDP2
(accelerate's state switched to FSDP, since accelerate itself does not shard on the CPU), with
kill-and-resume and the saved adapter; device="auto" joining the processes on a CPU-only machine.

The runs are `tests/scripts/recipe_run.py` (small real models, fp32, dropout off)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from finetuner.engine.distributed import ShardedBatchSampler

SCRIPT = Path(__file__).parent / "scripts" / "recipe_run.py"
BATCH = {"embedding": 16, "text": 16, "classification": 16, "setfit": 16, "llm": 8}  # one process; two get half each
SLOW = pytest.mark.slow


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(recipe: str, out: Path, processes: int, launcher: str = "torchrun", *args) -> list[dict]:
    """Run the recipe on `processes` processes; return each process's record."""
    batch = str(BATCH[recipe] // processes)
    script = [str(SCRIPT), recipe, str(out), "--batch-size", batch, *map(str, args)]
    if processes == 1:
        cmd = [sys.executable, *script]
    elif launcher == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes),
               "--master-addr", "127.0.0.1", "--master-port", str(_port()), *script]
    else:
        # accelerate's MULTI_CPU launcher starts the processes with mpirun (and, without an
        # mpirun hostfile, silently starts ONE process); MULTI_GPU starts them with its torchrun,
        # and the run itself picks the CPU and gloo (device="cpu"): see docs/multiprocess.md
        config = out.parent / f"{out.name}-accelerate.yaml"
        config.write_text("\n".join([
            "compute_environment: LOCAL_MACHINE", "distributed_type: MULTI_GPU", "num_machines: 1",
            f"num_processes: {processes}", "machine_rank: 0", "main_process_ip: 127.0.0.1",
            f"main_process_port: {_port()}", "use_cpu: false", "mixed_precision: 'no'", ""]))
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), *script]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(processes)]


@pytest.fixture(scope="module")
def single(module_tmp):
    """One-process runs with the whole batch, made once per recipe."""
    cache: dict[str, dict] = {}

    def get(recipe: str) -> dict:
        if recipe not in cache:
            cache[recipe] = launch(recipe, module_tmp(f"one-{recipe}"), 1)[0]
        return cache[recipe]

    return get


CASES = [pytest.param("embedding", "torchrun"),
         pytest.param("embedding", "accelerate", marks=SLOW),
         *[pytest.param(r, launcher, marks=SLOW) for r in ("text", "classification", "llm")
           for launcher in ("torchrun", "accelerate")]]


@pytest.mark.parametrize("recipe, launcher", CASES)
def test_two_processes_train_like_one_with_the_doubled_batch(recipe, launcher, single, tmp_path):
    one = single(recipe)
    out = tmp_path / "run"
    ranks = launch(recipe, out, 2, launcher)
    # every item exactly once per epoch, across the processes, and each process about half
    for epoch, seen in enumerate(one["seen"]):
        both = ranks[0]["seen"][epoch] + ranks[1]["seen"][epoch]
        assert sorted(both) == sorted(seen), epoch
        assert len(both) == len(set(both))
        assert abs(len(ranks[0]["seen"][epoch]) - len(ranks[1]["seen"][epoch])) <= len(one["losses"])
    # the same steps: step losses, metrics, weights
    assert len(ranks[0]["losses"]) == len(one["losses"])
    np.testing.assert_allclose(ranks[0]["losses"], one["losses"], rtol=2e-4, atol=2e-5)
    assert ranks[0]["losses"] == ranks[1]["losses"]  # every process logs the global batch's loss
    for key, value in one["metrics_after"].items():
        assert ranks[0]["metrics_after"][key] == pytest.approx(value, rel=2e-3, abs=2e-4), key
        assert ranks[1]["metrics_after"][key] == ranks[0]["metrics_after"][key]
    for k, w in one["weights"].items():
        assert torch.equal(ranks[0]["weights"][k], ranks[1]["weights"][k]), k
        torch.testing.assert_close(ranks[0]["weights"][k], w, rtol=1e-3, atol=2e-4)
    # process 0 alone wrote the run's files, once, and nothing is left half-written
    names = sorted(p.name for p in out.iterdir())
    assert "metrics.json" in names and "rank0.pt" in names and "rank1.pt" in names
    assert not [n for n in names if ".tmp-" in n]
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["metrics_after"] == pytest.approx(ranks[0]["metrics_after"])
    checkpoints = sorted(p.name for p in (out / "checkpoints").iterdir() if not p.name.startswith("best-"))
    assert checkpoints == ["epoch-1", "epoch-2"]
    assert sorted(p.name for p in (out / "checkpoints" / "epoch-2").glob("rng-*.pt")) == ["rng-0.pt", "rng-1.pt"]


@SLOW
def test_setfit_on_two_processes_tunes_like_one_and_fits_the_head_once(single, tmp_path):
    """The few-shot strategy: the contrastive step is the text recipe's data-parallel run, the
    logistic-regression head is fitted on process 0 and set everywhere, process 0 saves."""
    import finetuner

    one = single("setfit")
    out = tmp_path / "run"
    ranks = launch("setfit", out, 2)
    assert len(one["seen"]) == 2  # the contrastive epochs
    for epoch, seen in enumerate(one["seen"]):
        both = ranks[0]["seen"][epoch] + ranks[1]["seen"][epoch]
        assert sorted(both) == sorted(seen) == list(range(48)), epoch  # every text once per epoch
        assert len(ranks[0]["seen"][epoch]) == len(ranks[1]["seen"][epoch]) == 24
    np.testing.assert_allclose(ranks[0]["losses"], one["losses"], rtol=2e-4, atol=2e-5)
    assert ranks[0]["losses"] == ranks[1]["losses"]
    for k, w in one["weights"].items():  # the encoder as trained by one process, the head identical everywhere
        assert torch.equal(ranks[0]["weights"][k], ranks[1]["weights"][k]), k
        torch.testing.assert_close(ranks[0]["weights"][k], w, rtol=1e-3, atol=2e-4)
    for key, value in one["metrics_after"].items():
        assert ranks[0]["metrics_after"][key] == pytest.approx(value, rel=2e-3, abs=2e-4), key
        assert ranks[1]["metrics_after"][key] == ranks[0]["metrics_after"][key]
    assert ranks[1]["metrics_before"] == ranks[0]["metrics_before"]
    # process 0 alone saved the model, once, whole; it loads with the trained head
    names = sorted(p.name for p in out.iterdir())
    assert names == ["metrics.json", "model", "rank0.pt", "rank1.pt"], names
    loaded = finetuner.load(out / "model")
    torch.testing.assert_close(loaded.model.head.weight, ranks[0]["weights"]["model.head.weight"])


@SLOW
def test_fsdp_llm_on_two_cpu_processes_trains_resumes_and_saves_the_adapter(single, tmp_path):
    """The engine's FSDP path on the LLM recipe (LoRA), FSDP2 over gloo. accelerate does not shard
    on the CPU by itself; the run script switches its state to FSDP (`recipe_run.force_fsdp`)."""
    import importlib.util

    from peft import PeftModel

    one = single("llm")
    out = tmp_path / "run"
    ranks = launch("llm", out, 2, "torchrun", "--fsdp", "--save-model")
    for epoch, seen in enumerate(one["seen"]):  # every row once per epoch, disjoint halves
        both = ranks[0]["seen"][epoch] + ranks[1]["seen"][epoch]
        assert sorted(both) == sorted(seen) and len(both) == len(set(both)), epoch
    assert np.isfinite(ranks[0]["losses"]).all()
    np.testing.assert_allclose(ranks[0]["losses"], one["losses"], rtol=2e-4, atol=2e-5)
    assert ranks[0]["metrics_after"] == ranks[1]["metrics_after"]
    assert ranks[0]["metrics_after"]["eval_loss"] == pytest.approx(one["metrics_after"]["eval_loss"], rel=1e-4)
    for k, w in one["weights"].items():  # the model handed back: plain tensors, gathered, the same everywhere
        assert type(ranks[0]["weights"][k]) is torch.Tensor, k
        assert torch.equal(ranks[0]["weights"][k], ranks[1]["weights"][k]), k
        torch.testing.assert_close(ranks[0]["weights"][k], w, rtol=1e-3, atol=2e-5)
    epoch2 = out / "checkpoints" / "epoch-2"
    assert (epoch2 / "fsdp").is_dir() and (epoch2 / "scheduler.pt").is_file()
    # the adapter process 0 saved loads onto the base model with the trained weights
    spec = importlib.util.spec_from_file_location("recipe_run", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    loaded = dict(PeftModel.from_pretrained(script.tiny_llama(), out / "model").named_parameters())
    for k, w in ranks[0]["weights"].items():
        torch.testing.assert_close(loaded[k], w, rtol=0, atol=0)
    # killed after step 5 (checkpoint at step 3) and resumed: the weights of the uninterrupted run
    killed = tmp_path / "killed"
    with pytest.raises(AssertionError):
        launch("llm", killed, 2, "torchrun", "--fsdp", "--save-steps", 3, "--kill-at-step", 5)
    resumed = launch("llm", killed, 2, "torchrun", "--fsdp", "--save-steps", 3, "--resume")
    assert resumed[0]["losses"] == ranks[0]["losses"][3:]
    for k, w in ranks[0]["weights"].items():
        assert torch.equal(resumed[0]["weights"][k], w), k


PROBE = """
import json, os, sys, warnings
from finetuner.engine.trainer import make_accelerator
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    acc = make_accelerator("auto")
with open(os.path.join(sys.argv[1], f"rank{acc.process_index}.json"), "w") as f:
    json.dump({"processes": acc.num_processes, "type": acc.distributed_type.name, "device": acc.device.type,
               "warnings": [str(w.message) for w in caught]}, f)
"""


@pytest.mark.skipif(torch.accelerator.current_accelerator() is not None, reason="a machine without GPUs")
def test_auto_device_joins_the_processes_on_the_cpu_and_an_fsdp_request_warns(tmp_path):
    """device="auto" under torchrun without GPUs: one process group on the CPU (accelerate alone
    would make W unconnected runs); FSDP asked for on the CPU: DDP, and a warning says so."""
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_port()), str(script), str(tmp_path)]
    proc = subprocess.run(cmd, env=dict(_env(), ACCELERATE_USE_FSDP="true"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    for rank in (0, 1):
        seen = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert (seen["processes"], seen["type"], seen["device"]) == (2, "MULTI_CPU", "cpu")
        assert any("FSDP was asked for" in w and "DDP" in w for w in seen["warnings"]), seen["warnings"]


# ---- the sampler alone --------------------------------------------------------------------------
class Uneven:
    """Batches of varied sizes (groups kept whole), as the group samplers make."""

    def __init__(self, sizes):
        self.sizes, self.batch_size = sizes, 4

    def __iter__(self):
        start = 0
        for n in self.sizes:
            yield list(range(start, start + n))
            start += n

    def __len__(self):
        return len(self.sizes)


@pytest.mark.parametrize("world", [2, 3])
def test_sharded_batches_cover_every_item_once_with_equal_steps(world):
    sizes = [7, 1, 4, 12, 3, 2]
    parts = [list(ShardedBatchSampler(Uneven(sizes), world, r)) for r in range(world)]
    assert all(len(p) == len(sizes) for p in parts)  # the same number of steps everywhere
    for i, n in enumerate(sizes):
        sampler = ShardedBatchSampler(Uneven(sizes), world, 0)
        real = sampler.part_sizes(i)
        assert sum(real) == n and max(real) - min(real) <= 1
        items = [x for r in range(world) for x in parts[r][i][: real[r]]]
        assert items == list(range(sum(sizes[:i]), sum(sizes[:i]) + n))  # contiguous, in order
        assert all(len(parts[r][i]) == max(real[r], 1) for r in range(world))  # a dummy item where empty


def test_sampler_scales_the_recipes_batches_and_resumes_mid_epoch():
    from finetuner.data.samplers import GroupBatchSampler

    groups = np.repeat(np.arange(40), 4)
    one = GroupBatchSampler(groups, 32, 4, seed=3)
    two = ShardedBatchSampler(GroupBatchSampler(groups, 16, 4, seed=3), 2, 1)
    for epoch in (0, 1):
        one.set_epoch(epoch)
        two.set_epoch(epoch)
        assert two.global_batches() == [list(b) for b in one]  # global batch = one process x 2
    two.set_epoch(1)
    full = list(two)
    two.set_epoch(1)
    two.skip(3)
    assert list(two) == full[3:]
    assert list(two) == full  # the skip applies to one iteration
