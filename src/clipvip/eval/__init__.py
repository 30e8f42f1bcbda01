"""Evaluation: retrieval metrics at any size, DSL / QB-Norm, embedding + retrieval evaluation, zero-shot tasks and
the domain-gap (NMI) analysis."""

from clipvip.eval.embed import (
    EmbeddingCache,
    data_fingerprint,
    embed_texts,
    embed_videos,
    embedding_valid_mask,
    model_fingerprint,
)
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
from clipvip.eval.nmi import NMIResult, domain_gap_nmi, model_feature_fn, plot_projection, read_texts
from clipvip.eval.postprocess import dsl, qb_norm
from clipvip.eval.retrieval import compute_embeddings, evaluate_retrieval, score_retrieval
from clipvip.eval.zeroshot import (
    ENSEMBLE_TEMPLATES,
    PAPER_TEMPLATES,
    class_text_embeddings,
    label_to_text,
    multiple_choice,
    multiple_choice_accuracy,
    read_labels,
    zero_shot_classify,
)

__all__ = [
    "ENSEMBLE_TEMPLATES",
    "NMIResult",
    "PAPER_TEMPLATES",
    "class_text_embeddings",
    "domain_gap_nmi",
    "label_to_text",
    "model_feature_fn",
    "multiple_choice",
    "multiple_choice_accuracy",
    "plot_projection",
    "read_labels",
    "read_texts",
    "zero_shot_classify",
    "EmbeddingCache",
    "compute_embeddings",
    "data_fingerprint",
    "embed_texts",
    "embed_videos",
    "embedding_valid_mask",
    "evaluate_retrieval",
    "model_fingerprint",
    "score_retrieval",
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
