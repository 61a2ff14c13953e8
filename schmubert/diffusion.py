"""The absorbing-state noise process (ASD3PM, spec section 3): the one owner of masking rates and loss weights.

Training (:meth:`AbsorbingDiffusion.q_sample`, :meth:`AbsorbingDiffusion.loss`), likelihood evaluation and every
sampler (:meth:`AbsorbingDiffusion.reveal_probability`) use this module, so the schedule lives in one place.

Shapes: ``x0``/``x_t`` are ``LongTensor[B, L, K]``; ``t`` is ``LongTensor[B]`` in ``1..T``; ``mask`` is
``BoolTensor[B, L, K]`` (True where the element is masked); ``logits`` is a list of K tensors ``[B, L, C_k]``.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from schmubert.config import arg
from schmubert.tokens import STEPS_PER_BAR

MaskSchedule = Literal["all", "tracks", "mixed"]
TimeSampling = Literal["uniform", "stratified"]
#: How many elements the reverse process reveals per step (the denoiser does not see t, so any works).
RevealSchedule = Literal["linear", "cosine", "square"]
REVEAL_SCHEDULES: tuple[str, ...] = typing.get_args(RevealSchedule)


@dataclass
class NoiseConfig:
    """Options of the forward process."""

    timesteps: int = arg(1024, "T, the number of diffusion steps; an element is masked with probability t/T")
    schedule: MaskSchedule = arg(
        "mixed", "which tracks are masked: 'all' alike (the original), 'tracks' (a random non-empty subset at "
        "rate t/T, the others intact) or 'mixed' (per sample, 'tracks' with probability --track-prob)")
    track_prob: float = arg(0.5, "with --schedule mixed, the probability that a sample masks a track subset")
    time_sampling: TimeSampling = arg(
        "uniform", "how t is drawn for a batch: 'uniform' (i.i.d.) or 'stratified' (one t per stratum of 1..T)")
    span_prob: float = arg(
        0.0, "probability that a training sample masks only inside a random span of whole bars (rate t/T "
        "there, the rest intact), as infilling does, so the model learns to fill a gap from far context "
        "(0 = the original; validation always masks everywhere)")
    max_span_bars: int = arg(32, "longest masked span in bars with --span-prob (at least one bar stays outside)")


@dataclass
class LossOutput:
    loss: torch.Tensor  # reweighted training loss, bits per element, mean over the batch
    elbo: torch.Tensor  # ELBO term (negative log-likelihood bound), bits per element, mean over the batch
    elbo_per_sample: torch.Tensor  # [B]
    velocity_elbo: torch.Tensor | None = None  # the velocity's ELBO term, bits per element (velocity models)


class AbsorbingDiffusion:
    """Masking forward process, its losses, and the reveal rate of the reverse process."""

    def __init__(self, mask_ids: Sequence[int], config: NoiseConfig | None = None,
                 groups: Sequence[int] | None = None):
        """``groups``: the instrument of each column (``tokens.instrument_index``; None: each its own), so the
        track-masking schedules mask the voices of a polyphonic instrument together."""
        self.mask_ids = list(mask_ids)
        self.groups = list(groups) if groups is not None else list(range(len(self.mask_ids)))
        self.config = config or NoiseConfig()
        if self.config.timesteps < 1:
            raise ValueError("timesteps must be >= 1")

    @property
    def T(self) -> int:  # noqa: N802 - the paper's name
        return self.config.timesteps

    @property
    def num_tracks(self) -> int:
        return len(self.mask_ids)

    def mask_value(self, device: torch.device | str | None = None) -> torch.Tensor:
        """The mask id of each track, ``LongTensor[K]``, broadcastable against ``[B, L, K]``."""
        return torch.tensor(self.mask_ids, dtype=torch.long, device=device)

    # --- time ----------------------------------------------------------------------------------------------
    def sample_t(self, batch_size: int, device: torch.device | str | None = None,
                 generator: torch.Generator | None = None, stratified: bool | None = None) -> torch.Tensor:
        """Draw ``t`` in ``1..T`` for a batch, ``LongTensor[B]``."""
        stratified = self.config.time_sampling == "stratified" if stratified is None else stratified
        if stratified:
            u = torch.rand((), generator=generator, device=device)
            perm = torch.randperm(batch_size, generator=generator, device=device)
            frac = (perm.to(torch.float64) + u.to(torch.float64)) / batch_size
            return (frac * self.T).floor().long().clamp_(0, self.T - 1) + 1
        return torch.randint(1, self.T + 1, (batch_size,), generator=generator, device=device)

    def mask_rate(self, t: torch.Tensor) -> torch.Tensor:
        """Probability that an element is masked at time ``t``: t/T."""
        return t.to(torch.float32) / self.T

    def elbo_weight(self, t: torch.Tensor) -> torch.Tensor:
        """Weight of the summed masked cross-entropy in the ELBO at time ``t``: T/t (t drawn uniformly)."""
        return self.T / t.to(torch.float64)

    def loss_weight(self, t: torch.Tensor) -> torch.Tensor:
        """Weight of the summed masked cross-entropy in the reweighted training loss: 1 - t/T."""
        return 1 - t.to(torch.float64) / self.T

    def mask_count_law(self, n: int) -> np.ndarray:
        """Law of the masked count m among n elements in the ELBO, ``p(m) = m/n * sum_t (1/t) Binom(m; n, t/T)``.

        ``float64 [n + 1]``, sums to 1, ``p(0) = 0``. Grouping the ELBO by m gives
        ``ELBO / n = sum_m p(m) * E[mean CE of m random masked elements]`` (a lower-variance estimator).
        """
        return _mask_count_law(n, self.T)

    # --- forward process -----------------------------------------------------------------------------------
    def track_selection(self, batch_size: int, device: torch.device | str | None = None,
                        generator: torch.Generator | None = None, schedule: MaskSchedule | None = None
                        ) -> torch.Tensor:
        """Which tracks may be masked per sample, ``BoolTensor[B, K]``, by the track-masking schedule (a subset
        of instruments: the voices of one are masked together)."""
        schedule = schedule or self.config.schedule
        K = self.num_tracks
        G = max(self.groups) + 1
        all_tracks = torch.ones(batch_size, K, dtype=torch.bool, device=device)
        if schedule == "all" or G == 1:
            return all_tracks
        # a uniformly random non-empty subset of instruments: draw a number 1..2^G-1 and read its bits
        code = torch.randint(1, 2**G, (batch_size, 1), generator=generator, device=device)
        subset = ((code >> torch.arange(G, device=device)) & 1 == 1)[:, self.groups]
        if schedule == "tracks":
            return subset
        if schedule == "mixed":
            use_subset = torch.rand(batch_size, 1, generator=generator, device=device) < self.config.track_prob
            return torch.where(use_subset, subset, all_tracks)
        raise ValueError(f"unknown mask schedule {schedule!r}")

    def span_selection(self, batch_size: int, length: int, device: torch.device | str | None = None,
                       generator: torch.Generator | None = None, span_prob: float | None = None) -> torch.Tensor:
        """Which steps may be masked per sample, ``BoolTensor[B, L]``: with probability ``span_prob`` (default
        ``--span-prob``) one span of 1..``max_span_bars`` whole bars (uniform length and start, at least one bar
        outside it), else every step."""
        span_prob = self.config.span_prob if span_prob is None else span_prob
        everywhere = torch.ones(batch_size, length, dtype=torch.bool, device=device)
        bars = length // STEPS_PER_BAR
        if span_prob <= 0 or bars < 2:
            return everywhere
        longest = min(self.config.max_span_bars, bars - 1)
        n = torch.randint(1, longest + 1, (batch_size, 1), generator=generator, device=device)
        start = (torch.rand(batch_size, 1, generator=generator, device=device) * (bars - n + 1)).floor()
        bar = torch.arange(length, device=device) // STEPS_PER_BAR
        inside = (bar >= start) & (bar < start + n)
        use_span = torch.rand(batch_size, 1, generator=generator, device=device) < span_prob
        return torch.where(use_span, inside, everywhere)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None,
                 schedule: MaskSchedule | None = None, span_prob: float | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask ``x0 [B, L, K]`` at times ``t [B]``: returns ``(x_t, mask)``.

        ``schedule`` and ``span_prob`` default to the config's (the training distribution). PAD elements
        (ids above a track's mask: the steps of a short bar's slot past its end, ``schmubert.meter``) are never
        masked."""
        B, L, K = x0.shape
        u = torch.rand(B, L, K, generator=generator, device=x0.device)
        mask = u < self.mask_rate(t).view(B, 1, 1)
        mask &= self.track_selection(B, x0.device, generator, schedule).view(B, 1, K)
        mask &= self.span_selection(B, L, x0.device, generator, span_prob).view(B, L, 1)
        mask &= ~self.pad(x0)  # PAD (schmubert.meter) is never masked
        x_t = torch.where(mask, self.mask_value(x0.device), x0)
        return x_t, mask

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """``BoolTensor[B, L, K]``: the PAD elements of ``x`` (any id above its track's mask id)."""
        return x > self.mask_value(x.device)

    # --- losses --------------------------------------------------------------------------------------------
    @staticmethod
    def masked_cross_entropy(logits: Sequence[torch.Tensor], x0: torch.Tensor, mask: torch.Tensor
                             ) -> torch.Tensor:
        """Cross-entropy (nats) summed over masked elements, per sample: ``[B]``. A target outside a track's
        classes (PAD, which is never masked) is scored as class 0 and left out by ``mask``."""
        total = x0.new_zeros(x0.shape[0], dtype=torch.float32)
        for k, lg in enumerate(logits):
            target = x0[..., k].flatten()
            target = torch.where(target < lg.shape[-1], target, 0)
            ce = F.cross_entropy(lg.float().flatten(0, 1), target, reduction="none")
            total = total + (ce.view(x0.shape[:2]) * mask[..., k]).sum(dim=1)
        return total

    def loss(self, logits: Sequence[torch.Tensor], x0: torch.Tensor, mask: torch.Tensor, t: torch.Tensor,
             velocity: torch.Tensor | None = None, onset: torch.Tensor | None = None) -> LossOutput:
        """Reweighted training loss ``(1 - t/T) * CE`` and ELBO term ``CE * T / t``, in bits per element (PAD
        elements are neither scored nor counted).

        With ``velocity`` (the true bins ``[B, L, K]``), ``onset`` (``BoolTensor[B, L, K]``, where x0 starts a
        note) and a model's velocity logits (``logits.velocity``), the velocity cross-entropy of the masked
        onsets joins the loss with the same weight (its ELBO term is ``velocity_elbo``, apart from ``elbo``).
        """
        B, L, K = x0.shape
        pad = self.pad(x0)
        mask = mask & ~pad  # PAD is never in the loss
        ce = self.masked_cross_entropy(logits, x0, mask)  # [B]
        # bits per real element: PAD elements are not counted (exactly L * K without PAD)
        per_element = math.log(2) * L * K * ((~pad).flatten(1).sum(1).to(torch.float64) / (L * K))
        elbo = (ce * self.elbo_weight(t) / per_element).float()
        loss = (ce * self.loss_weight(t) / per_element).float()
        velocity_logits = getattr(logits, "velocity", None)
        if velocity is None or velocity_logits is None or onset is None:
            return LossOutput(loss=loss.mean(), elbo=elbo.mean(), elbo_per_sample=elbo)
        vce = self.masked_cross_entropy(velocity_logits, velocity, mask & onset)
        velocity_elbo = (vce * self.elbo_weight(t) / per_element).float()
        loss = loss + (vce * self.loss_weight(t) / per_element).float()
        return LossOutput(loss=loss.mean(), elbo=elbo.mean(), elbo_per_sample=elbo,
                          velocity_elbo=velocity_elbo.mean())

    # --- reverse process -----------------------------------------------------------------------------------
    @staticmethod
    def reveal_probability(step: int, steps: int | None = None, schedule: RevealSchedule = "linear") -> float:
        """Probability that a still-masked element is revealed at reverse step ``step`` (``steps``..1).

        ``1 - masked_fraction((step - 1) / steps) / masked_fraction(step / steps)``; for 'linear' exactly
        ``1 / step`` (uniform over the remaining steps, thesis Algorithm 4, and independent of ``steps``). At
        step 1 it is 1 for every schedule, so nothing is left masked.
        """
        if step < 1:
            raise ValueError("reverse steps count down to 1")
        if schedule == "linear":
            return 1.0 / step
        if steps is None or step > steps:
            raise ValueError(f"schedule {schedule!r} needs steps >= step, got steps={steps}, step={step}")
        return 1.0 - masked_fraction((step - 1) / steps, schedule) / masked_fraction(step / steps, schedule)

    @classmethod
    def reveal_count(cls, n_masked: torch.Tensor, step: int, steps: int | None = None,
                     schedule: RevealSchedule = "linear") -> torch.Tensor:
        """Elements to reveal at ``step`` among ``n_masked [B]`` still masked: the expected count, rounded.

        'linear' divides, ``round(n_masked / step)``, as the original confidence order did (a product with
        ``1 / step`` rounds differently at some halves). All of them at step 1.
        """
        if step == 1:
            return n_masked
        if schedule == "linear":
            return torch.round(n_masked.float() / step).long()
        return torch.round(n_masked.float() * cls.reveal_probability(step, steps, schedule)).long()


def masked_fraction(r: float, schedule: RevealSchedule = "linear") -> float:
    """Fraction of the generated elements still masked at reverse time ``r`` (1 = start, all masked; 0 = end).

    'linear': ``r`` (the forward process' t/T; reveals the same share of the remaining steps each step).
    'cosine': ``sin(pi r / 2)``, MaskGIT's ``cos(pi/2 * progress)``: few reveals first, many at the end.
    'square': ``1 - (1 - r)^2``, MaskGIT's ``1 - progress^2``: between the two.
    """
    if not 0.0 <= r <= 1.0:
        raise ValueError(f"reverse time must be in [0, 1], got {r}")
    if schedule == "linear":
        return r
    if schedule == "cosine":
        return math.sin(math.pi * r / 2)
    if schedule == "square":
        return 1.0 - (1.0 - r) ** 2
    raise ValueError(f"unknown reveal schedule {schedule!r}; expected one of {REVEAL_SCHEDULES}")


@lru_cache(maxsize=16)
def _mask_count_law(n: int, timesteps: int) -> np.ndarray:
    t = torch.arange(1, timesteps + 1, dtype=torch.float64)[:, None]  # [T, 1]
    m = torch.arange(n + 1, dtype=torch.float64)[None, :]  # [1, n+1]
    rate = t / timesteps
    log_binom = (math.lgamma(n + 1) - torch.lgamma(m + 1) - torch.lgamma(n - m + 1)
                 + torch.xlogy(m, rate) + torch.xlogy(n - m, 1 - rate))
    w = (torch.exp(log_binom) / t).sum(0)  # [n+1]: sum_t (1/t) Binom(m; n, t/T)
    return (m[0] * w / n).numpy()
