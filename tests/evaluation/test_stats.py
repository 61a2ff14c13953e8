"""Music statistics on hand-made pieces, and the distance between sets."""

import numpy as np
import pytest

from schmubert.evaluation.stats import (
    compare_statistics,
    drum_consistency,
    histogram_overlap,
    piece_statistics,
    set_statistics,
)
from schmubert.tokens import NOTE_OFF, STEPS_PER_BAR, pitch_to_class


def trio(bars=4):
    grid = np.zeros((bars * STEPS_PER_BAR, 3), dtype=np.int64)
    # melody: C4 D4 E4 F4 as quarter notes in bar 0, C5 in bar 1; bars 2-3 silent on the melody
    for i, pitch in enumerate([60, 62, 64, 65]):
        grid[4 * i, 0] = pitch_to_class(pitch)
    grid[16, 0], grid[20, 0] = pitch_to_class(72), NOTE_OFF
    grid[0, 1] = pitch_to_class(36)  # one bass note, sounding to the end
    return grid


def test_piece_statistics_hand_computed():
    grid = trio()
    grid[::4, 2] = 0b11  # kick + snare on every beat: the same pattern in every bar
    stats = piece_statistics(grid)
    assert stats["notes_per_bar"] == pytest.approx(6 / 4)
    # pitch classes C, C, C (60, 72, bass 36), D, E, F: counts 3, 1, 1, 1 of 6
    p = np.array([3, 1, 1, 1]) / 6
    assert stats["pitch_class_entropy"] == pytest.approx(-(p * np.log2(p)).sum())
    assert stats["pitch_range"] == 72 - 36
    assert stats["empty_bar_rate"] == 0.0  # drums play in every bar
    assert stats["drum_consistency"] == 1.0


def test_empty_bars_and_missing_drums():
    grid = trio()
    stats = piece_statistics(grid)
    assert stats["empty_bar_rate"] == 0.5  # bars 2 and 3 have no onset
    assert np.isnan(stats["drum_consistency"])
    melody_only = piece_statistics(grid[:, :1])
    assert melody_only["pitch_range"] == 12 and np.isnan(melody_only["drum_consistency"])
    silent = piece_statistics(np.zeros((64, 1), dtype=np.int64))
    assert np.isnan(silent["pitch_class_entropy"]) and silent["empty_bar_rate"] == 1.0


def test_drum_consistency_of_alternating_patterns():
    row = np.zeros(4 * STEPS_PER_BAR, dtype=np.int64)
    row[0:16:4] = 1  # bar 0: kicks
    row[20:32:4] = 2  # bar 1: snares (disjoint)
    row[32:48:4] = 1  # bar 2: kicks
    row[48:64:4] = 1 | 2  # bar 3: kicks + snares on the beats 4 of 8 hits shared
    assert drum_consistency(row) == pytest.approx((0 + 0 + 0.5) / 3)


def test_set_distance():
    a = np.arange(100, dtype=float)
    assert histogram_overlap(a, a) == pytest.approx(1.0)
    assert histogram_overlap(a, a + 1000) == 0.0
    gen = set_statistics([trio(), trio()])
    cmp = compare_statistics(gen, gen)
    assert cmp["notes_per_bar"]["overlap"] == pytest.approx(1.0)
    assert cmp["drum_consistency"]["defined_gen"] == 0 and np.isnan(cmp["drum_consistency"]["overlap"])


def test_piece_shorter_than_a_bar_does_not_crash():
    from schmubert.evaluation.stats import piece_statistics

    stats = piece_statistics(np.zeros((8, 3), dtype=np.int64))
    assert np.isnan(stats["drum_consistency"]) and stats["empty_bar_rate"] == 1.0
