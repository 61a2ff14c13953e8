"""Evaluation: framewise self-similarity, music statistics, held-out likelihood (spec section 5)."""

from schmubert.evaluation.context import context_curve, format_context
from schmubert.evaluation.likelihood import (
    LikelihoodResult,
    bar_region,
    elbo,
    infill_nll,
)
from schmubert.evaluation.pieces import PieceSet, load_pieces
from schmubert.evaluation.selfsim import (
    consistency_variance,
    evaluate_overlaps,
    overlap_area,
    overlaps,
    selfsim,
)
from schmubert.evaluation.stats import (
    compare_sets,
    compare_statistics,
    groove_consistency,
    piece_statistics,
    scale_consistency,
    set_statistics,
)

__all__ = [
    "LikelihoodResult", "PieceSet", "bar_region", "compare_sets", "compare_statistics", "consistency_variance",
    "context_curve", "format_context",
    "elbo", "evaluate_overlaps", "groove_consistency", "infill_nll", "load_pieces", "overlap_area", "overlaps",
    "piece_statistics", "scale_consistency", "selfsim", "set_statistics",
]
