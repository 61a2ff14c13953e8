"""The U-Transformer (thesis 4.6.4, figure 4.4, table 5.3): a U-Net whose stages are transformer blocks.

    x_t [B, L, K] -> InputEmbedding (per-track embeddings, concat + Linear, learned positions) [B, L, D]
    down, for each of the `levels` levels (length L, L/2, ..., L/2^(levels-1)):
        h = blocks_per_level x Block(h); keep h as that level's skip;
        h = Linear(2D -> D) over pairs of neighbours                 [B, n, D] -> [B, n/2, D]
    (bottom: L / 2^levels positions: 16 for L = 1024 and 6 levels, each covering 4 bars)
    up, mirrored:
        h = repeat each vector twice, Linear(D -> D), + the skip of that level   [B, n, D] -> [B, 2n, D]
        h = blocks_per_level x Block(h)
    -> LayerNorm -> one Linear head per track -> K x [B, L, C_k]

Paper preset: D = 512, 8 heads, 6 levels, 2 blocks per level on each side (4 x 6 = 24 blocks):
81,262,592 parameters for the melody (thesis: 80,478,208, +1.0%; the original's scaling layers differ).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from einops import rearrange, repeat
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
class UTransformerConfig(BackboneOptions):
    """Options of the U-Transformer."""

    seq_len: int = arg(1024, "longest input length L (learned positions); L must be a multiple of 2^levels")
    width: int = arg(512, "transformer width D (the same at every level)")
    levels: int = arg(6, "number of levels; each halves the length on the way down")
    blocks_per_level: int = arg(2, "transformer blocks per level on each side of the U")


PAPER = UTransformerConfig()
SMALL = UTransformerConfig(emb_dim=256, width=256, levels=4, blocks_per_level=1, heads=4, dropout=0.1)
TINY = UTransformerConfig(emb_dim=64, width=64, levels=2, blocks_per_level=1, heads=2, dropout=0.0)


class Downsample(nn.Linear):
    """Halve the length with a dense layer over neighbour pairs: ``[B, n, D] -> [B, n/2, D]``."""

    def __init__(self, width: int):
        super().__init__(2 * width, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return super().forward(rearrange(h, "b (n two) d -> b n (two d)", two=2))


class Upsample(nn.Linear):
    """Double the length: a dense layer, each vector repeated twice: ``[B, n, D] -> [B, 2n, D]``."""

    def __init__(self, width: int):
        super().__init__(width, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return repeat(super().forward(h), "b n d -> b (n two) d", two=2)


@register("utransformer", UTransformerConfig, presets={"paper": PAPER, "small": SMALL, "tiny": TINY})
class UTransformer(Backbone):
    """U-Net of transformer stages with skips: ``forward(x_t [B, L, K]) -> K x [B, L, C_k]``."""

    def __init__(self, tracks: Sequence[Track], config: UTransformerConfig):
        super().__init__(tracks, config)
        c = config
        if c.seq_len % 2**c.levels:
            raise ValueError(f"seq_len {c.seq_len} is not a multiple of 2^levels = {2**c.levels}")
        self.inputs = InputEmbedding(self.tracks, c.emb_dim, c.width, c.seq_len, c.dropout, c.attributes, c.velocity,
                                     c.meter)
        stages = range(c.levels)
        self.down_blocks = nn.ModuleList(self._stage(c) for _ in stages)
        self.downsample = nn.ModuleList(Downsample(c.width) for _ in stages)
        self.upsample = nn.ModuleList(Upsample(c.width) for _ in stages)
        self.up_blocks = nn.ModuleList(self._stage(c) for _ in stages)
        self.ln_f = nn.LayerNorm(c.width)
        self.heads = TrackHeads(self.tracks, c.width, velocity=c.velocity)
        init_weights(self)

    @staticmethod
    def _stage(c: UTransformerConfig) -> Stack:
        return Stack(c.width, c.blocks_per_level, c.heads, c.dropout, c.attn_dropout)

    def forward(self, x_t: torch.Tensor, attrs: Attributes | None = None,
                velocity: torch.Tensor | None = None) -> Logits:
        check_length(x_t.shape[1], self.config.seq_len, 2**self.config.levels, type(self).__name__)
        h = self.inputs(x_t, attrs, velocity)  # [B, L, D]
        skips = []
        for blocks, down in zip(self.down_blocks, self.downsample, strict=True):
            h = blocks(h)
            skips.append(h)
            h = down(h)  # halves the length
        # the up path runs from the bottom level back to length L
        for up, blocks in zip(self.upsample, self.up_blocks, strict=True):
            h = blocks(up(h) + skips.pop())
        return self.heads(self.ln_f(h))
