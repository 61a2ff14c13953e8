"""Decoding defaults: what a model's shipped defaults mean for one request, in one place.

Every front end that samples (the sample CLI and with it the demo, the editor's jobs, the model cards, the
benchmarks) describes what it asks as a :class:`Request` and lets :func:`resolve` turn it into a :class:`Plan`:
the sampler options and the copy sharpness the sampler gets, and what :func:`told` tells a model trained with
attributes. So one model gives one quality, whichever front end asks.

- **Outline** (``outline``): a new piece asked nothing is told a training window's key, onsets and register
  (``auto``) where the model ships that choice (``sampler_defaults["outline"]``, both shipped models) and stores
  outlines; a piece asked a key, a density or a register keeps what it asked alone (pretrained:melody asked a
  key at guidance 2: in it or its relative 0.92 without an outline, 0.67 with one; experiments/README.md).
- **Key**: the one asked; else the outline's; else for a new piece one drawn from the training keys; else the
  key estimated from the piece around the edit.
- **Guidance**: the classifier-free guidance scale asked, else the model's own, else
  :data:`schmubert.sampling.DEFAULT_CFG_SCALE`; likewise every other sampler option a model ships. Where the key
  told is the piece's own and every generated track keeps bars of its own (``in_context``: an infill, a
  continuation, the editor's jobs in a song), no scale is asked and only the key would be guided, there is no
  guidance: with pretrained:trio and pretrained:melody it changed nothing measured there (riff copy, notes in the
  key, the infill's own key) and cost about a third of an infill's time; an accompaniment keeps it (trio bass in the
  melody's key 0.936 guided, 0.877 not; experiments/README.md, "Guidance where the song says the key").
- **Copy sharpness**: the one asked, else sharper where something of the piece is known
  (:func:`schmubert.copy_prior.sampling_sharpness`).
- **Repair and held kinds**: repair holds a piece to its key only where the key was told (asked, or an outline's):
  a drawn or estimated key is context, not a condition (with pretrained:melody, repairing drawn keys redrew whole
  pieces for no gain, 0.57 -> 0.54, and redrew infilled gaps: riff copy 32% -> 29%; experiments/README.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import torch

from schmubert.attributes import KEY_NULL, Attributes, draw_keys, draw_outlines, estimate_key, parse_key
from schmubert.checkpoints import LoadedModel
from schmubert.copy_prior import sampling_sharpness
from schmubert.sampling import SamplerOptions

#: ``--outline``: the model's shipped choice, a training window's outline, or a key alone.
OutlineChoice = Literal["model", "auto", "none"]
#: Where the key a piece is told comes from.
KeySource = Literal["asked", "outline", "drawn", "piece"]


@dataclass(frozen=True)
class Request:
    """What one sampling run asks, before a model's defaults are applied.

    ``new_piece``: nothing of the piece is given (an unconditional sample; an empty editor piece drawn whole).
    ``anything_known``: some element of the piece is kept (an infill, a continuation, an accompaniment).
    ``key``: a key (``D:minor``), ``none``, or ``auto`` (the outline's, a drawn one or the piece's own).
    ``targets``: onsets or a register are asked (``--density``, ``--register``, ``--note-density``).
    ``in_context``: every generated track keeps some bars of its own (:func:`schmubert.conditioning.in_context`).
    ``copy_sharpness``, and the fields of ``sampler`` left at None: the model's or the toolkit's default.
    """

    new_piece: bool
    anything_known: bool
    key: str = "auto"
    outline: OutlineChoice = "model"
    targets: bool = False
    in_context: bool = False
    copy_sharpness: float | None = None
    sampler: SamplerOptions = field(default_factory=SamplerOptions)

    @property
    def asks(self) -> bool:
        """Whether anything is asked of a model with attributes (a key, even ``none``, or targets)."""
        return self.key != "auto" or self.targets


@dataclass(frozen=True)
class Plan:
    """What the sampler and the attribute machinery get for a :class:`Request` (:func:`resolve`)."""

    outline: Literal["auto", "none"]  # the outline choice as resolved (what a record says)
    outlined: bool  # each piece is told a training window's outline
    key_from: KeySource
    key: str | None  # the asked key (key_from "asked"), else None
    sampler: SamplerOptions  # the model's defaults applied; the key held by repair only where it was told
    copy_sharpness: float
    attributes: bool = True  # the model takes attributes (else nothing is told, and guidance is off)

    @property
    def guidance_scale(self) -> float:
        """The classifier-free guidance scale the sampler uses where attributes are told."""
        return self.sampler.guidance_scale()

    def describe(self) -> str:
        """One line for records, cards and benchmark headers."""
        told = {"asked": f"the key {self.key}", "drawn": "a key drawn from the training keys",
                "piece": "the piece's own key", "outline": "a training window's outline"}[self.key_from]
        if self.outlined and self.key is not None:
            told = f"a training window's outline in {self.key}"
        steering = (f"told {told}, guidance {self.guidance_scale:g}, repair {self.sampler.repair_rounds()} holding "
                    f"{', '.join(self.sampler.repaired_kinds()) or 'nothing'}, ") if self.attributes else ""
        return f"{steering}copy sharpness {self.copy_sharpness:g}, {self.sampler.order} order"

    def record(self) -> dict:
        """The plan as JSON-ready values (sample records)."""
        return {"outline": self.outline, "outlined": self.outlined, "key_from": self.key_from, "key": self.key,
                "guidance_scale": self.guidance_scale, "copy_sharpness": self.copy_sharpness,
                "repair": self.sampler.repair_rounds(), "repair_steps": self.sampler.repair_step_count(),
                "repair_kinds": list(self.sampler.repaired_kinds())}


def resolve(request: Request, model: LoadedModel) -> Plan:
    """The plan for ``request`` on ``model``: its shipped defaults applied where the request leaves a choice."""
    outline = outline_choice(request, model)
    outlined = outline == "auto" and request.new_piece and stores_outlines(model)
    key_from = key_source(request, outlined)
    sampler = held_kinds(model_sampler(request.sampler, model), key_asked=key_from in ("asked", "outline"))
    if key_from == "piece" and request.in_context and unguided_there(request.sampler):
        sampler = dataclasses.replace(sampler, cfg_scale=0.0)
    sharpness = (request.copy_sharpness if request.copy_sharpness is not None
                 else sampling_sharpness(request.anything_known))
    return Plan(outline, outlined, key_from, request.key if key_from == "asked" else None, sampler, sharpness,
                model.conditional)


def model_sampler(sampler: SamplerOptions, model: LoadedModel) -> SamplerOptions:
    """``sampler`` with each option left at None taken from the model's shipped defaults (its guidance scale)."""
    return sampler.with_defaults(model.sampler_defaults)


def guidance_scale(model: LoadedModel, sampler: SamplerOptions | None = None) -> float:
    """The classifier-free guidance scale ``sampler`` (default: nothing asked) samples ``model`` with."""
    return model_sampler(sampler or SamplerOptions(), model).guidance_scale()


def outline_choice(request: Request, model: LoadedModel) -> Literal["auto", "none"]:
    """The request's outline choice, ``model`` resolved to the model's shipped one where nothing is asked, else
    ``none``: the shipped choice was measured on pieces told nothing (module docstring)."""
    if request.outline != "model":
        return request.outline
    return "none" if request.asks else model.sampler_defaults.get("outline", "none")


def stores_outlines(model: LoadedModel) -> bool:
    """Whether the model carries training outlines to draw from (models trained with attributes)."""
    return bool((model.hparams.get("attributes") or {}).get("outlines"))


def key_source(request: Request, outlined: bool) -> KeySource:
    """Where the told key comes from: asked, the outline's, drawn for a new piece, else the piece's own."""
    if request.key != "auto":
        return "asked"
    if outlined:
        return "outline"
    return "drawn" if request.new_piece else "piece"


def unguided_there(asked: SamplerOptions) -> bool:
    """Whether guidance may be left out of a run in context told the piece's own key (module docstring): no scale
    was asked and only the key would be guided."""
    return asked.cfg_scale is None and asked.guided_kinds() == ("key",)


def held_kinds(sampler: SamplerOptions, key_asked: bool) -> SamplerOptions:
    """The sampler options with the key left out of repair unless it was told (asked, or an outline's, which is
    held to whole like anything told); a drawn or estimated key is context (module docstring)."""
    if key_asked:
        return sampler
    kinds = [k for k in sampler.repaired_kinds() if k != "key"]
    return dataclasses.replace(sampler, repair_kinds=",".join(kinds) or "none")


# --- what a model with attributes is told ---------------------------------------------------------------------


def told(plan: Plan, model: LoadedModel, n: int, bars: int, pieces: torch.Tensor | None = None,
         generator: torch.Generator | None = None) -> Attributes | None:
    """What ``n`` pieces of ``bars`` bars are told before any bar targets (``[n, bars, I]``, I instruments): an
    outline (its key replaced by an asked one), else the plan's key alone. ``pieces [n or 1, L, K]``: the pieces
    around the edit, whose key is estimated where the plan says so. None for a model without attributes."""
    if not model.conditional:
        return None
    if plan.outlined:
        attrs = outlines(model, n, bars, generator)
        return attrs if plan.key is None else attrs.with_key(parse_key(plan.key))
    return Attributes.null(n, bars, model.tracks).with_key(keys(plan, model, n, pieces, generator))


def keys(plan: Plan, model: LoadedModel, n: int, pieces: torch.Tensor | None = None,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """The key each of ``n`` pieces is told without an outline ``LongTensor[n]`` (:func:`told`)."""
    if plan.key_from == "asked":
        return torch.full((n,), parse_key(plan.key))
    if plan.key_from == "piece":
        if pieces is None:
            raise ValueError("the key of the piece is told, but no piece was given")
        return default_keys(model, pieces, 1, generator).expand(n)
    return default_keys(model, None, n, generator)


def default_keys(model: LoadedModel, x: torch.Tensor | None, n: int, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
    """The key a conditional model is told when none is asked, ``LongTensor[len(x) or n]``: that of each given
    piece ``x [B, L, K]``, or for new pieces (``x`` None) ``n`` drawn from the training set's key distribution
    stored with the model (no key where none is stored)."""
    if x is not None:
        return estimate_key(x, model.tracks)
    prior = (model.hparams.get("attributes") or {}).get("key_prior")
    return draw_keys(prior, n, generator) if prior else torch.full((n,), KEY_NULL)


def outlines(model: LoadedModel, n: int, bars: int, generator: torch.Generator | None = None) -> Attributes:
    """``n`` outlines of ``bars`` bars drawn from the model's stored training outlines ``[n, bars, I]``: a longer
    piece joins several (keeping the first one's key), a shorter one takes the start of one."""
    bank = model.hparams["attributes"]["outlines"]
    parts = [draw_outlines(bank, n, generator) for _ in range(-(-bars // bank["shape"][1]))]
    return Attributes.cat_bars(parts).bars(0, bars)
