"""One file's bytes -> its windows (the work a worker process does), or the reason it yields none."""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field

import numpy as np

from preprocessing.config import PreprocessConfig
from preprocessing.segments import Part, Segment, SkipFile, read_score, split_segments
from preprocessing.windows import encode_window, melody_spans, trio_spans, window_starts
from schmubert.tokens import STEPS_PER_BAR, get_tracks

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


def process_file(name: str, data: bytes, cfg: PreprocessConfig, sha256: str | None = None) -> FileResult:
    """Never raises for a bad file: the reason lands in ``FileResult.reason``."""
    sha256 = sha256 or hashlib.sha256(data).hexdigest()
    steps, k = cfg.bars * STEPS_PER_BAR, len(get_tracks(cfg.tracks))
    empty = np.zeros((0, steps, k), dtype=np.uint16)
    try:
        windows, rows = extract(data, cfg, name)
    except SkipFile as skip:
        return FileResult(name, sha256, empty, reason=skip.reason, detail=str(skip))
    except Exception as err:  # a parser or numpy surprise on one file must not stop a batch run
        return FileResult(name, sha256, empty, reason="error", detail=f"{name}: {type(err).__name__}: {err}")
    grid = np.stack(windows).astype(np.uint16)
    keys = [hashlib.blake2b(w.tobytes(), digest_size=16).digest() for w in grid]
    return FileResult(name, sha256, grid, rows, keys)
