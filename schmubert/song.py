"""A user's song: read it, choose the instruments the model sees, place the model's grid on the song's own
beats, pick the window around an edit, and splice the generated notes back into the song.

The model works on a 16th grid of 16-step (4/4 or 2/2) bars. A song's bars come from its time signatures (4/4
where it has none); a run of consecutive 16-step bars is one grid, whose step ``s`` lies at tick
``run.start_tick + s * resolution / 4``: the song's beats, whatever its tempo map says in seconds. Bars that are
not 16 steps long (3/4, 6/8, 12/8, a pickup bar) cannot be edited; a song that has none that can gets a clear
error, a song with some gets a note saying which bars can be edited.

The splice rules (what :func:`splice` does on each regenerated track, inside each regenerated span of steps):

* **replaced**: every note of the chosen instrument that starts inside the span is removed; the generated notes
  that start inside it are added. Nothing else of the song changes: other instruments, the tempo map, time and
  key signatures, programs, control changes, pitch bends, lyrics and every note that starts outside the span.
* **border**: a note that starts before the span and sounds into it is kept, cut at the span's start (its pitch,
  start and velocity stay); a generated note ends at the span's end at the latest, so the notes after the span
  are never overlapped. Nothing starts or sounds past the song's end; the file's length is kept.
* **velocity**: a generated note gets the median velocity of the instrument's notes in the 4 bars before and the
  4 bars after the span (drums: of the same drum class there, else of the whole kit there), else the median of
  the whole instrument, else 80.
* **grid**: a song whose onsets mostly sit the same few ticks after the 16th grid (an export offset) has its grid
  moved by that offset, and so have the spans.
* **drums**: a generated hit sounds at the pitch the song's drum instrument uses most for that class (else the
  class's representative pitch) and lasts the kit's median note length (at most to the span's end).
* **no instrument**: a role the song lacks (or that the user set to ``none``) that is regenerated becomes a new
  instrument named ``"<role> (SCHmUBERT)"`` with the model's program.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pretty_midi
import symusic

from schmubert.files import write_atomic
from schmubert.tokens import (
    DECODE_VELOCITY,
    DRUM_CLASS_PITCHES,
    DRUM_PITCH_TO_CLASS,
    STEPS_PER_BAR,
    STEPS_PER_QUARTER,
    Track,
    encode_track,
    role_of,
    tokens_to_notes,
)

#: Bars on each side of a span whose notes set the velocity of the generated ones.
VELOCITY_BARS = 4
#: A song where more than OFF_GRID_SHARE of the onsets lie more than OFF_GRID (in 16ths) from the grid is a
#: performance without a usable tempo map (random onsets: 75% that far; swung eighths: about 50%).
OFF_GRID = 0.125
OFF_GRID_SHARE = 0.6
ROLE_OPTIONS = {"melody": "--melody-track", "bass": "--bass-track", "drums": "--drum-track"}


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
    """Song bars ``first .. first + bars`` (exclusive), consecutive 16-step bars: one grid."""

    first: int
    bars: int
    start_tick: int

    @property
    def end(self) -> int:
        return self.first + self.bars


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

    @property
    def resolution(self) -> int:
        return int(self.score.ticks_per_quarter)

    @property
    def ticks_per_step(self) -> float:
        return self.resolution / STEPS_PER_QUARTER

    def run_of(self, bar: int) -> Run | None:
        return next((r for r in self.runs if r.first <= bar < r.end), None)


# --- reading ---------------------------------------------------------------------------------------------------


def _bars(score: symusic.Score, end_tick: int) -> list[Bar]:
    """The song's bars from its time signatures (4/4 before the first one); the last bar is whole."""
    changes = [(0, 4, 4)] + [(int(ts.time), int(ts.numerator), int(ts.denominator))
                             for ts in sorted(score.time_signatures, key=lambda ts: ts.time)]
    changes = sorted({c[0]: c for c in changes}.values())  # a later event at the same tick wins
    bars: list[Bar] = []
    for i, (tick, num, den) in enumerate(changes):
        length = max(1, round(score.ticks_per_quarter * 4 * num / den))
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


def read_song(midi: str | Path | bytes, name: str | None = None) -> Song:
    """A MIDI file (path or bytes) -> :class:`Song`; ``ValueError`` naming the file when it is unreadable, has
    no notes, or has no bar the 16th grid can hold (3/4, 6/8, 12/8 ...)."""
    name = name or (Path(midi).name if not isinstance(midi, bytes) else "song.mid")
    try:
        score = symusic.Score.from_midi(midi) if isinstance(midi, bytes) else symusic.Score(str(midi))
    except Exception as err:  # symusic raises RuntimeError/ValueError for broken files
        where = name if isinstance(midi, bytes) else str(midi)
        raise ValueError(f"{where}: unreadable MIDI ({type(err).__name__}: {err})") from err
    if not any(len(t.notes) for t in score.tracks):
        raise ValueError(f"{name}: no notes")
    end_tick = int(score.end())
    bars = _bars(score, end_tick)
    runs = _runs(bars, score.ticks_per_quarter)
    if not runs:
        meters = sorted({b.meter for b in bars})
        raise ValueError(f"{name}: in {', '.join(meters)} time; the model's grid holds only bars of 16 sixteenths "
                         "(4/4 or 2/2), so no bar of this song can be edited")
    notes = []
    for track in score.tracks:
        n = track.notes.numpy()
        start = n["time"].astype(np.int64)
        notes.append(np.stack([start, start + n["duration"], n["pitch"], n["velocity"]], axis=1).astype(np.int64))
    phase = grid_phase(np.concatenate([n[:, 0] for n in notes]), score.ticks_per_quarter / STEPS_PER_QUARTER)
    runs = [Run(r.first, r.bars, r.start_tick + phase) for r in runs]
    return Song(score, name, bars, runs, end_tick, notes)


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
    """A sentence saying which bars can be edited, when not all can (several time signatures); else None."""
    if len(song.runs) == 1 and song.runs[0].bars == len(song.bars):
        return None
    meters = sorted({b.meter for b in song.bars if song.run_of(song.bars.index(b)) is None})
    ranges = ", ".join(f"{r.first}:{r.end}" for r in song.runs)
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
    option, tracks, name = ROLE_OPTIONS.get(role, role), song.score.tracks, song.name
    if text.strip().lstrip("#").isdigit():
        index = int(text.strip().lstrip("#"))
        if not 0 <= index < len(tracks):
            raise ValueError(f"{option} {text}: {name} has instruments #0-#{len(tracks) - 1}")
        return index
    hits = [i for i, t in enumerate(tracks) if t.name.strip().lower() == text.strip().lower()]
    if len(hits) != 1:
        listing = "; ".join(i["label"] for i in instruments(song))
        why = "no instrument is named" if not hits else f"{len(hits)} instruments are named"
        raise ValueError(f"{option} {text}: {why} {text!r} in {name}; give its index instead ({listing})")
    return hits[0]


def choose_tracks(song: Song, tracks: Sequence[Track], choices: Mapping[str, str | None] | None = None
                  ) -> dict[str, int | None]:
    """The instrument index the model sees as each of its tracks (``None``: the song has none).

    ``choices`` by role: an index (``"3"``), an instrument name, ``"none"``, or ``None`` for the default rule
    (the first instrument of the role: melody GM 0-31, bass 32-39, drums the drum channel).
    """
    choices = choices or {}
    found = [(i, role_of(int(t.program), bool(t.is_drum))) for i, t in enumerate(song.score.tracks) if len(t.notes)]
    out: dict[str, int | None] = {}
    for track in tracks:
        text = choices.get(track.name)
        if text is None:
            out[track.name] = next((i for i, role in found if role == track.name), None)
            continue
        if text.strip().lower() == "none":
            out[track.name] = None
            continue
        index = _find(song, text, track.name)
        if bool(song.score.tracks[index].is_drum) != track.is_drum:
            want = "a drum-channel instrument" if track.is_drum else "an instrument off the drum channel"
            raise ValueError(f"{ROLE_OPTIONS[track.name]} {text}: the {track.name} track needs {want}; "
                             f"{instrument_label(song, index)} is not")
        out[track.name] = index
    used = [i for i in out.values() if i is not None]
    if len(used) != len(set(used)):
        raise ValueError(f"{song.name}: one instrument was chosen for two tracks ({describe_tracks(song, out)})")
    return out


def describe_tracks(song: Song, assignment: Mapping[str, int | None]) -> str:
    """``melody = #3 'Chant' (GM 22 Harmonica, 394 notes); bass = ...; drums = none``."""
    return "; ".join(f"{role} = {'none' if i is None else instrument_label(song, i)}"
                     for role, i in assignment.items())


# --- the grid --------------------------------------------------------------------------------------------------


def tick_to_step(song: Song, run: Run, ticks: np.ndarray) -> np.ndarray:
    """Ticks -> nearest grid step of ``run`` (its bar ``run.first`` starts at step 0)."""
    return np.rint((np.asarray(ticks, dtype=np.float64) - run.start_tick) / song.ticks_per_step).astype(np.int64)


def step_to_tick(song: Song, run: Run, steps: np.ndarray) -> np.ndarray:
    return np.rint(run.start_tick + np.asarray(steps, dtype=np.float64) * song.ticks_per_step).astype(np.int64)


def grid_tokens(song: Song, assignment: Mapping[str, int | None], tracks: Sequence[Track], run: Run,
                bars: tuple[int, int]) -> np.ndarray:
    """Tokens ``(N, K)`` of song bars ``bars`` (inside ``run``) for the model's tracks, on the song's beats."""
    lo, hi = bars
    steps = (hi - lo) * STEPS_PER_BAR
    columns = []
    for track in tracks:
        index = assignment.get(track.name)
        if index is None:
            columns.append(np.zeros(steps, dtype=np.int64))
            continue
        n = song.notes_ticks[index]
        n = n[n[:, 3] > 0]
        notes = np.stack([tick_to_step(song, run, n[:, 0]), tick_to_step(song, run, n[:, 1]), n[:, 2]], axis=1)
        notes[:, :2] -= (lo - run.first) * STEPS_PER_BAR
        columns.append(encode_track(notes, track, steps))
    return np.stack(columns, axis=1)


def check_on_grid(song: Song, assignment: Mapping[str, int | None], run: Run, bars: tuple[int, int]) -> None:
    """``ValueError`` when the chosen instruments' onsets in ``bars`` mostly miss the 16th grid of the beats (a
    performance recorded without a tempo map: the grid cannot hold it)."""
    lo, hi = song.bars[bars[0]].start, song.bars[bars[1] - 1].end
    onsets = [n[(n[:, 0] >= lo) & (n[:, 0] < hi), 0] for i in assignment.values() if i is not None
              for n in [song.notes_ticks[i]]]
    onsets = np.concatenate(onsets) if onsets else np.zeros(0)
    if len(onsets) < 16:
        return
    pos = (onsets - run.start_tick) / song.ticks_per_step
    off = np.mean(np.abs(pos - np.rint(pos)) > OFF_GRID)
    if off > OFF_GRID_SHARE:
        raise ValueError(f"{song.name}: {off:.0%} of the notes in bars {bars[0]}:{bars[1]} lie off the 16th grid of "
                         "its beats (a performance recorded without a tempo map?); the model's grid cannot hold it")


def place_window(run: Run, edit: tuple[int, int], window_bars: int, start_bar: int | None = None,
                 bars: int | None = None) -> tuple[int, int]:
    """Song bars ``(lo, hi)`` the model runs on: the edit with context on both sides where the run has it.

    ``start_bar``/``bars`` place it explicitly. An edit longer than the window gets a quarter window of context
    each side (the sampler slides its window over it).
    """
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


def edit_run(song: Song, edit: tuple[int, int]) -> Run:
    """The run holding song bars ``edit``; ``ValueError`` saying why when they are outside the song or 4/4."""
    e0, e1 = edit
    if not 0 <= e0 < e1 <= len(song.bars):
        raise ValueError(f"bar range {e0}:{e1} is outside the piece: {song.name} has bars 0:{len(song.bars)} (end "
                         "exclusive)")
    run = song.run_of(e0)
    if run is None or e1 > run.end:
        odd = sorted({b.meter for b in song.bars[e0:e1] if b.end - b.start != song.resolution * 4})
        ranges = ", ".join(f"{r.first}:{r.end}" for r in song.runs)
        raise ValueError(f"bars {e0}:{e1} of {song.name} are not all 4/4 bars ({', '.join(odd) or 'a meter change'}"
                         f" inside); only bars {ranges} can be edited")
    return run


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
                 track: Track, limit: int | None = None) -> np.ndarray:
    """One instrument's notes ``(N, 4)`` ticks (start, end, pitch, velocity) with the grid row ``row`` ``(N,)``
    written where ``write`` ``(N,)`` is True, by the module's splice rules."""
    offset = (lo_bar - run.first) * STEPS_PER_BAR
    bar_ticks = song.resolution * 4
    kept = song_notes.copy()
    new = []
    generated = tokens_to_notes(row[:, None], [track])[0]  # (M, 3) steps of the window
    pitch_of = _drum_pitches(song_notes) if track.is_drum else {}
    drum_len = _median(song_notes[:, 1] - song_notes[:, 0], int(song.ticks_per_step)) if track.is_drum else 0
    for s0, s1 in _spans(write):
        a, b = (int(t) for t in step_to_tick(song, run, np.array([s0 + offset, s1 + offset])))
        b = min(b, song.end_tick if limit is None else limit)
        if a >= b:
            continue
        kept = kept[(kept[:, 0] < a) | (kept[:, 0] >= b)]
        kept[(kept[:, 0] < a) & (kept[:, 1] > a), 1] = a  # border: notes sounding into the span end at it
        for start, end, pitch in generated[(generated[:, 0] >= s0) & (generated[:, 0] < s1)].tolist():
            t0, t1 = (int(t) for t in step_to_tick(song, run, np.array([start + offset, end + offset])))
            if t0 >= b:
                continue
            cls = DRUM_PITCH_TO_CLASS.get(pitch) if track.is_drum else None
            if track.is_drum:
                pitch, t1 = pitch_of[cls], t0 + max(1, drum_len)
            velocity = generated_velocity(song_notes, a, b, bar_ticks, cls)
            new.append((t0, max(t0 + 1, min(t1, b)), pitch, velocity))
    out = np.concatenate([kept, np.array(new, dtype=np.int64).reshape(-1, 4)])
    return out[np.lexsort((out[:, 2], out[:, 0]))]


def splice(song: Song, assignment: Mapping[str, int | None], tracks: Sequence[Track], run: Run, lo_bar: int,
           tokens: np.ndarray, write: np.ndarray) -> symusic.Score:
    """The song with the grid ``tokens`` ``(N, K)`` (window from song bar ``lo_bar``) written where ``write``
    ``(N, K)`` is True, everything else as it was, tick for tick. Returns a new Score; ``song.score`` is kept.

    A run that was extended past the song's end (a continuation asking for more bars) may write up to its end;
    otherwise nothing is written past the song's end."""
    score = song.score.copy()
    limit = song.end_tick
    if run.end > len(song.bars):
        limit = max(limit, int(step_to_tick(song, run, np.array([run.bars * STEPS_PER_BAR]))[0]))
    for k, track in enumerate(tracks):
        if not write[:, k].any():
            continue
        index = assignment.get(track.name)
        if index is None:
            score.tracks.append(symusic.Track(f"{track.name} (SCHmUBERT)", track.program, track.is_drum))
            target, song_notes = score.tracks[len(score.tracks) - 1], np.zeros((0, 4), dtype=np.int64)
        else:
            target, song_notes = score.tracks[index], song.notes_ticks[index]
        notes = splice_track(song, run, lo_bar, song_notes, tokens[:, k], write[:, k], track, limit)
        target.notes = symusic.Note.from_numpy(
            time=notes[:, 0].astype(np.int32), duration=(notes[:, 1] - notes[:, 0]).astype(np.int32),
            pitch=notes[:, 2].astype(np.int8), velocity=notes[:, 3].astype(np.int8))
    if score.end() < song.end_tick:  # the span held the last notes: a marker keeps the file's length
        score.markers.append(symusic.TextMeta(song.end_tick, "end"))
    return score


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
    sampler keeps, and what is spliced back (the generated elements, plus an interpolation's borrowed end).
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

    def splice(self, tokens: np.ndarray, tracks: Sequence[Track]) -> symusic.Score:
        """The song with ``tokens`` ``(N, K)`` (a sample over the window) spliced in where ``write``."""
        return splice(self.song, self.assignment, tracks, self.run, self.window[0], tokens, self.write)

    def record(self) -> dict:
        return {"file": self.song.name, "tracks": describe_tracks(self.song, self.assignment),
                "window_bars": list(self.window), "edited_bars": list(self.edit), "notes": self.notes}


def extend_run(song: Song, run: Run, end_bar: int) -> Run:
    """``run`` reaching ``end_bar`` past the song's end (the last meter goes on), for a continuation that writes
    more bars than the song has; ``ValueError`` when the run is not the song's last bars."""
    if end_bar <= run.end:
        return run
    if run.end != len(song.bars):
        raise ValueError(f"bars {run.end}:{end_bar} of {song.name} are not 4/4 bars; only bars "
                         f"{', '.join(f'{r.first}:{r.end}' for r in song.runs)} can be edited")
    return Run(run.first, end_bar - run.first, run.start_tick)


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
    x = grid_tokens(song, assignment, tracks, run, (lo, hi))
    write = np.zeros(x.shape, dtype=bool)
    write[(e0 - lo) * STEPS_PER_BAR:(e1 - lo) * STEPS_PER_BAR] = regenerate
    notes = [n for n in [editable_note(song)] if n]
    return SongEdit(song, dict(assignment), run, (lo, hi), edit, x, ~write, write, notes)
