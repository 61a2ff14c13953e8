"""The Convolutional Transformer, SCHmUBERT (thesis 4.6.2, figure 4.2, tables 5.1 and 5.4).

    x_t [B, L, K] -> per-instrument embeddings [B, L, S, E] + learned position-within-beat embedding (P values)
       (S = K for the trio and melody; a polyphonic instrument's voices are pooled, layers.TrackEmbedding)
    -> per-instrument Conv1d(E -> D, kernel P, stride P) + ReLU     [B, L/P, S, D]
    -> concat instruments + Linear(S*D -> D) + ReLU + learned positions  [B, N = L/P, D]
    -> depth x pre-LN Block -> LayerNorm                            [B, N, D]
    -> per-instrument ConvTranspose1d(D -> E, kernel P, stride P) + ReLU [B, L, S, E]
    [optional, bar_depth > 0: bar attention, for the copies across bars that music is made of]
    -> concat tracks of (steps + input embeddings) + Linear(K*E -> A)   [B, L, A]
    -> one sequence per step of the bar: [B * 16, L/16, A] + learned bar positions
    -> bar_depth x pre-LN Block (attention across bars at the same step) -> LayerNorm
    -> Linear(A -> K*E), added to each track's steps                 [B, L, K, E]
    -> one Linear head per instrument (its voices through layers.VoiceHead)  K x [B, L, C_k]

The kernel = stride convolutions are computed as dense layers over non-overlapping patches of P steps (the
same parameters and the same function, but matrix products instead of convolution kernels: faster, on CPU
above all).

Bar attention (not in the thesis; ``bar_depth = 0`` is the thesis' model) lets each step attend to the same step
of every other bar, token by token. The beat-level transformer alone did not learn to copy a masked step from
another bar in 600-1000 steps (``experiments/bench_far_copy.py``), so its infilling ignored the repeats around a gap.

Paper preset: E = 128, P = 4 (one beat of 16ths), D = 512, 24 blocks, 8 heads (16 for the trio), dropout 0.2:
76,600,576 parameters for the melody. The thesis' 76,601,088 includes 512 of an unused start token of the
original code, left out here; the trio has 78,329,088 (the thesis table says 78,303,488).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from schmubert.attributes import Attributes
from schmubert.backbones.layers import (
    BackboneOptions,
    LearnedPositions,
    Logits,
    Stack,
    TrackEmbedding,
    TrackHeads,
    check_length,
    init_weights,
)
from schmubert.backbones.registry import Backbone, register
from schmubert.config import arg
from schmubert.tokens import STEPS_PER_BAR, Track


@dataclass
class ConvConfig(BackboneOptions):
    """Options of the Convolutional Transformer."""

    seq_len: int = arg(1024, "longest input length L (learned positions over L / patch)")
    emb_dim: int = arg(128, "embedding size E of each track's tokens")
    patch: int = arg(4, "steps P summarized by the per-track convolution (kernel = stride = P)")
    depth: int = arg(24, "number of transformer blocks")
    bar_depth: int = arg(0, "blocks of bar attention: each step attends to the same step of every bar "
                         "(0 = none, the thesis' model)")
    bar_width: int = arg(128, "width A of the bar attention blocks")
    bar_heads: int = arg(4, "attention heads of the bar attention blocks")


def paper(tracks: Sequence[Track]) -> ConvConfig:
    """Table 5.1 (melody, 8 heads) and Table 5.4 (trio, 16 heads)."""
    return ConvConfig(heads=8 if len(tracks) == 1 else 16)


SMALL = ConvConfig(emb_dim=64, width=256, depth=4, heads=4, dropout=0.1)
TINY = ConvConfig(emb_dim=16, width=64, depth=2, heads=2, dropout=0.0)


class BarAttention(nn.Module):
    """Attention across bars at each step of the bar: K x ``[B, L, E]`` -> K x ``[B, L, E]`` (the update).

    ``steps`` are the per-track step features (decoder output plus the input embeddings, so a step's own token
    is there to copy); each of the 16 steps of the bar is one sequence over the L / 16 bars.
    """

    def __init__(self, num_tracks: int, emb_dim: int, width: int, depth: int, heads: int, max_bars: int,
                 dropout: float):
        super().__init__()
        self.inp = nn.Linear(num_tracks * emb_dim, width)
        self.pos = LearnedPositions(max_bars, width)
        self.blocks = Stack(width, depth, heads, dropout)
        self.ln = nn.LayerNorm(width)
        self.out = nn.Linear(width, num_tracks * emb_dim)
        self.num_tracks = num_tracks

    def forward(self, steps: list[torch.Tensor]) -> list[torch.Tensor]:
        z = self.inp(torch.cat(steps, dim=-1))  # [B, L, A]
        z = rearrange(z, "b (bars s) a -> (b s) bars a", s=STEPS_PER_BAR)
        z = self.ln(self.blocks(self.pos(z)))
        z = rearrange(z, "(b s) bars a -> b (bars s) a", s=STEPS_PER_BAR, b=steps[0].shape[0])
        return list(self.out(z).chunk(self.num_tracks, dim=-1))


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
        self.embed = TrackEmbedding(self.tracks, c.emb_dim, c.attributes, c.velocity, c.meter)
        K = self.embed.num_slots  # instruments: a polyphonic one's voices are pooled in the embedding
        self.beat_pos = nn.Embedding(c.patch, c.emb_dim)
        self.down = nn.ModuleList(PatchDown(c.emb_dim, c.width, c.patch) for _ in range(K))
        self.merge = nn.Linear(K * c.width, c.width)
        self.pos = LearnedPositions(c.seq_len // c.patch, c.width)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = Stack(c.width, c.depth, c.heads, c.dropout, c.attn_dropout)
        self.ln_f = nn.LayerNorm(c.width)
        self.up = nn.ModuleList(PatchUp(c.width, c.emb_dim, c.patch) for _ in range(K))
        self.bars = None
        if c.bar_depth:
            if c.seq_len % STEPS_PER_BAR:
                raise ValueError(f"seq_len {c.seq_len} is not a multiple of {STEPS_PER_BAR} (bar attention)")
            self.bars = BarAttention(K, c.emb_dim, c.bar_width, c.bar_depth, c.bar_heads,
                                     c.seq_len // STEPS_PER_BAR, c.dropout)
        self.heads = TrackHeads(self.tracks, c.emb_dim, velocity=c.velocity)
        init_weights(self)
        if self.bars is not None:  # a zero update at first: the model starts as the plain one (and fine-tunes it)
            nn.init.zeros_(self.bars.out.weight)

    def forward(self, x_t: torch.Tensor, attrs: Attributes | None = None,
                velocity: torch.Tensor | None = None) -> Logits:
        c = self.config
        L = x_t.shape[1]
        check_length(L, c.seq_len, math.lcm(c.patch, STEPS_PER_BAR) if self.bars else c.patch, type(self).__name__)
        beat = self.beat_pos(torch.arange(L, device=x_t.device) % c.patch)  # [L, E]
        e = self.embed(x_t, attrs, velocity) + beat[:, None]  # [B, L, K, E]
        beats = [F.relu(down(e[:, :, k])) for k, down in enumerate(self.down)]  # K x [B, N, D]
        h = F.relu(self.merge(torch.cat(beats, dim=-1)))  # [B, N, D]
        h = self.ln_f(self.blocks(self.drop(self.pos(h))))
        steps = [F.relu(up(h)) for up in self.up]  # K x [B, L, E]
        if self.bars is not None:
            update = self.bars([s + e[:, :, k] for k, s in enumerate(steps)])
            steps = [s + u for s, u in zip(steps, update, strict=True)]
        return self.heads(steps)
