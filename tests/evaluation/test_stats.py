"""Music statistics on hand-made pieces, and the distance between sets."""

import numpy as np
import pytest

from schmubert.evaluation.stats import (
    SCALES,
    STATISTICS,
    compare_sets,
    compare_statistics,
    drum_consistency,
    groove_consistency,
    histogram_overlap,
    piece_statistics,
    scale_consistency,
    set_statistics,
)
from schmubert.tokens import NOTE_OFF, STEPS_PER_BAR, encode_melodic, pitch_to_class


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


def melody_grid(notes, bars):
    """A melody grid (bars*16, 1) from (start step, end step, pitch) notes."""
    return encode_melodic(np.array(notes), bars * STEPS_PER_BAR)[:, None]


def test_groove_consistency_hand_computed():
    # bars 0 and 1: onsets on the 4 beats; bar 2: beats 1 and 3 only (quarter notes, the last ends at 44)
    onsets = [0, 4, 8, 12, 16, 20, 24, 28, 32, 40]
    notes = np.array([(s, s + 4, 60) for s in onsets])
    # 3 bars, Hamming distances 0 and 2: 1 - 2 / (16 * 2)
    assert groove_consistency(notes) == pytest.approx(1 - 2 / 32)
    # the same piece ending on the barline (step 48): MusPy counts one more (empty) bar, distance 2 more
    notes[-1, 1] = 48
    assert groove_consistency(notes) == pytest.approx(1 - 4 / 48)
    assert np.isnan(groove_consistency(notes[:1]))  # one bar: no pair
    assert np.isnan(groove_consistency(np.zeros((0, 3), dtype=np.int64)))
    # on a grid: drums pooled with the melody as onsets (a hit on step 2 of every bar adds no distance)
    grid = np.zeros((4 * STEPS_PER_BAR, 3), dtype=np.int64)
    grid[:, :1] = melody_grid([tuple(n) for n in notes], bars=4)
    grid[2::16, 2] = 1  # kick on step 2 of bars 0-3
    assert piece_statistics(grid)["groove_consistency"] == pytest.approx(1 - 4 / 48)


def test_scale_consistency_hand_computed():
    c_major = [60, 62, 64, 65, 67, 69, 71]
    assert scale_consistency(np.array(c_major)) == 1.0
    assert scale_consistency(np.array(c_major + [66])) == pytest.approx(7 / 8)  # C or G major: 7 of 8
    assert scale_consistency(np.arange(60, 72)) == pytest.approx(7 / 12)  # chromatic
    assert np.isnan(scale_consistency(np.zeros(0, dtype=np.int64)))
    assert SCALES.shape == (24, 12) and (SCALES.sum(1) == 7).all()
    np.testing.assert_array_equal(SCALES[12 + 9], SCALES[0])  # A minor holds the pitch classes of C major
    # drums are ignored: only the melody's F# lies outside C major
    grid = np.zeros((2 * STEPS_PER_BAR, 3), dtype=np.int64)
    grid[:, :1] = melody_grid([(2 * i, 2 * i + 2, p) for i, p in enumerate(c_major + [66])], bars=2)
    grid[::4, 2] = 0b111
    assert piece_statistics(grid)["scale_consistency"] == pytest.approx(7 / 8)


def test_overlap_bins_follow_the_reference_range():
    ref = np.array([0.0, 1.0, 2.0, 3.0])
    # 3 bins of width 1 over [0, 3], the maximum in the top bin: ref (0, .25, .25, .5, 0) with open outer bins
    gen = np.array([3.0, 3.5, -1.0, 1.5])  # (.25, 0, .25, .25, .25)
    assert histogram_overlap(gen, ref, bins=3) == pytest.approx(0.5)
    # an outlier does not widen the bins: the rest still matches bin for bin
    assert histogram_overlap(np.array([0.0, 1.0, 2.0, 3.0, 1e6]), ref, bins=3) == pytest.approx(0.8)
    assert histogram_overlap(np.full(5, 2.0), np.full(3, 2.0)) == 1.0  # constant reference
    assert histogram_overlap(np.array([np.nan]), ref) == 0.0  # undefined where the reference is defined
    assert np.isnan(histogram_overlap(ref, np.array([np.nan])))  # the reference never defines it


def test_compare_sets_reports_every_overlap_and_their_mean():
    a, b = trio(), trio()
    b[2::16, 2] = 1  # a kick on step 2 of every bar
    same = compare_sets([a, b], [a, b])
    assert set(same["overlaps"]) == set(STATISTICS)
    assert all(v == 1.0 for v in same["overlaps"].values()) and same["summary"] == 1.0
    # generated: two copies of a (no drums); reference a, b
    res = compare_sets([a, a], [a, b], bins=3)
    # drum consistency is defined in half the reference (b) and in no generated piece: the undefined share
    # (gen 1.0, ref 0.5) is all they have in common
    assert res["overlaps"]["drum_consistency"] == pytest.approx(0.5)
    # empty bar rate: gen (0.5, 0.5), ref (0.5, 0) -> 0.5. Groove (5 bars: the bass ends on the closing
    # barline): a has onsets {0, 4, 8, 12}, {0}, {}, {}, {} -> 1 - 4/64; b adds step 2 to bars 0-3 -> 1 - 5/64;
    # so gen (a, a) vs ref (a, b) -> 0.5. The other four statistics agree -> 1
    assert res["overlaps"]["empty_bar_rate"] == pytest.approx(0.5)
    assert res["statistics"]["groove_consistency"]["mean_ref"] == pytest.approx(1 - 4.5 / 64)
    assert res["overlaps"]["groove_consistency"] == pytest.approx(0.5)
    assert res["summary"] == pytest.approx((4 * 1.0 + 0.5 + 0.5 + 0.5) / 7)
    assert res["pieces_gen"] == 2 and res["statistics"]["pitch_range"]["mean_ref"] == 36


def test_pieces_where_a_statistic_is_undefined_lower_the_overlap():
    from schmubert.evaluation.stats import histogram_overlap

    ref = np.array([1.0, 2.0, 3.0, 4.0])
    assert histogram_overlap(ref.copy(), ref, bins=4) == pytest.approx(1.0)
    half_silent = np.array([1.0, 2.0, np.nan, np.nan])
    assert histogram_overlap(half_silent, ref, bins=4) == pytest.approx(0.5)
    assert histogram_overlap(np.full(4, np.nan), ref, bins=4) == 0.0  # a silent set is as far as it gets
    assert np.isnan(histogram_overlap(ref, np.full(4, np.nan)))  # the reference never defines it


def test_voice_statistics_count_chords_and_stay_undefined_for_the_trio():
    from schmubert.tokens import pitch_to_class

    grid = np.zeros((32, 11), dtype=np.int64)
    grid[0, 5:8] = [pitch_to_class(p) for p in (67, 64, 60)]  # a triad over the bar
    grid[16, 5] = pitch_to_class(72)  # then one note for half a bar
    grid[16, 6:8] = 1
    grid[24, 5] = 1
    s = piece_statistics(grid, "pop909")
    assert s["notes_per_onset"] == pytest.approx(2.0)  # onsets of 3 and 1 notes
    assert s["polyphony"] == pytest.approx((16 * 3 + 8 * 1) / 24)
    trio = piece_statistics(np.zeros((32, 3), dtype=np.int64), "trio")
    assert np.isnan(trio["notes_per_onset"]) and np.isnan(trio["polyphony"])
    assert set(set_statistics([grid], "pop909")) == set(STATISTICS) | {"notes_per_onset", "polyphony"}
    assert set(set_statistics([np.zeros((32, 3), dtype=np.int64)], "trio")) == set(STATISTICS)
