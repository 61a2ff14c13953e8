"""Musical attributes computed from token grids: the conditions a model can be told (key, density, register,
dynamics).

This module is the one owner of every attribute definition, its bins and its null id. Everything is exact,
vectorized in torch and cheap enough to run on every training batch after transposition augmentation
(:func:`schmubert.data.transpose`), so a transposed piece gets a transposed key. See ``docs/attributes.md``.

Bar attributes are per **instrument** (``tokens.instruments``): a monophonic line or a drum kit is one column and
one instrument; the V voices of a polyphonic instrument (``piano:6``) are one instrument, described together. So
the bar attributes of a set of I instruments are ``[B, bars, I]`` (the trio and the melody: I = K, as always).

Definitions (``x0 [B, L, K]`` token ids; masks, PAD and out-of-vocabulary ids count as no event):

- **key** ``[B]``: the tonic and mode best fitting the piece. The duration-weighted pitch-class histogram of the
  melodic columns (melody + bass; every voice of a polyphonic instrument; each step a note sounds adds one 16th to
  its pitch class; a note sounds from its note-on to the next event of its column) is correlated (Pearson) with
  the 24 rotated Krumhansl-Kessler profiles; the best is the key. Ids ``0..11`` = C..B major, ``12..23`` = C..B
  minor, ``KEY_NULL = 24`` (no condition, or a piece without melodic notes).
- **onsets** ``[B, bars, I]``: note-ons per bar and instrument (of all its voices; drums: steps with any hit).
  A one-column instrument: the exact count ``0..16`` (a bar has 16 steps). A polyphonic instrument (up to 16 x
  16 note-ons) in 17 bins from :data:`VOICE_ONSET_EDGES`: exact to 8, then 2, 3, 4 and 6 wide, 32 and more the
  last (POP909's piano: 12 note-ons per bar at the median, 6-21 from its 5th to 95th percentile).
  ``ONSETS_NULL = 17``.
- **register** ``[B, bars, I]``: the mean MIDI pitch of the instrument's note-ons in the bar, in bins of
  ``REGISTER_WIDTH = 3`` semitones from ``REGISTER_LOW = 21``: bin ``b`` holds means in ``[21 + 3b, 24 + 3b)``
  (``0..29``, up to 111); ``REGISTER_EMPTY = 30`` for a bar without note-ons; ``REGISTER_NULL = 31``. Drums have
  no register: always null.
- **dynamics** ``[B, bars, I]``: the velocity bin (``tokens.velocity_to_bin``) of the mean MIDI velocity of the
  instrument's note-ons in the bar (each onset at its bin's centre), as ids ``0..7`` = bins 1..8 = the marks
  ``ppp .. fff`` (:data:`DYNAMICS_MARKS`); ``DYNAMICS_NULL = 8`` for a bar without onsets of known velocity, and
  always for grids without velocities (models without velocity have no dynamics).

The null id of every kind means "not told"; :func:`drop` replaces attributes by it at random during training
(classifier-free guidance), independently per sample and per attribute kind.
"""

from __future__ import annotations

import base64
import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from einops import reduce

from schmubert.tokens import (
    NOTE_OFF,
    PITCH_OFFSET,
    STEPS_PER_BAR,
    VELOCITY_BINS,
    Track,
    get_tracks,
    instruments,
    is_pad,
    velocity_to_bin,
)

# --- ids ----------------------------------------------------------------------------------------------------
TONICS = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
_FLATS = {"Db": "C#", "Eb": "D#", "Gb": "F#", "Ab": "G#", "Bb": "A#", "Cb": "B", "Fb": "E", "E#": "F", "B#": "C"}
MODES = ("major", "minor")
NUM_KEYS = 24
KEY_NULL = NUM_KEYS
KEY_IDS = NUM_KEYS + 1

MAX_ONSETS = STEPS_PER_BAR
ONSETS_NULL = MAX_ONSETS + 1
ONSET_IDS = ONSETS_NULL + 1
#: The onsets bins of a polyphonic instrument: bin b holds ``[VOICE_ONSET_EDGES[b], VOICE_ONSET_EDGES[b + 1])``
#: note-ons per bar (the last: 32 and more), as many bins as a one-column instrument's counts 0..16.
VOICE_ONSET_EDGES = (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 19, 22, 26, 32)

REGISTER_LOW = 21
REGISTER_WIDTH = 3
REGISTER_BINS = 30  # 21 .. 111
REGISTER_EMPTY = REGISTER_BINS
REGISTER_NULL = REGISTER_BINS + 1
REGISTER_IDS = REGISTER_NULL + 1

DYNAMICS_BINS = VELOCITY_BINS  # ids 0..7 = velocity bins 1..8
DYNAMICS_NULL = DYNAMICS_BINS
DYNAMICS_IDS = DYNAMICS_NULL + 1
#: The dynamic mark of each dynamics id (velocity bin 1..8: MIDI velocities 1-16, 17-32, ..., 113-127).
DYNAMICS_MARKS = ("ppp", "pp", "p", "mp", "mf", "f", "ff", "fff")

#: How far a bar may be from what it was told and still follow it (the sampler's repair draws the others again):
#: onsets within +-1 bin (a one-column instrument: +-1 note-on), register within +-1 bin (3 semitones),
#: dynamics within +-1 bin (16 velocity units).
ONSETS_TOLERANCE = 1
REGISTER_TOLERANCE = 1
DYNAMICS_TOLERANCE = 1

KINDS = ("key", "onsets", "register", "dynamics")
#: The kinds per bar and instrument (``[B, bars, I]``).
BAR_KINDS = ("onsets", "register", "dynamics")
#: The null id of each kind.
NULLS = {"key": KEY_NULL, "onsets": ONSETS_NULL, "register": REGISTER_NULL, "dynamics": DYNAMICS_NULL}

#: Krumhansl-Kessler probe-tone profiles (Krumhansl 1990), index 0 = the tonic.
KK_MAJOR = (6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88)
KK_MINOR = (6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17)


def key_profiles() -> torch.Tensor:
    """The 24 key profiles ``[24, 12]``: rows 0..11 major on C..B, 12..23 minor, each rotated to its tonic."""
    rows = [np.roll(profile, tonic) for profile in (KK_MAJOR, KK_MINOR) for tonic in range(12)]
    return torch.tensor(np.stack(rows), dtype=torch.float32)


# --- key names ----------------------------------------------------------------------------------------------


def key_name(key: int) -> str:
    """``2 -> "D:major"``, ``14 -> "D:minor"``, ``KEY_NULL -> "none"``."""
    if key == KEY_NULL:
        return "none"
    if not 0 <= key < NUM_KEYS:
        raise ValueError(f"key id {key} outside 0..{KEY_NULL}")
    return f"{TONICS[key % 12]}:{MODES[key // 12]}"


def parse_key(text: str) -> int:
    """A key id from ``D:minor``, ``C#:major``, ``Db`` (major), ``bb:min``, ``none`` (``KEY_NULL``)."""
    s = text.strip()
    if s.lower() in ("none", "null", "any"):
        return KEY_NULL
    tonic, _, mode = s.partition(":")
    tonic = tonic[:1].upper() + tonic[1:]
    tonic = _FLATS.get(tonic, tonic)
    modes = {"": 0, "maj": 0, "major": 0, "min": 1, "minor": 1, "m": 1}
    if tonic not in TONICS or mode.lower() not in modes:
        raise ValueError(f"unknown key {text!r}; expected TONIC[:major|:minor] with TONIC one of C, C#/Db, D, "
                         "..., B (e.g. D:minor, Bb:major), or none")
    return TONICS.index(tonic) + 12 * modes[mode.lower()]


def relative_key(key: int) -> int:
    """The major/minor key with the same scale: ``A:minor <-> C:major``; ``KEY_NULL`` stays."""
    if key == KEY_NULL:
        return key
    return (key + 3) % 12 if key >= 12 else 12 + (key + 9) % 12


# --- instruments ----------------------------------------------------------------------------------------------


def voices_of(tracks: str | Sequence[Track]) -> tuple[int, ...] | None:
    """The number of voices of each instrument of a set, ``(1, 4, 6)`` for pop909; None where every instrument
    is one column (the trio, the melody: bar attributes per column, as they always were)."""
    counts = tuple(len(ks) for _, ks in instruments(tracks))
    return None if all(c == 1 for c in counts) else counts


def group_columns(per_column: torch.Tensor, tracks: Sequence[Track]) -> torch.Tensor:
    """``[..., K] -> [..., I]``: each instrument's columns summed (a one-column set comes back as it is)."""
    groups = instruments(tracks)
    if len(groups) == per_column.shape[-1]:
        return per_column
    return torch.stack([per_column[..., ks].sum(-1) for _, ks in groups], dim=-1)


def onset_bins(counts: torch.Tensor, voices: Sequence[int] | None) -> torch.Tensor:
    """Note-on counts per bar and instrument ``[..., I]`` -> onsets ids: the count (0..16) of a one-column
    instrument, the :data:`VOICE_ONSET_EDGES` bin of a polyphonic one."""
    exact = counts.clamp(max=MAX_ONSETS)
    if voices is None or all(v == 1 for v in voices):
        return exact
    edges = torch.tensor(VOICE_ONSET_EDGES[1:], device=counts.device)
    binned = torch.bucketize(counts.contiguous(), edges, right=True)
    poly = torch.tensor([v > 1 for v in voices], device=counts.device)
    return torch.where(poly, binned, exact)


def onset_range(bin_id: int, voices: int = 1) -> tuple[int, int | None]:
    """The note-on counts ``[lo, hi)`` an onsets id stands for (``hi`` None: no bound) for an instrument of
    ``voices`` voices."""
    if voices == 1:
        return bin_id, bin_id + 1
    edges = VOICE_ONSET_EDGES
    return edges[bin_id], edges[bin_id + 1] if bin_id + 1 < len(edges) else None


# --- computing ----------------------------------------------------------------------------------------------


def _is_note_on(col: torch.Tensor, track: Track) -> torch.Tensor:
    if track.is_drum:
        return (col > 0) & (col < track.num_classes)
    return (col > NOTE_OFF) & (col < track.num_classes)


def sounding_pitch_classes(x0: torch.Tensor, tracks: Sequence[Track]) -> torch.Tensor:
    """Duration-weighted pitch-class histogram ``[B, 12]`` of the melodic columns (16ths a class sounds; PAD steps
    take no time and end nothing)."""
    hist = x0.new_zeros((x0.shape[0], 12), dtype=torch.float32)
    steps = torch.arange(x0.shape[1], device=x0.device)
    for k, track in enumerate(tracks):
        if track.is_drum:
            continue
        col = x0[..., k]  # [B, L]
        pad = is_pad(col, track)
        last_event = torch.where((col != 0) & ~pad, steps, -1).cummax(dim=1).values  # [B, L]
        current = col.gather(1, last_event.clamp(min=0))  # the token that started what sounds now
        sounding = (last_event >= 0) & _is_note_on(current, track) & ~pad
        pc = (current + PITCH_OFFSET).remainder(12)
        hist += torch.zeros_like(hist).scatter_add_(1, pc * sounding, sounding.float())
    return hist


def estimate_key(x0: torch.Tensor, tracks: Sequence[Track]) -> torch.Tensor:
    """The Krumhansl-Kessler key of each piece ``[B, L, K] -> LongTensor[B]`` (``KEY_NULL`` without notes)."""
    hist = sounding_pitch_classes(x0, tracks)  # [B, 12]
    profiles = key_profiles().to(x0.device)  # [24, 12]
    h = hist - hist.mean(-1, keepdim=True)
    p = profiles - profiles.mean(-1, keepdim=True)
    corr = (h @ p.T) / (h.norm(dim=-1, keepdim=True) * p.norm(dim=-1) + 1e-12)  # [B, 24]
    key = corr.argmax(-1)
    return torch.where(hist.sum(-1) > 0, key, KEY_NULL)


def _note_ons(x0: torch.Tensor, tracks: Sequence[Track]) -> torch.Tensor:
    """``BoolTensor[B, L, K]``: where each column starts a note (a drum step: any hit)."""
    return torch.stack([_is_note_on(x0[..., k], t) for k, t in enumerate(tracks)], dim=-1)


def _per_bar(values: torch.Tensor) -> torch.Tensor:
    """``[B, L, K, ...]`` summed over each bar's 16 steps -> ``[B, bars, K, ...]``."""
    return reduce(values, "b (bars s) ... -> b bars ...", "sum", s=STEPS_PER_BAR)


def bar_onsets(x0: torch.Tensor, tracks: Sequence[Track], by_instrument: bool = False) -> torch.Tensor:
    """Note onsets (drum hit steps) per bar and column ``[B, L, K] -> LongTensor[B, bars, K]``; with
    ``by_instrument`` per instrument, its voices' note-ons together ``[B, bars, I]``."""
    counts = _per_bar(_note_ons(x0, tracks).long())
    return group_columns(counts, tracks) if by_instrument else counts


def bar_mean_pitch(x0: torch.Tensor, tracks: Sequence[Track], by_instrument: bool = False) -> torch.Tensor:
    """Mean MIDI pitch of each bar's note-ons ``[B, bars, K]`` (float; NaN without note-ons and for drums); with
    ``by_instrument`` over all the voices of each instrument, ``[B, bars, I]``."""
    drums = torch.tensor([t.is_drum for t in tracks], device=x0.device)
    on = _note_ons(x0, tracks) & ~drums
    pitch = torch.where(on, x0 + PITCH_OFFSET, 0).float()
    sums = _per_bar(torch.stack([pitch, on.float()], dim=-1))  # [B, bars, K, 2]
    if by_instrument:
        sums = group_columns(sums.transpose(-1, -2), tracks).transpose(-1, -2)
    return sums[..., 0] / sums[..., 1]  # 0 / 0 = NaN where no note-on


def register_bin(mean_pitch: torch.Tensor) -> torch.Tensor:
    """Register ids of mean pitches (float, NaN = no notes): ``floor((p - 21) / 3)`` clipped to 0..29, or EMPTY."""
    b = ((mean_pitch.nan_to_num(REGISTER_LOW) - REGISTER_LOW) / REGISTER_WIDTH).floor().clamp(0, REGISTER_BINS - 1)
    return torch.where(mean_pitch.isnan(), REGISTER_EMPTY, b.long())


def register_center(bin_id: int) -> float:
    """The middle pitch of a register bin (what a target asks for)."""
    return REGISTER_LOW + REGISTER_WIDTH * (bin_id + 0.5)


def bar_dynamics(x0: torch.Tensor, velocity: torch.Tensor, tracks: Sequence[Track]) -> torch.Tensor:
    """Dynamics ids per bar and instrument ``[B, bars, I]``: the velocity bin of the mean MIDI velocity of the
    instrument's note-ons in the bar, each at its bin's centre (``tokens.bin_to_velocity``), minus one (ids
    0..7); ``DYNAMICS_NULL`` where no note-on has a velocity bin 1..8. ``velocity [B, L, K]``: bins at the onsets
    (``NO_ONSET``, ``VELOCITY_MASK`` elsewhere or where unknown). Exact in integers."""
    known = _note_ons(x0, tracks) & (velocity >= 1) & (velocity <= VELOCITY_BINS)
    centre = torch.where(known, 16 * velocity - 8, 0)  # the MIDI velocity at the bin's centre
    total = group_columns(_per_bar(centre), tracks)
    count = group_columns(_per_bar(known.long()), tracks)
    # velocity_to_bin(total / count) = floor((mean - 1) / 16) + 1, in integers
    bins = (total - count).div(16 * count.clamp(min=1), rounding_mode="floor") + 1
    return torch.where(count > 0, bins.clamp(1, DYNAMICS_BINS) - 1, DYNAMICS_NULL)


def parse_dynamics(text: str) -> int:
    """A dynamics id from a mark (``ppp`` .. ``fff``) or a MIDI velocity ``1..127`` (its bin)."""
    s = text.strip()
    if s.lower() in DYNAMICS_MARKS:
        return DYNAMICS_MARKS.index(s.lower())
    try:
        v = float(s)
    except ValueError:
        v = -1.0
    if not 1 <= v <= 127:
        raise ValueError(f"unknown dynamics {text!r}; expected a mark ({', '.join(DYNAMICS_MARKS)}) or a MIDI "
                         "velocity 1..127")
    return int(velocity_to_bin(int(round(v)))) - 1


def dynamics_velocity(dynamics_id: int) -> int:
    """The MIDI velocity at the centre of a dynamics id's bin (what a mark asks for): ``mf`` -> 72."""
    return 16 * (dynamics_id + 1) - 8


# --- the conditions of a batch ------------------------------------------------------------------------------


@dataclass
class Attributes:
    """The conditions of a batch: ``key [B]`` and the bar attributes ``onsets``, ``register``, ``dynamics``
    ``[B, bars, I]`` (LongTensors), one per instrument of the model's set.

    ``voices``: the number of voices of each instrument where some instrument has several (pop909: ``(1, 4,
    6)``), None where each is one column (the trio, the melody: I = K). :attr:`shape` is that of the pieces the
    attributes fit, ``(B, bars, K)`` with K their columns. ``dynamics`` left out is every bar null (models
    without velocity never see another value).
    """

    key: torch.Tensor
    onsets: torch.Tensor
    register: torch.Tensor
    dynamics: torch.Tensor | None = None
    voices: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.dynamics is None:
            self.dynamics = torch.full_like(self.onsets, DYNAMICS_NULL)
        if self.voices is not None:
            self.voices = tuple(int(v) for v in self.voices)
            if all(v == 1 for v in self.voices):
                self.voices = None
            elif len(self.voices) != self.onsets.shape[-1]:
                raise ValueError(f"voices {self.voices} name {len(self.voices)} instruments, the bar attributes "
                                 f"have {self.onsets.shape[-1]}")

    @classmethod
    def compute(cls, x0: torch.Tensor, tracks: Sequence[Track], velocity: torch.Tensor | None = None
                ) -> Attributes:
        """The attributes of complete pieces ``x0 [B, L, K]`` (L a multiple of 16); dynamics from their velocity
        bins ``velocity [B, L, K]`` (None: null)."""
        if x0.shape[1] % STEPS_PER_BAR:
            raise ValueError(f"attributes need whole bars: length {x0.shape[1]} is not a multiple of {STEPS_PER_BAR}")
        voices = voices_of(tracks)
        register = register_bin(bar_mean_pitch(x0, tracks, by_instrument=True))
        drums = torch.tensor([tracks[ks[0]].is_drum for _, ks in instruments(tracks)], device=x0.device)
        onsets = onset_bins(bar_onsets(x0, tracks, by_instrument=True), voices)
        dynamics = None if velocity is None else bar_dynamics(x0, velocity.to(x0.device), tracks)
        return cls(estimate_key(x0, tracks), onsets, torch.where(drums, REGISTER_NULL, register), dynamics, voices)

    @classmethod
    def null(cls, batch: int, bars: int, tracks: int | str | Sequence[Track],
             device: torch.device | str | None = None) -> Attributes:
        """Nothing told, for ``batch`` pieces of ``bars`` bars of a track set (``tracks``; a number K: K one-column
        instruments)."""
        voices = None if isinstance(tracks, int) else voices_of(tracks)
        num = tracks if isinstance(tracks, int) else len(instruments(tracks))
        full = torch.full((batch, bars, num), 0, dtype=torch.long, device=device)
        return cls(torch.full((batch,), KEY_NULL, dtype=torch.long, device=device), full + ONSETS_NULL,
                   full + REGISTER_NULL, full + DYNAMICS_NULL, voices)

    def null_like(self) -> Attributes:
        B, bars, num = self.onsets.shape
        return Attributes.null(B, bars, num, self.key.device).with_voices(self.voices)

    def with_voices(self, voices: Sequence[int] | None) -> Attributes:
        return dataclasses.replace(self, voices=None if voices is None else tuple(voices))

    def _map(self, f) -> Attributes:
        """``f`` applied to every tensor (key and bar attributes alike), voices kept."""
        return Attributes(*(f(getattr(self, k)) for k in KINDS), voices=self.voices)

    def _map_bars(self, f) -> Attributes:
        """``f`` applied to the bar attributes, key and voices kept."""
        return Attributes(self.key, *(f(getattr(self, k)) for k in BAR_KINDS), voices=self.voices)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(B, bars, K)``: the pieces these attributes fit (K columns; the bar attributes are ``[B, bars, I]``)."""
        B, bars, num = self.onsets.shape
        return B, bars, sum(self.voices) if self.voices is not None else num

    @property
    def num_instruments(self) -> int:
        """I, the instruments the bar attributes describe."""
        return self.onsets.shape[-1]

    def to(self, device: torch.device | str) -> Attributes:
        return self._map(lambda t: t.to(device))

    def expand(self, batch: int) -> Attributes:
        """A batch of one repeated ``batch`` times (a batch of ``batch`` is returned as it is)."""
        if self.key.shape[0] == batch:
            return self
        if self.key.shape[0] != 1:
            raise ValueError(f"attributes of batch {self.key.shape[0]} do not fit a batch of {batch}")
        return self._map(lambda t: t.expand(batch, *t.shape[1:]).clone())

    def rows(self, start: int, stop: int) -> Attributes:
        """Samples ``[start, stop)`` of the batch."""
        return self._map(lambda t: t[start:stop])

    def select(self, index: torch.Tensor) -> Attributes:
        """The samples ``index`` (a LongTensor of rows) of the batch."""
        return self._map(lambda t: t[index])

    def bars(self, start: int, stop: int) -> Attributes:
        """The bar attributes of bars ``[start, stop)`` (the key stays)."""
        return self._map_bars(lambda t: t[:, start:stop])

    def pad_bars(self, bars: int) -> Attributes:
        """Null bar attributes appended up to ``bars`` bars."""
        B, have, num = self.onsets.shape
        if bars <= have:
            return self
        extra = Attributes.null(B, bars - have, num, self.key.device)
        return Attributes(self.key, *(torch.cat([getattr(self, k), getattr(extra, k)], 1) for k in BAR_KINDS),
                          voices=self.voices)

    @staticmethod
    def cat(items: Sequence[Attributes]) -> Attributes:
        """Batches joined along B (of one track set)."""
        _same_voices(items)
        return Attributes(*(torch.cat([getattr(a, f) for a in items]) for f in KINDS), voices=items[0].voices)

    @staticmethod
    def cat_bars(items: Sequence[Attributes]) -> Attributes:
        """Pieces joined along their bars (the first one's key)."""
        _same_voices(items)
        return Attributes(items[0].key, *(torch.cat([getattr(a, k) for a in items], 1) for k in BAR_KINDS),
                          voices=items[0].voices)

    def with_key(self, key: torch.Tensor | int) -> Attributes:
        return dataclasses.replace(self, key=torch.as_tensor(key, device=self.key.device).expand_as(self.key).clone())

    def without(self, kinds: Sequence[str]) -> Attributes:
        """A copy with the attribute kinds ``kinds`` (of ``KINDS``) null, the others as told."""
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown attribute kinds {sorted(unknown)}; expected some of {list(KINDS)}")
        return dataclasses.replace(self, **{k: torch.full_like(getattr(self, k), NULLS[k]) for k in kinds})

    def equals(self, other: Attributes) -> bool:
        return self.voices == other.voices and all(torch.equal(getattr(self, k), getattr(other, k)) for k in KINDS)

    def is_null(self) -> bool:
        """Whether nothing is told."""
        return all(bool((getattr(self, k) == NULLS[k]).all()) for k in KINDS)

    def tells_dynamics(self) -> bool:
        """Whether any bar is told its dynamics (only models with velocity take them)."""
        return bool((self.dynamics != DYNAMICS_NULL).any())


def _same_voices(items: Sequence[Attributes]) -> None:
    if len({a.voices for a in items}) > 1:
        raise ValueError(f"attributes of different track sets (voices {sorted({str(a.voices) for a in items})}) "
                         "cannot be joined")


def for_tracks(attrs: Attributes, tracks: Sequence[Track]) -> Attributes:
    """``attrs`` per instrument of ``tracks`` ``[B, bars, I]``. Bar attributes given per column ``[B, bars, K]``
    (as ``Attributes.null(B, bars, K)`` makes them) are taken per instrument where all its voices agree; a
    ValueError where they do not, or where the attributes are of another set."""
    tracks = get_tracks(tracks)
    voices = voices_of(tracks)
    groups = instruments(tracks)
    have = attrs.onsets.shape[-1]
    if attrs.voices == voices and have == len(groups):
        return attrs
    if attrs.voices is None and have == len(groups):
        return attrs.with_voices(voices)
    if attrs.voices is None and have == len(tracks):  # per column: one value per instrument
        for kind in BAR_KINDS:
            value = getattr(attrs, kind)
            for name, ks in groups:
                if not (value[..., ks] == value[..., ks[:1]]).all():
                    raise ValueError(f"{kind} given per column differs between the voices of {name}: attributes "
                                     "are per instrument")
        first = [ks[0] for _, ks in groups]
        return Attributes(attrs.key, *(getattr(attrs, k)[..., first] for k in BAR_KINDS), voices=voices)
    raise ValueError(f"attributes of {have} instruments (voices {attrs.voices}) do not fit the track set "
                     f"{', '.join(n for n, _ in groups)} ({len(groups)} instruments, {len(tracks)} columns)")


def misses(told: Attributes, x0: torch.Tensor, tracks: Sequence[Track], velocity: torch.Tensor | None = None
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Where pieces ``x0 [B, L, K]`` do not have what they were ``told``: ``key [B]`` and ``bars [B, bars, K]``
    (per column: a bar of an instrument that misses marks all its voices).

    A piece misses its key when one was told and another is estimated. A bar of an instrument misses when its
    onsets were told and its onsets id is more than ``ONSETS_TOLERANCE`` off, or its register was told and its
    register bin is more than ``REGISTER_TOLERANCE`` bins off (an empty bar told and notes played, or the other
    way round, also miss), or its dynamics were told and the dynamics of its onsets, from ``velocity [B, L, K]``,
    are more than ``DYNAMICS_TOLERANCE`` bins off (without ``velocity``, or in a bar without onsets, dynamics
    never miss). Null conditions never miss. A length that is not whole bars is padded with masks (no events).
    """
    tracks = get_tracks(tracks)
    told = for_tracks(told, tracks)
    pad = -x0.shape[1] % STEPS_PER_BAR
    if pad:
        mask_ids = torch.tensor([t.mask_id for t in tracks], device=x0.device)
        x0 = torch.cat([x0, mask_ids.expand(x0.shape[0], pad, -1)], dim=1)
        if velocity is not None:
            velocity = torch.cat([velocity.to(x0.device), velocity.new_zeros(x0.shape[0], pad, x0.shape[2])], dim=1)
    have = Attributes.compute(x0, tracks, velocity)
    key = (told.key != KEY_NULL) & (have.key != told.key)
    onsets = (told.onsets != ONSETS_NULL) & ((have.onsets - told.onsets).abs() > ONSETS_TOLERANCE)
    empty = (told.register == REGISTER_EMPTY) | (have.register == REGISTER_EMPTY)
    off = torch.where(empty, have.register != told.register,
                      (have.register - told.register).abs() > REGISTER_TOLERANCE)
    dynamics = ((told.dynamics != DYNAMICS_NULL) & (have.dynamics != DYNAMICS_NULL)
                & ((have.dynamics - told.dynamics).abs() > DYNAMICS_TOLERANCE))
    bars = onsets | ((told.register != REGISTER_NULL) & off) | dynamics  # [B, bars, I]
    column = torch.tensor([i for i, (_, ks) in enumerate(instruments(tracks)) for _ in ks], device=bars.device)
    return key, bars[..., column]


#: The kinds :func:`drop` draws first, in the order of their random numbers (as before dynamics existed, so a
#: model without velocity trains on the same draws).
_DROP_FIRST = ("key", "onsets", "register")


def drop(attrs: Attributes, rate: float | dict[str, float], generator: torch.Generator | None = None
         ) -> Attributes:
    """Each attribute kind of each sample replaced by its null id with probability ``rate`` (a float, or a
    rate per kind ``{"key": .., "onsets": .., "register": .., "dynamics": ..}``), independently. ``rate 0``
    returns ``attrs``. Dynamics draw their own numbers after the others', and only where some bar has them."""
    rates = rate if isinstance(rate, dict) else dict.fromkeys(KINDS, rate)
    B = attrs.key.shape[0]
    device = generator.device if generator else None
    u = torch.rand((len(_DROP_FIRST), B), generator=generator, device=device).to(attrs.key.device)
    kinds = list(_DROP_FIRST)
    if rates.get("dynamics", 0.0) > 0 and attrs.tells_dynamics():
        u = torch.cat([u, torch.rand((1, B), generator=generator, device=device).to(attrs.key.device)])
        kinds.append("dynamics")
    out = {k: getattr(attrs, k) for k in KINDS}
    for i, kind in enumerate(kinds):
        value = getattr(attrs, kind)
        gone = (u[i] < rates.get(kind, 0.0)).view(B, *([1] * (value.dim() - 1)))
        out[kind] = torch.where(gone, NULLS[kind], value)
    return Attributes(**out, voices=attrs.voices)


# --- the key distribution of a data set ---------------------------------------------------------------------


def key_distribution(pieces: np.ndarray | torch.Tensor, tracks: Sequence[Track], max_pieces: int = 20_000,
                     batch_size: int = 256) -> list[float]:
    """Share of each key id (``KEY_IDS`` values, the last = no melodic notes) over ``pieces [N, L, K]``
    (evenly spaced pieces when there are more than ``max_pieces``)."""
    n = len(pieces)
    if n == 0:
        return [0.0] * NUM_KEYS + [1.0]
    index = np.unique(np.linspace(0, n - 1, min(n, max_pieces)).round().astype(np.int64))
    counts = torch.zeros(KEY_IDS)
    for lo in range(0, len(index), batch_size):
        batch = torch.from_numpy(np.asarray(pieces[index[lo:lo + batch_size]], dtype=np.int64))
        counts += torch.bincount(estimate_key(batch, tracks), minlength=KEY_IDS).float()
    return (counts / counts.sum()).tolist()


def draw_keys(prior: Sequence[float], batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``batch`` key ids drawn from a key distribution (``KEY_IDS`` shares) ``-> LongTensor[B]``."""
    p = torch.as_tensor(prior, dtype=torch.float64)
    if p.shape != (KEY_IDS,) or p.sum() <= 0:
        raise ValueError(f"a key distribution has {KEY_IDS} non-negative shares, got {tuple(p.shape)}")
    return torch.multinomial(p, batch, replacement=True, generator=generator)


# --- outlines: the attributes of training windows --------------------------------------------------------

#: Training windows whose attributes a model keeps as outlines for new pieces.
MAX_OUTLINES = 256


def outline_bank(pieces: np.ndarray | torch.Tensor, tracks: Sequence[Track], max_outlines: int = MAX_OUTLINES,
                 velocity: np.ndarray | torch.Tensor | None = None) -> dict[str, Any]:
    """Outlines of new pieces: the attributes (key; onsets, register and, with ``velocity`` ``[N, L, K]``,
    dynamics per bar and instrument) of up to ``max_outlines`` evenly spaced ``pieces [N, L, K]``, compact enough
    for a model's hyper-parameters (JSON): ``{"shape": [n, bars, I], "key": [n ids], "onsets": ..., "register":
    ..., "dynamics": ..., "voices": [...]}``, bar attributes as base64 of ``uint8 [n, bars, I]`` (``dynamics``
    only with velocity, ``voices`` only for a set with a polyphonic instrument)."""
    n = len(pieces)
    if n == 0:
        raise ValueError("no pieces to take outlines from")
    index = np.unique(np.linspace(0, n - 1, min(n, max_outlines)).round().astype(np.int64))
    vel = None if velocity is None else torch.from_numpy(np.asarray(velocity[index], dtype=np.int64))
    attrs = Attributes.compute(torch.from_numpy(np.asarray(pieces[index], dtype=np.int64)), tracks, vel)

    def pack(t: torch.Tensor) -> str:
        return base64.b64encode(t.numpy().astype(np.uint8).tobytes()).decode("ascii")

    bank = {"shape": list(attrs.onsets.shape), "key": attrs.key.tolist(), "onsets": pack(attrs.onsets),
            "register": pack(attrs.register)}
    if velocity is not None:
        bank["dynamics"] = pack(attrs.dynamics)
    if attrs.voices is not None:
        bank["voices"] = list(attrs.voices)
    return bank


def draw_outlines(bank: dict[str, Any], batch: int, generator: torch.Generator | None = None) -> Attributes:
    """``batch`` outlines drawn with replacement from a :func:`outline_bank` ``-> Attributes [batch, bars, I]``
    (dynamics null where the bank has none)."""
    shape = tuple(bank["shape"])

    def unpack(text: str) -> torch.Tensor:
        return torch.from_numpy(np.frombuffer(base64.b64decode(text), dtype=np.uint8).reshape(shape).astype(np.int64))

    outlines = Attributes(torch.as_tensor(bank["key"], dtype=torch.long), unpack(bank["onsets"]),
                          unpack(bank["register"]), unpack(bank["dynamics"]) if "dynamics" in bank else None,
                          bank.get("voices"))
    return outlines.select(torch.randint(0, shape[0], (batch,), generator=generator))


#: What a conditional model stores of its training split (in its ``attributes`` hyper-parameters) for drawing the
#: conditions of new pieces.
DATA_SUMMARIES = ("key_prior", "outlines")


def data_summaries(pieces: np.ndarray | torch.Tensor, tracks: Sequence[Track],
                   velocity: np.ndarray | torch.Tensor | None = None) -> dict[str, Any]:
    """``{"key_prior": key_distribution(...), "outlines": outline_bank(...)}`` of the training ``pieces [N, L, K]``
    (outlines with dynamics where their ``velocity`` bins are given)."""
    return {"key_prior": key_distribution(pieces, tracks), "outlines": outline_bank(pieces, tracks, velocity=velocity)}


# --- targets a user asks for --------------------------------------------------------------------------------

_NOTE = re.compile(r"^([A-Ga-g])([#b]?)(-?\d+)$")


def parse_pitch(text: str) -> float:
    """A MIDI pitch from ``60``, ``60.5`` or a note name ``C4`` (= 60), ``F#2``, ``Bb3``."""
    m = _NOTE.match(text.strip())
    if m is None:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"unknown pitch {text!r}; expected a MIDI number (60) or a note name (C4, F#2)") from None
    base = TONICS.index(m.group(1).upper()) + {"#": 1, "b": -1, "": 0}[m.group(2)]
    return float(12 * (int(m.group(3)) + 1) + base)


@dataclass(frozen=True)
class BarTarget:
    """``track=value`` over bars ``[start, stop)`` (None: every bar); ``track`` names an instrument."""

    track: str
    value: float
    start: int | None = None
    stop: int | None = None


def parse_target(text: str, pitch: bool = False, dynamics: bool = False) -> BarTarget:
    """``melody=8``, ``bass=2@0:16`` (bars 0..15), ``bass=C2@8:16`` (with ``pitch``: note names allowed),
    ``piano=mf@8:16`` (with ``dynamics``: a mark ppp..fff, as the MIDI velocity at its bin's centre, or a MIDI
    velocity)."""
    spec, _, bars = text.partition("@")
    track, sep, value = spec.partition("=")
    if not sep or not track or not value:
        raise ValueError(f"{text!r}: expected TRACK=VALUE[@START:END], e.g. melody=8 or bass=C2@8:16")
    if dynamics:
        level = parse_dynamics(value)  # a mark asks for its bin's centre, a velocity for itself
        number = float(dynamics_velocity(level)) if value.strip().lower() in DYNAMICS_MARKS else float(value)
    else:
        number = parse_pitch(value) if pitch else float(value)
    if not bars:
        return BarTarget(track.strip(), number)
    start, colon, stop = bars.partition(":")
    if not colon or not start.strip().isdigit() or not stop.strip().isdigit() or int(start) >= int(stop):
        raise ValueError(f"{text!r}: bar range {bars!r} must be START:END with START < END")
    return BarTarget(track.strip(), number, int(start), int(stop))


def apply_targets(attrs: Attributes, tracks: Sequence[Track], onsets: Sequence[BarTarget] = (),
                  register: Sequence[BarTarget] = (), dynamics: Sequence[BarTarget] = ()) -> Attributes:
    """``attrs`` (per instrument, or per column as :meth:`Attributes.null` of K makes them) per instrument of
    ``tracks``, with the asked onsets per bar (note-ons of all the instrument's voices: its onsets id), mean
    pitches (binned) and dynamics (MIDI velocities, binned) written into their bars and instruments. A ValueError
    names an unknown instrument (a voice column is not one), a drum register or a bar range past the piece."""
    tracks = get_tracks(tracks)
    attrs = for_tracks(attrs, tracks)
    groups = instruments(tracks)
    names = [name for name, _ in groups]
    voices = [len(ks) for _, ks in groups]
    out = attrs._map_bars(torch.clone)
    bars = attrs.onsets.shape[1]
    asked = [(t, "onsets") for t in onsets] + [(t, "register") for t in register] + \
            [(t, "dynamics") for t in dynamics]
    for target, kind in asked:
        if target.track not in names:
            group = next((t.group for t in tracks if t.name == target.track and t.group), None)
            hint = f": attributes are per instrument, {target.track!r} is a voice of {group!r}" if group else ""
            raise ValueError(f"no track {target.track!r} (the model's instruments are {', '.join(names)}){hint}")
        i = names.index(target.track)
        if kind == "register" and tracks[groups[i][1][0]].is_drum:
            raise ValueError("drums have no register")
        start, stop = target.start or 0, target.stop if target.stop is not None else bars
        if stop > bars:
            raise ValueError(f"bar range {start}:{stop} goes past the piece's {bars} bars")
        if kind == "register":
            value = int(register_bin(torch.tensor(float(target.value))))
        elif kind == "dynamics":
            value = parse_dynamics(str(target.value))
        else:
            count = torch.tensor([max(round(target.value), 0)])
            value = int(onset_bins(count, [voices[i]])[0])
        getattr(out, kind)[:, start:stop, i] = value
    return out


def describe(attrs: Attributes, index: int = 0) -> dict:
    """One sample's attributes as JSON-friendly values, per instrument: key name, onsets (a count; for a
    polyphonic instrument's wider bins their range, ``"10-11"``, ``"32+"``), register ids, and dynamics marks
    where any is told; None for null."""
    voices = attrs.voices or (1,) * attrs.num_instruments

    def values(t: torch.Tensor, null: int, show=lambda v, i: int(v)) -> list[list]:
        return [[None if v == null else show(v, i) for v in row] for i, row in enumerate(t[index].T.tolist())]

    def onsets(v: int, i: int) -> int | str:
        if voices[i] == 1:
            return int(v)
        lo, hi = onset_range(v, voices[i])
        return f"{lo}+" if hi is None else lo if hi == lo + 1 else f"{lo}-{hi - 1}"

    out = {"key": key_name(int(attrs.key[index])), "onsets": values(attrs.onsets, ONSETS_NULL, onsets),
           "register": values(attrs.register, REGISTER_NULL)}
    if bool((attrs.dynamics[index] != DYNAMICS_NULL).any()):
        out["dynamics"] = values(attrs.dynamics, DYNAMICS_NULL, lambda v, i: DYNAMICS_MARKS[v])
    return out


__all__ = ["BAR_KINDS", "DATA_SUMMARIES", "DYNAMICS_IDS", "DYNAMICS_MARKS", "DYNAMICS_NULL", "KINDS",
           "MAX_OUTLINES", "Attributes", "BarTarget", "KEY_IDS", "KEY_NULL", "ONSET_IDS", "ONSETS_NULL",
           "REGISTER_EMPTY", "REGISTER_IDS", "REGISTER_NULL", "VOICE_ONSET_EDGES", "apply_targets", "bar_dynamics",
           "bar_mean_pitch", "bar_onsets", "data_summaries", "describe", "draw_keys", "draw_outlines", "drop",
           "dynamics_velocity", "estimate_key", "for_tracks", "key_distribution", "key_name", "misses",
           "onset_bins", "onset_range", "outline_bank", "parse_dynamics", "parse_key", "parse_pitch",
           "parse_target", "register_bin", "relative_key", "voices_of"]
