"""The reverse process of ASD3PM (spec section 3, thesis Algorithms 4 and 6): one sampler for every scenario.

Every conditioning scenario (unconditional, infilling, outpainting, interpolation, accompaniment, note-level)
is the same call with a different ``known`` mask (see :mod:`schmubert.conditioning`). A model trained with
attributes (:mod:`schmubert.attributes`) is also told ``attributes``; with ``cfg_scale`` w != 0 each step mixes
its conditional and unconditional logits by classifier-free guidance, ``cond + w (cond - uncond)``, both from
one batched forward pass of 2B pieces (w = 0 is exactly the conditional sampler, one pass of B); the
unconditional half has the guided kinds (``cfg_kinds``) null and the other kinds as told.

Shapes: ``x``/``x_t`` ``LongTensor[B, L, K]``; ``known`` ``BoolTensor[B, L, K]`` (True = keep); ``logits`` and
``probs`` lists of K tensors ``[B, L, C_k]``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from einops import repeat
from tqdm.auto import tqdm

from schmubert.attributes import KINDS, Attributes, misses
from schmubert.backbones.layers import Logits
from schmubert.backbones.registry import call
from schmubert.config import arg
from schmubert.copy_prior import reusing_network
from schmubert.diffusion import AbsorbingDiffusion, RevealSchedule, masked_fraction
from schmubert.precision import SamplePrecision, sampling_precision
from schmubert.tokens import (
    MELODIC_CLASSES,
    NO_EVENT,
    NO_ONSET,
    NOTE_OFF,
    STEPS_PER_BAR,
    VELOCITY_MASK,
    Track,
    instruments,
    is_onset,
)

#: Reverse steps used when none are given (issue 44): 16 on the cosine schedule, guided over the first half,
#: repair rounds of 8 steps (:data:`DEFAULT_REPAIR_STEPS`; the trio ships 4, the melody one round); on held-out
#: windows as good as the 128 linear steps before it, at a tenth of the trio's network evaluations
#: (``experiments/bench_decoding.py``, ``experiments/bench_speed.py``; the table in experiments/README.md,
#: "Interactive speed"). ``--steps 128 --schedule linear --cfg-interval 1 --cfg-scale S --repair 2 --repair-steps
#: 32`` (S the model's scale) is the sampler as it was; ``--steps 1024 --schedule linear`` the thesis' T.
DEFAULT_STEPS = 16
#: Repair rounds where neither the user nor the model sets them.
DEFAULT_REPAIR = 2
#: Reverse steps of a repair round where neither the user nor the model sets them (32 before issue 44).
DEFAULT_REPAIR_STEPS = 8
#: The editor's default: infilling 16 bars inside a song (riff copy at 8 steps in experiments/README.md).
EDITOR_STEPS = 8
#: Classifier-free guidance scale for a model that ships none (``SamplerOptions.cfg_scale`` None).
DEFAULT_CFG_SCALE = 2.0
Order = Literal["random", "confidence", "outside-in"]
ORDERS: tuple[str, ...] = typing.get_args(Order)
RemaskOrder = Literal["random", "confidence"]
REMASK_ORDERS: tuple[str, ...] = typing.get_args(RemaskOrder)
Remask = Literal["off", "cap", "rescale"]
REMASKS: tuple[str, ...] = typing.get_args(Remask)
#: ``guidance(probs, x_t, masked) -> probs``: moves the predicted x0 probabilities (thesis Algorithm 6).
Guidance = Callable[[list[torch.Tensor], torch.Tensor, torch.Tensor], list[torch.Tensor]]


@dataclass
class SamplerOptions:
    """Options of :func:`sample` (also the sampling options of ``python -m schmubert.sample``). A field whose
    default is None takes a model's own default where it ships one (:meth:`with_defaults`)."""

    temperature: float = arg(1.0, "softmax temperature of the predicted categorical")
    top_p: float = arg(1.0, "nucleus sampling: keep the most probable classes up to this mass (1 = off)")
    order: Order = arg("outside-in", "unmasking order: random (each masked element by the schedule's rate, "
                                     "thesis Algorithm 4), confidence (the same count, most certain first) or "
                                     "outside-in (the same count, the bars nearest to a bar with anything known "
                                     "first, at random within a distance; with nothing known, random). outside-in "
                                     "from experiments/bench_riff_copy.py with pretrained:trio at copy sharpness 4: "
                                     "the repeated bars' onsets 70.0 -> 73.4 percent, the other bars' 51.8 -> "
                                     "53.0")
    schedule: RevealSchedule = arg(
        "cosine", "how many elements each step reveals: linear (1/t of the rest, the thesis), cosine "
                  "(MaskGIT: few first, many last; the default since issue 44: at 16 steps as good as linear at "
                  "128, experiments/README.md) or square (between)")
    reuse: bool = arg(True, "reuse the denoiser output when nothing changed since the last call (exact)")
    network_every: int = arg(1, "models with a copy prior: compute the network on every N-th step of a reverse "
                                "run only and reuse its last output in between, the copy prior mixed in afresh "
                                "from the piece as drawn so far at every step (1: every step). An infill of "
                                "pretrained:trio at 8 steps with the network once drew 99.7 percent of the same "
                                "tokens (experiments/README.md, 'The network once, the copy prior every step')")
    remask: Remask = arg(
        "off", "ReMDM re-masking of generated (never known) elements so later steps can revise them: off, "
               "cap (rate min(eta, sigma_max)) or rescale (rate eta * sigma_max); sigma_max is the most the "
               "schedule allows")
    remask_eta: float = arg(0.02, "ReMDM eta: the rate cap (--remask cap) or the share of sigma_max (rescale)")
    remask_order: RemaskOrder = arg("random", "which generated elements are re-masked: random, or confidence "
                                              "(the least probable when they were drawn, ReMDM-conf)")
    remask_loop: float = arg(0.0, "ReMDM-loop: share of the steps spent at the fixed masked fraction "
                                  "--remask-loop-level, re-masking only there (0 = re-mask at every step)")
    remask_loop_level: float = arg(0.1, "masked fraction held during the ReMDM loop")
    cfg_scale: float | None = arg(None, "classifier-free guidance scale w for models trained with attributes: "
                                        "logits cond + w * (cond - uncond); 0 = the plain conditional model (one "
                                        "forward pass per step; w != 0 takes one pass of twice the batch). "
                                        "Default: the scale the model was shipped with (pretrained:trio 1.5), else "
                                        "2. 2 from experiments/bench_control.py with pretrained:trio: asked key "
                                        "0.41 -> 0.83, statistics overlap 0.49 -> 0.55; the trio's stage 8 "
                                        "matched the data better at 1.5 and the melody at 2 (experiments/README.md)"
                                        "; models without attributes ignore it")
    cfg_interval: float = arg(0.5, "share of each reverse run's steps, from the first, that use guidance; the "
                                   "later steps take one conditional pass of B pieces (1 = every step, as "
                                   "before issue 44). Guidance shapes what is decided early, when most of the "
                                   "piece is masked (Kynkaanniemi et al. 2024 for images); 0.5 kept the held-out "
                                   "figures of both shipped models (experiments/README.md)")
    cfg_kinds: str = arg("key", "the attribute kinds guidance pushes, comma-separated (key, onsets, register, "
                                "dynamics) or "
                                "all: the unconditional half nulls only these, so the other kinds told condition "
                                "both halves (followed as at scale 0, not amplified). key from "
                                "experiments/bench_control.py: guided densities overshoot (melody within +-1 "
                                "onset 0.64 at scale 0, 0.30 guided at 2) and a guided register gains nothing")

    repair: int | None = arg(None, "rounds of repair for a model told attributes: after sampling, the generated "
                                   "bars of a track that miss what they were told (onsets by more than 1, register "
                                   "by more than one 3-semitone bin) are masked and drawn again, and a piece "
                                   "estimated in another key than told is drawn again whole (known elements stay); "
                                   "0 = off. 2 from experiments/bench_control.py with pretrained:trio at guidance "
                                   "2: asked key 0.83 -> 0.98, melody bars within +-1 onset of their target 0.56 "
                                   "-> 0.96, register 0.87 -> 0.91, at 1.23x the time (with nothing told, nothing "
                                   "is drawn again). Default: the model's shipped rounds (pretrained:melody 1: its "
                                   "held-out figures as at 2, at 0.80x the time of a new piece; issue 44), else 2")
    repair_steps: int | None = arg(None, "reverse steps of each repair round. Default: the model's shipped ones "
                                         "(pretrained:trio 4: its held-out figures as at 8, at 0.73x the time of "
                                         "a new piece; the melody's fell at 4), else 8 (32 before issue 44; "
                                         "experiments/README.md, \"Interactive speed\")")
    max_hold: int | None = arg(None, "longest a drawn note of a polyphonic instrument's voice may hold, in 16th "
                                     "steps: a voice is not let start a note that the silence already drawn "
                                     "after it would hold longer, nor hold one longer (its class 0 means hold "
                                     "after a note-on and rest after a note-off, so a rest drawn before the note "
                                     "before it became a hold; bounded_holds). 0 = unbounded. Default: the "
                                     "model's shipped bound (the pop909 model in training: 32, longer than all "
                                     "but a thousandth of POP909's notes), else unbounded; monophonic tracks are "
                                     "never bounded")
    repair_kinds: str = arg("all", "the attribute kinds repair holds the samples to, comma-separated (key, onsets, "
                                   "register, dynamics: a velocity model's bars), all or none. The sample CLI "
                                   "and the editor leave the key out "
                                   "when it was neither asked nor an outline's (--key auto: drawn or "
                                   "estimated from the input)")

    def with_defaults(self, defaults: Mapping[str, Any]) -> SamplerOptions:
        """These options with each field left at None taken from ``defaults`` (a model's
        :attr:`~schmubert.checkpoints.LoadedModel.sampler_defaults`); a field set here is kept."""
        unset = {k: v for k, v in defaults.items() if k in SAMPLER_FIELDS and getattr(self, k) is None}
        return dataclasses.replace(self, **unset)

    def guidance_scale(self) -> float:
        """``cfg_scale``, or :data:`DEFAULT_CFG_SCALE` where neither the user nor the model set one."""
        return DEFAULT_CFG_SCALE if self.cfg_scale is None else self.cfg_scale

    def repair_rounds(self) -> int:
        """``repair``, or :data:`DEFAULT_REPAIR` where neither the user nor the model set it."""
        return DEFAULT_REPAIR if self.repair is None else self.repair

    def repair_step_count(self) -> int:
        """``repair_steps``, or :data:`DEFAULT_REPAIR_STEPS` where neither the user nor the model set them."""
        return DEFAULT_REPAIR_STEPS if self.repair_steps is None else self.repair_steps

    def hold_limit(self) -> int:
        """``max_hold``, or 0 (unbounded) where neither the user nor the model set it."""
        return self.max_hold or 0

    def guided_kinds(self) -> tuple[str, ...]:
        """``cfg_kinds`` as a tuple of :data:`schmubert.attributes.KINDS`."""
        return parse_kinds(self.cfg_kinds, "cfg_kinds", allow_none=False)

    def repaired_kinds(self) -> tuple[str, ...]:
        """``repair_kinds`` as a tuple of :data:`schmubert.attributes.KINDS` (empty for 'none')."""
        return parse_kinds(self.repair_kinds, "repair_kinds", allow_none=True)


#: The names of :class:`SamplerOptions`' fields (what a model's sampler defaults may set).
SAMPLER_FIELDS = frozenset(f.name for f in dataclasses.fields(SamplerOptions))


def parse_kinds(text: str, name: str, allow_none: bool) -> tuple[str, ...]:
    """``"key,onsets"`` -> ``("key", "onsets")``; ``all`` -> every kind; ``none`` -> () where allowed."""
    names = [k.strip() for k in text.split(",") if k.strip()]
    if names == ["none"] and allow_none:
        return ()
    kinds = KINDS if names == ["all"] else tuple(names)
    if set(kinds) - set(KINDS) or not kinds:
        raise ValueError(f"{name} {text!r}: expected 'all'{', none' if allow_none else ''} or some of "
                         f"{', '.join(KINDS)}")
    return kinds


def uniform(shape: Sequence[int], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Uniform [0, 1) numbers drawn on the generator's device (a CPU generator reproduces on any device)."""
    gen_device = generator.device if generator is not None else device
    return torch.rand(tuple(shape), generator=generator, device=gen_device).to(device)


def top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filter ``[..., C]``: keep the fewest most probable classes whose mass reaches ``top_p``."""
    if top_p >= 1.0:
        return probs
    sorted_p, idx = probs.sort(dim=-1, descending=True)
    before = sorted_p.cumsum(-1) - sorted_p  # mass of the classes ranked above each one
    sorted_p = sorted_p.masked_fill(before >= top_p, 0.0)
    filtered = torch.zeros_like(probs).scatter_(-1, idx, sorted_p)
    return filtered / filtered.sum(-1, keepdim=True)


def draw(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Categorical draw by inverse CDF: ``probs [N, C]``, ``u [N]`` uniform -> ``LongTensor[N]``."""
    cdf = probs.cumsum(-1)
    cdf = cdf / cdf[:, -1:].clamp_min(1e-12)
    idx = torch.searchsorted(cdf, u.unsqueeze(-1).to(cdf.dtype), right=True).squeeze(-1)
    return idx.clamp_(max=probs.shape[-1] - 1)


def predict_probs(logits: Sequence[torch.Tensor], temperature: float) -> list[torch.Tensor]:
    """Softmax of ``logits / temperature`` per track, in float32."""
    return [torch.softmax(lg.float() / temperature, dim=-1) for lg in logits]


# --- the plan of a run: reveal and re-mask rates per step ---------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One reverse step: ``step`` (S..1), the probability a masked element is revealed (``reveal``; the
    confidence order reveals ``count(n_masked)``) and the probability a generated one is re-masked (``remask``)."""

    step: int
    reveal: float
    remask: float
    count: Callable[[torch.Tensor], torch.Tensor]


def plan_steps(diffusion: AbsorbingDiffusion, steps: int, opts: SamplerOptions) -> list[Step]:
    """The steps S..1 of a run. Without re-masking, the schedule's own rates (exactly 1/t for 'linear')."""
    if opts.remask == "off":
        return [Step(s, diffusion.reveal_probability(s, steps, opts.schedule), 0.0,
                     lambda n, s=s: diffusion.reveal_count(n, s, steps, opts.schedule)) for s in range(steps, 0, -1)]
    levels, looping = noise_levels(steps, opts)
    plan = []
    for i, s in enumerate(range(steps, 0, -1)):
        sigma = remask_rate(levels[i], levels[i + 1], opts) if looping[i] or opts.remask_loop == 0 else 0.0
        p = reveal_with_remask(levels[i], levels[i + 1], sigma)
        plan.append(Step(s, p, sigma, lambda n, p=p: torch.round(n.float() * p).long()))
    return plan


def noise_levels(steps: int, opts: SamplerOptions) -> tuple[list[float], list[bool]]:
    """Masked fraction before each step and after the last (``steps + 1`` values from 1 down to 0), and
    per step whether it is a ReMDM loop step (held at ``remask_loop_level``)."""
    n_loop = round(opts.remask_loop * steps)
    n_main = steps - n_loop - (1 if n_loop else 0)
    main = [masked_fraction(j / n_main, opts.schedule) for j in range(n_main, -1, -1)]
    if n_loop == 0:
        return main, [False] * steps
    level = opts.remask_loop_level
    levels = sorted(main + [level] * (n_loop + 1), reverse=True)
    looping = [a == b == level for a, b in zip(levels, levels[1:], strict=False)]
    return levels, looping


def remask_rate(before: float, after: float, opts: SamplerOptions) -> float:
    """ReMDM sigma for a step from masked fraction ``before`` to ``after``, at most
    ``sigma_max = min(1, after / (1 - before))`` so the step can still reach ``after`` in expectation."""
    if before >= 1.0:
        return 0.0  # nothing generated yet
    sigma_max = min(1.0, after / (1.0 - before))
    return min(opts.remask_eta, sigma_max) if opts.remask == "cap" else opts.remask_eta * sigma_max


def reveal_with_remask(before: float, after: float, sigma: float) -> float:
    """ReMDM's reveal probability of a masked element: ``(before - after + sigma (1 - before)) / before``,
    so that the expected masked fraction after the step is ``after`` while a share sigma is re-masked."""
    return min(1.0, (before - after + sigma * (1.0 - before)) / before)


# --- choosing elements --------------------------------------------------------------------------------------


def certainty(probs: list[torch.Tensor]) -> torch.Tensor:
    """The highest class probability of every element, ``[B, L, K]``."""
    return torch.stack([p.max(-1).values for p in probs], dim=-1)


def pick_top(score: torch.Tensor, among: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """``count [B]`` elements of ``among [B, L, K]`` with the highest ``score`` per sample (``score`` must
    rank every element outside ``among`` below those inside)."""
    B = among.shape[0]
    score = score.view(B, -1)
    ranks = score.argsort(dim=1, descending=True).argsort(dim=1)  # rank of each element per sample
    return ((ranks < count.unsqueeze(1)) & among.view(B, -1)).view_as(among)


def confidence_reveal(probs: list[torch.Tensor], masked: torch.Tensor, step: Step) -> torch.Tensor:
    """Reveal ``step.count(masked)`` elements per sample, the most certain (highest max-probability) first."""
    B = masked.shape[0]
    return pick_top(certainty(probs).masked_fill(~masked, -1.0), masked, step.count(masked.view(B, -1).sum(1)))


def context_distance(known: torch.Tensor) -> torch.Tensor:
    """Per element of ``known [B, L, K]``, how many bars its bar lies from the nearest bar where any track has a
    known element, ``[B, L, K]`` float (0 inside such bars; L / 16 everywhere when nothing is known)."""
    B, L, K = known.shape
    bars = -(-L // STEPS_PER_BAR)
    padded = torch.nn.functional.pad(known.any(-1), (0, bars * STEPS_PER_BAR - L))  # [B, bars * 16]
    has = padded.view(B, bars, STEPS_PER_BAR).any(-1)  # [B, bars]
    index = torch.arange(bars, device=known.device, dtype=torch.float32)
    gap = (index[None, :, None] - index[None, None, :]).abs()  # [1, bars, bars]
    dist = gap.masked_fill(~has[:, None, :], float(bars)).min(-1).values  # [B, bars]
    return repeat(dist, "b bars -> b (bars s) k", s=STEPS_PER_BAR, k=K)[:, :L]


def outside_in_reveal(masked: torch.Tensor, distance: torch.Tensor, step: Step,
                      generator: torch.Generator | None) -> torch.Tensor:
    """Reveal ``step.count(masked)`` elements per sample, nearest bars to the known context first (ties at
    random)."""
    B = masked.shape[0]
    score = (-distance + uniform(masked.shape, generator, masked.device)).masked_fill(~masked, -math.inf)
    return pick_top(score, masked, step.count(masked.view(B, -1).sum(1)))


def random_reveal(masked: torch.Tensor, probability: float, generator: torch.Generator | None) -> torch.Tensor:
    """Reveal each masked element with ``probability``."""
    u = uniform(masked.shape, generator, masked.device)
    return masked & (u < probability)


def choose_remask(generated: torch.Tensor, step: Step, opts: SamplerOptions, drawn_p: torch.Tensor | None,
                  generator: torch.Generator | None) -> torch.Tensor:
    """Generated elements to re-mask ``[B, L, K]``: each with ``step.remask`` (random), or the same expected
    count, least probable at their draw first (confidence)."""
    if step.remask == 0.0 or not generated.any():
        return torch.zeros_like(generated)
    if opts.remask_order == "random":
        return generated & (uniform(generated.shape, generator, generated.device) < step.remask)
    count = torch.round(generated.view(len(generated), -1).sum(1).float() * step.remask).long()
    return pick_top((-drawn_p).masked_fill(~generated, -2.0), generated, count)


def check_inputs(diffusion: AbsorbingDiffusion, x: torch.Tensor, known: torch.Tensor, steps: int,
                 opts: SamplerOptions) -> None:
    if x.dim() != 3 or known.shape != x.shape:
        raise ValueError(f"x and known must both be [B, L, K]; got {tuple(x.shape)} and {tuple(known.shape)}")
    if x.shape[-1] != diffusion.num_tracks:
        raise ValueError(f"x has K={x.shape[-1]} tracks but the model has {diffusion.num_tracks}")
    if not 1 <= steps:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if opts.temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {opts.temperature}")
    if not 0 < opts.top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {opts.top_p}")
    for name, value, allowed in (("order", opts.order, ORDERS), ("remask_order", opts.remask_order, REMASK_ORDERS),
                                 ("remask", opts.remask, REMASKS)):
        if value not in allowed:
            raise ValueError(f"unknown {name} {value!r}; expected one of {allowed}")
    masked_fraction(1.0, opts.schedule)  # names an unknown schedule
    if opts.remask_eta < 0 or (opts.remask == "rescale" and opts.remask_eta > 1):
        raise ValueError(f"remask_eta must be >= 0 (at most 1 with rescale), got {opts.remask_eta}")
    if not 0 <= opts.remask_loop < 1 or not 0 < opts.remask_loop_level < 1:
        raise ValueError(f"remask_loop must be in [0, 1) and remask_loop_level in (0, 1); got "
                         f"{opts.remask_loop} and {opts.remask_loop_level}")
    if opts.network_every < 1:
        raise ValueError(f"network_every must be >= 1, got {opts.network_every}")
    if opts.remask_loop and opts.remask == "off":
        raise ValueError("remask_loop needs a re-masking rate (remask cap or rescale)")
    if opts.remask_loop and steps - round(opts.remask_loop * steps) < 2:
        raise ValueError(f"remask_loop {opts.remask_loop} leaves fewer than 2 of the {steps} steps to unmask")
    if opts.repair_rounds() < 0 or opts.repair_step_count() < 1:
        raise ValueError(f"repair must be >= 0 and repair_steps >= 1, got {opts.repair} and {opts.repair_steps}")
    if not math.isfinite(opts.guidance_scale()):
        raise ValueError(f"cfg_scale must be finite, got {opts.cfg_scale}")
    opts.guided_kinds()
    opts.repaired_kinds()


def check_attributes(attributes: Attributes | None, x: torch.Tensor) -> None:
    """Raise a ValueError unless ``attributes`` fit ``x [B, L, K]`` (batch B or 1, bars = L / 16 rounded up)."""
    if attributes is None:
        return
    B, L, K = x.shape
    bars = -(-L // STEPS_PER_BAR)
    b, have_bars, k = attributes.shape
    if b not in (1, B) or have_bars != bars or k != K or attributes.key.shape != (b,):
        raise ValueError(f"attributes of shape key {tuple(attributes.key.shape)}, bars [{b}, {have_bars}, {k}] "
                         f"do not fit pieces [{B}, {L}, {K}] ({bars} bars)")


def predict_logits(denoiser: torch.nn.Module, x_t: torch.Tensor, attributes: Attributes | None,
                   cfg_scale: float, uncond: Attributes | None = None,
                   velocity: torch.Tensor | None = None) -> list[torch.Tensor]:
    """The denoiser's logits at ``x_t [B, L, K]`` (K x ``[B, L, C_k]``): unconditioned (``attributes`` None),
    conditional (``cfg_scale`` 0), or classifier-free guided ``cond + w (cond - uncond)`` from one forward pass
    over ``[x_t; x_t]`` with ``[attributes; uncond]`` (``uncond`` None: every attribute null). ``velocity``
    ``[B, L, K]``: the velocity bins a velocity model is shown (its velocity logits, of the conditional half
    under guidance, come back in ``Logits.velocity``)."""
    if attributes is None or cfg_scale == 0:
        return call(denoiser, x_t, attributes, velocity)
    B = x_t.shape[0]
    uncond = attributes.null_like() if uncond is None else uncond
    both = call(denoiser, torch.cat([x_t, x_t]), Attributes.cat([attributes, uncond]),
                None if velocity is None else torch.cat([velocity, velocity]))
    guided = [lg[:B] + cfg_scale * (lg[:B] - lg[B:]) for lg in both]
    return guided if velocity is None else Logits(guided, [v[:B] for v in both.velocity])


def draw_velocity(v_t: torch.Tensor, logits: Logits, x_t: torch.Tensor, reveal: torch.Tensor,
                  tracks: Sequence[Track], temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """The velocity bins of the elements revealed this step: drawn from the velocity head where the drawn token
    starts a note (over the bins, never "no onset"), :data:`~schmubert.tokens.NO_ONSET` elsewhere.
    ``v_t``/``x_t``/``reveal`` ``[B, L, K]``; returns the new ``v_t``."""
    v_t = v_t.clone()
    for k, track in enumerate(tracks):
        where = reveal[..., k]
        if not where.any():
            continue
        onset = where & is_onset(x_t[..., k], track)
        v_t[..., k][where & ~onset] = NO_ONSET
        n = int(onset.sum())
        if n:
            p = torch.softmax(logits.velocity[k][onset].float()[:, 1:] / temperature, dim=-1)
            v_t[..., k][onset] = draw(p, uniform((n,), generator, x_t.device)) + 1
    return v_t


# --- the sampler --------------------------------------------------------------------------------------------


@torch.no_grad()
def sample(denoiser: torch.nn.Module, diffusion: AbsorbingDiffusion, x: torch.Tensor, known: torch.Tensor,
           steps: int, generator: torch.Generator | None = None, options: SamplerOptions | None = None, *,
           guidance: Guidance | None = None, attributes: Attributes | None = None,
           tracks: Sequence[Track] | None = None, progress: bool = False, stats: dict | None = None,
           velocity: torch.Tensor | None = None, **fields) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Fill every unknown element of ``x`` by the reverse process; returns ``LongTensor[B, L, K]``.

    x: ``LongTensor[B, L, K]`` known tokens (values where ``~known`` are ignored); known:
    ``BoolTensor[B, L, K]`` (True = keep; a kept element holding its track's mask id is filled too).
    steps: the number S of reverse steps (any S >= 1; the denoiser does not see t).
    options: :class:`SamplerOptions` (``fields`` override single ones, e.g. ``order="confidence"``): the order
    and schedule of reveals (thesis Algorithm 4 is 'random' + 'linear': each masked element with probability
    1/t), temperature and top-p of the draws, exact reuse of the denoiser output when ``x_t`` did not change,
    ReMDM re-masking, and repair rounds. guidance: a function moving the probabilities before the draw (thesis
    Algorithm 6). attributes: what a conditional model is told (:class:`~schmubert.attributes.Attributes` of
    batch B or 1, bars = L / 16; None: nothing), guided by ``options.cfg_scale``. tracks: the model's tracks,
    which ``options.repair`` computes what the samples have with (default: ``denoiser.tracks``, as backbones
    have them).
    ``generator`` drives every random draw. ``stats`` (a dict) receives ``calls``, the number of denoiser
    calls, ``remasked``, the number of re-masked elements, and ``repaired``, the elements drawn again by repair.
    The result has no mask left and every other ``x[known]`` unchanged. Runs on the denoiser's device.
    velocity: for a model that predicts velocity (``denoiser.predicts_velocity``), the velocity bins
    ``LongTensor[B, L, K]`` of the known elements (others ignored); each element's bin is drawn with its token
    (:func:`draw_velocity`), and the result is ``(x, velocity)``.
    """
    opts = dataclasses.replace(options or SamplerOptions(), **fields)
    check_inputs(diffusion, x, known, steps, opts)
    check_attributes(attributes, x)
    tracks = tracks if tracks is not None else getattr(denoiser, "tracks", None)
    if opts.repair_rounds() and attributes is not None and tracks is None:
        raise ValueError("repair needs the model's tracks to compute what samples have: pass "
                         "sample(..., tracks=model.tracks), or repair=0")
    device = next(denoiser.parameters()).device
    x, known = x.to(device), known.to(device)
    if attributes is not None:
        attributes = attributes.expand(x.shape[0]).to(device)
    mask_value = diffusion.mask_value(device)  # [K]
    # a mask id is never "known": it is filled like the rest; PAD (ids above the mask) always is, never drawn
    known = (known & (x != mask_value)) | (x > mask_value)
    voices = [ks for _, ks in instruments(tracks) if len(ks) > 1] if tracks is not None else []
    run = functools.partial(reverse, denoiser, diffusion, generator=generator, opts=opts, guidance=guidance,
                            progress=progress, voices=voices, tracks=tracks)
    counts = {"calls": 0, "remasked": 0, "repaired": 0}
    if velocity is not None and not getattr(denoiser, "predicts_velocity", False):
        raise ValueError("velocity was given but the model does not predict velocity (backbone option velocity)")
    v_t = None if velocity is None else torch.where(known, velocity.to(device), VELOCITY_MASK)
    x_t, v_t = run(torch.where(known, x, mask_value), known, steps, attributes, counts, velocity=v_t)
    held = None if attributes is None else attributes.without(set(KINDS) - set(opts.repaired_kinds()))
    for _ in range(opts.repair_rounds() if attributes is not None else 0):
        key_miss, bar_miss = misses(held, x_t, tracks, velocity=v_t)
        bar_miss = repeat(bar_miss, "b bars k -> b (bars s) k", s=STEPS_PER_BAR)[:, :x_t.shape[1]]
        redo = ~known & (key_miss[:, None, None] | bar_miss)  # [B, L, K]: generated elements to draw again
        rows = redo.flatten(1).any(1).nonzero().squeeze(1)
        if not len(rows):
            break
        again = redo[rows]
        redrawn, v_rows = run(torch.where(again, mask_value, x_t[rows]), ~again, opts.repair_step_count(),
                              attributes.select(rows), counts,
                              velocity=None if v_t is None else torch.where(again, VELOCITY_MASK, v_t[rows]))
        x_t[rows] = redrawn
        if v_t is not None:
            v_t[rows] = v_rows
        counts["repaired"] += int(again.sum())
    if stats is not None:
        stats.update(counts)
    return x_t if v_t is None else (x_t, v_t)


def reverse(denoiser: torch.nn.Module, diffusion: AbsorbingDiffusion, x_t: torch.Tensor, known: torch.Tensor,
            steps: int, attributes: Attributes | None, counts: dict, *, generator: torch.Generator | None,
            opts: SamplerOptions, guidance: Guidance | None, progress: bool,
            voices: Sequence[Sequence[int]] = (), tracks: Sequence[Track] | None = None,
            velocity: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The reverse process from ``x_t [B, L, K]`` (masks exactly where ``~known``) to a piece without masks;
    adds its denoiser calls and re-masked elements to ``counts``. ``voices``: the columns of each polyphonic
    instrument, whose voices never start a pitch another of its voices sounds (:func:`exclusive_pitches`).
    ``velocity``: the velocity bins ``[B, L, K]`` (``VELOCITY_MASK`` where ``~known``) of a velocity model,
    drawn with the tokens. Returns ``(x, velocity)`` (velocity None without one)."""
    # guidance needs a guided kind told: otherwise the two halves would be the same pass
    uncond = attributes.without(opts.guided_kinds()) if attributes is not None else None
    cfg_scale = 0.0 if attributes is None or attributes.equals(uncond) else opts.guidance_scale()
    plan = plan_steps(diffusion, steps, opts)
    guided_steps = guided_count(len(plan), opts.cfg_interval) if cfg_scale else 0
    mask_value = diffusion.mask_value(x_t.device)
    masked = ~known
    track_p = opts.remask != "off" and opts.remask_order == "confidence"
    drawn_p = torch.zeros(x_t.shape, device=x_t.device) if track_p else None  # probability of each drawn element
    logits, changed = None, True
    # PAD slots are known but tell nothing: a short bar is context only where its notes are
    distance = context_distance(known & (x_t <= mask_value)) if opts.order == "outside-in" else None
    with reusing_network(denoiser, opts.network_every):  # the network afresh at the run's first step
        for i, step in enumerate(tqdm(plan, desc="sampling", disable=not progress, leave=False)):
            if not masked.any() and step.remask == 0.0:
                continue
            scale = cfg_scale if i < guided_steps else 0.0
            if logits is None or changed or not opts.reuse or (i == guided_steps and cfg_scale):
                logits = predict_logits(denoiser, x_t, attributes, scale, uncond, velocity)
                counts["calls"] += 1
            reveal, rows = choose_reveal(logits, x_t, masked, step, opts, guidance, generator, distance)
            remask = choose_remask(~known & ~masked, step, opts, drawn_p, generator)
            if voices:
                rows = exclusive_pitches(rows, x_t, voices)
                if opts.hold_limit():
                    rows = bounded_holds(rows, x_t, [k for ks in voices for k in ks], opts.hold_limit())
            x_t = reveal_draws(x_t, reveal, rows, len(logits), opts.top_p, generator, drawn_p)
            if velocity is not None:
                velocity = draw_velocity(velocity, logits, x_t, reveal, tracks, opts.temperature, generator)
                velocity = torch.where(remask, VELOCITY_MASK, velocity)
            x_t = torch.where(remask, mask_value, x_t)
            masked = (masked & ~reveal) | remask
            changed = bool(reveal.any() or remask.any())
            counts["remasked"] += int(remask.sum())
    if voices and opts.hold_limit():
        x_t = end_long_notes(x_t, ~known, [k for ks in voices for k in ks], opts.hold_limit())
    return x_t, velocity


def guided_count(steps: int, interval: float) -> int:
    """How many of a run's ``steps`` (the first ones) are guided at ``cfg_interval`` ``interval`` in [0, 1]."""
    if not 0.0 <= interval <= 1.0:
        raise ValueError(f"cfg_interval must be in [0, 1], got {interval}")
    return math.ceil(interval * steps - 1e-9)


RowProbs = Callable[[int, torch.Tensor], torch.Tensor]


def choose_reveal(logits: list[torch.Tensor], x_t: torch.Tensor, masked: torch.Tensor, step: Step,
                  opts: SamplerOptions, guidance: Guidance | None, generator: torch.Generator | None,
                  distance: torch.Tensor | None = None) -> tuple[torch.Tensor, RowProbs]:
    """The elements revealed this step ``[B, L, K]`` and ``rows(k, where)``, track k's probabilities there
    (``distance``: :func:`context_distance` of the run, for the outside-in order)."""
    if opts.order != "confidence" and guidance is None:  # softmax only the rows drawn this step
        reveal = positional_reveal(masked, step, opts.order, distance, generator)
        return reveal, lambda k, where: torch.softmax(logits[k][where].float() / opts.temperature, dim=-1)
    probs = predict_probs(logits, opts.temperature)
    if guidance is not None:
        probs = guidance(probs, x_t, masked)
    if opts.order == "confidence":
        reveal = confidence_reveal(probs, masked, step)
    else:
        reveal = positional_reveal(masked, step, opts.order, distance, generator)
    return reveal, lambda k, where: probs[k][where]


def positional_reveal(masked: torch.Tensor, step: Step, order: str, distance: torch.Tensor | None,
                      generator: torch.Generator | None) -> torch.Tensor:
    """The elements revealed this step by an order that needs no probabilities: random or outside-in."""
    if order == "outside-in":
        return outside_in_reveal(masked, distance, step, generator)
    return random_reveal(masked, step.reveal, generator)


def last_events(column: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For melodic token rows ``[B, L]``: the index of the last event at or before each step (-1: none) and
    whether that event starts a note, ``([B, L], [B, L])``. Events are note-ons, note-offs and masks; class 0 and
    PAD are not (PAD takes no time: a note held up to a short bar's end goes on after its PAD steps)."""
    event = (column != NO_EVENT) & (column <= MELODIC_CLASSES)
    index = torch.where(event, torch.arange(column.shape[-1], device=column.device), -1).cummax(dim=-1).values
    last = column.gather(-1, index.clamp(min=0))
    return index, (index >= 0) & (last > NOTE_OFF) & (last < MELODIC_CLASSES)


def sounding(column: torch.Tensor) -> torch.Tensor:
    """The class of the pitch sounding at each step of melodic token rows ``[B, L]`` -> ``[B, L]`` (0: none).

    A note sounds from its note-on through the holds after it; a note-off, a mask or another note-on ends it.
    PAD takes no time: a note held up to a short bar's end sounds on after its PAD steps.
    """
    index, starts = last_events(column)
    return torch.where(starts, column.gather(-1, index.clamp(min=0)), 0)


def exclusive_pitches(rows: RowProbs, x_t: torch.Tensor, voices: Sequence[Sequence[int]]) -> RowProbs:
    """``rows`` with the pitches that another voice of the same instrument sounds at a step taken out of a
    voice's draw there (renormalized; a row left with nothing keeps its probabilities).

    Voices drawn in the same step are not seen by each other here; the MIDI decoder ends a pitch re-struck by
    another voice, so a written instrument never sounds one pitch twice either way.
    """
    playing = {k: sounding(x_t[..., k]) for ks in voices for k in ks}  # [B, L] each
    group = {k: ks for ks in voices for k in ks}

    def filtered(k: int, where: torch.Tensor) -> torch.Tensor:
        p = rows(k, where)
        if k not in group:
            return p
        taken = torch.zeros_like(p, dtype=torch.bool)
        for other in group[k]:
            if other != k:
                taken.scatter_(-1, playing[other][where].unsqueeze(-1), True)
        taken[:, NO_EVENT] = False  # class 0 marks "nothing sounds", never a taken pitch
        kept = p.masked_fill(taken, 0.0)
        total = kept.sum(-1, keepdim=True)
        return torch.where(total > 0, kept / total.clamp(min=1e-30), p)

    return filtered


def hold_bounds(column: torch.Tensor, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Where a drawn element of melodic token rows ``[B, L]`` would make a note longer than ``limit`` steps:
    ``(must_end, cannot_start)`` ``[B, L]``. ``must_end``: a note-on lies ``limit`` or more steps before with
    only holds (class 0) between, so a hold here would exceed it; ``cannot_start``: the next event (a note-on,
    a note-off or a mask) is more than ``limit`` steps ahead (or none is, to the window's end), so a note-on
    here would hold past it. PAD is counted as steps (a bound in grid steps)."""
    L = column.shape[-1]
    pos = torch.arange(L, device=column.device)
    index, starts = last_events(column)
    prev = torch.cat([torch.full_like(index[..., :1], -1), index[..., :-1]], dim=-1)  # last event before a step
    sounds = torch.cat([torch.zeros_like(starts[..., :1]), starts[..., :-1]], dim=-1)  # ... and it is a note-on
    event = (column != NO_EVENT) & (column <= MELODIC_CLASSES)  # a mask is an event still to be drawn
    upcoming = torch.where(event, pos, L).flip(-1).cummin(dim=-1).values.flip(-1)
    nxt = torch.cat([upcoming[..., 1:], torch.full_like(upcoming[..., :1], L)], dim=-1)  # next event after
    return sounds & (pos - prev >= limit), nxt - pos > limit


def end_long_notes(x: torch.Tensor, generated: torch.Tensor, columns: Sequence[int], limit: int) -> torch.Tensor:
    """``x [B, L, K]`` with each note of a voice column that holds longer than ``limit`` steps ended there: a
    note-off written at its first generated hold ``limit`` or more steps after its note-on (what
    :func:`bounded_holds` could not prevent: holds drawn in one step with the masks before them)."""
    x = x.clone()
    pos = torch.arange(x.shape[1], device=x.device)
    for k in columns:
        column = x[..., k]
        last, starts = last_events(column)
        late = starts & generated[..., k] & (pos - last >= limit)  # a hold past the limit (limit >= 1)
        before = torch.cat([torch.zeros_like(late[..., :1]), late[..., :-1]], dim=-1)
        first = late & ~before  # consecutive late holds of one note: its first ends it
        x[..., k] = torch.where(first, NOTE_OFF, column)
    return x


def bounded_holds(rows: RowProbs, x_t: torch.Tensor, columns: Sequence[int], limit: int) -> RowProbs:
    """``rows`` with the draws that would hold a note of a voice column longer than ``limit`` steps taken out
    (:func:`hold_bounds`: a hold where the note has sounded ``limit`` steps, a note-on the drawn silence after it
    would hold longer; renormalized; a row left with nothing keeps its probabilities). Class 0 is a hold after
    a note-on and a rest after a note-off: drawn in parallel, a voice's rests drawn before the note before them
    turn into one note held for bars, which this prevents."""
    bounds = {k: hold_bounds(x_t[..., k], limit) for k in columns}

    def filtered(k: int, where: torch.Tensor) -> torch.Tensor:
        p = rows(k, where)
        if k not in bounds:
            return p
        must_end, cannot_start = (b[where] for b in bounds[k])
        kept = p.clone()
        kept[:, NO_EVENT] = kept[:, NO_EVENT].masked_fill(must_end, 0.0)
        kept[:, NOTE_OFF + 1:MELODIC_CLASSES] = kept[:, NOTE_OFF + 1:MELODIC_CLASSES].masked_fill(
            cannot_start[:, None], 0.0)
        total = kept.sum(-1, keepdim=True)
        return torch.where(total > 0, kept / total.clamp(min=1e-30), p)

    return filtered


def reveal_draws(x_t: torch.Tensor, reveal: torch.Tensor, rows: RowProbs, num_tracks: int, top_p: float,
                 generator: torch.Generator | None, drawn_p: torch.Tensor | None = None) -> torch.Tensor:
    """Draw x0 at the revealed elements only and write them into ``x_t`` (and their probability into
    ``drawn_p [B, L, K]`` when given). ``rows(k, where)``: track k's probabilities at ``where [B, L]``, ``[n, C_k]``.
    """
    x_t = x_t.clone()
    for k in range(num_tracks):
        where = reveal[..., k]  # [B, L]
        n = int(where.sum())
        if n == 0:
            continue
        p = top_p_filter(rows(k, where), top_p)  # [n, C_k]
        tokens = draw(p, uniform((n,), generator, x_t.device))
        x_t[..., k][where] = tokens
        if drawn_p is not None:
            drawn_p[..., k][where] = p.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return x_t


class Autocast(torch.nn.Module):
    """Runs ``denoiser`` under ``torch.autocast`` in bfloat16 (logits come back in float32)."""

    def __init__(self, denoiser: torch.nn.Module):
        super().__init__()
        self.denoiser = denoiser
        self.tracks = getattr(denoiser, "tracks", None)  # what the sampler's repair computes attributes with
        self.predicts_velocity = getattr(denoiser, "predicts_velocity", False)

    def forward(self, x_t: torch.Tensor, attrs: Attributes | None = None,
                velocity: torch.Tensor | None = None) -> list[torch.Tensor]:
        device = next(self.denoiser.parameters()).device
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = call(self.denoiser, x_t, attrs, velocity)
            vel = getattr(out, "velocity", None)
            return Logits([lg.float() for lg in out], None if vel is None else [v.float() for v in vel])


def fast_denoiser(denoiser: torch.nn.Module, precision: SamplePrecision = "fp32", compile: bool = False
                  ) -> torch.nn.Module:
    """``denoiser`` for sampling: under bf16 autocast and/or ``torch.compile`` (same inputs, same outputs up to
    rounding; compiling takes a while on the first call and again for each new batch shape). ``precision``
    ``auto`` is bf16 where it is native on the denoiser's device (:mod:`schmubert.precision`)."""
    precision = sampling_precision(precision, next(denoiser.parameters()).device)
    model = Autocast(denoiser) if precision == "bf16" else denoiser
    return torch.compile(model) if compile else model


def window_starts(length: int, window: int, hop: int) -> list[int]:
    """Starts of ``window``-step windows hopping by ``hop`` over ``length``; the last ends at the end."""
    if length <= window:
        return [0]
    starts = list(range(0, length - window, hop))
    return starts + [length - window]


def sample_long(denoiser: torch.nn.Module, diffusion: AbsorbingDiffusion, x: torch.Tensor,
                known: torch.Tensor, steps: int, generator: torch.Generator | None = None, *,
                window: int, hop: int, attributes: Attributes | None = None,
                progress: bool = False, **options) -> torch.Tensor:
    """:func:`sample` over a piece longer than the model's window: ``x``/``known`` ``[B, N, K]``, N > window.

    Windows of ``window`` steps slide by ``hop`` from the start; each window keeps what is known plus all that
    earlier windows generated (so each new window continues its ``window - hop`` steps of overlapping context)
    and fills the rest. ``attributes`` cover all N steps (bars = N / 16); each window is told its own bars.
    ``options`` are passed to :func:`sample`. Returns ``LongTensor[B, N, K]``.
    """
    if not 0 < hop <= window:
        raise ValueError(f"hop must be in 1..window ({window}), got {hop}")
    x, known = x.clone(), known.clone()
    starts = window_starts(x.shape[1], window, hop)
    for start in tqdm(starts, desc="windows", disable=not progress, leave=False):
        span = slice(start, start + window)
        told = None if attributes is None else attributes.bars(start // STEPS_PER_BAR,
                                                                -(-(start + window) // STEPS_PER_BAR))
        filled = sample(denoiser, diffusion, x[:, span], known[:, span], steps, generator, attributes=told,
                        **options)
        x[:, span] = filled.to(x.device)
        known[:, span] = True
    return x
