"""Where windows may lie inside a segment: the trio activity rule, the melody gap rule, the hop.

All functions work on note arrays ``(N, 3)`` (start step, end step, pitch) relative to a segment start and
return bar indices; encoding a window reuses the codec (``encode_melodic``/``encode_drums``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from schmubert.tokens import STEPS_PER_BAR, Track, encode_drums, encode_melodic


def sounding_bars(notes: np.ndarray, bars: int) -> np.ndarray:
    """``(bars,)`` bool: bars in which a note sounds (from its onset to its last step)."""
    notes = np.asarray(notes, dtype=np.int64).reshape(-1, 3)
    diff = np.zeros(bars + 1, dtype=np.int64)
    first = np.clip(notes[:, 0] // STEPS_PER_BAR, 0, bars)
    last = np.clip((notes[:, 1] - 1) // STEPS_PER_BAR + 1, 0, bars)
    np.add.at(diff, first, 1)
    np.add.at(diff, last, -1)
    return np.cumsum(diff[:-1]) > 0


def active_bars(notes: np.ndarray, bars: int, margin: int) -> np.ndarray:
    """``(bars,)`` bool: bars within ``margin`` bars of a bar where the instrument sounds."""
    sounding = sounding_bars(notes, bars)
    if margin <= 0 or not sounding.any():
        return sounding
    total = np.concatenate([[0], np.cumsum(sounding)])
    bar = np.arange(bars)
    return total[np.minimum(bar + margin + 1, bars)] - total[np.maximum(bar - margin, 0)] > 0


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of True as ``[(start, end)]`` (end exclusive)."""
    padded = np.concatenate([[False], np.asarray(mask, dtype=bool), [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def window_starts(spans: Sequence[tuple[int, int]], bars: int, hop: int) -> list[int]:
    """Start bars of ``bars``-long windows every ``hop`` bars from the start of each span that holds one."""
    return [s for a, b in spans for s in range(a, b - bars + 1, hop)]


def melody_spans(notes: np.ndarray, gap_bars: int, segment_bars: int) -> list[tuple[int, int]]:
    """Bar spans of the melodies in a monophonic part: a rest of ``gap_bars`` full bars or more ends one.

    A melody covers the bars from its first onset to its last note-off (rounded out to whole bars).
    """
    if not len(notes):
        return []
    gap = notes[1:, 0] - notes[:-1, 1]
    cut = np.flatnonzero(gap >= gap_bars * STEPS_PER_BAR) + 1
    spans = []
    for group in np.split(notes, cut):
        start = int(group[0, 0]) // STEPS_PER_BAR
        end = -(-int(group[:, 1].max()) // STEPS_PER_BAR)
        spans.append((start, min(end, segment_bars)))
    return spans


def trio_spans(parts: Sequence[np.ndarray], segment_bars: int, margin: int) -> list[tuple[int, int]]:
    """Bar spans where every part is active (the trio activity rule)."""
    active = np.ones(segment_bars, dtype=bool)
    for notes in parts:
        active &= active_bars(notes, segment_bars, margin)
    return runs(active)


def encode_window(parts: Sequence[np.ndarray], tracks: Sequence[Track], start_bar: int,
                  bars: int) -> np.ndarray:
    """Token grid ``(bars * 16, K)`` of the window starting at ``start_bar``; one note array per track.

    A note that starts before the window is left out (the window starts in silence for that track).
    """
    steps = bars * STEPS_PER_BAR
    offset = start_bar * STEPS_PER_BAR
    columns = []
    for notes, track in zip(parts, tracks, strict=True):
        shifted = notes - np.array([offset, offset, 0])
        if track.is_drum:
            columns.append(encode_drums(shifted[:, [0, 2]], steps))
        else:
            columns.append(encode_melodic(shifted, steps))
    return np.stack(columns, axis=1)
