"""Meters other than 4/4 on the 16th grid (issue 42, item 4): bars of any length in 16-step slots, padded.

Every bar keeps one 16-step **slot** of the grid, so bar ``n`` of a piece is always steps ``16 n .. 16 n + 15``
(bar attention, the copy prior, attributes and the scenarios' bar ranges keep working on slots). A bar shorter than
16 steps (2/4: 8, 3/4 and 6/8: 12, 7/8: 14) fills the start of its slot and the rest holds PAD
(``tokens.Track.pad_id + kind``); a bar of 17..32 steps (5/4: 20, 12/8: 24) takes two slots, the second padded
with a ``CONT`` kind; a longer bar is an error. PAD takes no time: a note held into it goes on at the next real
step, so a note tied over the bar line of a 3/4 bar is kept.

What a grid's PAD says about each slot (:class:`Layout`): its length (its real steps, 1..16) and its kind
(``tokens.PAD_SIMPLE``, ``PAD_COMPOUND``, ``PAD_CONT_SIMPLE``, ``PAD_CONT_COMPOUND``; a full slot is simple).
That is all a written file needs: the time signature of a bar is its length in simple or compound meter
(:func:`signature`): 12 steps simple = 3/4, compound = 6/8, 16 steps = 4/4 (2/2 is written 4/4, 3/2 as 6/4; a
bar of exactly 32 steps cannot be told from two 4/4 bars). Triplet grids are out of scope.

Reading a file's time signatures (:func:`signature_bars`), the rule, measured on POP909 (909 files; 694 carry a 1/4
signature: 617 in 1/4 throughout, 76 a 1/4 and a 4/4 at tick 0; 181 are 4/4, 28 2/4, 5 6/8, 2 3/4):

1. at one tick the last signature wins; a repeat of the meter in force is no change; 4/4 until the first;
2. a signature whose bars are shorter than 2 quarters (1/4, 1/8, 3/16, ...) is ignored: one-beat bars are how
   POP909 (and other beat-tracked files) mark beats, not a meter; by their notes (``song.music_meter``) 598 of
   617 such POP909 files move in 4, 16 in 3;
3. a signature not on the 16th grid (its tick or its bar not whole 16ths) is ignored, and so is one that lasts
   less than one of its bars before the next (a momentary event);
4. a file whose remaining signatures are all 2/4 is read in 4/4 (26 POP909 files, all moving in 4 by their
   notes): a 2/4 bar is kept only beside other meters;
5. bars run from tick 0, each signature's from its tick; a bar cut short by the next signature keeps its real
   length (a pickup); nothing left: 4/4 from tick 0, 16 steps per bar from the first tick, as before.

On POP909 (``tests/test_meter.py`` and the measurement in the README) this changes 7 files from the 4/4 reading
(5 in 6/8, of which 4 move in 3 by their notes, and 2 in 3/4, both in 3); 902 are read in 4/4 as before, 694 with
their 1/4 ignored, 26 their 2/4, 1 (043.mid) a 2/4 off the 16th grid. The 22 songs whose notes move in 3 under
a 1/4 or 4/4 signature stay in 4/4 (their meter would have to come from the notes, which preprocessing does not
infer). POP909's downbeats are not where its signatures put them
(its files start at an arbitrary tick), a limit of the data that meters do not fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from schmubert.tokens import (
    DEFAULT_STEPS,
    PAD_COMPOUND,
    PAD_CONT_COMPOUND,
    PAD_CONT_SIMPLE,
    PAD_KINDS,
    PAD_SIMPLE,
    STEPS_PER_BAR,
    STEPS_PER_QUARTER,
    Track,
    get_tracks,
    pad_mask,
)

#: The longest bar: two slots.
MAX_BAR_STEPS = 2 * STEPS_PER_BAR
#: Bars shorter than this (2 quarters) are not a meter (rule 2 of the module docstring).
MIN_SIGNATURE_STEPS = 2 * STEPS_PER_QUARTER


class MeterError(ValueError):
    """A bar the slot grid cannot hold, or a grid whose PAD is not a layout of bars."""


# --- bars and their signatures ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    """One bar: its length in 16th steps (1..32) and whether its meter is compound (dotted-quarter beats)."""

    length: int
    compound: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.length <= MAX_BAR_STEPS:
            raise MeterError(f"a bar of {self.length} sixteenths does not fit the grid (1..{MAX_BAR_STEPS}: "
                             "one 16-step slot, or two)")

    @property
    def slots(self) -> int:
        return 1 if self.length <= STEPS_PER_BAR else 2

    @property
    def signature(self) -> tuple[int, int]:
        return signature(self.length, self.compound)

    @property
    def meter(self) -> str:
        num, den = self.signature
        return f"{num}/{den}"


def bar_of(numerator: int, denominator: int) -> Bar:
    """The bar of a time signature: ``3/4`` -> 12 steps simple, ``6/8`` -> 12 steps compound. ``MeterError`` when
    its bar is not a whole number of 16ths or longer than two slots."""
    steps = 4 * STEPS_PER_QUARTER * numerator / denominator
    if numerator < 1 or denominator < 1 or steps != int(steps):
        raise MeterError(f"time signature {numerator}/{denominator}: its bar is not a whole number of 16ths")
    compound = denominator >= 8 and numerator % 3 == 0
    return Bar(int(steps), compound)


def signature(length: int, compound: bool = False) -> tuple[int, int]:
    """The time signature written for a bar of ``length`` 16ths: compound in eighths (6/8, 3/8, 12/8), simple in
    quarters where whole (3/4, 4/4, 5/4), else eighths (7/8), else 16ths."""
    if compound and length % 2 == 0:
        return length // 2, 8
    if not compound and length % 4 == 0:
        return length // 4, 4
    if length % 2 == 0:
        return length // 2, 8
    return length, 16


# --- the slot layout of a grid ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Per slot of a grid: ``lengths`` (its real steps, 1..16) and ``kinds`` (the PAD kind of its padded steps;
    a full slot is simple, or the first half of a long bar when the next slot continues it)."""

    lengths: np.ndarray
    kinds: np.ndarray

    @classmethod
    def of_bars(cls, bars: Sequence[Bar]) -> Layout:
        lengths, kinds = [], []
        for bar in bars:
            if bar.slots == 1:
                lengths.append(bar.length)
                kinds.append(PAD_COMPOUND if bar.compound else PAD_SIMPLE)
            else:
                lengths += [STEPS_PER_BAR, bar.length - STEPS_PER_BAR]
                kinds += [PAD_SIMPLE, PAD_CONT_COMPOUND if bar.compound else PAD_CONT_SIMPLE]
        return cls(np.asarray(lengths, dtype=np.int64), np.asarray(kinds, dtype=np.int64))

    @classmethod
    def four_four(cls, slots: int) -> Layout:
        return cls(np.full(slots, STEPS_PER_BAR, dtype=np.int64), np.zeros(slots, dtype=np.int64))

    @property
    def slots(self) -> int:
        return len(self.lengths)

    @property
    def steps(self) -> int:
        """Grid steps: 16 per slot."""
        return self.slots * STEPS_PER_BAR

    @property
    def real_steps(self) -> int:
        """The 16ths of time the slots hold."""
        return int(self.lengths.sum())

    @property
    def starts(self) -> np.ndarray:
        """The real step at which each slot starts."""
        return np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)

    @property
    def padded(self) -> bool:
        """Whether any slot holds PAD (else the grid is 16 steps per bar, as without meters)."""
        return bool((self.lengths < STEPS_PER_BAR).any())

    @property
    def continues(self) -> np.ndarray:
        """``(slots,)`` bool: slots that continue the bar before (the second slot of a long bar)."""
        return (self.kinds == PAD_CONT_SIMPLE) | (self.kinds == PAD_CONT_COMPOUND)

    def bars(self) -> list[Bar]:
        """The bars of the slots (a continued slot joins the bar before)."""
        out: list[Bar] = []
        for length, kind, cont in zip(self.lengths.tolist(), self.kinds.tolist(), self.continues.tolist(),
                                      strict=True):
            if cont and out and out[-1].length == STEPS_PER_BAR:
                out[-1] = Bar(STEPS_PER_BAR + length, kind == PAD_CONT_COMPOUND)
            else:
                out.append(Bar(length, kind in (PAD_COMPOUND, PAD_CONT_COMPOUND)))
        return out

    def real_step_slots(self) -> np.ndarray:
        """``(real_steps,)``: the grid step of each real step."""
        slot = np.repeat(np.arange(self.slots), self.lengths)
        return slot * STEPS_PER_BAR + (np.arange(self.real_steps) - np.repeat(self.starts, self.lengths))

    def to_real(self, steps: np.ndarray) -> np.ndarray:
        """Grid steps (0..16 * slots, the end included) -> real steps; a PAD step maps to where its bar ends."""
        steps = np.asarray(steps, dtype=np.int64)
        slot = np.minimum(steps // STEPS_PER_BAR, self.slots)
        ends = np.r_[self.starts, self.real_steps]
        lengths = np.r_[self.lengths, 0]
        return ends[slot] + np.minimum(steps - slot * STEPS_PER_BAR, lengths[slot])

    def signatures(self) -> list[tuple[int, int, int]]:
        """The time-signature changes of the slots: ``[(real step, numerator, denominator)]`` (the first at 0)."""
        out: list[tuple[int, int, int]] = []
        step = 0
        for bar in self.bars():
            if not out or out[-1][1:] != bar.signature:
                out.append((step, *bar.signature))
            step += bar.length
        return out

    def counts(self) -> dict[str, int]:
        """Bars per meter (``{"4/4": 60, "3/4": 4}``)."""
        out: dict[str, int] = {}
        for bar in self.bars():
            out[bar.meter] = out.get(bar.meter, 0) + 1
        return out

    def cut(self, first: int, slots: int) -> Layout:
        """Slots ``first .. first + slots``."""
        return Layout(self.lengths[first:first + slots], self.kinds[first:first + slots])

    def extend(self, slots: int) -> Layout:
        """``slots`` slots: bars of the last bar's meter added at the end (4/4 for an empty layout), or the
        layout cut there (a long bar cut in half keeps its first, full slot)."""
        bars = self.bars() or [Bar(STEPS_PER_BAR)]
        while sum(b.slots for b in bars) < slots:
            bars.append(bars[-1])
        out = Layout.of_bars(bars)
        return Layout(out.lengths[:slots], out.kinds[:slots])

    def pad_steps(self) -> np.ndarray:
        """``(steps,)`` the PAD kind of each grid step, -1 where the step is real."""
        within = np.arange(STEPS_PER_BAR)[None, :]
        kinds = np.where(within >= self.lengths[:, None], self.kinds[:, None], -1)
        return kinds.reshape(-1)


def layout_of(tokens: np.ndarray, tracks: str | Sequence[Track]) -> Layout:
    """The slot layout a grid's PAD says (``tokens`` ``(steps, K)``, steps a multiple of 16). ``MeterError`` when
    PAD is not the end of a slot, differs between columns or kinds, or fills a whole slot."""
    tokens = np.asarray(tokens)
    track_list = get_tracks(tracks)
    steps = len(tokens)
    pad = pad_mask(tokens, track_list)
    if not pad.any():
        return Layout.four_four(-(-steps // STEPS_PER_BAR))
    if steps % STEPS_PER_BAR:
        raise MeterError(f"a grid with PAD must be whole slots of {STEPS_PER_BAR} steps, got {steps} steps")
    if not (pad.all(axis=1) | ~pad.any(axis=1)).all():
        raise MeterError("PAD must fill every column of a step or none")
    kind = np.where(pad[:, 0], tokens[:, 0].astype(np.int64) - track_list[0].pad_id, -1)
    for k, track in enumerate(track_list[1:], start=1):
        if (np.where(pad[:, k], tokens[:, k].astype(np.int64) - track.pad_id, -1) != kind).any():
            raise MeterError("PAD kinds differ between the columns of a step")
    kind = kind.reshape(-1, STEPS_PER_BAR)
    is_pad = kind >= 0
    lengths = (~is_pad).sum(axis=1)
    suffix = np.arange(STEPS_PER_BAR)[None, :] >= lengths[:, None]
    if (is_pad != suffix).any():
        raise MeterError(f"PAD must be the last steps of a slot (slots {np.flatnonzero((is_pad != suffix).any(1))})")
    if (lengths == 0).any():
        raise MeterError(f"a slot holds only PAD (slots {np.flatnonzero(lengths == 0).tolist()})")
    kinds = np.where(is_pad.any(axis=1), kind.max(axis=1), PAD_SIMPLE)
    if ((kind != kinds[:, None]) & is_pad).any():
        raise MeterError("PAD kinds differ within a slot")
    cont = (kinds == PAD_CONT_SIMPLE) | (kinds == PAD_CONT_COMPOUND)
    bad = np.flatnonzero(cont & ~np.r_[False, lengths[:-1] == STEPS_PER_BAR] | cont & np.r_[False, cont[:-1]])
    if len(bad):
        raise MeterError(f"slots {bad.tolist()} continue a bar but do not follow a full slot")
    return Layout(lengths.astype(np.int64), kinds.astype(np.int64))


def expand(real: np.ndarray, layout: Layout, tracks: str | Sequence[Track] | None = None) -> np.ndarray:
    """A grid in real steps ``(layout.real_steps, K)`` -> the slot grid ``(layout.steps, K)``: PAD of each slot's
    kind after its real steps (``tracks`` None: 0 there, for velocity grids)."""
    real = np.asarray(real)
    if len(real) != layout.real_steps:
        raise MeterError(f"a grid of {len(real)} real steps does not fill slots of {layout.real_steps}")
    out = np.zeros((layout.steps, *real.shape[1:]), dtype=real.dtype)
    kinds = layout.pad_steps()
    if tracks is not None:
        base = np.asarray([t.pad_id for t in get_tracks(tracks)], dtype=np.int64)
        pad = kinds >= 0
        out[pad] = (base[None, :] + kinds[pad, None]).astype(real.dtype)
    out[layout.real_step_slots()] = real
    return out


def compact(tokens: np.ndarray, tracks: str | Sequence[Track]) -> tuple[np.ndarray, Layout]:
    """A slot grid -> its real steps ``(real_steps, K)`` (PAD left out) and its layout; inverse of :func:`expand`."""
    layout = layout_of(tokens, tracks)
    tokens = np.asarray(tokens)
    if not layout.padded and len(tokens) % STEPS_PER_BAR:
        return tokens, layout
    return tokens[layout.real_step_slots()], layout


# --- reading a file's time signatures --------------------------------------------------------------------------


def signature_bars(signatures: Sequence[tuple[int, int, int]], ticks_per_quarter: int, end_tick: int
                   ) -> tuple[list[Bar], list[str]]:
    """A file's bars up to ``end_tick`` from its time signatures ``[(tick, numerator, denominator)]``, by the
    rule of the module docstring; and why signatures were ignored (one reason per kind, empty when none were).

    ``MeterError`` for a bar longer than two slots (9/4, 15/8 ...).
    """
    tpq = int(ticks_per_quarter)
    ignored: dict[str, None] = {}
    by_tick: dict[int, tuple[int, int]] = {}
    for tick, num, den in sorted(signatures, key=lambda s: s[0]):
        by_tick[int(tick)] = (int(num), int(den))  # rule 1: the last at a tick wins
    events: list[tuple[int, Bar]] = []  # (step, bar)
    for tick, (num, den) in sorted(by_tick.items()):
        steps = 4 * STEPS_PER_QUARTER * num / max(den, 1)
        if num < 1 or den < 1 or steps != int(steps):  # rule 3; a bar longer than two slots is an error
            ignored["a signature off the 16th grid"] = None
            continue
        bar = bar_of(num, den)
        if bar.length < MIN_SIGNATURE_STEPS:  # rule 2
            ignored[f"bars of {num}/{den}, shorter than 2 quarters"] = None
            continue
        if (tick * STEPS_PER_QUARTER) % tpq:  # rule 3
            ignored["a signature off the 16th grid"] = None
            continue
        events.append((tick * STEPS_PER_QUARTER // tpq, bar))
    while True:  # rule 3: momentary signatures (each removal may make another one momentary)
        keep = [e for i, e in enumerate(events) if i + 1 == len(events) or events[i + 1][0] - e[0] >= e[1].length]
        if len(keep) == len(events):
            break
        ignored["a signature lasting less than one of its bars"] = None
        events = keep
    if events and all(bar == Bar(MIN_SIGNATURE_STEPS) for _, bar in events):  # rule 4
        ignored["2/4 throughout, read in 4/4"] = None
        events = []
    if not events or events[0][0] > 0:
        events = [(0, Bar(STEPS_PER_BAR)), *events]
    events = [e for i, e in enumerate(events) if i == 0 or events[i - 1][1] != e[1]]  # rule 1: repeats
    end_step = -(-int(end_tick) * STEPS_PER_QUARTER // tpq)
    bars: list[Bar] = []
    for i, (step, bar) in enumerate(events):  # rule 5
        last = i + 1 == len(events)
        stop = max(end_step, step + 1) if last else events[i + 1][0]
        while step < stop:
            length = bar.length if last else min(bar.length, stop - step)
            bars.append(bar if length == bar.length else Bar(length, bar.compound))
            step += length
    return bars, list(ignored)


def score_bars(score, end_tick: int | None = None) -> tuple[list[Bar], list[str]]:
    """:func:`signature_bars` of a ``symusic.Score`` (up to its end)."""
    sigs = [(int(ts.time), int(ts.numerator), int(ts.denominator)) for ts in score.time_signatures]
    return signature_bars(sigs, int(score.ticks_per_quarter), int(score.end() if end_tick is None else end_tick))


def read_layout(midi: str | Path | bytes) -> tuple[Layout, list[str]]:
    """A MIDI file's slot layout by its time signatures (:func:`signature_bars`) and the ignored reasons."""
    import symusic

    try:
        score = symusic.Score.from_midi(midi) if isinstance(midi, bytes) else symusic.Score(str(midi))
    except Exception as err:  # symusic raises several exception types for broken files
        raise ValueError(f"{'<bytes>' if isinstance(midi, bytes) else midi}: unreadable MIDI "
                         f"({type(err).__name__}: {err})") from err
    bars, ignored = score_bars(score)
    return Layout.of_bars(bars), ignored


@dataclass
class MeterGrid:
    """A file on the slot grid: ``tokens`` (and ``velocity`` for voice sets) ``(steps, K)`` with PAD, its
    ``layout`` and the reasons signatures were ignored."""

    tokens: np.ndarray
    velocity: np.ndarray | None
    layout: Layout
    ignored: list[str]


def midi_to_grid(midi: str | Path | bytes, tracks: str | Sequence[Track], steps: int | None = None) -> MeterGrid:
    """A MIDI file -> its slot grid in any track set, bars by its time signatures (:func:`signature_bars`).

    Notes are read in real 16ths from the file's first tick as without meters (``tokens.midi_to_tokens`` for the
    trio and melody, ``polyphony.midi_to_grid`` for voice sets, with velocity) and placed in their bars' slots.
    ``steps`` (a multiple of 16) defaults to the file's slots, at least ``DEFAULT_STEPS``: 4/4 slots of silence
    are added at the end, or slots are cut.
    """
    from schmubert.tokens import is_legacy, midi_to_tokens

    track_list = get_tracks(tracks)
    layout, ignored = read_layout(midi if not isinstance(midi, Path) else str(midi))
    slots = max(layout.slots, DEFAULT_STEPS // STEPS_PER_BAR) if steps is None else -(-steps // STEPS_PER_BAR)
    if steps is not None and steps % STEPS_PER_BAR:
        raise MeterError(f"steps must be whole slots of {STEPS_PER_BAR}, got {steps}")
    layout = layout.extend(slots)
    if is_legacy(track_list):
        real = midi_to_tokens(midi if not isinstance(midi, bytes) else _bytes_file(midi), track_list,
                              steps=layout.real_steps)
        return MeterGrid(expand(real, layout, track_list), None, layout, ignored)
    from schmubert.polyphony import midi_to_grid as poly_grid

    enc = poly_grid(midi, track_list, layout.real_steps)
    return MeterGrid(expand(enc.tokens, layout, track_list), expand(enc.velocity, layout), layout, ignored)


def _bytes_file(data: bytes):
    import io

    import pretty_midi

    return pretty_midi.PrettyMIDI(io.BytesIO(data))


# --- torch: what a model reads from PAD ----------------------------------------------------------------------

#: Per-bar meter classes (:func:`meter_classes`): ``kind * 17 + length`` for a slot of ``length`` real steps and
#: PAD ``kind``, and two for the first slot of a long bar (simple, compound).
METER_CLASSES = PAD_KINDS * (STEPS_PER_BAR + 1) + 2
#: Beat positions (:func:`beat_positions`): the position in the bar (0..31) of a simple or a compound bar, and PAD.
BEAT_POSITIONS = 2 * MAX_BAR_STEPS + 1
PAD_POSITION = BEAT_POSITIONS - 1


def meter_features(x_t, mask_ids):
    """What the grid's PAD says of each step, for a model (torch): ``(pad [B, L], meter class [B, L], beat
    position [B, L])``. ``x_t`` ``[B, L, K]`` token ids, ``mask_ids`` ``LongTensor[K]``; any id above a column's
    mask is PAD, its kind ``id - mask - 1``. L need not be whole slots (the last is read as if cut)."""
    import torch
    import torch.nn.functional as F

    B, L, _ = x_t.shape
    pad_el = x_t > mask_ids
    pad = pad_el.any(-1)  # [B, L]
    kind = torch.where(pad_el, x_t - mask_ids - 1, 0).amax(-1).clamp(0, PAD_KINDS - 1)  # [B, L]
    slots = -(-L // STEPS_PER_BAR)
    extra = slots * STEPS_PER_BAR - L
    pad_s = F.pad(pad, (0, extra), value=False).view(B, slots, STEPS_PER_BAR)
    kind_s = F.pad(kind, (0, extra), value=0).view(B, slots, STEPS_PER_BAR)
    length = STEPS_PER_BAR - pad_s.sum(-1)  # [B, slots]
    slot_kind = kind_s.amax(-1)  # [B, slots]
    cont = slot_kind >= PAD_CONT_SIMPLE
    next_kind = F.pad(slot_kind[:, 1:], (0, 1), value=0)
    head = (next_kind >= PAD_CONT_SIMPLE) & (length == STEPS_PER_BAR)
    head_class = PAD_KINDS * (STEPS_PER_BAR + 1) + (next_kind == PAD_CONT_COMPOUND).long()
    meter = torch.where(head, head_class, slot_kind * (STEPS_PER_BAR + 1) + length)  # [B, slots]
    compound = torch.where(head, next_kind == PAD_CONT_COMPOUND,
                           (slot_kind == PAD_COMPOUND) | (slot_kind == PAD_CONT_COMPOUND))
    within = torch.arange(STEPS_PER_BAR, device=x_t.device)
    position = within + STEPS_PER_BAR * cont.long()[..., None] + MAX_BAR_STEPS * compound.long()[..., None]
    position = torch.where(pad_s, PAD_POSITION, position)  # [B, slots, 16]
    meter = meter[..., None].expand(B, slots, STEPS_PER_BAR)
    return pad, meter.reshape(B, -1)[:, :L], position.reshape(B, -1)[:, :L]


def sounding(column, pad):
    """Torch: whether a note sounds at each step of melodic rows ``[B, L]`` (PAD steps ``pad [B, L]`` are no
    event: a note held into them sounds on after them)."""
    import torch

    from schmubert.tokens import MELODIC_CLASSES, NO_EVENT, NOTE_OFF

    event = (column != NO_EVENT) & ~pad
    index = torch.where(event, torch.arange(column.shape[-1], device=column.device), -1).cummax(dim=-1).values
    last = column.gather(-1, index.clamp(min=0))
    return (index >= 0) & (last > NOTE_OFF) & (last < MELODIC_CLASSES)


def shorten_bars(x0, velocity, tracks: Sequence[Track], prob: float, generator=None):
    """Training augmentation for a meter model on 4/4 data (torch, ``[B, L, K]``): each full 16-step slot
    (not a long bar's) becomes, with probability ``prob``, a bar of 12 steps (3/4) or 8 (2/4), equally often:
    its last beat(s) are dropped and padded (``PAD_SIMPLE``). A note-off left where nothing sounds becomes no
    event. ``velocity`` (or None) gets 0 at PAD. Returns ``(x0, velocity)``; unchanged (and no random numbers
    drawn) when ``prob`` is 0."""
    import torch

    from schmubert.tokens import NO_EVENT, NOTE_OFF

    if prob <= 0:
        return x0, velocity
    B, L, K = x0.shape
    slots = L // STEPS_PER_BAR
    if slots == 0:
        return x0, velocity
    masks = x0.new_tensor([t.mask_id for t in tracks])
    _, meter, _ = meter_features(x0, masks)
    full = meter[:, ::STEPS_PER_BAR][:, :slots] == STEPS_PER_BAR  # [B, slots]: plain 4/4 slots
    u = torch.rand(B, slots, generator=generator, device=x0.device)
    pick = torch.rand(B, slots, generator=generator, device=x0.device) < 0.5
    length = torch.where(pick, 12, 8)
    shorten = full & (u < prob)
    within = torch.arange(STEPS_PER_BAR, device=x0.device)
    drop = shorten[..., None] & (within >= length[..., None])  # [B, slots, 16]
    drop = torch.nn.functional.pad(drop.reshape(B, -1), (0, L - slots * STEPS_PER_BAR), value=False)
    out = torch.where(drop[..., None], masks + 1 + PAD_SIMPLE, x0)
    for k, track in enumerate(tracks):
        if not track.is_drum:  # a note-off ends what sounds at the real step before it, else it means nothing
            col = out[..., k]
            out[..., k] = torch.where((col == NOTE_OFF) & ~_sounding_before(col, drop), NO_EVENT, col)
    v = None if velocity is None else torch.where(drop[..., None], 0, velocity)
    return out, v


def _sounding_before(column, pad):
    """Torch ``[B, L]``: whether a note sounds at the last real step before each step (PAD skipped)."""
    import torch

    shifted = torch.nn.functional.pad(column[..., :-1], (1, 0), value=0)
    shifted_pad = torch.nn.functional.pad(pad[..., :-1], (1, 0), value=False)
    return sounding(shifted, shifted_pad)
