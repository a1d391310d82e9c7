"""Time and peak memory of retrieval evaluation on a large random set.

    python benchmarks/topk_memory.py [--n 100000] [--dim 128] [--classes 10] [--k 10] [--corpus]

Default: N random embeddings with N random class labels, searched against themselves (each
query excluded from its own results; `evaluate_embeddings`). `--corpus`: N queries against a
corpus of N documents with 3 graded qrels per query (`evaluate_retrieval`, the BEIR setting).
The full [N, N] distance matrix would need 4 * N^2 bytes (40 GB at N = 100k); the target is a
peak RSS under 2 GB.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from finetuner.evaluation import evaluate_embeddings, evaluate_retrieval  # noqa: E402


def peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux (bytes on macOS)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="queries = index items")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--distance", default="cosine")
    parser.add_argument("--query-chunk", type=int, default=1024)
    parser.add_argument("--index-chunk", type=int, default=16384)
    parser.add_argument("--corpus", action="store_true", help="queries -> a corpus with qrels instead")
    args = parser.parse_args()

    gen = torch.Generator().manual_seed(0)
    embeddings = torch.randn(args.n, args.dim, generator=gen)
    labels = torch.randint(0, args.classes, (args.n,), generator=gen)
    before = peak_rss_mb()

    start = time.perf_counter()
    if args.corpus:
        corpus = torch.randn(args.n, args.dim, generator=gen)
        docs = torch.randint(0, args.n, (args.n, 3), generator=gen).tolist()
        qrels = [{d: g for d, g in zip(row, (2, 1, 1))} for row in docs]
        metrics = evaluate_retrieval(embeddings, corpus, qrels, ks=(1, args.k), distance=args.distance,
                                     query_chunk=args.query_chunk, index_chunk=args.index_chunk)
    else:
        metrics = evaluate_embeddings(
            embeddings, labels, ks=(1, args.k), distance=args.distance,
            query_chunk=args.query_chunk, index_chunk=args.index_chunk,
        )
    elapsed = time.perf_counter() - start

    print(f"N={args.n} x {args.n}, dim={args.dim}, classes={args.classes}, k={args.k}, "
          f"distance={args.distance}, threads={torch.get_num_threads()}")
    print(f"full distance matrix would be: {4 * args.n**2 / 2**30:.1f} GiB")
    print(f"wall time: {elapsed:.1f} s")
    print(f"peak RSS: {peak_rss_mb():.0f} MiB (after loading data: {before:.0f} MiB)")
    # random embeddings: precision@k should be close to 1 / classes
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()})


if __name__ == "__main__":
    main()
