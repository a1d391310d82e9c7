"""Covid-QA: COVID-19 FAQ questions with their answer and a wrong answer, as `LabeledData`.

Data: `multilingual.csv` of the Kaggle COVID-QA collection by xhlulu (questions and answers
scraped from the WHO and CDC FAQ pages; columns question, answer, url, language, source,
section, wrong_answer), the same question / answer / wrong_answer schema as Jina Finetuner's
`generate_qa`. Its licence is not stated by the hosting repository (see
`covid_qa/SOURCE.txt`); the FAQ texts come from public-health websites.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from finetuner.data.labeled import LabeledData
from finetuner.toydata.files import fetch

SUBDIR = "covid_qa"
FILENAME = "multilingual.csv"
URL = ("https://raw.githubusercontent.com/alizahidraja/Semantic-Search-AI-Hackathon/"
       "05eb89fafa3a7034e9fd28e7fe5ca5c9ad0fce79/data/multilingual.csv")
URL_ENV = "FINETUNER_COVID_QA_URL"
MD5 = "1ea43768dae67718b8796e13f356d6f6"
LANGUAGES = ("english", "chinese", "spanish", "arabic", "french", "korean", "vietnamese", "russian")
FORMATS = ("session", "pair", "class")


@functools.lru_cache(maxsize=2)
def _read(path: str) -> tuple:
    """Rows (question, answer, wrong_answer, language) of the CSV, whitespace collapsed
    (the scraped texts hold non-breaking spaces and line breaks)."""
    import pandas as pd

    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = {"question", "answer", "wrong_answer", "language"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: expected columns question, answer, wrong_answer, language; missing {sorted(missing)}")
    clean = lambda s: " ".join(str(s).split())  # noqa: E731
    return tuple((clean(q), clean(a), clean(w), str(lang).strip().lower())
                 for q, a, w, lang in zip(frame.question, frame.answer, frame.wrong_answer, frame.language))


def load_qa_rows(
    is_testset: bool = False,
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    language: str | None = "english",
    test_size: float = 0.2,
    seed: int = 0,
) -> list[dict]:
    """The Covid-QA rows of one split: dicts with "question", "answer", "wrong_answer".

    The split is by question: rows are shuffled with `seed` and the first `round(test_size * n)`
    distinct questions form the test set, so no question is in both splits (the same seed
    always gives the same split). Rows with an empty question or answer are dropped.

    Args:
        is_testset: the test split instead of the training split.
        data_dir: folder holding `covid_qa/multilingual.csv` (else env `FINETUNER_DATA`, else
            the cache, else a download from `URL`, md5-checked).
        download: allow the download.
        language: one of `LANGUAGES` (default "english": 172 questions), or None for all 888.
        test_size: fraction of the questions in the test split, in (0, 1).
        seed: seed of the split.

    Raises:
        ValueError: an unknown language or test_size outside (0, 1).
        FileNotFoundError / OSError: see `finetuner.toydata.files.fetch`.
    """
    if language is not None and language not in LANGUAGES:
        raise ValueError(f"language: expected one of {LANGUAGES} or None, got {language!r}")
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size: expected a number in (0, 1), got {test_size!r}")
    path = fetch(SUBDIR, FILENAME, os.environ.get(URL_ENV) or URL, md5=MD5, data_dir=data_dir, download=download)
    rows = [r for r in _read(str(Path(path).resolve())) if r[0] and r[1] and (language is None or r[3] == language)]
    questions = sorted({r[0] for r in rows})
    order = np.random.default_rng(seed).permutation(len(questions))
    n_test = max(1, round(test_size * len(questions)))
    test = {questions[i] for i in order[:n_test]}
    return [{"question": q, "answer": a, "wrong_answer": w} for q, a, w, _ in rows if (q in test) == is_testset]


def generate_qa(
    num_total: int | None = None,
    is_testset: bool = False,
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    format: str = "session",
    num_neg: int = 1,
    language: str | None = "english",
    test_size: float = 0.2,
    seed: int = 0,
) -> LabeledData:
    """Covid-QA questions and answers as labeled text data (train or test split).

    Source: the COVID-QA FAQ collection (WHO and CDC FAQ pages) of xhlulu's Kaggle set, file
    `multilingual.csv` (see this module's docstring and `covid_qa/SOURCE.txt`). 172 English
    questions, each with its answer and a wrong answer (another question's answer). The
    train/test split is by question (`load_qa_rows`): no question is in both.

    Args:
        num_total: take at most this many questions of the split (None: all).
        is_testset: the test split (20% of the questions by default) instead of the training split.
        data_dir, download, language, test_size, seed: see `load_qa_rows`.
        format:
            - "session" (default): per question a session [question (relevance 1), its answer
              (+1), its wrong answer (-1), then `num_neg - 1` other answers of the split (-1)];
            - "pair": (question, answer) pairs (score 1): other pairs of a batch are its negatives;
            - "class": the question and its answer share a class (one class per question).
        num_neg: session format: negatives per question (>= 0): the wrong answer first, then
            random other answers of the same split (never the question's own answer).

    Returns:
        `LabeledData` whose items are strings: session format N = n * (2 + num_neg) (groups =
        question index, relevance 1, 1, 0, ...); pair and class format N = 2n (question then answer).

    Raises:
        ValueError: num_total < 1, num_neg < 0, an unknown format (and see `load_qa_rows`).
        FileNotFoundError / OSError: the file is in no data folder or cache and cannot be downloaded.
    """
    if num_total is not None and (isinstance(num_total, bool) or not isinstance(num_total, (int, np.integer)) or num_total < 1):
        raise ValueError(f"num_total: expected an int >= 1 or None, got {num_total!r}")
    if isinstance(num_neg, bool) or not isinstance(num_neg, (int, np.integer)) or num_neg < 0:
        raise ValueError(f"num_neg: expected an int >= 0, got {num_neg!r}")
    if format not in FORMATS:
        raise ValueError(f"format: expected one of {FORMATS}, got {format!r}")
    rows = load_qa_rows(is_testset, data_dir=data_dir, download=download, language=language,
                        test_size=test_size, seed=seed)
    rows = rows[:num_total] if num_total is not None else rows
    if format == "pair":
        items = [t for r in rows for t in (r["question"], r["answer"])]
        return LabeledData(items, np.repeat(np.arange(len(rows)), 2), np.ones(len(items), np.float32), "pair")
    if format == "class":
        items = [t for r in rows for t in (r["question"], r["answer"])]
        return LabeledData(items, np.repeat(np.arange(len(rows)), 2), None, "class")

    rng = np.random.default_rng(seed + 1)
    answers = sorted({r["answer"] for r in rows})
    items, groups, relevance = [], [], []
    for g, r in enumerate(rows):
        members = [(r["question"], 1.0), (r["answer"], 1.0)]
        if num_neg:
            members.append((r["wrong_answer"], 0.0))
            others = [a for a in answers if a not in (r["answer"], r["wrong_answer"])]
            k = min(num_neg - 1, len(others))
            members += [(others[i], 0.0) for i in rng.choice(len(others), size=k, replace=False)] if k else []
        for text, rel in members:
            items.append(text)
            groups.append(g)
            relevance.append(rel)
    return LabeledData(items, np.asarray(groups), np.asarray(relevance, np.float32), "session")
