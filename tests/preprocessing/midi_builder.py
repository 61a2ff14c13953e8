"""Hand-built MIDI files for the preprocessing rules (mido, in memory)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import mido

TPQ = 480
STEP = TPQ // 4  # ticks per 16th


def build_midi(parts: Sequence[dict], tempos: Sequence[tuple[int, float]] = ((0, 120.0),),
               time_signatures: Sequence[tuple[int, int, int]] | None = ((0, 4, 4),)) -> bytes:
    """A type-1 MIDI file as bytes. ``parts``: dicts with ``program``, ``drum`` (bool) and ``notes``:
    ``(start step, end step, pitch[, velocity])``; tempos ``(step, qpm)``; time signatures
    ``(step, num, den)`` (``None``: the file has none)."""
    mid = mido.MidiFile(type=1, ticks_per_beat=TPQ)
    meta = [(s * STEP, -1, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(q))) for s, q in tempos]
    meta += [(s * STEP, -1, mido.MetaMessage("time_signature", numerator=n, denominator=d))
             for s, n, d in time_signatures or ()]
    mid.tracks.append(_track(meta))
    for i, part in enumerate(parts):
        channel = 9 if part.get("drum") else i % 9
        events = [(0, -1, mido.Message("program_change", program=part.get("program", 0), channel=channel))]
        for note in part["notes"]:
            start, end, pitch, velocity = (*note, 80)[:4]
            on = mido.Message("note_on", note=pitch, velocity=velocity, channel=channel)
            events.append((start * STEP, 1, on))
            # at one tick: earlier notes end, then notes start, then zero-length notes end
            off = mido.Message("note_off", note=pitch, velocity=0, channel=channel)
            events.append((end * STEP, 2 if end == start else 0, off))
        mid.tracks.append(_track(events))
    out = io.BytesIO()
    mid.save(file=out)
    return out.getvalue()


def _track(events: list) -> mido.MidiTrack:
    track, now = mido.MidiTrack(), 0
    for tick, _, msg in sorted(events, key=lambda e: e[:2]):
        track.append(msg.copy(time=tick - now))
        now = tick
    return track


def bars_of_notes(first_bar: int, bars: int, pitch: int = 60, every: int = 4, length: int = 2) -> list:
    """A note every ``every`` steps through ``bars`` bars starting at ``first_bar``."""
    return [(s, s + length, pitch) for s in range(first_bar * 16, (first_bar + bars) * 16, every)]
