"""Guidance of the reverse process (thesis Algorithm 6): steering note density per bar.

Each reverse step the sampler predicts x0 probabilities; a guidance function takes the gradient of a
differentiable loss on them and moves them against it before the draw. Here the loss compares a differentiable
estimate of the onsets per bar with a target:

- melodic track: the expected onsets of a step are ``P(class >= 2)`` (a note-on), drums ``P(pattern != 0)``;
- a still-known or already revealed element counts with its actual value (its probability is one-hot), so the
  masked elements are steered to make up the difference: the estimate is feedback, not open loop;
- density of a bar = expected onsets summed over the bar's steps and the selected tracks;
- loss = sum over bars and samples of ``(density - target)^2`` (summed, so the step an element gets does not
  depend on the piece length or batch size; :func:`density_error` reports the mean).

Two update rules: ``additive`` is the thesis' ``probs - s * grad`` (clamped at 0, renormalized); the default
``multiplicative`` is the same gradient step in log space (``probs * exp(-s * grad)``, renormalized), which
keeps the relative odds between pitches, so more onsets does not mean random pitches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from einops import rearrange, reduce

from schmubert.tokens import NOTE_OFF, STEPS_PER_BAR, Track

UpdateRule = Literal["multiplicative", "additive"]


def onset_probability(p: torch.Tensor, track: Track) -> torch.Tensor:
    """``probs [B, L, C] -> [B, L]``: probability of an onset (a melodic note-on, any drum hit) per step."""
    return p[..., 1:].sum(-1) if track.is_drum else p[..., NOTE_OFF + 1:].sum(-1)


def bar_density(probs: Sequence[torch.Tensor], tracks: Sequence[Track], track_ids: Sequence[int]
                ) -> torch.Tensor:
    """Differentiable expected onsets per bar, ``[B, bars]``, summed over ``track_ids``."""
    onsets = sum(onset_probability(probs[k], tracks[k]) for k in track_ids)  # [B, L]
    return reduce(onsets, "b (bar s) -> b bar", "sum", s=STEPS_PER_BAR)


def one_hot_known(probs: Sequence[torch.Tensor], x_t: torch.Tensor, masked: torch.Tensor
                  ) -> list[torch.Tensor]:
    """The probabilities of unmasked elements replaced by the one-hot of their value (masked ones pass)."""
    out = []
    for k, p in enumerate(probs):
        value = x_t[..., k].clamp(max=p.shape[-1] - 1)
        hot = torch.nn.functional.one_hot(value, p.shape[-1]).to(p.dtype)
        out.append(torch.where(masked[..., k].unsqueeze(-1), p, hot))
    return out


@dataclass
class NoteDensityGuidance:
    """Steer sampling toward ``target`` onsets per bar on ``track_ids`` with guidance scale ``scale``."""

    tracks: Sequence[Track]
    target: float
    scale: float = 2.0  # multiplicative; the additive rule wants about 0.03
    track_ids: Sequence[int] = (0,)
    update: UpdateRule = "multiplicative"

    def __post_init__(self) -> None:
        if self.update not in ("multiplicative", "additive"):
            raise ValueError(f"unknown guidance update {self.update!r}; expected multiplicative or additive")
        bad = [k for k in self.track_ids if not 0 <= k < len(self.tracks)]
        if bad:
            raise ValueError(f"guidance track index {bad} outside the model's {len(self.tracks)} tracks")

    def loss(self, probs: Sequence[torch.Tensor]) -> torch.Tensor:
        density = bar_density(probs, self.tracks, self.track_ids)
        return ((density - self.target) ** 2).sum()

    def __call__(self, probs: list[torch.Tensor], x_t: torch.Tensor, masked: torch.Tensor
                 ) -> list[torch.Tensor]:
        with torch.enable_grad():
            leaves = [p.detach().requires_grad_(k in self.track_ids) for k, p in enumerate(probs)]
            used = [leaves[k] for k in self.track_ids]
            loss = self.loss(one_hot_known(leaves, x_t, masked))
            grads = dict(zip(self.track_ids, torch.autograd.grad(loss, used), strict=True))
        out = []
        for k, p in enumerate(probs):
            out.append(self.step(p, grads[k]) if k in grads else p)
        return out

    def step(self, p: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        if self.update == "additive":
            moved = (p - self.scale * grad).clamp_min(0.0)
        else:  # p * exp(-s * grad) renormalized, as a softmax in log space: no overflow for large s * grad
            return torch.softmax(torch.log(p) - self.scale * grad, dim=-1)
        return moved / moved.sum(-1, keepdim=True).clamp_min(1e-12)


# --- measuring ---------------------------------------------------------------------------------------------


def token_bar_density(tokens: np.ndarray | torch.Tensor, tracks: Sequence[Track],
                      track_ids: Sequence[int] = (0,)) -> np.ndarray:
    """Actual onsets per bar of token grids ``[..., L, K] -> [..., bars]`` (note-ons, drum hit steps)."""
    x = torch.as_tensor(np.asarray(tokens))
    onsets = torch.zeros(x.shape[:-1])
    for k in track_ids:
        col = x[..., k]
        onsets += ((col > 0) & (col < tracks[k].num_classes)) if tracks[k].is_drum else (
            (col > NOTE_OFF) & (col < tracks[k].num_classes))
    return rearrange(onsets, "... (bar s) -> ... bar s", s=STEPS_PER_BAR).sum(-1).numpy()


def density_error(tokens: np.ndarray | torch.Tensor, tracks: Sequence[Track], target: float,
                  track_ids: Sequence[int] = (0,)) -> dict[str, float]:
    """Mean squared distance of onsets per bar to ``target`` and the share of bars hitting it exactly."""
    density = token_bar_density(tokens, tracks, track_ids)
    return {"mse": float(((density - target) ** 2).mean()), "exact": float((density == target).mean()),
            "mean_density": float(density.mean())}
