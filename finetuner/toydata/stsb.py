"""STS Benchmark (STS-B): English sentence pairs with a human similarity score from 0 to 5.

Data: STS Benchmark (Cer et al., 2017, "SemEval-2017 Task 1"), the SemEval 2012-2017 English
selection: 5749 train / 1500 dev / 1379 test pairs. Scores under CC BY-SA 4.0; the sentences
carry their sources' licences (see `stsb/LICENSE.txt` and `stsb/SOURCE.txt`).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from finetuner.data.labeled import LabeledData
from finetuner.toydata.files import fetch

SUBDIR = "stsb"
BASE_URL = ("https://raw.githubusercontent.com/zhangzhenhu/Semantic-Texual-Similarity-Toolkits/"
            "c55a72f51bd15a8bd75114247c06984b432050f9/data/stsbenchmark/")
URL_ENV = "FINETUNER_STSB_URL"
MD5 = {
    "sts-train.csv": "e0a88b5f5df2159a499edb6183bd6722",
    "sts-dev.csv": "d8861ba32277033ed6b1315883894f78",
    "sts-test.csv": "f8c608a4dcfeff4ea11912ea72aacd6e",
}
SPLITS = ("train", "dev", "test")


@functools.lru_cache(maxsize=6)
def _read(path: str) -> tuple:
    """(sentence1, sentence2, score 0-5) per line. The files are tab-separated with no quoting
    (sentences hold quote characters), so lines are split on tabs, not read as CSV."""
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            fields = line.rstrip("\n").split("\t")
            if len(fields) < 7:
                raise ValueError(f"{path}:{n}: expected at least 7 tab-separated fields, got {len(fields)}")
            out.append((fields[5].strip(), fields[6].strip(), float(fields[4])))
    return tuple(out)


def load_stsb_rows(
    split: str = "train",
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
) -> list[tuple[str, str, float]]:
    """The pairs of one STS-B split as (sentence1, sentence2, score), score in [0, 5], in file order.

    Args:
        split: "train" (5749 pairs), "dev" (1500) or "test" (1379).
        data_dir: folder holding `stsb/sts-<split>.csv` (else env `FINETUNER_DATA`, else the
            cache, else a download from `BASE_URL`, md5-checked).
        download: allow the download.

    Raises:
        ValueError: an unknown split or a malformed line.
        FileNotFoundError / OSError: see `finetuner.toydata.files.fetch`.
    """
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
    name = f"sts-{split}.csv"
    base = (os.environ.get(URL_ENV) or BASE_URL).rstrip("/") + "/"
    path = fetch(SUBDIR, name, base + name, md5=MD5[name], data_dir=data_dir, download=download)
    return list(_read(str(Path(path).resolve())))


def generate_stsb(
    num_total: int | None = None,
    is_testset: bool = False,
    *,
    split: str | None = None,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    min_score: float = 0.0,
    scores: bool = True,
) -> LabeledData:
    """STS-B sentence pairs as pair-format `LabeledData`.

    Source: STS Benchmark (Cer et al., 2017), see this module's docstring.

    Args:
        num_total: take at most this many pairs (the first ones, after filtering by `min_score`).
        is_testset: the test split instead of the training split (ignored when `split` is given).
        split: "train", "dev" or "test"; overrides `is_testset`.
        data_dir, download: see `load_stsb_rows`.
        min_score: keep only pairs whose gold score (0-5 scale) is >= this.
        scores: True: each pair keeps its score, rescaled to [0, 1] (score / 5), for scored-pair
            losses (CoSENT) and Spearman evaluation; False: every kept pair is an (anchor,
            positive) pair with score 1, for in-batch-negative losses (use with `min_score`,
            e.g. 3.5).

    Returns:
        `LabeledData`, format "pair": items [s1, s2, s1, s2, ...] (strings), groups = pair
        index, relevance 1 for s1 and score / 5 (or 1) for s2.

    Raises:
        ValueError: num_total < 1, min_score outside [0, 5], an unknown split, or no pair left.
        FileNotFoundError / OSError: the file is in no data folder or cache and cannot be downloaded.
    """
    if num_total is not None and (isinstance(num_total, bool) or not isinstance(num_total, (int, np.integer)) or num_total < 1):
        raise ValueError(f"num_total: expected an int >= 1 or None, got {num_total!r}")
    if not 0.0 <= float(min_score) <= 5.0:
        raise ValueError(f"min_score: expected a score in [0, 5], got {min_score!r}")
    split = split or ("test" if is_testset else "train")
    rows = [r for r in load_stsb_rows(split, data_dir=data_dir, download=download) if r[2] >= min_score]
    rows = rows[:num_total] if num_total is not None else rows
    if not rows:
        raise ValueError(f"min_score: no {split} pair has a score >= {min_score}")
    items = [s for a, b, _ in rows for s in (a, b)]
    relevance = np.ones(len(items), dtype=np.float32)
    if scores:
        relevance[1::2] = np.asarray([s / 5.0 for _, _, s in rows], dtype=np.float32)
    return LabeledData(items, np.repeat(np.arange(len(rows)), 2), relevance, "pair")
