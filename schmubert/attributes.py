"""Musical attributes computed from token grids: the conditions a model can be told (key, density, register).

This module is the one owner of every attribute definition, its bins and its null id. Everything is exact,
vectorized in torch and cheap enough to run on every training batch after transposition augmentation
(:func:`schmubert.data.transpose`), so a transposed piece gets a transposed key. See ``docs/attributes.md``.

Definitions (``x0 [B, L, K]`` token ids; masks and out-of-vocabulary ids count as no event):

- **key** ``[B]``: the tonic and mode best fitting the piece. The duration-weighted pitch-class histogram of the
  melodic tracks (melody + bass; each step a note sounds adds one 16th to its pitch class; a note sounds from
  its note-on to the next event of its track) is correlated (Pearson) with the 24 rotated Krumhansl-Kessler
  profiles; the best is the key. Ids ``0..11`` = C..B major, ``12..23`` = C..B minor, ``KEY_NULL = 24`` (no
  condition, or a piece without melodic notes).
- **onsets** ``[B, bars, K]``: note onsets per bar and track: note-ons of a melodic track, steps with any hit
  for drums. Bins are the exact counts ``0..16`` (a bar has 16 steps); ``ONSETS_NULL = 17``.
- **register** ``[B, bars, K]``: the mean MIDI pitch of the note-ons in the bar, in bins of
  ``REGISTER_WIDTH = 3`` semitones from ``REGISTER_LOW = 21``: bin ``b`` holds means in ``[21 + 3b, 24 + 3b)``
  (``0..29``, up to 111); ``REGISTER_EMPTY = 30`` for a bar without note-ons; ``REGISTER_NULL = 31``. Drums have
  no register: always null.

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

from schmubert.tokens import NOTE_OFF, PITCH_OFFSET, STEPS_PER_BAR, Track

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

REGISTER_LOW = 21
REGISTER_WIDTH = 3
REGISTER_BINS = 30  # 21 .. 111
REGISTER_EMPTY = REGISTER_BINS
REGISTER_NULL = REGISTER_BINS + 1
REGISTER_IDS = REGISTER_NULL + 1

#: How far a bar may be from what it was told and still follow it (the sampler's repair draws the others again):
#: onsets within +-1, register within +-1 bin (3 semitones).
ONSETS_TOLERANCE = 1
REGISTER_TOLERANCE = 1

KINDS = ("key", "onsets", "register")
#: The null id of each kind.
NULLS = {"key": KEY_NULL, "onsets": ONSETS_NULL, "register": REGISTER_NULL}

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


# --- computing ----------------------------------------------------------------------------------------------


def _is_note_on(col: torch.Tensor, track: Track) -> torch.Tensor:
    if track.is_drum:
        return (col > 0) & (col < track.num_classes)
    return (col > NOTE_OFF) & (col < track.num_classes)


def sounding_pitch_classes(x0: torch.Tensor, tracks: Sequence[Track]) -> torch.Tensor:
    """Duration-weighted pitch-class histogram ``[B, 12]`` of the melodic tracks (16ths a class sounds)."""
    hist = x0.new_zeros((x0.shape[0], 12), dtype=torch.float32)
    steps = torch.arange(x0.shape[1], device=x0.device)
    for k, track in enumerate(tracks):
        if track.is_drum:
            continue
        col = x0[..., k]  # [B, L]
        last_event = torch.where(col != 0, steps, -1).cummax(dim=1).values  # [B, L]
        current = col.gather(1, last_event.clamp(min=0))  # the token that started what sounds now
        sounding = (last_event >= 0) & _is_note_on(current, track)
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


def bar_onsets(x0: torch.Tensor, tracks: Sequence[Track]) -> torch.Tensor:
    """Note onsets (drum hit steps) per bar and track ``[B, L, K] -> LongTensor[B, bars, K]``."""
    on = torch.stack([_is_note_on(x0[..., k], t) for k, t in enumerate(tracks)], dim=-1)
    return reduce(on.long(), "b (bars s) k -> b bars k", "sum", s=STEPS_PER_BAR)


def bar_mean_pitch(x0: torch.Tensor, tracks: Sequence[Track]) -> torch.Tensor:
    """Mean MIDI pitch of each bar's note-ons ``[B, bars, K]`` (float; NaN without note-ons and for drums)."""
    cols = []
    for k, t in enumerate(tracks):
        on = _is_note_on(x0[..., k], t) & (not t.is_drum)
        pitch = torch.where(on, x0[..., k] + PITCH_OFFSET, 0).float()
        cols.append(torch.stack([pitch, on.float()], dim=-1))
    sums = reduce(torch.stack(cols, dim=-2), "b (bars s) k two -> b bars k two", "sum", s=STEPS_PER_BAR)
    return sums[..., 0] / sums[..., 1]  # 0 / 0 = NaN where no note-on


def register_bin(mean_pitch: torch.Tensor) -> torch.Tensor:
    """Register ids of mean pitches (float, NaN = no notes): ``floor((p - 21) / 3)`` clipped to 0..29, or EMPTY."""
    b = ((mean_pitch.nan_to_num(REGISTER_LOW) - REGISTER_LOW) / REGISTER_WIDTH).floor().clamp(0, REGISTER_BINS - 1)
    return torch.where(mean_pitch.isnan(), REGISTER_EMPTY, b.long())


def register_center(bin_id: int) -> float:
    """The middle pitch of a register bin (what a target asks for)."""
    return REGISTER_LOW + REGISTER_WIDTH * (bin_id + 0.5)


# --- the conditions of a batch ------------------------------------------------------------------------------


@dataclass
class Attributes:
    """The conditions of a batch: ``key [B]``, ``onsets [B, bars, K]``, ``register [B, bars, K]`` (LongTensors)."""

    key: torch.Tensor
    onsets: torch.Tensor
    register: torch.Tensor

    @classmethod
    def compute(cls, x0: torch.Tensor, tracks: Sequence[Track]) -> Attributes:
        """The attributes of complete pieces ``x0 [B, L, K]`` (L a multiple of 16)."""
        if x0.shape[1] % STEPS_PER_BAR:
            raise ValueError(f"attributes need whole bars: length {x0.shape[1]} is not a multiple of {STEPS_PER_BAR}")
        register = register_bin(bar_mean_pitch(x0, tracks))
        drums = torch.tensor([t.is_drum for t in tracks], device=x0.device)
        return cls(estimate_key(x0, tracks), bar_onsets(x0, tracks).clamp(max=MAX_ONSETS),
                   torch.where(drums, REGISTER_NULL, register))

    @classmethod
    def null(cls, batch: int, bars: int, num_tracks: int, device: torch.device | str | None = None) -> Attributes:
        """Nothing told: every id null."""
        full = torch.full((batch, bars, num_tracks), 0, dtype=torch.long, device=device)
        return cls(torch.full((batch,), KEY_NULL, dtype=torch.long, device=device), full + ONSETS_NULL,
                   full + REGISTER_NULL)

    def null_like(self) -> Attributes:
        B, bars, K = self.onsets.shape
        return Attributes.null(B, bars, K, self.key.device)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(B, bars, K)``."""
        return tuple(self.onsets.shape)  # type: ignore[return-value]

    def to(self, device: torch.device | str) -> Attributes:
        return Attributes(self.key.to(device), self.onsets.to(device), self.register.to(device))

    def expand(self, batch: int) -> Attributes:
        """A batch of one repeated ``batch`` times (a batch of ``batch`` is returned as it is)."""
        if self.key.shape[0] == batch:
            return self
        if self.key.shape[0] != 1:
            raise ValueError(f"attributes of batch {self.key.shape[0]} do not fit a batch of {batch}")
        return Attributes(self.key.expand(batch).clone(), self.onsets.expand(batch, -1, -1).clone(),
                          self.register.expand(batch, -1, -1).clone())

    def rows(self, start: int, stop: int) -> Attributes:
        """Samples ``[start, stop)`` of the batch."""
        return Attributes(self.key[start:stop], self.onsets[start:stop], self.register[start:stop])

    def select(self, index: torch.Tensor) -> Attributes:
        """The samples ``index`` (a LongTensor of rows) of the batch."""
        return Attributes(self.key[index], self.onsets[index], self.register[index])

    def bars(self, start: int, stop: int) -> Attributes:
        """The bar attributes of bars ``[start, stop)`` (the key stays)."""
        return Attributes(self.key, self.onsets[:, start:stop], self.register[:, start:stop])

    def pad_bars(self, bars: int) -> Attributes:
        """Null bar attributes appended up to ``bars`` bars."""
        B, have, K = self.shape
        if bars <= have:
            return self
        extra = Attributes.null(B, bars - have, K, self.key.device)
        return Attributes(self.key, torch.cat([self.onsets, extra.onsets], 1),
                          torch.cat([self.register, extra.register], 1))

    @staticmethod
    def cat(items: Sequence[Attributes]) -> Attributes:
        """Batches joined along B."""
        return Attributes(*(torch.cat([getattr(a, f) for a in items]) for f in KINDS))

    def with_key(self, key: torch.Tensor | int) -> Attributes:
        return dataclasses.replace(self, key=torch.as_tensor(key, device=self.key.device).expand_as(self.key).clone())

    def without(self, kinds: Sequence[str]) -> Attributes:
        """A copy with the attribute kinds ``kinds`` (of ``KINDS``) null, the others as told."""
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown attribute kinds {sorted(unknown)}; expected some of {list(KINDS)}")
        return dataclasses.replace(self, **{k: torch.full_like(getattr(self, k), NULLS[k]) for k in kinds})

    def equals(self, other: Attributes) -> bool:
        return all(torch.equal(getattr(self, k), getattr(other, k)) for k in KINDS)

    def is_null(self) -> bool:
        """Whether nothing is told."""
        return bool((self.key == KEY_NULL).all() and (self.onsets == ONSETS_NULL).all()
                    and (self.register == REGISTER_NULL).all())


def misses(told: Attributes, x0: torch.Tensor, tracks: Sequence[Track]) -> tuple[torch.Tensor, torch.Tensor]:
    """Where pieces ``x0 [B, L, K]`` do not have what they were ``told``: ``key [B]`` and ``bars [B, bars, K]``.

    A piece misses its key when one was told and another is estimated. A bar of a track misses when its onsets
    were told and are more than ``ONSETS_TOLERANCE`` off, or its register was told and its register bin is more
    than ``REGISTER_TOLERANCE`` bins off (an empty bar told and notes played, or the other way round, also
    miss). Null conditions never miss. A length that is not whole bars is padded with masks (no events).
    """
    pad = -x0.shape[1] % STEPS_PER_BAR
    if pad:
        mask_ids = torch.tensor([t.mask_id for t in tracks], device=x0.device)
        x0 = torch.cat([x0, mask_ids.expand(x0.shape[0], pad, -1)], dim=1)
    have = Attributes.compute(x0, tracks)
    key = (told.key != KEY_NULL) & (have.key != told.key)
    onsets = (told.onsets != ONSETS_NULL) & ((have.onsets - told.onsets).abs() > ONSETS_TOLERANCE)
    empty = (told.register == REGISTER_EMPTY) | (have.register == REGISTER_EMPTY)
    off = torch.where(empty, have.register != told.register,
                      (have.register - told.register).abs() > REGISTER_TOLERANCE)
    return key, onsets | ((told.register != REGISTER_NULL) & off)


def drop(attrs: Attributes, rate: float | dict[str, float], generator: torch.Generator | None = None
         ) -> Attributes:
    """Each attribute kind of each sample replaced by its null id with probability ``rate`` (a float, or a
    rate per kind ``{"key": .., "onsets": .., "register": ..}``), independently. ``rate 0`` returns ``attrs``."""
    rates = rate if isinstance(rate, dict) else dict.fromkeys(KINDS, rate)
    B = attrs.key.shape[0]
    u = torch.rand((len(KINDS), B), generator=generator, device=generator.device if generator else None)
    u = u.to(attrs.key.device)
    out = {}
    for i, kind in enumerate(KINDS):
        value = getattr(attrs, kind)
        gone = (u[i] < rates.get(kind, 0.0)).view(B, *([1] * (value.dim() - 1)))
        out[kind] = torch.where(gone, NULLS[kind], value)
    return Attributes(**out)


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


def outline_bank(pieces: np.ndarray | torch.Tensor, tracks: Sequence[Track], max_outlines: int = MAX_OUTLINES
                 ) -> dict[str, Any]:
    """Outlines of new pieces: the attributes (key; onsets and register per bar) of up to ``max_outlines``
    evenly spaced ``pieces [N, L, K]``, compact enough for a model's hyper-parameters (JSON): ``{"shape": [n,
    bars, K], "key": [n ids], "onsets": ..., "register": ...}``, bar attributes as base64 of ``uint8 [n, bars,
    K]``."""
    n = len(pieces)
    if n == 0:
        raise ValueError("no pieces to take outlines from")
    index = np.unique(np.linspace(0, n - 1, min(n, max_outlines)).round().astype(np.int64))
    attrs = Attributes.compute(torch.from_numpy(np.asarray(pieces[index], dtype=np.int64)), tracks)

    def pack(t: torch.Tensor) -> str:
        return base64.b64encode(t.numpy().astype(np.uint8).tobytes()).decode("ascii")

    return {"shape": list(attrs.shape), "key": attrs.key.tolist(), "onsets": pack(attrs.onsets),
            "register": pack(attrs.register)}


def draw_outlines(bank: dict[str, Any], batch: int, generator: torch.Generator | None = None) -> Attributes:
    """``batch`` outlines drawn with replacement from a :func:`outline_bank` ``-> Attributes [batch, bars, K]``."""
    shape = tuple(bank["shape"])

    def unpack(text: str) -> torch.Tensor:
        return torch.from_numpy(np.frombuffer(base64.b64decode(text), dtype=np.uint8).reshape(shape).astype(np.int64))

    outlines = Attributes(torch.as_tensor(bank["key"], dtype=torch.long), unpack(bank["onsets"]),
                          unpack(bank["register"]))
    return outlines.select(torch.randint(0, shape[0], (batch,), generator=generator))


#: What a conditional model stores of its training split (in its ``attributes`` hyper-parameters) for drawing the
#: conditions of new pieces.
DATA_SUMMARIES = ("key_prior", "outlines")


def data_summaries(pieces: np.ndarray | torch.Tensor, tracks: Sequence[Track]) -> dict[str, Any]:
    """``{"key_prior": key_distribution(...), "outlines": outline_bank(...)}`` of the training ``pieces [N, L, K]``."""
    return {"key_prior": key_distribution(pieces, tracks), "outlines": outline_bank(pieces, tracks)}


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
    """``track=value`` over bars ``[start, stop)`` (None: every bar)."""

    track: str
    value: float
    start: int | None = None
    stop: int | None = None


def parse_target(text: str, pitch: bool = False) -> BarTarget:
    """``melody=8``, ``bass=2@0:16`` (bars 0..15), ``bass=C2@8:16`` (with ``pitch``: note names allowed)."""
    spec, _, bars = text.partition("@")
    track, sep, value = spec.partition("=")
    if not sep or not track or not value:
        raise ValueError(f"{text!r}: expected TRACK=VALUE[@START:END], e.g. melody=8 or bass=C2@8:16")
    number = parse_pitch(value) if pitch else float(value)
    if not bars:
        return BarTarget(track.strip(), number)
    start, colon, stop = bars.partition(":")
    if not colon or not start.strip().isdigit() or not stop.strip().isdigit() or int(start) >= int(stop):
        raise ValueError(f"{text!r}: bar range {bars!r} must be START:END with START < END")
    return BarTarget(track.strip(), number, int(start), int(stop))


def apply_targets(attrs: Attributes, tracks: Sequence[Track], onsets: Sequence[BarTarget] = (),
                  register: Sequence[BarTarget] = ()) -> Attributes:
    """``attrs`` with the asked onsets per bar (rounded, 0..16) and mean pitches (binned) written into their bars
    and tracks. A ValueError names an unknown track, a drum register or a bar range past the piece."""
    names = [t.name for t in tracks]
    out = Attributes(attrs.key, attrs.onsets.clone(), attrs.register.clone())
    bars = attrs.shape[1]
    for target, field, is_register in [(t, out.onsets, False) for t in onsets] + \
                                      [(t, out.register, True) for t in register]:
        if target.track not in names:
            raise ValueError(f"no track {target.track!r} (the model has {', '.join(names)})")
        k = names.index(target.track)
        if is_register and tracks[k].is_drum:
            raise ValueError("drums have no register")
        start, stop = target.start or 0, target.stop if target.stop is not None else bars
        if stop > bars:
            raise ValueError(f"bar range {start}:{stop} goes past the piece's {bars} bars")
        if is_register:
            value = int(register_bin(torch.tensor(float(target.value))))
        else:
            value = int(min(max(round(target.value), 0), MAX_ONSETS))
        field[:, start:stop, k] = value
    return out


def describe(attrs: Attributes, index: int = 0) -> dict:
    """One sample's attributes as JSON-friendly values (key name, per-track lists; None for null)."""
    def values(t: torch.Tensor, null: int) -> list[list[int | None]]:
        return [[None if v == null else int(v) for v in row] for row in t[index].T.tolist()]

    return {"key": key_name(int(attrs.key[index])), "onsets": values(attrs.onsets, ONSETS_NULL),
            "register": values(attrs.register, REGISTER_NULL)}


__all__ = ["DATA_SUMMARIES", "MAX_OUTLINES", "Attributes", "BarTarget", "KEY_IDS", "KEY_NULL", "ONSET_IDS",
           "ONSETS_NULL", "REGISTER_EMPTY", "REGISTER_IDS", "REGISTER_NULL", "apply_targets", "bar_mean_pitch",
           "bar_onsets", "data_summaries", "draw_keys", "draw_outlines", "drop", "estimate_key", "key_distribution",
           "key_name", "outline_bank", "parse_key", "parse_pitch", "parse_target", "register_bin", "relative_key"]
