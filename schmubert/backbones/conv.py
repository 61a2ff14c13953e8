"""The Convolutional Transformer, SCHmUBERT (thesis 4.6.2, figure 4.2, tables 5.1 and 5.4).

    x_t [B, L, K] -> per-track embeddings [B, L, K, E] + learned position-within-beat embedding (P values)
    -> per-track Conv1d(E -> D, kernel P, stride P) + ReLU          [B, L/P, K, D]
    -> concat tracks + Linear(K*D -> D) + ReLU + learned positions  [B, N = L/P, D]
    -> depth x pre-LN Block -> LayerNorm                            [B, N, D]
    -> per-track ConvTranspose1d(D -> E, kernel P, stride P) + ReLU [B, L, K, E]
    -> one Linear head per track                                    K x [B, L, C_k]

The kernel = stride convolutions are computed as dense layers over non-overlapping patches of P steps (the
same parameters and the same function, but matrix products instead of convolution kernels: faster, on CPU
above all).

Paper preset: E = 128, P = 4 (one beat of 16ths), D = 512, 24 blocks, 8 heads (16 for the trio), dropout 0.2:
76,600,576 parameters for the melody. The thesis' 76,601,088 includes 512 of an unused start token of the
original code, left out here; the trio has 78,329,088 (the thesis table says 78,303,488).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from schmubert.backbones.layers import (
    BackboneOptions,
    LearnedPositions,
    Stack,
    TrackEmbedding,
    TrackHeads,
    check_length,
    init_weights,
)
from schmubert.backbones.registry import Backbone, register
from schmubert.config import arg
from schmubert.tokens import Track


@dataclass
class ConvConfig(BackboneOptions):
    """Options of the Convolutional Transformer."""

    seq_len: int = arg(1024, "longest input length L (learned positions over L / patch)")
    emb_dim: int = arg(128, "embedding size E of each track's tokens")
    patch: int = arg(4, "steps P summarized by the per-track convolution (kernel = stride = P)")
    depth: int = arg(24, "number of transformer blocks")


def paper(tracks: Sequence[Track]) -> ConvConfig:
    """Table 5.1 (melody, 8 heads) and Table 5.4 (trio, 16 heads)."""
    return ConvConfig(heads=8 if len(tracks) == 1 else 16)


SMALL = ConvConfig(emb_dim=64, width=256, depth=4, heads=4, dropout=0.1)
TINY = ConvConfig(emb_dim=16, width=64, depth=2, heads=2, dropout=0.0)


class PatchDown(nn.Linear):
    """Conv1d(E -> D, kernel = stride = P) as a dense layer over patches: ``[B, L, E] -> [B, L/P, D]``."""

    def __init__(self, emb_dim: int, width: int, patch: int):
        super().__init__(patch * emb_dim, width)
        self.patch = patch

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return super().forward(rearrange(e, "b (n p) e -> b n (p e)", p=self.patch))


class PatchUp(nn.Module):
    """ConvTranspose1d(D -> E, kernel = stride = P) as a dense layer: ``[B, N, D] -> [B, N*P, E]``.

    One bias per output channel, shared by the P steps of a patch, as in the transposed convolution.
    """

    def __init__(self, width: int, emb_dim: int, patch: int):
        super().__init__()
        self.patch = patch
        self.proj = nn.Linear(width, patch * emb_dim, bias=False)
        self.bias = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return rearrange(self.proj(h), "b n (p e) -> b (n p) e", p=self.patch) + self.bias


@register("conv", ConvConfig, presets={"paper": paper, "small": SMALL, "tiny": TINY})
class ConvTransformer(Backbone):
    """SCHmUBERT: a transformer over beats: ``forward(x_t [B, L, K]) -> K x [B, L, C_k]``."""

    def __init__(self, tracks: Sequence[Track], config: ConvConfig):
        super().__init__(tracks, config)
        c = config
        if c.seq_len % c.patch:
            raise ValueError(f"seq_len {c.seq_len} is not a multiple of patch {c.patch}")
        K = len(self.tracks)
        self.embed = TrackEmbedding(self.tracks, c.emb_dim)
        self.beat_pos = nn.Embedding(c.patch, c.emb_dim)
        self.down = nn.ModuleList(PatchDown(c.emb_dim, c.width, c.patch) for _ in range(K))
        self.merge = nn.Linear(K * c.width, c.width)
        self.pos = LearnedPositions(c.seq_len // c.patch, c.width)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = Stack(c.width, c.depth, c.heads, c.dropout, c.attn_dropout)
        self.ln_f = nn.LayerNorm(c.width)
        self.up = nn.ModuleList(PatchUp(c.width, c.emb_dim, c.patch) for _ in range(K))
        self.heads = TrackHeads(self.tracks, c.emb_dim)
        init_weights(self)

    def forward(self, x_t: torch.Tensor) -> list[torch.Tensor]:
        c = self.config
        L = x_t.shape[1]
        check_length(L, c.seq_len, c.patch, type(self).__name__)
        beat = self.beat_pos(torch.arange(L, device=x_t.device) % c.patch)  # [L, E]
        e = self.embed(x_t) + beat[:, None]  # [B, L, K, E]
        beats = [F.relu(down(e[:, :, k])) for k, down in enumerate(self.down)]  # K x [B, N, D]
        h = F.relu(self.merge(torch.cat(beats, dim=-1)))  # [B, N, D]
        h = self.ln_f(self.blocks(self.drop(self.pos(h))))
        steps = [F.relu(up(h)) for up in self.up]  # K x [B, L, E]
        return [head(s) for head, s in zip(self.heads.heads, steps, strict=True)]
