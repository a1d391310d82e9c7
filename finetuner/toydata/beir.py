"""Real query -> corpus sets in the BEIR layout (corpus.jsonl, queries.jsonl, qrels/{split}.tsv),
for `fit(model, folder)`, `evaluate(model, folder)` and `finetuner.data.retrieval.load_beir`.

- `covid_qa_beir`: Covid-QA question -> answer (the FAQ answers are the corpus; short questions,
  answers of about 100 words): 138 train and 34 test questions, 172 answers.
- `lima_beir`: LIMA instruction -> response (responses of about 260 words, longer than
  MiniLM's 256 tokens): 929 train and 100 test instructions, 1029 responses.
- `stsb_beir`: STS-B sentence1 -> sentence2 for pairs scored >= 3.5 (short, symmetric):
  train and test (the dev file) splits, each sentence2 of its file in the corpus.

Each is written once into `folder` (default the cache, `finetuner.io.cache_root()/beir/NAME`)
from the original files read by the loaders of `finetuner.toydata` (see their sources and
licences), and the folder is returned.
"""

from __future__ import annotations

import os
from pathlib import Path

from finetuner.data.retrieval import write_beir
from finetuner.io import cache_root


def _target(name: str, folder: str | os.PathLike | None) -> Path:
    return Path(folder) if folder is not None else cache_root() / "beir" / name


def _build(pairs_by_split: dict[str, list[tuple[str, str]]], prefix: tuple[str, str]) -> tuple[dict, dict, dict]:
    """(queries, corpus, qrels per split) from (query, document) text pairs; equal texts share an id."""
    queries: dict[str, str] = {}
    corpus: dict[str, str] = {}
    q_id: dict[str, str] = {}
    d_id: dict[str, str] = {}
    qrels: dict[str, dict[str, dict[str, int]]] = {}
    for split, pairs in pairs_by_split.items():
        for q, d in pairs:
            qi = q_id.setdefault(q, f"{prefix[0]}{len(q_id)}")
            di = d_id.setdefault(d, f"{prefix[1]}{len(d_id)}")
            queries[qi], corpus[di] = q, d
            qrels.setdefault(split, {}).setdefault(qi, {})[di] = 1
    return queries, corpus, qrels


def covid_qa_beir(folder: str | os.PathLike | None = None, *, data_dir: str | os.PathLike | None = None,
                  download: bool = True, test_size: float = 0.2, seed: int = 0) -> Path:
    """Covid-QA (English) as a BEIR folder: split "train" and "test" by question, as
    `finetuner.toydata.qa.load_qa_rows` splits them; the corpus holds every answer.

    Args:
        folder: where to write it (default the cache); data_dir, download, test_size, seed: see
            `load_qa_rows`.

    Returns:
        the folder.

    Raises:
        FileNotFoundError / OSError / ValueError: see `load_qa_rows`.
    """
    from finetuner.toydata.qa import load_qa_rows

    rows = {split: load_qa_rows(split == "test", data_dir=data_dir, download=download, test_size=test_size, seed=seed)
            for split in ("train", "test")}
    pairs = {s: [(r["question"], r["answer"]) for r in rs] for s, rs in rows.items()}
    return write_beir(_target(f"covid_qa-{test_size}-{seed}", folder), *_build(pairs, ("q", "a")))


def lima_beir(folder: str | os.PathLike | None = None, *, data_dir: str | os.PathLike | None = None,
              download: bool = True, test_size: int = 100) -> Path:
    """LIMA as a BEIR folder: instruction -> response, split as `generate_lima` splits it
    (`test_size` held-out conversations); the corpus holds every response.

    Returns:
        the folder.

    Raises:
        FileNotFoundError / OSError / ValueError: see `finetuner.toydata.generate_lima`.
    """
    from finetuner.toydata.instructions import generate_lima

    pairs = {}
    for split in ("train", "test"):
        ds = generate_lima(is_testset=split == "test", test_size=test_size, data_dir=data_dir, download=download)
        pairs[split] = [(" ".join(i.split()), o.strip()) for i, o in zip(ds["instruction"], ds["output"])]
    return write_beir(_target(f"lima-{test_size}", folder), *_build(pairs, ("q", "r")))


def stsb_beir(folder: str | os.PathLike | None = None, *, data_dir: str | os.PathLike | None = None,
              download: bool = True, min_score: float = 3.5) -> Path:
    """STS-B pairs scored >= `min_score` (of 5) as a BEIR folder: sentence1 -> sentence2;
    "train" from sts-train, "test" from sts-dev (the corpus holds the sentence2 of both).

    Returns:
        the folder.
    """
    from finetuner.toydata.stsb import load_stsb_rows

    pairs = {split: [(a, b) for a, b, s in load_stsb_rows(part, data_dir=data_dir, download=download)
                     if s >= min_score] for split, part in (("train", "train"), ("test", "dev"))}
    return write_beir(_target(f"stsb-{min_score}", folder), *_build(pairs, ("s", "t")))
