"""Raw MIDI bytes -> 4/4 segments of quantized notes (spec section 2, first three rules).

A file is split at every tempo and time-signature change; each segment is quantized against its own start at
4 steps per quarter (tick-exact, which equals quantizing against the segment's own tempo); only segments with
16 steps per bar are kept. A file with no time signature counts as 4/4.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import symusic

from schmubert.tokens import (
    DRUM_PITCH_TO_CLASS,
    MAX_PITCH,
    MIN_PITCH,
    STEPS_PER_BAR,
    STEPS_PER_QUARTER,
    monophonize,
)

UNREADABLE_REASON = "unreadable"


class SkipFile(Exception):  # noqa: N818 - it is a verdict, not an error
    """A file that yields no window, with the reason it is counted under."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class Part:
    """One instrument inside one segment: notes ``(N, 3)`` (start, end, pitch), steps from the segment start.

    Melodic parts are monophonic and in the pitch range; drum parts keep onsets of mapped pitches only
    (``end = start + 1``).
    """

    index: int  # instrument index in the file
    program: int
    is_drum: bool
    notes: np.ndarray


@dataclass(frozen=True)
class Segment:
    index: int  # position among all segments of the file (kept or not)
    start_tick: int
    bars: int  # whole bars available to windows
    parts: tuple[Part, ...]


def read_score(data: bytes, name: str = "<bytes>") -> symusic.Score:
    """Parse MIDI bytes; raises :class:`SkipFile` ``unreadable`` with the parser's reason."""
    try:
        return symusic.Score.from_midi(data)
    except Exception as err:  # symusic raises RuntimeError/ValueError for broken files
        raise SkipFile(UNREADABLE_REASON, f"{name}: {err}") from err


def _changes(score: symusic.Score, split_on_tempo: bool, split_on_time_signature: bool) -> list[int]:
    """Ticks where the tempo or time signature actually changes (repeats of the same value are ignored)."""
    ticks = {0}
    if split_on_tempo:
        prev = 120.0  # the MIDI default until the first tempo event
        for tempo in sorted(score.tempos, key=lambda t: t.time):
            if abs(tempo.qpm - prev) > 1e-3:
                ticks.add(int(tempo.time))
            prev = tempo.qpm
    if split_on_time_signature:
        prev_sig = (4, 4)
        for sig in sorted(score.time_signatures, key=lambda s: s.time):
            now = (sig.numerator, sig.denominator)
            if now != prev_sig:
                ticks.add(int(sig.time))
            prev_sig = now
    return sorted(ticks)


def _steps_per_bar_at(score: symusic.Score, tick: int) -> float:
    """Steps per bar of the time signature in force at ``tick`` (4/4 when the file has none)."""
    num, den = 4, 4
    for sig in sorted(score.time_signatures, key=lambda s: s.time):
        if sig.time <= tick:
            num, den = sig.numerator, sig.denominator
    return STEPS_PER_QUARTER * 4 * num / den


def _clean(notes: np.ndarray, is_drum: bool) -> np.ndarray:
    """Drums: onsets of mapped pitches; melodic: in-range pitches, at least one step, monophonized."""
    if is_drum:
        keep = np.isin(notes[:, 2], list(DRUM_PITCH_TO_CLASS))
        notes = notes[keep].copy()
        notes[:, 1] = notes[:, 0] + 1
        return notes
    notes = notes[(notes[:, 2] >= MIN_PITCH) & (notes[:, 2] <= MAX_PITCH)].copy()
    notes[:, 1] = np.maximum(notes[:, 1], notes[:, 0] + 1)
    return monophonize(notes)


def _track_arrays(score: symusic.Score) -> list[tuple[int, bool, np.ndarray]]:
    """Per instrument: program, is_drum, ticks ``(N, 3)`` (onset, offset, pitch), velocity-0 notes dropped."""
    out = []
    for track in score.tracks:
        n = track.notes.numpy()
        start = n["time"].astype(np.int64)
        ticks = np.stack([start, start + n["duration"], n["pitch"].astype(np.int64)], axis=1)
        out.append((int(track.program), bool(track.is_drum), ticks[n["velocity"] > 0]))
    return out


def split_segments(score: symusic.Score, split_on_tempo: bool = True, split_on_time_signature: bool = True,
                   trailing_bars: int = 0, max_bars: int | None = None) -> tuple[list[Segment], int]:
    """The file's 4/4 segments and the number of non-4/4 segments that held notes.

    ``trailing_bars``: the last segment may run this many bars past its last note (silent bars that a window
    can still use, e.g. the trio activity margin). ``max_bars``: a longer file is skipped as ``too long``.
    """
    tracks = _track_arrays(score)
    if not any(len(t[2]) for t in tracks):
        raise SkipFile("no notes")
    end_tick = max(int(t[2][:, 1].max()) for t in tracks if len(t[2]))
    file_bars = end_tick * STEPS_PER_QUARTER / score.ticks_per_quarter / STEPS_PER_BAR
    if max_bars is not None and file_bars > max_bars:
        raise SkipFile("too long", f"{file_bars:.0f} bars (--max-file-bars {max_bars})")
    bounds = _changes(score, split_on_tempo, split_on_time_signature)
    bounds = [b for b in bounds if b < end_tick] + [end_tick]
    tpq = score.ticks_per_quarter
    segments, other_meter = [], 0
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        is_last = i == len(bounds) - 2
        parts = []
        for index, (program, is_drum, ticks) in enumerate(tracks):
            inside = ticks[(ticks[:, 0] >= a) & (ticks[:, 0] < b)]
            if not len(inside):
                continue
            steps = np.rint((np.minimum(inside[:, :2], b) - a) * STEPS_PER_QUARTER / tpq).astype(np.int64)
            notes = _clean(np.concatenate([steps, inside[:, 2:]], axis=1), is_drum)
            if len(notes):
                parts.append(Part(index, program, is_drum, notes))
        if not parts:
            continue
        if _steps_per_bar_at(score, a) != STEPS_PER_BAR:
            other_meter += 1
            continue
        length = (b - a) * STEPS_PER_QUARTER / tpq
        bars = int(np.ceil(length / STEPS_PER_BAR - 1e-9)) + trailing_bars if is_last else int(
            length // STEPS_PER_BAR)
        segments.append(Segment(i, a, bars, tuple(parts)))
    return segments, other_meter
