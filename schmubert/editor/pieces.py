"""Pieces as the editor sees them: uploads, selections, JSON, and the edits (transpose, shift, copy, clear).

A piece is a token grid ``(L, K)`` (int64) for the model's tracks (columns), as everywhere in the toolkit. On the
wire a piece is ``{"tokens": {column: [L ints]}, "notes": {instrument: [[start, end, pitch], ...]}, "steps": L}``;
the notes are what the page draws, per instrument (a polyphonic instrument's voices together; drums: one-step
notes at their class's representative pitch). A velocity model's piece adds ``"velocity": {column: [L bins]}``
(the bin of each onset, :func:`schmubert.tokens.velocity_to_bin`; 0 elsewhere) and each note its MIDI velocity
as a fourth number; a grid with bars of other meters (PAD, :mod:`schmubert.meter`) adds ``"layout": {"lengths":
[real steps of each 16-step slot], "continues": [whether a slot continues the bar before]}``. The trio and the
melody have one column per instrument, so their pieces are as they always were. A selection is a list of regions
``{"track": name, "start": step, "end": step}`` (end exclusive) where ``track`` is an instrument (all its voices)
or a column; a bar range is a region on a 16-step boundary.

Uploads are parsed in memory (never written to disk); every way a file can be unusable is a :class:`PieceError`
whose message names the file and the reason, and every way it is usable but not as the user may expect (a
missing role, a 3/4 file, dropped notes, more bars than the window) is a warning.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pretty_midi
import torch

from schmubert import conditioning, meter, polyphony, sample, song
from schmubert.checkpoints import LoadedModel
from schmubert.tokens import (
    MAX_PITCH,
    MIN_PITCH,
    NOTE_OFF,
    STEPS_PER_BAR,
    VELOCITY_BINS,
    Track,
    bin_to_velocity,
    decode_melodic,
    encode_melodic,
    instruments,
    is_legacy,
    is_onset,
    midi_length_steps,
    pad_mask,
    role_instruments,
    tokens_to_notes,
)

#: Longest upload, in bars (a guard against a small file that claims an enormous length).
MAX_BARS = 4096
#: What each lane needs of a file, in words (:data:`schmubert.song.ROLE_SCORERS` chooses it).
ROLE_RULES = {"melody": "a pitched line, mostly one note at a time", "bass": "a low pitched line",
              "drums": "a drum-channel instrument"}


class PieceError(ValueError):
    """A file or request the editor cannot use; the message is shown to the user as it is."""


@dataclass
class Region:
    """Steps ``start .. end`` (exclusive) of track index ``k``."""

    k: int
    start: int
    end: int

    @property
    def bar_aligned(self) -> bool:
        return self.start % STEPS_PER_BAR == 0 and self.end % STEPS_PER_BAR == 0


@dataclass
class Upload:
    tokens: np.ndarray  # (L, K) the model's window of the file
    name: str
    warnings: list[str] = field(default_factory=list)
    bars_in_file: int = 0
    qpm: float = 120.0
    meter_warning: str | None = None  # one of ``warnings``: a file not in 4/4 (its song view may read it so)
    velocity: np.ndarray | None = None  # (L, K) velocity bins of a voice set's file (a velocity model's input)


# --- uploads ----------------------------------------------------------------------------------------------------


def parse_midi(data: bytes, name: str) -> pretty_midi.PrettyMIDI:
    """MIDI bytes -> PrettyMIDI, in memory; :class:`PieceError` naming the file if it is not readable MIDI."""
    if not data:
        raise PieceError(f"{name}: the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pretty_midi warns about meta events on non-zero tracks
            return pretty_midi.PrettyMIDI(io.BytesIO(data))
    except Exception as err:  # mido raises OSError, EOFError, ValueError, KeyError, ... for broken files
        reason = str(err) or type(err).__name__
        if isinstance(err, EOFError):
            reason = "the file ends early (truncated)"
        raise PieceError(f"{name}: not a readable MIDI file ({reason})") from None


def read_upload(data: bytes, name: str, model: LoadedModel, start_bar: int = 0) -> Upload:
    """An uploaded MIDI file -> the model's window of it from ``start_bar``, tracks by instrument role exactly
    as ``python -m schmubert.sample --input`` reads them (:func:`schmubert.sample.read_piece`)."""
    pm = parse_midi(data, name)
    steps = midi_length_steps(pm)
    if steps == 0:
        raise PieceError(f"{name}: the file has no notes")
    bars = steps // STEPS_PER_BAR
    if bars > MAX_BARS:
        raise PieceError(f"{name}: {bars} bars is longer than the editor reads (at most {MAX_BARS})")
    names = song.roles(model.tracks)  # the model's instruments (the trio's: its tracks)
    choices = song.midi_roles(pm, model.tracks)
    if all(c.index is None for c in choices.values()):
        wanted = ", ".join(f"{n} ({ROLE_RULES.get(n, 'an instrument of its family or named like it')})"
                           for n in names)
        raise PieceError(f"{name}: no instrument the model can use; it needs {wanted}")
    window_bars = model.steps // STEPS_PER_BAR
    if not 0 <= start_bar < bars:
        raise PieceError(f"{name}: start bar {start_bar} is outside the file (bars 0-{bars - 1})")
    velocity = None
    try:
        if is_legacy(model.tracks):
            piece = sample.read_piece(pm, model, choices)
        else:  # a voice set: as preprocessing reads it (its parts, voices and velocity bins; slots for meter)
            grid = (meter.midi_to_grid(data, model.tracks) if sample.reads_meter(model)
                    else polyphony.midi_to_grid(data, model.tracks))
            piece, velocity = grid.tokens, grid.velocity
        tokens = sample.crop(piece, start_bar, window_bars, name)
        if velocity is not None:
            velocity = sample.crop(velocity, start_bar, window_bars, name)
    except ValueError as err:
        raise PieceError(str(err)) from None
    warned = upload_warnings(pm, choices, names, bars, start_bar, window_bars, name)
    return Upload(tokens, name, warned, bars,
                  float(pm.get_tempo_changes()[1][0]) if len(pm.get_tempo_changes()[1]) else 120.0,
                  meter_warning(pm, name), velocity)


def meter_warning(pm: pretty_midi.PrettyMIDI, name: str) -> str | None:
    """The warning for a file whose time signatures are not 4/4 (its lanes' bars are 4/4 from its start)."""
    odd = sorted({f"{ts.numerator}/{ts.denominator}" for ts in pm.time_signature_changes
                  if (ts.numerator, ts.denominator) != (4, 4)})
    if not odd:
        return None
    return (f"{name}: in {', '.join(odd)} time; the editor's bars are 4/4 (16 sixteenths), so its bar lines do "
            "not match the file's")


def upload_warnings(pm: pretty_midi.PrettyMIDI, choices: Mapping[str, song.Choice], names: Sequence[str],
                    bars: int, start_bar: int, window_bars: int, name: str) -> list[str]:
    """What the user should know about a file that loaded: each a sentence naming the file. The instrument of
    each lane is chosen by its notes (:func:`schmubert.song.midi_roles`), as for a song."""
    out = []
    for role in names:
        if choices[role].index is None:
            out.append(f"{name}: no {role} instrument ({choices[role].reason}); the {role} lane starts empty")
    roles = role_instruments(pm)
    other = [k for k in roles if roles[k] and k not in names]
    if other:
        out.append(f"{name}: the model has no {' or '.join(other)} track; those instruments are left out")
    if (meter := meter_warning(pm, name)) is not None:
        out.append(meter)
    melodic = [pm.instruments[c.index] for role, c in choices.items() if role != "drums" and c.index is not None]
    outside = sum(1 for inst in melodic for n in inst.notes if not MIN_PITCH <= n.pitch <= MAX_PITCH)
    if outside:
        out.append(f"{name}: {outside} notes outside MIDI pitch {MIN_PITCH}-{MAX_PITCH} were dropped")
    if bars > window_bars or start_bar:
        end = min(start_bar + window_bars, bars)
        out.append(f"{name}: {bars} bars; the editor shows bars {start_bar}-{end} (choose another start bar to "
                   "see the rest)")
    return out


# --- JSON -------------------------------------------------------------------------------------------------------


def piece_json(tokens: np.ndarray, tracks: Sequence[Track], velocity: np.ndarray | None = None) -> dict[str, Any]:
    """A grid ``(L, K)`` as the API's piece object: tokens per column and the notes they decode to per instrument
    (a polyphonic instrument's voices together, in onset order); with ``velocity`` ``(L, K)`` (a velocity model's
    bins) the bins per column and each note's MIDI velocity; for a grid with PAD its slot layout."""
    tokens = np.asarray(tokens, dtype=np.int64)
    tracks = list(tracks)
    columns = tokens_to_notes(tokens, tracks)
    if velocity is not None:
        velocity = onset_velocity(tokens, velocity, tracks)
    notes = {}
    for name, ks in instruments(tracks):
        parts = []
        for k in ks:
            n = columns[k]
            if velocity is not None:
                n = np.concatenate([n, bin_to_velocity(velocity[n[:, 0], k])[:, None]], axis=1)
            parts.append(n)
        joined = np.concatenate(parts) if parts else np.zeros((0, 3), dtype=np.int64)
        if len(ks) > 1:
            joined = joined[np.lexsort((-joined[:, 2], joined[:, 0]))]
        notes[name] = joined.tolist()
    out: dict[str, Any] = {"steps": int(tokens.shape[0]),
                           "tokens": {t.name: tokens[:, k].tolist() for k, t in enumerate(tracks)},
                           "notes": notes}
    if velocity is not None:
        out["velocity"] = {t.name: velocity[:, k].tolist() for k, t in enumerate(tracks)}
    if pad_mask(tokens, tracks).any():
        layout = meter.layout_of(tokens, tracks)
        out["layout"] = {"lengths": layout.lengths.tolist(), "continues": layout.continues.tolist()}
    return out


def onset_velocity(tokens: np.ndarray, velocity: np.ndarray, tracks: Sequence[Track]) -> np.ndarray:
    """``velocity`` ``(L, K)`` kept at the onsets of ``tokens`` only (where a bin belongs), 0 elsewhere."""
    onset = np.stack([is_onset(np.asarray(tokens)[:, k], t) for k, t in enumerate(tracks)], axis=1)
    return np.where(onset, np.asarray(velocity, dtype=np.int64), 0)


def velocity_from_json(obj: Any, tracks: Sequence[Track], steps: int, field: str = "velocity"
                       ) -> np.ndarray | None:
    """The API's ``velocity`` object ``{column: [L bins]}`` -> ``(L, K)`` bins (0..8), checked; None when absent
    (a column left out has no bins: 0)."""
    if obj is None:
        return None
    if not isinstance(obj, Mapping):
        raise PieceError(f"{field} must be an object {{track name: [one velocity bin per step]}}")
    names = [t.name for t in tracks]
    bad = [n for n in obj if n not in names]
    if bad:
        raise PieceError(f"{field}: no column {bad[0]!r} (the model's columns are {', '.join(names)})")
    out = np.zeros((steps, len(tracks)), dtype=np.int64)
    for k, t in enumerate(tracks):
        col = obj.get(t.name)
        if col is None:
            continue
        if not isinstance(col, list) or len(col) != steps:
            raise PieceError(f"{field}.{t.name} must be a list of {steps} integers")
        try:
            arr = np.asarray(col, dtype=np.int64)
        except (TypeError, ValueError, OverflowError):
            raise PieceError(f"{field}.{t.name} must hold integers only") from None
        if arr.ndim != 1 or (len(arr) and (arr.min() < 0 or arr.max() > VELOCITY_BINS)):
            raise PieceError(f"{field}.{t.name}: bins must lie in 0..{VELOCITY_BINS} (0 = no onset)")
        out[:, k] = arr
    return out


def tokens_from_json(obj: Any, tracks: Sequence[Track], steps: int, pad: bool = False) -> np.ndarray:
    """The API's ``tokens`` object ``{track: [L ints]}`` -> grid ``(L, K)``, checked (mask ids allowed; PAD ids
    where ``pad``, a model built with meter, and only as a layout of bars: :func:`schmubert.meter.layout_of`)."""
    if not isinstance(obj, Mapping):
        raise PieceError("tokens must be an object {track name: [one integer per step]}")
    columns = []
    for t in tracks:
        col = obj.get(t.name)
        if not isinstance(col, list) or len(col) != steps:
            raise PieceError(f"tokens.{t.name} must be a list of {steps} integers")
        try:
            arr = np.asarray(col, dtype=np.int64)
        except (TypeError, ValueError, OverflowError):
            raise PieceError(f"tokens.{t.name} must hold integers only") from None
        top = t.mask_id + meter.PAD_KINDS if pad else t.mask_id
        if arr.ndim != 1 or arr.min() < 0 or arr.max() > top:
            what = f"; {t.pad_id}..{top}: PAD" if pad else ""
            raise PieceError(f"tokens.{t.name}: values must lie in 0..{top} ({t.mask_id} = mask{what})")
        columns.append(arr)
    out = np.stack(columns, axis=1)
    if pad and pad_mask(out, list(tracks)).any():
        try:
            meter.layout_of(out, list(tracks))
        except meter.MeterError as err:
            raise PieceError(f"tokens: PAD is not a layout of bars ({err})") from None
    return out


def regions_from_json(obj: Any, tracks: Sequence[Track], steps: int) -> list[Region]:
    """The API's selection ``[{"track", "start", "end"}]`` (steps, end exclusive) -> regions, checked. ``track``
    is an instrument (a polyphonic one: one region per voice) or a column (``piano.2``)."""
    if not isinstance(obj, list):
        raise PieceError("regions must be a list of {track, start, end}")
    columns = {name: ks for name, ks in instruments(tracks)}
    for k, t in enumerate(tracks):
        columns.setdefault(t.name, [k])
    out = []
    for r in obj:
        if not isinstance(r, Mapping) or r.get("track") not in columns:
            raise PieceError(f"each region needs a track, one of {', '.join(n for n, _ in instruments(tracks))}")
        start, end = r.get("start"), r.get("end")
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= steps):
            raise PieceError(f"region {start}:{end} of {r['track']} is outside the piece (steps 0:{steps})")
        out += [Region(k, start, end) for k in columns[r["track"]]]
    return out


# --- masks ------------------------------------------------------------------------------------------------------


def known_mask(shape: Sequence[int], regions: Sequence[Region]) -> torch.Tensor:
    """``BoolTensor[B, L, K]``: everything known except the regions. Bar ranges are
    :func:`schmubert.conditioning.infill` masks; a region finer than a bar (a single note) is note-level
    conditioning, the same mask at step resolution."""
    known = torch.ones(tuple(shape), dtype=torch.bool)
    for r in regions:
        if r.bar_aligned:
            known &= conditioning.infill(shape, [(r.start // STEPS_PER_BAR, r.end // STEPS_PER_BAR)], [r.k])
        else:
            known[:, r.start:r.end, r.k] = False
    return known


def with_pad(known: np.ndarray, tokens: np.ndarray, tracks: Sequence[Track]) -> np.ndarray:
    """``known`` ``(L, K)`` with every PAD element of ``tokens`` known (the steps of a short bar's slot past its
    end: never masked, never drawn, never counted among what a run regenerates)."""
    return np.asarray(known, dtype=bool) | pad_mask(np.asarray(tokens), list(tracks))


def masked(tokens: np.ndarray, known: np.ndarray, tracks: Sequence[Track]) -> np.ndarray:
    """The grid with each unknown element set to its track's mask id (what the sampler starts from; PAD stays)."""
    mask_ids = np.array([t.mask_id for t in tracks], dtype=np.int64)
    return np.where(with_pad(known, tokens, tracks), tokens, mask_ids[None, :])


# --- edits ------------------------------------------------------------------------------------------------------


def _notes_in(row: np.ndarray, start: int, end: int) -> np.ndarray:
    """Notes ``(N, 3)`` of a melodic row with their onset in ``start .. end``, cut at ``end``."""
    notes = decode_melodic(row)
    notes = notes[(notes[:, 0] >= start) & (notes[:, 0] < end)].copy()
    notes[:, 1] = np.minimum(notes[:, 1], end)
    return notes


def _without(notes: np.ndarray, start: int, end: int) -> np.ndarray:
    """Notes with the span ``start .. end`` silenced: notes starting there removed, notes sounding into it cut."""
    notes = notes[(notes[:, 0] < start) | (notes[:, 0] >= end)].copy()
    into = (notes[:, 0] < start) & (notes[:, 1] > start)
    notes[into, 1] = start
    return notes


def clear(tokens: np.ndarray, regions: Sequence[Region], tracks: Sequence[Track]) -> np.ndarray:
    """Silence the regions (notes starting there are removed, notes sounding into them end at their start)."""
    out = np.array(tokens, dtype=np.int64)
    L = len(out)
    for r in regions:
        if tracks[r.k].is_drum:
            out[r.start:r.end, r.k] = 0
        else:
            out[:, r.k] = encode_melodic(_without(decode_melodic(out[:, r.k]), r.start, r.end), L)
    return out


def paste(source: np.ndarray, target: np.ndarray, regions: Sequence[Region], offset: int,
          tracks: Sequence[Track]) -> np.ndarray:
    """``target`` with the regions of ``source`` written ``offset`` steps later (earlier when negative).

    What was in the target span is replaced; the parts that would fall outside the piece are dropped.
    """
    out = np.array(target, dtype=np.int64)
    L = len(out)
    for r in regions:
        start, end = max(r.start + offset, 0), min(r.end + offset, L)
        if start >= end:
            continue
        if tracks[r.k].is_drum:
            out[start:end, r.k] = source[start - offset:end - offset, r.k]
            continue
        moved = _notes_in(source[:, r.k], start - offset, end - offset)
        moved[:, :2] += offset
        kept = _without(decode_melodic(out[:, r.k]), start, end)
        out[:, r.k] = encode_melodic(np.concatenate([kept, moved]), L)
    return out


def shift(tokens: np.ndarray, regions: Sequence[Region], offset: int, tracks: Sequence[Track]) -> np.ndarray:
    """Move the content of the regions by ``offset`` steps; the regions left behind become silent."""
    return paste(tokens, clear(tokens, regions, tracks), regions, offset, tracks)


def transpose(tokens: np.ndarray, regions: Sequence[Region], semitones: int, tracks: Sequence[Track]
              ) -> np.ndarray:
    """Transpose the note-ons of melodic regions by ``semitones`` (drums are left alone).

    :class:`PieceError` if a note would leave MIDI pitch 21..108; nothing else changes.
    """
    out = np.array(tokens, dtype=np.int64)
    for r in regions:
        if tracks[r.k].is_drum:
            continue
        cells = out[r.start:r.end, r.k]
        on = (cells > NOTE_OFF) & (cells < tracks[r.k].num_classes)
        moved = cells[on] + semitones
        if len(moved) and (moved.min() <= NOTE_OFF or moved.max() >= tracks[r.k].num_classes):
            raise PieceError(f"transposing by {semitones:+d} moves a {tracks[r.k].name} note outside MIDI pitch "
                             f"{MIN_PITCH}-{MAX_PITCH}")
        cells[on] = moved
    return out


def edit(op: str, tokens: np.ndarray, regions: Sequence[Region], amount: int, tracks: Sequence[Track],
         velocity: np.ndarray | None = None, source: np.ndarray | None = None,
         source_velocity: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """One edit of the API (``transpose``, ``shift``, ``clear``, ``paste`` from ``source``) on the grid and, where
    given, its velocity bins (they move with their notes: a pasted or shifted note keeps its bin). A grid with
    PAD keeps its bar layout: PAD stays where it was (a note moved onto it is dropped)."""
    tokens = np.asarray(tokens, dtype=np.int64)
    if op == "transpose":
        out = transpose(tokens, regions, amount, tracks)
    elif op == "shift":
        out = shift(tokens, regions, amount, tracks)
    elif op == "clear":
        out = clear(tokens, regions, tracks)
    elif op == "paste":
        if source is None:
            raise PieceError("paste needs the source grid")
        out = paste(source, tokens, regions, amount, tracks)
    else:
        raise PieceError(f"unknown edit {op!r}")
    pad = pad_mask(tokens, list(tracks))
    out = np.where(pad, tokens, out)
    if velocity is None:
        return out, None
    moved = np.array(velocity, dtype=np.int64)
    if op in ("shift", "paste"):
        src = velocity if op == "shift" else (source_velocity if source_velocity is not None
                                              else np.zeros_like(moved))
        L = len(moved)
        for r in regions:
            start, end = max(r.start + amount, 0), min(r.end + amount, L)
            if start < end:
                moved[start:end, r.k] = np.asarray(src)[start - amount:end - amount, r.k]
    return out, onset_velocity(out, moved, tracks)


# --- songs: the whole uploaded file, edited in place -------------------------------------------------------------


@dataclass
class SongView:
    """The uploaded song behind a panel: what the lanes show of it and how edits are spliced back.

    The lanes are the model's window of the song from bar ``window[0]``, read as ``python -m schmubert.sample
    --input`` reads it for that model (:func:`schmubert.song.grid_encode`: a voice set's instruments in their
    voices, velocity bins, a meter model's bars in their slots with PAD); ``writable`` grid steps of them lie on
    the song's grid (a meter run that ends before the window does leaves the rest empty, never written)."""

    song: song.Song
    assignment: dict[str, int | None]
    run: song.Run
    window: tuple[int, int]  # song bars shown
    original: np.ndarray  # (L, K) the lanes as loaded
    choices: dict[str, song.Choice] = field(default_factory=dict)  # how each lane's instrument was chosen
    notes: list[str] = field(default_factory=list)  # how its bars were read, which can be edited
    velocity: np.ndarray | None = None  # (L, K) the velocity bins of the lanes as loaded
    writable: int | None = None  # grid steps on the song's grid (None: all)

    def json(self, song_id: str) -> dict[str, Any]:
        return {"id": song_id, "instruments": song.instruments(self.song), "assignment": self.assignment,
                "tracks": song.describe_tracks(self.song, self.assignment), "window": list(self.window),
                "choices": {role: {**c.json(), "text": line} for (role, c), line in
                            zip(self.choices.items(), song.describe_choices(self.song, self.choices), strict=True)},
                "notes": self.notes, "background": self.background()}

    @property
    def steps(self) -> int:
        """The grid steps that lie on the song's grid (spliced back when edited)."""
        return len(self.original) if self.writable is None else self.writable

    def background(self) -> list[list[int]]:
        """Notes ``[start, end, pitch]`` (steps of the window) of the song's other melodic instruments, drawn grey
        under the lanes."""
        lo = self.run.grid_step(self.window[0])
        out = []
        chosen = {i for i in self.assignment.values() if i is not None}
        for i, n in enumerate(self.song.notes_ticks):
            if i in chosen or self.song.score.tracks[i].is_drum or not len(n):
                continue
            steps = song.tick_to_step(self.song, self.run, n[:, :2]) - lo
            keep = (steps[:, 1] > 0) & (steps[:, 0] < self.steps)
            out += np.concatenate([steps[keep], n[keep, 2:3]], axis=1).tolist()
        return out

    def edited(self, tokens: np.ndarray, velocity: np.ndarray | None = None) -> np.ndarray:
        """``(L, K)`` bool: the bars of each track whose tokens (or, given, velocity bins) differ from the loaded
        ones (what is spliced); nothing past :attr:`steps`."""
        tokens = np.asarray(tokens)
        bars = len(tokens) // STEPS_PER_BAR
        differ = tokens != self.original
        if velocity is not None and self.velocity is not None:
            differ |= np.asarray(velocity) != self.velocity
        differ = differ.reshape(bars, STEPS_PER_BAR, -1).any(axis=1)
        out = np.repeat(differ, STEPS_PER_BAR, axis=0)
        out[self.steps:] = False
        return out

    def export(self, tokens: np.ndarray, tracks: Sequence[Track], velocity: np.ndarray | None = None) -> bytes:
        """The whole song with the edited bars of each track spliced in (:func:`schmubert.song.splice`, the sample
        CLI's splice), as MIDI bytes; ``velocity``: a velocity model's bins, which the new notes take."""
        n = self.steps
        if velocity is not None:
            velocity = onset_velocity(tokens, velocity, tracks)
        score = song.splice(self.song, self.assignment, tracks, self.run, self.window[0], np.asarray(tokens)[:n],
                            self.edited(tokens, velocity)[:n], None if velocity is None else velocity[:n])
        return song.song_bytes(score)

    def unchanged(self, x: np.ndarray, take: np.ndarray, known: np.ndarray, tracks: Sequence[Track],
                  copy_prior: bool) -> song.Unchanged | None:
        """Why a take over the lanes came back as they were where it was drawn (:func:`song.unchanged_take`)."""
        return song.unchanged_take(x, take, ~known, tracks, copy_prior, self.song, self.assignment, self.run,
                                   self.window[0])


def read_song_view(data: bytes, name: str, model: LoadedModel, start_bar: int,
                   choices: Mapping[str, str | None], time_signature: str | None = None) -> SongView:
    """The song behind an upload, its lanes from ``start_bar`` (the model's window; a bar that cannot be edited,
    such as a pickup bar 0, moves it to the next one that can), read as the sample CLI reads ``--input`` for this
    model (:func:`schmubert.sample.song_scenario`): its bars (in their meters for a model built with meter,
    :func:`schmubert.sample.reads_meter`), the instruments chosen by their notes unless ``choices`` (by role, an
    index, a name or ``none``) names them, its bars read in ``time_signature`` if given, the notes of each role
    with their velocity bins (:func:`schmubert.song.grid_encode`). :class:`PieceError` when the song cannot be
    edited in place (the reason is the message)."""
    metered = sample.reads_meter(model)
    L = model.steps
    try:
        s = song.read_song(data, name, time_signature, metered=metered)
        chosen = song.choose_roles(s, model.tracks, choices)
        assignment = {role: c.index for role, c in chosen.items()}
        run = s.run_of(start_bar) or next((r for r in s.runs if r.first > start_bar), None)
        if run is None:
            what = "a bar the slot grid holds" if metered else "a 4/4 bar"
            raise ValueError(f"{name}: bar {start_bar} is not {what} (such bars: "
                             f"{', '.join(f'{r.first}:{r.end}' for r in s.runs)})")
        start = max(start_bar, run.first)
        if run.metered:  # as many of its bars as their slots fit in the window, within the run
            hi = start
            while hi < run.end and run.grid_step(hi + 1) - run.grid_step(start) <= L:
                hi += 1
            window = (start, hi)
        else:
            window = (start, start + L // STEPS_PER_BAR)
        original, velocity = song.grid_encode(s, assignment, model.tracks, run, window)
    except ValueError as err:
        raise PieceError(str(err)) from None
    writable = len(original)
    if writable < L:  # the rest of the window: empty 4/4 slots that stand for no bar of the song
        original = np.concatenate([original, np.zeros((L - writable, original.shape[1]), dtype=np.int64)])
        velocity = np.concatenate([velocity, np.zeros((L - writable, velocity.shape[1]), dtype=np.int64)])
    notes = [n for n in (s.meter_note, song.editable_note(s), song.meter_note(s, window)) if n]
    if start != start_bar:
        notes.append(f"{name}: bar {start_bar} cannot be edited; the lanes start at bar {start}")
    if writable < L:
        notes.append(f"{name}: the lanes hold bars {window[0]}:{window[1]} of the song; the slots after them "
                     "stand for no bar of it and are never written back")
    return SongView(s, assignment, run, window, original, chosen, notes,
                    velocity if sample.predicts_velocity(model) else None, writable if writable < L else None)
