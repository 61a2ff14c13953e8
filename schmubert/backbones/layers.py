"""Shared building blocks of every backbone: pre-LayerNorm transformer block, per-track embeddings, heads.

Shapes: ``x_t`` token ids ``[B, L, K]``; hidden states ``h`` ``[B, N, D]`` (N positions, width D).

``Block``: ``h + Attention(LN(h))`` then ``h + MLP(LN(h))``; bidirectional multi-head attention (:func:`attend`:
:func:`torch.nn.functional.scaled_dot_product_attention`, fused kernels on GPU, except bf16 on CPU), GELU MLP of
4 x width.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from schmubert import attributes as A
from schmubert.config import arg
from schmubert.meter import BEAT_POSITIONS, METER_CLASSES, meter_features
from schmubert.tokens import MAX_VOICES, NO_EVENT, STEPS_PER_BAR, VELOCITY_CLASSES, VELOCITY_MASK, Track, instruments


@dataclass
class BackboneOptions:
    """Options every backbone has; each architecture's config extends these with its own."""

    seq_len: int = arg(1024, "longest input length L (learned positions)")
    emb_dim: int = arg(512, "embedding size of each track's tokens before the tracks are combined")
    width: int = arg(512, "transformer width D")
    heads: int = arg(8, "attention heads")
    dropout: float = arg(0.2, "dropout rate on the residual branches and after the embedding")
    attn_dropout: float = arg(0.0, "dropout rate on the attention probabilities (the original used 0.2; any "
                              "value > 0 disables the fused attention kernels on CPU)")
    velocity: bool = arg(False, "model velocity: the known velocity bins are embedded with the tokens and a "
                         "velocity head per instrument predicts the bin of each note it starts "
                         "(schmubert.tokens velocity bins; the data needs {split}_velocity.npy)")
    attributes: bool = arg(False, "condition on musical attributes (key; onsets and register per bar and "
                           "instrument, and with velocity=true its dynamics; schmubert.attributes): their "
                           "embeddings are added to each instrument's embedding through zero-initialized "
                           "projections, so a model gaining them starts as the one without")
    meter: bool = arg(False, "read meters other than 4/4 (schmubert.meter): PAD steps (a bar's slot past its end) "
                      "are embedded as no event, and a meter embedding per bar (its length and kind) and a beat "
                      "position per step are added through a zero-initialized projection, so a model gaining "
                      "them (--init ... --set meter=true) starts as the one without. A model without it rejects "
                      "PAD input")
    meter_augment: float = arg(0.0, "training augmentation for a meter model (needs meter=true) on 4/4 data: "
                               "each 4/4 bar of a training piece becomes, with this probability, a 3/4 or 2/4 "
                               "bar (its last beat or two dropped and padded), so the meter embeddings learn "
                               "from data without other meters (0 = off)")


class Logits(list):
    """A backbone's output: the K token logits ``[B, L, C_k]`` (a list, as every consumer reads it) and, from a
    model with velocity, ``velocity``: K velocity logits ``[B, L, VELOCITY_CLASSES]`` (else None)."""

    def __init__(self, tokens: Sequence[torch.Tensor], velocity: Sequence[torch.Tensor] | None = None):
        super().__init__(tokens)
        self.velocity = list(velocity) if velocity is not None else None


def init_weights(module: nn.Module) -> None:
    """Variance-preserving init: a signal keeps its scale through every layer, so the content reaches the heads.

    Linear layers: normal(0, 1/sqrt(fan_in)) (LeCun), so each output has about the scale of its inputs; token
    embeddings and learned positions: normal(0, 1), content and position on the same scale; biases zero,
    LayerNorms unit. (The GPT-style normal(0, 0.02) everywhere crushed the content signal through the stacked
    embedding -> patch -> merge layers to ~1e-3 of the positions: the model could not learn from its context.)
    """
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=m.in_features ** -0.5)
        elif isinstance(m, (nn.Embedding, LearnedPositions)):
            nn.init.normal_(m.weight, mean=0.0, std=1.0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
        for name, p in m.named_parameters(recurse=False):
            if name == "bias":
                nn.init.zeros_(p)


def check_length(length: int, seq_len: int, multiple: int, name: str) -> None:
    """Raise a ValueError unless ``length`` is a positive multiple of ``multiple`` and <= ``seq_len``."""
    if length < 1 or length > seq_len or length % multiple:
        raise ValueError(f"{name}: sequence length {length} must be a positive multiple of {multiple} "
                         f"and at most seq_len={seq_len}")


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
    """Softmax attention ``q, k, v [B, H, N, d] -> [B, H, N, d]``.

    :func:`~torch.nn.functional.scaled_dot_product_attention` (flash kernels on GPU, and for fp32 on CPU), except
    bf16 on CPU: there PyTorch's flash and math kernels run forward + backward 2.5-7x slower than two batched bf16
    matmuls around a softmax (which accumulates in float), so those are used instead (``experiments/README.md``).
    """
    if q.device.type != "cpu" or q.dtype != torch.bfloat16:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    scores = torch.einsum("bhnd,bhmd->bhnm", q * q.shape[-1] ** -0.5, k)
    probs = F.dropout(scores.softmax(dim=-1), dropout_p)
    return torch.einsum("bhnm,bhmd->bhnd", probs, v)


class Attention(nn.Module):
    """Bidirectional multi-head self-attention: ``[B, N, D] -> [B, N, D]``."""

    def __init__(self, width: int, heads: int, dropout: float = 0.0, attn_dropout: float = 0.0):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.attn_dropout = attn_dropout
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.resid_drop = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        qkv = rearrange(self.qkv(h), "b n (three heads d) -> three b heads n d", three=3, heads=self.heads)
        q, k, v = qkv.unbind(0)
        out = attend(q, k, v, dropout_p=self.attn_dropout if self.training else 0.0)
        return self.resid_drop(self.proj(rearrange(out, "b heads n d -> b n (heads d)")))


class MLP(nn.Sequential):
    """``Linear(D, 4D) -> GELU -> Linear(4D, D) -> Dropout``."""

    def __init__(self, width: int, dropout: float = 0.0, mult: int = 4):
        super().__init__(nn.Linear(width, mult * width), nn.GELU(), nn.Linear(mult * width, width),
                         nn.Dropout(dropout))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: ``[B, N, D] -> [B, N, D]``.

    ``dropout`` acts on the residual branches; ``attn_dropout`` on the attention probabilities (any value > 0
    makes PyTorch fall back from the fused attention kernels on CPU, which costs time).
    """

    def __init__(self, width: int, heads: int, dropout: float = 0.0, attn_dropout: float = 0.0):
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads, dropout, attn_dropout)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = MLP(width, dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h + self.attn(self.ln1(h))
        return h + self.mlp(self.ln2(h))


class Stack(nn.Sequential):
    """``depth`` blocks: ``[B, N, D] -> [B, N, D]`` (no final norm)."""

    def __init__(self, width: int, depth: int, heads: int, dropout: float = 0.0, attn_dropout: float = 0.0):
        super().__init__(*(Block(width, heads, dropout, attn_dropout) for _ in range(depth)))


class LearnedPositions(nn.Module):
    """Learned absolute position embedding added to ``[B, N, D]`` (N <= max_len)."""

    def __init__(self, max_len: int, width: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(max_len, width))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.weight[: h.shape[-2]]


class AttributeEmbedding(nn.Module):
    """The conditions of :class:`schmubert.attributes.Attributes` as an update of each instrument's embedding:
    ``attrs -> [B, L, I, E]`` (I instruments; the trio and the melody: I = K).

    The piece's key is broadcast to every step and instrument; the onsets and register of bar b and instrument i go
    to instrument i's steps of bar b (each instrument has its own onset and register tables; a polyphonic
    instrument's voices share its slot, pooled by :class:`TrackEmbedding`). The sum passes a projection that starts
    at zero, so adding this module to a trained model leaves its outputs unchanged until trained. With
    ``dynamics`` (models with velocity) the dynamics of bar b and instrument i are added through a second
    projection that starts at zero: a model with attributes that gains velocity starts as the one without.
    A model without ``dynamics`` refuses attributes that tell any.
    """

    def __init__(self, tracks: int | Sequence[Track], dim: int, dynamics: bool = False):
        super().__init__()
        self.tracks = None if isinstance(tracks, int) else tuple(tracks)
        num = tracks if isinstance(tracks, int) else len(instruments(tracks))
        self.num_tracks = num  # instruments
        self.key = nn.Embedding(A.KEY_IDS, dim)
        self.onsets = nn.Embedding(num * A.ONSET_IDS, dim)
        self.register = nn.Embedding(num * A.REGISTER_IDS, dim)
        self.out = ZeroLinear(dim, dim)
        self.register_buffer("onset_offset", torch.arange(num) * A.ONSET_IDS, persistent=False)
        self.register_buffer("register_offset", torch.arange(num) * A.REGISTER_IDS, persistent=False)
        self.dynamics = nn.Embedding(num * A.DYNAMICS_IDS, dim) if dynamics else None
        self.dynamics_out = ZeroLinear(dim, dim) if dynamics else None
        if dynamics:
            self.register_buffer("dynamics_offset", torch.arange(num) * A.DYNAMICS_IDS, persistent=False)

    def forward(self, attrs: A.Attributes, length: int) -> torch.Tensor:
        if self.tracks is not None:
            attrs = A.for_tracks(attrs, self.tracks)
        B, bars, num = attrs.onsets.shape
        if num != self.num_tracks or bars != -(-length // STEPS_PER_BAR):
            raise ValueError(f"attributes [B, bars={bars}, I={num}] do not fit tokens of length {length} and "
                             f"{self.num_tracks} instruments (bars = L / {STEPS_PER_BAR}, rounded up)")
        if self.dynamics is None and not _compiling() and attrs.tells_dynamics():
            raise ValueError("this model was built without velocity, so it has no dynamics attribute: tell it "
                             "no dynamics (only models with backbone option velocity=true take them)")
        bar = self.onsets(attrs.onsets + self.onset_offset) + self.register(attrs.register + self.register_offset)
        cond = self.out(bar + rearrange(self.key(attrs.key), "b e -> b 1 1 e"))  # [B, bars, I, E]
        if self.dynamics is not None:
            cond = cond + self.dynamics_out(self.dynamics(attrs.dynamics + self.dynamics_offset))
        return repeat(cond, "b bars k e -> b (bars s) k e", s=STEPS_PER_BAR)[:, :length]


class ZeroLinear(nn.Module):
    """``Linear(D_in -> D_out)`` whose weights start at zero (and stay there under :func:`init_weights`)."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(d_out, d_in))
        self.bias = nn.Parameter(torch.zeros(d_out))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(h, self.weight, self.bias)


class VoicePool(nn.Module):
    """The voices of one polyphonic instrument as one embedding: ``[B, L, V, E] -> [B, L, E]``.

    Each voice's token embedding gets its voice-index embedding, passes a GELU and a shared projection, and the
    voices are summed (nonlinear before the sum, so which voice holds which note is kept). Its weights do not
    depend on V (up to ``MAX_VOICES``): the number of voices is a setting, not new weights.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.voice = nn.Embedding(MAX_VOICES, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(e + self.voice.weight[: e.shape[-2]])).sum(dim=-2)


class VoiceHead(nn.Module):
    """One instrument's features to each of its voices: ``[B, L, D] -> [B, L, V, D]`` (before the shared head).

    A voice-index embedding is added and a GELU layer makes the voices' features differ beyond a bias.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.voice = nn.Embedding(MAX_VOICES, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, h: torch.Tensor, voices: int) -> torch.Tensor:
        return F.gelu(self.proj(h[..., None, :] + self.voice.weight[:voices]))


class VelocityEmbedding(nn.Module):
    """Each instrument's velocity bins (and ``VELOCITY_MASK``) as an update of its token embeddings:
    ``(slot, [B, L, V]) -> [B, L, V, E]``, through a projection that starts at zero (a model gaining velocity
    with ``--init`` starts as the one without)."""

    def __init__(self, num_slots: int, dim: int):
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(VELOCITY_MASK + 1, dim) for _ in range(num_slots))
        self.out = ZeroLinear(dim, dim)

    def forward(self, slot: int, velocity: torch.Tensor) -> torch.Tensor:
        return self.out(self.embeddings[slot](velocity))


class MeterEmbedding(nn.Module):
    """What a grid's PAD says of its meter (:func:`schmubert.meter.meter_features`) as an update of the token
    embeddings: ``x_t [B, L, K] -> [B, L, E]``, the same for every instrument.

    Each step gets the embedding of its bar's meter class (its length in steps and PAD kind: 3/4 and 6/8 differ)
    and of its beat position (its place in the bar, in simple or compound meter; PAD steps one of their own), summed
    and passed through a projection that starts at zero: a model gaining this module computes what it computed
    without until trained. Nothing here depends on the track set or the backbone.
    """

    def __init__(self, mask_ids: Sequence[int], dim: int):
        super().__init__()
        self.bar = nn.Embedding(METER_CLASSES, dim)
        self.beat = nn.Embedding(BEAT_POSITIONS, dim)
        self.out = ZeroLinear(dim, dim)
        self.register_buffer("mask_ids", torch.tensor(list(mask_ids)), persistent=False)

    def forward(self, x_t: torch.Tensor) -> torch.Tensor:
        _, meter, beat = meter_features(x_t, self.mask_ids)
        return self.out(self.bar(meter) + self.beat(beat))


def _compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and getattr(compiler, "is_compiling", lambda: False)())


class TrackEmbedding(nn.Module):
    """One embedding per instrument (slot) over its ``vocab_size`` (classes + mask): ``[B, L, K] -> [B, L, S, E]``.

    K columns, S instruments (``tokens.instruments``): a one-column instrument (melody, bass, drums) is embedded
    as it is (S = K for the trio and the melody); the V voices of a polyphonic instrument share one embedding
    and are pooled by a :class:`VoicePool`. With ``attributes``, ``forward(x_t, attrs)`` adds the
    :class:`AttributeEmbedding` of ``attrs`` (per instrument, ``[B, bars, S]``; None: every attribute null, the
    unconditional model) to each instrument's slot; with ``velocity`` too, it takes their dynamics. Without,
    ``attrs`` must be None. With ``meter``, PAD ids (above a column's mask, ``schmubert.meter``) are embedded as
    no event and the :class:`MeterEmbedding` of ``x_t`` is added; without, PAD input is a clear error.
    """

    def __init__(self, tracks: Sequence[Track], dim: int, attributes: bool = False, velocity: bool = False,
                 meter: bool = False):
        super().__init__()
        self.num_columns = len(tracks)
        self.mask_list = [t.mask_id for t in tracks]
        self.slots = [ks for _, ks in instruments(tracks)]
        self.embeddings = nn.ModuleList(nn.Embedding(tracks[ks[0]].vocab_size, dim) for ks in self.slots)
        self.velocity = VelocityEmbedding(len(self.slots), dim) if velocity else None
        self.pools = nn.ModuleDict({str(i): VoicePool(dim) for i, ks in enumerate(self.slots) if len(ks) > 1})
        # per instrument (slot); a set of one-column instruments is built exactly as before the voice sets
        self.attributes = (AttributeEmbedding(len(tracks) if len(self.slots) == len(tracks) else tracks, dim,
                                              dynamics=velocity) if attributes else None)
        self.tracks = tuple(tracks)
        self.meter = MeterEmbedding(self.mask_list, dim) if meter else None

    @property
    def num_slots(self) -> int:
        """S, the number of instruments."""
        return len(self.slots)

    def forward(self, x_t: torch.Tensor, attrs: A.Attributes | None = None,
                velocity: torch.Tensor | None = None) -> torch.Tensor:
        """``velocity`` ``[B, L, K]``: the known velocity bins, ``VELOCITY_MASK`` elsewhere (None: none known);
        only for a model built with velocity."""
        if x_t.dim() != 3 or x_t.shape[-1] != self.num_columns:
            raise ValueError(f"expected token ids [B, L, {self.num_columns}], got {tuple(x_t.shape)}")
        if velocity is not None and self.velocity is None:
            raise ValueError("this model was built without velocity (backbone option velocity=false)")
        if self.velocity is not None and velocity is None:
            velocity = torch.full_like(x_t, VELOCITY_MASK)
        if self.meter is None:
            if not _compiling() and bool((x_t > x_t.new_tensor(self.mask_list)).any()):
                raise ValueError("this model was built without meter (backbone option meter=false) and cannot read "
                                 "PAD steps (bars shorter than 16 steps, schmubert.meter): give it 4/4 input, or "
                                 "train one with --set meter=true")
            tokens = x_t
        else:  # PAD is no event to the token embeddings; the meter embedding says where it is
            tokens = torch.where(x_t > self.meter.mask_ids, NO_EVENT, x_t)
        e = torch.stack([self._slot(i, tokens, velocity) for i in range(self.num_slots)], dim=-2)
        if self.meter is not None:
            e = e + self.meter(x_t)[:, :, None]
        if self.attributes is None:
            if attrs is not None:
                raise ValueError("this model was built without attributes (backbone option attributes=false) "
                                 "and cannot be conditioned on them")
            return e
        if attrs is None:
            attrs = A.Attributes.null(x_t.shape[0], -(-x_t.shape[1] // STEPS_PER_BAR), self.tracks, x_t.device)
        return e + self.attributes(attrs.expand(x_t.shape[0]), x_t.shape[1])

    def _slot(self, i: int, x_t: torch.Tensor, velocity: torch.Tensor | None) -> torch.Tensor:
        """Instrument i's embedding ``[B, L, E]`` (its voices' tokens, and their velocities, pooled)."""
        ks = self.slots[i]
        cols = slice(ks[0], ks[-1] + 1)
        e = self.embeddings[i](x_t[..., cols])  # [B, L, V, E]
        if self.velocity is not None:
            e = e + self.velocity(i, velocity[..., cols])
        return e[..., 0, :] if len(ks) == 1 else self.pools[str(i)](e)


class InputEmbedding(nn.Module):
    """Tokens to transformer inputs: ``[B, L, K] -> [B, L, D]``.

    Per-instrument embeddings ``[B, L, S, E]``, concatenated to ``S * E`` and projected to ``D``, plus learned
    positions (``max_len`` of them), then dropout.
    """

    def __init__(self, tracks: Sequence[Track], emb_dim: int, width: int, max_len: int, dropout: float = 0.0,
                 attributes: bool = False, velocity: bool = False, meter: bool = False):
        super().__init__()
        self.embed = TrackEmbedding(tracks, emb_dim, attributes, velocity, meter)
        self.proj = nn.Linear(self.embed.num_slots * emb_dim, width)
        self.pos = LearnedPositions(max_len, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x_t: torch.Tensor, attrs: A.Attributes | None = None,
                velocity: torch.Tensor | None = None) -> torch.Tensor:
        e = rearrange(self.embed(x_t, attrs, velocity), "b l k e -> b l (k e)")
        return self.drop(self.pos(self.proj(e)))


class TrackHeads(nn.Module):
    """One linear head per instrument over its real classes -> K x ``[B, L, C_k]``, one logits tensor per column
    (a :class:`Logits`; with ``velocity`` also one velocity head per instrument, shared by its voices).

    Input: ``[B, L, D]`` (every head reads the same features), ``[B, L, S, D]`` or a list of S ``[B, L, D]``
    (head i reads instrument i's features). The voices of a polyphonic instrument share its head, each through
    a :class:`VoiceHead`.
    """

    def __init__(self, tracks: Sequence[Track], dim: int, bias: bool = False, velocity: bool = False):
        super().__init__()
        self.slots = [ks for _, ks in instruments(tracks)]
        self.heads = nn.ModuleList(nn.Linear(dim, tracks[ks[0]].num_classes, bias=bias) for ks in self.slots)
        self.voices = nn.ModuleDict({str(i): VoiceHead(dim) for i, ks in enumerate(self.slots) if len(ks) > 1})
        self.velocity = (nn.ModuleList(nn.Linear(dim, VELOCITY_CLASSES, bias=True) for _ in self.slots)
                         if velocity else None)

    def forward(self, h: torch.Tensor | Sequence[torch.Tensor]) -> Logits:
        if isinstance(h, torch.Tensor):
            h = h.unbind(dim=2) if h.dim() == 4 else [h] * len(self.heads)
        tokens: list[torch.Tensor] = []
        velocity: list[torch.Tensor] = []
        for i, (head, ks) in enumerate(zip(self.heads, self.slots, strict=True)):
            voices = h[i] if len(ks) == 1 else self.voices[str(i)](h[i], len(ks))  # [B, L, (V,) D]
            tokens.extend([head(voices)] if len(ks) == 1 else head(voices).unbind(dim=-2))
            if self.velocity is not None:
                v = self.velocity[i](voices)
                velocity.extend([v] if len(ks) == 1 else v.unbind(dim=-2))
        return Logits(tokens, velocity if self.velocity is not None else None)
