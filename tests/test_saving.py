"""Saving never destroys what it did not write, survives a kill at every step, and loading runs
nobody's code unless told to trust the folder."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import threading

import numpy as np
import pytest
import torch

import finetuner
import finetuner.io as fio
from finetuner.io import atomic_dir, clean_leftovers


def mlp(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


class Custom(torch.nn.Module):
    """A class outside torch.nn: its pickle names tests.test_saving.Custom."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.lin(x)


class Payload:
    """Unpickling this touches a marker file: what a crafted model.pt could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


X = torch.randn(5, 4)


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    with torch.no_grad():
        return torch.equal(a(X), b(X))


# ---- save refuses what it did not write -----------------------------------------------------------
def test_save_refuses_a_users_file_and_folder(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    with pytest.raises(FileExistsError, match="notes.txt.*is a file.*overwrite=True"):
        finetuner.save(mlp(), notes)
    assert notes.read_text() == "my notes"
    data = tmp_path / "mydata"
    data.mkdir()
    (data / "thesis.txt").write_text("chapter 1")
    with pytest.raises(FileExistsError, match=r"not a finetuner model \(it holds \['thesis.txt'\]\)"):
        finetuner.save(mlp(), data)
    assert (data / "thesis.txt").read_text() == "chapter 1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mydata", "notes.txt"]  # nothing moved aside
    # an empty folder, a previous model and overwrite=True are fine
    (tmp_path / "empty").mkdir()
    finetuner.save(mlp(), tmp_path / "empty")
    finetuner.save(mlp(1), tmp_path / "empty")
    assert _same(finetuner.load(tmp_path / "empty"), mlp(1))
    finetuner.save(mlp(), notes, overwrite=True)
    assert _same(finetuner.load(notes), mlp())


def test_fit_refuses_an_output_dir_whose_model_folder_is_not_a_model(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="model"):
        finetuner.fit(torch.nn.Linear(4, 2), (torch.randn(20, 4).numpy(), np.array([0, 1] * 10)), epochs=1,
                      verbose=False, output_dir=tmp_path)
    assert (tmp_path / "model" / "keep.txt").read_text() == "x"


def test_every_file_and_folder_is_fsynced(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    path = finetuner.save(mlp(), tmp_path / "m")
    names = {pathlib.Path(p).name for p in synced}
    assert {"model.safetensors", "model.pt", "finetuner.json"} <= names
    assert str(tmp_path) in synced  # the parent, after the rename
    assert any(pathlib.Path(p).name.startswith(".m.tmp-") for p in synced)  # the new folder itself
    assert path.is_dir()


def test_leftovers_of_killed_saves_are_removed_by_the_next_save(tmp_path):
    finetuner.save(mlp(), tmp_path / "m")
    dead = tmp_path / ".m.tmp-999999999-abc"  # no such process
    dead.mkdir()
    mine = tmp_path / f".m.tmp-{os.getpid()}-xyz"  # this process, but no thread writes it
    mine.mkdir()
    finetuner.save(mlp(1), tmp_path / "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


@pytest.mark.parametrize("swap", [True, False])  # False: the two-rename path of platforms without a swap
def test_saves_from_threads_at_once_leave_one_whole_model(tmp_path, monkeypatch, swap):
    if not swap:
        monkeypatch.setattr(fio, "_EXCHANGE", None)
    path, errors = tmp_path / "m", []
    models = [mlp(s) for s in range(4)]  # built here: torch.manual_seed in threads at once would race

    def work(seed):
        try:
            for _ in range(3):
                finetuner.save(models[seed], path)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    loaded = finetuner.load(path)
    assert any(_same(loaded, mlp(s)) for s in range(4))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def _steps(monkeypatch, counter, kill_at):
    """Count (and SIGKILL this process at) every durable step of a save: fsync, rename, swap,
    removal of the old folder."""

    def wrap(fn):
        def step(*args, **kwargs):
            counter.append(fn)
            if len(counter) == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return fn(*args, **kwargs)
        return step

    monkeypatch.setattr(os, "fsync", wrap(os.fsync))
    monkeypatch.setattr(os, "rename", wrap(os.rename))
    monkeypatch.setattr(os, "replace", wrap(os.replace))
    monkeypatch.setattr(shutil, "rmtree", wrap(shutil.rmtree))
    if fio._EXCHANGE is not None:
        monkeypatch.setattr(fio, "_EXCHANGE", wrap(fio._EXCHANGE))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_kill_at_any_step_of_a_save_leaves_the_old_or_the_new_model(tmp_path, monkeypatch):
    old, new = mlp(0), mlp(1)
    counted = []
    finetuner.save(old, tmp_path / "probe")
    with monkeypatch.context() as m:
        _steps(m, counted, kill_at=0)
        finetuner.save(new, tmp_path / "probe")
    steps = len(counted)  # the steps of one save over an existing model
    assert steps >= 6  # fsync x 3 files + the folder, the swap, fsync of the parent, removal of the old
    outcomes = []
    for k in range(1, steps + 1):
        folder = tmp_path / f"k{k}"
        folder.mkdir()
        finetuner.save(old, folder / "m")
        pid = os.fork()
        if pid == 0:  # the child: count steps from here, die at step k
            try:
                counter = []
                _steps(monkeypatch, counter, kill_at=k)
                finetuner.save(new, folder / "m")
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, k
        loaded = finetuner.load(folder / "m")  # whole, whichever it is
        outcomes.append("new" if _same(loaded, new) else "old" if _same(loaded, old) else "broken")
        finetuner.save(new, folder / "m")  # the next save cleans what the kill left
        assert sorted(p.name for p in folder.iterdir()) == ["m"], k
    assert "broken" not in outcomes and outcomes[0] == "old" and outcomes[-1] == "new", outcomes


def test_a_failing_save_leaves_the_previous_model(tmp_path, monkeypatch):
    path = finetuner.save(mlp(), tmp_path / "m")
    import finetuner.models.saving as saving

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(saving, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        finetuner.save(mlp(1), path)
    assert _same(finetuner.load(path), mlp())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_atomic_dir_replaces_a_folder_in_one_swap(tmp_path):
    target = tmp_path / "d"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    with atomic_dir(target) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    assert clean_leftovers(target) == []


# ---- load runs nobody's code ----------------------------------------------------------------------
def _crafted(folder: pathlib.Path, marker: pathlib.Path) -> pathlib.Path:
    folder.mkdir()
    torch.save(Payload(marker), folder / "model.pt")
    (folder / "finetuner.json").write_text(json.dumps({"format_version": 1, "framework": "torch", "kind": "module",
                                                       "class": "torch.nn.Linear", "pickled": True}))
    return folder


def test_a_crafted_model_pt_runs_no_code_unless_trusted(tmp_path):
    marker = tmp_path / "pwned"
    folder = _crafted(tmp_path / "evil", marker)
    with pytest.raises(ValueError, match=r"pickled module naming \[.*'pathlib.Path'.*trust_pickle=True"):
        finetuner.load(folder)
    assert not marker.exists()
    with pytest.raises(Exception):
        finetuner.load(folder, model=torch.nn.Linear(4, 3))  # weights only: no safetensors here, no code run
    assert not marker.exists()
    with pytest.raises(AttributeError):  # trusted: the pickle runs (and returns no module)
        finetuner.load(folder, trust_pickle=True)
    assert marker.exists()  # the gate is what kept it from running above


def test_torch_nn_models_load_safely_and_other_classes_need_trust_or_a_model(tmp_path):
    finetuner.save(mlp(), tmp_path / "plain")
    assert _same(finetuner.load(tmp_path / "plain"), mlp())  # torch.nn layers only: weights-only unpickler
    torch.manual_seed(3)
    custom = Custom()
    finetuner.save(custom, tmp_path / "custom")
    with pytest.raises(ValueError, match="test_saving.Custom"):
        finetuner.load(tmp_path / "custom")
    assert _same(finetuner.load(tmp_path / "custom", model=Custom()), custom)
    assert _same(finetuner.load(tmp_path / "custom", trust_pickle=True), custom)


def test_crafted_checkpoint_files_run_no_code(tmp_path):
    from finetuner.engine.checkpoint import _read

    marker = tmp_path / "pwned"
    torch.save({"state": Payload(marker)}, tmp_path / "optimizer.pt")
    with pytest.raises(Exception, match="Weights only load failed"):
        _read(tmp_path / "optimizer.pt")
    assert not marker.exists()


def test_crafted_paddle_files_run_no_code(tmp_path):
    paddle = pytest.importorskip("paddle")
    import pickle

    from finetuner.models.backends.paddle import load_params

    marker = tmp_path / "pwned"
    layer = paddle.nn.Linear(4, 3)
    finetuner.save(layer, tmp_path / "p")
    (tmp_path / "p" / "model.pkl").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(ValueError, match="trust_pickle=True"):
        finetuner.load(tmp_path / "p")
    other = paddle.nn.Linear(4, 3)
    finetuner.load(tmp_path / "p", model=other)  # the weights alone load, with no code
    assert (other.weight.numpy() == layer.weight.numpy()).all()
    (tmp_path / "p" / "model.pdparams").write_bytes(pickle.dumps({"weight": Payload(marker)}))
    with pytest.raises(ValueError, match="not a plain Paddle state dict"):
        load_params(tmp_path / "p" / "model.pdparams")
    assert not marker.exists()
