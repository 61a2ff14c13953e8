"""One file's bytes -> its windows (the work a worker process does), or the reason it yields none."""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field

import numpy as np

from preprocessing.config import PreprocessConfig
from preprocessing.segments import UNREADABLE_REASON, Part, Segment, SkipFile, read_score, split_segments
from preprocessing.windows import encode_window, melody_spans, trio_spans, window_starts
from schmubert.polyphony import encode_parts, read_parts
from schmubert.tokens import STEPS_PER_BAR, get_tracks, instruments, is_legacy

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


def extract_instruments(data: bytes, cfg: PreprocessConfig,
                        name: str = "<bytes>") -> tuple[list[np.ndarray], list[tuple], dict[str, list[int]]]:
    """The windows of a file in a track set with polyphonic or named instruments (``schmubert.polyphony``).

    The whole file is one grid on 16 steps per bar from its first tick (time signatures and tempo are not
    read: POP909's signatures are unreliable and its songs are 4/4); windows start every ``hop_bars`` bars and
    must hold notes of every instrument. A window is ``(steps, 2K)``: the tokens, then the velocity bins of the
    same columns (:func:`window_columns`). Also returns per instrument ``[notes, overflow]``.
    """
    try:
        parts, length = read_parts(data)
    except ValueError as err:
        raise SkipFile(UNREADABLE_REASON, f"{name}: {err}") from err
    if not parts:
        raise SkipFile("no notes")
    bars = -(-length // STEPS_PER_BAR)
    if bars > cfg.max_file_bars:
        raise SkipFile("too long", f"{bars} bars (--max-file-bars {cfg.max_file_bars})")
    if bars < cfg.bars:
        raise SkipFile("too short", f"{bars} bars")
    enc = encode_parts(parts, cfg.tracks, bars * STEPS_PER_BAR)
    slots = instruments(cfg.tracks)
    missing = [n for n, _ in slots if not enc.parts[n]]
    if missing:
        raise SkipFile(f"no {missing[0]} instrument", f"{name}: no instrument for {', '.join(missing)}")
    steps = cfg.bars * STEPS_PER_BAR
    first_part = [enc.parts[n][0] for n, ks in slots for _ in ks]
    windows, rows = [], []
    for start in range(0, bars - cfg.bars + 1, cfg.hop_bars):
        cut = slice(start * STEPS_PER_BAR, start * STEPS_PER_BAR + steps)
        grid = enc.tokens[cut]
        if all((grid[:, ks] > 1).any() for _, ks in slots):
            windows.append(np.concatenate([grid, enc.velocity[cut]], axis=1))
            rows.append((0, start, *first_part))
    if not windows:
        raise SkipFile("no all-active window", f"no {cfg.bars} bars in which every instrument plays")
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
    try:
        if is_legacy(cfg.tracks):
            windows, rows = extract(data, cfg, name)
        else:
            windows, rows, voices = extract_instruments(data, cfg, name)
    except SkipFile as skip:
        return FileResult(name, sha256, empty, reason=skip.reason, detail=str(skip))
    except Exception as err:  # a parser or numpy surprise on one file must not stop a batch run
        return FileResult(name, sha256, empty, reason="error", detail=f"{name}: {type(err).__name__}: {err}")
    grid = np.stack(windows).astype(np.uint16)
    keys = [hashlib.blake2b(w.tobytes(), digest_size=16).digest() for w in grid]
    return FileResult(name, sha256, grid, rows, keys, voices=voices)
