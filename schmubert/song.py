"""A user's song: read it, choose the instruments the model sees, place the model's grid on the song's own
beats, pick the window around an edit, and splice the generated notes back into the song.

The model works on a 16th grid of 16-step slots. A song's bars come from its time signatures (4/4 where it has
none); a run of consecutive bars the model reads is one grid, whose real step ``r`` lies at tick
``run.start_tick + r * resolution / 4``: the song's beats, whatever its tempo map says in seconds. For a model
without meter (the shipped ones) a run is 16-step (4/4, 2/2) bars, grid step = real step; bars that are not 16
steps long (3/4, 6/8, 12/8, a pickup bar) cannot be edited, and the refusal names them, says that a model trained
with ``--set meter=true`` edits across them and gives the nearest edits that avoid them. For a model built with
meter (``read_song(..., metered=True)``) a run holds every bar the slot grid holds (:mod:`schmubert.meter`: whole
16ths, up to two slots): each bar takes its slot(s), PAD after its end (known, never written), the notes are read
in real steps by the song's bar lines and laid into the slots (``meter.expand``), and a take is read back from
the slots (PAD left out) to ticks in each bar, so nothing outside the edit moves. A song that has no bar the grid
holds gets a clear error, a song with some gets a note saying which bars can be edited. Time signatures that
cannot be the song's meter (one-beat bars, as in most of POP909; a change inside a bar, for a model without meter;
2/4 throughout) are replaced by 4/4 bars from the first downbeat the notes show, and the song says so
(:func:`song_bars`); notes in 3 keep the error, or, for a meter model, are read in 3/4.

Which instrument the model sees as each of its roles (its instruments: melody, bass, drums; a polyphonic piano of
six voices is one role) is chosen by the evidence of the notes, one scoring function per role
(:data:`ROLE_SCORERS`; :func:`choose_roles`), with the reason and the runners-up. A take whose regenerated bars
come back as they were says why (:func:`unchanged_take`).

A model of a voice set (``pop909``: melody, bridge of 4 voices, piano of 6) sees the song's instrument for each
role as preprocessing encodes it (``polyphony.encode_instrument``: the voice rule, a one-voice role one line),
with velocity bins; a polyphonic role's voices are spliced back together into that one instrument.

The splice rules (what :func:`splice` does on each regenerated track, inside each regenerated span of steps):

* **replaced**: every note of the chosen instrument that starts inside the span is removed; the generated notes
  that start inside it are added. Nothing else of the song changes: other instruments, the tempo map, time and
  key signatures, programs, control changes, pitch bends, lyrics and every note that starts outside the span.
* **border**: a note that starts before the span and sounds into it is kept, cut at the span's start (its pitch,
  start and velocity stay); a generated note ends at the span's end at the latest, so the notes after the span
  are never overlapped. Nothing starts or sounds past the song's end; the file's length is kept.
* **velocity**: a generated note of a velocity model gets the velocity of its drawn bin
  (``tokens.bin_to_velocity``); otherwise the median velocity of the instrument's notes in the 4 bars before
  and the 4 bars after the span (drums: of the same drum class there, else of the whole kit there), else the
  median of the whole instrument, else 80.
* **voices**: a polyphonic role is written where any of its voices is regenerated, its voices' notes together;
  a pitch struck again by another voice ends the one that sounds (one pitch sounds once in an instrument).
* **grid**: a song whose onsets mostly sit the same few ticks after the 16th grid (an export offset) has its grid
  moved by that offset, and so have the spans.
* **drums**: a generated hit sounds at the pitch the song's drum instrument uses most for that class (else the
  class's representative pitch) and lasts the kit's median note length (at most to the span's end).
* **no instrument**: a role the song lacks (or that the user set to ``none``) that is regenerated becomes a new
  instrument named ``"<role> (SCHmUBERT)"`` with the model's program.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pretty_midi
import symusic

from schmubert import meter
from schmubert.files import write_atomic
from schmubert.polyphony import encode_instrument
from schmubert.tokens import (
    BASS_PROGRAMS,
    DECODE_VELOCITY,
    DRUM_CLASS_PITCHES,
    DRUM_PITCH_TO_CLASS,
    FAMILIES,
    PITCH_OFFSET,
    STEPS_PER_BAR,
    STEPS_PER_QUARTER,
    VELOCITY_BINS,
    Track,
    bin_to_velocity,
    canonicalize,
    encode_track,
    is_legacy,
    tokens_to_notes,
    velocity_to_bin,
)
from schmubert.tokens import instruments as set_instruments

#: Bars on each side of a span whose notes set the velocity of the generated ones.
VELOCITY_BARS = 4
#: A song where more than OFF_GRID_SHARE of the onsets lie more than OFF_GRID (in 16ths) from the grid is a
#: performance without a usable tempo map (random onsets: 75% that far; swung eighths: about 50%).
OFF_GRID = 0.125
OFF_GRID_SHARE = 0.6
#: The trio's roles keep their own options, aliases of ``--track ROLE=INDEX|NAME`` (:func:`role_option`).
ROLE_OPTIONS = {"melody": "--melody-track", "bass": "--bass-track", "drums": "--drum-track"}


def role_option(role: str, text: str | None = None) -> str:
    """The option that chooses ``role``'s instrument, as typed: ``--bass-track 3``, ``--track piano=8`` (``text``
    None: the option alone, ``--bass-track``, ``--track piano=INDEX``)."""
    if role in ROLE_OPTIONS:
        return ROLE_OPTIONS[role] if text is None else f"{ROLE_OPTIONS[role]} {text}"
    return f"--track {role}={'INDEX' if text is None else text}"


@dataclass(frozen=True)
class Bar:
    """One bar of the song: ticks ``start .. end`` (end exclusive) and its time signature."""

    start: int
    end: int
    numerator: int
    denominator: int

    @property
    def meter(self) -> str:
        return f"{self.numerator}/{self.denominator}"


@dataclass(frozen=True)
class Run:
    """Song bars ``first .. first + bars`` (exclusive) on one grid whose real step ``r`` lies at tick
    ``start_tick + r * resolution / 4``.

    A 4/4 run (``lengths`` None) is consecutive 16-step bars, one 16-step slot each: grid steps are real steps.
    A meter run (for a model built with ``meter``, :mod:`schmubert.meter`) holds bars of any length the slot
    grid holds, ``lengths`` real 16ths each (1..32) and ``compound`` their kind: each bar takes its slot(s), PAD
    after its end, so a grid step is a real step only through the run's :meth:`layout`."""

    first: int
    bars: int
    start_tick: int
    lengths: tuple[int, ...] | None = None
    compound: tuple[bool, ...] | None = None

    @property
    def end(self) -> int:
        return self.first + self.bars

    @property
    def metered(self) -> bool:
        """Whether the run's bars take slots with PAD (else one 16-step slot per bar, no PAD)."""
        return self.lengths is not None

    def meter_bars(self, lo: int, hi: int) -> list[meter.Bar]:
        """The :class:`schmubert.meter.Bar` of song bars ``lo .. hi`` (inside the run)."""
        if self.lengths is None:
            return [meter.Bar(STEPS_PER_BAR)] * (hi - lo)
        return [meter.Bar(n, c) for n, c in zip(self.lengths[lo - self.first:hi - self.first],
                                                self.compound[lo - self.first:hi - self.first], strict=True)]

    def layout(self, lo: int, hi: int) -> meter.Layout:
        """The slot layout of song bars ``lo .. hi``."""
        if self.lengths is None:
            return meter.Layout.four_four(hi - lo)
        return meter.Layout.of_bars(self.meter_bars(lo, hi))

    def _per_bar(self, values: Sequence[int], bar: int) -> int:
        """The sum of ``values`` (one per bar of the run) over the bars before song bar ``bar``; past the run's
        end its last bar goes on."""
        i = bar - self.first
        return int(sum(values[:i])) + max(0, i - len(values)) * int(values[-1])

    def real_step(self, bar: int) -> int:
        """Real 16ths from the run's first bar to the start of song bar ``bar`` (from ``first``)."""
        if self.lengths is None:
            return (bar - self.first) * STEPS_PER_BAR
        return self._per_bar(self.lengths, bar)

    def grid_step(self, bar: int) -> int:
        """Grid steps (16 per slot) from the run's first bar to the start of song bar ``bar`` (from ``first``)."""
        if self.lengths is None:
            return (bar - self.first) * STEPS_PER_BAR
        return STEPS_PER_BAR * self._per_bar([1 if n <= STEPS_PER_BAR else 2 for n in self.lengths], bar)

    def bar_at(self, step: int) -> int:
        """The song bar holding grid step ``step`` (counted from the run's first bar)."""
        if self.lengths is None:
            return self.first + step // STEPS_PER_BAR
        starts = np.cumsum([0] + [1 if n <= STEPS_PER_BAR else 2 for n in self.lengths]) * STEPS_PER_BAR
        return self.first + int(np.searchsorted(starts, step, side="right")) - 1


@dataclass
class Song:
    """A MIDI file as read, tick-exact (symusic; ``score`` is never modified, :func:`splice` works on a copy).

    Its instruments are ``score.tracks``, numbered from 0 as listed (tracks without notes included)."""

    score: symusic.Score
    name: str
    bars: list[Bar]
    runs: list[Run]
    end_tick: int
    notes_ticks: list[np.ndarray] = field(repr=False)  # per instrument (N, 4): start, end, pitch, velocity
    meter_note: str | None = None  # what was read instead of the file's time signatures (:func:`music_grid`)
    metered: bool = False  # read for a model built with meter: its runs hold bars of any meter the grid holds

    @property
    def resolution(self) -> int:
        return int(self.score.ticks_per_quarter)

    @property
    def ticks_per_step(self) -> float:
        return self.resolution / STEPS_PER_QUARTER

    def run_of(self, bar: int) -> Run | None:
        return next((r for r in self.runs if r.first <= bar < r.end), None)


# --- reading ---------------------------------------------------------------------------------------------------


Change = tuple[int, int, int]  # a time signature from a tick on: (tick, numerator, denominator)


def _signatures(score: symusic.Score) -> list[Change]:
    """The file's time signatures, 4/4 before the first one; a later event at the same tick wins."""
    changes = [(0, 4, 4)] + [(int(ts.time), int(ts.numerator), int(ts.denominator))
                             for ts in sorted(score.time_signatures, key=lambda ts: ts.time)]
    return sorted({c[0]: c for c in changes}.values())


def _bars(changes: Sequence[Change], end_tick: int, resolution: int) -> list[Bar]:
    """The bars of ``changes`` up to ``end_tick``; the last bar is whole, a bar a change cuts short is not."""
    bars: list[Bar] = []
    for i, (tick, num, den) in enumerate(changes):
        length = max(1, round(resolution * 4 * num / den))
        stop = changes[i + 1][0] if i + 1 < len(changes) else None
        while (stop is None and tick < end_tick) or (stop is not None and tick < stop):
            end = tick + length if stop is None else min(tick + length, stop)
            bars.append(Bar(tick, end, num, den))
            tick = end
    return bars


def _runs(bars: Sequence[Bar], resolution: int) -> list[Run]:
    """Maximal runs of consecutive whole 16-step bars."""
    fits = [b.end - b.start == resolution * 4 and b.numerator == b.denominator for b in bars]
    runs, first = [], None
    for i, ok in enumerate([*fits, False]):
        if ok and first is None:
            first = i
        elif not ok and first is not None:
            runs.append(Run(first, i - first, bars[first].start))
            first = None
    return runs


def _compound(bar: Bar) -> bool:
    """Whether a bar's signature is compound (dotted-quarter beats: 6/8, 9/8, 12/8), as ``meter.bar_of`` says."""
    return bar.denominator >= 8 and bar.numerator % 3 == 0


def bar_steps(bar: Bar, resolution: int) -> int | None:
    """A bar's length in 16ths when the slot grid can hold it (whole 16ths, 1..32: one slot, or two), else None."""
    steps = (bar.end - bar.start) * STEPS_PER_QUARTER / resolution
    return int(steps) if steps == int(steps) and 1 <= steps <= meter.MAX_BAR_STEPS else None


def _meter_runs(bars: Sequence[Bar], resolution: int) -> list[Run]:
    """Maximal runs of consecutive bars the slot grid holds (:func:`bar_steps`), as meter runs; a run of only
    16-step bars is a 4/4 run (the same grid, no PAD)."""
    steps = [bar_steps(b, resolution) for b in bars]
    runs, first = [], None
    for i, n in enumerate([*steps, None]):
        if n is not None and first is None:
            first = i
        elif n is None and first is not None:
            lengths = tuple(steps[first:i])
            compound = tuple(_compound(b) for b in bars[first:i])
            plain = all(n == STEPS_PER_BAR for n in lengths) and not any(compound)
            runs.append(Run(first, i - first, bars[first].start, None if plain else lengths,
                            None if plain else compound))
            first = None
    return runs


def odd_bars(song: Song, bars: Sequence[int]) -> str:
    """Song ``bars`` in words by meter: ``the 3/4 bar at bar 8``, ``the 3/4 bars at bars 8, 20 and the 6/8 bar at
    bar 31`` (four of each meter at most); a bar cut short by a change of signature is ``the 4/4 bar of 2 beats``."""
    by_meter: dict[str, list[int]] = {}
    for i in bars:
        b = song.bars[i]
        whole = round(song.resolution * 4 * b.numerator / b.denominator)
        cut = "" if b.end - b.start == whole else f" of {(b.end - b.start) / song.resolution:g} beats"
        by_meter.setdefault(f"{b.meter} bar{{s}}{cut}", []).append(i)
    parts = []
    for what, where in by_meter.items():
        many = "s" if len(where) > 1 else ""
        listed = ", ".join(map(str, where[:4])) + (f" (and {len(where) - 4} more)" if len(where) > 4 else "")
        parts.append(f"the {what.format(s=many)} at bar{many} {listed}")
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"


def nearest_edits(song: Song, edit: tuple[int, int], most: int = 2) -> list[tuple[int, int]]:
    """Edits as long as ``edit`` that lie inside one of the song's runs, nearest to it first (at most ``most``,
    one before it and one after it where both exist)."""
    e0, e1 = edit
    length = e1 - e0
    found = []
    for r in song.runs:
        if r.bars >= length:
            lo = min(max(e0, r.first), r.end - length)
            found.append((abs(lo - e0), lo, lo + length))
    found.sort()
    before = [f for f in found if f[1] < e0][:1]
    after = [f for f in found if f[1] >= e0][:1]
    return [(a, b) for _, a, b in sorted(before + after, key=lambda f: f[0])][:most]


def meter_hint(song: Song, bars: Sequence[int]) -> str:
    """What a model that reads 4/4 only cannot do with ``bars`` of the song, and what would: ``this model reads
    4/4 only; a model trained with --set meter=true edits across the 3/4 bar at bar 8``."""
    odd = [i for i in bars if song.run_of(i) is None]
    if not odd:
        return ""
    beyond = [i for i in odd if bar_steps(song.bars[i], song.resolution) is None]
    if not beyond:
        return f"this model reads 4/4 only; a model trained with --set meter=true edits across {odd_bars(song, odd)}"
    return (f"this model reads 4/4 only, and no model's slot grid holds {odd_bars(song, beyond)} (bars of whole "
            f"16ths up to {meter.MAX_BAR_STEPS} sixteenths)")


def read_song(midi: str | Path | bytes, name: str | None = None, time_signature: str | None = None,
              metered: bool = False) -> Song:
    """A MIDI file (path or bytes) -> :class:`Song`; ``ValueError`` naming the file when it is unreadable, has
    no notes, or has no bar the 16th grid can hold (3/4, 6/8, 12/8 ...).

    Bars follow the file's time signatures unless they cannot be the song's (:func:`signature_doubt`: one-beat
    bars, a change inside a bar, 2/4 throughout): then, or when ``time_signature`` (``"4/4"`` or ``"2/2"``)
    is given, they are 4/4 bars from the first downbeat its notes show (:func:`music_meter`), and the song's
    ``meter_note`` says so; notes that move in 3 beats to the bar keep the clear error.

    ``metered``: read for a model built with ``meter`` (:mod:`schmubert.meter`): its runs hold every bar the slot
    grid holds (any meter of whole 16ths up to two slots, :func:`_meter_runs`), a change inside a bar is a short
    bar and no doubt, notes that move in 3 under signatures in doubt are read in 3/4 from their notes, and
    ``time_signature`` may be any meter the grid holds (``"3/4"``, ``"6/8"`` ...)."""
    name = name or (Path(midi).name if not isinstance(midi, bytes) else "song.mid")
    try:
        score = symusic.Score.from_midi(midi) if isinstance(midi, bytes) else symusic.Score(str(midi))
    except Exception as err:  # symusic raises RuntimeError/ValueError for broken files
        where = name if isinstance(midi, bytes) else str(midi)
        raise ValueError(f"{where}: unreadable MIDI ({type(err).__name__}: {err})") from err
    if not any(len(t.notes) for t in score.tracks):
        raise ValueError(f"{name}: no notes")
    end_tick, resolution = int(score.end()), int(score.ticks_per_quarter)
    notes = [_note_array(track) for track in score.tracks]
    phase = grid_phase(np.concatenate([n[:, 0] for n in notes]), resolution / STEPS_PER_QUARTER)
    bars, meter_note = song_bars(name, score, notes, phase, time_signature, metered)
    runs = _meter_runs(bars, resolution) if metered else _runs(bars, resolution)
    if not runs:
        meters = sorted({b.meter for b in bars})
        if metered:
            raise ValueError(f"{name}: in {', '.join(meters)} time; the slot grid holds bars of whole 16ths up to "
                             f"{meter.MAX_BAR_STEPS} sixteenths (two slots), so no bar of this song can be edited")
        fits = all(bar_steps(b, resolution) is not None for b in bars)
        hint = "; a model trained with --set meter=true edits it (this model reads 4/4 only)" if fits else ""
        raise ValueError(f"{name}: in {', '.join(meters)} time; the model's grid holds only bars of 16 sixteenths "
                         f"(4/4 or 2/2), so no bar of this song can be edited{hint}")
    runs = [dataclasses.replace(r, start_tick=r.start_tick + phase) for r in runs]
    return Song(score, name, bars, runs, end_tick, notes, meter_note, metered)


def song_bars(name: str, score: symusic.Score, notes: Sequence[np.ndarray], phase: int,
              time_signature: str | None = None, metered: bool = False) -> tuple[list[Bar], str | None]:
    """The song's bars: by the file's time signatures, or, when they cannot be its meter or ``time_signature``
    is asked, by :func:`music_grid`; and the sentence saying what was read instead of the file's (or None).
    ``metered``: for a model built with meter (:func:`read_song`)."""
    end_tick, resolution = int(score.end()), int(score.ticks_per_quarter)
    changes = _signatures(score)
    bars = _bars(changes, end_tick, resolution)
    doubt = signature_doubt(bars, _runs(bars, resolution), resolution, metered)
    if not doubt and not time_signature:
        return bars, None
    drums = [bool(t.is_drum) for t in score.tracks]
    shown = music_meter(notes, drums, resolution, phase)
    read_in = time_signature or ("3/4" if metered and shown.beats == 3 else "4/4")
    bar = meter.bar_of(*(int(v) for v in read_in.split("/")))
    if bar != meter.Bar(STEPS_PER_BAR):  # another meter: its first downbeat by its own template
        shown = MusicMeter(shown.beats, music_downbeat(notes, drums, resolution, phase, bar))
    changes, note = music_grid(name, shown, resolution, doubt, time_signature, changes, metered)
    return _bars(changes, end_tick, resolution), note


def _note_array(track: symusic.Track) -> np.ndarray:
    """A track's notes ``(N, 4)`` int64: start, end (ticks), pitch, velocity."""
    n = track.notes.numpy()
    start = n["time"].astype(np.int64)
    return np.stack([start, start + n["duration"], n["pitch"], n["velocity"]], axis=1).astype(np.int64)


# --- meter: when the time signatures cannot be the song's -----------------------------------------------------

#: Weight of each 16th of a 4/4 bar by metrical level (downbeat, half bar, beats, eighths): a song's first
#: downbeat is where its onset profile, folded over 16 steps, matches this best (on 1000 Lakh trio windows,
#: which start on a downbeat, it finds it in 76%, the half bar in 8%).
METRIC_TEMPLATE = np.array([4, 0, 1, 0, 2, 0, 1, 0, 3, 0, 1, 0, 2, 0, 1, 0], dtype=np.float64)
KICK_PITCHES, CRASH_PITCHES = (35, 36), (49, 52, 55, 57)
#: Notes move in 3 beats to the bar when their onsets correlate this much more at lags of 3, 6, 12 beats than of
#: 4, 8, 16 (POP909's 034.mid, a song in 3 with a 1/4 signature: 0.77 against 0.38; a 4/4 song: below 0).
TRIPLE_MARGIN = 0.15


@dataclass(frozen=True)
class MusicMeter:
    """The meter a song's notes show: ``beats`` to the bar (4, 3, or None where they do not say) and the step
    (0..15, after the grid phase) of the first 4/4 downbeat."""

    beats: int | None
    downbeat: int


def signature_doubt(bars: Sequence[Bar], runs: Sequence[Run], resolution: int, metered: bool = False
                    ) -> str | None:
    """Why a file's time signatures cannot be its song's meter, or None: bars of one beat in a row (POP909: 694
    of its 909 files carry 1/4), a signature that starts inside a bar (cutting it short), or 2/4 (8 sixteenths)
    throughout, which leaves the grid nothing to edit though its notes may well fill 4/4 bars (``runs``: the 4/4
    runs). ``metered`` (a model built with meter): a bar cut short by a signature is a short bar, no doubt (as
    ``meter.signature_bars`` reads it for training)."""
    one = [b for b in bars if b.numerator == 1]
    if len(one) > 1:
        return f"its time signature {one[0].meter} makes bars of one beat ({len(one)} of them)"
    for bar, after in zip(bars[1:], bars[2:], strict=False):
        if metered:
            break
        if bar.end - bar.start < round(resolution * 4 * bar.numerator / bar.denominator):
            return f"its {after.meter} at tick {after.start} starts inside a bar of {bar.meter}"
    if not runs and all(b.numerator in (2, 4) and 16 * b.numerator // b.denominator == 8 for b in bars):
        return f"it is in {bars[0].meter} throughout, bars of 8 sixteenths the grid cannot edit"
    return None


def _profiles(notes: Sequence[np.ndarray], drums: Sequence[bool], ticks_per_step: float, phase: int
              ) -> dict[str, np.ndarray]:
    """Per step of the 16th grid, what marks strong beats: onsets, note lengths (long notes start on them),
    changes of the sounding pitch classes (chords change on them), low notes, kicks and crashes; and drum hits."""
    steps = int(max(n[:, 1].max() for n in notes if len(n)) / ticks_per_step) + 2
    onsets, lengths, low, kicks, crashes, hits = (np.zeros(steps) for _ in range(6))
    classes = np.zeros((steps + 1, 12))
    for n, is_drum in zip(notes, drums, strict=True):
        if not len(n):
            continue
        start = np.clip(np.rint((n[:, 0] - phase) / ticks_per_step).astype(np.int64), 0, steps - 1)
        np.add.at(onsets, start, 1.0)
        if is_drum:
            np.add.at(hits, start, 1.0)
            np.add.at(kicks, start, np.isin(n[:, 2], KICK_PITCHES))
            np.add.at(crashes, start, np.isin(n[:, 2], CRASH_PITCHES))
            continue
        end = np.clip(np.rint((n[:, 1] - phase) / ticks_per_step).astype(np.int64), start + 1, steps)
        length = np.clip(end - start, 1, 16).astype(np.float64)
        np.add.at(lengths, start, length)
        np.add.at(low, start, length * (n[:, 2] < 55))
        np.add.at(classes, (start, n[:, 2] % 12), 1.0)
        np.add.at(classes, (end, n[:, 2] % 12), -1.0)
    sounding = np.cumsum(classes, axis=0)[:steps] > 0
    changes = np.concatenate([[0.0], np.abs(np.diff(sounding.astype(np.float64), axis=0)).sum(axis=1)])
    return {"onsets": onsets, "lengths": lengths, "changes": changes, "low": low, "kicks": kicks,
            "crashes": crashes, "hits": hits}


def _autocorrelation(x: np.ndarray, lag: int) -> float:
    x = x - x.mean()
    return float((x[:-lag] * x[lag:]).sum() / max(float((x * x).sum()), 1e-9)) if lag < len(x) else 0.0


def music_meter(notes: Sequence[np.ndarray], drums: Sequence[bool], resolution: int, phase: int = 0) -> MusicMeter:
    """The meter a song's notes ``(N, >=3)`` ticks per instrument show (``phase``: the grid's offset, ticks):
    3 beats to the bar when the onsets repeat clearly more at 3-beat lags than 4-beat ones, 4 when they repeat
    more at 4, else None; the first downbeat by :data:`METRIC_TEMPLATE`."""
    step = resolution / STEPS_PER_QUARTER
    profiles = _profiles(notes, drums, step, phase)
    downbeat = _downbeat(profiles, METRIC_TEMPLATE)
    envelope = profiles["lengths"] + profiles["hits"] + 3 * profiles["kicks"]
    three, four = (np.mean([_autocorrelation(envelope, 4 * b * k) for k in (1, 2, 4)]) for b in (3, 4))
    beats = 3 if three - four > TRIPLE_MARGIN else 4 if four >= three else None
    return MusicMeter(beats, downbeat)


def _downbeat(profiles: Mapping[str, np.ndarray], template: np.ndarray) -> int:
    """The step (0 .. len(template) - 1) where the onset profiles, folded over bars of the template's length,
    match the template best: a song's first downbeat."""
    n = len(template)
    folded = []
    for x in (profiles[k] for k in ("onsets", "lengths", "changes", "low", "kicks", "crashes")):
        bars = x[:len(x) // n * n].reshape(-1, n).mean(axis=0) if len(x) >= n else np.zeros(n)
        folded.append(bars / bars.mean() if bars.sum() > 0 else bars)
    profile = np.sum(folded, axis=0)
    return int(np.argmax([np.dot(np.roll(template, d), profile) for d in range(n)]))


def metric_template(bar: meter.Bar) -> np.ndarray:
    """:data:`METRIC_TEMPLATE` for a bar of any meter: 4 on the downbeat, 2 on its beats (quarters, or dotted
    quarters in compound meter), 1 on its eighths (4/4 itself: also 3 on the half bar)."""
    if bar == meter.Bar(STEPS_PER_BAR):
        return METRIC_TEMPLATE
    out = np.zeros(bar.length)
    out[::2] = 1
    out[::6 if bar.compound else STEPS_PER_QUARTER] = 2
    out[0] = 4
    return out


def music_downbeat(notes: Sequence[np.ndarray], drums: Sequence[bool], resolution: int, phase: int,
                   bar: meter.Bar) -> int:
    """The step (0 .. ``bar.length`` - 1, after the grid phase) of the first downbeat of bars of ``bar``'s meter
    that a song's notes show (:func:`music_meter`'s rule with :func:`metric_template`)."""
    return _downbeat(_profiles(notes, drums, resolution / STEPS_PER_QUARTER, phase), metric_template(bar))


def music_grid(name: str, meter: MusicMeter, resolution: int, doubt: str | None, asked: str | None,
               changes: Sequence[Change], metered: bool = False) -> tuple[list[Change], str]:
    """The signatures the song is read with instead of the file's (``changes``): a pickup bar up to the first
    downbeat, then ``asked`` (``"4/4"``, ``"2/2"``; for a model built with meter any meter the grid holds) or
    4/4; and a sentence saying so. ``ValueError`` when the file's signatures are in ``doubt`` and its notes move
    in 3 (the grid holds only 4/4 bars); ``metered`` (a model built with meter): those are read in 3/4, the
    first downbeat in ``meter`` being of 3/4 bars (:func:`music_downbeat`)."""
    file_meters = ", ".join(dict.fromkeys(f"{n}/{d}" for _, n, d in changes))
    if asked is None and meter.beats == 3 and not metered:
        raise ValueError(f"{name}: {doubt}, and its notes move in 3 beats to the bar (3/4 or 6/8); the model's "
                         "grid holds only bars of 16 sixteenths (4/4 or 2/2), so no bar of this song can be "
                         "edited (--time-signature 4/4 reads it in 4/4 regardless; this model reads 4/4 only, a "
                         "model trained with --set meter=true reads it in 3/4)")
    in_three = asked is None and meter.beats == 3
    num, den = (int(v) for v in (asked or ("3/4" if in_three else "4/4")).split("/"))
    down = round(meter.downbeat * resolution / STEPS_PER_QUARTER)
    grid = ([(0, meter.downbeat, 16)] if meter.downbeat else []) + [(down, num, den)]
    where = (f"first downbeat {meter.downbeat / STEPS_PER_QUARTER:g} beats in, after a pickup bar 0"
             if meter.downbeat else "first downbeat at its start")
    if asked:
        return grid, f"{name}: read in {asked} as asked (the file says {file_meters}); by its notes, {where}"
    unsure = "" if meter.beats in (4, 3) else " (they show no clear meter)"
    return grid, (f"{name}: {doubt}; read in {num}/{den} from its notes instead{unsure}, {where} (the file's "
                  "signatures are written back unchanged)")


def grid_phase(onsets: np.ndarray, ticks_per_step: float) -> int:
    """Ticks by which most onsets sit after the 16th grid (an export offset: POP909's 032.mid is 44 ticks late
    throughout), or 0 when most sit on it or they agree on no offset."""
    if not len(onsets):
        return 0
    late = np.rint(np.mod(onsets, ticks_per_step)).astype(np.int64) % max(1, round(ticks_per_step))
    values, counts = np.unique(late, return_counts=True)
    best = int(values[np.argmax(counts)])
    return best if counts.max() > len(onsets) / 2 else 0


def editable_note(song: Song) -> str | None:
    """A sentence saying which bars can be edited, when not all can (several time signatures, a pickup bar);
    else None."""
    odd = [i for i, b in enumerate(song.bars) if song.run_of(i) is None]
    if not odd:
        return None
    ranges = ", ".join(f"{r.first}:{r.end}" for r in song.runs)
    if song.metered:
        return (f"{song.name}: the slot grid cannot hold {odd_bars(song, odd)}; bars {ranges} (end exclusive) "
                "can be edited")
    if odd == [0]:
        beats = (song.bars[0].end - song.bars[0].start) / song.resolution
        return f"{song.name}: bar 0 is a pickup of {beats:g} beats; bars {ranges} (end exclusive) can be edited"
    meters = sorted({song.bars[i].meter for i in odd})
    return (f"{song.name}: several time signatures ({', '.join(meters)} besides 4/4); only its 4/4 bars "
            f"{ranges} (end exclusive) can be edited")


# --- tracks ----------------------------------------------------------------------------------------------------


def instrument_label(song: Song, index: int) -> str:
    """``#4 'Chant' (GM 22 Harmonica, 394 notes)`` or ``#10 'Drums' (drum channel, 3414 notes)``."""
    track = song.score.tracks[index]
    kind = "drum channel" if track.is_drum else (
        f"GM {track.program} {pretty_midi.program_to_instrument_name(int(track.program))}")
    return f"#{index} {track.name.strip()!r} ({kind}, {len(track.notes)} notes)"


def instruments(song: Song) -> list[dict]:
    """The song's instruments with notes, for lists and pickers: index, name, program, is_drum, notes, label."""
    return [{"index": i, "name": t.name.strip(), "program": int(t.program), "is_drum": bool(t.is_drum),
             "notes": len(t.notes), "label": instrument_label(song, i)}
            for i, t in enumerate(song.score.tracks) if len(t.notes)]


def _find(song: Song, text: str, role: str) -> int:
    option, tracks, name = role_option(role, text), song.score.tracks, song.name
    if text.strip().lstrip("#").isdigit():
        index = int(text.strip().lstrip("#"))
        if not 0 <= index < len(tracks):
            raise ValueError(f"{option}: {name} has instruments #0-#{len(tracks) - 1}")
        return index
    hits = [i for i, t in enumerate(tracks) if t.name.strip().lower() == text.strip().lower()]
    if len(hits) != 1:
        listing = "; ".join(i["label"] for i in instruments(song))
        why = "no instrument is named" if not hits else f"{len(hits)} instruments are named"
        raise ValueError(f"{option}: {why} {text!r} in {name}; give its index instead ({listing})")
    return hits[0]


# --- roles: which instrument the model sees as each of its tracks ---------------------------------------------


@dataclass(frozen=True)
class Evidence:
    """What one instrument's notes say about the role it plays in its song."""

    index: int
    name: str
    program: int
    is_drum: bool
    notes: int
    monophonic: float  # share of its onsets at which no other of its notes sounds (chords and pads score low)
    two_voices: float  # share of its onsets at which exactly one other sounds (a line harmonized in thirds)
    median_pitch: float
    activity: float  # share of the song's 4-beat spans in which it starts a note
    per_onset: float = 1.0  # notes per onset (onsets within a 32nd are one): chords raise it above 1


@dataclass(frozen=True)
class Fit:
    """How well an instrument fits a role: ``score`` in 0..1 and the evidence in words."""

    score: float
    reason: str


#: A scorer sees one instrument's evidence and all of the song's; None: the instrument cannot play the role.
Scorer = Callable[[Evidence, Sequence[Evidence]], Fit | None]

#: An instrument needs this many notes to play melody or bass, and a role's best fit this score to be chosen.
MIN_ROLE_NOTES = 8
MIN_FIT = 0.05
#: Names that say what an instrument plays (a vocal line on a trumpet program is still the vocal line), and what
#: an instrument of a track set's family (``tokens.FAMILIES``) is called.
ROLE_NAMES = {"melody": ("melod", "vocal", "voice", "vox", "chant", "sing", "lead voc"), "bass": ("bass", "basse"),
              "piano": ("piano", "pno", "keys", "keyboard", "rhodes", "wurli", "epiano", "e.p."),
              "chromatic": ("celest", "glock", "vibra", "marimba", "xylo", "bell", "music box", "dulcimer"),
              "organ": ("organ", "orga"), "guitar": ("guit", "gtr"),
              "strings": ("string", "violin", "viola", "cello", "ensemble", "orch"),
              "brass": ("brass", "trumpet", "trombone", "horn", "tuba"),
              "reed": ("sax", "clarinet", "oboe", "bassoon", "reed"), "pipe": ("flute", "piccolo", "recorder", "pipe",
                                                                            "whistle"),
              "lead": ("lead", "synth"), "pad": ("pad",), "bridge": ("bridge",)}
NAME_BONUS = 1.5
#: General MIDI programs 112-127 are percussion and sound effects, never a melody or a bass line.
EFFECT_PROGRAMS = range(112, 128)


def instrument_evidence(index: int, name: str, program: int, is_drum: bool, notes: np.ndarray, resolution: int,
                        end_tick: int) -> Evidence:
    """The :class:`Evidence` of one instrument's notes ``(N, >=3)`` ticks (start, end, pitch, ...)."""
    notes = np.asarray(notes, dtype=np.int64)
    if not notes.size:
        return Evidence(index, name, program, is_drum, 0, 0.0, 0.0, 0.0, 0.0)
    start = np.sort(notes[:, 0])
    tolerance = resolution // 8  # a 32nd of overlap is legato, not a chord
    ends = np.sort(np.maximum(notes[:, 0] + 1, notes[:, 1] - tolerance))
    sounding = np.searchsorted(start, start, side="right") - np.searchsorted(ends, start, side="right")
    span = 4 * resolution
    spans = max(1, -(-max(end_tick, int(notes[:, 1].max())) // span))
    activity = len(np.unique(notes[:, 0] // span)) / spans
    per_onset = len(notes) / len(np.unique(np.rint(start / max(1, tolerance))))
    return Evidence(index, name, program, is_drum, len(notes), float(np.mean(sounding <= 1)),
                    float(np.mean(sounding == 2)), float(np.median(notes[:, 2])), float(activity),
                    float(per_onset))


def song_evidence(song: Song) -> list[Evidence]:
    """The evidence of each of the song's instruments, by index."""
    return [instrument_evidence(i, t.name.strip(), int(t.program), bool(t.is_drum), song.notes_ticks[i],
                                song.resolution, song.end_tick) for i, t in enumerate(song.score.tracks)]


def _ramp(x: float, zero: float, one: float) -> float:
    """0 at ``zero``, 1 at ``one``, linear between (either order), clipped."""
    return float(np.clip((x - zero) / (one - zero), 0.0, 1.0))


def _line(e: Evidence) -> float:
    """How much of a single line an instrument plays: its monophonic onsets, and half its two-voice ones."""
    return e.monophonic + e.two_voices / 2


def _named(e: Evidence, role: str) -> bool:
    return any(word in e.name.lower() for word in ROLE_NAMES.get(role, ()))


def _pitched_reason(e: Evidence, role: str) -> str:
    named = f", named {e.name!r}" if _named(e, role) else ""
    two = f" (two voices at {e.two_voices:.0%})" if e.two_voices >= 0.1 else ""
    return (f"monophonic at {e.monophonic:.0%} of its onsets{two}, median pitch "
            f"{pretty_midi.note_number_to_name(int(round(e.median_pitch)))}, plays in {e.activity:.0%} of the "
            f"song's bars{named}")


def melody_fit(e: Evidence, song: Sequence[Evidence]) -> Fit | None:
    """Melody: monophonic most of the time (squared: a chordal piano loses to a lead), in a melodic register
    (median pitch C4-C6, fading to nothing at C3 and C7), active through the song; any pitched program but a
    bass's or an effect's."""
    if e.is_drum or e.program in BASS_PROGRAMS or e.program in EFFECT_PROGRAMS or e.notes < MIN_ROLE_NOTES:
        return None
    register = _ramp(e.median_pitch, 48, 60) * _ramp(e.median_pitch, 96, 84)
    score = _line(e) ** 2 * register * np.sqrt(e.activity) * (NAME_BONUS if _named(e, "melody") else 1.0)
    return Fit(min(1.0, float(score)), _pitched_reason(e, "melody"))


def bass_fit(e: Evidence, song: Sequence[Evidence]) -> Fit | None:
    """Bass: the lowest mostly monophonic line (median pitch A2 or lower, fading to nothing at C4) with enough
    notes through the song; a bass program (GM 32-39) counts for it, any other pitched program needs more."""
    if e.is_drum or e.program in EFFECT_PROGRAMS or e.notes < MIN_ROLE_NOTES:
        return None
    program = 1.0 if e.program in BASS_PROGRAMS else 0.6
    score = _line(e) * _ramp(e.median_pitch, 60, 45) * np.sqrt(e.activity) * program
    score *= NAME_BONUS if _named(e, "bass") else 1.0
    return Fit(min(1.0, float(score)), _pitched_reason(e, "bass"))


def drums_fit(e: Evidence, song: Sequence[Evidence]) -> Fit | None:
    """Drums: the drum-channel instrument with the most hits (its share of the busiest kit's hits)."""
    if not e.is_drum or not e.notes:
        return None
    most = max(o.notes for o in song if o.is_drum)
    return Fit(e.notes / most, f"{e.notes} hits in {e.activity:.0%} of the song's bars")


#: Notes per onset at which an instrument counts as fully chordal for a polyphonic role (1: a single line).
CHORDAL = 1.75
#: What an instrument that plays no chords still scores for a polyphonic role (of what a chordal one scores).
LINE_SHARE = 0.35


def family_fit(role: str) -> Scorer:
    """The scorer of an instrument of a track set (``piano``, ``guitar``, POP909's ``bridge``; ``tokens.FAMILIES``):
    a pitched instrument of the role's General MIDI family or named like it (:data:`ROLE_NAMES`), playing through
    the song. A polyphonic role (several voices by default) prefers chords: notes per onset from 1 to
    :data:`CHORDAL` take it from :data:`LINE_SHARE` to full; a one-voice role prefers a line. Its name counts
    most: an instrument named like the role scores 0.5 to 1, any other 0 to 0.5, so a track named ``PIANO`` is
    the piano however chordal another one is."""
    family = FAMILIES[role]

    def fit(e: Evidence, song: Sequence[Evidence]) -> Fit | None:
        named = _named(e, role)
        if e.is_drum or e.program in EFFECT_PROGRAMS or e.notes < MIN_ROLE_NOTES:
            return None
        if e.program not in family.programs and not named:
            return None
        if family.voices > 1:
            shape = LINE_SHARE + (1 - LINE_SHARE) * _ramp(e.per_onset, 1.0, CHORDAL)
            what = f"{e.per_onset:.2f} notes per onset"
        else:
            shape, what = _line(e), f"monophonic at {e.monophonic:.0%} of its onsets"
        score = (0.5 if named else 0.0) + 0.5 * shape * np.sqrt(e.activity)
        programs = family.programs
        kind = (f"GM {e.program} in the {role} family (GM {programs.start}-{programs.stop - 1})"
                if e.program in programs else f"GM {e.program}, outside the {role} family")
        reason = (f"{what}, {kind}, median pitch {pretty_midi.note_number_to_name(int(round(e.median_pitch)))}, "
                  f"plays in {e.activity:.0%} of the song's bars" + (f", named {e.name!r}" if named else ""))
        return Fit(min(1.0, float(score)), reason)

    fit.__doc__ = f"{role}: :func:`family_fit`."
    return fit


#: One scorer per role the model can have: the trio's roles by their evidence, every other instrument a track set
#: can name by :func:`family_fit` (a new role adds its scorer here).
ROLE_SCORERS: dict[str, Scorer] = {"melody": melody_fit, "bass": bass_fit, "drums": drums_fit,
                                   **{name: family_fit(name) for name in FAMILIES
                                      if name not in ("melody", "bass", "drums")}}
RUNNERS_UP = 2


@dataclass(frozen=True)
class Choice:
    """The instrument chosen for one role (``index`` None: none), why, and the runners-up ``(index, fit)``."""

    role: str
    index: int | None
    reason: str
    runners_up: tuple[tuple[int, Fit], ...] = ()
    asked: bool = False

    def json(self) -> dict:
        return {"index": self.index, "reason": self.reason, "asked": self.asked,
                "runners_up": [{"index": i, "score": round(f.score, 3), "reason": f.reason}
                               for i, f in self.runners_up]}


def assign_roles(evidence: Sequence[Evidence], roles: Sequence[str], asked: Mapping[str, int | None] | None = None
                 ) -> dict[str, Choice]:
    """The instrument for each role by :data:`ROLE_SCORERS`: the best (role, instrument) fit first, then the
    next among those left, until every role has one or none fits (best score under :data:`MIN_FIT`).
    ``asked``: roles whose instrument the user chose (an index, or None for none), taken as they are."""
    asked = dict(asked or {})
    missing = [r for r in roles if r not in ROLE_SCORERS and r not in asked]
    if missing:
        raise ValueError(f"no rule chooses a {', '.join(missing)} instrument (known roles: "
                         f"{', '.join(ROLE_SCORERS)}); choose one by index")
    fits = {r: {e.index: f for e in evidence if (f := ROLE_SCORERS[r](e, evidence)) is not None}
            for r in roles if r not in asked}
    out = {r: Choice(r, asked[r], "asked", asked=True) for r in roles if r in asked}
    taken = {i for i in asked.values() if i is not None}
    while fits:
        open_fits = [(f.score, r, i) for r, by in fits.items() for i, f in by.items() if i not in taken]
        score, role, index = max(open_fits, default=(0.0, next(iter(fits)), None))
        if index is None or score < MIN_FIT:
            for r, by in fits.items():
                out[r] = _none(r, by, taken)
            break
        out[role] = Choice(role, index, fits[role][index].reason, _runners_up(fits[role], {index}))
        taken.add(index)
        del fits[role]
    return {r: out[r] for r in roles}


def _runners_up(fits: Mapping[int, Fit], but: set[int]) -> tuple[tuple[int, Fit], ...]:
    """The best fits after the chosen one that score anything (0.01 or more, as printed), best first."""
    ranked = sorted(((i, f) for i, f in fits.items() if i not in but and f.score >= 0.005),
                    key=lambda p: -p[1].score)
    return tuple(ranked[:RUNNERS_UP])


def _none(role: str, fits: Mapping[int, Fit], taken: set[int]) -> Choice:
    free = [f.score for i, f in fits.items() if i not in taken]
    why = (f"no instrument fits (best score {max(free):.2f}, under {MIN_FIT})" if free
           else "no instrument of the song can play it" if not fits else "its candidates play other roles")
    return Choice(role, None, why, _runners_up(fits, set()))


def roles(tracks: Sequence[Track]) -> list[str]:
    """The roles of a model's tracks: its instruments (``trio``: melody, bass, drums; ``pop909``: melody, bridge,
    piano, the voices of one instrument being one role)."""
    return [name for name, _ in set_instruments(tracks)]


def choose_roles(song: Song, tracks: Sequence[Track], choices: Mapping[str, str | None] | None = None
                 ) -> dict[str, Choice]:
    """The instrument the model sees as each of its roles (instruments: a polyphonic one's voices together),
    with the evidence (:func:`assign_roles`).

    ``choices`` by role: an index (``"3"``), an instrument name, ``"none"``, or ``None`` for the evidence."""
    asked: dict[str, int | None] = {}
    for role, ks in set_instruments(tracks):
        text, track = (choices or {}).get(role), tracks[ks[0]]
        if text is None:
            continue
        asked[role] = None if text.strip().lower() == "none" else _find(song, text, role)
        index = asked[role]
        if index is not None and bool(song.score.tracks[index].is_drum) != track.is_drum:
            want = "a drum-channel instrument" if track.is_drum else "an instrument off the drum channel"
            raise ValueError(f"{role_option(role, text)}: the {role} track needs {want}; "
                             f"{instrument_label(song, index)} is not")
    by_index: dict[int, list[str]] = {}
    for role, index in asked.items():
        if index is not None:
            by_index.setdefault(index, []).append(role)
    for index, both in by_index.items():
        if len(both) > 1:
            options = " and ".join(role_option(r, (choices or {})[r]) for r in both)
            raise ValueError(f"{song.name}: one instrument was chosen for two tracks: {options} both choose "
                             f"{instrument_label(song, index)}")
    return assign_roles(song_evidence(song), roles(tracks), asked)


def choose_tracks(song: Song, tracks: Sequence[Track], choices: Mapping[str, str | None] | None = None
                  ) -> dict[str, int | None]:
    """The instrument index the model sees as each of its tracks (``None``: the song has none), chosen by
    :func:`choose_roles` (``choices``: an index, a name or ``"none"`` per role; the rest by the evidence)."""
    return {role: c.index for role, c in choose_roles(song, tracks, choices).items()}


def midi_roles(pm: pretty_midi.PrettyMIDI, tracks: Sequence[Track]) -> dict[str, Choice]:
    """:func:`assign_roles` over a PrettyMIDI's instruments (indices into ``pm.instruments``): the same choice for
    a file read without its bars (one the song reader refuses, a piece for the editor's lanes)."""
    end = pm.time_to_tick(pm.get_end_time())
    evidence = []
    for i, inst in enumerate(pm.instruments):
        notes = np.array([[pm.time_to_tick(n.start), pm.time_to_tick(n.end), n.pitch] for n in inst.notes],
                         dtype=np.int64).reshape(-1, 3)
        evidence.append(instrument_evidence(i, inst.name.strip(), int(inst.program), bool(inst.is_drum), notes,
                                            pm.resolution, end))
    return assign_roles(evidence, roles(tracks))


def with_roles(pm: pretty_midi.PrettyMIDI, choices: Mapping[str, Choice], tracks: Sequence[Track]
               ) -> pretty_midi.PrettyMIDI:
    """A shallow copy of ``pm`` holding only the chosen instruments, each under its track's program, so that
    :func:`schmubert.tokens.midi_to_tokens` (the first instrument of each program range) reads those."""
    out = copy.copy(pm)
    out.instruments = []
    for track in tracks:
        index = choices[track.name].index if track.name in choices else None
        if index is not None:
            inst = pretty_midi.Instrument(track.program, is_drum=track.is_drum, name=track.name)
            inst.notes = pm.instruments[index].notes
            out.instruments.append(inst)
    return out


def describe_choices(song: Song, choices: Mapping[str, Choice]) -> list[str]:
    """One line per role: the instrument, and why (the evidence and the runners-up, or that it was asked for)."""
    lines = []
    for role, c in choices.items():
        chosen = "none" if c.index is None else instrument_label(song, c.index)
        if c.asked:
            lines.append(f"{role} = {chosen} (as asked)")
            continue
        others = "; ".join(f"{instrument_label(song, i)} {f.score:.2f}" for i, f in c.runners_up)
        option = role_option(role)
        lines.append(f"{role} = {chosen}: {c.reason}" + (f"; runners-up: {others} (choose one with {option})"
                                                          if others else ""))
    return lines


def describe_tracks(song: Song, assignment: Mapping[str, int | None]) -> str:
    """``melody = #3 'Chant' (GM 22 Harmonica, 394 notes); bass = ...; drums = none``."""
    return "; ".join(f"{role} = {'none' if i is None else instrument_label(song, i)}"
                     for role, i in assignment.items())


# --- the grid --------------------------------------------------------------------------------------------------


def tick_to_real(song: Song, run: Run, ticks: np.ndarray) -> np.ndarray:
    """Ticks -> nearest real 16th step of ``run`` (its bar ``run.first`` starts at step 0): the song's beats,
    whatever its tempo map says in seconds."""
    return np.rint((np.asarray(ticks, dtype=np.float64) - run.start_tick) / song.ticks_per_step).astype(np.int64)


def real_to_tick(song: Song, run: Run, steps: np.ndarray) -> np.ndarray:
    """Real 16th steps of ``run`` -> ticks (the inverse of :func:`tick_to_real` on the grid)."""
    return np.rint(run.start_tick + np.asarray(steps, dtype=np.float64) * song.ticks_per_step).astype(np.int64)


def _run_layout(run: Run) -> meter.Layout:
    return run.layout(run.first, run.end)


def tick_to_step(song: Song, run: Run, ticks: np.ndarray) -> np.ndarray:
    """Ticks -> nearest grid step of ``run`` (its bar ``run.first`` starts at step 0). In a meter run a real
    step maps to its bar's slot (a bar's end to the next slot's start); ticks outside the run go on linearly."""
    real = tick_to_real(song, run, ticks)
    if not run.metered:
        return real
    layout = _run_layout(run)
    table = np.r_[layout.real_step_slots(), layout.steps]
    total = layout.real_steps
    inside = table[np.clip(real, 0, total)]
    return np.where(real < 0, real, np.where(real > total, layout.steps + real - total, inside))


def step_to_tick(song: Song, run: Run, steps: np.ndarray) -> np.ndarray:
    """Grid steps of ``run`` -> ticks (a PAD step is its bar's end; in a meter run steps outside it go on
    linearly)."""
    if not run.metered:
        return real_to_tick(song, run, steps)
    steps = np.asarray(steps, dtype=np.int64)
    layout = _run_layout(run)
    inside = layout.to_real(np.clip(steps, 0, layout.steps))
    real = np.where(steps < 0, steps, np.where(steps > layout.steps, layout.real_steps + steps - layout.steps,
                                                 inside))
    return real_to_tick(song, run, real)


def bar_tick(song: Song, run: Run, bar: int) -> int:
    """The tick at which song bar ``bar`` (``run.first .. run.end``) starts on the run's grid (its phase
    included)."""
    return int(real_to_tick(song, run, np.array([run.real_step(bar)]))[0])


def grid_tokens(song: Song, assignment: Mapping[str, int | None], tracks: Sequence[Track], run: Run,
                bars: tuple[int, int]) -> np.ndarray:
    """Tokens ``(N, K)`` of song bars ``bars`` (inside ``run``) for the model's tracks, on the song's beats."""
    return grid_encode(song, assignment, tracks, run, bars)[0]


def grid_encode(song: Song, assignment: Mapping[str, int | None], tracks: Sequence[Track], run: Run,
                bars: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Tokens and velocity bins ``(N, K)`` of song bars ``bars`` (inside ``run``) for the model's tracks, on the
    song's beats. ``assignment``: the song's instrument of each role (:func:`roles`). The trio and melody sets
    read each instrument by the trio's rule (``tokens.encode_track``); any other set as preprocessing does
    (``polyphony.encode_instrument``: a polyphonic role's notes go into its voices by the voice rule, a one-voice
    role takes one line). Velocity: the bin (``tokens.velocity_to_bin``) of each onset's note (drums: of the
    step's loudest hit), 0 elsewhere.

    In a meter run the notes are read in real 16ths (each bar's own length) and laid into the bars' slots
    (``meter.expand``): PAD after each short bar's end, velocity 0 there."""
    lo, hi = bars
    steps = run.real_step(hi) - run.real_step(lo)
    tokens = np.zeros((steps, len(tracks)), dtype=np.int64)
    velocity = np.zeros_like(tokens)
    legacy = is_legacy(tracks)
    for role, ks in set_instruments(tracks):
        index = assignment.get(role)
        if index is None:
            continue
        n = song.notes_ticks[index]
        n = n[n[:, 3] > 0]
        notes = np.stack([tick_to_real(song, run, n[:, 0]), tick_to_real(song, run, n[:, 1]), n[:, 2], n[:, 3]],
                         axis=1)
        notes[:, :2] -= run.real_step(lo)
        if legacy:
            (k,) = ks
            tokens[:, k] = encode_track(notes[:, :3], tracks[k], steps)
            velocity[:, k] = _onset_velocity(notes, tokens[:, k], tracks[k])
        else:
            tokens[:, ks], velocity[:, ks], _ = encode_instrument(notes, [tracks[k] for k in ks], steps)
    if run.metered:
        layout = run.layout(lo, hi)
        return meter.expand(tokens, layout, list(tracks)), meter.expand(velocity, layout)
    return tokens, velocity


def _onset_velocity(notes: np.ndarray, row: np.ndarray, track: Track) -> np.ndarray:
    """The velocity bins ``(N,)`` of a trio column ``row`` encoded from ``notes`` ``(M, 4)`` steps (start, end,
    pitch, velocity): at each onset the loudest note of its pitch starting there (drums: the loudest hit)."""
    out = np.zeros(len(row), dtype=np.int64)
    inside = notes[(notes[:, 0] >= 0) & (notes[:, 0] < len(row))]
    if track.is_drum:
        inside = inside[[int(p) in DRUM_PITCH_TO_CLASS for p in inside[:, 2]]]
        np.maximum.at(out, inside[:, 0], velocity_to_bin(inside[:, 3]))
        return np.where(row > 0, out, 0)
    onset = inside[row[inside[:, 0]] == inside[:, 2] - PITCH_OFFSET]
    np.maximum.at(out, onset[:, 0], velocity_to_bin(onset[:, 3]))
    return out


def check_on_grid(song: Song, assignment: Mapping[str, int | None], run: Run, bars: tuple[int, int]) -> None:
    """``ValueError`` when the chosen instruments' onsets in ``bars`` mostly miss the 16th grid of the beats (a
    performance recorded without a tempo map: the grid cannot hold it). Each instrument is measured from its own
    most common offset: a part played a constant few ticks ahead of the beat (a pad's attack, a sequencer's
    delay) is on a grid, which quantizing holds."""
    lo, hi = song.bars[bars[0]].start, song.bars[bars[1] - 1].end
    off: list[np.ndarray] = []
    for i in assignment.values():
        if i is None:
            continue
        n = song.notes_ticks[i]
        pos = (n[(n[:, 0] >= lo) & (n[:, 0] < hi), 0] - run.start_tick) / song.ticks_per_step
        off.append(off_grid(pos - np.rint(pos)))
    off_all = np.concatenate(off) if off else np.zeros(0, dtype=bool)
    if len(off_all) < 16:
        return
    share = float(np.mean(off_all))
    if share > OFF_GRID_SHARE:
        raise ValueError(f"{song.name}: {share:.0%} of the notes in bars {bars[0]}:{bars[1]} lie off the 16th grid "
                         "of its beats (a performance recorded without a tempo map?); the model's grid cannot hold "
                         "it")


def off_grid(residue: np.ndarray) -> np.ndarray:
    """Which onsets, ``residue`` from the nearest 16th in 16ths (-0.5 .. 0.5), lie more than :data:`OFF_GRID`
    from the instrument's own most common offset (the candidate offset, in steps of OFF_GRID, that most onsets
    lie within OFF_GRID of)."""
    if not len(residue):
        return np.zeros(0, dtype=bool)
    shifts = np.arange(-0.5, 0.5, OFF_GRID)
    distance = np.abs((residue[None, :] - shifts[:, None] + 0.5) % 1.0 - 0.5)  # [shift, onset], wrapped
    return distance[int(np.argmax((distance <= OFF_GRID).sum(axis=1)))] > OFF_GRID


def place_window(run: Run, edit: tuple[int, int], window_bars: int, start_bar: int | None = None,
                 bars: int | None = None) -> tuple[int, int]:
    """Song bars ``(lo, hi)`` the model runs on: the edit with context on both sides where the run has it.

    ``start_bar``/``bars`` place it explicitly. An edit longer than the window gets a quarter window of context
    each side (the sampler slides its window over it). In a meter run ``window_bars`` counts slots (a bar of 5/4
    takes two): the window holds as many bars as fit them; ``bars`` counts the song's bars.
    """
    if run.metered:
        return _place_metered(run, edit, window_bars, start_bar, bars)
    e0, e1 = edit
    if start_bar is not None:
        lo = start_bar
        hi = min(run.end, max(lo + (bars or window_bars), e1))
        if not (run.first <= lo and e0 >= lo and e1 <= hi):
            raise ValueError(f"bars {e0}:{e1} are outside the window of --start-bar {start_bar} "
                             f"(bars {lo}:{hi}, end exclusive)")
        return lo, hi
    size = bars or window_bars
    if e1 - e0 >= size:
        ctx = window_bars // 4
        return max(run.first, e0 - ctx), min(run.end, e1 + ctx)
    size = min(size, run.bars)
    lo = e0 - (size - (e1 - e0)) // 2
    lo = min(max(lo, run.first), run.end - size)
    return lo, lo + size


def _place_metered(run: Run, edit: tuple[int, int], window_slots: int, start_bar: int | None,
                   bars: int | None) -> tuple[int, int]:
    """:func:`place_window` in a meter run: the window's size is its slots (``bars``: its bars when given)."""
    e0, e1 = edit

    def size(lo: int, hi: int) -> int:
        return hi - lo if bars else (run.grid_step(hi) - run.grid_step(lo)) // STEPS_PER_BAR

    limit = bars or window_slots
    if start_bar is not None:
        lo, hi = start_bar, start_bar
        while hi < run.end and (hi < e1 or size(lo, hi + 1) <= limit):
            hi += 1
        if not (run.first <= lo and e0 >= lo and e1 <= hi):
            raise ValueError(f"bars {e0}:{e1} are outside the window of --start-bar {start_bar} "
                             f"(bars {lo}:{hi}, end exclusive)")
        return lo, hi
    if size(e0, e1) >= limit:
        ctx = window_slots // 4
        lo, hi = e0, e1
        while lo > run.first and size(lo - 1, e0) <= ctx:
            lo -= 1
        while hi < run.end and size(e1, hi + 1) <= ctx:
            hi += 1
        return lo, hi
    left = (limit - size(e0, e1)) // 2  # context before the edit, as much after; the run's ends move it
    lo = e0
    while lo > run.first and size(lo - 1, e0) <= left:
        lo -= 1
    hi = e1
    while hi < run.end and size(lo, hi + 1) <= limit:
        hi += 1
    while lo > run.first and size(lo - 1, hi) <= limit:
        lo -= 1
    return lo, hi


def edit_run(song: Song, edit: tuple[int, int]) -> Run:
    """The run holding song bars ``edit``; ``ValueError`` saying why when they are outside the song or not bars
    the grid holds (a song read for a model without meter: not 4/4; the message says what would work: a model
    built with meter, and the nearest edits of the same length that avoid those bars)."""
    e0, e1 = edit
    if not 0 <= e0 < e1 <= len(song.bars):
        raise ValueError(f"bar range {e0}:{e1} is outside the piece: {song.name} has bars 0:{len(song.bars)} (end "
                         "exclusive)")
    run = song.run_of(e0)
    if run is None or e1 > run.end:
        raise ValueError(refusal(song, edit))
    return run


def refusal(song: Song, edit: tuple[int, int]) -> str:
    """Why song bars ``edit`` cannot be edited in one grid, and what would work: a model built with meter (for a
    song read for one without), and the nearest edits of as many bars that avoid the bars in the way."""
    e0, e1 = edit
    odd = [i for i in range(e0, min(e1, len(song.bars))) if song.run_of(i) is None]
    near = nearest_edits(song, edit)
    avoid = (f"; the nearest {e1 - e0}-bar edits that avoid {'them' if len(odd) > 1 else 'it'}: bars "
             f"{' or '.join(f'{a}:{b}' for a, b in near)}" if near else "")
    ranges = ", ".join(f"{r.first}:{r.end}" for r in song.runs)
    if song.metered:
        return (f"bars {e0}:{e1} of {song.name} cross {odd_bars(song, odd)}, which the slot grid cannot hold "
                f"(bars of whole 16ths up to {meter.MAX_BAR_STEPS} sixteenths){avoid}; bars {ranges} can be edited")
    meters = sorted({song.bars[i].meter for i in odd if song.bars[i].end - song.bars[i].start
                     != song.resolution * 4})
    return (f"bars {e0}:{e1} of {song.name} are not all 4/4 bars ({', '.join(meters) or 'a meter change'} inside): "
            f"{meter_hint(song, odd)}{avoid}; only bars {ranges} can be edited")


# --- splicing --------------------------------------------------------------------------------------------------


def _spans(flags: np.ndarray) -> list[tuple[int, int]]:
    """Runs of True in a 1-D bool array as (start, end)."""
    padded = np.concatenate([[False], np.asarray(flags, dtype=bool), [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _median(values: np.ndarray, default: int) -> int:
    return int(np.median(values)) if len(values) else default


def generated_velocity(song_notes: np.ndarray, a: int, b: int, bar_ticks: int, drum_class: int | None = None
                       ) -> int:
    """The velocity rule: the median velocity of the instrument's notes within ``VELOCITY_BARS`` bars before and
    after ticks ``a .. b`` (for a drum class: of that class there, else of the kit there), else of all its notes,
    else 80."""
    n = song_notes[song_notes[:, 3] > 0]
    near = n[((n[:, 0] >= a - VELOCITY_BARS * bar_ticks) & (n[:, 0] < a))
             | ((n[:, 0] >= b) & (n[:, 0] < b + VELOCITY_BARS * bar_ticks))]
    if drum_class is not None:
        same = near[[DRUM_PITCH_TO_CLASS.get(int(p)) == drum_class for p in near[:, 2]]]
        if len(same):
            return _median(same[:, 3], DECODE_VELOCITY)
    return _median(near[:, 3], _median(n[:, 3], DECODE_VELOCITY))


def _drum_pitches(song_notes: np.ndarray) -> dict[int, int]:
    """Drum class -> the pitch the kit uses most for it (the representative pitch where it has none)."""
    out = dict(enumerate(DRUM_CLASS_PITCHES))
    counts = collections.Counter(int(p) for p in song_notes[:, 2] if int(p) in DRUM_PITCH_TO_CLASS)
    for pitch, _ in reversed(counts.most_common()):  # the most used last, so it wins
        out[DRUM_PITCH_TO_CLASS[pitch]] = pitch
    return out


def splice_track(song: Song, run: Run, lo_bar: int, song_notes: np.ndarray, row: np.ndarray, write: np.ndarray,
                 track: Track | Sequence[Track], limit: int | None = None, velocity: np.ndarray | None = None
                 ) -> np.ndarray:
    """One instrument's notes ``(N, 4)`` ticks (start, end, pitch, velocity) with the grid row ``row`` ``(N,)``
    written where ``write`` ``(N,)`` is True, by the module's splice rules. In a meter run the grid's slots are
    read back in real 16ths (``meter.compact``: PAD left out), each bar's steps at its own ticks.

    A polyphonic instrument passes its voices: ``row`` ``(N, V)`` and ``track`` its ``V`` tracks; the voices'
    notes are written together, a pitch struck again by another voice ending the one that sounds.
    ``velocity`` (``(N,)`` or ``(N, V)``, a velocity model's bins at the onsets): a new note's velocity is its
    bin's (``tokens.bin_to_velocity``); without a bin, the module's velocity rule."""
    voices = [track] if isinstance(track, Track) else list(track)
    rows = np.asarray(row).reshape(len(row), -1)
    bins = None if velocity is None else np.asarray(velocity).reshape(len(row), -1)
    write = np.asarray(write)
    if run.metered:  # the window's slots -> its real steps: PAD takes no time and is never written
        real = _window_layout(run, lo_bar, len(rows)).real_step_slots()
        rows, write = rows[real], write[real]
        bins = None if bins is None else bins[real]
    track = voices[0]
    offset = run.real_step(lo_bar)
    bar_ticks = song.resolution * 4
    kept = song_notes.copy()
    new = []
    generated = np.concatenate([  # (M, 4) steps of the window: start, end, pitch, velocity bin (0: none)
        np.concatenate([n, (np.zeros(len(n), dtype=np.int64) if bins is None else bins[n[:, 0], v])[:, None]],
                       axis=1)
        for v, n in enumerate(tokens_to_notes(rows, voices))])
    if len(voices) > 1:
        generated = generated[np.lexsort((-generated[:, 2], generated[:, 0]))]
    pitch_of = _drum_pitches(song_notes) if track.is_drum else {}
    drum_len = _median(song_notes[:, 1] - song_notes[:, 0], int(song.ticks_per_step)) if track.is_drum else 0
    for s0, s1 in _spans(write):
        a, b = (int(t) for t in real_to_tick(song, run, np.array([s0 + offset, s1 + offset])))
        b = min(b, song.end_tick if limit is None else limit)
        if a >= b:
            continue
        kept = kept[(kept[:, 0] < a) | (kept[:, 0] >= b)]
        kept[(kept[:, 0] < a) & (kept[:, 1] > a), 1] = a  # border: notes sounding into the span end at it
        added = []
        for start, end, pitch, v in generated[(generated[:, 0] >= s0) & (generated[:, 0] < s1)].tolist():
            t0, t1 = (int(t) for t in real_to_tick(song, run, np.array([start + offset, end + offset])))
            if t0 >= b:
                continue
            cls = DRUM_PITCH_TO_CLASS.get(pitch) if track.is_drum else None
            if track.is_drum:
                pitch, t1 = pitch_of[cls], t0 + max(1, drum_len)
            loud = (int(bin_to_velocity(v)) if 1 <= v <= VELOCITY_BINS
                    else generated_velocity(song_notes, a, b, bar_ticks, cls))
            added.append((t0, max(t0 + 1, min(t1, b)), pitch, loud))
        new += _one_pitch_at_a_time(added) if len(voices) > 1 else added
    out = np.concatenate([kept, np.array(new, dtype=np.int64).reshape(-1, 4)])
    return out[np.lexsort((out[:, 2], out[:, 0]))]


def _one_pitch_at_a_time(notes: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    """New notes of several voices ``(start, end, pitch, velocity)`` in onset order: a pitch struck again while it
    sounds ends the earlier note there, and of two at one onset the first is kept (one channel sounds a pitch
    once, as ``tokens.tokens_to_midi`` writes voices)."""
    out: list[list[int]] = []
    last: dict[int, list[int]] = {}
    for start, end, pitch, velocity in notes:
        before = last.get(pitch)
        if before is not None and before[0] == start:
            continue
        if before is not None and before[1] > start:
            before[1] = start
        last[pitch] = [start, end, pitch, velocity]
        out.append(last[pitch])
    return [tuple(n) for n in out]


def splice(song: Song, assignment: Mapping[str, int | None], tracks: Sequence[Track], run: Run, lo_bar: int,
           tokens: np.ndarray, write: np.ndarray, velocity: np.ndarray | None = None) -> symusic.Score:
    """The song with the grid ``tokens`` ``(N, K)`` (window from song bar ``lo_bar``) written where ``write``
    ``(N, K)`` is True, everything else as it was, tick for tick. Returns a new Score; ``song.score`` is kept.

    ``assignment``: the song's instrument of each role (:func:`roles`); a polyphonic role is written where any of
    its voices is, all its voices together, into that one instrument. ``velocity`` ``(N, K)``: a velocity
    model's bins for the new notes (:func:`splice_track`).
    A run that was extended past the song's end (a continuation asking for more bars) may write up to its end;
    otherwise nothing is written past the song's end."""
    score = song.score.copy()
    limit = song.end_tick
    if run.end > len(song.bars):
        limit = max(limit, bar_tick(song, run, run.end))
    for role, ks in set_instruments(tracks):
        if not write[:, ks].any():
            continue
        track = tracks[ks[0]]
        index = assignment.get(role)
        if index is None:
            score.tracks.append(symusic.Track(f"{role} (SCHmUBERT)", track.program, track.is_drum))
            target, song_notes = score.tracks[len(score.tracks) - 1], np.zeros((0, 4), dtype=np.int64)
        else:
            target, song_notes = score.tracks[index], song.notes_ticks[index]
        if len(ks) == 1:
            (k,) = ks
            extra = {} if velocity is None else {"velocity": velocity[:, k]}
            notes = splice_track(song, run, lo_bar, song_notes, tokens[:, k], write[:, k], track, limit, **extra)
        else:
            notes = splice_track(song, run, lo_bar, song_notes, tokens[:, ks], write[:, ks].any(axis=1),
                                 [tracks[k] for k in ks], limit, None if velocity is None else velocity[:, ks])
        target.notes = symusic.Note.from_numpy(
            time=notes[:, 0].astype(np.int32), duration=(notes[:, 1] - notes[:, 0]).astype(np.int32),
            pitch=notes[:, 2].astype(np.int8), velocity=notes[:, 3].astype(np.int8))
    if score.end() < song.end_tick:  # the span held the last notes: a marker keeps the file's length
        score.markers.append(symusic.TextMeta(song.end_tick, "end"))
    return score


def _window_layout(run: Run, lo_bar: int, steps: int) -> meter.Layout:
    """The slot layout of a window of ``steps`` grid steps from song bar ``lo_bar`` of ``run`` (its bars as far
    as they reach; the last meter goes on past the run's end)."""
    hi = lo_bar
    while run.grid_step(hi) - run.grid_step(lo_bar) < steps:
        hi += 1
    if run.grid_step(hi) - run.grid_step(lo_bar) != steps:
        raise ValueError(f"a window of {steps} steps from bar {lo_bar} does not end at a bar line")
    bars = [meter.Bar(run.real_step(b + 1) - run.real_step(b),
                      run.compound[min(b - run.first, len(run.compound) - 1)]) for b in range(lo_bar, hi)]
    return meter.Layout.of_bars(bars)


def write_song(score: symusic.Score, path: str | Path, overwrite: bool = False) -> Path:
    """Write atomically, never over an existing file unless ``overwrite``."""
    return write_atomic(path, lambda tmp: score.dump_midi(str(tmp)), overwrite)


def song_bytes(score: symusic.Score) -> bytes:
    """The spliced song as the bytes of a MIDI file (for downloads)."""
    return bytes(score.dumps_midi())


# --- an edit of a song -----------------------------------------------------------------------------------------


@dataclass
class SongEdit:
    """Where the model runs on a song and what it writes back.

    ``x``/``known``/``write`` are ``(N, K)`` over song bars ``window`` (``N = 16 * bars``): the tokens, what the
    sampler keeps, and what is spliced back (the generated elements, plus an interpolation's borrowed end);
    ``velocity`` ``(N, K)`` the velocity bins of ``x``'s onsets (what a velocity model is shown of the known
    notes). ``assignment``: the song's instrument of each role (:func:`roles`).
    """

    song: Song
    assignment: dict[str, int | None]
    run: Run
    window: tuple[int, int]
    edit: tuple[int, int]
    x: np.ndarray
    known: np.ndarray
    write: np.ndarray
    notes: list[str] = field(default_factory=list)
    choices: dict[str, Choice] = field(default_factory=dict)  # how each track's instrument was chosen
    velocity: np.ndarray | None = None

    def splice(self, tokens: np.ndarray, tracks: Sequence[Track], velocity: np.ndarray | None = None
               ) -> symusic.Score:
        """The song with ``tokens`` ``(N, K)`` (a sample over the window) spliced in where ``write``; the new
        notes take ``velocity``'s bins (a velocity model's draw) where given, else the velocity rule."""
        return splice(self.song, self.assignment, tracks, self.run, self.window[0], tokens, self.write, velocity)

    def record(self) -> dict:
        return {"file": self.song.name, "tracks": describe_tracks(self.song, self.assignment),
                "choices": {role: c.json() for role, c in self.choices.items()},
                "window_bars": list(self.window), "edited_bars": list(self.edit), "notes": self.notes}

    def unchanged(self, take: np.ndarray, tracks: Sequence[Track], copy_prior: bool) -> Unchanged | None:
        """:func:`unchanged_take` of a take over the window: why its regenerated bars came back as they were."""
        return unchanged_take(self.x, take, ~self.known, tracks, copy_prior, self.song, self.assignment, self.run,
                              self.window[0])


def extend_run(song: Song, run: Run, end_bar: int) -> Run:
    """``run`` reaching ``end_bar`` past the song's end (the last meter goes on), for a continuation that writes
    more bars than the song has; ``ValueError`` when the run is not the song's last bars."""
    if end_bar <= run.end:
        return run
    if run.end != len(song.bars):
        raise ValueError(refusal(song, (run.end, end_bar)))
    more = end_bar - run.end
    if not run.metered:
        return Run(run.first, end_bar - run.first, run.start_tick)
    return Run(run.first, end_bar - run.first, run.start_tick, run.lengths + run.lengths[-1:] * more,
               run.compound + run.compound[-1:] * more)


def plan_edit(song: Song, assignment: dict[str, int | None], tracks: Sequence[Track], edit: tuple[int, int],
              regenerate: np.ndarray, window_bars: int, start_bar: int | None = None, bars: int | None = None,
              extend: bool = False) -> SongEdit:
    """An edit of song bars ``edit``: ``regenerate`` ``(E, K)`` bool says which tracks of which edited steps
    the model writes (``E = 16 * (edit[1] - edit[0])``). The window is placed by :func:`place_window`.
    ``extend``: the edit may run past the song's end (continuation)."""
    e0, e1 = edit
    run = edit_run(song, (e0, min(e1, len(song.bars))) if extend else edit)
    if extend:
        run = extend_run(song, run, e1)
    lo, hi = place_window(run, edit, window_bars, start_bar, bars)
    check_on_grid(song, assignment, run, (lo, min(hi, len(song.bars))))
    x, velocity = grid_encode(song, assignment, tracks, run, (lo, hi))
    write = np.zeros(x.shape, dtype=bool)
    a, b = run.grid_step(e0) - run.grid_step(lo), run.grid_step(e1) - run.grid_step(lo)
    write[a:b] = _edit_rows(run, edit, np.asarray(regenerate, dtype=bool))
    known = ~write
    if run.metered:  # PAD is known and never written (the sampler keeps it whatever the mask says)
        pad = run.layout(lo, hi).pad_steps() >= 0
        write[pad], known[pad] = False, True
    notes = [n for n in [song.meter_note, editable_note(song), meter_note(song, (lo, hi))] if n]
    return SongEdit(song, dict(assignment), run, (lo, hi), edit, x, known, write, notes, velocity=velocity)


def _edit_rows(run: Run, edit: tuple[int, int], regenerate: np.ndarray) -> np.ndarray:
    """``regenerate`` ``(E, K)`` on the grid steps of song bars ``edit``: as given when it has their steps
    (a 4/4 run: 16 per bar); in a meter run, given per bar (16 rows each), each bar's rows go into its slot, a
    long bar's second slot regenerated where any row of the bar is."""
    e0, e1 = edit
    steps = run.grid_step(e1) - run.grid_step(e0)
    if len(regenerate) == steps:
        return regenerate
    if not run.metered or len(regenerate) != (e1 - e0) * STEPS_PER_BAR:
        raise ValueError(f"regenerate has {len(regenerate)} rows for bars {e0}:{e1} of {steps} grid steps")
    out = np.zeros((steps, regenerate.shape[1]), dtype=bool)
    for i, bar in enumerate(range(e0, e1)):
        rows = regenerate[i * STEPS_PER_BAR:(i + 1) * STEPS_PER_BAR]
        at = run.grid_step(bar) - run.grid_step(e0)
        out[at:at + STEPS_PER_BAR] = rows
        if run.grid_step(bar + 1) - run.grid_step(bar) > STEPS_PER_BAR:
            out[at + STEPS_PER_BAR:at + 2 * STEPS_PER_BAR] = rows.any(axis=0)
    return out


def meter_note(song: Song, bars: tuple[int, int]) -> str | None:
    """For a meter run: which bars of the window are not 4/4 (each takes its slot, PAD after its end), else
    None."""
    lo, hi = bars
    run = song.run_of(lo)
    if run is None or not run.metered:
        return None
    inside = range(lo, min(hi, len(song.bars)))
    odd = [i for i in inside if run.meter_bars(i, i + 1) != [meter.Bar(STEPS_PER_BAR)]]
    if not odd:
        return None
    meters = list(dict.fromkeys(song.bars[i].meter for i in odd))
    what = (f"are in 4/4 but for {odd_bars(song, odd)}" if len(odd) < len(inside) else
            f"are in {meters[0]} throughout" if len(meters) == 1 else f"hold {odd_bars(song, odd)}")
    return (f"{song.name}: bars {lo}:{hi} {what}; each bar takes its 16-step slot (two for a bar longer than 16 "
            "sixteenths), PAD after its end, and is written back in its own time")


# --- takes that change nothing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unchanged:
    """A take whose regenerated bars came back as the input had them, and why: the regenerated ``silent`` tracks
    play nothing there (and nothing was drawn), or the notes there repeat bars ``copied_from`` (a repeated section
    the copy prior copied back). ``players``: per silent track, instruments of the song that do play there, as
    ``(index, notes there)``, most first. Tracks are instruments: a polyphonic one's voices are one."""

    bars: tuple[int, int]
    tracks: tuple[str, ...]
    silent: tuple[str, ...]
    copy_prior: bool
    copied_from: tuple[int, int] | None = None
    players: dict[str, list[tuple[int, int]]] = field(default_factory=dict)

    def why(self, song: Song | None = None) -> str:
        """Why the bars came back unchanged, in words."""
        a, b = self.bars
        if self.silent == self.tracks:
            where = f" in {song.name}" if song is not None else ""
            return (f"bars {a}:{b} came back unchanged: the {_words(self.silent)} "
                    f"{'is' if len(self.silent) == 1 else 'are'} silent there{where} and nothing was drawn")
        same = f" (bars {self.copied_from[0]}:{self.copied_from[1]} hold the same notes)" if self.copied_from else ""
        cause = ("the copy prior copied a repeated section back exactly" if self.copy_prior
                 else "the model drew the same notes again")
        return f"bars {a}:{b} came back unchanged: {cause}{same}"

    def cli_message(self, song: Song | None = None) -> str:
        """The CLI's warning line: why, and what to do (the options to pass)."""
        if self.silent == self.tracks:
            return f"warning: {self.why(song)}; {self._pick(song, cli=True)}"
        sharper = "a lower --copy-sharpness (e.g. 1), " if self.copy_prior else ""
        return f"warning: {self.why(song)}; try {sharper}another --seed, or --variation"

    def editor_message(self, song: Song | None = None) -> str:
        """The editor's message: why, and what to do there (the track pickers, Regenerate)."""
        if self.silent == self.tracks:
            return f"{self.why(song)}; {self._pick(song, cli=False)}"
        return f"{self.why(song)}; Regenerate draws another take"

    def _pick(self, song: Song | None, cli: bool) -> str:
        """Which instruments to choose instead: the song's unchosen ones that play in those bars."""
        hints = []
        for role in self.silent:
            for index, count in self.players.get(role, [])[:2]:
                name = f"#{index} {song.score.tracks[index].name.strip()!r}" if song is not None else f"#{index}"
                hints.append(f"{role_option(role, str(index))} ({name}, {count} notes there)" if cli
                             else f"{name} in the {role} picker ({count} notes there)")
        if hints:
            return "choose an instrument that plays there: " + "; ".join(hints)
        return "no other instrument plays there: choose bars where they play, or another instrument"


def _words(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _onsets(column: np.ndarray, track: Track) -> np.ndarray:
    """Where a canonical column starts notes (melodic: note-ons) or hits (drums)."""
    return column > 0 if track.is_drum else column > 1


def unchanged_take(x: np.ndarray, take: np.ndarray, regenerated: np.ndarray, tracks: Sequence[Track],
                   copy_prior: bool, song: Song | None = None, assignment: Mapping[str, int | None] | None = None,
                   run: Run | None = None, lo_bar: int = 0) -> Unchanged | None:
    """:class:`Unchanged` when ``take`` ``(N, K)`` decodes to the same notes as the input ``x`` wherever it was
    ``regenerated``, else None. ``song``/``assignment``/``run``/``lo_bar``: the song the window (from song bar
    ``lo_bar``) lies in, to number its bars and name the instruments that play there."""
    columns = [k for k in range(len(tracks)) if regenerated[:, k].any()]
    if not columns or any((x[regenerated[:, k], k] >= tracks[k].mask_id).any() for k in columns):
        return None  # nothing regenerated, or an input that was itself masked there
    before, after = canonicalize(x, list(tracks)), canonicalize(take, list(tracks))
    if not np.array_equal(before[regenerated], after[regenerated]):
        return None
    rows = np.flatnonzero(regenerated.any(axis=1))
    first, last = int(rows[0]) // STEPS_PER_BAR, int(rows[-1]) // STEPS_PER_BAR + 1
    names = tuple(dict.fromkeys(tracks[k].instrument for k in columns))  # a polyphonic instrument's voices: one
    plays = {tracks[k].instrument for k in columns if _onsets(before[regenerated[:, k], k], tracks[k]).any()}
    silent = tuple(name for name in names if name not in plays)
    copied = _repeat_of(before, (first, last), columns)

    def bars(a: int, b: int) -> tuple[int, int]:  # window slots a .. b -> song bars (a meter run: by its slots)
        if run is None or not run.metered:
            return lo_bar + a, lo_bar + b
        at = run.grid_step(lo_bar)
        return run.bar_at(at + a * STEPS_PER_BAR), run.bar_at(at + (b - 1) * STEPS_PER_BAR) + 1

    players = {} if song is None or run is None else {
        t: _players(song, run, bars(first, last), assignment or {}, t) for t in silent}
    return Unchanged(bars(first, last), names, silent, copy_prior, None if copied is None else bars(*copied),
                     players)


def _repeat_of(tokens: np.ndarray, bars: tuple[int, int], columns: Sequence[int]) -> tuple[int, int] | None:
    """Other bars of the window holding the same (not silent) notes as ``bars`` on ``columns``, if any."""
    a, b = bars
    part = tokens[a * STEPS_PER_BAR:b * STEPS_PER_BAR, columns]
    if not part.any():
        return None
    for start in range(len(tokens) // STEPS_PER_BAR - (b - a) + 1):
        if start != a and np.array_equal(tokens[start * STEPS_PER_BAR:(start + b - a) * STEPS_PER_BAR, columns],
                                         part):
            return start, start + b - a
    return None


def _players(song: Song, run: Run, bars: tuple[int, int], assignment: Mapping[str, int | None], role: str
             ) -> list[tuple[int, int]]:
    """Instruments of the song chosen for no track that start notes in song ``bars`` and could play ``role``
    (:data:`ROLE_SCORERS`), as ``(index, notes there)``, the best fit for the role first."""
    a, b = bar_tick(song, run, bars[0]), bar_tick(song, run, bars[1])
    chosen = {i for i in assignment.values() if i is not None}
    evidence, scorer = song_evidence(song), ROLE_SCORERS.get(role)
    found = []
    for i, n in enumerate(song.notes_ticks):
        count = int(((n[:, 0] >= a) & (n[:, 0] < b)).sum())
        fit = scorer(evidence[i], evidence) if scorer is not None and i not in chosen and count else None
        if fit is not None and fit.score >= 0.005:
            found.append((fit.score, i, count))
    return [(i, count) for _, i, count in sorted(found, key=lambda f: -f[0])]
