"""An independent check that an in-place edit of a MIDI song changed nothing outside its edited cells.

Both files are read with mido (the editor and the sample CLI read and write songs with symusic, so a fault there
cannot hide here), into a view that does not depend on how a writer lays events out in tracks and channels:

- the tempo map, time signatures and key signatures, as sets of ``(tick, value)`` over the whole file;
- every note as ``(instrument, start, end, pitch, velocity)``, every control change as ``(instrument, tick,
  control, value)``, every pitch bend as ``(instrument, tick, value)``, where an instrument is ``(track name,
  drum channel or not)`` (channel numbers, and where a program change sits, are a writer's choice);
- the file's length: the tick of its last event.

An edit is a list of :class:`Cell`: an instrument whose notes starting in ticks ``start .. end`` were regenerated.
:func:`compare` then requires, tick for tick: the same tempo map, signatures and key signatures; the same control
changes and pitch bends of every instrument; every note of every other instrument; every note of an edited one
that starts outside its cell, where one that sounds into the cell may end at the cell's start (the splice rule);
and no note outside a cell that was not there before. A new note must start in its cell and end by its end.
Whether a cell holds the same notes as before (a no-op) is judged in 16ths of onset and end, and pitch (drums:
onset and drum class). A plain symusic read and write loses the channel events of a track or channel without
notes and sequencer-specific meta events (two of the multitrack songs: a control change each, and in one the
events that set its length), which the check reports.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import mido

Instrument = tuple[str, bool]  # (track name, drum channel)
Note = tuple[Instrument, int, int, int, int]  # (instrument, start, end, pitch, velocity)
DRUM_CHANNEL = 9


@dataclass
class MidiView:
    """What :func:`read` finds in a MIDI file (module docstring)."""

    resolution: int
    end: int
    tempos: set[tuple[int, int]] = field(default_factory=set)
    signatures: set[tuple[int, int, int]] = field(default_factory=set)
    keys: set[tuple[int, str]] = field(default_factory=set)
    notes: collections.Counter = field(default_factory=collections.Counter)
    controls: collections.Counter = field(default_factory=collections.Counter)
    bends: collections.Counter = field(default_factory=collections.Counter)

    def instruments(self) -> set[Instrument]:
        return {n[0] for n in self.notes}


@dataclass(frozen=True)
class Cell:
    """An edited cell: ``instrument``'s notes starting in ticks ``start .. end`` (end exclusive) were regenerated.
    ``instrument`` None: a new instrument the edit added (any instrument the input lacks). ``notes``: the edited
    instrument's notes ``(start, end, pitch, velocity)``, where another instrument has the same name (None: every
    note of the name)."""

    instrument: Instrument | None
    start: int
    end: int
    notes: frozenset[tuple[int, int, int, int]] | None = None

    def owns(self, note: Note) -> bool:
        """Whether an input note is the edited instrument's."""
        return note[0] == self.instrument and (self.notes is None or note[1:] in self.notes)

    def holds(self, note: Note, new: set[Instrument]) -> bool:
        """Whether an output note may be a new one of this cell: its instrument's (or a new instrument's for a
        cell of one), starting inside it."""
        inst = note[0]
        return (inst == self.instrument or (self.instrument is None and inst in new)) and \
            self.start <= note[1] < self.end


@dataclass
class Diff:
    """What :func:`compare` found outside the cells (each a list of the events concerned), and inside them."""

    lost_notes: list[Note] = field(default_factory=list)  # input notes outside the cells missing or altered
    stray_notes: list[Note] = field(default_factory=list)  # output notes outside the cells not in the input
    late_notes: list[Note] = field(default_factory=list)  # new notes that sound past the end of their cell
    other: dict[str, int] = field(default_factory=dict)  # other differences by kind (tempo, controls, ...)
    same_inside: bool = True  # every cell holds the same notes as before, as a listener tells them (_heard)

    @property
    def clean(self) -> bool:
        """Nothing outside the cells changed."""
        return not (self.lost_notes or self.stray_notes or self.late_notes or any(self.other.values()))


def read(path: str | Path) -> MidiView:
    """The view of a MIDI file (module docstring)."""
    mid = mido.MidiFile(str(path))
    view = MidiView(mid.ticks_per_beat, 0)
    for track in mid.tracks:
        _read_track(track, view)
    return view


def _read_track(track: mido.MidiTrack, view: MidiView) -> None:
    """Add one track's events to ``view`` (notes paired first-on, first-off per channel and pitch)."""
    name, tick = next((m.name.strip() for m in track if m.type == "track_name"), ""), 0
    sounding: dict[tuple[int, int], collections.deque] = collections.defaultdict(collections.deque)
    for msg in track:
        tick += msg.time
        if msg.type != "end_of_track":
            view.end = max(view.end, tick)
        if msg.type == "set_tempo":
            view.tempos.add((tick, msg.tempo))
        elif msg.type == "time_signature":
            view.signatures.add((tick, msg.numerator, msg.denominator))
        elif msg.type == "key_signature":
            view.keys.add((tick, msg.key))
        elif msg.type in ("note_on", "note_off"):
            voice = sounding[msg.channel, msg.note]
            if msg.type == "note_on" and msg.velocity > 0:
                voice.append((tick, msg.velocity))
            elif voice:
                start, velocity = voice.popleft()
                view.notes[(_instrument(name, msg.channel), start, tick, msg.note, velocity)] += 1
        elif msg.type == "control_change":
            view.controls[(_instrument(name, msg.channel), tick, msg.control, msg.value)] += 1
        elif msg.type == "pitchwheel":
            view.bends[(_instrument(name, msg.channel), tick, msg.pitch)] += 1


def _instrument(name: str, channel: int) -> Instrument:
    return name, channel == DRUM_CHANNEL


# --- comparing ----------------------------------------------------------------------------------------------------


def compare(before: MidiView, after: MidiView, cells: Sequence[Cell], drum_class: dict[int, int] | None = None
            ) -> Diff:
    """What changed between ``before`` and ``after`` outside ``cells`` (module docstring); ``drum_class``: drum
    pitch -> class, to tell whether a drum cell holds the same hits (pitches of one class are one hit)."""
    diff = Diff(other=other_differences(before, after))
    expected = collections.Counter()
    for note, count in before.notes.items():
        kept = _kept(note, cells)
        if kept is not None:
            expected[kept] += count
    diff.lost_notes = list((expected - after.notes).elements())
    new = after.instruments() - before.instruments()
    drawn: dict[int, list[Note]] = collections.defaultdict(list)  # the new notes of each cell
    for note in (after.notes - expected).elements():
        cell = next((c for c in cells if c.holds(note, new)), None)
        if cell is None:
            diff.stray_notes.append(note)
        elif note[2] > cell.end:
            diff.late_notes.append(note)
        else:
            drawn[id(cell)].append(note)
    was = {id(c): [n for n in before.notes if c.owns(n) and c.start <= n[1] < c.end] for c in cells}
    diff.same_inside = all(_heard(was[id(c)], c, before.resolution, drum_class)
                           == _heard(drawn[id(c)], c, after.resolution, drum_class) for c in cells)
    return diff


def other_differences(before: MidiView, after: MidiView) -> dict[str, int]:
    """The events other than notes that differ, by kind (module docstring)."""
    other = {kind: len(getattr(before, kind) ^ getattr(after, kind)) for kind in ("tempos", "signatures", "keys")}
    other["resolution"] = int(before.resolution != after.resolution)
    other["length"] = int(before.end != after.end)
    for kind in ("controls", "bends"):
        a, b = getattr(before, kind), getattr(after, kind)
        other[kind] = sum(((a - b) + (b - a)).values())
    return other


def _kept(note: Note, cells: Sequence[Cell]) -> Note | None:
    """An input note as the output must hold it: None when it starts in a cell of its instrument (regenerated);
    cut at the start of a cell of its instrument that it sounds into (the border rule)."""
    inst, start, end, pitch, velocity = note
    for c in cells:
        if c.owns(note) and c.start <= start < c.end:
            return None
        if c.owns(note) and start < c.start < end:
            end = c.start
    return inst, start, end, pitch, velocity


def _heard(notes: Iterable[Note], cell: Cell, resolution: int, drum_class: dict[int, int] | None
           ) -> set[tuple[int, ...]]:
    """A cell's notes as a listener tells them apart: 16ths from the cell's start of the onset and of the end
    (within the cell) and the pitch; for drums the onset and the drum class."""
    sixteenth = resolution / 4
    out = set()
    for inst, start, end, pitch, _ in notes:
        onset = round((start - cell.start) / sixteenth)
        if inst[1]:
            out.add((onset, (drum_class or {}).get(pitch, pitch)))
        else:
            out.add((onset, round((min(end, cell.end) - cell.start) / sixteenth), pitch))
    return out
