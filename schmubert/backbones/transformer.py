"""The baseline Transformer (thesis 4.6.1, after Bond-Taylor et al. 2022).

    x_t [B, L, K] -> per-track embeddings [B, L, K, E] -> concat + Linear -> [B, L, D] (+ learned positions)
    -> depth x pre-LN Block [B, L, D] -> LayerNorm -> one Linear head per track -> K x [B, L, C_k]

Paper preset: D = 512, 24 blocks, 8 heads, dropout 0.2, E = 512.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from schmubert.attributes import Attributes
from schmubert.backbones.layers import (
    BackboneOptions,
    InputEmbedding,
    Logits,
    Stack,
    TrackHeads,
    check_length,
    init_weights,
)
from schmubert.backbones.registry import Backbone, register
from schmubert.config import arg
from schmubert.tokens import Track


@dataclass
class TransformerConfig(BackboneOptions):
    """Options of the baseline Transformer."""

    depth: int = arg(24, "number of transformer blocks")


PAPER = TransformerConfig()
SMALL = TransformerConfig(emb_dim=256, width=256, depth=4, heads=4, dropout=0.1)
TINY = TransformerConfig(emb_dim=64, width=64, depth=2, heads=2, dropout=0.0)


@register("transformer", TransformerConfig, presets={"paper": PAPER, "small": SMALL, "tiny": TINY})
class Transformer(Backbone):
    """Baseline Transformer over every step: ``forward(x_t [B, L, K]) -> K x [B, L, C_k]``."""

    def __init__(self, tracks: Sequence[Track], config: TransformerConfig):
        super().__init__(tracks, config)
        c = config
        self.inputs = InputEmbedding(self.tracks, c.emb_dim, c.width, c.seq_len, c.dropout, c.attributes, c.velocity,
                                     c.meter)
        self.blocks = Stack(c.width, c.depth, c.heads, c.dropout, c.attn_dropout)
        self.ln_f = nn.LayerNorm(c.width)
        self.heads = TrackHeads(self.tracks, c.width, velocity=c.velocity)
        init_weights(self)

    def forward(self, x_t: torch.Tensor, attrs: Attributes | None = None,
                velocity: torch.Tensor | None = None) -> Logits:
        check_length(x_t.shape[1], self.config.seq_len, 1, type(self).__name__)
        h = self.blocks(self.inputs(x_t, attrs, velocity))  # [B, L, D]
        return self.heads(self.ln_f(h))
