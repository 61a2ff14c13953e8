"""Polyphonic instruments as stacked monophonic voices, velocity, and reading a file into any track set.

A polyphonic instrument of N voices is N columns of the 90-class melodic codec (``schmubert.tokens``). Its
notes are assigned to voices by one deterministic rule, step by step on the 16th grid (:func:`assign_voices`):

1. a note re-struck while the same pitch still sounds ends that earlier note (one pitch sounds once);
2. at each onset step, the voices whose notes have ended are free;
3. the notes starting there go, highest pitch first, into the lowest-numbered free voice;
4. a note that finds no free voice is dropped and counted as overflow (reported by preprocessing).

Decoding needs no rule: every voice decodes on its own and the voices of an instrument are written together.

Velocity is a parallel grid ``(steps, K)`` of bins (``tokens.velocity_to_bin``) at the onsets.

Reading a file (:func:`read_parts`, :func:`encode_parts`): each instrument of the set takes the file's
instrument whose name is the instrument's (POP909's ``MELODY``, ``BRIDGE``, ``PIANO``), else the instruments of
its General MIDI family (``tokens.FAMILIES``): a one-voice line the one with the most notes among those
that are monophonic (:data:`MONOPHONIC`; none: the line stays empty), a polyphonic
instrument or a drum kit all of them, merged. A file instrument fills one instrument of the set at most. Time
signatures are not read: every bar is 16 steps from the file's first tick (POP909's signatures are unreliable,
694 of its 909 files carry a 1/4 event; its songs are 4/4).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from schmubert.tokens import (
    DRUM_PITCH_TO_CLASS,
    FAMILIES,
    MAX_PITCH,
    MIN_PITCH,
    STEPS_PER_QUARTER,
    Track,
    _default_steps,
    encode_drums,
    encode_melodic,
    get_tracks,
    instruments,
    tokens_to_notes,
    velocity_to_bin,
)


@dataclass(frozen=True)
class Part:
    """One instrument of a file: ``notes`` ``(N, 4)`` (start step, end step, pitch, velocity)."""

    index: int  # position among the file's instruments
    name: str
    program: int
    is_drum: bool
    notes: np.ndarray


@dataclass
class Encoded:
    """A file in a track set: ``tokens`` and ``velocity`` ``(steps, K)``, and what did not fit.

    ``parts``: instrument name -> the file's instrument indices it was read from; ``notes``: instrument name ->
    its notes in the grid's range (before voice assignment); ``overflow``: instrument name -> notes dropped for
    want of a free voice.
    """

    tokens: np.ndarray
    velocity: np.ndarray
    parts: dict[str, list[int]] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)
    overflow: dict[str, int] = field(default_factory=dict)


def clean_notes(notes: np.ndarray) -> np.ndarray:
    """Pitched notes ``(N, 4)`` -> the ones a voice can hold, sorted by onset then pitch descending.

    Pitches outside ``MIN_PITCH..MAX_PITCH`` and onsets before step 0 are dropped; a note lasts at least one
    step; of notes with the same onset and pitch the longest is kept (loudest velocity); a note re-struck while
    it sounds ends at the new onset.
    """
    notes = np.asarray(notes, dtype=np.int64).reshape(-1, 4)
    notes = notes[(notes[:, 2] >= MIN_PITCH) & (notes[:, 2] <= MAX_PITCH) & (notes[:, 0] >= 0)].copy()
    if not len(notes):
        return notes
    notes[:, 1] = np.maximum(notes[:, 1], notes[:, 0] + 1)
    # per pitch in time order; the longest (then loudest) first among equal onsets, so it is the one kept
    notes = notes[np.lexsort((-notes[:, 3], -notes[:, 1], notes[:, 0], notes[:, 2]))]
    same = (notes[1:, 2] == notes[:-1, 2]) & (notes[1:, 0] == notes[:-1, 0])
    notes = notes[np.r_[True, ~same]]
    restruck = notes[1:, 2] == notes[:-1, 2]
    notes[:-1, 1] = np.where(restruck, np.minimum(notes[:-1, 1], notes[1:, 0]), notes[:-1, 1])
    return notes[np.lexsort((-notes[:, 2], notes[:, 0]))]


def assign_voices(notes: np.ndarray, voices: int) -> tuple[list[np.ndarray], int]:
    """Notes ``(N, 4)`` of one instrument -> one note array ``(N_v, 4)`` per voice, and the overflow count.

    The rule of the module docstring: at each onset the free voices are those whose notes have ended, and the
    onsets go highest pitch first into the lowest-numbered free voice.
    """
    notes = clean_notes(notes)
    busy_until = np.zeros(voices, dtype=np.int64)
    owner = np.full(len(notes), -1, dtype=np.int64)
    for i, (start, end) in enumerate(notes[:, :2].tolist()):
        free = np.flatnonzero(busy_until <= start)
        if len(free):
            owner[i] = free[0]
            busy_until[free[0]] = end
    return [notes[owner == v] for v in range(voices)], int((owner < 0).sum())


def one_line(notes: np.ndarray) -> tuple[list[np.ndarray], int]:
    """Notes ``(N, 4)`` -> one monophonic line by the trio's rule (``tokens.monophonize``): the highest of
    equal onsets, a later onset ends a sounding note. Returns ``[line (M, 4)]`` and the notes left out."""
    notes = clean_notes(notes)
    line = notes[np.r_[True, notes[1:, 0] != notes[:-1, 0]]] if len(notes) else notes
    line[:-1, 1] = np.minimum(line[:-1, 1], line[1:, 0])
    return [line], len(notes) - len(line)


def encode_instrument(notes: np.ndarray, tracks: Sequence[Track], steps: int) -> tuple[np.ndarray, np.ndarray, int]:
    """One instrument's notes ``(N, 4)`` -> its token columns and velocity columns ``(steps, V)``, overflow.

    ``tracks``: the instrument's columns (one drum kit, one line, or its voices). Notes starting at or after
    ``steps`` are left out (not counted as overflow).
    """
    notes = np.asarray(notes, dtype=np.int64).reshape(-1, 4)
    notes = notes[notes[:, 0] < steps]
    if tracks[0].is_drum:
        row = encode_drums(notes[:, [0, 2]], steps)
        vel = np.zeros(steps, dtype=np.int64)
        hit = notes[(notes[:, 0] >= 0) & np.isin(notes[:, 2], list(DRUM_PITCH_TO_CLASS))]
        np.maximum.at(vel, hit[:, 0], velocity_to_bin(hit[:, 3]))
        return row[:, None], vel[:, None], 0
    per_voice, overflow = (one_line(notes) if len(tracks) == 1 else assign_voices(notes, len(tracks)))
    rows = np.zeros((steps, len(tracks)), dtype=np.int64)
    vels = np.zeros((steps, len(tracks)), dtype=np.int64)
    for v, voice in enumerate(per_voice):
        rows[:, v] = encode_melodic(voice[:, :3], steps)
        vels[voice[:, 0], v] = velocity_to_bin(voice[:, 3])
    return rows, vels, overflow


def read_parts(midi: str | Path | bytes) -> tuple[list[Part], int]:
    """A MIDI file (path or bytes) -> its instruments with notes, and its length in steps (symusic, tick-exact).

    Raises ``ValueError`` naming the file when it cannot be read.
    """
    import symusic

    try:
        score = symusic.Score.from_midi(midi) if isinstance(midi, bytes) else symusic.Score(str(midi))
    except Exception as err:  # symusic raises several exception types for broken files
        raise ValueError(f"{'<bytes>' if isinstance(midi, bytes) else midi}: unreadable MIDI "
                         f"({type(err).__name__}: {err})") from err
    scale = STEPS_PER_QUARTER / score.ticks_per_quarter
    parts = []
    for index, track in enumerate(score.tracks):
        n = track.notes.numpy()
        keep = n["velocity"] > 0
        if not keep.any():
            continue
        start = n["time"][keep].astype(np.int64)
        notes = np.stack([np.rint(start * scale), np.rint((start + n["duration"][keep]) * scale),
                          n["pitch"][keep], n["velocity"][keep]], axis=1).astype(np.int64)
        parts.append(Part(index, track.name, int(track.program), bool(track.is_drum), notes))
    return parts, int(np.ceil(score.end() * scale - 1e-6))


#: A part is a monophonic line when at least this share of its notes survive :func:`one_line`.
MONOPHONIC = 0.9


def monophony(notes: np.ndarray) -> float:
    """The share of a part's notes ``(N, 4)`` that one monophonic line keeps (1.0: a line; chords lower it)."""
    total = len(clean_notes(notes))
    return 1.0 if total == 0 else 1.0 - one_line(notes)[1] / total


def choose_parts(parts: Sequence[Part], tracks: str | Sequence[Track]) -> dict[str, list[Part]]:
    """Which of a file's instruments fill each instrument of a track set (the rule of the module docstring)."""
    track_list = get_tracks(tracks)
    slots = instruments(track_list)
    chosen: dict[str, list[Part]] = {name: [] for name, _ in slots}
    used: set[int] = set()
    for name, _ in slots:  # names first: POP909's MELODY / BRIDGE / PIANO
        for part in parts:
            if part.index not in used and part.name.strip().lower() == name:
                chosen[name], used = [part], used | {part.index}
                break
    for name, ks in slots:
        if chosen[name]:
            continue
        drum = track_list[ks[0]].is_drum
        family = [p for p in parts if p.index not in used and p.is_drum == drum
                  and (drum or p.program in FAMILIES[name].programs)]
        if len(ks) == 1 and not drum:  # one line: the family's busiest mostly-monophonic instrument
            family = sorted((p for p in family if monophony(p.notes) >= MONOPHONIC), key=lambda p: -len(p.notes))[:1]
        chosen[name] = family
        used |= {p.index for p in family}
    return chosen


def encode_parts(parts: Sequence[Part], tracks: str | Sequence[Track], steps: int) -> Encoded:
    """A file's instruments -> the token and velocity grids ``(steps, K)`` of a track set."""
    track_list = get_tracks(tracks)
    tokens = np.zeros((steps, len(track_list)), dtype=np.int64)
    velocity = np.zeros_like(tokens)
    out = Encoded(tokens, velocity)
    chosen = choose_parts(parts, track_list)
    for name, ks in instruments(track_list):
        notes = (np.concatenate([p.notes for p in chosen[name]]) if chosen[name]
                 else np.zeros((0, 4), dtype=np.int64))
        rows, vels, overflow = encode_instrument(notes, [track_list[k] for k in ks], steps)
        tokens[:, ks], velocity[:, ks] = rows, vels
        out.parts[name] = [p.index for p in chosen[name]]
        out.notes[name] = int(((notes[:, 0] >= 0) & (notes[:, 0] < steps)).sum())
        out.overflow[name] = overflow
    return out


def midi_to_grid(midi: str | Path | bytes, tracks: str | Sequence[Track], steps: int | None = None) -> Encoded:
    """A MIDI file -> its token and velocity grids in any track set (``steps``: by default the file's length
    in whole bars, at least 64 bars)."""
    parts, length = read_parts(midi)
    return encode_parts(parts, tracks, _default_steps(length) if steps is None else steps)


def voice_counts(tokens: np.ndarray, tracks: str | Sequence[Track]) -> dict[str, np.ndarray]:
    """Per polyphonic instrument, ``(steps,)`` the number of its voices sounding at each step."""
    track_list = get_tracks(tracks)
    columns = tokens_to_notes(tokens, track_list)
    out = {}
    for name, ks in instruments(track_list):
        if track_list[ks[0]].is_drum:
            continue
        count = np.zeros(len(tokens) + 1, dtype=np.int64)
        for k in ks:
            np.add.at(count, columns[k][:, 0], 1)
            np.add.at(count, columns[k][:, 1], -1)
        out[name] = np.cumsum(count)[:-1]
    return out

