"""One file's bytes -> its windows (the work a worker process does), or the reason it yields none."""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field

import numpy as np

from preprocessing.config import PreprocessConfig
from preprocessing.segments import UNREADABLE_REASON, Part, Segment, SkipFile, read_score, split_segments
from preprocessing.windows import encode_window, melody_spans, trio_spans, window_starts
from schmubert.meter import Layout, MeterError, expand, score_bars
from schmubert.polyphony import encode_parts, read_parts
from schmubert.tokens import STEPS_PER_BAR, get_tracks, instruments, is_legacy, pad_mask

ROLES = ("melody", "bass", "drums")


@dataclass
class FileResult:
    """What one file gave. ``windows`` ``(n, steps, K)`` uint16; ``rows`` one ``(segment, start_bar,
    instrument indices...)`` per window; ``keys`` a 16-byte digest per window (duplicate detection)."""

    name: str
    sha256: str
    windows: np.ndarray
    rows: list[tuple[int, ...]] = field(default_factory=list)
    keys: list[bytes] = field(default_factory=list)
    reason: str | None = None  # why the file yields nothing (None when it yields windows)
    detail: str = ""
    voices: dict[str, list[int]] = field(default_factory=dict)  # instrument -> [notes, overflow] (voice sets)
    meters: dict[str, int] = field(default_factory=dict)  # voice sets with --meter: bars per meter of the file
    ignored: list[str] = field(default_factory=list)  # why some of its time signatures were ignored


def _role(part: Part, cfg: PreprocessConfig) -> str | None:
    if part.is_drum:
        return "drums"
    if part.program in cfg.melody_set:
        return "melody"
    if part.program in cfg.bass_set:
        return "bass"
    return None


def _combinations(segment: Segment, roles: tuple[str, ...], cfg: PreprocessConfig) -> list[tuple[Part, ...]]:
    by_role: dict[str, list[Part]] = {r: [] for r in ROLES}
    for part in segment.parts:
        role = _role(part, cfg)
        if role is not None:
            by_role[role].append(part)
    return list(itertools.product(*(by_role[r] for r in roles)))


def _check_roles(segments: list[Segment], roles: tuple[str, ...], cfg: PreprocessConfig) -> None:
    present = {_role(p, cfg) for s in segments for p in s.parts}
    for role in roles:
        if role not in present:
            raise SkipFile(f"no {role} instrument")


def _spans(combo: tuple[Part, ...], segment: Segment, cfg: PreprocessConfig) -> list[tuple[int, int]]:
    if cfg.tracks == "melody":
        return melody_spans(combo[0].notes, cfg.gap_bars, segment.bars)
    return trio_spans([p.notes for p in combo], segment.bars, cfg.activity_bars)


def extract(data: bytes, cfg: PreprocessConfig,
            name: str = "<bytes>") -> tuple[list[np.ndarray], list[tuple]]:
    """The windows of one MIDI file: token grids ``(steps, K)`` and ``(segment, start_bar, instruments...)``.

    Raises :class:`SkipFile` with the reason when the file yields none.
    """
    tracks = get_tracks(cfg.tracks)
    if not is_legacy(tracks):
        windows, rows, _ = extract_instruments(data, cfg, name)
        return windows, rows
    roles = tuple(t.name for t in tracks)
    trailing = cfg.activity_bars if cfg.tracks == "trio" else 0
    segments, other_meter = split_segments(read_score(data, name), cfg.split_on_tempo,
                                           cfg.split_on_time_signature, trailing, cfg.max_file_bars)
    if not segments:
        raise SkipFile("no 4/4 segment", f"{other_meter} segment(s) in other meters")
    _check_roles(segments, roles, cfg)
    if max(s.bars for s in segments) < cfg.bars:
        raise SkipFile("too short", f"longest 4/4 segment has {max(s.bars for s in segments)} bars")
    windows, rows = [], []
    for segment in segments:
        for combo in _combinations(segment, roles, cfg):
            for start in window_starts(_spans(combo, segment, cfg), cfg.bars, cfg.hop_bars):
                windows.append(encode_window([p.notes for p in combo], tracks, start, cfg.bars))
                rows.append((segment.index, start, *(p.index for p in combo)))
    if not windows:
        if cfg.tracks == "melody":
            raise SkipFile("no gap-free melody", f"no {cfg.bars}-bar melody free of {cfg.gap_bars}-bar rests")
        raise SkipFile("no all-active span", f"no {cfg.bars} bars with melody, bass and drums all active")
    return windows, rows


def file_layout(data: bytes, length: int, cfg: PreprocessConfig, name: str) -> tuple[Layout, list[str]]:
    """A voice-set file's bars: by its time signatures with ``--meter`` (``schmubert.meter.signature_bars``;
    ``SkipFile`` "bar too long" for a bar longer than two slots), else 16 steps per bar from its first tick."""
    if not cfg.meter:
        return Layout.four_four(-(-length // STEPS_PER_BAR)), []
    try:
        bars, ignored = score_bars(read_score(data, name))
    except MeterError as err:
        raise SkipFile("bar too long", f"{name}: {err}") from err
    return Layout.of_bars(bars), ignored


def extract_instruments(data: bytes, cfg: PreprocessConfig, name: str = "<bytes>",
                        result: FileResult | None = None
                        ) -> tuple[list[np.ndarray], list[tuple], dict[str, list[int]]]:
    """The windows of a file in a track set with polyphonic or named instruments (``schmubert.polyphony``).

    The whole file is one grid (tempo is not read) of one 16-step slot per bar: with ``--meter`` the bars follow
    its time signatures by the rule of ``schmubert.meter`` (POP909's 1/4 signatures ignored: its songs are read
    in 4/4 as before, 7 files in 6/8 or 3/4 are not), a short bar padded with PAD; without, every bar is 16
    steps from the first tick. Windows start every ``hop_bars`` slots (never on the second slot of a long bar,
    nor ending inside one) and must hold notes of every instrument. A window is ``(steps, 2K)``: the tokens,
    then the velocity bins of the same columns (:func:`window_columns`). Also returns per instrument ``[notes,
    overflow]``; ``result`` (if given) gets the file's bars per meter and the reasons signatures were ignored.
    """
    try:
        parts, length = read_parts(data)
    except ValueError as err:
        raise SkipFile(UNREADABLE_REASON, f"{name}: {err}") from err
    if not parts:
        raise SkipFile("no notes")
    layout, ignored = file_layout(data, length, cfg, name)
    bars = layout.slots
    if bars > cfg.max_file_bars:
        raise SkipFile("too long", f"{bars} bars (--max-file-bars {cfg.max_file_bars})")
    if bars < cfg.bars:
        raise SkipFile("too short", f"{bars} bars")
    tracks = get_tracks(cfg.tracks)
    enc = encode_parts(parts, tracks, layout.real_steps)
    tokens, velocity = expand(enc.tokens, layout, tracks), expand(enc.velocity, layout)
    real = ~pad_mask(tokens, tracks)
    slots = instruments(cfg.tracks)
    missing = [n for n, _ in slots if not enc.parts[n]]
    if missing:
        raise SkipFile(f"no {missing[0]} instrument", f"{name}: no instrument for {', '.join(missing)}")
    steps = cfg.bars * STEPS_PER_BAR
    first_part = [enc.parts[n][0] for n, ks in slots for _ in ks]
    continues = np.r_[layout.continues, False]
    windows, rows = [], []
    for start in range(0, bars - cfg.bars + 1, cfg.hop_bars):
        if continues[start] or continues[start + cfg.bars]:  # a window holds whole bars
            continue
        cut = slice(start * STEPS_PER_BAR, start * STEPS_PER_BAR + steps)
        grid = tokens[cut]
        if all(((grid[:, ks] > 1) & real[cut, ks]).any() for _, ks in slots):
            windows.append(np.concatenate([grid, velocity[cut]], axis=1))
            rows.append((0, start, *first_part))
    if not windows:
        raise SkipFile("no all-active window", f"no {cfg.bars} bars in which every instrument plays")
    if result is not None and cfg.meter:
        result.meters, result.ignored = layout.counts(), ignored
    return windows, rows, {n: [enc.notes[n], enc.overflow[n]] for n, _ in slots}


def window_columns(tracks: str) -> int:
    """Columns of a stored window: K tokens, plus K velocity bins for sets read by ``schmubert.polyphony``."""
    k = len(get_tracks(tracks))
    return k if is_legacy(tracks) else 2 * k


def process_file(name: str, data: bytes, cfg: PreprocessConfig, sha256: str | None = None) -> FileResult:
    """Never raises for a bad file: the reason lands in ``FileResult.reason``."""
    sha256 = sha256 or hashlib.sha256(data).hexdigest()
    steps, k = cfg.bars * STEPS_PER_BAR, window_columns(cfg.tracks)
    empty = np.zeros((0, steps, k), dtype=np.uint16)
    voices: dict[str, list[int]] = {}
    meter = FileResult(name, sha256, empty)  # receives the file's meters
    try:
        if is_legacy(cfg.tracks):
            windows, rows = extract(data, cfg, name)
        else:
            windows, rows, voices = extract_instruments(data, cfg, name, meter)
    except SkipFile as skip:
        return FileResult(name, sha256, empty, reason=skip.reason, detail=str(skip))
    except Exception as err:  # a parser or numpy surprise on one file must not stop a batch run
        return FileResult(name, sha256, empty, reason="error", detail=f"{name}: {type(err).__name__}: {err}")
    grid = np.stack(windows).astype(np.uint16)
    keys = [hashlib.blake2b(w.tobytes(), digest_size=16).digest() for w in grid]
    return FileResult(name, sha256, grid, rows, keys, voices=voices, meters=meter.meters, ignored=meter.ignored)
