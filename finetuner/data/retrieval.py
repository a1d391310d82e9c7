"""Query -> corpus data: `RetrievalData(queries, corpus, qrels)` and the BEIR folder layout.

The BEIR layout (Thakur et al., 2021, "BEIR: A Heterogeneous Benchmark for Zero-shot Evaluation
of Information Retrieval Models"; also MTEB's retrieval sets):

    FOLDER/corpus.jsonl        {"_id": "d1", "title": "...", "text": "..."} per line
    FOLDER/queries.jsonl       {"_id": "q1", "text": "..."} per line
    FOLDER/qrels/{split}.tsv   query-id <TAB> corpus-id <TAB> score, after a header line

A document's text is its title and text joined by a space (BEIR's own encoders do the same).
A split holds the queries its qrels name, as BEIR's loader does. Training reads each query
with its relevant documents (grade >= 1) as positives and its judged non-relevant ones
(grade <= 0) as negatives (`RetrievalData.to_rows`).
"""

from __future__ import annotations

import csv
from collections import Counter
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_files
from .readers import read_jsonl

SPLITS = ("train", "dev", "test")
_SHOWN = 5  # ids named in a message


def _ids_text(ids: list) -> str:
    shown = ", ".join(repr(i) for i in ids[:_SHOWN])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > _SHOWN else "")


def _texts(value: Any, what: str, name: str) -> dict[str, str]:
    """{id: text} from a mapping, or from a list of texts (ids "0", "1", ...)."""
    if isinstance(value, Mapping):
        pairs = [(str(k), v) for k, v in value.items()]
        if len({k for k, _ in pairs}) != len(pairs):
            dup = sorted(k for k, n in Counter(k for k, _ in pairs).items() if n > 1)
            raise ValueError(f"{name}: {len(dup)} duplicate {what} id(s) once turned into strings: {_ids_text(dup)}")
    elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        pairs = [(str(i), v) for i, v in enumerate(value)]
    else:
        raise TypeError(f"{name}: {what} expected a dict {{id: text}} or a list of texts, got {type(value).__name__}")
    bad = [k for k, v in pairs if not isinstance(v, str) or not v.strip()]
    if bad:
        raise ValueError(f"{name}: {len(bad)} {what} text(s) are empty or not strings, ids {_ids_text(bad)}; "
                         "expected non-empty text")
    return dict(pairs)


def _qrels(value: Any, name: str) -> dict[str, dict[str, float]]:
    """{query id: {doc id: grade}} from nested mappings or (query id, doc id[, grade]) rows."""
    out: dict[str, dict[str, float]] = {}
    rows = ((q, d, g) for q, docs in value.items() for d, g in docs.items()) if isinstance(value, Mapping) else (
        (r[0], r[1], r[2] if len(r) > 2 else 1) for r in value)
    for q, d, g in rows:
        if isinstance(g, bool) or not isinstance(g, (int, float, np.integer, np.floating)) or not math.isfinite(g):
            raise ValueError(f"{name}: qrels grade of ({q!r}, {d!r}) is {g!r}; expected a number (1 relevant, "
                             "2 highly relevant, 0 judged non-relevant)")
        out.setdefault(str(q), {})[str(d)] = float(g)
    return out


@dataclass
class RetrievalData:
    """Queries, a corpus and relevance judgments (qrels): query -> corpus data for training
    and for evaluation with trec_eval's metrics (`finetuner.evaluation.evaluate_retrieval`).

    Args:
        queries: {query id: text}, or a list of texts (ids "0", "1", ...).
        corpus: {doc id: text}, or a list of texts.
        qrels: {query id: {doc id: grade}}, or rows (query id, doc id[, grade]) (grade 1 when
            left out). Grade >= `relevance_level` (1) is relevant and is the document's gain
            in nDCG; 0 (or less) is judged non-relevant.
        name: the argument this came from, for messages ("train_data" / "eval_data").

    Raises:
        ValueError: an empty corpus or no query; an empty or non-string text; a qrels id that
            is not among the queries or the corpus (the message counts and names them); a
            grade that is not a number; ids that collide once turned into strings.

    Queries without any qrels are kept: evaluation counts them as 0 and says how many
    (`unjudged_queries`), as trec_eval does for a query it was given no relevant item for.
    """

    queries: Any
    corpus: Any
    qrels: Any
    name: str = field(default="eval_data", compare=False)

    def __post_init__(self) -> None:
        self.queries = _texts(self.queries, "query", self.name)
        self.corpus = _texts(self.corpus, "corpus", self.name)
        self.qrels = _qrels(self.qrels, self.name)
        if not self.corpus:
            raise ValueError(f"{self.name}: the corpus is empty; expected at least one document")
        if not self.queries:
            raise ValueError(f"{self.name}: there are no queries; expected at least one")
        missing_q = [q for q in self.qrels if q not in self.queries]
        if missing_q:
            raise ValueError(f"{self.name}: {len(missing_q)} query id(s) in the qrels are not among the "
                             f"{len(self.queries)} queries: {_ids_text(missing_q)}")
        missing_d = sorted({d for docs in self.qrels.values() for d in docs if d not in self.corpus})
        if missing_d:
            raise ValueError(f"{self.name}: {len(missing_d)} document id(s) in the qrels are not in the corpus "
                             f"of {len(self.corpus)} documents: {_ids_text(missing_d)}")

    # ---- views ---------------------------------------------------------------------
    @property
    def query_ids(self) -> list[str]:
        """Query ids, in the order embeddings of the queries follow."""
        return list(self.queries)

    @property
    def corpus_ids(self) -> list[str]:
        """Document ids, in the order embeddings of the corpus follow."""
        return list(self.corpus)

    def unjudged_queries(self, relevance_level: float = 1) -> list[str]:
        """Ids of the queries with no relevant document (no qrels, or only grades below
        `relevance_level`): every metric scores them 0."""
        return [q for q in self.queries if not any(g >= relevance_level for g in self.qrels.get(q, {}).values())]

    def qrel_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The qrels as positions: (query position int64 [M], corpus position int64 [M],
        grade float32 [M]), positions in `query_ids` / `corpus_ids` order."""
        q_pos = {q: i for i, q in enumerate(self.queries)}
        d_pos = {d: i for i, d in enumerate(self.corpus)}
        rows = [(q_pos[q], d_pos[d], g) for q, docs in self.qrels.items() for d, g in docs.items()]
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
        q, d, g = zip(*rows)
        return np.asarray(q, np.int64), np.asarray(d, np.int64), np.asarray(g, np.float32)

    def to_rows(self, relevance_level: float = 1) -> list[dict]:
        """Training rows {"query", "positives", "negatives"}: per query with a relevant
        document, its documents of grade >= `relevance_level` and those judged non-relevant
        (grade <= 0). Queries without a relevant document are left out."""
        rows = []
        for q, docs in self.qrels.items():
            pos = [self.corpus[d] for d, g in docs.items() if g >= relevance_level]
            if pos:
                neg = [self.corpus[d] for d, g in docs.items() if g <= 0]
                rows.append({"query": self.queries[q], "positives": pos, "negatives": neg})
        return rows

    def __len__(self) -> int:
        return len(self.queries)

    def __repr__(self) -> str:
        n = sum(len(d) for d in self.qrels.values())
        return f"RetrievalData({len(self.queries)} queries, {len(self.corpus)} documents, {n} qrels)"


# ---- the BEIR folder layout --------------------------------------------------------------------
def is_beir_folder(path: Any) -> bool:
    """Whether `path` is a folder with corpus.jsonl, queries.jsonl and a qrels/ folder."""
    if not isinstance(path, (str, os.PathLike)) or (isinstance(path, str) and (len(path) > 4096 or "\n" in path)):
        return False
    p = Path(path)
    return p.is_dir() and (p / "corpus.jsonl").is_file() and (p / "queries.jsonl").is_file() and (p / "qrels").is_dir()


def beir_splits(path: str | os.PathLike) -> list[str]:
    """The splits a BEIR folder has qrels for (the names of qrels/*.tsv), sorted."""
    return sorted(p.stem for p in (Path(path) / "qrels").glob("*.tsv"))


def beir_eval_split(path: str | os.PathLike, name: str = "eval_data") -> str:
    """The split a BEIR folder is evaluated on: "test" when it has one, else "dev".

    Raises:
        ValueError: neither exists (the message lists the splits there are).
    """
    have = beir_splits(path)
    for split in ("test", "dev"):
        if split in have:
            return split
    raise ValueError(f"{name}: the BEIR folder {str(path)!r} has no qrels/test.tsv or qrels/dev.tsv to evaluate on; "
                     f"splits there: {have or 'none'} (pass load_beir(path, split) to pick one)")


def _read_ids(path: Path, name: str, what: str) -> dict[str, str]:
    rows = read_jsonl(path, name)
    out: dict[str, str] = {}
    dup, no_id = [], 0
    for row in rows:
        if "_id" not in row:
            no_id += 1
            continue
        key = str(row["_id"])
        text = " ".join(str(row.get(k) or "") for k in ("title", "text")).strip() if what == "corpus" else str(
            row.get("text") or "").strip()
        if key in out:
            dup.append(key)
        out[key] = text
    if no_id:
        raise ValueError(f"{name}: {no_id} line(s) of {path} have no \"_id\"; expected {{\"_id\": ..., \"text\": ...}}")
    if dup:
        raise ValueError(f"{name}: {path} has {len(dup)} duplicate id(s): {_ids_text(dup)}; expected each id once")
    return out


def _read_qrels(path: Path, name: str) -> list[tuple[str, str, float]]:
    rows, bad = [], []
    with open(path, encoding="utf-8", newline="") as f:
        for number, fields in enumerate(csv.reader(f, delimiter="\t"), 1):
            if not fields or not "".join(fields).strip():
                continue
            if len(fields) < 3:
                bad.append(number)
                continue
            try:
                grade = float(fields[2])
            except ValueError:
                if number == 1:  # the header line: query-id, corpus-id, score
                    continue
                bad.append(number)
                continue
            rows.append((fields[0].strip(), fields[1].strip(), grade))
    if bad:
        raise ValueError(f"{name}: {path}: {len(bad)} line(s) are not 'query-id<TAB>corpus-id<TAB>score' "
                         f"(lines {bad[:_SHOWN]})")
    keys = [(q, d) for q, d, _ in rows]
    if len(set(keys)) != len(keys):
        seen, dup = set(), []
        for k in keys:
            (dup.append(k) if k in seen else seen.add(k))
        raise ValueError(f"{name}: {path} judges {len(dup)} (query, document) pair(s) twice: {_ids_text(dup)}")
    return rows


def load_beir(path: str | os.PathLike, split: str = "test", name: str = "eval_data") -> RetrievalData:
    """A BEIR folder's split as `RetrievalData`: the queries its qrels name, the whole corpus.

    Args:
        path: the folder (corpus.jsonl, queries.jsonl, qrels/{split}.tsv).
        split: "train", "dev", "test" or another qrels file's name.
        name: the argument it came from, for messages.

    Raises:
        ValueError: a missing file or split (the message lists the splits there are); a line
            that is not JSON or has no "_id"; duplicate ids; a malformed qrels line; a qrels id
            missing from the queries or the corpus; an empty corpus.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise ValueError(f"{name}: {str(folder)!r} is not a folder; expected a BEIR folder (corpus.jsonl, "
                         "queries.jsonl, qrels/{split}.tsv)")
    for f in ("corpus.jsonl", "queries.jsonl"):
        if not (folder / f).is_file():
            raise ValueError(f"{name}: {str(folder)!r} has no {f}; expected a BEIR folder (corpus.jsonl, "
                             "queries.jsonl, qrels/{split}.tsv)")
    qrels_file = folder / "qrels" / f"{split}.tsv"
    if not qrels_file.is_file():
        have = beir_splits(folder) if (folder / "qrels").is_dir() else []
        raise ValueError(f"{name}: {str(folder)!r} has no qrels/{split}.tsv; splits there: {have or 'none'}")
    corpus = _read_ids(folder / "corpus.jsonl", name, "corpus")
    queries = _read_ids(folder / "queries.jsonl", name, "query")
    rows = _read_qrels(qrels_file, name)
    missing_q = sorted({q for q, _, _ in rows if q not in queries})
    if missing_q:
        raise ValueError(f"{name}: {len(missing_q)} query id(s) of qrels/{split}.tsv are not in queries.jsonl: "
                         f"{_ids_text(missing_q)}")
    judged = dict.fromkeys(q for q, _, _ in rows)
    return RetrievalData({q: queries[q] for q in judged}, corpus, rows, name=name)


def write_beir(path: str | os.PathLike, queries: Mapping[str, str], corpus: Mapping[str, str],
               qrels: Mapping[str, Any]) -> Path:
    """Write a BEIR folder: corpus.jsonl (empty titles), queries.jsonl and one qrels/{split}.tsv
    per entry of `qrels` ({split: {query id: {doc id: grade}} or rows}). Files are moved into
    place only once all are written. Returns the folder.

    Raises:
        ValueError: the data does not form valid `RetrievalData` for some split.
    """
    splits = {s: RetrievalData(queries, corpus, q, name=f"qrels[{s!r}]") for s, q in qrels.items()}
    folder = Path(path)
    with atomic_files(folder) as tmp:
        first = next(iter(splits.values())) if splits else RetrievalData(queries, corpus, {})
        with open(tmp / "corpus.jsonl", "w", encoding="utf-8") as f:
            for d, text in first.corpus.items():
                f.write(json.dumps({"_id": d, "title": "", "text": text}, ensure_ascii=False) + "\n")
        with open(tmp / "queries.jsonl", "w", encoding="utf-8") as f:
            for q, text in first.queries.items():
                f.write(json.dumps({"_id": q, "text": text}, ensure_ascii=False) + "\n")
        (tmp / "qrels").mkdir()
        for split, data in splits.items():
            with open(tmp / "qrels" / f"{split}.tsv", "w", encoding="utf-8") as f:
                f.write("query-id\tcorpus-id\tscore\n")
                for q, docs in data.qrels.items():
                    for d, g in docs.items():
                        f.write(f"{q}\t{d}\t{int(g) if float(g).is_integer() else g}\n")
    return folder
