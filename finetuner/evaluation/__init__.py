"""Retrieval evaluation in bounded memory: exact chunked top-k search, ranking metrics, and
`evaluate_embeddings` tying them to the labels' relation rule."""

from finetuner.evaluation.metrics import ranking_metrics
from finetuner.evaluation.retrieval import evaluate_embeddings
from finetuner.evaluation.topk import chunked_topk

__all__ = ["chunked_topk", "ranking_metrics", "evaluate_embeddings"]
