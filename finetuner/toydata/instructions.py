"""Instruction-tuning data: LIMA and the Self-Instruct seed tasks, as `datasets.Dataset`s in
alpaca format (instruction / input / output / history), for `finetuner.llm.FineTuner`.

Data:
- LIMA (Zhou et al. 2023, "LIMA: Less Is More for Alignment"), 1029 conversations in
  LLaMA-Factory's alpaca-style conversion; licence CC BY-NC-SA (or stricter, per source).
- Self-Instruct seed tasks (Wang et al. 2023) as shipped with Stanford Alpaca: 175 tasks;
  data licence CC BY-NC 4.0.

Neither set has an official test split: a fixed, seeded part of each is held out (`test_size`),
so train and test never overlap and stay the same between runs.
"""

from __future__ import annotations

import json
import os

import numpy as np

from finetuner.toydata.files import fetch

LIMA_URL = ("https://raw.githubusercontent.com/hiyouga/LLaMA-Factory/"
            "b9cdff41bbb6084380606cde6c875c994b6b1868/data/lima.json")
LIMA_MD5 = "b95e34161d219a17ef815abdc1601751"
SELFINSTRUCT_URL = ("https://raw.githubusercontent.com/tatsu-lab/stanford_alpaca/"
                    "761dc5bfbdeeffa89b8bff5d038781a4055f796a/seed_tasks.jsonl")
SELFINSTRUCT_MD5 = "ad94c38ebba765b1d509934dbe3b45a4"
_SPLIT_SEED = 0


def _split(rows: list[dict], is_testset: bool, test_size: int, num_total: int | None, name: str) -> list[dict]:
    """The seeded held-out part (first `test_size` of a fixed permutation) or the rest."""
    if isinstance(test_size, bool) or not isinstance(test_size, int) or not 0 < test_size < len(rows):
        raise ValueError(f"test_size: expected an int in [1, {len(rows) - 1}] for {name}, got {test_size!r}")
    if num_total is not None and (isinstance(num_total, bool) or not isinstance(num_total, int) or num_total < 1):
        raise ValueError(f"num_total: expected an int >= 1 or None, got {num_total!r}")
    order = np.random.default_rng(_SPLIT_SEED).permutation(len(rows))
    picked = order[:test_size] if is_testset else order[test_size:]
    return [rows[i] for i in picked[:num_total]]


def _dataset(rows: list[dict]):
    import datasets

    return datasets.Dataset.from_list(rows)


def generate_lima(
    num_total: int | None = None,
    is_testset: bool = False,
    *,
    test_size: int = 100,
    single_turn: bool = False,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
):
    """LIMA conversations as a `datasets.Dataset` in alpaca format.

    Source: LIMA (Zhou et al. 2023), LLaMA-Factory's `data/lima.json` at commit b9cdff41
    (md5 checked on download): 1029 conversations, 1000 single-turn and 29 multi-turn (earlier
    turns in `history`). Read from `data_dir/instruction_lima/lima.json` (or
    `$FINETUNER_DATA/...`), else the cache, else downloaded (see `finetuner.toydata.files`).

    Args:
        num_total: at most this many conversations (of the chosen split, in a fixed shuffled
            order); None for all.
        is_testset: the held-out split (`test_size` conversations) instead of the training rest.
        test_size: size of the held-out split (same seeded permutation every time).
        single_turn: drop the 29 multi-turn conversations.
        data_dir: folder holding `instruction_lima/lima.json`.
        download: allow a download when the file is in neither the data folder nor the cache.

    Returns:
        `datasets.Dataset` with columns instruction (str), input (str, always ""), output (str),
        history (list of [user, assistant] string pairs).

    Raises:
        ValueError: num_total / test_size out of range.
        FileNotFoundError: the file is missing and `download` is False.
        OSError (`DownloadError`): the download failed or did not match the md5.
    """
    path = fetch("instruction_lima", "lima.json", LIMA_URL, md5=LIMA_MD5, data_dir=data_dir, download=download)
    with open(path, encoding="utf-8") as f:
        rows = [{"instruction": r["instruction"], "input": r.get("input") or "", "output": r["output"],
                 "history": [[str(u), str(a)] for u, a in (r.get("history") or [])]} for r in json.load(f)]
    if single_turn:
        rows = [r for r in rows if not r["history"]]
    return _dataset(_split(rows, is_testset, test_size, num_total, "LIMA"))


def generate_selfinstruct(
    num_total: int | None = None,
    is_testset: bool = False,
    *,
    test_size: int = 25,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
):
    """The 175 Self-Instruct seed tasks (one instance each) as a `datasets.Dataset` in alpaca format.

    Source: Stanford Alpaca's `seed_tasks.jsonl` (Wang et al. 2023, "Self-Instruct"), commit
    761dc5bf (md5 checked on download); data licence CC BY-NC 4.0. Read from
    `data_dir/instruction_selfinstruct_seed/seed_tasks.jsonl`, else the cache, else downloaded.

    Args:
        num_total, is_testset, test_size, data_dir, download: as in `generate_lima`
            (`test_size` defaults to 25 of the 175 tasks).

    Returns:
        `datasets.Dataset` with columns instruction, input, output (str) and history (empty lists).

    Raises:
        ValueError, FileNotFoundError, OSError: as in `generate_lima`.
    """
    path = fetch("instruction_selfinstruct_seed", "seed_tasks.jsonl", SELFINSTRUCT_URL, md5=SELFINSTRUCT_MD5,
                 data_dir=data_dir, download=download)
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                task = json.loads(line)
                for inst in task["instances"]:
                    rows.append({"instruction": task["instruction"], "input": inst.get("input") or "",
                                 "output": inst["output"], "history": []})
    return _dataset(_split(rows, is_testset, test_size, num_total, "Self-Instruct"))
