"""Retrieval evaluation in bounded memory with trec_eval's metric definitions: exact chunked
top-k search, ranking metrics, `evaluate_embeddings` (labeled items against each other, through
the labels' relation rule) and `evaluate_retrieval` (queries against a corpus with qrels)."""

from finetuner.evaluation.corpus import evaluate_retrieval
from finetuner.evaluation.metrics import ranking_metrics
from finetuner.evaluation.retrieval import evaluate_embeddings
from finetuner.evaluation.topk import chunked_topk

__all__ = ["chunked_topk", "ranking_metrics", "evaluate_embeddings", "evaluate_retrieval"]
