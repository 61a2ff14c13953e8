"""The token vocabulary and the MIDI <-> token codec (spec section 1).

This module is the single owner of every vocabulary fact: class counts, mask ids, the pitch range, the drum
classes and their pitch map, the time grid and the decoding conventions. Everything else imports from here.

A piece is an integer array ``(steps, K)`` on a 16th-note grid. ``K`` is the number of tracks (columns): 1 for
``melody``, 3 for ``trio`` (melody, bass, drums, in that order), 11 for ``pop909`` (melody, bridge as 4
stacked voices, piano as 6). A polyphonic instrument is several monophonic voice columns of one group
(``schmubert.polyphony`` assigns its notes to voices); any set is a spec such as ``melody,bass,drums,piano:6``.

Melodic tracks (melody, bass) have 90 classes per step::

    0 = no event (hold the sounding note, or stay silent)
    1 = note-off
    2..89 = note-on of MIDI pitch 21..108 (class = pitch - 19)
    90 = mask

The drum track has 512 classes: a bitmask of the 9 drum classes hit at that step, 512 = mask.

Meter (``schmubert.meter``): every bar is one 16-step slot (a bar longer than 16 steps, 5/4 or 12/8, two). The
steps of a slot past its bar's end (a 3/4 bar: the last 4) hold a **PAD** id, ``track.pad_id + kind`` (91..94
melodic, 513..516 drums: just above the mask; ``kind`` says simple or compound meter and whether the slot
continues the bar before, :data:`PAD_SIMPLE` ...), the same kind in every column. PAD has no duration: a note
held into a PAD step goes on at the next real step. It is never masked, never in the loss, never sampled.
A grid without PAD is 16 steps per bar, as it always was.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pretty_midi

# --- time grid ---------------------------------------------------------------------------------------------
STEPS_PER_QUARTER = 4
STEPS_PER_BAR = 16
DEFAULT_BARS = 64
DEFAULT_STEPS = DEFAULT_BARS * STEPS_PER_BAR  # 1024

# --- melodic vocabulary ------------------------------------------------------------------------------------
MIN_PITCH = 21
MAX_PITCH = 108
NO_EVENT = 0
NOTE_OFF = 1
PITCH_OFFSET = 19  # class = pitch - PITCH_OFFSET
MELODIC_CLASSES = 90
MELODIC_MASK = MELODIC_CLASSES

# --- drum vocabulary ---------------------------------------------------------------------------------------
DRUM_CLASS_NAMES = (
    "kick", "snare", "closed_hihat", "open_hihat", "low_tom", "mid_tom", "high_tom", "crash", "ride",
)
NUM_DRUM_CLASSES = len(DRUM_CLASS_NAMES)
DRUM_CLASSES = 2**NUM_DRUM_CLASSES  # 512 bitmask patterns
DRUM_MASK = DRUM_CLASSES
_DRUM_PITCHES_BY_CLASS = (
    (35, 36),
    (27, 28, 31, 32, 33, 34, 37, 38, 39, 40, 56, 65, 66, 75, 85),
    (22, 42, 44, 54, 68, 69, 70, 71, 73, 78, 80),
    (26, 46, 67, 72, 74, 79, 81),
    (29, 41, 43, 45, 61, 64, 84),
    (47, 48, 60, 63, 77, 86, 87),
    (30, 50, 62, 76, 83),
    (49, 52, 55, 57, 58),
    (51, 53, 59, 82),
)
#: General MIDI drum pitch -> drum class index (0..8). Pitches not in the map are dropped.
DRUM_PITCH_TO_CLASS: dict[int, int] = {
    pitch: cls for cls, pitches in enumerate(_DRUM_PITCHES_BY_CLASS) for pitch in pitches
}
_PITCH_CLASS_LUT = np.full(128, -1, dtype=np.int64)
_PITCH_CLASS_LUT[list(DRUM_PITCH_TO_CLASS)] = list(DRUM_PITCH_TO_CLASS.values())
#: The pitch written for each drum class when decoding.
DRUM_CLASS_PITCHES = (36, 38, 42, 46, 45, 48, 50, 49, 51)

# --- decoding conventions ----------------------------------------------------------------------------------
DECODE_QPM = 120.0
DECODE_VELOCITY = 80
DECODE_RESOLUTION = 480  # ticks per quarter; a multiple of STEPS_PER_QUARTER so every step is exact


# --- meter: PAD ---------------------------------------------------------------------------------------------
#: PAD kinds (the id is ``track.pad_id + kind``): the padded slot's bar is in simple meter (quarter or eighth
#: beats: 2/4, 3/4, 7/8, ...) or compound meter (dotted-quarter beats: 3/8, 6/8, ...); ``CONT`` kinds pad the
#: second slot of a bar longer than 16 steps (5/4, 12/8 ...), which continues the slot before it.
PAD_SIMPLE, PAD_COMPOUND, PAD_CONT_SIMPLE, PAD_CONT_COMPOUND = range(4)
PAD_KINDS = 4


def is_pad(tokens: np.ndarray, track: Track) -> np.ndarray:
    """Where a column's tokens (numpy or torch) are PAD (any kind)."""
    return (tokens > track.mask_id) & (tokens <= track.mask_id + PAD_KINDS)


def pad_mask(tokens: np.ndarray, tracks: str | Sequence[Track]) -> np.ndarray:
    """``[..., K]`` bool (numpy or torch, as ``tokens``): where a grid's elements are PAD."""
    ids = [t.mask_id for t in get_tracks(tracks)]
    masks = tokens.new_tensor(ids) if hasattr(tokens, "new_tensor") else np.asarray(ids)
    tokens = tokens if hasattr(tokens, "new_tensor") else np.asarray(tokens)
    return (tokens > masks) & (tokens <= masks + PAD_KINDS)


def pad_ids(tracks: str | Sequence[Track]) -> list[int]:
    """The first PAD id of each track (``pad_id``; kind k is ``pad_id + k``)."""
    return [t.pad_id for t in get_tracks(tracks)]


# --- velocity ------------------------------------------------------------------------------------------------
#: Velocity is a parallel grid beside the tokens: per column and step the bin of the note starting there
#: (drums: of the loudest hit), 0 where nothing starts. Bins are 16 MIDI velocities wide: 1..16 -> 1, ...,
#: 113..127 -> 8; a bin decodes to its centre (mean error about 4 velocity units).
NO_ONSET = 0
VELOCITY_BINS = 8
VELOCITY_CLASSES = VELOCITY_BINS + 1  # with NO_ONSET
VELOCITY_MASK = VELOCITY_CLASSES  # what a model is shown where an element's velocity is unknown
_VELOCITY_WIDTH = 16


def velocity_to_bin(velocity: np.ndarray | int) -> np.ndarray:
    """MIDI velocity 1..127 -> bin 1..8 (0 or less -> :data:`NO_ONSET`)."""
    v = np.asarray(velocity, dtype=np.int64)
    return np.where(v > 0, np.clip((v - 1) // _VELOCITY_WIDTH + 1, 1, VELOCITY_BINS), NO_ONSET)


def is_onset(tokens: np.ndarray, track: Track) -> np.ndarray:
    """Where a column's tokens (numpy or torch) start a note (a drum step: any hit): where a velocity belongs."""
    if track.is_drum:
        return (tokens > 0) & (tokens < DRUM_CLASSES)
    return (tokens > NOTE_OFF) & (tokens < MELODIC_CLASSES)


def bin_to_velocity(bins: np.ndarray | int) -> np.ndarray:
    """Bin 1..8 -> the MIDI velocity at its centre (8, 24, ..., 120); :data:`NO_ONSET` -> the decoding default."""
    b = np.asarray(bins, dtype=np.int64)
    return np.where((b >= 1) & (b <= VELOCITY_BINS), (b - 1) * _VELOCITY_WIDTH + _VELOCITY_WIDTH // 2,
                    DECODE_VELOCITY)


# --- instrument roles (General MIDI programs) --------------------------------------------------------------
MELODY_PROGRAMS = range(0, 32)
BASS_PROGRAMS = range(32, 40)


@dataclass(frozen=True)
class Track:
    """One column of a token grid: its role, vocabulary and how it is written to MIDI.

    A polyphonic instrument is ``voices`` columns with the same ``group`` (the instrument's name) and voice
    indices ``0..voices-1``; each is a monophonic melodic line (the 90-class codec). A monophonic line or a drum
    kit is its own group (``group`` empty).
    """

    name: str
    num_classes: int  # real classes, without the mask
    is_drum: bool
    program: int  # General MIDI program used when decoding
    group: str = ""  # the polyphonic instrument this column is a voice of ("": a one-column instrument)
    voice: int = 0  # the voice index inside its group

    @property
    def mask_id(self) -> int:
        return self.num_classes

    @property
    def pad_id(self) -> int:
        """The first PAD id (``pad_id + kind``, kind 0..3): the steps of a bar's slot past its end
        (``schmubert.meter``); a model built with ``meter=true`` embeds it as no event."""
        return self.num_classes + 1

    @property
    def vocab_size(self) -> int:
        """Real classes plus the mask token (the size of an input embedding)."""
        return self.num_classes + 1

    @property
    def instrument(self) -> str:
        """The instrument (slot) this column belongs to: its group, or its own name."""
        return self.group or self.name


MELODY = Track("melody", MELODIC_CLASSES, is_drum=False, program=0)
BASS = Track("bass", MELODIC_CLASSES, is_drum=False, program=33)
DRUMS = Track("drums", DRUM_CLASSES, is_drum=True, program=0)
TRACKS = {t.name: t for t in (MELODY, BASS, DRUMS)}


@dataclass(frozen=True)
class Family:
    """An instrument a track set can name: the General MIDI programs it reads, the one it writes, its voices."""

    programs: range  # GM programs read from a file for this instrument (drums: the drum channel)
    program: int  # GM program written
    voices: int  # default number of stacked voices (1 = a monophonic line)


#: Instruments a track-set spec may name (``piano:6``): General MIDI families, plus POP909's ``bridge``
#: (its counter-melody track). ``melody`` and ``bass`` are the trio's monophonic roles.
FAMILIES: dict[str, Family] = {
    "melody": Family(range(0, 32), 0, 1),
    "bass": Family(range(32, 40), 33, 1),
    "drums": Family(range(0), 0, 1),
    "piano": Family(range(0, 8), 0, 6),
    "chromatic": Family(range(8, 16), 11, 2),
    "organ": Family(range(16, 24), 16, 4),
    "guitar": Family(range(24, 32), 25, 4),
    "strings": Family(range(40, 56), 48, 4),
    "brass": Family(range(56, 64), 61, 4),
    "reed": Family(range(64, 72), 65, 1),
    "pipe": Family(range(72, 80), 73, 1),
    "lead": Family(range(80, 88), 80, 1),
    "pad": Family(range(88, 96), 89, 4),
    "bridge": Family(range(0, 8), 0, 4),
}
#: The most voices one instrument may have (the size of the voice-index embeddings).
MAX_VOICES = 16

#: Named track sets (the ``--tracks`` option everywhere); any other value is a spec, see :func:`parse_spec`.
TRACK_SET_SPECS: dict[str, str] = {
    "melody": "melody",
    "trio": "melody,bass,drums",
    "pop909": "melody,bridge:4,piano:6",
    "band": "melody,bass:2,drums,piano:6,chromatic:4,organ:4,guitar:6,strings:12,brass:4,reed:2,pipe:2,lead:4,pad:4",
}


def instrument_tracks(name: str, voices: int | None = None) -> tuple[Track, ...]:
    """The columns of one instrument: ``drums``, a monophonic line, or ``voices`` stacked voices."""
    if name not in FAMILIES:
        raise ValueError(f"unknown instrument {name!r}; expected one of {sorted(FAMILIES)}")
    if name in TRACKS and voices in (None, 1):
        return (TRACKS[name],)
    family = FAMILIES[name]
    voices = family.voices if voices is None else voices
    if name == "drums" or not 1 <= voices <= MAX_VOICES:
        raise ValueError(f"instrument {name!r}: voices must be 1..{MAX_VOICES} (drums: none), got {voices}")
    if voices == 1:
        return (Track(name, MELODIC_CLASSES, is_drum=False, program=family.program),)
    return tuple(Track(f"{name}.{v}", MELODIC_CLASSES, is_drum=False, program=family.program, group=name, voice=v)
                 for v in range(voices))


def parse_spec(spec: str) -> tuple[Track, ...]:
    """A track-set spec, ``"melody,bass,drums,piano:6,guitar:4"``, -> its columns.

    Each comma-separated item is an instrument of :data:`FAMILIES`, optionally with ``:N`` stacked voices (its
    family's default otherwise). An instrument may appear once.
    """
    out: list[Track] = []
    seen: set[str] = set()
    for item in (i.strip() for i in spec.split(",")):
        name, _, count = item.partition(":")
        if not name or name in seen:
            raise ValueError(f"track set {spec!r}: empty or repeated instrument {name!r}")
        if count and not count.isdigit():
            raise ValueError(f"track set {spec!r}: {item!r} is not NAME or NAME:VOICES")
        seen.add(name)
        out.extend(instrument_tracks(name, int(count) if count else None))
    return tuple(out)


#: Named track sets resolved to their columns.
TRACK_SETS: dict[str, tuple[Track, ...]] = {name: parse_spec(s) for name, s in TRACK_SET_SPECS.items()}


def get_tracks(tracks: str | Sequence[str] | Sequence[Track]) -> tuple[Track, ...]:
    """Resolve a named set (``"trio"``, ``"melody"``, ``"pop909"``), a spec (``"melody,piano:6"``) or a
    sequence of track names / ``Track`` objects."""
    if isinstance(tracks, str):
        if tracks in TRACK_SETS:
            return TRACK_SETS[tracks]
        try:
            return parse_spec(tracks)
        except ValueError as err:
            raise ValueError(f"unknown track set {tracks!r}: expected one of {sorted(TRACK_SETS)} or a spec "
                             f"like 'melody,bass,drums,piano:6' ({err})") from None
    out = []
    for t in tracks:
        if isinstance(t, Track):
            out.append(t)
        elif t in TRACKS:
            out.append(TRACKS[t])
        else:
            raise ValueError(f"unknown track {t!r}; expected one of {sorted(TRACKS)}")
    return tuple(out)


def track_set_name(tracks: Sequence[Track]) -> str:
    """The name of a track set (``"trio"``, ``"pop909"``, else its spec), inverse of :func:`get_tracks`."""
    for name, ts in TRACK_SETS.items():
        if tuple(tracks) == ts:
            return name
    tracks = tuple(tracks)
    return ",".join(name if tracks[ks[0]].name in TRACKS else f"{name}:{len(ks)}" for name, ks in instruments(tracks))


def instruments(tracks: str | Sequence[Track]) -> list[tuple[str, list[int]]]:
    """The instruments (slots) of a track set in order: ``[(name, column indices)]``; a polyphonic
    instrument's voices are consecutive columns."""
    out: list[tuple[str, list[int]]] = []
    for k, track in enumerate(get_tracks(tracks)):
        if out and track.group and out[-1][0] == track.group:
            out[-1][1].append(k)
        else:
            out.append((track.instrument, [k]))
    return out


def instrument_index(tracks: str | Sequence[Track]) -> list[int]:
    """The instrument (slot) index of each column: ``[0, 1, 2]`` for the trio, ``[0, 1, 1, 1, 1, 2, ...]`` for
    pop909."""
    out = [0] * len(get_tracks(tracks))
    for i, (_, ks) in enumerate(instruments(tracks)):
        for k in ks:
            out[k] = i
    return out


def is_legacy(tracks: str | Sequence[Track]) -> bool:
    """Whether a set is read from MIDI by the trio rule (spec section 2): only melody, bass and drums."""
    return all(t.name in TRACKS for t in get_tracks(tracks))


def mask_ids(tracks: str | Sequence[Track]) -> list[int]:
    return [t.mask_id for t in get_tracks(tracks)]


def num_classes(tracks: str | Sequence[Track]) -> list[int]:
    return [t.num_classes for t in get_tracks(tracks)]


def pitch_to_class(pitch: np.ndarray | int) -> np.ndarray | int:
    return pitch - PITCH_OFFSET


def class_to_pitch(cls: np.ndarray | int) -> np.ndarray | int:
    return cls + PITCH_OFFSET


def monophonize(notes: np.ndarray) -> np.ndarray:
    """Make a note list monophonic by the MusicVAE rule (spec section 2).

    Order by onset, then by pitch descending; at equal onsets the highest pitch wins; a later onset ends the
    note that is still sounding. Returns ``(M, 3)`` non-overlapping notes sorted by start.
    """
    notes = np.asarray(notes, dtype=np.int64).reshape(-1, 3)
    if len(notes) == 0:
        return notes
    order = np.lexsort((-notes[:, 2], notes[:, 0]))
    notes = notes[order]
    first_at_onset = np.ones(len(notes), dtype=bool)
    first_at_onset[1:] = notes[1:, 0] != notes[:-1, 0]
    notes = notes[first_at_onset].copy()
    # a later onset ends the sounding note
    notes[:-1, 1] = np.minimum(notes[:-1, 1], notes[1:, 0])
    return notes


def encode_melodic(notes: np.ndarray, steps: int) -> np.ndarray:
    """Notes ``(N, 3)`` (start, end, pitch; steps) -> melodic token row ``(steps,)``.

    The notes are monophonized first; pitches outside ``MIN_PITCH..MAX_PITCH`` are dropped; a note at least one
    step long is kept (zero-length notes are stretched to one step). Notes starting at or after ``steps`` are
    dropped, notes running past the end are cut.
    """
    row = np.zeros(steps, dtype=np.int64)
    notes = np.asarray(notes, dtype=np.int64).reshape(-1, 3)
    keep = (notes[:, 2] >= MIN_PITCH) & (notes[:, 2] <= MAX_PITCH) & (notes[:, 0] >= 0) & (notes[:, 0] < steps)
    notes = notes[keep].copy()
    notes[:, 1] = np.maximum(notes[:, 1], notes[:, 0] + 1)
    notes = monophonize(notes)
    if len(notes) == 0:
        return row
    ends = notes[:, 1]
    # note-off only where the note ends before the grid does and no onset falls on that step
    off = ends[(ends < steps) & ~np.isin(ends, notes[:, 0])]
    row[off] = NOTE_OFF
    row[notes[:, 0]] = pitch_to_class(notes[:, 2])
    return row


def decode_melodic(row: np.ndarray) -> np.ndarray:
    """Melodic token row ``(steps,)`` -> notes ``(N, 3)`` (start, end, pitch).

    A note sounds from its note-on until the next note-on or note-off, or the end of the row. Mask tokens (and
    any id outside the vocabulary) end a sounding note and are otherwise silence, so a partly masked piece decodes.
    PAD steps (``schmubert.meter``) are no event: a note held into them goes on after them (its end may lie past
    PAD steps; ``schmubert.meter`` maps steps to time, where PAD takes none).
    """
    row = np.asarray(row).reshape(-1)
    steps = len(row)
    is_on = (row >= 2) & (row < MELODIC_CLASSES)
    # note-on, note-off, mask; not PAD
    is_event = (row != NO_EVENT) & ~((row > MELODIC_MASK) & (row <= MELODIC_MASK + PAD_KINDS))
    starts = np.flatnonzero(is_on)
    if len(starts) == 0:
        return np.zeros((0, 3), dtype=np.int64)
    event_pos = np.flatnonzero(is_event)
    # the next event strictly after each onset
    nxt = np.searchsorted(event_pos, starts, side="right")
    ends = np.where(nxt < len(event_pos), event_pos[np.minimum(nxt, len(event_pos) - 1)], steps)
    pitches = class_to_pitch(row[starts])
    return np.stack([starts, ends, pitches], axis=1).astype(np.int64)


def encode_drums(hits: np.ndarray, steps: int) -> np.ndarray:
    """Drum hits ``(N, 2)`` (step, MIDI drum pitch) -> drum token row ``(steps,)`` of bitmasks.

    Pitches outside the drum map and hits outside the grid are dropped.
    """
    row = np.zeros(steps, dtype=np.int64)
    hits = np.asarray(hits, dtype=np.int64).reshape(-1, 2)
    step, pitch = hits[:, 0], hits[:, 1]
    cls = np.where((pitch >= 0) & (pitch < 128), _PITCH_CLASS_LUT[np.clip(pitch, 0, 127)], -1)
    keep = (cls >= 0) & (step >= 0) & (step < steps)
    np.bitwise_or.at(row, step[keep], np.left_shift(1, cls[keep]))
    return row


def decode_drums(row: np.ndarray) -> np.ndarray:
    """Drum token row -> hits ``(N, 2)`` (step, representative pitch). Masks decode as silence."""
    row = np.asarray(row).reshape(-1)
    valid = (row > 0) & (row < DRUM_CLASSES)
    bits = (np.where(valid, row, 0).astype(np.int64)[:, None] >> np.arange(NUM_DRUM_CLASSES)) & 1
    steps, cls = np.nonzero(bits)  # step-major, classes in order
    return np.stack([steps, np.asarray(DRUM_CLASS_PITCHES)[cls]], axis=1).astype(np.int64).reshape(-1, 2)


def canonicalize(tokens: np.ndarray, tracks: str | Sequence[Track] = "trio") -> np.ndarray:
    """The canonical form of a token grid: what it decodes to, encoded again.

    A note-off where nothing sounds (or a repeated note-off) means nothing; canonical grids have none. For
    canonical grids ``midi_to_tokens(tokens_to_midi(x)) == x``.
    """
    tokens = np.asarray(tokens)
    if pad_mask(tokens, tracks).any():  # canonical in time: PAD left out and put back
        from schmubert.meter import compact, expand

        real, layout = compact(tokens, tracks)
        return expand(canonicalize(real, tracks), layout, tracks)
    out = tokens.copy()
    for k, track in enumerate(get_tracks(tracks)):
        if not track.is_drum:
            out[:, k] = encode_melodic(decode_melodic(tokens[:, k]), len(tokens))
    return out


# --- MIDI --------------------------------------------------------------------------------------------------


def load_midi(midi: str | Path | pretty_midi.PrettyMIDI) -> pretty_midi.PrettyMIDI:
    """A PrettyMIDI from a path (or pass one through). Raises ``ValueError`` naming the file if unreadable."""
    if isinstance(midi, pretty_midi.PrettyMIDI):
        return midi
    try:
        return pretty_midi.PrettyMIDI(str(midi))
    except Exception as err:  # pretty_midi/mido raise many exception types for broken files
        raise ValueError(f"{midi}: unreadable MIDI ({type(err).__name__}: {err})") from err


def role_of(program: int, is_drum: bool) -> str | None:
    """The role of an instrument (spec section 2): ``"melody"``, ``"bass"``, ``"drums"`` or None."""
    if is_drum:
        return "drums"
    return "melody" if program in MELODY_PROGRAMS else "bass" if program in BASS_PROGRAMS else None


def role_instruments(pm: pretty_midi.PrettyMIDI) -> dict[str, list[pretty_midi.Instrument]]:
    """Instruments by role (spec section 2): melody programs 0-31, bass 32-39, drums = drum channel.

    Instruments without notes are left out.
    """
    roles: dict[str, list[pretty_midi.Instrument]] = {"melody": [], "bass": [], "drums": []}
    for inst in pm.instruments:
        if not inst.notes:
            continue
        if inst.is_drum:
            roles["drums"].append(inst)
        elif inst.program in MELODY_PROGRAMS:
            roles["melody"].append(inst)
        elif inst.program in BASS_PROGRAMS:
            roles["bass"].append(inst)
    return roles


def time_to_step(pm: pretty_midi.PrettyMIDI, times: np.ndarray) -> np.ndarray:
    """Seconds -> nearest 16th step, following the file's tempo map (4 steps per quarter)."""
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    change_times, qpms = pm.get_tempo_changes()
    if len(change_times) == 0 or change_times[0] > 0:
        change_times, qpms = np.r_[0.0, change_times], np.r_[120.0, qpms]
    change_ticks = np.array([pm.time_to_tick(t) for t in change_times], dtype=np.float64)
    seg = np.maximum(np.searchsorted(change_times, times, side="right") - 1, 0)
    tick = np.rint(change_ticks[seg] + (times - change_times[seg]) * qpms[seg] / 60.0 * pm.resolution)
    return np.rint(tick * STEPS_PER_QUARTER / pm.resolution).astype(np.int64)


def instrument_notes(pm: pretty_midi.PrettyMIDI, inst: pretty_midi.Instrument) -> np.ndarray:
    """An instrument's notes as ``(N, 3)`` (start step, end step, pitch), velocity-0 notes dropped."""
    notes = [n for n in inst.notes if n.velocity > 0]
    if not notes:
        return np.zeros((0, 3), dtype=np.int64)
    starts = time_to_step(pm, [n.start for n in notes])
    ends = time_to_step(pm, [n.end for n in notes])
    pitches = np.array([n.pitch for n in notes], dtype=np.int64)
    return np.stack([starts, ends, pitches], axis=1)


def midi_length_steps(pm: pretty_midi.PrettyMIDI) -> int:
    """Length of a file in steps, rounded up to whole bars (end of the last event)."""
    end = pm.get_end_time()
    if end <= 0:
        return 0
    last = int(np.ceil(pm.time_to_tick(end) * STEPS_PER_QUARTER / pm.resolution - 1e-6))
    return int(np.ceil(last / STEPS_PER_BAR) * STEPS_PER_BAR)


def _default_steps(length_steps: int) -> int:
    """The default grid length: the file's length in whole bars, at least ``DEFAULT_STEPS``.

    A 64-bar piece whose last bars are silent ends early in MIDI; padding to the model length gives it back
    its 1024 steps.
    """
    bars = -(-int(length_steps) // STEPS_PER_BAR)
    return max(bars * STEPS_PER_BAR, DEFAULT_STEPS)


def _score_roles(path: str | Path) -> tuple[dict[str, list[tuple[np.ndarray, bool]]], int]:
    """Read a MIDI file with symusic (fast, tick-exact): per role ``[(notes (N, 3) in steps, is_drum)]``.

    Returns the roles (same rule and order as :func:`role_instruments`) and the file length in steps.
    """
    import symusic

    try:
        score = symusic.Score(str(path))
    except Exception as err:
        raise ValueError(f"{path}: unreadable MIDI ({type(err).__name__}: {err})") from err
    scale = STEPS_PER_QUARTER / score.ticks_per_quarter
    roles: dict[str, list[tuple[np.ndarray, bool]]] = {"melody": [], "bass": [], "drums": []}
    for track in score.tracks:
        if not len(track.notes):
            continue
        role = "drums" if track.is_drum else "melody" if track.program in MELODY_PROGRAMS else (
            "bass" if track.program in BASS_PROGRAMS else None)
        if role is None:
            continue
        n = track.notes.numpy()
        start = n["time"].astype(np.int64)
        notes = np.stack([np.rint(start * scale), np.rint((start + n["duration"]) * scale),
                          n["pitch"].astype(np.int64)], axis=1).astype(np.int64)
        roles[role].append((notes[n["velocity"] > 0], track.is_drum))
    return roles, int(np.ceil(score.end() * scale - 1e-6))


def encode_track(notes: np.ndarray | None, track: Track, steps: int) -> np.ndarray:
    """Notes ``(N, 3)`` (start, end, pitch; steps) of one track -> its token row ``(steps,)`` (drums: onsets)."""
    if notes is None:
        return np.zeros(steps, dtype=np.int64)
    return encode_drums(notes[:, [0, 2]], steps) if track.is_drum else encode_melodic(notes, steps)


def midi_to_tokens(midi: str | Path | pretty_midi.PrettyMIDI, tracks: str | Sequence[str] = "trio",
                   steps: int | None = None, meter: bool = False) -> np.ndarray:
    """A MIDI file -> token grid ``(steps, K)`` (int64).

    Uses the first instrument of each role (melody, bass, drums); a role the file lacks is a silent track. A set
    with other instruments or polyphonic ones is read by :func:`schmubert.polyphony.midi_to_grid`.
    Times follow the file's tempo map (16th steps of the notated beat). ``steps`` defaults to the file's
    length rounded up to whole bars and at least ``DEFAULT_STEPS``, so a 64-bar piece with silent last bars
    is still 1024 steps. A path is read with symusic (tick-exact, fast); a ``PrettyMIDI`` is used as it is.
    Raises ``ValueError`` naming the file if it cannot be read. ``meter``: bars by the file's time signatures
    (a path or bytes; ``schmubert.meter.midi_to_grid``): a bar shorter than 16 steps is padded with PAD.
    """
    track_list = get_tracks(tracks)
    if meter:
        from schmubert.meter import midi_to_grid as meter_grid

        return meter_grid(midi, track_list, steps).tokens
    if not is_legacy(track_list):  # polyphonic instruments and named parts: schmubert.polyphony
        from schmubert.polyphony import midi_to_grid

        return midi_to_grid(_midi_bytes(midi) if isinstance(midi, pretty_midi.PrettyMIDI) else midi,
                            track_list, steps).tokens
    if isinstance(midi, pretty_midi.PrettyMIDI):
        pm = midi
        roles = {role: [(instrument_notes(pm, inst), inst.is_drum) for inst in insts]
                 for role, insts in role_instruments(pm).items()}
        length = midi_length_steps(pm)
    else:
        roles, length = _score_roles(midi)
    steps = _default_steps(length) if steps is None else steps
    columns = [encode_track(roles[t.name][0][0] if roles[t.name] else None, t, steps) for t in track_list]
    return np.stack(columns, axis=1) if columns else np.zeros((steps, 0), dtype=np.int64)


def _midi_bytes(pm: pretty_midi.PrettyMIDI) -> bytes:
    """A PrettyMIDI as Standard MIDI File bytes."""
    import io

    buf = io.BytesIO()
    pm.write(buf)
    return buf.getvalue()


def _grid_tracks(tokens: np.ndarray, tracks: str | Sequence[str] | None) -> tuple[np.ndarray, tuple[Track, ...]]:
    """A grid as ``(steps, K)`` and its tracks (``None``: inferred from K, 1 = melody, 3 = trio), checked."""
    tokens = np.asarray(tokens)
    if tokens.ndim == 1:
        tokens = tokens[:, None]
    if tracks is None:
        tracks = {1: "melody", 3: "trio"}.get(tokens.shape[1])
        if tracks is None:
            raise ValueError(f"cannot infer tracks for a grid with K={tokens.shape[1]}; pass tracks=")
    track_list = get_tracks(tracks)
    if len(track_list) != tokens.shape[1]:
        raise ValueError(f"grid has K={tokens.shape[1]} tracks but {len(track_list)} track names were given")
    return tokens, track_list


def tokens_to_notes(tokens: np.ndarray, tracks: str | Sequence[str] | None = None) -> list[np.ndarray]:
    """Per-track note arrays ``(N, 3)`` (start step, end step, pitch) of a grid; drums get 1-step notes at
    their class's representative pitch. Mask tokens decode as silence."""
    tokens, track_list = _grid_tracks(tokens, tracks)
    out = []
    for k, track in enumerate(track_list):
        if track.is_drum:
            hits = decode_drums(tokens[:, k])
            out.append(np.stack([hits[:, 0], hits[:, 0] + 1, hits[:, 1]], axis=1))
        else:
            out.append(decode_melodic(tokens[:, k]))
    return out


def _one_pitch_at_a_time(notes: list[pretty_midi.Note]) -> list[pretty_midi.Note]:
    """An instrument's notes sorted by onset then pitch descending, each ending at the latest where the same
    pitch starts again (one channel sounds a pitch once)."""
    notes = sorted(notes, key=lambda n: (n.start, -n.pitch))
    next_start: dict[int, float] = {}
    for n in reversed(notes):
        if n.pitch in next_start:
            n.end = min(n.end, next_start[n.pitch])
        next_start[n.pitch] = n.start
    return [n for n in notes if n.end > n.start]


def tokens_to_midi(tokens: np.ndarray, tracks: str | Sequence[str] | None = None,
                   qpm: float = DECODE_QPM, programs: dict[str, int] | None = None,
                   velocity: np.ndarray | None = None) -> pretty_midi.PrettyMIDI:
    """A token grid ``(steps, K)`` -> ``PrettyMIDI`` by the decoding conventions of the spec.

    ``tracks`` defaults from K (1 = melody, 3 = trio). Mask tokens decode as silence. A grid with PAD
    (``schmubert.meter``) is written in time: each slot lasts its bar's real steps, PAD none, and the file gets the
    bars' time signatures (a grid without PAD gets none: 4/4). ``programs`` overrides the
    General MIDI program of an instrument by name (e.g. ``{"melody": 81}``). One MIDI instrument per instrument
    of the set: the voices of a polyphonic one are written together. ``velocity`` ``(steps, K)``: velocity bins
    (:func:`velocity_to_bin`) at the onsets; without, every note gets ``DECODE_VELOCITY``.
    """
    tokens, track_list = _grid_tracks(tokens, tracks)
    seconds_per_step = 60.0 / qpm / STEPS_PER_QUARTER
    pm = pretty_midi.PrettyMIDI(initial_tempo=qpm, resolution=DECODE_RESOLUTION)
    columns = tokens_to_notes(tokens, track_list)
    layout = None
    if pad_mask(tokens, track_list).any():  # bars of other meters: slots to time, and their time signatures
        from schmubert.meter import layout_of

        layout = layout_of(tokens, track_list)
        pm.time_signature_changes = [pretty_midi.TimeSignature(num, den, step * seconds_per_step)
                                     for step, num, den in layout.signatures()]
    for name, ks in instruments(track_list):
        track = track_list[ks[0]]
        inst = pretty_midi.Instrument(program=(programs or {}).get(name, track.program), is_drum=track.is_drum,
                                      name=name)
        for k in ks:
            vels = (np.full(len(columns[k]), DECODE_VELOCITY) if velocity is None
                    else bin_to_velocity(np.asarray(velocity)[columns[k][:, 0], k]))
            times = columns[k][:, :2] if layout is None else layout.to_real(columns[k][:, :2])
            inst.notes += [pretty_midi.Note(int(v), int(pitch), start * seconds_per_step, end * seconds_per_step)
                           for (start, end), pitch, v in zip(times.tolist(), columns[k][:, 2].tolist(),
                                                            vels.tolist(), strict=True)]
        if len(ks) > 1:  # the voices' notes in time order; a pitch re-struck by another voice ends the first
            inst.notes = _one_pitch_at_a_time(inst.notes)
        pm.instruments.append(inst)
    return pm
