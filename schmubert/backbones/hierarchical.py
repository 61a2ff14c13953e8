"""Placeholder: the hierarchical backbone (being written); it reuses the baseline Transformer for now."""

from __future__ import annotations

from schmubert.backbones.registry import register
from schmubert.backbones.transformer import PAPER, SMALL, TINY, Transformer, TransformerConfig


@register("hierarchical", TransformerConfig, presets={"paper": PAPER, "small": SMALL, "tiny": TINY})
class HierarchicalPlaceholder(Transformer):
    pass
