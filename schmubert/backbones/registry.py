"""The backbone contract and the registry that builds a backbone from its name and a typed config.

Contract: a backbone is an ``nn.Module`` built from ``(tracks, config)`` whose ``forward(x_t, attrs=None,
velocity=None)`` maps ``LongTensor[B, L, K]`` (token ids, the mask id of each track included) to a
:class:`~schmubert.backbones.layers.Logits`, a list of K logits tensors ``[B, L, C_k]`` over each track's real
classes. A model built with ``velocity=true`` also takes the known velocity bins ``[B, L, K]`` and returns K
velocity logits in ``Logits.velocity``. Backbones know nothing of diffusion (no t, no losses).

Conditions: with the option ``attributes=true`` (every config has it, default off) ``attrs`` is a
:class:`schmubert.attributes.Attributes` (``key [B]``, ``onsets``/``register [B, bars, K]``, bars = L / 16) whose
embedding the shared :class:`~schmubert.backbones.layers.TrackEmbedding` adds to the token embeddings; None
means every attribute null. A model without attributes rejects ``attrs``. The embedding's output projection
starts at zero: with it just added a model computes exactly what it computed without.

Each architecture registers a config dataclass and named presets (``paper``, ``small``, ``tiny``)::

    @register("conv", ConvConfig, presets={"paper": ConvConfig(...), "small": ..., "tiny": ...})
    class ConvTransformer(Backbone): ...

A preset may also be a function ``tracks -> config`` where the thesis used different settings per track set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from schmubert.attributes import Attributes
from schmubert.tokens import Track, get_tracks, track_set_name

PRESETS = ("paper", "small", "tiny")


class Backbone(nn.Module):
    """Base class of every denoiser network: ``forward(x_t [B, L, K], attrs=None) -> list of K logits [B, L, C_k]``."""

    def __init__(self, tracks: str | Sequence[Track], config: Any):
        super().__init__()
        self.tracks = get_tracks(tracks)
        self.config = config

    def forward(self, x_t: torch.Tensor, attrs: Attributes | None = None,
                velocity: torch.Tensor | None = None) -> list[torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def predicts_velocity(self) -> bool:
        """Whether the backbone takes and predicts velocity bins (``forward(x_t, attrs, velocity)``)."""
        return bool(getattr(self.config, "velocity", False))

    @property
    def conditional(self) -> bool:
        """Whether the backbone takes attributes (``forward(x_t, attrs)``)."""
        return bool(getattr(self.config, "attributes", False))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def call(denoiser: nn.Module, x_t: torch.Tensor, attrs: Attributes | None = None,
         velocity: torch.Tensor | None = None) -> list[torch.Tensor]:
    """``denoiser(x_t [, attrs [, velocity]])``, passing only what is given (so a denoiser, or a wrapper of one,
    that takes ``x_t`` alone is called as before)."""
    if velocity is not None:
        return denoiser(x_t, attrs, velocity)
    return denoiser(x_t) if attrs is None else denoiser(x_t, attrs)


Preset = Any  # a config instance, or a callable (tracks) -> config


@dataclass
class ArchSpec:
    name: str
    model_cls: type[Backbone]
    config_cls: type
    presets: dict[str, Preset]


_REGISTRY: dict[str, ArchSpec] = {}


def register(name: str, config_cls: type, presets: dict[str, Preset]) -> Callable[[type], type]:
    """Class decorator: register a backbone under ``name`` with its config class and presets."""
    missing = set(PRESETS) - set(presets)
    if missing:
        raise ValueError(f"backbone {name!r} lacks presets {sorted(missing)}")

    def decorate(model_cls: type) -> type:
        _REGISTRY[name] = ArchSpec(name, model_cls, config_cls, presets)
        return model_cls

    return decorate


def architectures() -> list[str]:
    """Registered architecture names."""
    return sorted(_REGISTRY)


def spec(arch: str) -> ArchSpec:
    if arch not in _REGISTRY:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {architectures()}")
    return _REGISTRY[arch]


def make_config(arch: str, tracks: str | Sequence[Track], preset: str = "paper", **overrides: Any) -> Any:
    """The config of ``arch`` for ``preset`` with ``overrides`` applied (unknown keys are an error)."""
    s = spec(arch)
    if preset not in s.presets:
        raise ValueError(f"unknown preset {preset!r} for {arch!r}; expected one of {sorted(s.presets)}")
    base = s.presets[preset]
    base = base(get_tracks(tracks)) if callable(base) else base
    names = {f.name for f in dataclasses.fields(s.config_cls)}
    unknown = set(overrides) - names
    if unknown:
        raise ValueError(f"unknown {arch} option(s) {sorted(unknown)}; known: {sorted(names)}")
    return dataclasses.replace(base, **overrides)


def build(arch: str, tracks: str | Sequence[Track], preset: str = "paper", **overrides: Any) -> Backbone:
    """Build backbone ``arch`` for ``tracks`` (``"melody"``/``"trio"``) from a named preset plus overrides."""
    return from_config(arch, tracks, make_config(arch, tracks, preset, **overrides))


def from_config(arch: str, tracks: str | Sequence[Track], config: Any) -> Backbone:
    """Build backbone ``arch`` from a config instance or a dict of its fields (as stored in checkpoints)."""
    s = spec(arch)
    if isinstance(config, dict):
        config = s.config_cls(**config)
    return s.model_cls(get_tracks(tracks), config)


def describe(backbone: Backbone) -> str:
    return (f"{type(backbone).__name__}({track_set_name(backbone.tracks)}, "
            f"{backbone.num_parameters():,} parameters)")
