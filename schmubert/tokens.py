"""The token vocabulary and the MIDI <-> token codec (spec section 1).

This module is the single owner of every vocabulary fact: class counts, mask ids, the pitch range, the drum
classes and their pitch map, the time grid and the decoding conventions. Everything else imports from here.

A piece is an integer array ``(steps, K)`` on a 16th-note grid. ``K`` is the number of tracks: 1 for
``melody``, 3 for ``trio`` (melody, bass, drums, in that order).

Melodic tracks (melody, bass) have 90 classes per step::

    0 = no event (hold the sounding note, or stay silent)
    1 = note-off
    2..89 = note-on of MIDI pitch 21..108 (class = pitch - 19)
    90 = mask

The drum track has 512 classes: a bitmask of the 9 drum classes hit at that step, 512 = mask.
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

# --- instrument roles (General MIDI programs) --------------------------------------------------------------
MELODY_PROGRAMS = range(0, 32)
BASS_PROGRAMS = range(32, 40)

# --- decoding conventions ----------------------------------------------------------------------------------
DECODE_QPM = 120.0
DECODE_VELOCITY = 80
DECODE_RESOLUTION = 480  # ticks per quarter; a multiple of STEPS_PER_QUARTER so every step is exact


@dataclass(frozen=True)
class Track:
    """One track of a piece: its role, vocabulary and how it is written to MIDI."""

    name: str
    num_classes: int  # real classes, without the mask
    is_drum: bool
    program: int  # General MIDI program used when decoding

    @property
    def mask_id(self) -> int:
        return self.num_classes

    @property
    def vocab_size(self) -> int:
        """Real classes plus the mask token (the size of an input embedding)."""
        return self.num_classes + 1


MELODY = Track("melody", MELODIC_CLASSES, is_drum=False, program=0)
BASS = Track("bass", MELODIC_CLASSES, is_drum=False, program=33)
DRUMS = Track("drums", DRUM_CLASSES, is_drum=True, program=0)
TRACKS = {t.name: t for t in (MELODY, BASS, DRUMS)}

#: Named track sets (the ``--tracks`` option everywhere).
TRACK_SETS: dict[str, tuple[Track, ...]] = {
    "melody": (MELODY,),
    "trio": (MELODY, BASS, DRUMS),
}


def get_tracks(tracks: str | Sequence[str] | Sequence[Track]) -> tuple[Track, ...]:
    """Resolve ``"trio"``, ``"melody"`` or a sequence of track names / ``Track`` objects."""
    if isinstance(tracks, str):
        if tracks not in TRACK_SETS:
            raise ValueError(f"unknown track set {tracks!r}; expected one of {sorted(TRACK_SETS)}")
        return TRACK_SETS[tracks]
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
    """The name of a track set (``"trio"``/``"melody"``), inverse of :func:`get_tracks`."""
    for name, ts in TRACK_SETS.items():
        if tuple(tracks) == ts:
            return name
    return ",".join(t.name for t in tracks)


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
    """
    row = np.asarray(row).reshape(-1)
    steps = len(row)
    is_on = (row >= 2) & (row < MELODIC_CLASSES)
    is_event = row != NO_EVENT  # note-on, note-off, mask
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
                   steps: int | None = None) -> np.ndarray:
    """A MIDI file -> token grid ``(steps, K)`` (int64).

    Uses the first instrument of each role (melody, bass, drums); a role the file lacks is a silent track.
    Times follow the file's tempo map (16th steps of the notated beat). ``steps`` defaults to the file's
    length rounded up to whole bars and at least ``DEFAULT_STEPS``, so a 64-bar piece with silent last bars
    is still 1024 steps. A path is read with symusic (tick-exact, fast); a ``PrettyMIDI`` is used as it is.
    Raises ``ValueError`` naming the file if it cannot be read.
    """
    track_list = get_tracks(tracks)
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


def tokens_to_midi(tokens: np.ndarray, tracks: str | Sequence[str] | None = None,
                   qpm: float = DECODE_QPM, programs: dict[str, int] | None = None) -> pretty_midi.PrettyMIDI:
    """A token grid ``(steps, K)`` -> ``PrettyMIDI`` by the decoding conventions of the spec.

    ``tracks`` defaults from K (1 = melody, 3 = trio). Mask tokens decode as silence. ``programs`` overrides the
    General MIDI program of melodic tracks by name (e.g. ``{"melody": 81}``).
    """
    tokens, track_list = _grid_tracks(tokens, tracks)
    seconds_per_step = 60.0 / qpm / STEPS_PER_QUARTER
    pm = pretty_midi.PrettyMIDI(initial_tempo=qpm, resolution=DECODE_RESOLUTION)
    for track, notes in zip(track_list, tokens_to_notes(tokens, track_list), strict=True):
        program = (programs or {}).get(track.name, track.program)
        inst = pretty_midi.Instrument(program=program, is_drum=track.is_drum, name=track.name)
        inst.notes = [pretty_midi.Note(DECODE_VELOCITY, pitch, start * seconds_per_step, end * seconds_per_step)
                      for start, end, pitch in notes.tolist()]
        pm.instruments.append(inst)
    return pm
