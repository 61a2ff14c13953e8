"""The copy prior: a piece's own bars as a cache beside the network (not in the thesis).

Music repeats itself: a riff, a ride pattern, a chorus. A masked element at step ``s`` of bar ``n`` on track ``k``
is proposed the tokens of the other bars ``m`` at the same step and track, wherever those are visible in ``x_t``
(known or already drawn), each bar weighted by how alike bars ``n`` and ``m`` are where both are visible::

    sim(n, m)   = match * (equal elements) - mismatch * (differing elements)
    same(n, m)  = the tracks on which bars n and m are fully visible and equal
    score(n, m) = sim(n, m) + sum_d (context[d] sim(n + d, m + d) + exact[d] same(n + d, m + d)) + period . f(|n - m|)
    copy(c)     = sum_m exp(score(n, m)) [x_t(m, s, k) = c] / sum_m exp(score(n, m)) [(m, s, k) visible]
    p(x0 | x_t) = (1 - gate) softmax(logits) + gate copy,
    gate        = sigmoid(gate_bias[k] + gate_evidence * log sum_m exp(score) + gate_candidates * log #m)

(``d`` in -4..-1, 1..4: bars whose neighbours match are a repeated section, so a bar of a masked gap is proposed
what followed the bars like the ones before it, and a neighbour drawn as an exact copy says most; ``f``: 1 if the
bars are a multiple of 4, 8 and 16 bars apart, and their distance / 64). Nothing visible at that step of any
other bar: the network alone. It is the continuous cache of language models (Grave et al. 2017) on the bar grid,
and a proper distribution, so the ELBO stays a bound. The network is unchanged: the handful of scalars
(:class:`CopyPriorConfig`) are fitted afterwards: all of them on held-out windows by maximising the
count-estimator ELBO of whole pieces and of infilled bars 16:48 (:func:`fit`), then, given training windows, the
neighbour, exact and distance weights on those as a choice of source (:func:`fit_sources`: a gap bar next to its
drawn neighbours, which of the piece's bars does it repeat?) and the gates again. A shipped model carries them
in its hyper-parameters (``copy_prior``); :func:`schmubert.checkpoints.load_model` wraps its denoiser in
:class:`CopyPrior`, so the sampler, the likelihoods and the editor all use it.

Shapes: ``x_t`` ``LongTensor[B, L, K]``; ``logits`` K x ``[B, L, C_k]``; bars ``n, m`` of 16 steps.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from einops import rearrange
from torch import nn

from schmubert.attributes import Attributes
from schmubert.backbones.layers import Logits
from schmubert.backbones.registry import call
from schmubert.config import arg
from schmubert.diffusion import AbsorbingDiffusion
from schmubert.tokens import STEPS_PER_BAR

#: Hyper-parameter key of a checkpoint's fitted copy prior.
HPARAM = "copy_prior"
#: Bar distances the score rewards: a multiple of 4, 8 and 16 bars (phrases, periods, sections).
PERIODS = (4, 8, 16)
#: Neighbouring bar pairs (n + d, m + d) whose similarity adds to that of bars n and m.
NEIGHBOURS = (-4, -3, -2, -1, 1, 2, 3, 4)
#: The bar offsets of :func:`neighbour_rows`: the neighbours with 0 (the bars themselves) in the middle.
ROW_OFFSETS = tuple(range(-4, 5))
assert NEIGHBOURS == tuple(d for d in ROW_OFFSETS if d != 0)
#: The neighbours of a copy prior fitted before the exact term (its ``context`` has four values).
LEGACY_NEIGHBOURS = (-2, -1, 1, 2)
#: The distance feature is |n - m| / DISTANCE_SCALE (a 64-bar window spans 0..1).
DISTANCE_SCALE = 64.0
#: Bar scores are multiplied by this when sampling a piece with something known (an infill, a continuation, an
#: accompaniment; the sample CLI's and the editor's ``--copy-sharpness``): the copy follows the best-matching bar
#: instead of a blend, and its gate opens further. From experiments/README.md ("The copy prior"; "The measuring
#: stick, and infilling outside-in"; "Whole bars, and choosing the source bar") with pretrained:trio, riff copy
#: (onsets / track-bars exact) in random order 68.0% / 16.2% at 1, 70.3% / 31.2% at 4; outside-in 73.4% / 36.2% at
#: 4, 75.0% / 39.3% at 8, 75.4% / 37.5% at 16; with the source-fitted prior (whole bars exact, three seeds) 27.9%
#: at 3, 28.8% at 4, 33.8% at 8. Likelihoods always use 1.
SAMPLING_SHARPNESS = 8.0
#: The same for a new piece (nothing known). The source-fitted trio's unconditional pieces have 48 distinct bars of
#: 64 on average at 3 (held-out windows 47), 43 at 4 and 31 at 8 (a loop); the mean statistics overlap is 0.67 at
#: 3 and 0.70 at 4 and 8 (experiments/README.md, "Whole bars, and choosing the source bar").
NEW_PIECE_SHARPNESS = 4.0


def sampling_sharpness(anything_known: bool) -> float:
    """The default copy sharpness of a piece with something known (:data:`SAMPLING_SHARPNESS`), or of a new one."""
    return SAMPLING_SHARPNESS if anything_known else NEW_PIECE_SHARPNESS


@dataclass
class CopyPriorConfig:
    """The copy prior's scalars, fitted by :func:`fit` (the defaults, a first fit on the trio's held-out windows
    without the neighbours, are where a fit starts; shipped models carry their own)."""

    match: float = arg(0.33, "score per element visible in both bars and equal")
    mismatch: float = arg(1.2, "penalty per element visible in both bars and different")
    context: list[float] = arg([0.0] * len(NEIGHBOURS), "weight of the similarity of the bar pairs 4..1 before "
                               "and 1..4 after (a repeated section); four values: 2, 1 before and 1, 2 after")
    exact: list[float] = arg([0.0] * len(NEIGHBOURS), "score per track on which the bar pairs 4..1 before and "
                             "1..4 after are fully visible and equal (a neighbour drawn as an exact copy)")
    period: list[float] = arg([0.5, 0.2, 0.5, -0.3], "score of bars a multiple of 4, 8 and 16 bars apart, and "
                                                     "per 64 bars of distance")
    gate_bias: list[float] = arg([-1.9], "gate logit per track (one value: every track)")
    gate_evidence: float = arg(0.28, "gate logit per nat of the log-sum-exp of the candidate bars' scores")
    gate_candidates: float = arg(0.29, "gate logit per nat of the number of candidate bars")

    def __post_init__(self) -> None:
        if len(self.context) == len(LEGACY_NEIGHBOURS):  # fitted before the wider context: the others add nothing
            weights = dict(zip(LEGACY_NEIGHBOURS, self.context, strict=True))
            self.context = [weights.get(d, 0.0) for d in NEIGHBOURS]
        if len(self.context) != len(NEIGHBOURS):
            raise ValueError(f"copy prior context needs {len(NEIGHBOURS)} values, got {self.context}")
        if len(self.exact) != len(NEIGHBOURS):
            raise ValueError(f"copy prior exact needs {len(NEIGHBOURS)} values, got {self.exact}")
        if len(self.period) != len(PERIODS) + 1:
            raise ValueError(f"copy prior period needs {len(PERIODS) + 1} values, got {self.period}")
        if not self.gate_bias:
            raise ValueError("copy prior gate_bias needs a value per track (or one for all)")


class CopyParams(nn.Module):
    """:class:`CopyPriorConfig` as tensors (parameters while fitting, frozen inside :class:`CopyPrior`)."""

    def __init__(self, config: CopyPriorConfig, num_tracks: int, trainable: bool = False):
        super().__init__()
        bias = config.gate_bias * num_tracks if len(config.gate_bias) == 1 else config.gate_bias
        if len(bias) != num_tracks:
            raise ValueError(f"copy prior gate_bias has {len(bias)} values for {num_tracks} tracks")
        values = {"match": [config.match], "mismatch": [config.mismatch], "context": config.context,
                  "exact": config.exact, "period": config.period,
                  "gate_bias": bias, "gate_evidence": [config.gate_evidence],
                  "gate_candidates": [config.gate_candidates]}
        for name, v in values.items():
            self.register_parameter(name, nn.Parameter(torch.tensor(v, dtype=torch.float32), trainable))

    def config(self) -> CopyPriorConfig:
        def val(name: str) -> list[float]:
            return [round(float(v), 4) for v in getattr(self, name).detach().flatten()]
        return CopyPriorConfig(match=val("match")[0], mismatch=val("mismatch")[0], context=val("context"),
                               exact=val("exact"), period=val("period"),
                               gate_bias=val("gate_bias"), gate_evidence=val("gate_evidence")[0],
                               gate_candidates=val("gate_candidates")[0])


def distance_features(bars: int, device: torch.device) -> torch.Tensor:
    """``[n, m, len(PERIODS) + 1]``: whether bars n and m are a multiple of each period apart, and |n - m| / 64."""
    n = torch.arange(bars, device=device)
    delta = (n[:, None] - n[None, :]).abs()
    periodic = [(delta % p == 0).float() for p in PERIODS]
    return torch.stack([*periodic, delta.float() / DISTANCE_SCALE], dim=-1)


def bar_statistics(x_bars: torch.Tensor, visible: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Of every pair of bars n, m of ``x_bars [B, n, s, K]`` (``visible`` alike), each ``[B, n, m]``: the elements
    visible in both and equal, those visible in both and different, and the tracks fully visible in both and
    equal (what :func:`scores_from` weighs)."""
    equal = rearrange(x_bars, "b n s k -> b n 1 s k") == rearrange(x_bars, "b m s k -> b 1 m s k")
    both = rearrange(visible, "b n s k -> b n 1 s k") & rearrange(visible, "b m s k -> b 1 m s k")
    per_track = (both & equal).sum(-2, dtype=torch.float32)  # [B, n, m, K]
    matches = per_track.sum(-1)
    mismatches = both.sum((-2, -1), dtype=torch.float32) - matches
    same = (per_track == x_bars.shape[2]).sum(-1, dtype=torch.float32)  # every step visible in both and equal
    return matches, mismatches, same


def scores_from(matches: torch.Tensor, mismatches: torch.Tensor, same: torch.Tensor, params: CopyParams
                ) -> torch.Tensor:
    """``score(n, m)`` ``[B, n, m]`` from :func:`bar_statistics`; a bar never copies itself."""
    bars = matches.shape[-1]
    stacked = [neighbour_rows(stat) for stat in (matches, mismatches, same)]
    score = combine(*stacked, distance_features(bars, matches.device), params)
    return score.masked_fill(torch.eye(bars, dtype=torch.bool, device=matches.device), -math.inf)


def neighbour_rows(stat: torch.Tensor) -> torch.Tensor:
    """``[B, n, m] -> [B, n, d, m]``: ``stat(n + d, m + d)`` for ``d`` in :data:`ROW_OFFSETS` (0 outside the piece),
    a strided view of the zero-padded ``stat``."""
    R = ROW_OFFSETS[-1]
    padded = nn.functional.pad(stat, (R, R, R, R))
    B, N, M = stat.shape
    sb, sn, sm = padded.stride()
    return padded.as_strided((B, N, len(ROW_OFFSETS), M), (sb, sn, sn + sm, sm))


def combine(matches: torch.Tensor, mismatches: torch.Tensor, same: torch.Tensor, distance: torch.Tensor,
            params: CopyParams) -> torch.Tensor:
    """The score formula (module docstring) over :func:`neighbour_rows` ``[..., d, m]`` and the distance features
    ``[..., m, F]`` of the same bars: ``[..., m]``."""
    sim = params.match * matches - params.mismatch * mismatches
    R = ROW_OFFSETS[-1]
    one, zero = torch.ones_like(params.context[:1]), torch.zeros_like(params.exact[:1])
    context = torch.cat([params.context[:R], one, params.context[R:]])  # bar n itself weighs 1
    exact = torch.cat([params.exact[:R], zero, params.exact[R:]])
    return (torch.einsum("...dm,d->...m", sim, context) + torch.einsum("...dm,d->...m", same, exact)
            + distance @ params.period)


def bar_scores(x_bars: torch.Tensor, visible: torch.Tensor, params: CopyParams) -> torch.Tensor:
    """``score(n, m)`` ``[B, n, m]`` of bars ``x_bars [B, n, s, K]`` (``visible`` alike); a bar never copies itself."""
    return scores_from(*bar_statistics(x_bars, visible), params)


def to_bars(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``[B, L, ...] -> [B, n, 16, ...]``, padding L up to whole bars with zeros (callers pad ``visible`` False)."""
    L = x.shape[1]
    pad = -L % STEPS_PER_BAR
    if pad:
        x = torch.cat([x, x.new_zeros((x.shape[0], pad, *x.shape[2:]))], dim=1)
    return rearrange(x, "b (n s) ... -> b n s ...", s=STEPS_PER_BAR), L


def weigh_bars(x_t: torch.Tensor, visible: torch.Tensor, params: CopyParams, sharpness: float = 1.0
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bars ``x_bars [B, n, s, K]`` and ``vis_bars`` of ``x_t``, the weight of each other bar ``exp(score - top)``
    ``[B, n, m]`` and ``top [B, n, 1]``, the highest score per bar (a one-bar piece: no weight at all); scores
    multiplied by ``sharpness`` (1: the fitted prior)."""
    x_bars, _ = to_bars(x_t)
    vis_bars, _ = to_bars(visible)
    score = bar_scores(x_bars, vis_bars, params) * sharpness
    top = score.amax(-1, keepdim=True).clamp_min(-1e30)
    return x_bars, vis_bars, torch.exp(score - top), top


def log_gates(weight: torch.Tensor, top: torch.Tensor, vis_bars: torch.Tensor, params: CopyParams
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """The total weight of the bars visible at each element ``[B, n, s, K]`` and ``log (1 - gate), log gate``
    ``[B, n, s, K, 2]`` (gate 0 where no other bar is visible)."""
    total = torch.einsum("bnm,bmsk->bnsk", weight, vis_bars.float())
    candidates = vis_bars.sum(1, keepdim=True) - vis_bars.float()  # the other bars visible at (s, k)
    evidence = torch.log(total.clamp_min(1e-30)) + top.unsqueeze(-1)
    logit = (params.gate_bias + params.gate_evidence * evidence
             + params.gate_candidates * torch.log(candidates.clamp_min(1.0)))
    log_on = torch.where(total > 0, nn.functional.logsigmoid(logit), -math.inf)
    log_off = torch.where(total > 0, nn.functional.logsigmoid(-logit), 0.0)
    return total, torch.stack([log_off, log_on], -1)


def safe_log_ratio(votes: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """``log(votes / total)``, ``-inf`` where ``votes`` is 0, without NaN gradients through ``log(0)``."""
    ratio = torch.log(votes.clamp_min(1e-30)) - torch.log(total.clamp_min(1e-30))
    return torch.where(votes > 0, ratio, -math.inf)


def scatter_votes(out: torch.Tensor, weight: torch.Tensor, tokens: torch.Tensor, visible: torch.Tensor,
                  scale: torch.Tensor) -> torch.Tensor:
    """Add every other bar's vote to ``out [B, n, s, C]`` in place: bar m's token ``tokens [B, m, s]`` (where
    ``visible``) gets ``weight [B, n, m] * scale [B, n, s]`` at each target bar n. Returns ``out``."""
    B, n, S, C = out.shape
    index = rearrange(tokens.clamp(0, C - 1), "b m s -> b 1 s m").expand(B, n, S, -1)
    src = rearrange(weight, "b n m -> b n 1 m") * rearrange(visible.float(), "b m s -> b 1 s m")
    return out.scatter_add_(-1, index, src * scale.unsqueeze(-1))


def copy_log_probs(x_t: torch.Tensor, visible: torch.Tensor, num_classes: Sequence[int], params: CopyParams,
                   sharpness: float = 1.0) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The copy distributions and gates at every element of ``x_t [B, L, K]``.

    Returns K x ``log copy [B, L, C_k]`` (``-inf`` where no other bar proposes a class) and ``log gate
    [B, L, K, 2]`` (log of 1 - gate and of gate).
    """
    L = x_t.shape[1]
    x_bars, vis_bars, weight, top = weigh_bars(x_t, visible, params, sharpness)
    total, log_gate = log_gates(weight, top, vis_bars, params)
    log_copy = []
    for k, C in enumerate(num_classes):
        votes = scatter_votes(weight.new_zeros((*x_bars.shape[:3], C)), weight, x_bars[..., k],
                              vis_bars[..., k], 1.0 / total[..., k].clamp_min(1e-30))
        log_copy.append(rearrange(torch.log(votes), "b n s c -> b (n s) c")[:, :L])
    return log_copy, rearrange(log_gate, "b n s k two -> b (n s) k two")[:, :L]


def mix_log_probs(logits: Sequence[torch.Tensor], x_t: torch.Tensor, visible: torch.Tensor, params: CopyParams,
                  sharpness: float = 1.0, twins: bool = False) -> list[torch.Tensor]:
    """``log((1 - gate) softmax(logits) + gate copy)`` per track, K x ``[B, L, C_k]``: the copy prior's output,
    mixed in probability space (a handful of passes over the logits; the same as mixing the outputs of
    :func:`copy_log_probs` in log space). ``twins``: ``x_t`` is ``[x; x]`` (a guided pass), whose bars are
    weighed once."""
    L = x_t.shape[1]
    half = x_t.shape[0] // 2
    if twins:  # [x_t; x_t]: weigh the bars of one half (the weights depend on x_t alone), use them for both
        x_t, visible = x_t[:half], visible[:half]
    x_bars, vis_bars, weight, top = weigh_bars(x_t, visible, params, sharpness)
    total, log_gate = log_gates(weight, top, vis_bars, params)
    if twins:
        x_bars, vis_bars, weight, total, log_gate = (torch.cat([t, t]) for t in
                                                     (x_bars, vis_bars, weight, total, log_gate))
    gate = log_gate.exp()  # [B, n, s, K, 2]
    out = []
    for k, lg in enumerate(logits):
        probs, _ = to_bars(torch.softmax(lg.float(), -1))
        probs = probs * gate[..., k, 0, None]
        scale = gate[..., k, 1] / total[..., k].clamp_min(1e-30)
        scatter_votes(probs, weight, x_bars[..., k], vis_bars[..., k], scale)
        out.append(rearrange(torch.log(probs), "b n s c -> b (n s) c")[:, :L])
    return out


def copy_log_prob_of(x0: torch.Tensor, x_t: torch.Tensor, visible: torch.Tensor, params: CopyParams
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """``log copy(x0)`` ``[B, L, K]`` and ``log gate [B, L, K, 2]``: :func:`copy_log_probs` at the tokens ``x0``
    only (what fitting needs, without the K full distributions)."""
    L = x_t.shape[1]
    x_bars, vis_bars, weight, top = weigh_bars(x_t, visible, params)
    total, log_gate = log_gates(weight, top, vis_bars, params)
    want, _ = to_bars(x0)
    hits = (want.unsqueeze(2) == x_bars.unsqueeze(1)) & vis_bars.unsqueeze(1)  # [B, n, m, s, K]
    votes = torch.einsum("bnm,bnmsk->bnsk", weight, hits.float())
    flat = "b n s k ... -> b (n s) k ..."
    return rearrange(safe_log_ratio(votes, total), flat)[:, :L], rearrange(log_gate, flat)[:, :L]


class CopyPrior(nn.Module):
    """A denoiser whose predictions are mixed with the copy prior: same calls, log-probabilities as logits.

    ``sharpness`` multiplies the bar scores (1, the default, is the fitted prior; sampling sharpens it with
    :func:`sharpened`). Every other attribute (``tracks``, ``conditional``, ``config``, ``num_parameters``...) is
    the wrapped denoiser's."""

    def __init__(self, denoiser: nn.Module, mask_ids: Sequence[int], config: CopyPriorConfig,
                 sharpness: float = 1.0):
        super().__init__()
        self.denoiser = denoiser
        self.sharpness = sharpness
        self.network_every = 1  # compute the network on every n-th call only (:func:`reusing_network`)
        self._calls, self._network = 0, None  # calls since the network last ran, and what it returned
        self.params = CopyParams(config, len(mask_ids))
        self.register_buffer("mask_value", torch.tensor(list(mask_ids)), persistent=False)
        self.num_classes = list(mask_ids)  # the mask id of a track is its number of real classes

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("denoiser"), name)

    def forward(self, x_t: torch.Tensor, attrs: Attributes | None = None,
                velocity: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The mixed token logits; a velocity model's velocity logits pass through unchanged."""
        logits = self.network(x_t, attrs, velocity)
        with torch.autocast(x_t.device.type, enabled=False):
            visible = x_t < self.mask_value  # neither masked nor PAD
            mixed = mix_log_probs(logits, x_t, visible, self.params, self.sharpness, twins(x_t))
        return Logits(mixed, getattr(logits, "velocity", None))

    def network(self, x_t: torch.Tensor, attrs: Attributes | None, velocity: torch.Tensor | None) -> Logits:
        """The wrapped network's output: computed afresh, or within :func:`reusing_network` its last output while
        fewer than ``network_every`` calls of the same batch shape have passed since it ran."""
        if self.network_every == 1:
            return call(self.denoiser, x_t, attrs, velocity)
        cached = self._network
        if cached is None or self._calls >= self.network_every or cached[0].shape[:2] != x_t.shape[:2]:
            self._network, self._calls = call(self.denoiser, x_t, attrs, velocity), 0
        self._calls += 1
        return self._network


def twins(x_t: torch.Tensor) -> bool:
    """Whether ``x_t [B, ...]`` is two equal halves (a classifier-free guided pass ``[x_t; x_t]``)."""
    half = x_t.shape[0] // 2
    return x_t.shape[0] % 2 == 0 and half > 0 and torch.equal(x_t[:half], x_t[half:])


@contextmanager
def sharpened(denoiser: nn.Module, sharpness: float) -> Iterator[None]:
    """Within the block, every :class:`CopyPrior` in ``denoiser`` (however wrapped) multiplies its bar scores by
    ``sharpness``; a denoiser without one is unchanged."""
    if not sharpness > 0:
        raise ValueError(f"copy sharpness must be > 0, got {sharpness}")
    priors = [m for m in denoiser.modules() if isinstance(m, CopyPrior)]
    before = [p.sharpness for p in priors]
    for p in priors:
        p.sharpness = sharpness
    try:
        yield
    finally:
        for p, value in zip(priors, before, strict=True):
            p.sharpness = value


@contextmanager
def reusing_network(denoiser: nn.Module, every: int) -> Iterator[None]:
    """Within the block, every :class:`CopyPrior` in ``denoiser`` computes its network on every ``every``-th call
    only and reuses the last output in between, mixing the copy prior in afresh from each call's ``x_t``; the
    first call in the block, and any call of another batch shape, computes it. ``every`` 1: unchanged. Raises
    ``ValueError`` for a denoiser without a copy prior when ``every`` > 1: it would draw from stale predictions
    with nothing to refresh them (experiments/README.md, "The network once, the copy prior every step")."""
    if every < 1:
        raise ValueError(f"network_every must be >= 1, got {every}")
    priors = [m for m in denoiser.modules() if isinstance(m, CopyPrior)]
    if every > 1 and not priors:
        raise ValueError(f"network_every {every} needs a model with a copy prior (this one has none)")
    before = [p.network_every for p in priors]
    for p in priors:
        p.network_every, p._network, p._calls = every, None, 0
    try:
        yield
    finally:
        for p, value in zip(priors, before, strict=True):
            p.network_every, p._network, p._calls = value, None, 0


def wrap(denoiser: nn.Module, mask_ids: Sequence[int], hparams: dict[str, Any]) -> nn.Module:
    """``denoiser`` in a :class:`CopyPrior` if ``hparams`` carry a fitted one, else itself."""
    stored = hparams.get(HPARAM)
    return CopyPrior(denoiser, mask_ids, CopyPriorConfig(**stored)) if stored else denoiser


# --- fitting -------------------------------------------------------------------------------------------------


#: The bar scores' weights; the other scalars are the gates.
SCORE_PARAMS = ("match", "mismatch", "context", "exact", "period")
#: What :func:`fit_sources` moves: a choice among fully visible bars sees only the sum of match and mismatch for a
#: bar pair, so those two stay as the likelihood fitted them (a source-fitted pair drifts to a negative match,
#: which closes the gate on the bars that agree best).
SOURCE_PARAMS = ("context", "exact", "period")


@dataclass
class SourceExamples:
    """Gap bars beside a drawn front (:func:`source_examples`), P of them: :func:`bar_statistics` of each piece as
    it was then, at the gap bar's row, ``[P, d, m]`` each (:func:`neighbour_rows`, counts); the gap bar ``row [P]``;
    the bars it may copy, ``candidates [P, m]``, and those equal to it on every track, ``targets [P, m]``."""

    matches: torch.Tensor
    mismatches: torch.Tensor
    same: torch.Tensor
    row: torch.Tensor
    candidates: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return len(self.row)


def source_examples(pieces: np.ndarray, span: tuple[int, int] = (16, 48), seed: int = 0) -> SourceExamples:
    """The sampler's decision while it infills ``span`` of ``pieces [N, L, K]`` outside-in, as examples: for every
    bar n of the span that repeats a bar outside it on every track, and each side, the piece with the gap masked
    from n inwards (left: bars n..end, right: start..n) and the bars between the context and n drawn as the
    original; bar n itself once with nothing visible (where the sampler chooses its source) and once at a random
    share of its elements (as it draws the rest)."""
    generator = torch.Generator().manual_seed(seed)
    parts = []
    for x in pieces:
        x_bars, _ = to_bars(torch.as_tensor(np.asarray(x, dtype=np.int64))[None])
        flat = x_bars[0].flatten(1)
        outside = [m for m in range(flat.shape[0]) if not span[0] <= m < span[1]]
        rows, visible = [], []
        for n in range(*span):
            if not flat[n].any() or not (flat[outside] == flat[n]).all(1).any():
                continue  # an empty bar, or one that repeats nothing outside the span
            for masked in (range(n, span[1]), range(span[0], n + 1)):
                for share in (0.0, float(torch.rand((), generator=generator))):
                    vis = torch.ones_like(x_bars[0], dtype=torch.bool)
                    vis[list(masked)] = False
                    vis[n] = torch.rand(vis[n].shape, generator=generator) < share
                    rows.append(n)
                    visible.append(vis)
        if not rows:
            continue
        vis = torch.stack(visible)
        stats = bar_statistics(x_bars.expand(len(rows), -1, -1, -1), vis)
        row = torch.tensor(rows)
        picked = [neighbour_rows(stat)[torch.arange(len(rows)), row] for stat in stats]  # [e, d, m]
        candidates = vis.flatten(2).all(-1)
        candidates[torch.arange(len(rows)), row] = False
        targets = candidates & (flat[None] == flat[row][:, None]).all(-1)
        parts.append((*picked, row, candidates, targets))
    if not parts:
        raise ValueError("no bar of the span repeats a bar outside it in these pieces")
    return SourceExamples(*(torch.cat(column) for column in zip(*parts, strict=True)))


def source_scores(params: CopyParams, examples: SourceExamples) -> torch.Tensor:
    """The gap bar's score of each candidate bar ``[P, m]`` (``-inf`` for the bars it may not copy)."""
    bars = examples.candidates.shape[-1]
    distance = distance_features(bars, examples.row.device)[examples.row]  # [P, m, F]
    score = combine(examples.matches.float(), examples.mismatches.float(), examples.same.float(), distance, params)
    return score.masked_fill(~examples.candidates, -math.inf)


def source_nll(params: CopyParams, examples: SourceExamples) -> torch.Tensor:
    """``-log`` of the copy prior's weight on the right source bars (bar scores softmaxed over the candidates),
    ``[P]`` nats."""
    score = source_scores(params, examples)
    return torch.logsumexp(score, -1) - torch.logsumexp(score.masked_fill(~examples.targets, -math.inf), -1)


def top_source_right(params: CopyParams, examples: SourceExamples) -> float:
    """The share of examples whose highest-scored candidate bar is a right source."""
    with torch.no_grad():
        top = source_scores(params, examples).argmax(-1)
        return float(examples.targets[torch.arange(len(top)), top].float().mean())


def fit_sources(pieces: np.ndarray, *, span: tuple[int, int] = (16, 48), iterations: int = 200, lr: float = 0.05,
                seed: int = 0, init: CopyPriorConfig | None = None) -> tuple[CopyPriorConfig, dict[str, float]]:
    """Fit the neighbour and distance weights (:data:`SOURCE_PARAMS`) on ``pieces [N, L, K]`` (training windows: no
    network is involved) as the choice of the bar to copy: full-batch Adam on :func:`source_nll` over
    :func:`source_examples`. Returns the config (the rest as ``init``'s) and the share of examples whose top bar
    is right, before and after."""
    K = pieces.shape[-1]
    examples = source_examples(pieces, span, seed)
    params = CopyParams(init or CopyPriorConfig(), K, trainable=True)
    score_params = [getattr(params, name) for name in SOURCE_PARAMS]
    before = top_source_right(params, examples)
    opt = torch.optim.Adam(score_params, lr=lr)
    for _ in range(iterations):
        opt.zero_grad()
        source_nll(params, examples).mean().backward()
        opt.step()
    return params.config(), {"examples": len(examples), "top_right_before": before,
                             "top_right_after": top_source_right(params, examples)}


@dataclass
class FitResult:
    config: CopyPriorConfig
    before: dict[str, float]  # bits per element of the network alone, per regime ("full", "infill")
    after: dict[str, float]  # with the fitted copy prior, on the same masks
    sources: dict[str, float] | None = None  # fit_sources' figures, when training windows were given


def collect(denoiser: nn.Module, diffusion: AbsorbingDiffusion, pieces: np.ndarray, regimes: dict[str, torch.Tensor],
            samples_per_piece: int, batch_size: int, seed: int) -> list[tuple[torch.Tensor, ...]]:
    """Count-stratified masks of every regime (a ``region [L, K]`` of scored elements) and the network's
    log-probability of each true token under them: batches of ``(x0, mask, log_p_net)``, all ``[b, L, K]``."""
    from schmubert.evaluation.likelihood import draw_masks, stratified_uniforms

    x = torch.from_numpy(np.asarray(pieces, dtype=np.int64))
    N, S = len(x), samples_per_piece
    device = next(denoiser.parameters()).device
    batches = []
    for region in regimes.values():
        generator = torch.Generator().manual_seed(seed)
        rows, u = stratified_uniforms(N, S, generator)
        for lo in range(0, N * S, batch_size):
            x0 = x[rows[lo: lo + batch_size]]
            mask, _ = draw_masks(u[lo: lo + batch_size], region, diffusion, "count", generator)
            x_t = torch.where(mask, diffusion.mask_value(), x0)
            with torch.no_grad():
                logits = denoiser(x_t.to(device))
            real = x0.clamp(max=torch.tensor([lg.shape[-1] - 1 for lg in logits]))  # PAD is never scored
            log_p = torch.stack([torch.log_softmax(lg.float().cpu(), -1).gather(-1, real[..., k, None])[..., 0]
                                 for k, lg in enumerate(logits)], -1)
            batches.append((x0, mask, log_p))
    return batches


def batch_bits(params: CopyParams | None, x0: torch.Tensor, mask: torch.Tensor, log_p: torch.Tensor,
               num_classes: Sequence[int]) -> torch.Tensor:
    """Each sample's count-estimator ELBO in bits per masked element ``[b]``, with the copy prior (or the network
    alone for ``params`` None)."""
    if params is not None:
        x_t = torch.where(mask, torch.tensor(list(num_classes)), x0)
        copied, log_gate = copy_log_prob_of(x0, x_t, ~mask & (x0 < torch.tensor(list(num_classes))), params)
        log_p = torch.logaddexp(log_gate[..., 0] + log_p, log_gate[..., 1] + copied)
    return -(log_p * mask).flatten(1).sum(1) / (mask.flatten(1).sum(1) * math.log(2))


def mean_bits(params: CopyParams | None, batches: list[tuple[torch.Tensor, ...]], num_classes: Sequence[int]
              ) -> float:
    with torch.no_grad():
        bits = torch.cat([batch_bits(params, *b, num_classes) for b in batches])
    return float(bits.mean())


def fit(denoiser: nn.Module, diffusion: AbsorbingDiffusion, pieces: np.ndarray, *, infill: tuple[int, int] = (16, 48),
        samples_per_piece: int = 8, iterations: int = 60, lr: float = 0.05, batch_size: int = 16, seed: int = 0,
        init: CopyPriorConfig | None = None, train: np.ndarray | None = None, progress: bool = False) -> FitResult:
    """Fit the copy prior of ``denoiser`` on held-out windows ``pieces [N, L, K]``: full-batch Adam on the mean
    count-estimator ELBO of whole pieces and of infilling bars ``infill`` (the network's outputs are computed
    once; only the copy prior's scalars move). With training windows ``train``, the neighbour and distance
    weights are then fitted on them as the choice of source (:func:`fit_sources`) and the gates fitted again to
    the new scores (the rest of the bar scores held)."""
    from schmubert.evaluation.likelihood import bar_region

    N, L, K = pieces.shape
    num_classes = diffusion.mask_value().tolist()
    regimes = {"full": torch.ones(L, K, dtype=torch.bool)}
    if infill is not None and infill[1] * STEPS_PER_BAR <= L:
        regimes["infill"] = bar_region(L, K, infill)
    batches = collect(denoiser, diffusion, pieces, regimes, samples_per_piece, batch_size, seed)
    per_regime = len(batches) // len(regimes)
    config = fit_batches(batches, num_classes, init or CopyPriorConfig(), iterations, lr, scores=True,
                         progress=progress)
    sources = None
    if train is not None and "infill" in regimes:  # the choice of source is the infill's
        config, sources = fit_sources(train, span=infill, seed=seed, init=config)
        config = fit_batches(batches, num_classes, config, iterations, lr, scores=False, progress=progress)

    def split(p: CopyParams | None) -> dict[str, float]:
        return {name: mean_bits(p, batches[i * per_regime:(i + 1) * per_regime], num_classes)
                for i, name in enumerate(regimes)}

    return FitResult(config, split(None), split(CopyParams(config, K)), sources)


def fit_batches(batches: list[tuple[torch.Tensor, ...]], num_classes: Sequence[int], init: CopyPriorConfig,
                iterations: int, lr: float, scores: bool = True, progress: bool = False) -> CopyPriorConfig:
    """Full-batch Adam on the mean ELBO of :func:`collect`'s ``batches`` from ``init``; ``scores`` False: only the
    gates move (the bar scores' weights, :data:`SCORE_PARAMS`, stay)."""
    from tqdm.auto import tqdm

    params = CopyParams(init, len(num_classes), trainable=True)
    moving = [p for name, p in params.named_parameters() if scores or name not in SCORE_PARAMS]
    opt = torch.optim.Adam(moving, lr=lr)
    count = sum(len(b[0]) for b in batches)
    for _ in tqdm(range(iterations), desc="copy prior", disable=not progress, leave=False):
        opt.zero_grad()
        for b in batches:
            (batch_bits(params, *b, num_classes).sum() / count).backward()
        opt.step()
    return params.config()


def as_hparams(config: CopyPriorConfig) -> dict[str, Any]:
    """``config`` as the checkpoint's ``copy_prior`` hyper-parameters (what :func:`wrap` reads back)."""
    return dataclasses.asdict(config)
