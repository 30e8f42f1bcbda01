"""Evaluation: retrieval metrics at any size, DSL / QB-Norm, embedding + retrieval evaluation, zero-shot tasks and
the domain-gap (NMI) analysis."""

from clipvip.eval.metrics import (
    METRIC_KEYS,
    Positives,
    bidirectional_metrics,
    bidirectional_ranks,
    invert_mapping,
    metrics_from_ranks,
    recall_curve,
    retrieval_metrics,
    retrieval_metrics_multi,
    retrieval_ranks,
    retrieval_ranks_from_embeddings,
)
from clipvip.eval.postprocess import dsl, qb_norm

__all__ = [
    "METRIC_KEYS",
    "Positives",
    "bidirectional_metrics",
    "bidirectional_ranks",
    "dsl",
    "invert_mapping",
    "metrics_from_ranks",
    "qb_norm",
    "recall_curve",
    "retrieval_metrics",
    "retrieval_metrics_multi",
    "retrieval_ranks",
    "retrieval_ranks_from_embeddings",
]
