"""The Hierarchical Transformer (thesis 4.6.3, figure 4.3, table 5.2).

    x_t [B, L, K] -> InputEmbedding (per-track embeddings, concat + Linear, learned positions) [B, L, d]
    -> chunks of C steps [B*n, C, d] (n = L / C) -> shared lower encoder (low_depth blocks, width d) + LN
    -> flatten each chunk, Linear(C*d -> D): one summary per chunk               [B, n, D]
    -> learned chunk positions + upper transformer (high_depth blocks, width D) + LN  [B, n, D]
    -> Linear(D -> C*d), split each summary into C vectors + learned in-chunk positions [B*n, C, d]
    -> shared lower decoder (low_depth blocks, width d) + LN -> steps [B, L, d] -> per-track heads

The decoder sees only the summaries (the bottleneck the thesis discusses). Paper preset: C = 32,
d = 256, D = 512, 8 heads, upper 12 blocks, lower 6 + 6 blocks: 56,103,936 parameters for the melody
(thesis: 56,465,664, -0.6%; the thesis does not give the depths).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from schmubert.attributes import Attributes
from schmubert.backbones.layers import (
    BackboneOptions,
    InputEmbedding,
    LearnedPositions,
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
class HierarchicalConfig(BackboneOptions):
    """Options of the Hierarchical Transformer."""

    chunk: int = arg(32, "steps C per chunk summarized into one upper-level vector")
    emb_dim: int = arg(256, "embedding size of each track's tokens before the tracks are concatenated")
    low_width: int = arg(256, "width d of the shared lower-level transformers")
    low_depth: int = arg(6, "blocks of the lower encoder, and again of the lower decoder")
    low_heads: int = arg(8, "attention heads of the lower level")
    width: int = arg(512, "width D of the upper-level transformer")
    depth: int = arg(12, "blocks of the upper-level transformer")
    heads: int = arg(8, "attention heads of the upper level")


PAPER = HierarchicalConfig()
SMALL = HierarchicalConfig(chunk=16, emb_dim=128, low_width=128, low_depth=2, low_heads=4, width=256, depth=4,
                           heads=4, dropout=0.1)
TINY = HierarchicalConfig(chunk=16, emb_dim=32, low_width=32, low_depth=1, low_heads=2, width=64, depth=2,
                          heads=2, dropout=0.0)


@register("hierarchical", HierarchicalConfig, presets={"paper": PAPER, "small": SMALL, "tiny": TINY})
class HierarchicalTransformer(Backbone):
    """Two-level transformer over chunks: ``forward(x_t [B, L, K]) -> K x [B, L, C_k]``."""

    def __init__(self, tracks: Sequence[Track], config: HierarchicalConfig):
        super().__init__(tracks, config)
        c = config
        if c.seq_len % c.chunk:
            raise ValueError(f"seq_len {c.seq_len} is not a multiple of chunk {c.chunk}")
        self.inputs = InputEmbedding(self.tracks, c.emb_dim, c.low_width, c.seq_len, c.dropout, c.attributes,
                                     c.velocity, c.meter)
        self.encoder = Stack(c.low_width, c.low_depth, c.low_heads, c.dropout, c.attn_dropout)
        self.ln_enc = nn.LayerNorm(c.low_width)
        self.summarize = nn.Linear(c.chunk * c.low_width, c.width)
        self.upper_pos = LearnedPositions(c.seq_len // c.chunk, c.width)
        self.upper = Stack(c.width, c.depth, c.heads, c.dropout, c.attn_dropout)
        self.ln_upper = nn.LayerNorm(c.width)
        self.expand = nn.Linear(c.width, c.chunk * c.low_width)
        self.chunk_pos = LearnedPositions(c.chunk, c.low_width)
        self.decoder = Stack(c.low_width, c.low_depth, c.low_heads, c.dropout, c.attn_dropout)
        self.ln_f = nn.LayerNorm(c.low_width)
        self.heads = TrackHeads(self.tracks, c.low_width, velocity=c.velocity)
        init_weights(self)

    def forward(self, x_t: torch.Tensor, attrs: Attributes | None = None,
                velocity: torch.Tensor | None = None) -> Logits:
        C = self.config.chunk
        check_length(x_t.shape[1], self.config.seq_len, C, type(self).__name__)
        B = x_t.shape[0]
        h = rearrange(self.inputs(x_t, attrs, velocity), "b (n c) d -> (b n) c d", c=C)
        h = self.ln_enc(self.encoder(h))  # [B*n, C, d]
        s = self.summarize(rearrange(h, "(b n) c d -> b n (c d)", b=B))  # [B, n, D]
        s = self.ln_upper(self.upper(self.upper_pos(s)))
        h = self.chunk_pos(rearrange(self.expand(s), "b n (c d) -> (b n) c d", c=C))  # [B*n, C, d]
        h = self.ln_f(self.decoder(h))
        return self.heads(rearrange(h, "(b n) c d -> b (n c) d", b=B))
