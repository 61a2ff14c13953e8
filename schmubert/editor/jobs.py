"""The model worker: the model is loaded once and one thread runs one sampling job at a time.

Which thread matters on a CPU: PyTorch's OpenMP ops run about a third slower in a thread other than the first
that used them (measured with pretrained:trio on 2 cores: an editor job 0.42 s in a worker thread, 0.27-0.30 s
in the thread that loaded the model, the same tokens; experiments/README.md, "The editor's thread"). So
``python -m schmubert.editor`` runs the jobs in its main thread (:meth:`Sampler.serve`) and the HTTP server
beside it; a :class:`Sampler` made for tests, benchmarks and embedding runs its own worker thread.

Requests queue for the model (two samplers on 2 cores would each run at half speed and use twice the memory);
each job reports its progress and can be cancelled, queued or running. A job is exactly ``python -m
schmubert.sample --input ... --infill ...``: :func:`schmubert.sample.generate_takes` over the known mask (one
:func:`schmubert.sampling.sample` call for a piece of the model's window; a velocity model is shown the known
velocity bins and draws each new note's bin, returned with the take), note ends before the masked span
preserved, guidance by :func:`schmubert.sample.make_guidance`, and the model's decoding defaults resolved by
:func:`schmubert.decoding.resolve` as for the CLI: a new piece (nothing kept, the lanes empty) is told what
``python -m schmubert.sample`` tells an unconditional one (the model's outline), with the same seeds.

Progress and cancelling need no hook in the sampler: the denoiser is wrapped (:class:`Watched`). Each reverse
step reveals an expected ``1/t`` of what is still masked, so the revealed share of the masked elements grows
linearly with the steps taken; the wrapper reads it from ``x_t`` at every denoiser call, and raises
:class:`Cancelled` there when the job was cancelled.
"""

from __future__ import annotations

import dataclasses
import itertools
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from schmubert import conditioning, decoding, sample, song
from schmubert.attributes import Attributes, BarTarget, apply_targets, bar_onsets, parse_key, parse_target
from schmubert.backbones.registry import call
from schmubert.checkpoints import LoadedModel
from schmubert.sample import SampleConfig, Scenario
from schmubert.sampling import EDITOR_STEPS, Order, SamplerOptions
from schmubert.tokens import NO_ONSET, STEPS_PER_BAR, Track, instruments, is_onset

State = Literal["queued", "running", "done", "cancelled", "failed"]


class Cancelled(Exception):
    """Raised inside the sampler when its job was cancelled."""


class Busy(Exception):
    """The queue is full."""


SAMPLER_DEFAULTS = SamplerOptions()
MAX_REPAIR = 8  # repair rounds one editor request may ask for (each can cost a pass of the sampler)


@dataclass
class Options:
    """What a user chooses for one sampling run (the editor's subset of :class:`SampleConfig`)."""

    steps: int = EDITOR_STEPS
    order: Order = SAMPLER_DEFAULTS.order  # the rest as the sample CLI's defaults
    schedule: Literal["linear", "cosine", "square"] = SAMPLER_DEFAULTS.schedule
    temperature: float = SAMPLER_DEFAULTS.temperature
    top_p: float = SAMPLER_DEFAULTS.top_p
    note_density: float | None = None
    density_tracks: list[str] = field(default_factory=list)  # empty: the tracks being generated
    seed: int | None = None  # None: a fresh seed per run (another take each time)
    key: str = "piece"  # models with attributes: "piece" (the piece's own key), "any" (none told), or "D:minor"
    cfg_scale: float | None = SAMPLER_DEFAULTS.cfg_scale  # classifier-free guidance scale; None: the model's
    cfg_interval: float = SAMPLER_DEFAULTS.cfg_interval  # share of the steps, from the first, that are guided
    repair: int | None = SAMPLER_DEFAULTS.repair  # rounds drawing again what missed; None: the model's
    repair_steps: int | None = SAMPLER_DEFAULTS.repair_steps  # steps of each repair round; None: the model's
    network_every: int = SAMPLER_DEFAULTS.network_every  # the network on every n-th step only (copy prior models)
    density: dict[str, float] = field(default_factory=dict)  # onsets per bar asked per track, in the selection
    register: dict[str, float] = field(default_factory=dict)  # mean MIDI pitch asked per track, in the selection
    # velocity models with attributes: dynamics asked per instrument in the selection, a mark (ppp..fff) or velocity
    dynamics: dict[str, float | str] = field(default_factory=dict)

    @property
    def key_asked(self) -> bool:
        """Whether a key was chosen from the list (not the piece's own, not none)."""
        return self.key not in ("piece", "any")

    def sampler(self) -> SamplerOptions:
        """The sampler options chosen (the model's defaults fill what is left at None)."""
        return SamplerOptions(order=self.order, schedule=self.schedule, temperature=self.temperature,
                              top_p=self.top_p, cfg_scale=self.cfg_scale, cfg_interval=self.cfg_interval,
                              repair=self.repair, repair_steps=self.repair_steps, network_every=self.network_every)

    def config(self, seed: int) -> SampleConfig:
        """The sample CLI's options of a run (its decoding is :meth:`request`'s plan, which says the key)."""
        key = self.key if self.key_asked else "auto"
        return SampleConfig(steps=self.steps, sampler=self.sampler(), note_density=self.note_density, key=key,
                            density_tracks=list(self.density_tracks), seed=seed, num_samples=1, batch_size=1,
                            progress=False, wav=False, device="cpu")

    def request(self, x: np.ndarray, known: np.ndarray, tracks: Sequence[Track]) -> decoding.Request:
        """What a run over the lanes ``x`` with ``known`` kept asks of the decoding, in the sample CLI's terms:
        the piece's own key is ``--key auto``, none is ``--key none``; a new piece is an unconditional one."""
        key = {"piece": "auto", "any": "none"}.get(self.key, self.key)
        targets = bool(self.density or self.register or self.dynamics) or self.note_density is not None
        return decoding.Request(new_piece=is_new_piece(x, known, tracks), anything_known=bool(known.any()),
                                key=key, targets=targets, in_context=conditioning.in_context(known, x, tracks),
                                sampler=self.sampler())


@dataclass
class Job:
    id: str
    x: np.ndarray  # (L, K) tokens
    known: np.ndarray  # (L, K) bool, True = keep
    options: Options
    seed: int
    state: State = "queued"
    progress: float = 0.0
    result: np.ndarray | None = None
    error: str | None = None
    warning: str | None = None  # a take that came back as the input was where it was drawn: why, what to do
    seconds: float | None = None
    view: Any = None  # the song the lanes show (schmubert.editor.pieces.SongView), for the warning's words
    velocity: np.ndarray | None = None  # (L, K) velocity bins of the known notes (a velocity model's input)
    result_velocity: np.ndarray | None = None  # (L, K) a velocity model's bins of the take (drawn where drawn)
    created: float = field(default_factory=time.monotonic)
    cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)
    finished_event: threading.Event = field(default_factory=threading.Event, repr=False)  # set once it ended

    @property
    def finished(self) -> bool:
        return self.state in ("done", "cancelled", "failed")


class Watched(nn.Module):
    """The denoiser, reporting the share of masked elements revealed so far and honouring a cancel; what the
    sampler asks of a denoiser (``predicts_velocity``, ``tracks``, ``conditional``) is the wrapped one's."""

    def __init__(self, denoiser: nn.Module, job: Job, mask_value: torch.Tensor):
        super().__init__()
        self.denoiser = denoiser
        self.job = job
        self.register_buffer("mask_value", mask_value, persistent=False)
        self.total: int | None = None
        self.predicts_velocity = bool(getattr(denoiser, "predicts_velocity", False))
        self.tracks = getattr(denoiser, "tracks", None)
        self.conditional = bool(getattr(denoiser, "conditional", False))

    def forward(self, x_t: torch.Tensor, attrs: Attributes | None = None,
                velocity: torch.Tensor | None = None) -> list[torch.Tensor]:
        if self.job.cancel_event.is_set():
            raise Cancelled
        masked = int((x_t[:1] == self.mask_value.to(x_t.device)).sum())  # one piece (guidance doubles it)
        self.total = masked if self.total is None else self.total
        self.job.progress = 1.0 - masked / max(self.total, 1)
        return call(self.denoiser, x_t, attrs, velocity)


class Sampler:
    """One worker over a queue of jobs (its own thread, or the one calling :meth:`serve`); jobs are kept
    (results included) until ``keep`` newer ones."""

    def __init__(self, model: LoadedModel, max_queued: int = 8, keep: int = 32, thread: bool = True):
        """``thread``: run the jobs in a worker thread of its own (False: in the thread that calls
        :meth:`serve`, the faster on a CPU when that is the thread that loaded the model)."""
        self.model = model
        self.max_queued = max_queued
        self.keep = keep
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self.queue: queue.Queue[Job | None] = queue.Queue()
        self.lock = threading.Lock()
        self.ids = itertools.count(1)
        self.seeds = np.random.default_rng()
        self.thread = threading.Thread(target=self.serve, name="schmubert-sampler", daemon=True) if thread else None
        if self.thread is not None:
            self.thread.start()

    # --- the API's side -------------------------------------------------------------------------------------

    def submit(self, x: np.ndarray, known: np.ndarray, options: Options, view: Any = None,
               velocity: np.ndarray | None = None) -> Job:
        """Queue a run; :class:`Busy` when ``max_queued`` runs already wait; ``ValueError`` for bad options.
        ``view``: the song the lanes show, if any (its instruments are named when a take changes nothing).
        ``velocity`` ``(L, K)``: the velocity bins of the known notes, for a velocity model (default: none known,
        the model draws them)."""
        self.check(options)
        seed = int(self.seeds.integers(2**31)) if options.seed is None else int(options.seed)
        if velocity is not None and not sample.predicts_velocity(self.model):
            velocity = None  # a model without velocity is shown none
        with self.lock:
            if sum(j.state == "queued" for j in self.jobs.values()) >= self.max_queued:
                raise Busy(f"{self.max_queued} runs are already waiting; try again when one has finished")
            job = Job(str(next(self.ids)), np.asarray(x, dtype=np.int64), np.asarray(known, dtype=bool), options,
                      seed, view=view, velocity=None if velocity is None else np.asarray(velocity, dtype=np.int64))
            self.jobs[job.id] = job
            self._forget_old()
        self.queue.put(job)
        return job

    def check(self, options: Options) -> None:
        names = [t.name for t in self.model.tracks]
        if not 1 <= options.steps <= 4096:
            raise ValueError(f"steps must be between 1 and 4096, got {options.steps}")
        if options.network_every != 1 and not self.model.uses_copy_prior:
            raise ValueError(f"network_every {options.network_every} needs a model with a copy prior "
                             f"({self.model.path.name} has none)")
        if options.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {options.temperature}")
        if not 0 < options.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {options.top_p}")
        if options.repair is not None and not 0 <= options.repair <= MAX_REPAIR:
            raise ValueError(f"repair must be between 0 and {MAX_REPAIR} rounds, got {options.repair}")
        bad = [n for n in options.density_tracks if n not in names]
        if bad:
            raise ValueError(f"density tracks {bad}: the model has {', '.join(names)}")
        asked = options.key_asked or options.density or options.register or options.dynamics
        if asked and not self.model.conditional:  # the guidance scale alone is ignored, as by the sample CLI
            raise ValueError(f"{self.model.path.name} was trained without attributes: it takes no key, density "
                             "or register")
        if options.dynamics and not self.model.denoiser.predicts_velocity:
            raise ValueError(f"{self.model.path.name} was trained without velocity: it takes no dynamics")
        for name, value in options.dynamics.items():
            apply_targets(Attributes.null(1, 1, self.model.tracks), self.model.tracks, dynamics=[
                BarTarget(name, dynamics_value(value))])  # names an unknown instrument or an unknown level
        if options.key_asked:
            parse_key(options.key)
        for name, value in options.register.items():
            apply_targets(Attributes.null(1, 1, len(names)), self.model.tracks, [],
                          [BarTarget(name, value)])  # names an unknown track or a drum register
        for name in options.density:
            if name not in names + [n for n, _ in instruments(self.model.tracks)]:
                raise ValueError(f"density: no track {name!r} (the model has {', '.join(names)})")

    def get(self, job_id: str) -> Job | None:
        with self.lock:
            return self.jobs.get(job_id)

    def position(self, job: Job) -> int:
        """How many runs are ahead of ``job`` (0 when it runs or is next)."""
        with self.lock:
            ahead = [j for j in self.jobs.values() if not j.finished and j.created < job.created]
        return len(ahead)

    def cancel(self, job_id: str) -> Job | None:
        job = self.get(job_id)
        if job is not None and not job.finished:
            job.cancel_event.set()
            if job.state == "queued":
                job.state = "cancelled"
                job.finished_event.set()
        return job

    def wait(self, job: Job, seconds: float) -> None:
        """Return when ``job`` has ended or after ``seconds``, whichever comes first (a long poll)."""
        job.finished_event.wait(max(0.0, seconds))

    def close(self) -> None:
        for job in list(self.jobs.values()):
            job.cancel_event.set()
        self.queue.put(None)
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout=10)

    # --- the worker's side ----------------------------------------------------------------------------------

    def _forget_old(self) -> None:
        finished = [k for k, j in self.jobs.items() if j.finished]
        for k in finished[:max(0, len(finished) - self.keep)]:
            del self.jobs[k]

    def serve(self) -> None:
        """Run queued jobs one at a time in the calling thread until :meth:`close`."""
        while True:
            try:
                job = self.queue.get(timeout=0.5)  # waking keeps Ctrl+C reaching a main thread on every system
            except queue.Empty:
                continue
            if job is None:
                return
            try:
                self._work(job)
            finally:
                job.finished_event.set()

    def _work(self, job: Job) -> None:
        if job.cancel_event.is_set():
            job.state = "cancelled"
            return
        job.state = "running"
        began = time.perf_counter()
        try:
            job.result = self.run(job)
            if job.result_velocity is None and sample.predicts_velocity(self.model):
                given = job.velocity if job.velocity is not None else np.zeros_like(job.result)
                job.result_velocity = given  # a run that drew nothing new keeps the known bins
            if job.result_velocity is not None:
                onset = np.stack([is_onset(job.result[:, k], t) for k, t in enumerate(self.model.tracks)], 1)
                job.result_velocity = np.where(onset, job.result_velocity, NO_ONSET)
            job.warning = self.unchanged(job)
            job.progress, job.state = 1.0, "done"
        except Cancelled:
            job.state = "cancelled"
        except Exception as err:  # a failed run must never take the worker down
            job.error, job.state = f"sampling failed: {type(err).__name__}: {err}", "failed"
        job.seconds = time.perf_counter() - began

    def unchanged(self, job: Job) -> str | None:
        """The editor's message when a job's take is the input wherever it was drawn (why, and what to do)."""
        tracks, copy_prior = self.model.tracks, self.model.uses_copy_prior
        if job.view is not None:
            same = job.view.unchanged(job.x, job.result, job.known, tracks, copy_prior)
            return None if same is None else same.editor_message(job.view.song)
        same = song.unchanged_take(job.x, job.result, ~job.known, tracks, copy_prior)
        return None if same is None else same.editor_message()

    def run(self, job: Job) -> np.ndarray:
        """The sampled grid ``(L, K)`` for a job (the same path as ``python -m schmubert.sample``); a velocity
        model's bins of the take go to ``job.result_velocity``."""
        model = self.model
        options = job.options
        if options.note_density is not None and not options.density_tracks:
            generated = [t.name for k, t in enumerate(model.tracks) if not job.known[:, k].all()]
            options = dataclasses.replace(options, density_tracks=generated or [model.tracks[0].name])
        cfg = options.config(job.seed)
        plan = decoding.resolve(options.request(job.x, job.known, model.tracks), model)
        guidance = sample.make_guidance(cfg, model)
        watched = Watched(model.denoiser, job, model.diffusion.mask_value(model.device))
        velocity = None
        if sample.predicts_velocity(model):
            velocity = job.velocity if job.velocity is not None else np.zeros_like(job.x)
        scenario = Scenario(job.x, job.known, "editor", [], velocity=velocity)
        told = editor_attributes(options, model, job.x, job.known, plan, torch.Generator().manual_seed(job.seed))
        generator = torch.Generator().manual_seed(job.seed)  # as the CLI: one seed for what is told, one to draw
        tokens, drawn = sample.generate_takes(cfg, dataclasses.replace(model, denoiser=watched), scenario,
                                              guidance, generator, attributes=told, plan=plan)
        job.result_velocity = None if drawn is None else drawn[0]
        return tokens[0]


def selected_bars(known: np.ndarray, k: int | None = None) -> list[tuple[int, int]]:
    """Runs ``[start, stop)`` of the bars where track ``k`` (None: any track) has something to generate."""
    free = ~known if k is None else ~known[:, k:k + 1]
    bars = free.reshape(-1, STEPS_PER_BAR, free.shape[1]).any(axis=(1, 2))
    edges = np.flatnonzero(np.diff(np.concatenate([[0], bars.astype(np.int8), [0]])))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def is_new_piece(x: np.ndarray, known: np.ndarray, tracks: Sequence[Track]) -> bool:
    """Whether a run draws a new piece: nothing is kept and the lanes hold no notes (an empty piece drawn whole,
    as the CLI's unconditional sample; lanes with notes have a key of their own to keep)."""
    return not known.any() and not bar_onsets(torch.as_tensor(x)[None], tracks).any()


def editor_attributes(options: Options, model: LoadedModel, x: np.ndarray, known: np.ndarray,
                      plan: decoding.Plan | None = None, generator: torch.Generator | None = None
                      ) -> Attributes | None:
    """What the editor tells a model with attributes ``[1, bars, K]``: what the decoding ``plan`` tells (default:
    that of ``options``; :func:`schmubert.decoding.told`: for a new piece the model's outline as the CLI, else the
    piece's own key, none, or the one chosen) and each asked track's density and register over the selected bars
    of that track (the whole selection's bars for a track not selected). None for a model without attributes."""
    if not model.conditional:
        return None
    tracks, names = model.tracks, [t.name for t in model.tracks]
    plan = plan if plan is not None else decoding.resolve(options.request(x, known, tracks), model)
    attrs = decoding.told(plan, model, 1, len(x) // STEPS_PER_BAR, torch.as_tensor(x)[None], generator)
    density = dict(options.density)
    if options.note_density is not None:  # on these models the guidance target is the onsets attribute
        chosen = options.density_tracks or [names[0]]
        density.update({n: options.note_density / len(chosen) for n in chosen if n not in density})

    first = {name: ks[0] for name, ks in instruments(tracks)}  # an instrument's bars: those of its first voice

    def targets(asked: dict[str, float]) -> list[BarTarget]:
        out = []
        for name, value in asked.items():
            k = names.index(name) if name in names else first.get(name)
            runs = (selected_bars(known, k) if k is not None else []) or selected_bars(known)
            out += [BarTarget(name, value, a, b) for a, b in runs]
        return out

    dynamics = {name: dynamics_value(v) for name, v in options.dynamics.items()}
    return apply_targets(attrs, tracks, targets(density), targets(options.register), targets(dynamics))


def dynamics_value(value: float | str) -> float:
    """An editor's dynamics, a mark (``mf``) or a MIDI velocity, as the velocity a :class:`BarTarget` asks."""
    return parse_target(f"x={value}", dynamics=True).value
